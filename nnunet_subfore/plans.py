"""The ``SubForePlans`` preset: nnU-Net plans derived from a dataset's ``nnUNetPlans``.

Changes only what UNETR/SwinUNETR and the masking need:

* the 3d patch (default the paper's 96^3; sides divisible by 32, valid for both backbones and
  for 16^3 masking subvolumes) and optionally the batch size;
* optionally (``--tiny-cnn``) a tiny version of the CNN the plans describe (3 stages, 16-64 features,
  two convolutions or residual blocks per stage), same class and normalization as the source: what the
  demo and the tests pretrain and fine-tune on CPUs. nnU-Net's stock trainer rebuilds the network from
  the plans, so a smaller CNN must live in plans, not in a trainer;
* optionally the masking settings (threshold, window, subvolume size, ratio, selection, fill) as the
  plans entry ``subfore_masking``: the pretraining trainers read them from the plans they run with,
  the paper's values where a setting is not given; the preset's name (``--plans-name``) then names the
  results folder of each setting;
* optionally a fixed HU window as the CT normalization (``--hu-window LO HI``): intensities are
  clipped to [LO, HI] and mapped to [-1, 1], the same for every dataset, so the HU threshold of the
  masking stays visible whatever the labels cover. The preset then gets its own data identifier and
  must be preprocessed: ``nnUNetv2_preprocess -d ID -plans_name SubForePlans -c 3d_fullres``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from nnunet_subfore.errors import UserError
from nnunet_subfore.intensity import CT_SCHEME
from nnunet_subfore.networks import PATCH_DIVISORS
from nnunet_subfore.paths import find_dataset_name, nnunet_folder
from nnunet_subfore.plans_reading import configuration as plans_configuration
from nnunet_subfore.plans_reading import read_plans
from nnunet_subfore.recipe import PAPER_MASKING, PLANS_MASKING_KEY, MaskingRecipe, recipe_settings

#: A preset patch serves every backbone and the paper's masking subvolumes (SwinUNETR 32, UNETR 16, masking 16).
PATCH_MULTIPLE = math.lcm(*PATCH_DIVISORS.values(), PAPER_MASKING.subvolume_size)
#: The paper's crop (96^3 voxels at 1.5 mm), the preset's default patch.
PAPER_PATCH_SIZE = (96, 96, 96)


def derive_plans(
    plans: dict,
    patch_size: Sequence[int] = PAPER_PATCH_SIZE,
    batch_size: Optional[int] = None,
    hu_window: Optional[Tuple[float, float]] = None,
    configuration: str = "3d_fullres",
    target_plans: str = "SubForePlans",
    masking: Optional[Mapping[str, Any]] = None,
) -> dict:
    """The preset as a new plans dict (``plans`` is not modified).

    Args:
        plans: the source plans (content of ``nnUNetPlans.json``).
        patch_size: 3d patch; every side a positive multiple of 32.
        batch_size: new batch size, or None to keep the source's.
        hu_window: (low, high) HU: fixed CT normalization instead of the dataset's foreground statistics.
        configuration: the configuration to keep (the preset holds only this one, inheritance resolved).
        target_plans: the preset's name (``plans_name``, file name, data identifier prefix).
        masking: masking settings (:class:`nnunet_subfore.recipe.MaskingRecipe` fields) for the plans entry
            ``subfore_masking``; None keeps the source's entry, if any.
    """
    config = plans_configuration(plans, configuration, source="The source plans")
    patch = [int(p) for p in patch_size]
    if len(patch) != 3 or any(p <= 0 or p % PATCH_MULTIPLE for p in patch):
        raise UserError(
            f"--patch {' '.join(map(str, patch))} is invalid: give 3 sides, each a positive multiple of "
            f"{PATCH_MULTIPLE} (SwinUNETR needs 32, UNETR and the 16^3 masking subvolumes 16), e.g. 96 96 96."
        )
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}.")
    new = copy.deepcopy(plans)
    config["patch_size"] = patch
    if batch_size is not None:
        config["batch_size"] = int(batch_size)
    if hu_window is not None:
        lo, hi = float(hu_window[0]), float(hu_window[1])
        if not hi > lo:
            raise UserError(f"--hu-window needs LO < HI, got {lo} {hi}.")
        schemes = config.get("normalization_schemes", [])
        if CT_SCHEME not in schemes:
            raise UserError(
                f"--hu-window applies to CT channels, but {configuration!r} normalizes with {schemes}; "
                f"leave out --hu-window for non-CT data."
            )
        for channel, scheme in enumerate(schemes):
            if scheme == CT_SCHEME:
                props = new["foreground_intensity_properties_per_channel"][str(channel)]
                props.update({"percentile_00_5": lo, "percentile_99_5": hi, "mean": (lo + hi) / 2, "std": (hi - lo) / 2})
        config["data_identifier"] = f"{target_plans}_{configuration}"
    if masking is not None:
        recipe = checked_masking(masking)
        bad = [p for p in patch if p % recipe.subvolume_size]
        if bad:
            raise UserError(f"--subvolume-size {recipe.subvolume_size} does not divide the patch {patch}; choose a "
                            f"divisor of the patch sides (e.g. 16 or 32) or another --patch.")
        new[PLANS_MASKING_KEY] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in masking.items()}
    new["plans_name"] = target_plans
    new["configurations"] = {configuration: config}
    return new


#: The tiny CNN of ``--tiny-cnn``: features per stage (one stage per entry; each stage after the first halves
#: every side) and convolutions (or residual blocks) per stage, for 32^3 patches on CPUs. Measured on the
#: demo's phantoms (300 fine-tuning iterations from scratch): 16-32-64 with 2 convolutions learns the
#: liver (Dice 0.95); 8-16-32 with 1 and 8-16-32-64 with 2 learn nothing in that budget.
TINY_CNN_FEATURES = (16, 32, 64)
TINY_CNN_CONVS_PER_STAGE = 2
TINY_CNN_PATCH_SIZE = (32, 32, 32)
#: Per-stage lists of the dynamic-network-architectures U-Nets: encoder (n_stages) and decoder (n_stages - 1).
_ENCODER_LISTS = ("n_conv_per_stage", "n_blocks_per_stage")
_DECODER_LISTS = ("n_conv_per_stage_decoder",)


def derive_tiny_cnn_plans(
    plans: dict,
    features: Sequence[int] = TINY_CNN_FEATURES,
    patch_size: Sequence[int] = TINY_CNN_PATCH_SIZE,
    batch_size: Optional[int] = 2,
    configuration: str = "3d_fullres",
    target_plans: str = "SubForeTinyCNNPlans",
    convs_per_stage: int = TINY_CNN_CONVS_PER_STAGE,
) -> dict:
    """A tiny version of the CNN that ``plans`` describe, as a new plans dict (``plans`` is not modified).

    Keeps the network class (``PlainConvUNet`` / ``ResidualEncoderUNet``), its convolution, normalization
    and non-linearity, the spacing, the normalization and the data identifier (the preprocessed data do
    not depend on the network, so no new preprocessing is needed); sets ``len(features)`` stages with
    ``features`` channels, 3^3 kernels, stride 2 after the first stage, ``convs_per_stage`` convolutions
    (or residual blocks) per stage in encoder and decoder, and the patch.

    Args:
        plans: the source plans (e.g. ``nnUNetPlans.json`` or ``nnUNetResEncUNetMPlans.json``).
        features: channels per stage.
        patch_size: 3d patch; every side a multiple of 16 and of the total stride 2**(stages-1).
        batch_size: new batch size, or None to keep the source's.
        configuration: the 3d configuration to keep (inheritance resolved).
        target_plans: the preset's name.
    """
    config = plans_configuration(plans, configuration, source="The source plans")
    arch = config.get("architecture", {})
    arch_kwargs = arch.get("arch_kwargs", {})
    if "strides" not in arch_kwargs or "features_per_stage" not in arch_kwargs:
        raise UserError(f"{configuration!r} of plans {plans.get('plans_name')!r} describes no U-Net that nnU-Net "
                        f"plans ({arch.get('network_class_name')}); --tiny-cnn needs PlainConvUNet or ResidualEncoderUNet plans.")
    n = len(features)
    divisor = math.lcm(2 ** (n - 1), PAPER_MASKING.subvolume_size)
    patch = [int(p) for p in patch_size]
    if n < 2 or any(int(f) < 1 for f in features):
        raise UserError(f"A tiny CNN needs at least 2 stages with positive features, got {tuple(features)}.")
    if len(patch) != 3 or any(p <= 0 or p % divisor for p in patch):
        raise UserError(f"--patch {' '.join(map(str, patch))} is invalid for a {n}-stage CNN with 16^3 masking: "
                        f"every side must be a positive multiple of {divisor}.")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}.")
    config["architecture"] = {**arch, "arch_kwargs": _tiny_cnn_arch_kwargs(arch_kwargs, features, convs_per_stage)}
    config["patch_size"] = patch
    if batch_size is not None:
        config["batch_size"] = int(batch_size)
    new = copy.deepcopy(plans)
    new["plans_name"] = target_plans
    new["configurations"] = {configuration: config}
    return new


def _tiny_cnn_arch_kwargs(arch_kwargs: Mapping[str, Any], features: Sequence[int], convs_per_stage: int) -> Dict[str, Any]:
    """A copy of a U-Net's ``arch_kwargs`` with ``len(features)`` stages of ``features`` channels, 3^3 kernels, stride 2
    after the first stage, and ``convs_per_stage`` convolutions (or residual blocks) per stage in encoder and decoder."""
    n = len(features)
    kwargs = dict(arch_kwargs)
    kwargs.update(
        n_stages=n,
        features_per_stage=[int(f) for f in features],
        kernel_sizes=[[3, 3, 3]] * n,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
    )
    for key in _ENCODER_LISTS:
        if key in kwargs:
            kwargs[key] = [int(convs_per_stage)] * n
    for key in _DECODER_LISTS:
        if key in kwargs:
            kwargs[key] = [int(convs_per_stage)] * (n - 1)
    return kwargs


def checked_masking(masking: Mapping[str, Any]) -> MaskingRecipe:
    """The paper's recipe with ``masking`` applied; a UserError naming the bad setting."""
    try:
        return PAPER_MASKING.with_changes(**recipe_settings(masking))
    except (TypeError, ValueError) as e:
        raise UserError(f"Invalid masking setting: {e}") from e


