"""The paper's masking recipe: one frozen object that the masking, the trainers, the CLI and the figures read.

"HU-based Foreground Masking for 3D Medical Masked Image Modeling" (and its authors' code): the
patch is cut into ``16^3`` subvolumes; a subvolume is foreground when the mean of its windowed
intensity ``clip((HU + 175) / 425, 0, 1)`` is at least 0.1 (-132.5 HU for a uniform block); each
foreground subvolume is masked with probability 0.6 and filled with N(0, 1) noise. See
``docs/masking.md``. Pure Python: no torch, no nnU-Net.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from numbers import Integral
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type

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


def check_masking_settings(*, window: Optional[Sequence[float]] = None, threshold: Optional[float] = None,
                           subvolume_size: Optional[int] = None, ratio: Optional[float] = None,
                           selection: Optional[str] = None, fill: Optional[str] = None,
                           criterion: Optional[str] = None, error: Type[Exception] = ValueError) -> Dict[str, Any]:
    """The one validator of masking settings: the recipe, the masking functions and the figures call it.

    Args:
        window, threshold, subvolume_size, ratio, selection, fill, criterion: the settings to check (see
            :class:`MaskingRecipe`); ``None`` means not given, and is not checked.
        error: the exception raised (the commands pass :class:`nnunet_subfore.errors.UserError`).

    Returns:
        The given settings, normalized: ``window`` as a tuple of two floats, ``subvolume_size`` an int.

    Raises:
        ValueError: (or ``error``) a setting out of range or unknown, naming it and the value.
    """
    checked: Dict[str, Any] = {}
    if window is not None:
        if len(window) != 2 or not float(window[1]) > float(window[0]):
            raise error(f"window must be (low, high) with high > low, got {tuple(window)}.")
        checked["window"] = (float(window[0]), float(window[1]))
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise error(f"threshold applies to the windowed intensity in [0, 1], got {threshold}.")
    if subvolume_size is not None:
        if isinstance(subvolume_size, bool) or not isinstance(subvolume_size, Integral) or subvolume_size < 1:
            raise error(f"subvolume_size must be a positive integer, got {subvolume_size!r}.")
        checked["subvolume_size"] = int(subvolume_size)
    if ratio is not None and not 0.0 <= float(ratio) <= 1.0:
        raise error(f"ratio must lie in [0, 1], got {ratio}.")
    for name, value, allowed in (("selection", selection, SELECTIONS), ("fill", fill, FILLS),
                                 ("criterion", criterion, CRITERIA)):
        if value is not None and value not in allowed:
            raise error(f"{name} must be one of {allowed}, got {value!r}.")
    return checked


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
        object.__setattr__(self, "window", check_masking_settings(
            window=self.window, threshold=self.threshold, subvolume_size=self.subvolume_size, ratio=self.ratio,
            selection=self.selection, fill=self.fill, criterion=self.criterion)["window"])

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

