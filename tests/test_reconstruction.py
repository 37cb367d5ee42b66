"""reconstruct_from_checkpoint on tiny checkpoints written without training: the patch is nnU-Net's preprocessing
of the image, the masker is the trainer's, the arrays are the network's, non-pretraining checkpoints are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from subfore_test_helpers import (
    TINY_CT_DATASET,
    TINY_CT_NORMALIZATION,
    tiny_ct_plans,
    tiny_ct_volume,
    write_ct,
    write_trained_run,
)

from nnunet_subfore.errors import UserError
from nnunet_subfore.reconstruction import (
    PretrainingRun,
    preprocessed_index,
    pretraining_masker,
    reconstruct_from_checkpoint,
)
from nnunet_subfore.recipe import PLANS_MASKING_KEY
from nnunet_subfore.registry import find_trainer_class

CNN = "SubForeCNNPretrainTrainer_demo"
UNETR = "SubForePretrainTrainer_UNETR_demo"
RANDOM_SWIN = "SubForeRandomMaskPretrainTrainer_demo"


def normalized(hu: np.ndarray) -> np.ndarray:
    """nnU-Net's CTNormalization with :data:`TINY_CT_NORMALIZATION`."""
    n = TINY_CT_NORMALIZATION
    return (np.clip(hu, n["percentile_00_5"], n["percentile_99_5"]) - n["mean"]) / n["std"]


@pytest.fixture(scope="module")
def hu() -> np.ndarray:
    return tiny_ct_volume()


@pytest.fixture(scope="module")
def image(tmp_path_factory, hu):
    """The volume at the plans' spacing (2 mm): nnU-Net's preprocessing only normalizes it."""
    return write_ct(tmp_path_factory.mktemp("image") / "ct.nii.gz", hu)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def checkpoints(results):
    return {name: write_trained_run(results, name) for name in (CNN, UNETR, RANDOM_SWIN)}


def rebuilt_network(checkpoint, trainer_name):
    """The checkpoint's network, built and loaded here independently of the module under test."""
    manager = PlansManager(tiny_ct_plans())
    network = find_trainer_class(trainer_name).build_network_architecture(
        manager, manager.get_configuration("3d_fullres"), 1, 4, False)
    network.load_state_dict(torch.load(checkpoint, weights_only=False)["network_weights"])
    return network.eval()


def test_the_patch_is_nnunet_s_preprocessing_of_the_image_centre(checkpoints, image, hu):
    result = reconstruct_from_checkpoint(checkpoints[CNN], [image], find_trainer_class, seed=0)
    assert result.image.shape == (1, 32, 32, 32) and result.offset == (8, 16, 16)  # 48x64x64 at the plans' spacing
    np.testing.assert_allclose(result.image[0], normalized(hu[8:40, 16:48, 16:48]), atol=1e-4)
    assert result.spacing == (2.0, 2.0, 2.0) and result.axis_names == ("axial", "coronal", "sagittal")
    assert result.intensity is not None and result.intensity.std == TINY_CT_NORMALIZATION["std"]
    assert (result.trainer_name, result.configuration, result.backbone) == (CNN, "3d_fullres", "cnn")


@pytest.mark.parametrize("trainer_name", [CNN, UNETR, RANDOM_SWIN])
def test_the_arrays_are_the_masked_patch_and_the_network_s_output(checkpoints, image, trainer_name):
    result = reconstruct_from_checkpoint(checkpoints[trainer_name], [image], find_trainer_class, seed=3)
    inside = result.voxel_mask
    assert inside.any() and not inside.all()
    # the masked input is the image outside the masked subvolumes and noise inside
    np.testing.assert_array_equal(result.masked_input[:, ~inside], result.image[:, ~inside])
    assert np.abs(result.masked_input[:, inside] - result.image[:, inside]).mean() > 0.5
    # the reconstruction is what the checkpoint's network returns for the masked input (everywhere)
    with torch.no_grad():
        expected = rebuilt_network(checkpoints[trainer_name], trainer_name)(torch.from_numpy(result.masked_input)[None])
    np.testing.assert_allclose(result.reconstruction, expected[0].numpy(), atol=1e-5)
    # the numbers are the arrays'
    error = np.abs(result.reconstruction - result.image)
    assert result.masked_l1 == pytest.approx(float(error[:, inside].mean()), rel=1e-5)
    assert result.unmasked_l1 == pytest.approx(float(error[:, ~inside].mean()), rel=1e-5)
    assert result.masked_fraction == pytest.approx(float(inside.mean()))
    target = result.image[0, inside]
    assert result.constant_l1 == pytest.approx(float(np.abs(target - np.median(target)).mean()), rel=1e-4)
    assert f"masked L1 {result.masked_l1:.4f}" in result.describe()
    # a fixed seed gives the same mask and fill
    again = reconstruct_from_checkpoint(checkpoints[trainer_name], [image], find_trainer_class, seed=3)
    np.testing.assert_array_equal(again.masked_input, result.masked_input)


def test_center_moves_the_patch_padding_with_zero_and_air_is_never_masked(checkpoints, image, hu):
    result = reconstruct_from_checkpoint(checkpoints[CNN], [image], find_trainer_class, center=(10, 32, 2), seed=1)
    assert result.offset == (-6, 16, -14)
    assert (result.image[:, :6] == 0).all() and (result.image[:, :, :, :14] == 0).all()
    np.testing.assert_allclose(result.image[0, 6:, :, 14:], normalized(hu[0:26, 16:48, 0:18]), atol=1e-4)
    # the left x half is padding and air: background subvolumes, which foreground masking never masks
    assert not result.foreground[:, :, 0].any() and result.foreground.any()
    assert not (result.subvolume_mask & ~result.foreground).any()


