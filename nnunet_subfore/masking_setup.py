"""The masker a pretraining trainer builds from its plans and masking recipe: one function, so that the
trainers and the masking report (:mod:`nnunet_subfore.reporting.masking_report`) mask alike.

Plain dicts in, no nnU-Net import: the plans are the content of ``plans.json``.
"""

from __future__ import annotations

from typing import Mapping, Tuple

from nnunet_subfore.intensity import CTIntensityMapping
from nnunet_subfore.masking import ForegroundMasker
from nnunet_subfore.recipe import MaskingRecipe


def masker_for_plans(plans: Mapping, configuration: str, recipe: MaskingRecipe, source: str = "the plans",
                     channel: int = 0) -> Tuple[ForegroundMasker, str]:
    """The masker in nnU-Net's normalized units of ``plans``, and a line for the log saying what it does.

    The recipe's HU window is mapped through the plans' CT normalization of ``channel``.

    Raises:
        IntensityTrapError: the plans' lower clip hides the threshold.
        NotCTError: the channel is not CT-normalized.
        KeyError: the plans lack the configuration or its intensity properties.
    """
    mapping = CTIntensityMapping.from_plans(plans, configuration, channel=channel)
    threshold_hu = mapping.check_threshold(recipe.window, recipe.threshold, source=source)
    rule = (f"mean windowed intensity >= {recipe.threshold}" if recipe.criterion == "fixed" else
            f"mean windowed intensity >= max(Otsu's threshold of the patch's block means, {recipe.threshold})")
    line = (f"HU foreground criterion ({recipe.criterion}): {rule} with window {recipe.window} "
            f"(-> {threshold_hu:.1f} HU for a uniform block); the plans clip CT to "
            f"[{mapping.lower_clip:.1f}, {mapping.upper_clip:.1f}] HU")
    return ForegroundMasker.from_recipe(recipe, window=mapping.window_to_normalized(recipe.window)), line
