"""ConversionReport: exit status and the printed summary; skip_case records and says so at once."""

from __future__ import annotations

from pathlib import Path

from nnunet_subfore.data.converters.report import ConversionReport, skip_case


def test_report_exit_codes():
    assert ConversionReport("btcv").exit_code() == 2
    assert ConversionReport("btcv", skipped=[("b", "why")]).exit_code() == 2
    assert ConversionReport("btcv", converted=["a"]).exit_code() == 0
    assert ConversionReport("btcv", converted=["a"], skipped=[("b", "why")]).exit_code() == 1


def test_describe_a_partial_conversion():
    report = ConversionReport("btcv", output_dir=Path("/raw/Dataset042_BTCV"), converted=["BTCV_0001", "BTCV_0003"],
                              skipped=[("BTCV_0002", "no label file")], notes=["paper split 1/1"],
                              splits_file=Path("/pre/Dataset042_BTCV/splits_final.json"))
    lines = report.describe().splitlines()
    assert lines[0] == "btcv: converted 2 case(s) into /raw/Dataset042_BTCV"
    assert "skipped 1:" in lines and "  BTCV_0002: no label file" in lines
    assert "note: paper split 1/1" in lines
    assert any(line.startswith("wrote /pre/Dataset042_BTCV/splits_final.json") for line in lines)
    assert lines[-1] == "next: nnUNetv2_plan_and_preprocess -d 42 --verify_dataset_integrity"


def test_describe_nothing_converted_suggests_no_next_step():
    text = ConversionReport("flare22", skipped=[("FLARE22_Tr_0001", "bad")]).describe()
    assert text.splitlines()[0] == "flare22: nothing converted; any earlier output was left as it was."
    assert "FLARE22_Tr_0001: bad" in text
    assert "next:" not in text and "wrote" not in text


def test_skip_case_records_and_prints(capsys):
    report = ConversionReport("btcv", converted=["BTCV_0001"])
    skip_case(report, "BTCV_0002", "geometry mismatch")
    assert report.skipped == [("BTCV_0002", "geometry mismatch")]
    assert "skipped BTCV_0002: geometry mismatch" in capsys.readouterr().out
    assert report.exit_code() == 1
