"""Near-duplicate detection: a crop, a resample, a rescaled or re-quantized or reoriented copy of a scan.

Public CT collections republish the same scans cropped to a region, resampled to another spacing or
re-quantized; the exact fingerprints (:mod:`nnunet_subfore.data.fingerprints`) miss all of these. Here
every image gets a *descriptor*, computed once:

- the image reoriented to LPS (:func:`SimpleITK.DICOMOrient`: a flipped or permuted storage order gives
  the same voxel order), smoothed with a Gaussian of half the grid spacing (so that two resamplings of
  one scan agree) and resampled linearly onto the points of one physical lattice of
  :data:`REFERENCE_SPACING` (4 mm along z, 8 mm in-plane) that lie inside the image: a crop that keeps
  its geometry samples exactly the points its source sampled;
- high-passed (:data:`HIGH_PASS_SIGMA`), which leaves the anatomy's detail and drops what every scan of
  a body region shares (the body outline, the air and lung contrast);
- stored as float16 with the original spacing, size and direction (``descriptor_to_arrays``).

Two descriptors are compared by normalized cross-correlation (NCC, invariant to any linear intensity
change: a rescale, another slope and intercept) of the smaller one, slid over every position inside the
larger one (one contains the other along every axis, up to :data:`TOLERANCE_VOXELS`: a crop keeps a
sub-block of its source). The score is the best NCC; a pair scores at least :data:`NEAR_THRESHOLD` to
count. The search covers every integer shift of the grid; a copy whose origin was reset (off the lattice) is
sampled at other points than its source and scores lower (measured in the benchmark).
What the match is (:func:`match_kind`) follows from the metadata: another extent is a crop, another
spacing a resample, another direction a reorientation, else an intensity change.

Not found: a crop that is smaller than :data:`MIN_EXTENT_MM` along some axis, a copy that is both
cropped along one axis and larger along another than its source, rotations other than the axis
permutations and flips that LPS reorientation undoes, non-linear intensity changes that reorder the
intensities. Sensitivity and false positives are measured in ``benchmarks/near_duplicates.py``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: Scheme of the descriptors (a stored descriptor of another scheme is recomputed).
DESCRIPTOR_SCHEME = "subfore-near-v2: LPS, gaussian to t/2 in quadrature, linear on the 4/8/8 mm lattice, minus gaussian(1 voxel), float16"
#: The descriptor grid's spacing in mm, (z, y, x) numpy order.
REFERENCE_SPACING = (4.0, 8.0, 8.0)
#: How many grid voxels a copy may exceed its source along an axis (resampling rounds the extent).
TOLERANCE_VOXELS = 1
#: The smallest extent along any axis that is compared (mm): three grid slices along z, eight grid voxels in-plane
#: (smaller windows hold too few voxels for a meaningful NCC: 4 x 4 in-plane scored 0.91 between unrelated phantoms).
MIN_EXTENT_MM = (12.0, 128.0, 128.0)
#: The high-pass of the grid: minus its Gaussian blur of this sigma (grid voxels). It removes the body outline and
#: the air/lung contrast that every scan of a body region shares (unrelated phantoms scored up to 0.96 without it,
#: 0.64 with it; their copies 0.99 and above either way: benchmarks/near_duplicates.py).
HIGH_PASS_SIGMA = 1.0
#: Grid voxels left out along the axes where a crop was cut (two high-pass sigmas: where the crop's filter saw its edge).
CUT_BORDER_VOXELS = 2
#: The NCC a pair needs to count as a near-duplicate (chosen from the benchmark's pairs: docs/benchmarks.md).
NEAR_THRESHOLD = 0.95


@dataclass(frozen=True)
class Descriptor:
    """An image on the reference grid, with what the match kind needs.

    Attributes:
        grid: (z, y, x) float16 voxels on :data:`REFERENCE_SPACING`.
        spacing: the original image's (z, y, x) spacing in mm, after LPS reorientation.
        size: its (z, y, x) voxel counts, after reorientation.
        direction: its direction cosines before reorientation (row-major 3x3).
    """

    grid: np.ndarray
    spacing: Tuple[float, float, float]
    size: Tuple[int, int, int]
    direction: Tuple[float, ...]

    @property
    def extent_mm(self) -> Tuple[float, float, float]:
        return tuple(float(n * s) for n, s in zip(self.size, self.spacing))


def image_descriptor(image: sitk.Image) -> Descriptor:
    """The descriptor of one 3D image (see the module's docstring)."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"a descriptor needs a 3D single-channel image, got dimension {image.GetDimension()} "
                         f"with {image.GetNumberOfComponentsPerPixel()} components")
    direction = tuple(round(float(d), 6) for d in image.GetDirection())
    oriented = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "LPS")
    target_xyz = tuple(reversed(REFERENCE_SPACING))
    spacing_xyz, size_xyz = oriented.GetSpacing(), oriented.GetSize()
    # anti-aliasing to one effective blur whatever the spacing: a voxel of spacing s counts as a blur of s / 2, and
    # the Gaussian adds what is missing to the grid's t / 2 in quadrature (so a scan and its 5 mm resample end up
    # equally blurred); scipy's filter, as ITK's recursive one refuses axes of fewer than 4 voxels (2 slices)
    sigma_voxels = [np.sqrt(max(0.0, (t / 2.0) ** 2 - (s / 2.0) ** 2)) / s for t, s in zip(target_xyz, spacing_xyz)]
    smoothed = sitk.GetImageFromArray(ndimage.gaussian_filter(sitk.GetArrayFromImage(oriented),
                                                              sigma_voxels[::-1], mode="nearest"))
    smoothed.CopyInformation(oriented)
    # the grid: the points of one physical lattice (multiples of the reference spacing along the image's axes) that
    # lie inside the image, so that a crop that keeps its geometry samples exactly the points its source sampled
    axes = np.array(oriented.GetDirection()).reshape(3, 3)
    first = axes.T @ np.array(oriented.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5]))
    last = axes.T @ np.array(oriented.TransformContinuousIndexToPhysicalPoint([n - 0.5 for n in size_xyz]))
    start = np.ceil(np.minimum(first, last) / target_xyz) * target_xyz
    out_size = [max(1, int(n)) for n in np.floor((np.maximum(first, last) - start) / target_xyz) + 1]
    origin = axes @ start
    resampled = sitk.Resample(smoothed, out_size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), target_xyz,
                              oriented.GetDirection(), float(np.min(sitk.GetArrayViewFromImage(oriented))),
                              sitk.sitkFloat32)
    grid = sitk.GetArrayFromImage(resampled)
    detail = grid - ndimage.gaussian_filter(grid, HIGH_PASS_SIGMA, mode="nearest")
    return Descriptor(grid=detail.astype(np.float16),
                      spacing=tuple(float(s) for s in reversed(spacing_xyz)),
                      size=tuple(int(n) for n in reversed(size_xyz)), direction=direction)


