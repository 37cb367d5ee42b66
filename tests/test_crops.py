"""center_crop: the centre patch, padded where it sticks out, channels kept."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_subfore.crops import center_crop


def test_crops_one_axis_and_pads_another_with_the_pad_value():
    vol = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    patch, offset = center_crop(vol, (8, 4, 8), pad_value=-1000.0)
    assert offset == (-2, 1, 0)
    assert (patch[:2] == -1000).all() and (patch[6:] == -1000).all()
    np.testing.assert_array_equal(patch[2:6], vol[:, 1:5, :])


def test_channel_axes_are_kept_whole_and_padding_defaults_to_zero():
    vol = np.ones((2, 5, 16, 16), dtype=np.float32)
    vol[1] *= 2
    patch, offset = center_crop(vol, (8, 8, 8))
    assert patch.shape == (2, 8, 8, 8) and offset == (-2, 4, 4)  # 5 slices: floor((5 - 8) / 2) = -2
    assert (patch[:, :2] == 0).all() and (patch[:, 7:] == 0).all()
    assert (patch[0, 2:7] == 1).all() and (patch[1, 2:7] == 2).all()


def test_odd_sizes_take_the_lower_centre():
    vol = np.arange(7, dtype=np.float32).reshape(1, 1, 7)
    patch, offset = center_crop(vol, (1, 1, 4))
    assert offset == (0, 0, 1)
    np.testing.assert_array_equal(patch[0, 0], [1, 2, 3, 4])


def test_bad_patch_is_refused():
    with pytest.raises(ValueError, match="patch_size"):
        center_crop(np.zeros((4, 4)), (2, 2, 2))