def masking_settings(
    threshold: Optional[float] = None,
    threshold_hu: Optional[float] = None,
    threshold_from: Optional[Path] = None,
    window: Optional[Sequence[float]] = None,
    subvolume_size: Optional[int] = None,
    ratio: Optional[float] = None,
    selection: Optional[str] = None,
    fill: Optional[str] = None,
    criterion: Optional[str] = None,
) -> Dict[str, Any]:
    """The ``subfore_masking`` entry from the ``plans`` command's options (only the settings given).

    Args:
        threshold: lambda, on the windowed intensity in [0, 1].
        threshold_hu: lambda given as the HU of a uniform block on it (converted with the window).
        threshold_from: a ``threshold_analysis.json`` (``nnunet-subfore threshold-analysis``): its lambda and window.
        window, subvolume_size, ratio, selection, fill, criterion: as in :class:`nnunet_subfore.recipe.MaskingRecipe`.
    """
    given = [name for name, v in (("--threshold", threshold), ("--threshold-hu", threshold_hu),
                                  ("--threshold-from", threshold_from)) if v is not None]
    if len(given) > 1:
        raise UserError(f"Give one of {', '.join(given)}.")
    settings: Dict[str, Any] = {}
    if window is not None:
        settings["window"] = [float(window[0]), float(window[1])]
    if threshold_from is not None:
        from nnunet_subfore.reporting.threshold_analysis import read_lambda

        lam, analysis_window = read_lambda(threshold_from)
        if window is not None and tuple(settings["window"]) != analysis_window:
            raise UserError(f"{threshold_from} found lambda with the window {analysis_window}, not --window "
                            f"{tuple(settings['window'])}; leave out --window or rerun the analysis with it.")
        settings["window"], settings["threshold"] = list(analysis_window), lam
    if threshold is not None:
        settings["threshold"] = float(threshold)
    if threshold_hu is not None:
        lo, hi = settings.get("window", PAPER_MASKING.window)
        settings["threshold"] = (float(threshold_hu) - lo) / (hi - lo)
        if not 0.0 <= settings["threshold"] <= 1.0:
            raise UserError(f"--threshold-hu {threshold_hu:g} lies outside the window ({lo:g}, {hi:g}) HU.")
    for key, value in (("subvolume_size", subvolume_size), ("ratio", ratio), ("selection", selection), ("fill", fill),
                       ("criterion", criterion)):
        if value is not None:
            settings[key] = value
    checked_masking(settings)
    return settings


