"""Per-case checks shared by all labelled converters: files readable, image channels, image/label
geometry (within nnU-Net's tolerances), label values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_subfore.data.converters.layout import Case
from nnunet_subfore.data.converters.specs import DatasetSpec
from nnunet_subfore.data.ct_io import (
    TruncatedImageError,
    UnreadableImageError,
    check_complete,
    read_image,
    sitk_message,
)


SPACING_RTOL = 1e-5
"""Relative spacing tolerance: nnU-Net's own integrity check (``np.allclose``) uses this, so a case
that passes here passes there."""
SPACING_ATOL = 1e-8
ORIGIN_ATOL_MM = 1e-2
"""Origin tolerance in mm (nnU-Net only warns on origin mismatches; we refuse real shifts)."""
DIRECTION_ATOL = 1e-4
"""Tolerance on each entry of the 3x3 direction cosine matrix."""


@dataclass(frozen=True)
class Geometry:
    """Spatial header of an image, reduced to its first three axes.

    ``channels`` is the size of a 4th axis (MSD stores its MRI channels that way), else 1;
    ``components`` the values per voxel (1 for scalar images).
    """

    size: Tuple[int, ...]
    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]
    dimension: int = 3
    channels: int = 1
    components: int = 1

    def describe(self) -> str:
        """E.g. ``3D`` or ``4D with 4 channels``, for messages."""
        text = f"{self.dimension}D" + (f" with {self.channels} channels" if self.dimension == 4 else "")
        return text + (f", {self.components} values per voxel" if self.components != 1 else "")


def _geometry(dimension: int, size, spacing, origin, direction, components: int = 1) -> Geometry:
    matrix = np.asarray(direction, dtype=float).reshape(dimension, dimension)[:3, :3]
    channels = int(size[3]) if dimension == 4 else 1
    return Geometry(tuple(int(s) for s in size[:3]), tuple(spacing[:3]), tuple(origin[:3]),
                    tuple(matrix.ravel()), dimension, channels, int(components))


def channel_problem(geometry: Geometry, channels: int) -> Optional[str]:
    """Why an image does not have the expected layout, or None.

    Args:
        geometry: the image's geometry.
        channels: expected channels: 1 means a 3D scalar image, more a 4D image with that many
            volumes along the 4th axis (the MSD layout nnU-Net's converter splits).
    """
    if channels == 1:
        ok = geometry.dimension == 3 and geometry.components == 1
        expected = "3D single-channel images"
    else:
        ok = geometry.dimension == 4 and geometry.channels == channels and geometry.components == 1
        expected = f"4D images with {channels} channels"
    return None if ok else f"is {geometry.describe()}; expected {expected}"


def read_geometry(path: Path) -> Geometry:
    """The geometry of an image file, from its header only.

    Args:
        path: any file SimpleITK reads (NIfTI, MHA/MHD, NRRD).

    Raises:
        RuntimeError: SimpleITK cannot read the header.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return _geometry(reader.GetDimension(), reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(),
                     reader.GetDirection(), reader.GetNumberOfComponents())


def image_geometry(image: sitk.Image) -> Geometry:
    """The geometry of a loaded SimpleITK image."""
    return _geometry(image.GetDimension(), image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                     image.GetDirection(), image.GetNumberOfComponentsPerPixel())


def geometry_mismatch(image: Geometry, label: Geometry) -> Optional[str]:
    """Why ``label`` does not lie on ``image``'s voxel grid, or None if it does (within the tolerances).

    Args:
        image: geometry of the image (first three axes).
        label: geometry of the label.
    """
    if image.size != label.size:
        return f"image size {image.size} != label size {label.size}"
    if not np.allclose(label.spacing, image.spacing, rtol=SPACING_RTOL, atol=SPACING_ATOL):
        return f"image spacing {_fmt(image.spacing)} != label spacing {_fmt(label.spacing)}"
    if not np.allclose(label.origin, image.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        return f"image origin {_fmt(image.origin)} != label origin {_fmt(label.origin)} (tolerance {ORIGIN_ATOL_MM} mm)"
    if not np.allclose(label.direction, image.direction, rtol=0, atol=DIRECTION_ATOL):
        return f"image direction {_fmt(image.direction)} != label direction {_fmt(label.direction)}"
    return None


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def label_values(array: np.ndarray, slab: int = 16) -> Tuple[np.ndarray, Optional[str]]:
    """The distinct values of a label array, or why they are not usable labels.

    Works through ``slab`` slices of axis 0 at a time, so that a 512x512x300 label needs no
    full-size integer copy.

    Args:
        array: label voxels.
        slab: slices per step.

    Returns:
        ``(values, problem)``; ``problem`` names non-finite or non-integer values, else None.
    """
    if array.dtype.kind not in "iubf":
        return np.array([], dtype=np.int64), f"label has unsupported voxel type {array.dtype}"
    found = set()
    for start in range(0, max(array.shape[0], 1), slab):
        chunk = array[start:start + slab]
        if chunk.size == 0:
            continue
        if chunk.dtype.kind == "f":
            if not np.all(np.isfinite(chunk)):
                return np.array([], dtype=np.int64), "label contains NaN/inf values"
            if not np.array_equal(np.rint(chunk), chunk):
                return np.array([], dtype=np.int64), "label contains non-integer values"
        chunk = chunk.astype(np.int64)
        low, high = int(chunk.min()), int(chunk.max())
        if low >= 0 and high < 1 << 16:
            found.update(np.flatnonzero(np.bincount(chunk.ravel())).tolist())
        else:
            found.update(np.unique(chunk).tolist())
    return np.array(sorted(found), dtype=np.int64), None


@dataclass
class Inspected:
    """A case that passed the checks: the image geometry and the loaded label."""

    geometry: Geometry
    label: np.ndarray


def inspect_case(case: Case, spec: DatasetSpec) -> Tuple[Optional[Inspected], Optional[str]]:
    """Check a case: files readable, image channels, image/label geometry, label values.

    Args:
        case: the case.
        spec: its dataset (expected channels and label values).

    Returns:
        ``(inspected, None)`` if the case passes, else ``(None, reason)``; the reason names the
        file and what to do.
    """
    try:
        for image in case.images:
            check_complete(image)
    except TruncatedImageError as error:
        return None, str(error)
    try:
        geometry = read_geometry(case.images[0])
    except RuntimeError as error:
        return None, f"cannot read {case.images[0]} ({sitk_message(error)}); re-download it."
    try:
        label_image = read_image(case.label)
    except TruncatedImageError as error:
        return None, str(error)
    except UnreadableImageError as error:
        return None, f"{error}; re-download it."
    problem = channel_problem(geometry, len(spec.channels))
    if problem:
        return None, f"{case.images[0]} {problem} ({spec.title}); re-download it."
    problem = geometry_mismatch(geometry, image_geometry(label_image))
    if problem:
        return None, f"geometry mismatch: {problem} ({case.images[0]} vs {case.label}); fix the header or leave the case out."
    array = sitk.GetArrayFromImage(label_image)
    values, problem = label_values(array)
    if problem:
        return None, f"{problem} in {case.label}; fix the file or leave the case out."
    unexpected = sorted(int(v) for v in values if int(v) not in spec.source_values)
    if unexpected:
        return None, (f"unexpected label value(s) {unexpected} in {case.label}; {spec.title} labels are "
                      f"{sorted(spec.source_values)}. Fix the file or leave the case out.")
    return Inspected(geometry, array), None
