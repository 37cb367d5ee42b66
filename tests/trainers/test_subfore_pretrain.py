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
