"""Hounsfield units <-> nnU-Net-normalized CT intensities, read from nnU-Net plans.

nnU-Net's ``CTNormalization`` clips each CT image to the dataset's foreground percentiles
``[percentile_00_5, percentile_99_5]`` and z-scores it with the foreground ``mean`` / ``std``
(``foreground_intensity_properties_per_channel`` in the plans). The HU foreground criterion of
:mod:`nnunet_subfore.masking` is linear up to clipping, so it can be evaluated on the normalized
batch with the HU window mapped through the same affine map. This only works when the lower clip
lies below the threshold: otherwise air, fat and lung all become the lower clip value and every
subvolume counts as foreground (the "intensity trap", see ``docs/intensity.md``).

No nnU-Net import here: the plans are plain dicts (``plans.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Tuple

from nnunet_subfore.errors import UserError
from nnunet_subfore.masking import DEFAULT_THRESHOLD, DEFAULT_WINDOW, threshold_in_input_units
from nnunet_subfore.plans_reading import configuration as plans_configuration

CT_SCHEME = "CTNormalization"


class IntensityTrapError(UserError, ValueError):
    """The plans' normalization makes the HU foreground criterion meaningless."""


class NotCTError(UserError, ValueError):
    """The channel to be masked by HU is not CT-normalized."""


@dataclass(frozen=True)
class CTIntensityMapping:
    """The affine map nnU-Net's ``CTNormalization`` applies, with its clip range (all in HU).

    Args:
        mean: foreground mean in HU.
        std: foreground standard deviation in HU (> 0).
        lower_clip: ``percentile_00_5`` in HU.
        upper_clip: ``percentile_99_5`` in HU.
    """

    mean: float
    std: float
    lower_clip: float
    upper_clip: float

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ValueError(f"std must be positive, got {self.std}.")
        if not self.upper_clip > self.lower_clip:
            raise ValueError(f"upper_clip ({self.upper_clip}) must exceed lower_clip ({self.lower_clip}).")

    @classmethod
    def from_plans(cls, plans: Mapping, configuration: str = "3d_fullres", channel: int = 0) -> "CTIntensityMapping":
        """Read the mapping for ``channel`` from a plans dict (the content of ``nnUNetPlans.json``).

        Raises:
            NotCTError: the channel's normalization scheme is not ``CTNormalization``.
            KeyError: the plans lack the configuration or the intensity properties.
        """
        schemes = plans_configuration(plans, configuration).get("normalization_schemes")
        if schemes is None or channel >= len(schemes):
            raise KeyError(f"The plans give no normalization scheme for channel {channel} of {configuration!r}.")
        if schemes[channel] != CT_SCHEME:
            raise NotCTError(
                f"Channel {channel} is normalized with {schemes[channel]!r}, not {CT_SCHEME!r}: its intensities "
                f"are not Hounsfield units, so the HU foreground criterion does not apply. Use CT data (nnU-Net "
                f"picks CTNormalization when dataset.json names the channel 'CT'), or pretrain non-CT data "
                f"with random masking (the ablation trainers of the README's trainer table read no intensities)."
            )
        props = plans["foreground_intensity_properties_per_channel"][str(channel)]
        return cls(
            mean=float(props["mean"]),
            std=float(props["std"]),
            lower_clip=float(props["percentile_00_5"]),
            upper_clip=float(props["percentile_99_5"]),
        )

    def to_normalized(self, hu):
        """HU -> normalized intensity, clipping like nnU-Net (works on floats, numpy arrays, tensors)."""
        if isinstance(hu, (int, float)):
            return (min(max(float(hu), self.lower_clip), self.upper_clip) - self.mean) / self.std
        return (hu.clip(self.lower_clip, self.upper_clip) - self.mean) / self.std

    def to_hu(self, normalized):
        """Normalized intensity -> HU (values that were clipped come back as the clip bound)."""
        return normalized * self.std + self.mean

    def window_to_normalized(self, window: Sequence[float] = DEFAULT_WINDOW) -> Tuple[float, float]:
        """The HU window expressed in normalized units (affine map only, no clipping).

        Evaluating the criterion with this window on normalized data equals evaluating it with
        the HU window on the clipped HU image.
        """
        return ((float(window[0]) - self.mean) / self.std, (float(window[1]) - self.mean) / self.std)

    def check_threshold(
        self,
        window: Sequence[float] = DEFAULT_WINDOW,
        threshold: float = DEFAULT_THRESHOLD,
        source: str = "the plans",
    ) -> float:
        """Raise :class:`IntensityTrapError` when the lower clip hides the threshold; return the threshold in HU."""
        threshold_hu = threshold_in_input_units(window, threshold)
        if self.lower_clip >= threshold_hu:
            raise IntensityTrapError(
                f"HU foreground masking cannot work with {source}: its CT normalization clips intensities "
                f"below {self.lower_clip:.1f} HU (percentile_00_5 of foreground_intensity_properties_per_channel), "
                f"which is at or above the foreground threshold of {threshold_hu:.1f} HU (window {tuple(window)}, "
                f"threshold {threshold}). After nnU-Net's preprocessing air, lung and fat all read "
                f"{self.lower_clip:.1f} HU, so every subvolume would count as foreground.\n"
                f"Fix one of:\n"
                f"  1. register the pretraining images with body masks as label 1 "
                f"(`nnunet-subfore register-unlabeled SRC... -d ID -n NAME`), then rerun "
                f"`nnUNetv2_plan_and_preprocess -d ID`: the lower clip then lies near air;\n"
                f"  2. use a plans preset with a fixed HU window: `nnunet-subfore plans -d ID --hu-window -1000 1000`, "
                f"`nnUNetv2_preprocess -d ID -plans_name SubForePlans -c 3d_fullres`, and train with "
                f"`-p SubForePlans`."
            )
        return threshold_hu
