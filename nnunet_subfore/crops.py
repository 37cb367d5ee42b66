"""The centre patch of a volume: the one crop the trainers' validation, the figures and the reports take."""

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
    patch_size = tuple(int(p) for p in patch_size)
    n = len(patch_size)
    if volume.ndim < n or any(p < 1 for p in patch_size):
        raise ValueError(f"patch_size must be {volume.ndim} or fewer positive sides for a volume of shape "
                         f"{volume.shape}, got {patch_size}.")
    lead, spatial = volume.shape[:-n], volume.shape[-n:]
    offset = tuple((int(side) - p) // 2 for side, p in zip(spatial, patch_size))
    patch = np.full(lead + patch_size, pad_value, dtype=np.float32)
    src = tuple(slice(max(o, 0), min(o + p, side)) for o, p, side in zip(offset, patch_size, spatial))
    dst = tuple(slice(s.start - o, s.stop - o) for s, o in zip(src, offset))
    patch[(Ellipsis,) + dst] = volume[(Ellipsis,) + src]
    return patch, offset
