"""draw_masking / masking_example: the masking figure and its numbers on crafted HU volumes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_subfore.errors import UserError
from nnunet_subfore.reporting.masking_figure import (
    default_patch_size,
    draw_masking,
    load_ct,
    masking_example,
    masking_statistics,
)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def half_air() -> np.ndarray:
    """64^3 (z, y, x): x < 32 air (-1000 HU), x >= 32 soft tissue (40 HU), a little noise."""
    vol = np.full((64, 64, 64), 40.0, dtype=np.float32)
    vol[:, :, :32] = -1000.0
    return vol + np.random.default_rng(0).normal(0.0, 10.0, vol.shape).astype(np.float32)


def test_statistics_foreground_masking_spares_air_random_does_not(half_air):
    ex = masking_example(half_air, seed=0)
    st = ex.statistics
    assert st.patch_size == (64, 64, 64) and st.offset == (0, 0, 0) and st.grid == (4, 4, 4)
    assert st.threshold_hu == pytest.approx(-132.5)
    assert (st.n_subvolumes, st.n_foreground, st.foreground_fraction) == (64, 32, 0.5)
    # the grid: air half = subvolume columns 0 and 1 along x
    assert not ex.foreground[..., :2].any() and ex.foreground[..., 2:].all()
    fm, rm = st.foreground_masking, st.random_masking
    assert not ex.foreground_mask[..., :2].any() and fm.n_masked_background == 0
    assert ex.foreground_mask.sum() == fm.n_masked == fm.n_masked_foreground > 0
    assert fm.fraction_of_all == pytest.approx(fm.n_masked / 64)
    assert fm.fraction_of_foreground == pytest.approx(fm.n_masked / 32)
    assert ex.random_mask[..., :2].any() and rm.n_masked_background == int(ex.random_mask[..., :2].sum()) > 0
    assert rm.n_masked == int(ex.random_mask.sum())
    # the foreground-masked input is untouched in the air half, the random-masked one is not
    np.testing.assert_array_equal(ex.foreground_masked[..., :32], ex.windowed[..., :32])
    assert not np.array_equal(ex.random_masked[..., :32], ex.windowed[..., :32])
    assert masking_statistics(half_air, seed=0) == st  # same draws


def test_draw_masking_writes_png_and_overwrites_only_with_force(half_air, tmp_path):
    out = tmp_path / "a" / "b" / "masking.png"
    assert draw_masking(image=half_air, output=out, patch_size=None, subvolume_size=16, window=(-175.0, 250.0),
                        threshold=0.1, ratio=0.6, seed=0) == out
    data = out.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000
    out.write_bytes(b"old")
    with pytest.raises(UserError, match="exists; pass --force"):
        draw_masking(half_air, out, seed=1, fill="zero")
    assert out.read_bytes() == b"old"
    draw_masking(half_air, out, seed=1, fill="zero", force=True)
    assert out.read_bytes()[:8] == PNG


def test_file_input_is_reoriented_to_lps(half_air, tmp_path):
    path = tmp_path / "ct.nii.gz"
    img = sitk.GetImageFromArray(half_air[:, :, ::-1].copy())  # stored x-flipped ...
    img.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # ... with a flipped x axis: same anatomy
    img.SetSpacing((0.8, 0.8, 2.5))
    sitk.WriteImage(img, str(path))
    volume, spacing = load_ct(path)
    np.testing.assert_array_equal(volume, half_air)
    assert spacing == pytest.approx((2.5, 0.8, 0.8))
    assert masking_statistics(path, seed=3) == masking_statistics(half_air, seed=3)
    from nnunet_subfore.cli import main

    assert main(["show-masking", str(path), "-o", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").read_bytes()[:8] == PNG


def test_default_patch_size():
    assert default_patch_size((40, 100, 10), 16) == (32, 96, 16)
    assert default_patch_size((200, 200, 200), 20) == (80, 80, 80)


def test_small_image_is_padded_with_air():
    vol = np.full((10, 40, 40), 50.0, dtype=np.float32)  # 10 slices: padded to one 16-voxel subvolume
    vol[0, 0, 0] = -1000.0  # some air (outside the crop), so that it reads as CT
    st = masking_statistics(vol)
    assert st.patch_size == (16, 32, 32) and st.offset == (-3, 4, 4)
    assert st.n_foreground == st.n_subvolumes == 4


def test_bad_arguments_name_the_fix(half_air, tmp_path):
    with pytest.raises(UserError, match=r"not divisible by the subvolume size 16 \(offending sides: \[50\]\).*\[64, 48, 48\]"):
        masking_statistics(half_air, patch_size=[64, 48, 50])
    with pytest.raises(UserError, match="ratio"):
        masking_statistics(half_air, ratio=1.5)
    with pytest.raises(UserError, match="does not exist"):
        masking_statistics(tmp_path / "nope.nii.gz")
    with pytest.raises(UserError, match="suffix"):
        draw_masking(half_air, tmp_path / "figure")


def test_non_hu_input_warns():
    with pytest.warns(UserWarning, match="Hounsfield"):
        masking_statistics(np.random.default_rng(0).random((32, 32, 32), dtype=np.float32))


@pytest.mark.filterwarnings("ignore:The image's lowest value")  # a body patch without air, on purpose
def test_the_otsu_criterion_is_drawn_and_counted(tmp_path):
    import torch

    from nnunet_subfore.cli import main
    from nnunet_subfore.masking import foreground_subvolumes

    hu = np.full((32, 32, 32), -100.0, dtype=np.float32)  # fat ...
    hu[:, 16:, :] = 40.0  # ... and soft tissue: the fixed lambda takes both, Otsu only soft tissue
    fixed = masking_statistics(hu)
    otsu = masking_statistics(hu, criterion="otsu")
    assert fixed.n_foreground == 8 and otsu.n_foreground == 4
    assert otsu.patch_threshold == pytest.approx((75 / 425 + 215 / 425) / 2)
    assert "otsu criterion" in otsu.describe() and "max(Otsu" in otsu.describe()
    expected = foreground_subvolumes(torch.from_numpy(hu)[None, None], criterion="otsu")
    assert otsu.n_foreground == int(expected.sum())
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(hu), str(path))
    assert main(["show-masking", str(path), "-o", str(tmp_path / "otsu.png"), "--criterion", "otsu"]) == 0
    assert (tmp_path / "otsu.png").stat().st_size > 10_000


def test_mri_is_drawn_with_the_nonzero_criterion(tmp_path):
    import warnings

    mri = np.zeros((32, 32, 64), dtype=np.float32)
    mri[:, :, :24] = np.random.default_rng(1).normal(300.0, 50.0, (32, 32, 24))  # brain on the left 24 columns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not HU" warning for MRI
        stats = masking_statistics(mri, criterion="nonzero")
    assert stats.n_foreground == 4 * 2 and "nonzero criterion" in stats.describe()  # x blocks 0 and 1 (8/16 inside)
    draw_masking(mri, tmp_path / "mri.png", criterion="nonzero")
    assert (tmp_path / "mri.png").stat().st_size > 10_000


def test_the_figure_keeps_its_title_inside(half_air, tmp_path):
    from subfore_test_helpers import ink_on_border

    path = draw_masking(half_air, tmp_path / "m.png", criterion="otsu")
    assert not ink_on_border(path)
