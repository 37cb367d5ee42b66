"""What a masked-image-modeling (MIM) checkpoint reconstructs: one patch of a raw image, masked as its trainer
masks, through the network it trained.

:func:`reconstruct_from_checkpoint` reads a pretraining checkpoint in its nnU-Net result folder
(``.../TRAINER__PLANS__CONFIGURATION/fold_N/checkpoint_*.pth`` with ``plans.json`` and ``dataset.json`` one
level up), rebuilds the network as ``nnUNetv2_predict`` does (the trainer's ``build_network_architecture`` on
those plans, the weights loaded strictly), preprocesses the image with nnU-Net's own preprocessor for that
configuration (transpose, crop to the nonzero region, normalization, resampling: what training saw), cuts
one patch of the trainer's patch size, masks it with the trainer's masker and a seeded generator, and runs
the network in eval mode. The result holds the arrays (image, masked input, reconstruction, masks) and the
numbers (masked L1 as the trainer's loss computes it, masked fraction).

The trainer class is looked up by the caller (``nnunet_subfore.registry.find_trainer_class``, which only
the CLI and the demo import): this module knows no trainer, it reads the attributes every SubFore
pretraining trainer has (``masking``, ``recipe_for_plans``, ``build_network_architecture``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nnunet_subfore.checkpoints import load_checkpoint
from nnunet_subfore.crops import center_crop, crop_around
from nnunet_subfore.errors import UserError
from nnunet_subfore.intensity import CT_SCHEME, CTIntensityMapping
from nnunet_subfore.plans_reading import configuration as plans_configuration
from nnunet_subfore.losses import subvolume_masked_l1_loss
from nnunet_subfore.masking import ForegroundMasker
from nnunet_subfore.masking_setup import masker_for_plans
from nnunet_subfore.networks import backbone_of_state_dict
from nnunet_subfore.recipe import MaskingRecipe

#: Names of the axes of an image as nnU-Net reads it (SimpleITK's numpy order z, y, x).
IMAGE_AXIS_NAMES = ("axial", "coronal", "sagittal")

#: What to pass instead of a checkpoint that does not pretrain (named in the refusal).
PRETRAINING_TRAINERS = ("SubForeCNNPretrainTrainer, SubForePretrainTrainer, SubForePretrainTrainer_UNETR, "
                        "the SubForeRandomMask* variants or their _demo versions")


@dataclass(frozen=True)
class PretrainingRun:
    """A checkpoint in its nnU-Net result folder, with what inference reads beside it.

    Attributes:
        checkpoint: the ``checkpoint_*.pth`` file.
        trainer_name: the trainer that wrote it (the checkpoint's ``trainer_name``).
        configuration: its configuration (``init_args``, else the result folder's name).
        plans: ``plans.json`` of the result folder (the patch as the trainer fitted it).
        dataset_json: ``dataset.json`` of the result folder.
        network_weights: the state dict.
    """

    checkpoint: Path
    trainer_name: str
    configuration: str
    plans: dict
    dataset_json: dict
    network_weights: Dict[str, torch.Tensor]


def read_pretraining_run(checkpoint: Path) -> PretrainingRun:
    """Load ``checkpoint`` safely (:func:`nnunet_subfore.checkpoints.load_checkpoint`) with the ``plans.json`` and
    ``dataset.json`` of its result folder.

    Raises:
        UserError: the file is missing or not an nnU-Net checkpoint, or the JSON files are not beside it.
    """
    checkpoint = Path(checkpoint)
    content = load_checkpoint(checkpoint)
    folder = checkpoint.resolve().parent.parent
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise UserError(
                f"No {name} beside {checkpoint}: expected {folder / name}. nnU-Net writes plans.json and dataset.json "
                f"into the result folder one level above fold_N; pass the checkpoint where training left it "
                f"(.../TRAINER__PLANS__CONFIGURATION/fold_N/checkpoint_final.pth) or copy that folder's plans.json "
                f"and dataset.json next to its fold folder.")
    trainer_name, configuration = _run_identity(content, checkpoint)
    plans, dataset_json = _read_json(folder / "plans.json"), _read_json(folder / "dataset.json")
    if configuration not in plans.get("configurations", {}):
        raise UserError(f"{folder / 'plans.json'} has no configuration {configuration!r}, which {checkpoint} was "
                        f"trained with (available: {sorted(plans.get('configurations', {}))}).")
    return PretrainingRun(checkpoint, trainer_name, configuration, plans, dataset_json, content["network_weights"])


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a JSON file ({e}); nnU-Net wrote it at the start of training: copy it "
                        f"again from the run's result folder.") from e
    if not isinstance(content, dict):
        raise UserError(f"{path} holds no JSON object; copy it again from the run's result folder.")
    return content


def _run_identity(content: dict, checkpoint: Path) -> Tuple[str, str]:
    """(trainer name, configuration) from the checkpoint, else from ``TRAINER__PLANS__CONFIGURATION``."""
    parts = checkpoint.resolve().parent.parent.name.split("__")
    from_folder = (parts[0], parts[2]) if len(parts) == 3 else (None, None)
    init_args = content.get("init_args") if isinstance(content.get("init_args"), dict) else {}
    trainer_name = content.get("trainer_name") or from_folder[0]
    configuration = init_args.get("configuration") or from_folder[1]
    if not trainer_name or not configuration:
        raise UserError(f"{checkpoint} names no trainer or configuration (no 'trainer_name' / 'init_args', and its "
                        f"result folder is not named TRAINER__PLANS__CONFIGURATION).")
    return str(trainer_name), str(configuration)


# ---------------------------------------------------------------------------------------------- masker, network

def pretraining_masker(trainer: type, run: PretrainingRun) -> Tuple[ForegroundMasker, MaskingRecipe]:
    """The masker ``trainer`` builds under the run's plans (its ``build_masker``), and the recipe.

    Random-masking trainers (class recipe with ``selection="random"``) mask any subvolume whatever the plans
    say and read no intensities; the others map the recipe's HU window through the plans
    (:func:`nnunet_subfore.masking_setup.masker_for_plans`).

    Raises:
        UserError: the trainer does not pretrain (no masking recipe), or the plans do not allow its masking.
    """
    if getattr(trainer, "masking", None) is None or not hasattr(trainer, "recipe_for_plans"):
        raise UserError(
            f"{run.checkpoint} was written by {run.trainer_name}, which does not pretrain (no masking recipe): it is a "
            f"fine-tuning / segmentation checkpoint, whose output is class scores, not a reconstruction. Pass the "
            f"checkpoint of a SubFore pretraining run ({PRETRAINING_TRAINERS}); to look at what a segmentation "
            f"network does, predict with nnUNetv2_predict.")
    try:
        recipe, _ = trainer.recipe_for_plans(run.plans)
    except SystemExit as e:  # the trainers stop training with SystemExit; here it is a user error
        raise UserError(str(e).strip()) from None
    if trainer.masking.selection == "random":
        return ForegroundMasker.from_recipe(recipe, selection="random"), recipe
    try:
        masker, _ = masker_for_plans(run.plans, run.configuration, recipe, source=f"the plans of {run.checkpoint}")
    except KeyError as e:
        raise UserError(f"The plans beside {run.checkpoint} lack what the masking reads: {e}") from e
    return masker, recipe


def rebuild_network(trainer: type, run: PretrainingRun) -> Tuple[torch.nn.Module, int]:
    """The trained network as ``nnUNetv2_predict`` rebuilds it (``build_network_architecture`` on the plans, no deep
    supervision), weights loaded strictly, and its number of input channels.

    Raises:
        UserError: the checkpoint's head is not a reconstruction head, or its tensors do not fit.
    """
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(run.plans)
    config = manager.get_configuration(run.configuration)
    channels = determine_num_input_channels(manager, config, run.dataset_json)
    outputs = manager.get_label_manager(run.dataset_json).num_segmentation_heads
    network = trainer.build_network_architecture(manager, config, channels, outputs, False)
    expected = network.state_dict()
    weights = run.network_weights
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    mismatched = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    if mismatched and all(".seg_layers." in k for k in mismatched):
        shapes = ", ".join(f"{k} {tuple(weights[k].shape)}" for k in mismatched[-1:])
        raise UserError(
            f"{run.checkpoint} holds a segmentation head ({shapes}), not a reconstruction head with {channels} "
            f"output channel(s) (one per input channel): it is a fine-tuning checkpoint. Pass the checkpoint of a "
            f"SubFore pretraining run ({PRETRAINING_TRAINERS}).")
    if missing or unexpected or mismatched:
        raise UserError(
            f"{run.checkpoint} does not fit the network {run.trainer_name} builds from the plans beside it "
            f"({type(network).__name__}): {len(missing)} tensors missing (e.g. {missing[:2]}), {len(unexpected)} "
            f"unexpected (e.g. {unexpected[:2]}), {len(mismatched)} of another shape (e.g. {mismatched[:2]}). Were the "
            f"plans.json or dataset.json beside it replaced after training?")
    network.load_state_dict(weights)
    return network.eval(), channels


# ---------------------------------------------------------------------------------------------- the image

def check_images(images: Sequence[Path], run: PretrainingRun) -> List[Path]:
    """``images`` as Paths: one existing file per channel of the run's ``dataset.json`` (UserError otherwise)."""
    images = [Path(p) for p in images]
    names = run.dataset_json.get("channel_names") or run.dataset_json.get("modality") or {}
    if len(images) != len(names):
        raise UserError(f"{run.checkpoint} was trained on {len(names)} channel(s) ({', '.join(map(str, names.values()))}); "
                        f"give one image per channel in that order, got {len(images)}.")
    for image in images:
        if not image.is_file():
            raise UserError(f"Image {image} does not exist.")
    return images


def preprocess_images(images: Sequence[Path], run: PretrainingRun) -> Tuple[np.ndarray, dict]:
    """Raw image files (one per channel of ``dataset.json``) preprocessed as ``nnUNetv2_predict`` does for the run's
    configuration (its ``preprocessor_class.run_case``): (data (C, D, H, W) float32, nnU-Net's properties)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    images = check_images(images, run)
    manager = PlansManager(run.plans)
    config = manager.get_configuration(run.configuration)
    try:
        data, _, properties = config.preprocessor_class(verbose=False).run_case(
            [str(p) for p in images], None, manager, config, run.dataset_json)
    except Exception as e:  # nnU-Net's readers raise anything from RuntimeError to AssertionError
        raise UserError(f"nnU-Net could not read or preprocess {', '.join(map(str, images))} with "
                        f"{manager.image_reader_writer_class.__name__}: {e!r}. Pass the raw image (e.g. .nii.gz, "
                        f".mha) as nnUNetv2_predict would take it.") from e
    return np.asarray(data, dtype=np.float32), properties


def preprocessed_index(center: Sequence[int], properties: dict, transpose_forward: Sequence[int],
                       preprocessed_shape: Sequence[int]) -> Tuple[int, int, int]:
    """A voxel index (z, y, x) of the raw image (numpy order, as nnU-Net reads it) -> its index in the preprocessed
    volume (after nnU-Net's transpose, crop to the nonzero region and resampling).

    Raises:
        UserError: the index lies outside the image.
    """
    center = [int(c) for c in center]
    shape = [int(s) for s in properties["shape_before_cropping"]]
    original_shape = [0] * len(shape)
    for axis, source in enumerate(transpose_forward):
        original_shape[source] = shape[axis]
    if len(center) != len(shape) or any(not 0 <= c < s for c, s in zip(center, original_shape)):
        raise UserError(f"--center {' '.join(map(str, center))} lies outside the image of {len(shape)}D shape "
                        f"{tuple(original_shape)} (z y x voxel indices, numpy order).")
    transposed = [center[i] for i in transpose_forward]
    cropped = [int(s) for s in properties["shape_after_cropping_and_before_resampling"]]
    starts = [int(b[0]) for b in properties["bbox_used_for_cropping"]]
    index = []
    for c, start, before, after in zip(transposed, starts, cropped, preprocessed_shape):
        position = min(max(c - start, 0), before - 1)
        index.append(int(math.floor((position + 0.5) * int(after) / before)))
    return tuple(index)


# ---------------------------------------------------------------------------------------------- the reconstruction

@dataclass
class Reconstruction:
    """One masked patch and the network's reconstruction of it (numpy; spatial axes as nnU-Net preprocessed them).

    Attributes:
        image: float32 (C, D, H, W), the preprocessed patch (nnU-Net's normalized units): the target.
        masked_input: float32 (C, D, H, W), the network's input: ``image`` with the masked subvolumes filled.
        reconstruction: float32 (C, D, H, W), the network's output.
        subvolume_mask: bool (D/s, H/s, W/s), True on masked subvolumes.
        foreground: bool grid, True on the subvolumes the criterion lets the masker pick; None for random
            masking (it reads no intensities).
        subvolume_size: s.
        offset: index of the patch's first voxel in the preprocessed volume (negative where padded with 0).
        spacing: voxel spacing of the preprocessed volume (the configuration's), per axis.
        axis_names: per axis, the view a slice across it shows (``"axial"`` for the image's z axis).
        masked_l1: the trainer's loss on this patch: mean |reconstruction - image| over the voxels of the masked
            subvolumes, all channels (NaN when nothing is masked).
        unmasked_l1: the same over the other voxels (NaN when everything is masked).
        constant_l1: the masked L1 of the best single value per channel (the median of the masked voxels): a
            network that does not beat it has learned an intensity level, not anatomy (NaN when nothing is masked).
        masked_fraction: share of the patch's subvolumes (= voxels) that are masked.
        trainer_name, configuration, checkpoint, backbone: where the network comes from.
        masker: ``repr`` of the masker (settings in the units of the preprocessed data).
        masking: the masking in words (``masking_in_words``).
        seed: seed of the generator that drew the mask and the fill.
        intensity: nnU-Net's CT normalization of channel 0 (to label the images in HU); None for other data.
    """

    image: np.ndarray
    masked_input: np.ndarray
    reconstruction: np.ndarray
    subvolume_mask: np.ndarray
    foreground: Optional[np.ndarray]
    subvolume_size: int
    offset: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    axis_names: Tuple[str, str, str]
    masked_l1: float
    unmasked_l1: float
    constant_l1: float
    masked_fraction: float
    trainer_name: str
    configuration: str
    checkpoint: Path
    backbone: str
    masker: str
    masking: str
    seed: int
    intensity: Optional[CTIntensityMapping] = None

    @property
    def error(self) -> np.ndarray:
        """|reconstruction - image|, (C, D, H, W)."""
        return np.abs(self.reconstruction - self.image)

    @property
    def voxel_mask(self) -> np.ndarray:
        """bool (D, H, W), True on masked voxels."""
        s = self.subvolume_size
        return self.subvolume_mask.repeat(s, 0).repeat(s, 1).repeat(s, 2)

    def describe(self) -> str:
        """The numbers, a few lines."""
        masked = ("n/a (nothing masked)" if math.isnan(self.masked_l1) else
                  f"{self.masked_l1:.4f} (the trainer's loss, nnU-Net-normalized units; the masked voxels' median "
                  f"as prediction: {self.constant_l1:.4f})")
        unmasked = "n/a" if math.isnan(self.unmasked_l1) else f"{self.unmasked_l1:.4f}"
        n, grid = int(self.subvolume_mask.sum()), int(self.subvolume_mask.size)
        fg = "" if self.foreground is None else f", foreground {int(self.foreground.sum())}/{grid} subvolumes"
        return "\n".join([
            f"{self.trainer_name} ({self.backbone}, {self.configuration}) from {self.checkpoint}",
            f"masked L1 {masked}, unmasked L1 {unmasked}",
            f"masked fraction {100 * self.masked_fraction:.1f}% ({n}/{grid} subvolumes of {self.subvolume_size}^3{fg}), "
            f"seed {self.seed}",
            f"{self.masking}; patch {'x'.join(str(s) for s in self.image.shape[1:])} at {self.offset} of the "
            f"preprocessed volume",
        ])


def reconstruct_from_checkpoint(checkpoint: Path, images: Sequence[Path], find_trainer: Callable[[str], type],
                                center: Optional[Sequence[int]] = None, seed: int = 0,
                                device: str = "cpu") -> Reconstruction:
    """Mask one patch of ``images`` as the checkpoint's trainer masks and reconstruct it with its network.

    Args:
        checkpoint: ``checkpoint_*.pth`` of a SubFore pretraining run, in its result folder (``plans.json`` and
            ``dataset.json`` one level up).
        images: the raw image files, one per channel of the run's ``dataset.json`` (CT in HU: ``.nii.gz``,
            ``.mha``, ... whatever the plans' reader takes).
        find_trainer: trainer name -> class (``nnunet_subfore.registry.find_trainer_class``).
        center: (z, y, x) voxel index of the raw image (numpy order, as nnU-Net reads it) to centre the patch
            on; None: the centre of the preprocessed volume.
        seed: seed of the ``torch.Generator`` that draws the mask and the fill.
        device: where the network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Raises:
        UserError: a missing or non-pretraining checkpoint, missing plans/dataset JSON, an unreadable image, a
            centre outside the image, an unavailable device.
    """
    torch_device = _device(device)
    run = read_pretraining_run(checkpoint)
    check_images(images, run)
    trainer = find_trainer(run.trainer_name)
    masker, _ = pretraining_masker(trainer, run)
    network, _ = rebuild_network(trainer, run)
    data, properties = preprocess_images(images, run)
    patch_size, transpose, spacing = _geometry(run)
    if center is None:
        patch, offset = center_crop(data, patch_size)
    else:
        patch, offset = crop_around(data, patch_size, preprocessed_index(center, properties, transpose, data.shape[1:]))
    x = torch.from_numpy(patch)[None]
    batch = masker(x, generator=torch.Generator().manual_seed(int(seed)))
    with torch.no_grad():
        output = network.to(torch_device)(batch.masked.to(torch_device))
    output = (output[0] if isinstance(output, (list, tuple)) else output).float().cpu()
    if output.shape != x.shape:
        raise UserError(f"{run.checkpoint}'s network returns shape {tuple(output.shape)} for an input of shape "
                        f"{tuple(x.shape)}: not a reconstruction. Pass the checkpoint of a SubFore pretraining run.")
    return Reconstruction(
        image=patch, masked_input=batch.masked[0].numpy(), reconstruction=output[0].numpy(),
        subvolume_mask=batch.subvolume_mask[0].numpy(),
        foreground=None if masker.selection == "random" else batch.foreground[0].numpy(),
        subvolume_size=masker.subvolume_size, offset=tuple(int(o) for o in offset), spacing=spacing,
        axis_names=tuple(IMAGE_AXIS_NAMES[t] for t in transpose),
        masked_l1=_masked_l1(output, x, batch.subvolume_mask), unmasked_l1=_masked_l1(output, x, ~batch.subvolume_mask),
        constant_l1=_constant_l1(x, batch.subvolume_mask),
        masked_fraction=float(batch.masked_fraction), trainer_name=run.trainer_name, configuration=run.configuration,
        checkpoint=run.checkpoint, backbone=backbone_of_state_dict(run.network_weights) or type(network).__name__,
        masker=repr(masker), masking=masking_in_words(masker), seed=int(seed), intensity=_ct_mapping(run))


def _geometry(run: PretrainingRun) -> Tuple[List[int], List[int], Tuple[float, ...]]:
    """(patch size, nnU-Net's transpose_forward, spacing of the preprocessed volume) of the run's configuration."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(run.plans)
    config = manager.get_configuration(run.configuration)
    return ([int(p) for p in config.patch_size], [int(t) for t in manager.transpose_forward],
            tuple(float(s) for s in config.spacing))


def masking_in_words(masker: ForegroundMasker) -> str:
    """E.g. ``"foreground masking (fixed criterion): ratio 0.6, bernoulli selection, noise fill"``."""
    what = "random masking" if masker.selection == "random" else f"foreground masking ({masker.criterion} criterion)"
    return f"{what}: ratio {masker.ratio:g}, {masker.selection} selection, {masker.fill} fill"


def _masked_l1(prediction: torch.Tensor, target: torch.Tensor, subvolume_mask: torch.Tensor) -> float:
    """The trainer's loss over ``subvolume_mask`` (NaN when it is empty)."""
    if not bool(subvolume_mask.any()):
        return math.nan
    return float(subvolume_masked_l1_loss(prediction, target, subvolume_mask))


def _constant_l1(target: torch.Tensor, subvolume_mask: torch.Tensor) -> float:
    """The masked L1 of predicting, per channel, the median of the masked voxels (NaN when nothing is masked)."""
    if not bool(subvolume_mask.any()):
        return math.nan
    s = target.shape[2] // subvolume_mask.shape[1]
    inside = subvolume_mask[0].repeat_interleave(s, 0).repeat_interleave(s, 1).repeat_interleave(s, 2)
    values = target[0][:, inside]  # (C, masked voxels)
    return float((values - values.median(dim=1, keepdim=True).values).abs().mean())


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps): {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine; use --device cpu.")
    return device


def _ct_mapping(run: PretrainingRun) -> Optional[CTIntensityMapping]:
    """nnU-Net's CT normalization of channel 0 (None when channel 0 is not CT)."""
    schemes = plans_configuration(run.plans, run.configuration).get("normalization_schemes") or []
    if not schemes or schemes[0] != CT_SCHEME:
        return None
    try:
        return CTIntensityMapping.from_plans(run.plans, run.configuration)
    except (KeyError, ValueError):
        return None
