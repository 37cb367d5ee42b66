"""Per-case checks of the labelled converters: label values, channels, image/label geometry, inspect_case."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from subfore_test_helpers import FAKE_SHAPE, FAKE_SPACING, fake_ct, fake_label, write_image

from nnunet_subfore.data.converters.checks import (
    Geometry,
    channel_problem,
    geometry_mismatch,
    image_geometry,
    inspect_case,
    label_values,
    read_geometry,
)
from nnunet_subfore.data.converters.layout import Case
from nnunet_subfore.data.converters.specs import DATASETS

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
BASE = Geometry((8, 8, 8), (0.8, 0.8, 2.5), (-10.0, 20.0, 5.0), IDENTITY)


def test_label_values():
    values, problem = label_values(np.array([[[0, 500]], [[850, 205]]], dtype=np.float32), slab=1)
    assert problem is None and values.tolist() == [0, 205, 500, 850]
    assert label_values(np.array([[[0.5]]], dtype=np.float32))[1] == "label contains non-integer values"
    assert label_values(np.array([[[np.nan]]], dtype=np.float32))[1] == "label contains NaN/inf values"
    assert label_values(np.array([[[np.inf]]], dtype=np.float64))[1] == "label contains NaN/inf values"
    assert label_values(np.array([[[-1, 70000]]], dtype=np.int32))[0].tolist() == [-1, 70000]
    assert label_values(np.array([[[True, False]]]))[0].tolist() == [0, 1]
    assert "unsupported voxel type complex64" in label_values(np.zeros((1, 1, 1), np.complex64))[1]


def test_label_values_across_slabs():
    array = np.zeros((33, 2, 2), dtype=np.uint8)
    array[5, 0, 0], array[20, 1, 1], array[32, 0, 1] = 3, 7, 9  # one value in each slab of 16 slices
    assert label_values(array, slab=16)[0].tolist() == [0, 3, 7, 9]
    array = np.zeros((33, 2, 2), dtype=np.float32)
    array[32, 0, 0] = 1.5  # the last, short slab
    assert label_values(array, slab=16)[1] == "label contains non-integer values"


def test_geometry_within_nnunet_tolerances():
    assert geometry_mismatch(BASE, BASE) is None
    assert geometry_mismatch(BASE, replace(BASE, spacing=(0.8, 0.8, 2.5 * (1 + 5e-6)))) is None  # rtol 1e-5
    assert geometry_mismatch(BASE, replace(BASE, origin=(-10.005, 20.0, 5.0))) is None  # 0.005 mm
    assert geometry_mismatch(BASE, replace(BASE, direction=(1.0, 5e-5) + IDENTITY[2:])) is None


def test_geometry_mismatches_are_named():
    assert geometry_mismatch(BASE, replace(BASE, size=(8, 8, 9))) == "image size (8, 8, 8) != label size (8, 8, 9)"
    spacing = geometry_mismatch(BASE, replace(BASE, spacing=(0.8, 0.8, 2.5 * (1 + 5e-5))))
    assert spacing.startswith("image spacing (0.8, 0.8, 2.5) != label spacing")
    origin = geometry_mismatch(BASE, replace(BASE, origin=(-10.05, 20.0, 5.0)))
    assert "origin" in origin and "-10.05" in origin and "tolerance 0.01 mm" in origin
    flipped = (-1.0,) + IDENTITY[1:]
    assert geometry_mismatch(BASE, replace(BASE, direction=flipped)).startswith("image direction")


def test_channel_problem():
    scalar_3d, four_channels = BASE, replace(BASE, dimension=4, channels=4)
    assert channel_problem(scalar_3d, 1) is None
    assert channel_problem(four_channels, 4) is None
    assert channel_problem(four_channels, 1) == "is 4D with 4 channels; expected 3D single-channel images"
    assert channel_problem(scalar_3d, 4) == "is 3D; expected 4D images with 4 channels"
    assert channel_problem(replace(BASE, components=3), 1) == (
        "is 3D, 3 values per voxel; expected 3D single-channel images")
    assert channel_problem(replace(BASE, dimension=4, channels=2), 4) == (
        "is 4D with 2 channels; expected 4D images with 4 channels")


def test_read_geometry_from_headers(tmp_path):
    path = write_image(tmp_path / "ct.nii.gz", fake_ct(0))
    geometry = read_geometry(path)
    assert geometry.size == FAKE_SHAPE and geometry.dimension == 3 and geometry.channels == 1
    assert np.allclose(geometry.spacing, FAKE_SPACING)
    assert geometry == image_geometry(sitk.ReadImage(str(path)))

    four = read_geometry(write_image(tmp_path / "mri.nii.gz", np.zeros((4, 5, 6, 7), np.float32), spacing=(1, 2, 3)))
    assert (four.dimension, four.channels, four.size) == (4, 4, (7, 6, 5))  # SimpleITK sizes are (x, y, z, t)
    assert np.allclose(four.spacing, (1, 2, 3)) and len(four.direction) == 9

    vector = sitk.GetImageFromArray(np.zeros((5, 6, 7, 3), np.uint8), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "rgb.mha"))
    assert read_geometry(tmp_path / "rgb.mha").components == 3


def _case(tmp_path, label: np.ndarray, image: np.ndarray = None, ending: str = ".nii.gz") -> Case:
    image_path = write_image(tmp_path / f"img{ending}", fake_ct(1) if image is None else image)
    return Case("BTCV_0001", (image_path,), write_image(tmp_path / f"label{ending}", label))


def test_inspect_case_passes_a_good_case(tmp_path):
    label = fake_label(list(range(14)), 1)
    inspected, problem = inspect_case(_case(tmp_path, label), DATASETS["btcv"])
    assert problem is None
    np.testing.assert_array_equal(inspected.label, label)
    assert inspected.geometry.size == FAKE_SHAPE and np.allclose(inspected.geometry.origin, (-10.0, 20.0, 5.0))


def test_inspect_case_names_the_problem_and_the_file(tmp_path):
    spec = DATASETS["btcv"]
    case = _case(tmp_path, fake_label([1], 1).astype(np.float32) + np.float32(0.25))
    assert inspect_case(case, spec) == (None, f"label contains non-integer values in {case.label}; fix the file or "
                                               f"leave the case out.")

    case = _case(tmp_path, fake_label([1], 1), image=np.zeros((4,) + FAKE_SHAPE, np.float32))
    _, problem = inspect_case(case, spec)
    assert problem.startswith(f"{case.images[0]} is 4D with 4 channels; expected 3D single-channel images")


@pytest.mark.parametrize("ending", [".nii.gz", ".mha"])
def test_inspect_case_unreadable_files(tmp_path, ending):
    spec = DATASETS["btcv"]
    case = _case(tmp_path, fake_label([1], 1), ending=ending)
    case.label.write_bytes(b"not an image")
    _, problem = inspect_case(case, spec)
    assert str(case.label) in problem and problem.endswith("re-download it.")

    case.images[0].write_bytes(b"not an image either")
    _, problem = inspect_case(case, spec)
    assert str(case.images[0]) in problem and problem.endswith("re-download it.")
    if ending == ".mha":  # SimpleITK's own complaint, without its C++ location
        assert problem.startswith(f"cannot read {case.images[0]} (") and ".cxx" not in problem


def test_inspect_case_refuses_values_outside_the_remap(tmp_path):
    case = _case(tmp_path, fake_label([1, 205, 999], 2, dtype=np.uint16))
    _, problem = inspect_case(case, DATASETS["mmwhs"])
    assert problem.startswith(f"unexpected label value(s) [1, 999] in {case.label}")
    assert "[0, 205, 420, 500, 550, 600, 820, 850]" in problem
