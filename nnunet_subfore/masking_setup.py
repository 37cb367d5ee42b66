"""The masker a pretraining trainer builds from its plans and masking recipe: one function, so that the
trainers and the masking report (:mod:`nnunet_subfore.reporting.masking_report`) mask alike.

- CT (channel 0 ``CTNormalization``): the HU criteria (``fixed``, ``otsu``) with the recipe's HU window
  mapped through the plans' normalization; plans that hide the threshold are refused.
- Non-CT (MRI; every channel ``ZScoreNormalization`` with ``use_mask_for_norm``, as nnU-Net plans
  BraTS): the ``nonzero`` criterion, the share of the subvolume inside the nonzero region (nnU-Net
  leaves the voxels outside it at 0). A recipe with an HU criterion switches to it, and says so.
- Anything else: refused with what to do (neither criterion applies).

Plain dicts in, no nnU-Net import: the plans are the content of ``plans.json``.
"""

from __future__ import annotations

from typing import Mapping, Tuple

from nnunet_subfore.intensity import CT_SCHEME, CTIntensityMapping, NotCTError
from nnunet_subfore.plans_reading import configuration as plans_configuration
from nnunet_subfore.masking import ForegroundMasker
from nnunet_subfore.recipe import MaskingRecipe

#: nnU-Net normalization schemes that leave the voxels outside the nonzero region at 0 with
#: ``use_mask_for_norm`` (their ``leaves_pixels_outside_mask_at_zero_if_use_mask_for_norm_is_true``).
ZERO_OUTSIDE_SCHEMES = ("ZScoreNormalization",)


class NoCriterionError(NotCTError):
    """Neither the HU criteria nor the nonzero-region criterion applies to the plans' normalization."""


def masker_for_plans(plans: Mapping, configuration: str, recipe: MaskingRecipe, source: str = "the plans",
                     channel: int = 0) -> Tuple[ForegroundMasker, str]:
    """The masker in nnU-Net's normalized units of ``plans``, and a line for the log saying what it does.

    Raises:
        IntensityTrapError: CT plans whose lower clip hides the threshold.
        NoCriterionError: no criterion applies (e.g. z-scored channels without ``use_mask_for_norm``), or
            the nonzero criterion asked for on CT.
        KeyError: the plans lack the configuration or its intensity properties.
    """
    config = plans_configuration(plans, configuration, source=source[:1].upper() + source[1:])
    if recipe.selection == "random":
        return ForegroundMasker.from_recipe(recipe), (
            f"Random masking: subvolumes drawn at random (ratio {recipe.ratio}), whatever their intensities: no "
            f"foreground criterion, so no intensity check of {source}")
    schemes = list(config.get("normalization_schemes") or [])
    if channel >= len(schemes):
        raise KeyError(f"The plans give no normalization scheme for channel {channel} of {configuration!r}.")
    if schemes[channel] == CT_SCHEME:
        if recipe.criterion == "nonzero":
            raise NoCriterionError(
                f"The nonzero-region criterion is for non-CT channels, but channel {channel} of {source} is CT "
                f"({CT_SCHEME}), where nothing outside the body is 0 after normalization. Use the HU criterion "
                f"(criterion fixed or otsu).")
        return _hu_masker(plans, configuration, recipe, source, channel)
    use_mask = list(config.get("use_mask_for_norm") or [False] * len(schemes))
    if all(s in ZERO_OUTSIDE_SCHEMES for s in schemes) and all(use_mask):
        switched = "" if recipe.criterion == "nonzero" else (
            f" (the recipe's {recipe.criterion} criterion reads Hounsfield units, which channel {channel} "
            f"({schemes[channel]}) has not: switched to nonzero)")
        recipe = recipe.with_changes(criterion="nonzero")
        line = (f"Nonzero-region foreground criterion{switched}: a subvolume is foreground when at least "
                f"{recipe.threshold:g} of its voxels lie inside the nonzero region (any channel != 0; {source} "
                f"normalize {schemes} with use_mask_for_norm {use_mask}, which leaves the outside at 0)")
        return ForegroundMasker.from_recipe(recipe), line
    raise NoCriterionError(
        f"Foreground masking needs Hounsfield units or a zero background, and {source} give neither: channel "
        f"{channel} is normalized with {schemes[channel]!r} (all channels: {schemes}, use_mask_for_norm {use_mask}). "
        f"The HU criterion needs channel 0 in {CT_SCHEME} (dataset.json naming it 'CT'); the nonzero-region "
        f"criterion needs every channel in {' or '.join(ZERO_OUTSIDE_SCHEMES)} with use_mask_for_norm true (set it "
        f"in the plans' configuration and preprocess again; nnU-Net sets it itself when cropping to the nonzero "
        f"region shrinks the images by a quarter, as for BraTS). Otherwise pretrain with random masking "
        f"(SubForeRandomMaskPretrainTrainer reads no intensities).")


def _hu_masker(plans: Mapping, configuration: str, recipe: MaskingRecipe, source: str,
               channel: int) -> Tuple[ForegroundMasker, str]:
    mapping = CTIntensityMapping.from_plans(plans, configuration, channel=channel)
    threshold_hu = mapping.check_threshold(recipe.window, recipe.threshold, source=source)
    rule = (f"mean windowed intensity >= {recipe.threshold}" if recipe.criterion == "fixed" else
            f"mean windowed intensity >= max(Otsu's threshold of the patch's block means, {recipe.threshold})")
    line = (f"HU foreground criterion ({recipe.criterion}): {rule} with window {recipe.window} "
            f"(-> {threshold_hu:.1f} HU for a uniform block); the plans clip CT to "
            f"[{mapping.lower_clip:.1f}, {mapping.upper_clip:.1f}] HU")
    return ForegroundMasker.from_recipe(recipe, window=mapping.window_to_normalized(recipe.window)), line
