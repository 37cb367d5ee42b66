"""How synthetic CT phantoms vary from case to case: tissue intensities, contrast phases, and the ranges of a variety.

A :class:`PhantomVariety` holds the range of every case-level choice (body size and position, arms,
scan range, organ size, voxel spacing, noise, texture, contrast phase and strength, scanner offset).
:func:`draw_case` draws one :class:`PhantomCase` from it with a seed; the anatomy module renders it.
Two named varieties (:data:`VARIETIES`):

- ``"wide"``: the variety of a pretraining collection or of held-out test cases (several scanners,
  protocols, contrast phases and patients).
- ``"narrow"``: a sub-range of ``"wide"`` in every setting (one protocol: portal-venous phase, fixed
  1.5 mm spacing, average patients, no arms, little noise and offset spread): what a small labelled set
  from one site looks like. A benchmark draws its labelled cases from it and its held-out cases from
  ``"wide"``.

Pure numpy; no nnU-Net.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Dict, Sequence, Tuple, Union

import numpy as np

Range = Tuple[float, float]

HU: Dict[str, float] = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "cavity": -50.0,  # visceral fat and bowel, a mix (the mean of the abdomen outside the organs)
    "bowel": 30.0,
    "fluid": 10.0,
    "muscle": 45.0,
    "heart": 45.0,
    "blood": 40.0,
    "liver": 58.0,
    "spleen": 48.0,
    "kidneys": 32.0,
    "kidney_medulla": 28.0,
    "cartilage": 110.0,
    "cancellous_bone": 220.0,
    "bone": 700.0,
    "table": 250.0,
    "table_foam": -900.0,
}
"""Native (unenhanced) mean intensity of each tissue (HU), before contrast, texture, offset and noise."""

ENHANCEMENT: Dict[str, Dict[str, float]] = {
    "native": {},
    "arterial": {"blood": 260.0, "heart": 180.0, "liver": 15.0, "spleen": 60.0, "kidneys": 120.0,
                 "kidney_medulla": 30.0, "muscle": 5.0, "bowel": 10.0},
    "portal-venous": {"blood": 130.0, "heart": 100.0, "liver": 55.0, "spleen": 65.0, "kidneys": 120.0,
                      "kidney_medulla": 110.0, "muscle": 10.0, "bowel": 25.0},
    "delayed": {"blood": 60.0, "heart": 45.0, "liver": 30.0, "spleen": 30.0, "kidneys": 80.0,
                "kidney_medulla": 100.0, "muscle": 8.0, "bowel": 15.0},
}
"""HU added to a tissue in each contrast phase, at enhancement strength 1 (typical iodinated-contrast values)."""

PHASES = tuple(ENHANCEMENT)


@dataclass(frozen=True)
class PhantomVariety:
    """The range of every case-level setting of a phantom; each case draws uniformly within the ranges.

    Args:
        body_width: the body's left-right width as a share of the in-plane field of view.
        body_depth: the body's anterior-posterior depth as a share of its width.
        body_shift: largest shift of the body centre from the field-of-view centre, as a share of the
            field of view (left-right and anterior-posterior).
        fat: subcutaneous fat thickness as a share of the body's half-width.
        visceral_fat: share of the abdominal cavity (outside the organs) that is fat rather than bowel.
        arms_probability: chance that the arms lie beside the body; the field of view then widens to take
            them in (the body's width shrinks to 0.85 of its drawn share), though its edge may cut them in a
            broad patient. Otherwise they are raised out of it.
        scan_range: length of the scan range along z, in body half-widths: about 1.5 for the chest or the
            upper abdomen alone, 3.5 for chest, abdomen and pelvis. With the slice count (the volume's shape)
            it sets the slice thickness, as on a scanner.
        chest_share: where the scan range sits on the body, 0 (the diaphragm near the top: mostly abdomen)
            to 1 (the diaphragm as low as the range allows: mostly chest). Every range keeps some lung
            and at least the upper poles of the kidneys.
        lung_size: lung height and width, relative to an average patient.
        organ_size: liver, spleen and kidney size, relative to an average patient.
        organ_shift: largest organ displacement, as a share of the body's half-size.
        spacing_xy: in-plane voxel size (mm).
        noise_sd: standard deviation of the (slightly correlated) image noise, HU.
        texture_sd: standard deviation of the low-frequency texture inside organs, HU.
        phases: contrast phases to draw from (:data:`PHASES`).
        enhancement: contrast strength, a factor on :data:`ENHANCEMENT`.
        scanner_offset: global HU offset (calibration), added to every voxel.
        bone_density: HU of cancellous bone (vertebral bodies).
    """

    body_width: Range = (0.75, 0.94)
    body_depth: Range = (0.65, 0.85)
    body_shift: Range = (0.0, 0.06)
    fat: Range = (0.04, 0.16)
    visceral_fat: Range = (0.25, 0.65)
    arms_probability: float = 0.3
    scan_range: Range = (1.5, 3.5)
    chest_share: Range = (0.0, 1.0)
    lung_size: Range = (0.85, 1.15)
    organ_size: Range = (0.85, 1.15)
    organ_shift: Range = (0.0, 0.06)
    spacing_xy: Range = (1.2, 1.9)
    noise_sd: Range = (6.0, 35.0)
    texture_sd: Range = (3.0, 14.0)
    phases: Tuple[str, ...] = PHASES
    enhancement: Range = (0.7, 1.2)
    scanner_offset: Range = (-30.0, 30.0)
    bone_density: Range = (150.0, 300.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "phases":
                phases = tuple(value)
                unknown = [p for p in phases if p not in PHASES]
                if not phases or unknown:
                    raise ValueError(f"phases must be a non-empty selection of {PHASES}, got {phases!r}.")
                object.__setattr__(self, "phases", phases)
            elif f.name == "arms_probability":
                if not 0.0 <= float(value) <= 1.0:
                    raise ValueError(f"arms_probability must lie in [0, 1], got {value}.")
            else:
                lo, hi = (float(v) for v in value)
                if lo > hi:
                    raise ValueError(f"{f.name} must be a range (low, high) with low <= high, got {tuple(value)}.")
                if f.name in ("spacing_xy", "scan_range") and lo <= 0:
                    raise ValueError(f"{f.name} must be positive voxel sizes in mm, got {tuple(value)}.")
                object.__setattr__(self, f.name, (lo, hi))

    def with_changes(self, **changes) -> "PhantomVariety":
        """A copy with some ranges changed (validated like the original)."""
        return replace(self, **changes)

    def covers(self, other: "PhantomVariety") -> bool:
        """Whether every range of ``other`` lies within this variety's (and its phases among these)."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "phases":
                ok = set(theirs) <= set(mine)
            elif f.name == "arms_probability":
                ok = theirs <= mine
            else:
                ok = mine[0] <= theirs[0] and theirs[1] <= mine[1]
            if not ok:
                return False
        return True


VARIETIES: Dict[str, PhantomVariety] = {
    "wide": PhantomVariety(),
    "narrow": PhantomVariety(
        body_width=(0.82, 0.88), body_depth=(0.72, 0.78), body_shift=(0.0, 0.02), fat=(0.08, 0.11),
        visceral_fat=(0.40, 0.48), arms_probability=0.0, scan_range=(2.2, 2.6),
        chest_share=(0.35, 0.6), lung_size=(0.95, 1.05),
        organ_size=(0.95, 1.05), organ_shift=(0.0, 0.02), spacing_xy=(1.5, 1.5),
        noise_sd=(12.0, 16.0), texture_sd=(6.0, 8.0), phases=("portal-venous",), enhancement=(0.95, 1.05),
        scanner_offset=(-3.0, 3.0), bone_density=(200.0, 240.0),
    ),
}
"""The named varieties (see the module's docstring); ``"narrow"`` lies within ``"wide"`` in every setting."""


def resolve_variety(variety: Union[str, PhantomVariety]) -> PhantomVariety:
    """A :class:`PhantomVariety` from itself or from a name in :data:`VARIETIES`.

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(variety, PhantomVariety):
        return variety
    if variety not in VARIETIES:
        raise ValueError(f"variety must be one of {sorted(VARIETIES)} or a PhantomVariety, got {variety!r}.")
    return VARIETIES[variety]


@dataclass(frozen=True)
class PhantomCase:
    """Everything drawn for one phantom; :func:`nnunet_subfore.data.phantom_anatomy.render` turns it into voxels.

    Attributes:
        seed: the case's seed (also seeds its texture and noise).
        shape: ``(z, y, x)`` voxels.
        spacing: ``(z, y, x)`` mm.
        body_width, body_depth: the body's width (share of the field of view) and depth (share of its width).
        body_shift: ``(y, x)`` shift of the body centre, share of the field of view.
        fat, visceral_fat, arms, chest_share, lung_size, organ_size: see :class:`PhantomVariety`.
        organ_shifts: per organ, ``(z, y, x)`` displacement as a share of the body's half-size.
        phase: the contrast phase; ``tissue_hu`` the mean HU of each tissue in it (before the offset).
        enhancement: contrast strength.
        noise_sd, texture_sd, scanner_offset: HU.
        details: small draws within fixed ranges, not part of the variety (:data:`DETAIL_RANGES`).
    """

    seed: int
    shape: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    body_width: float
    body_depth: float
    body_shift: Tuple[float, float]
    fat: float
    visceral_fat: float
    arms: bool
    chest_share: float
    lung_size: float
    organ_size: Dict[str, float]
    organ_shifts: Dict[str, Tuple[float, float, float]]
    phase: str
    enhancement: float
    noise_sd: float
    texture_sd: float
    scanner_offset: float
    tissue_hu: Dict[str, float] = field(default_factory=dict)
    details: Dict[str, float] = field(default_factory=dict)

    def summary(self) -> Dict[str, object]:
        """The case-level settings as plain JSON values (what a dataset's ``subfore_phantoms.json`` records)."""
        return {
            "seed": int(self.seed), "spacing": [float(s) for s in self.spacing], "phase": self.phase,
            "enhancement": round(self.enhancement, 3), "noise_sd": round(self.noise_sd, 2),
            "texture_sd": round(self.texture_sd, 2), "scanner_offset": round(self.scanner_offset, 2),
            "body_width": round(self.body_width, 3), "body_depth": round(self.body_depth, 3),
            "fat": round(self.fat, 3), "arms": bool(self.arms), "chest_share": round(self.chest_share, 3),
            "organ_hu": {k: round(self.tissue_hu[k] + self.scanner_offset, 1) for k in ("liver", "spleen", "kidneys")},
        }


ORGANS = ("liver", "spleen", "kidneys", "stomach")

#: With the arms beside the body the field of view widens: the body's share of it shrinks by this factor.
ARMS_FIELD_OF_VIEW = 0.85

DETAIL_RANGES: Dict[str, Range] = {
    "taper": (-0.04, 0.04),  # change of the body's width from the bottom to the top of the scan range
    "wall": (0.04, 0.07),  # muscle wall thickness, share of the body's half-width
    "dome_height": (0.12, 0.22),  # depth of the diaphragm domes, share of the body's half-width
    "right_dome_up": (0.0, 0.08),  # how much higher the right dome sits
    "heart_size": (0.9, 1.1),
    "vertebra_phase": (0.0, 1.0),
    "rib_phase": (0.0, 1.0),
    "stomach_gas": (0.0, 0.35),  # share of the stomach's depth filled with gas
    "bowel_gas": (0.0, 0.02),  # share of the bowel that is gas
    "arm_gap": (0.02, 0.12),  # gap between arm and body, share of the body's half-width
    "table_gap": (0.01, 0.05),  # gap between back and table, share of the field of view's half-height
    "table_curve": (0.0, 1.0),
}
"""Ranges of :attr:`PhantomCase.details`: anatomical detail that every variety draws the same way."""


def draw_case(seed: int, shape: Sequence[int], variety: PhantomVariety,
              spacing: Union[Sequence[float], None] = None) -> PhantomCase:
    """Draw one case from ``variety`` with ``seed`` (the same arguments give the same case).

    Args:
        seed: any non-negative integer.
        shape: ``(z, y, x)`` voxels (checked by the caller).
        variety: the ranges to draw from.
        spacing: ``(z, y, x)`` mm; None draws the in-plane spacing from the variety and makes the slice
            thickness the drawn scan range divided by the slice count.
    """
    rng = np.random.default_rng(seed)
    v = variety

    def u(r: Range) -> float:
        return float(rng.uniform(r[0], r[1]))

    def signed(r: Range) -> float:
        return float(rng.choice((-1.0, 1.0)) * rng.uniform(r[0], r[1]))

    body = dict(body_width=u(v.body_width), body_depth=u(v.body_depth),
                body_shift=(signed(v.body_shift), signed(v.body_shift)), fat=u(v.fat), visceral_fat=u(v.visceral_fat),
                arms=bool(rng.uniform() < v.arms_probability), chest_share=u(v.chest_share), lung_size=u(v.lung_size))
    if body["arms"]:
        body["body_width"] *= ARMS_FIELD_OF_VIEW
    organ_size = {organ: u(v.organ_size) for organ in ORGANS}
    organ_shifts = {organ: (signed(v.organ_shift), signed(v.organ_shift), signed(v.organ_shift)) for organ in ORGANS}
    spacing_xy, scan_range = u(v.spacing_xy), u(v.scan_range)
    if spacing is None:
        half_width = body["body_width"] * shape[2] * spacing_xy / 2.0
        spacing = (round(scan_range * half_width / shape[0], 3), round(spacing_xy, 3), round(spacing_xy, 3))
    phase = str(v.phases[int(rng.integers(len(v.phases)))])
    enhancement = u(v.enhancement)
    acquisition = dict(noise_sd=u(v.noise_sd), texture_sd=u(v.texture_sd), scanner_offset=u(v.scanner_offset))
    tissue_hu = dict(HU)
    for tissue, added in ENHANCEMENT[phase].items():
        tissue_hu[tissue] += enhancement * added
    tissue_hu["cancellous_bone"] = u(v.bone_density)
    details = {name: u(r) for name, r in DETAIL_RANGES.items()}
    return PhantomCase(details=details, seed=int(seed), shape=tuple(int(s) for s in shape),
                       spacing=tuple(float(s) for s in spacing),
                       organ_size=organ_size, organ_shifts=organ_shifts, phase=phase, enhancement=enhancement,
                       tissue_hu=tissue_hu, **body, **acquisition)
