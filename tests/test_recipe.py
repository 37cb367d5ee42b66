"""The masking recipe: one validator of the settings, one registry of the criteria."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import nnunet_subfore
from nnunet_subfore.errors import UserError
from nnunet_subfore.masking import FOREGROUND_CRITERIA, ForegroundMasker, fill_masked, foreground_subvolumes, \
    sample_subvolume_mask
from nnunet_subfore.recipe import CRITERIA, PAPER_MASKING, MaskingRecipe, check_masking_settings
from nnunet_subfore.reporting.masking_figure import masking_example

BAD = [
    (dict(window=(250, -175)), r"window must be \(low, high\) with high > low, got \(250, -175\)"),
    (dict(threshold=1.5), r"threshold applies to the windowed intensity in \[0, 1\], got 1.5"),
    (dict(subvolume_size=0), "subvolume_size must be a positive integer, got 0"),
    (dict(subvolume_size=2.5), "subvolume_size must be a positive integer, got 2.5"),
    (dict(subvolume_size="16"), "subvolume_size must be a positive integer, got '16'"),
    (dict(ratio=-0.1), r"ratio must lie in \[0, 1\], got -0.1"),
    (dict(selection="blocks"), "selection must be one of .*'random'.*, got 'blocks'"),
    (dict(fill="mean"), "fill must be one of .*'zero'.*, got 'mean'"),
    (dict(criterion="adaptive"), "criterion must be one of .*'nonzero'.*, got 'adaptive'"),
]


@pytest.mark.parametrize("setting, message", BAD, ids=[next(iter(s)) + "=" + str(next(iter(s.values()))) for s, _ in BAD])
def test_the_validator_names_the_bad_setting_and_value(setting, message):
    with pytest.raises(ValueError, match=message):
        check_masking_settings(**setting)
    with pytest.raises(ValueError, match=message):  # the recipe (plans entries, CLI flags) goes through it
        MaskingRecipe(**setting)


def test_the_validator_normalizes_what_it_was_given_and_checks_nothing_else():
    assert check_masking_settings(window=[-175, 250], subvolume_size=np.int64(16)) == {
        "window": (-175.0, 250.0), "subvolume_size": 16}
    assert check_masking_settings() == {}
    assert MaskingRecipe(window=[-175, 250]).window == (-175.0, 250.0)


def test_every_masking_entry_point_gives_the_validator_s_message():
    """The masker, the functions and the figure refuse a bad value with the same words: one validator."""
    message = r"ratio must lie in \[0, 1\], got 1.5"
    candidates = torch.ones(1, 2, 2, 2, dtype=torch.bool)
    for call in (lambda: ForegroundMasker(ratio=1.5), lambda: sample_subvolume_mask(candidates, ratio=1.5)):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="fill must be one of .*, got 'mean'"):
        fill_masked(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2, dtype=torch.bool), fill="mean")
    with pytest.raises(ValueError, match="criterion must be one of .*, got 'adaptive'"):
        foreground_subvolumes(torch.zeros(1, 1, 16, 16, 16), criterion="adaptive")
    with pytest.raises(UserError, match=message):  # the figure's users get a UserError (one line, no traceback)
        masking_example(np.full((32, 32, 32), 40.0, np.float32), ratio=1.5)


def test_the_validation_messages_live_in_the_recipe_alone():
    messages = re.compile(r"ratio must lie in|threshold applies to the windowed|subvolume_size must be a positive|"
                          r"(selection|fill|criterion) must be one of|window must be \(low, high\)")
    package = Path(nnunet_subfore.__file__).parent
    assert sorted(p.name for p in package.rglob("*.py") if messages.search(p.read_text(encoding="utf-8"))) == ["recipe.py"]


def test_the_criteria_registry_is_the_recipe_s_list_and_each_entry_is_the_documented_criterion():
    assert tuple(FOREGROUND_CRITERIA) == CRITERIA
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 32, 32, 32, generator=gen) * 1400 - 1000
    x[:, :, :16] = 0.0  # a zero region for the nonzero criterion
    for name, criterion in FOREGROUND_CRITERIA.items():
        got = criterion(x, 16, PAPER_MASKING.window, PAPER_MASKING.threshold)
        assert torch.equal(got, foreground_subvolumes(x, criterion=name))
        assert torch.equal(ForegroundMasker(criterion=name).foreground(x), got)
        assert torch.equal(ForegroundMasker(criterion=name, ratio=1.0)(x).foreground, got)  # the buffered path
