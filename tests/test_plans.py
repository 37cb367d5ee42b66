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
