"""Titles and legend entries wrapped to the figure's width."""

from nnunet_subfore.reporting.canvas import wrap_to_width


def test_long_names_break_after_underscores_and_no_line_is_too_long():
    text = "Dataset992_SubForeDemoOrgansWithAVeryLongName (3d_fullres, SubForePretrainPlans): Dice per class"
    wrapped = wrap_to_width(text, 3.0, 10)  # 36 characters per line
    assert wrapped.replace("\n", " ").replace("_ ", "_") == text
    assert all(len(line) <= 36 for line in wrapped.split("\n")) and len(wrapped.split("\n")) > 2
    assert wrap_to_width("short\nlines", 3.0, 10) == "short\nlines"
    assert all(len(line) <= 12 for line in wrap_to_width("x" * 50, 1.0, 10).split("\n"))
