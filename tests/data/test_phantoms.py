"""Synthetic CT phantoms: HU ranges, labels, determinism, variation, and the dataset writers."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_subfore.data.phantoms import (
    HU,
    LABELS,
    make_phantom,
    write_labelled_dataset,
    write_unlabeled_images,
)
from nnunet_subfore.errors import UserError

SHAPE = (32, 48, 48)
SEEDS = range(6)


@pytest.mark.parametrize("seed", SEEDS)
def test_hu_ranges_and_labels(seed):
    image, label, spacing = make_phantom(seed, SHAPE, (2.0, 1.0, 1.0))
    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == SHAPE and label.shape == SHAPE
    assert spacing == (2.0, 1.0, 1.0)
    assert set(np.unique(label)) == {0, 1, 2, 3}

    # air outside the body: the volume's corners, -1000 with a little noise
    corners = image[:, :4, :4].astype(float)
    assert abs(corners.mean() - HU["air"]) < 10
    assert 5 < corners.std() < 25
    assert image.min() >= -1024

    # each labelled organ has its own HU inside its soft boundary (noise averages out)
    for organ in ("liver", "spleen", "kidneys"):
        core = ndimage.binary_erosion(label == LABELS[organ])
        assert core.sum() >= 10, organ
        assert abs(image[core].mean() - HU[organ]) < 12, organ

    # bone, fat and lung are present
    assert 500 < image.max() < 1000
    assert np.count_nonzero(np.abs(image - HU["fat"]) < 30) > 200
    outline = np.stack([ndimage.binary_fill_holes(s) for s in image > -500])  # per slice: see body_mask
    assert np.count_nonzero(outline & (image < -700)) > 200  # lung inside the body outline


@pytest.mark.parametrize("seed", [0, 5])
def test_airways_reach_the_top_slice_and_join_the_lungs(seed):
    image, _, _ = make_phantom(seed, SHAPE)
    air = image < -500
    components, _ = ndimage.label(air)
    outside = components[0, 0, 0]
    in_top_slice = set(np.unique(components[-1][air[-1]])) - {outside}
    inner = set(np.unique(components[air])) - {outside}
    assert in_top_slice, "the trachea must leave through the last slice"
    assert inner == in_top_slice, "every air space inside the body must connect to the top end"
    # which is why a 3D hole filling leaves the lungs out of the body
    filled_3d = ndimage.binary_fill_holes(image > -500)
    assert not (filled_3d & air).any()


def test_same_seed_same_phantom():
    a = make_phantom(3, SHAPE)
    b = make_phantom(3, SHAPE)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_seeds_vary_body_and_organs():
    phantoms = [make_phantom(seed, SHAPE) for seed in SEEDS]
    body_sizes = {int(np.count_nonzero(image > -500)) for image, _, _ in phantoms}
    liver_centres = {tuple(np.round(ndimage.center_of_mass(label == 1), 1)) for _, label, _ in phantoms}
    assert len(body_sizes) == len(phantoms)
    assert len(liver_centres) == len(phantoms)
    assert not np.array_equal(phantoms[0][0], phantoms[1][0])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="shape"):
        make_phantom(0, (8, 32, 32))
    with pytest.raises(ValueError, match="spacing"):
        make_phantom(0, SHAPE, (1.0, 0.0, 1.0))


def test_write_labelled_dataset(tmp_path, monkeypatch):
    for name in ("nnUNet_preprocessed", "nnUNet_results"):  # also checked for the ID: keep the user's out
        monkeypatch.delenv(name, raising=False)
    folder = write_labelled_dataset(tmp_path, 7, "Phantoms", num_training=3, num_test=2, seed=1, shape=SHAPE,
                                    spacing=(2.0, 1.0, 1.0))
    assert folder == (tmp_path / "Dataset007_Phantoms").resolve()
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "liver": 1, "spleen": 2, "kidneys": 3}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"phantom_00{i}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["phantom_003.nii.gz", "phantom_004.nii.gz"]
    image = sitk.ReadImage(str(folder / "imagesTr" / "phantom_000_0000.nii.gz"))
    label = sitk.ReadImage(str(folder / "labelsTr" / "phantom_000.nii.gz"))
    assert np.allclose(image.GetSpacing(), (1.0, 1.0, 2.0))
    assert label.GetSpacing() == image.GetSpacing() and label.GetOrigin() == image.GetOrigin()
    assert set(np.unique(sitk.GetArrayFromImage(label))) == {0, 1, 2, 3}
    assert not list(tmp_path.glob(".*")), "no staging folder left behind"

    before = (folder / "imagesTr" / "phantom_000_0000.nii.gz").read_bytes()
    with pytest.raises(UserError, match="force"):
        write_labelled_dataset(tmp_path, 7, "Phantoms", num_training=1, shape=SHAPE)
    for force in (False, True):  # the same ID with another name: refused, --force replaces this dataset only
        with pytest.raises(UserError, match="already used by Dataset007_Phantoms"):
            write_labelled_dataset(tmp_path, 7, "Other", num_training=1, shape=SHAPE, force=force)
    assert (folder / "imagesTr" / "phantom_000_0000.nii.gz").read_bytes() == before

    replaced = write_labelled_dataset(tmp_path, 7, "Phantoms", num_training=1, shape=SHAPE, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset007_Phantoms"]
    assert json.loads((replaced / "dataset.json").read_text())["numTraining"] == 1


@pytest.mark.parametrize("file_format", ["nii.gz", "mha"])
def test_write_unlabeled_images(tmp_path, file_format):
    paths = write_unlabeled_images(tmp_path / "ct", 2, seed=4, shape=SHAPE, spacing=(2.0, 1.0, 1.0),
                                   file_format=file_format)
    assert [p.name for p in paths] == [f"ct_000.{file_format}", f"ct_001.{file_format}"]
    images = [sitk.ReadImage(str(p)) for p in paths]
    assert all(np.allclose(im.GetSpacing(), (1.0, 1.0, 2.0)) for im in images)
    assert images[0].GetOrigin() != images[1].GetOrigin()
    assert sitk.GetArrayFromImage(images[0]).min() < -900
    assert len(list((tmp_path / "ct").iterdir())) == 2

    with pytest.raises(UserError, match="ct_000"):
        write_unlabeled_images(tmp_path / "ct", 1, file_format=file_format, shape=SHAPE)
    write_unlabeled_images(tmp_path / "ct", 1, seed=9, file_format=file_format, shape=SHAPE, force=True)
    with pytest.raises(ValueError, match="file_format"):
        write_unlabeled_images(tmp_path / "other", 1, file_format="png")
