"""The ``SubForePlans`` preset: nnU-Net plans derived from a dataset's ``nnUNetPlans``.

Changes only what UNETR/SwinUNETR and the masking need:

* the 3d patch (default the paper's 96^3; sides divisible by 32, valid for both backbones and
  for 16^3 masking subvolumes) and optionally the batch size;
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
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from nnunet_subfore.errors import UserError
from nnunet_subfore.intensity import CT_SCHEME, resolve_configuration
from nnunet_subfore.networks import PATCH_DIVISORS
from nnunet_subfore.paths import find_dataset_name, nnunet_folder
from nnunet_subfore.recipe import PAPER_MASKING, PLANS_MASKING_KEY, MaskingRecipe, recipe_settings

#: A preset patch serves every backbone and the paper's masking subvolumes (SwinUNETR 32, UNETR 16, masking 16).
PATCH_MULTIPLE = math.lcm(*PATCH_DIVISORS.values(), PAPER_MASKING.subvolume_size)
#: The paper's crop (96^3 voxels at 1.5 mm), the preset's default patch.
PAPER_PATCH_SIZE = (96, 96, 96)


def read_plans(path: Path) -> dict:
    """The content of an nnU-Net plans file; a clear error for a missing file or one that is not plans JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Plans file {path} does not exist (nnUNetv2_plan_and_preprocess writes "
                        f"$nnUNet_preprocessed/DatasetXXX_NAME/nnUNetPlans.json).")
    try:
        plans = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a JSON file ({e}); pass the plans JSON nnU-Net wrote (e.g. nnUNetPlans.json).") from e
    if not isinstance(plans, dict) or "configurations" not in plans:
        raise UserError(f"{path} holds no nnU-Net plans (no 'configurations'); pass e.g. nnUNetPlans.json.")
    return plans


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
    configurations = plans.get("configurations", {})
    if configuration not in configurations:
        raise UserError(f"The source plans have no configuration {configuration!r} (available: {sorted(configurations)}).")
    patch = [int(p) for p in patch_size]
    if len(patch) != 3 or any(p <= 0 or p % PATCH_MULTIPLE for p in patch):
        raise UserError(
            f"--patch {' '.join(map(str, patch))} is invalid: give 3 sides, each a positive multiple of "
            f"{PATCH_MULTIPLE} (SwinUNETR needs 32, UNETR and the 16^3 masking subvolumes 16), e.g. 96 96 96."
        )
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}.")
    new = copy.deepcopy(plans)
    config = resolve_configuration(configurations, configuration)
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
    patch_size: Sequence[int] = PAPER_PATCH_SIZE,
    batch_size: Optional[int] = None,
    hu_window: Optional[Tuple[float, float]] = None,
    source_plans: str = "nnUNetPlans",
    target_plans: str = "SubForePlans",
    configuration: str = "3d_fullres",
    force: bool = False,
    preprocessed_root: Optional[Path] = None,
    masking: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``$nnUNet_preprocessed/<Dataset>/<target_plans>.json`` (see :func:`derive_plans`)."""
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
    new = derive_plans(read_plans(source), patch_size, batch_size, hu_window, configuration, target_plans, masking)
    target.write_text(json.dumps(new, indent=4))
    return target
