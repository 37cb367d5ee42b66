"""The paper's masking recipe: one frozen object that the masking, the trainers, the CLI and the figures read.

"HU-based Foreground Masking for 3D Medical Masked Image Modeling" (and its authors' code): the
patch is cut into ``16^3`` subvolumes; a subvolume is foreground when the mean of its windowed
intensity ``clip((HU + 175) / 425, 0, 1)`` is at least 0.1 (-132.5 HU for a uniform block); each
foreground subvolume is masked with probability 0.6 and filled with N(0, 1) noise. See
``docs/masking.md``. Pure Python: no torch, no nnU-Net.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Mapping, Tuple

#: How the subvolumes to mask are chosen (see :func:`nnunet_subfore.masking.sample_subvolume_mask`).
SELECTIONS = ("bernoulli", "exact", "random")
#: How the foreground subvolumes are found (see :func:`nnunet_subfore.masking.foreground_subvolumes`):
#: ``"fixed"`` the paper's global lambda; ``"otsu"`` per patch, Otsu's threshold over the patch's block
#: means, never below lambda; ``"nonzero"`` for non-CT data (MRI): the share of the subvolume inside the
#: nonzero region (any channel != 0) is at least the threshold.
CRITERIA = ("fixed", "otsu", "nonzero")
#: The criteria that read Hounsfield units through the window.
HU_CRITERIA = ("fixed", "otsu")
#: What masked voxels are filled with (see :func:`nnunet_subfore.masking.fill_masked`).
FILLS = ("noise", "zero")

#: The plans entry holding masking settings (written by ``nnunet-subfore plans``, read by the pretraining trainers).
PLANS_MASKING_KEY = "subfore_masking"

#: Hounsfield units of air (the value volumes are padded with where a patch sticks out of a CT image).
AIR_HU = -1000.0
#: HU above which a CT voxel may be body (body masks of unlabeled CT); a CT volume in HU has voxels below it.
BODY_THRESHOLD_HU = -500.0


@dataclass(frozen=True)
class MaskingRecipe:
    """HU-foreground masking settings.

    Args:
        window: (low, high) HU window of the criterion's windowed intensity.
        threshold: lambda: a subvolume is foreground when the mean windowed intensity is >= this.
        subvolume_size: side of the cubic subvolumes, in voxels.
        ratio: share of the foreground subvolumes masked.
        selection: ``"bernoulli"`` (each foreground subvolume independently, the authors' code),
            ``"exact"`` (exactly ``round(ratio * n)``) or ``"random"`` (the ablation: any subvolume).
        fill: ``"noise"`` (N(0, 1), the authors' code) or ``"zero"``.
        criterion: ``"fixed"`` (the paper's: block mean >= threshold), ``"otsu"`` (per patch: block mean
            >= max(Otsu's threshold over the patch's block means, threshold)) or ``"nonzero"`` (non-CT:
            share of the block inside the nonzero region >= threshold); see :data:`CRITERIA`.
    """

    window: Tuple[float, float] = (-175.0, 250.0)
    threshold: float = 0.1
    subvolume_size: int = 16
    ratio: float = 0.6
    selection: str = "bernoulli"
    fill: str = "noise"
    criterion: str = "fixed"

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.window)
        if not hi > lo:
            raise ValueError(f"window must be (low, high) with high > low, got {tuple(self.window)}.")
        object.__setattr__(self, "window", (lo, hi))
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold applies to the windowed intensity in [0, 1], got {self.threshold}.")
        if int(self.subvolume_size) < 1:
            raise ValueError(f"subvolume_size must be a positive integer, got {self.subvolume_size}.")
        if not 0.0 <= float(self.ratio) <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {self.ratio}.")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}.")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}.")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}.")

    @property
    def threshold_hu(self) -> float:
        """The HU of a uniform subvolume exactly on the threshold (-132.5 HU for the paper's recipe)."""
        lo, hi = self.window
        return lo + self.threshold * (hi - lo)

    def with_changes(self, **changes) -> "MaskingRecipe":
        """A copy with some settings changed (validated like the original)."""
        return replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """The settings as plain JSON values."""
        d = asdict(self)
        d["window"] = list(self.window)
        return d

    def describe(self) -> str:
        """One line: every setting, the threshold also in HU."""
        if self.criterion == "nonzero":
            return (f"criterion nonzero: share of the subvolume inside the nonzero region >= {self.threshold:g}, "
                    f"subvolumes {self.subvolume_size}^3, ratio {self.ratio:g}, selection {self.selection}, "
                    f"fill {self.fill}")
        criterion = "" if self.criterion == "fixed" else f"criterion {self.criterion} (bounded below by) "
        return (f"window {self.window} HU, {criterion}threshold {self.threshold:g} ({self.threshold_hu:.1f} HU for a uniform "
                f"block), subvolumes {self.subvolume_size}^3, ratio {self.ratio:g}, selection {self.selection}, "
                f"fill {self.fill}")


#: The paper's recipe (window and selection/fill from the authors' code).
PAPER_MASKING = MaskingRecipe()


def recipe_settings(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """Checked keyword arguments of :class:`MaskingRecipe` from a plans entry (JSON: lists for tuples).

    Raises:
        ValueError: an unknown setting.
    """
    known = {f.name for f in fields(MaskingRecipe)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown masking setting(s) {unknown}; known: {sorted(known)}")
    out = dict(settings)
    if "window" in out:
        out["window"] = tuple(float(v) for v in out["window"])
    return out


def recipe_from_plans(plans: Mapping[str, Any], default: MaskingRecipe = PAPER_MASKING) -> Tuple[MaskingRecipe, Dict[str, Any]]:
    """``default`` with the settings of the plans' :data:`PLANS_MASKING_KEY` entry, and those settings.

    Raises:
        ValueError: unknown or invalid settings (named).
    """
    settings = dict(plans.get(PLANS_MASKING_KEY) or {})
    return default.with_changes(**recipe_settings(settings)), settings

