"""Body masks on crafted volumes: lungs and trachea in, outside blobs out, threshold respected."""

import numpy as np
import pytest
from scipy import ndimage

from nnunet_subfore.data.body_mask import body_mask
from nnunet_subfore.data.phantoms import make_phantom

SHAPE = (24, 40, 40)


def _torso(shell_hu: float = 40.0) -> dict:
    """Air, a body cylinder (with a 2-voxel outer shell of ``shell_hu``), two lungs in the upper half
    joined to a trachea that leaves through the last slice, and a small blob in the air."""
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r = np.sqrt(((y - 20) / 15.0) ** 2 + ((x - 20) / 17.0) ** 2)
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    body = np.broadcast_to(r < 1.0, SHAPE)
    hu[body] = shell_hu
    hu[np.broadcast_to(r < 0.85, SHAPE)] = 40.0
    lungs = np.zeros(SHAPE, dtype=bool)
    for cx in (12, 28):
        lungs |= ((z - 16) / 6.0) ** 2 + ((y - 20) / 7.0) ** 2 + ((x - cx) / 4.5) ** 2 < 1.0
    hu[lungs] = -850.0
    trachea = np.broadcast_to(((y - 14) ** 2 + (x - 20) ** 2 <= 2), SHAPE) & (z >= 14)
    bronchus = (z >= 14) & (z <= 16) & (np.abs(y - 17) <= 3) & (np.abs(x - 20) <= 9)
    hu[trachea | bronchus] = -1000.0
    blob = np.zeros(SHAPE, dtype=bool)
    blob[4:7, 1:4, 1:4] = True
    hu[blob] = 60.0
    return {"hu": hu, "body": body, "lungs": lungs, "trachea": trachea, "blob": blob}


def test_lungs_and_trachea_touching_the_end_are_inside():
    t = _torso()
    assert (t["hu"][-1][t["trachea"][-1]] == -1000).all(), "the crafted trachea reaches the last slice"
    mask = body_mask(t["hu"])
    assert mask.dtype == bool and mask.shape == SHAPE
    assert mask[t["lungs"]].all()
    assert mask[t["trachea"]].all()
    assert np.array_equal(mask, t["body"])
    # the reason for the slice-by-slice fill: a 3D fill leaves the airways and lungs out
    assert not ndimage.binary_fill_holes(t["hu"] > -500)[t["trachea"]].any()


def test_separate_blob_outside_the_body_is_excluded():
    t = _torso()
    mask = body_mask(t["hu"])
    assert not mask[t["blob"]].any()
    assert not mask[~t["body"]].any()


def test_threshold_is_respected():
    t = _torso(shell_hu=-300.0)
    shell = t["body"] & (t["hu"] == -300.0)
    assert shell.any()
    assert body_mask(t["hu"], threshold=-500.0)[shell].all()
    strict = body_mask(t["hu"], threshold=-200.0)
    assert not strict[shell].any()
    assert strict[t["lungs"]].all(), "the inner body is still filled"


def test_nothing_above_threshold_gives_an_empty_mask():
    mask = body_mask(np.full((4, 8, 8), -1000, dtype=np.int16))
    assert mask.shape == (4, 8, 8) and mask.dtype == bool and not mask.any()


def test_non_3d_input_is_refused():
    with pytest.raises(ValueError, match="3D"):
        body_mask(np.zeros((8, 8)))


def test_phantom_body_reaches_air_percentiles():
    image, label, _ = make_phantom(2, (32, 48, 48))
    mask = body_mask(image)
    assert mask[label > 0].all()
    assert np.percentile(image[mask], 0.5) < -500, "lungs inside the body put the low percentile near air"