def write_subfore_plans(
    dataset: Union[int, str],
    patch_size: Optional[Sequence[int]] = None,
    batch_size: Optional[int] = None,
    hu_window: Optional[Tuple[float, float]] = None,
    source_plans: str = "nnUNetPlans",
    target_plans: str = "SubForePlans",
    configuration: str = "3d_fullres",
    force: bool = False,
    preprocessed_root: Optional[Path] = None,
    tiny_cnn: bool = False,
    masking: Optional[Mapping[str, Any]] = None,
    from_checkpoint: Optional[Path] = None,
) -> Path:
    """Write ``$nnUNet_preprocessed/<Dataset>/<target_plans>.json`` (see :func:`derive_plans`; with
    ``tiny_cnn``, :func:`derive_tiny_cnn_plans`; with ``from_checkpoint``, the checkpoint's network, pretraining
    spacing and recommended patch: :func:`nnunet_subfore.pretrained_plans.plans_from_checkpoint`).
    ``patch_size`` None: the paper's 96^3, 32^3 for the tiny CNN, the checkpoint's recommendation with
    ``from_checkpoint``; ``batch_size`` None: the source's, or 2 for the tiny CNN and ``from_checkpoint``."""
    root = nnunet_folder("preprocessed", preprocessed_root)
    name = find_dataset_name(dataset, root)
    source = root / name / f"{source_plans}.json"
    target = root / name / f"{target_plans}.json"
    if not source.is_file():
        raise UserError(
            f"{source} does not exist. Plan the dataset first: `nnUNetv2_plan_and_preprocess -d {dataset} -c {configuration}`."
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*(_[A-Za-z0-9\-]+)*", target_plans):
        raise UserError(
            f"--plans-name {target_plans!r} is not a plans name: use letters, digits, '-' and single '_' (no "
            f"folders, no '__', which nnU-Net uses to separate trainer, plans and configuration), e.g. SubForePlans."
        )
    if target == source:
        raise UserError(f"The preset may not replace its source {source}: choose another --plans-name.")
    if target.exists() and not force:
        raise UserError(f"{target} exists; pass --force to replace it.")
    if from_checkpoint is not None:
        new = _plans_from_checkpoint(read_plans(source), Path(from_checkpoint), patch_size, batch_size, hu_window,
                                     configuration, target_plans, tiny_cnn, masking)
    elif tiny_cnn:
        new = _tiny_cnn_preset(read_plans(source), patch_size, batch_size, hu_window, configuration, target_plans, masking)
    else:
        new = derive_plans(read_plans(source), PAPER_PATCH_SIZE if patch_size is None else patch_size, batch_size,
                           hu_window, configuration, target_plans, masking)
    target.write_text(json.dumps(new, indent=4))
    return target


def _tiny_cnn_preset(plans: dict, patch_size, batch_size, hu_window, configuration: str, target_plans: str,
                     masking: Optional[Mapping[str, Any]]) -> dict:
    if hu_window is not None:
        raise UserError("--tiny-cnn keeps the source's normalization; derive the --hu-window preset first and "
                        "pass it as --source-plans.")
    new = derive_tiny_cnn_plans(plans, patch_size=TINY_CNN_PATCH_SIZE if patch_size is None else patch_size,
                                batch_size=2 if batch_size is None else batch_size, configuration=configuration,
                                target_plans=target_plans)
    return _with_masking(new, masking)


def _plans_from_checkpoint(plans: dict, checkpoint: Path, patch_size, batch_size, hu_window, configuration: str,
                           target_plans: str, tiny_cnn: bool, masking: Optional[Mapping[str, Any]]) -> dict:
    from nnunet_subfore.pretrained_plans import plans_from_checkpoint

    if tiny_cnn or hu_window is not None:
        raise UserError(f"--from-checkpoint takes the network from the checkpoint and keeps the dataset's "
                        f"normalization; leave out {'--tiny-cnn' if tiny_cnn else '--hu-window'} (or derive the "
                        f"--hu-window preset first and pass it as --source-plans).")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}.")
    new = plans_from_checkpoint(plans, checkpoint, configuration, target_plans, patch_size)
    if batch_size is not None:
        new["configurations"][configuration]["batch_size"] = int(batch_size)
    return _with_masking(new, masking)


def _with_masking(plans: dict, masking: Optional[Mapping[str, Any]]) -> dict:
    """``plans`` with the ``subfore_masking`` entry (checked) when masking settings are given."""
    if masking:
        checked_masking(masking)
        plans[PLANS_MASKING_KEY] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in masking.items()}
    return plans


def next_steps(plans_file: Path, plans_name: str, configuration: str, masking: Optional[Mapping[str, Any]] = None,
               needs_preprocessing: bool = False) -> List[str]:
    """What the ``plans`` command prints after writing ``plans_file``: the masking settings and the next commands."""
    lines = [f"Wrote {plans_file}"]
    if masking:
        lines.append(f"Masking settings (subfore_masking): {dict(masking)}; with the paper's for the rest: "
                     f"{checked_masking(masking).describe()}. Each setting gets its own results folder through its "
                     f"--plans-name (now {plans_name!r}).")
    name = Path(plans_file).parent.name
    if needs_preprocessing:
        lines.append(f"Preprocess it:  nnUNetv2_preprocess -d {name} -plans_name {plans_name} -c {configuration}")
    lines.append(f"Train with it:  nnUNetv2_train {name} {configuration} FOLD -tr TRAINER -p {plans_name}")
    return lines

