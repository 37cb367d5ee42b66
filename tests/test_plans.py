import json

import pytest

from nnunet_subfore.cli import main
from nnunet_subfore.errors import UserError
from nnunet_subfore.intensity import CTIntensityMapping
from nnunet_subfore.plans import derive_plans, write_subfore_plans


@pytest.fixture
def preprocessed(tmp_path):
    plans = {
        "dataset_name": "Dataset602_Organs",
        "plans_name": "nnUNetPlans",
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": 60.0, "std": 30.0, "percentile_00_5": 35.0, "percentile_99_5": 200.0}
        },
        "configurations": {
            "2d": {"data_identifier": "nnUNetPlans_2d", "patch_size": [192, 160], "batch_size": 12,
                   "normalization_schemes": ["CTNormalization"]},
            "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [40, 80, 96], "batch_size": 2,
                           "normalization_schemes": ["CTNormalization"], "spacing": [2.5, 0.8, 0.8]},
        },
    }
    folder = tmp_path / "Dataset602_Organs"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    return tmp_path


def test_patch_and_batch_keep_the_data_identifier(preprocessed):
    out = write_subfore_plans(602, patch_size=(64, 96, 96), batch_size=4, preprocessed_root=preprocessed)
    plans = json.loads(out.read_text())
    cfg = plans["configurations"]["3d_fullres"]
    assert out.name == "SubForePlans.json" and plans["plans_name"] == "SubForePlans"
    assert cfg["patch_size"] == [64, 96, 96] and cfg["batch_size"] == 4
    assert cfg["data_identifier"] == "nnUNetPlans_3d_fullres"  # same preprocessed data, nothing to redo
    assert list(plans["configurations"]) == ["3d_fullres"]


def test_hu_window_makes_the_threshold_visible_under_its_own_identifier(preprocessed):
    source = json.loads((preprocessed / "Dataset602_Organs" / "nnUNetPlans.json").read_text())
    with pytest.raises(UserError):
        CTIntensityMapping.from_plans(source).check_threshold()
    new = derive_plans(source, hu_window=(-1000.0, 1000.0))
    mapping = CTIntensityMapping.from_plans(new)
    assert mapping.check_threshold() == pytest.approx(-132.5)
    assert mapping.to_normalized(-1000.0) == -1.0 and mapping.to_normalized(1000.0) == 1.0
    assert new["configurations"]["3d_fullres"]["data_identifier"] == "SubForePlans_3d_fullres"
    assert source["foreground_intensity_properties_per_channel"]["0"]["percentile_00_5"] == 35.0  # not modified


def test_refusals(preprocessed):
    with pytest.raises(UserError, match="multiple of 32"):
        write_subfore_plans(602, patch_size=(40, 80, 96), preprocessed_root=preprocessed)
    write_subfore_plans(602, preprocessed_root=preprocessed)
    with pytest.raises(UserError, match="--force"):
        write_subfore_plans(602, preprocessed_root=preprocessed)
    write_subfore_plans(602, patch_size=(64, 64, 64), preprocessed_root=preprocessed, force=True)
    with pytest.raises(UserError, match="nnUNetv2_plan_and_preprocess"):
        write_subfore_plans(602, source_plans="nnUNetResEncUNetLPlans", preprocessed_root=preprocessed)


def test_cli_prints_next_steps(preprocessed, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    assert main(["plans", "-d", "602", "--hu-window", "-1000", "1000"]) == 0
    out = capsys.readouterr().out
    assert "nnUNetv2_preprocess -d Dataset602_Organs -plans_name SubForePlans" in out
    assert main(["plans", "-d", "602"]) == 2
    assert "--force" in capsys.readouterr().err


def test_masking_settings_go_into_the_plans_and_the_trainer_reads_them(preprocessed, monkeypatch, capsys):
    from nnunet_subfore.recipe import PAPER_MASKING, PLANS_MASKING_KEY, recipe_from_plans

    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    assert main(["plans", "-d", "602", "--plans-name", "SubForePlans_t02", "--threshold", "0.2", "--ratio", "0.75",
                 "--selection", "exact", "--fill", "zero", "--subvolume-size", "32"]) == 0
    assert "threshold 0.2" in capsys.readouterr().out
    plans = json.loads((preprocessed / "Dataset602_Organs" / "SubForePlans_t02.json").read_text())
    assert plans[PLANS_MASKING_KEY] == {"threshold": 0.2, "ratio": 0.75, "selection": "exact", "fill": "zero",
                                        "subvolume_size": 32}
    recipe, settings = recipe_from_plans(plans)
    assert recipe == PAPER_MASKING.with_changes(threshold=0.2, ratio=0.75, selection="exact", fill="zero",
                                                subvolume_size=32)
    assert recipe_from_plans({"configurations": {}}) == (PAPER_MASKING, {})  # no entry: the paper's


def test_threshold_in_hu_and_from_an_analysis(preprocessed, tmp_path):
    from nnunet_subfore.plans import masking_settings

    assert masking_settings(threshold_hu=-132.5)["threshold"] == pytest.approx(0.1)
    assert masking_settings(threshold_hu=0.0, window=(-100, 100)) == {"window": [-100.0, 100.0], "threshold": 0.5}
    analysis = tmp_path / "threshold_analysis.json"
    analysis.write_text(json.dumps({"lambda": 0.3, "window": [-175, 250]}))
    assert masking_settings(threshold_from=analysis) == {"window": [-175.0, 250.0], "threshold": 0.3}
    with pytest.raises(UserError, match="one of"):
        masking_settings(threshold=0.2, threshold_hu=-100)
    with pytest.raises(UserError, match="outside the window"):
        masking_settings(threshold_hu=-500)
    with pytest.raises(UserError, match="ratio"):
        masking_settings(ratio=1.5)
    with pytest.raises(UserError, match="window"):
        masking_settings(threshold_from=analysis, window=(-100, 100))


def test_a_subvolume_size_that_does_not_divide_the_patch_is_refused(preprocessed):
    with pytest.raises(UserError, match="does not divide"):
        write_subfore_plans(602, patch_size=(96, 96, 96), masking={"subvolume_size": 64}, preprocessed_root=preprocessed)
    with pytest.raises(UserError, match="unknown masking setting"):
        write_subfore_plans(602, masking={"lambda": 0.2}, preprocessed_root=preprocessed)