def test_random_masking_reads_no_intensities(checkpoints, image):
    result = reconstruct_from_checkpoint(checkpoints[RANDOM_SWIN], [image], find_trainer_class, center=(10, 32, 2),
                                         seed=5)
    assert result.foreground is None and "random masking" in result.describe()


def test_an_image_index_maps_through_transpose_crop_and_resampling():
    # image (z, y, x) = (40, 100, 80); transpose (2, 0, 1) -> (80, 40, 100); crop to the nonzero box
    # [10, 70) x [0, 40) x [20, 100); resampled to half the size
    properties = {"shape_before_cropping": (80, 40, 100), "bbox_used_for_cropping": [[10, 70], [0, 40], [20, 100]],
                  "shape_after_cropping_and_before_resampling": (60, 40, 80)}
    assert preprocessed_index((5, 60, 30), properties, (2, 0, 1), (30, 20, 40)) == (10, 2, 20)
    # outside the crop box: the nearest voxel inside it
    assert preprocessed_index((0, 0, 0), properties, (2, 0, 1), (30, 20, 40)) == (0, 0, 0)
    with pytest.raises(UserError, match="lies outside the image"):
        preprocessed_index((40, 0, 0), properties, (2, 0, 1), (30, 20, 40))


@pytest.mark.parametrize("trainer_name, settings", [
    ("SubForeCNNPretrainTrainer", {}),
    ("SubForePretrainTrainer", {"threshold": 0.3, "subvolume_size": 8, "fill": "zero"}),
    ("SubForeRandomMaskCNNPretrainTrainer", {"selection": "bernoulli", "ratio": 0.5}),
])
def test_the_masker_is_the_one_the_trainer_builds(trainer_name, settings):
    """The trainer's own build_masker, on a trainer made without nnU-Net's __init__ (as in its own tests)."""
    plans = {**tiny_ct_plans(), PLANS_MASKING_KEY: settings}
    trainer_class = find_trainer_class(trainer_name)
    trainer = trainer_class.__new__(trainer_class)
    trainer.plans_manager, trainer.configuration_name = PlansManager(plans), "3d_fullres"
    trainer.print_to_log_file = lambda *args, **kwargs: None
    trainer.masking, trainer.masking_settings = trainer.recipe_for_plans(plans)
    run = PretrainingRun(checkpoint=None, trainer_name=trainer_name, configuration="3d_fullres", plans=plans,
                         dataset_json=TINY_CT_DATASET, network_weights={})
    assert repr(pretraining_masker(trainer_class, run)[0]) == repr(trainer.build_masker())


# ---------------------------------------------------------------------------------------------- refusals

def test_a_fine_tuning_checkpoint_is_refused_naming_the_file_and_what_to_pass(results, image):
    checkpoint = write_trained_run(results, "SubForeCNNTrainer_demo")
    with pytest.raises(UserError) as refused:
        reconstruct_from_checkpoint(checkpoint, [image], find_trainer_class)
    message = str(refused.value)
    assert str(checkpoint) in message and "SubForeCNNTrainer_demo" in message
    assert "does not pretrain" in message and "SubForeCNNPretrainTrainer" in message


def test_a_segmentation_head_under_a_pretraining_trainer_s_name_is_refused(tmp_path, image):
    checkpoint = write_trained_run(tmp_path, CNN, weights_of="SubForeCNNTrainer_demo")
    with pytest.raises(UserError, match="holds a segmentation head .* not a reconstruction head with 1 output"):
        reconstruct_from_checkpoint(checkpoint, [image], find_trainer_class)


def test_a_checkpoint_without_plans_beside_it_is_refused(tmp_path, image):
    checkpoint = write_trained_run(tmp_path, CNN)
    (checkpoint.parent.parent / "plans.json").unlink()
    with pytest.raises(UserError, match=f"No plans.json beside {checkpoint}"):
        reconstruct_from_checkpoint(checkpoint, [image], find_trainer_class)


def test_bad_images_and_centres_are_refused(checkpoints, image, tmp_path):
    with pytest.raises(UserError, match="trained on 1 channel"):
        reconstruct_from_checkpoint(checkpoints[CNN], [image, image], find_trainer_class)
    with pytest.raises(UserError, match="does not exist"):
        reconstruct_from_checkpoint(checkpoints[CNN], [tmp_path / "missing.nii.gz"], find_trainer_class)
    with pytest.raises(UserError, match="outside the image"):
        reconstruct_from_checkpoint(checkpoints[CNN], [image], find_trainer_class, center=(48, 0, 0))
    not_an_image = tmp_path / "notes.nii.gz"
    not_an_image.write_text("not an image")
    with pytest.raises(UserError, match="could not read or preprocess"):
        reconstruct_from_checkpoint(checkpoints[CNN], [not_an_image], find_trainer_class)


def test_nothing_masked_gives_no_masked_l1(tmp_path, checkpoints):
    """An all-air image: no foreground subvolume, nothing masked, the masked L1 is undefined (not 0)."""
    air = write_ct(tmp_path / "air.nii.gz", np.full((48, 64, 64), -1000.0, dtype=np.float32))
    result = reconstruct_from_checkpoint(checkpoints[CNN], [air], find_trainer_class)
    assert result.masked_fraction == 0 and math.isnan(result.masked_l1) and math.isnan(result.constant_l1)
    assert "n/a (nothing masked)" in result.describe()
