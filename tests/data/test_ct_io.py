"""Reading CT images: NIfTI, MHA and DICOM series back with their voxels and (z, y, x) spacing, reorientation
to LPS, and every failure as an UnreadableImageError that names the path."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from subfore_test_helpers import write_dicom_series

from nnunet_subfore.data.ct_io import UnreadableImageError, read_ct, read_image, sitk_message
from nnunet_subfore.errors import UserError

SHAPE = (5, 6, 7)  # (z, y, x)


def _volume(dtype=np.int16) -> np.ndarray:
    """Distinct values, so that any flip or transpose shows."""
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) - 1000).astype(dtype)


def _write(path, array, spacing=(0.7, 0.8, 2.5), direction=None, origin=(0.0, 0.0, 0.0), is_vector=False):
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("name, dtype", [("ct.nii.gz", np.int16), ("ct.mha", np.float32), ("ct.nii", np.int32)])
def test_files_read_back_with_voxels_and_zyx_spacing(tmp_path, name, dtype):
    path = _write(tmp_path / name, _volume(dtype), spacing=(0.7, 0.8, 2.5))  # SimpleITK's order: (x, y, z)
    volume, spacing = read_ct(path)
    assert volume.dtype == np.float32 and volume.shape == SHAPE
    np.testing.assert_array_equal(volume, _volume(dtype).astype(np.float32))
    assert spacing == pytest.approx((2.5, 0.8, 0.7))
    image = read_image(str(path))  # a str works as well as a Path
    assert image.GetSize() == (7, 6, 5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), _volume(dtype))


def test_read_ct_flips_to_lps(tmp_path):
    lps = _volume()
    # the same anatomy stored with x and y running the other way (as RAS-stored NIfTI files are)
    path = _write(tmp_path / "ras.nii.gz", lps[:, ::-1, ::-1].copy(), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    volume, spacing = read_ct(path)
    np.testing.assert_array_equal(volume, lps)
    assert spacing == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), lps[:, ::-1, ::-1])  # read_image keeps it


def test_read_ct_permutes_axes_and_spacing_to_lps(tmp_path):
    # voxel axis 0 runs along physical y (spacing 0.5), voxel axis 1 along physical x (spacing 0.9)
    stored = _volume().transpose(0, 2, 1).copy()  # numpy (z, axis 1, axis 0) = (z, x, y)
    path = _write(tmp_path / "swapped.mha", stored, spacing=(0.5, 0.9, 2.0), direction=(0, 1, 0, 1, 0, 0, 0, 0, 1))
    volume, spacing = read_ct(path)
    np.testing.assert_array_equal(volume, _volume())  # numpy (z, y, x)
    assert spacing == pytest.approx((2.0, 0.5, 0.9))


def test_dicom_series_folder_and_files(tmp_path):
    image = sitk.GetImageFromArray(_volume())
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-10.0, 20.0, 30.0))
    folder = tmp_path / "series"
    write_dicom_series(image, folder, "1.2.826.0.1.3680043.2.1125.7")

    volume, spacing = read_ct(folder)
    np.testing.assert_array_equal(volume, _volume().astype(np.float32))
    assert spacing == pytest.approx((2.5, 0.8, 0.7), abs=1e-4)
    files = [str(folder / f"IM{k:04d}") for k in (0, 1, 2)]
    first_three = read_image(folder, dicom_files=files)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(first_three), _volume()[:3])

    write_dicom_series(image, tmp_path / "two" / "a", "1.2.826.0.1.3680043.2.1125.8")
    write_dicom_series(image, tmp_path / "two" / "b", "1.2.826.0.1.3680043.2.1125.9")
    for path in sorted((tmp_path / "two" / "b").iterdir()):
        path.rename(tmp_path / "two" / "a" / f"b_{path.name}")
    with pytest.raises(UnreadableImageError, match="holds 2 DICOM series") as error:
        read_image(tmp_path / "two" / "a")
    assert str(tmp_path / "two" / "a") in str(error.value)


def test_missing_path(tmp_path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(UnreadableImageError) as error:
        read_ct(path)
    assert str(error.value) == f"{path} does not exist."
    assert isinstance(error.value, UserError)  # the CLI prints it as one message


def test_folder_without_a_dicom_series(tmp_path):
    (tmp_path / "notes.txt").write_text("no DICOM here")
    with pytest.raises(UnreadableImageError) as error:
        read_image(tmp_path)
    assert str(error.value).startswith(f"{tmp_path} holds 0 DICOM series")


def test_4d_and_vector_images_are_not_ct(tmp_path):
    four = _write(tmp_path / "4d.nii.gz", np.zeros((2,) + SHAPE, np.float32), spacing=(1.0, 1.0, 1.0, 1.0),
                  origin=(0.0, 0.0, 0.0, 0.0))
    with pytest.raises(UnreadableImageError) as error:
        read_ct(four)
    assert str(error.value).startswith(f"{four} is a 4D image with 1 component(s)")
    assert read_image(four).GetDimension() == 4  # read_image itself reads it

    rg = _write(tmp_path / "rg.mha", np.zeros(SHAPE + (2,), np.float32), is_vector=True)
    with pytest.raises(UnreadableImageError) as error:
        read_ct(rg)
    assert str(error.value).startswith(f"{rg} is a 3D image with 2 component(s)")


@pytest.mark.parametrize("name", ["corrupt.nii.gz", "corrupt.nii", "corrupt.mha"])
def test_corrupt_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x1f\x8b not an image " * 20)
    with pytest.raises(UnreadableImageError) as error:
        read_ct(path)
    assert str(path) in str(error.value)


def test_simpleitk_failures_keep_its_message_without_the_cpp_location(tmp_path):
    path = tmp_path / "corrupt.mha"
    path.write_bytes(b"not an image " * 20)
    with pytest.raises(UnreadableImageError) as error:
        read_image(path)
    message = str(error.value)
    assert message.startswith(f"SimpleITK cannot read {path}: Unable to determine ImageIO reader")
    assert "sitk::ERROR" not in message and ".cxx" not in message
    assert isinstance(error.value.__cause__, RuntimeError)


@pytest.mark.parametrize("name", ["ct.mha", "ct.nii", "ct.nii.gz"])
def test_truncated_files(tmp_path, name):
    rng = np.random.default_rng(0)  # noise: a .nii.gz that compresses little, so that half of it is half the data
    path = _write(tmp_path / name, rng.integers(-1000, 1000, size=(20, 32, 32)).astype(np.int16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives, half the voxels are gone
    with pytest.raises(UnreadableImageError) as error:
        read_ct(path)
    assert str(path) in str(error.value)


def test_sitk_message():
    error = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /src/sitkImageReaderBase.cxx:99:\n"
                         "sitk::ERROR: Unable to determine ImageIO reader for \"/x.nii.gz\"\n")
    assert sitk_message(error) == 'Unable to determine ImageIO reader for "/x.nii.gz"'
    assert sitk_message(RuntimeError("ITK ERROR: bad header")) == "bad header"
    assert sitk_message(OSError("disk full")) == "disk full"
    assert sitk_message(RuntimeError("")) == "RuntimeError"
