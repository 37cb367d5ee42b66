"""The one owner of "does this configuration exist": every path that reads a configuration refuses alike."""

import json

import pytest

from nnunet_subfore.errors import UserError
from nnunet_subfore.masking_setup import masker_for_plans
from nnunet_subfore.plans_reading import (
    ConfigurationNotFound,
    configuration,
    planned_patch,
    planned_spacing,
    read_plans,
    require_configuration,
)
from nnunet_subfore.recipe import PAPER_MASKING

PLANS = {"configurations": {"3d_fullres": {"patch_size": [64, 96, 96], "spacing": [1.5, 0.8, 0.8]},
                            "3d_lowres": {"inherits_from": "3d_fullres", "spacing": [3.0, 1.6, 1.6]}}}


def test_configuration_resolves_inheritance():
    assert configuration(PLANS, "3d_lowres") == {"patch_size": [64, 96, 96], "spacing": [3.0, 1.6, 1.6]}
    assert planned_patch(PLANS, "3d_lowres") == (64, 96, 96) and planned_spacing(PLANS, "3d_fullres") == (1.5, 0.8, 0.8)


def test_a_missing_configuration_names_the_available_ones():
    with pytest.raises(ConfigurationNotFound, match=r"The plans have no configuration '2d' \(available: \['3d_fullres', '3d_lowres'\]\)"):
        require_configuration(PLANS, "2d")
    error = pytest.raises(ConfigurationNotFound, configuration, PLANS, "2d", source="Plans X").value
    assert isinstance(error, UserError) and isinstance(error, KeyError) and str(error).startswith("Plans X have")
    # the masker path refuses through the same check (a KeyError the trainers catch, a UserError for the CLI)
    with pytest.raises(ConfigurationNotFound, match="no configuration '2d'"):
        masker_for_plans(PLANS, "2d", PAPER_MASKING)


def test_read_plans_refuses_what_is_not_plans(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_plans(tmp_path / "nnUNetPlans.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(UserError, match="not a JSON file"):
        read_plans(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(UserError, match="no nnU-Net plans"):
        read_plans(tmp_path / "y.json")


def test_random_masking_needs_no_intensities():
    masker, line = masker_for_plans(PLANS, "3d_fullres", PAPER_MASKING.with_changes(selection="random"))
    assert masker.selection == "random" and line.startswith("Random masking")
