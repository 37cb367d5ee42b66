"""The pretraining trainer's own step, fast: the masker it builds from the plans and the loss it computes.

The trainer is made without nnU-Net's __init__ (no dataset, no output folder): the two methods under
test read only the attributes set here.
"""

from __future__ import annotations

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_subfore.intensity import IntensityTrapError
from nnunet_subfore.losses import MaskedL1Loss
from nnunet_subfore.trainers.subfore_pretrain import SubForePretrainTrainer

MEAN, STD = -140.0, 260.0  # foreground statistics of body-labelled CT, in HU


def plans(lower_clip: float = -980.0) -> dict:
    return {
        "plans_name": "nnUNetPlans",
        "dataset_name": "Dataset999_Test",
        "configurations": {"3d_fullres": {"normalization_schemes": ["CTNormalization"], "patch_size": [32, 32, 32]}},
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": MEAN, "std": STD, "percentile_00_5": lower_clip, "percentile_99_5": 1200.0}},
    }


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


def bare_trainer(plans_dict: dict) -> SubForePretrainTrainer:
    trainer = SubForePretrainTrainer.__new__(SubForePretrainTrainer)
    trainer.plans_manager = PlansManager(plans_dict)
    trainer.configuration_name = "3d_fullres"
    trainer.device = torch.device("cpu")
    trainer.print_to_log_file = lambda *args, **kwargs: None
    return trainer


def test_the_masker_gets_the_hu_window_mapped_into_the_plans_units():
    masker = bare_trainer(plans()).build_masker()
    # (HU - mean) / std, worked out by hand for the paper's window (-175, 250) HU
    assert masker.window == pytest.approx(((-175.0 + 140.0) / 260.0, (250.0 + 140.0) / 260.0))
    assert (masker.threshold, masker.subvolume_size, masker.ratio) == (0.1, 16, 0.6)


def test_plans_that_hide_the_threshold_are_refused():
    with pytest.raises(IntensityTrapError, match="percentile_00_5"):
        bare_trainer(plans(lower_clip=35.0)).build_masker()


def test_the_loss_compares_the_reconstruction_with_the_original_batch():
    """An identity network returns the masked input: its loss is |fill - original| over the masked voxels."""
    trainer = bare_trainer(plans())
    trainer.masker = trainer.build_masker()
    trainer.network = Identity()
    trainer.loss = MaskedL1Loss()
    hu = torch.full((2, 1, 32, 32, 32), 40.0)  # soft tissue: every subvolume is foreground
    hu[:, :, :16] = -1000.0  # air in the upper half: never masked
    data = (hu - MEAN) / STD
    loss, batch = trainer._masked_loss(data, generator=torch.Generator().manual_seed(3))
    masked_voxels = batch.voxel_mask.expand_as(data)
    assert masked_voxels.any() and not masked_voxels[:, :, :16].any()
    expected = (batch.masked - data).abs()[masked_voxels].mean()
    assert expected > 0.5  # noise against a constant: far from zero
    torch.testing.assert_close(loss, expected)


def test_settings_from_the_plans_are_used_and_logged():
    from nnunet_subfore.recipe import PLANS_MASKING_KEY

    settings = {"threshold": 0.3, "ratio": 0.5, "subvolume_size": 8, "fill": "zero"}
    trainer = bare_trainer({**plans(), PLANS_MASKING_KEY: settings})
    trainer.masking, trainer.masking_settings = trainer.recipe_for_plans(trainer.plans_manager.plans)
    masker = trainer.build_masker()
    assert (masker.threshold, masker.ratio, masker.subvolume_size, masker.fill) == (0.3, 0.5, 8, "zero")
    line = trainer.masking_log_line()
    assert "threshold 0.3" in line and "ratio 0.5" in line and "subfore_masking" in line
    # the patch is fitted to the plans' subvolume size, not the class's
    big = trainer.masking.with_changes(subvolume_size=64)
    assert SubForePretrainTrainer.fitted_patch_size((96, 96, 96))[0] == (96, 96, 96)
    assert SubForePretrainTrainer.fitted_patch_size((96, 96, 96), masking=big)[0] == (64, 64, 64)


def test_without_plans_settings_the_paper_s_recipe_is_logged():
    trainer = bare_trainer(plans())
    trainer.masking, trainer.masking_settings = trainer.recipe_for_plans(trainer.plans_manager.plans)
    assert trainer.masking == SubForePretrainTrainer.masking
    assert "defaults, no subfore_masking" in trainer.masking_log_line()


def test_invalid_plans_settings_stop_the_trainer_with_a_message():
    with pytest.raises(SystemExit, match="subfore_masking"):
        SubForePretrainTrainer.recipe_for_plans({**plans(), "subfore_masking": {"ratio": 2}})


@pytest.mark.slow
def test_a_pretraining_run_uses_and_logs_the_preset_s_settings(demo_run):
    """`nnunet-subfore plans` with masking settings, then nnUNetv2_train -p with them (one short epoch)."""
    import json

    from subfore_test_helpers import result_folder, run

    from nnunet_subfore.demo import PRETRAIN_ID, PRETRAIN_NAME
    from nnunet_subfore.paths import dataset_folder_name

    _, env, _ = demo_run
    run(["nnunet-subfore", "plans", "-d", str(PRETRAIN_ID), "--patch", "32", "32", "32", "--plans-name",
         "SubForePlans_t03", "--threshold", "0.3", "--ratio", "0.5", "--fill", "zero", "--force"], env)
    run(["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "0", "-tr", "SubForePretrainTrainer_short", "-p",
         "SubForePlans_t03", "-device", "cpu"], env, training=True)
    fold = result_folder(env, dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME), "SubForePretrainTrainer_short",
                         "SubForePlans_t03") / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "Masking settings: window (-175.0, 250.0) HU, threshold 0.3" in log and "ratio 0.5" in log
    assert "from the plans' subfore_masking" in log
    metrics = json.loads((fold / "validation" / "reconstruction_metrics.json").read_text())
    assert "threshold=0.3" in metrics["masking"] and "ratio=0.5" in metrics["masking"] and "'zero'" in metrics["masking"]


def test_mri_plans_are_masked_by_the_nonzero_region_and_unusable_plans_refused():
    mri = plans()
    mri["configurations"]["3d_fullres"].update(normalization_schemes=["ZScoreNormalization"], use_mask_for_norm=[True])
    masker = bare_trainer(mri).build_masker()
    assert masker.criterion == "nonzero"
    mri["configurations"]["3d_fullres"]["use_mask_for_norm"] = [False]
    from nnunet_subfore.masking_setup import NoCriterionError

    with pytest.raises(NoCriterionError, match="neither"):
        bare_trainer(mri).build_masker()