def _window_sums(volume: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """Sum of ``volume`` over every ``window``-sized block that fits inside it (3D integral image)."""
    c = np.pad(volume, [(1, 0)] * 3).cumsum(0).cumsum(1).cumsum(2)
    a, b, d = window
    return (c[a:, b:, d:] - c[:-a, b:, d:] - c[a:, :-b, d:] - c[a:, b:, :-d]
            + c[:-a, :-b, d:] + c[:-a, b:, :-d] + c[a:, :-b, :-d] - c[:-a, :-b, :-d])


def best_ncc(small: np.ndarray, large: np.ndarray) -> float:
    """The best NCC of ``small`` at any position fully inside ``large`` (every axis of ``small`` <= ``large``).

    0.0 when ``small`` or every window of ``large`` is constant (nothing to correlate).
    """
    from scipy.signal import fftconvolve

    small, large = small.astype(np.float64), large.astype(np.float64)
    if any(s > n for s, n in zip(small.shape, large.shape)):
        raise ValueError(f"small {small.shape} does not fit into large {large.shape}")
    template = small - small.mean()
    norm = np.sqrt(np.sum(template ** 2))
    if norm == 0:
        return 0.0
    n = small.size
    shift = large - large.mean()  # keeps the window sums small (float precision)
    numerator = fftconvolve(shift, template[::-1, ::-1, ::-1], mode="valid")
    s1, s2 = _window_sums(shift, small.shape), _window_sums(shift ** 2, small.shape)
    variance = np.maximum(s2 - s1 ** 2 / n, 0.0)
    valid = variance > 1e-6 * max(float(variance.max()), 1e-12)
    if not valid.any():
        return 0.0
    ncc = np.where(valid, numerator / (norm * np.sqrt(np.where(valid, variance, 1.0))), -1.0)
    return float(np.clip(ncc.max(), -1.0, 1.0))


def _fits(small: np.ndarray, large_shape: Sequence[int]) -> List[np.ndarray]:
    """Every cut of ``small`` to at most ``large_shape`` where it exceeds it by at most the tolerance (which side the
    extra grid voxel lies on depends on the copy); none if it exceeds by more."""
    if any(s > n + TOLERANCE_VOXELS for s, n in zip(small.shape, large_shape)):
        return []
    cuts = [max(0, s - n) for s, n in zip(small.shape, large_shape)]
    return [small[tuple(slice(o, s - (c - o)) for o, c, s in zip(offsets, cuts, small.shape))]
            for offsets in itertools.product(*(range(c + 1) for c in cuts))]


def searchable(descriptor: Descriptor) -> bool:
    """Whether the image is at least :data:`MIN_EXTENT_MM` along every axis (smaller ones are never compared)."""
    return all(n >= m for n, m in zip(descriptor.grid.shape, _min_voxels()))


def unsearchable_cases(cases: Mapping[str, Sequence[Optional[Descriptor]]]) -> List[str]:
    """The cases (``{case: [descriptors]}``, None for a file without one) of which no image is :func:`searchable`:
    these are checked for exact copies only."""
    return [case for case, found in cases.items() if not any(d is not None and searchable(d) for d in found)]


def near_score(a: Descriptor, b: Descriptor) -> Optional[float]:
    """The NCC of the best placement of one descriptor inside the other, or None when neither contains the other
    (up to the tolerance) or one is smaller than :data:`MIN_EXTENT_MM`."""
    if any(min(x, y) < m for x, y, m in zip(a.grid.shape, b.grid.shape, _min_voxels())):
        return None
    for small, large in ((a.grid, b.grid), (b.grid, a.grid)):
        fitted = _fits(_without_cut_borders(small, large.shape), large.shape)
        if fitted:
            return max(best_ncc(f, large) for f in fitted)
    return None


def _without_cut_borders(small: np.ndarray, large_shape: Sequence[int]) -> np.ndarray:
    """``small`` less :data:`CUT_BORDER_VOXELS` on both sides of every axis along which it is shorter than
    ``large_shape`` (beyond the tolerance): where a crop was cut, its high-pass saw the cut edge and the source's
    saw the anatomy beyond it (in-plane crops scored 0.91-0.94 with that border, 1.00 without)."""
    b = CUT_BORDER_VOXELS
    # kept only where at least half the minimum extent remains (a crop of a few slices keeps its edges)
    cut = [s + TOLERANCE_VOXELS < n and 2 * (s - 2 * b) >= m for s, n, m in zip(small.shape, large_shape, _min_voxels())]
    return small[tuple(slice(b, s - b) if c else slice(None) for c, s in zip(cut, small.shape))]


def _min_voxels() -> List[int]:
    return [int(np.ceil(m / r)) for m, r in zip(MIN_EXTENT_MM, REFERENCE_SPACING)]


def match_kind(checked: Descriptor, reference: Descriptor) -> str:
    """What a near-duplicate is, from the metadata: ``crop`` (one is a sub-block of the other), ``resample``
    (another spacing), ``reorientation`` (another direction), else ``intensity`` (rescaled or re-quantized)."""
    tolerance = [t * r for t, r in zip([TOLERANCE_VOXELS] * 3, REFERENCE_SPACING)]
    if any(abs(x - y) > t for x, y, t in zip(checked.extent_mm, reference.extent_mm, tolerance)):
        return "crop"
    if not np.allclose(checked.spacing, reference.spacing, rtol=0.01):
        return "resample"
    if checked.direction != reference.direction:
        return "reorientation"
    return "intensity"


def descriptor_to_arrays(descriptor: Descriptor) -> dict:
    """The descriptor as numpy arrays (for ``np.savez``)."""
    return {"grid": descriptor.grid, "spacing": np.asarray(descriptor.spacing, np.float64),
            "size": np.asarray(descriptor.size, np.int64), "direction": np.asarray(descriptor.direction, np.float64)}


def descriptor_from_arrays(arrays) -> Descriptor:
    """Inverse of :func:`descriptor_to_arrays`."""
    return Descriptor(grid=np.asarray(arrays["grid"], np.float16),
                      spacing=tuple(float(s) for s in arrays["spacing"]),
                      size=tuple(int(n) for n in arrays["size"]),
                      direction=tuple(round(float(d), 6) for d in arrays["direction"]))
