"""Patches of a volume: the centre patch that the trainers' validation, the figures and the reports take,
and the patch around a chosen point (``show-reconstruction --center``)."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def center_crop(volume: np.ndarray, patch_size: Sequence[int], pad_value: float = 0.0) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """The ``patch_size`` box around the centre of the last ``len(patch_size)`` axes, padded where it sticks out.

    Args:
        volume: array (..., D, H, W); leading axes (channels) are kept whole.
        patch_size: (D, H, W) of the patch.
        pad_value: value of the voxels outside ``volume`` (nnU-Net pads normalized data with 0; raw CT
            is padded with air, :data:`nnunet_subfore.recipe.AIR_HU`).

    Returns:
        (patch as float32, offset): ``offset`` is the index in ``volume`` of the patch's first voxel
        per spatial axis (negative where the patch sticks out before the start).
    """
    patch_size = _check(volume, patch_size)
    spatial = volume.shape[-len(patch_size):]
    offset = tuple((int(side) - p) // 2 for side, p in zip(spatial, patch_size))
    return crop_at(volume, patch_size, offset, pad_value), offset


def crop_around(volume: np.ndarray, patch_size: Sequence[int], center: Sequence[int],
                pad_value: float = 0.0) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """The ``patch_size`` box whose voxel ``patch_size // 2`` is ``center``, padded where it sticks out.

    Args:
        volume: array (..., D, H, W); leading axes (channels) are kept whole.
        patch_size: (D, H, W) of the patch.
        center: index (z, y, x) in ``volume`` of the patch's centre voxel; it may lie anywhere, the
            patch is padded with ``pad_value`` where it leaves the volume.
        pad_value: value of the voxels outside ``volume``.

    Returns:
        (patch as float32, offset), as :func:`center_crop`.
    """
    patch_size = _check(volume, patch_size)
    if len(center) != len(patch_size):
        raise ValueError(f"center must have {len(patch_size)} indices like patch_size {patch_size}, got {tuple(center)}.")
    offset = tuple(int(c) - p // 2 for c, p in zip(center, patch_size))
    return crop_at(volume, patch_size, offset, pad_value), offset


def crop_at(volume: np.ndarray, patch_size: Sequence[int], offset: Sequence[int], pad_value: float = 0.0) -> np.ndarray:
    """The ``patch_size`` box whose first voxel is ``offset`` (per spatial axis, may be negative or beyond the end),
    as float32, padded with ``pad_value`` where it leaves ``volume``."""
    patch_size = _check(volume, patch_size)
    n = len(patch_size)
    lead, spatial = volume.shape[:-n], volume.shape[-n:]
    patch = np.full(lead + patch_size, pad_value, dtype=np.float32)
    src = tuple(slice(min(max(o, 0), side), max(min(o + p, side), 0)) for o, p, side in zip(offset, patch_size, spatial))
    if all(s.stop > s.start for s in src):
        dst = tuple(slice(s.start - o, s.stop - o) for s, o in zip(src, offset))
        patch[(Ellipsis,) + dst] = volume[(Ellipsis,) + src]
    return patch


def _check(volume: np.ndarray, patch_size: Sequence[int]) -> Tuple[int, ...]:
    patch_size = tuple(int(p) for p in patch_size)
    if volume.ndim < len(patch_size) or any(p < 1 for p in patch_size):
        raise ValueError(f"patch_size must be {volume.ndim} or fewer positive sides for a volume of shape "
                         f"{volume.shape}, got {patch_size}.")
    return patch_size
