"""Our own writer (BTCV, FLARE22, MM-WHS): pairing images with labels by number, the label remap, the written case."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
from subfore_test_helpers import MMWHS_CODES, fake_ct, fake_label, make_btcv, make_mmwhs, read_array, write_image

from nnunet_subfore.data.converters.layout import Case, Listing
from nnunet_subfore.data.converters.native import list_paired, remap_labels, write_native
from nnunet_subfore.data.converters.report import ConversionReport
from nnunet_subfore.data.converters.specs import DATASETS, MMWHS_SOURCE_VALUES


def test_list_paired_pairs_by_number_and_reports_orphans(tmp_path):
    source = make_btcv(tmp_path / "dl" / "RawData", n=3)
    (source / "Training" / "label" / "label0002.nii.gz").unlink()
    write_image(source / "Training" / "label" / "label0009.nii.gz", fake_label([1], 9))

    listing = list_paired(DATASETS["btcv"], tmp_path / "dl")

    assert listing.root == source
    assert [(c.case_id, c.images[0].name, c.label.name) for c in listing.cases] == [
        ("BTCV_0001", "img0001.nii.gz", "label0001.nii.gz"), ("BTCV_0003", "img0003.nii.gz", "label0003.nii.gz")]
    problems = dict(listing.problems)
    assert list(problems) == ["BTCV_0002", "BTCV_0009"]
    assert "has no label file" in problems["BTCV_0002"] and "label0002.nii.gz" in problems["BTCV_0002"]
    assert "has no image" in problems["BTCV_0009"] and "img0009.nii.gz" in problems["BTCV_0009"]


def test_remap_labels():
    remapped = remap_labels(np.array([[[0, 500, 850, 205]]], dtype=np.float32), MMWHS_SOURCE_VALUES)
    assert remapped.dtype == np.uint8 and remapped.tolist() == [[[0, 1, 7, 2]]]
    assert remap_labels(np.array([[[True, False]]]), {0: 0, 1: 1}).tolist() == [[[1, 0]]]  # bool: values, not a mask
    assert remap_labels(np.array([[[2, 1, 0]]], dtype=np.int16), {0: 0, 1: 5, 2: 3}).tolist() == [[[3, 5, 0]]]


def test_write_native_writes_checked_cases_with_the_image_geometry(tmp_path):
    spec = DATASETS["mmwhs"]
    source = make_mmwhs(tmp_path / "mmwhs", n=2)
    direction = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    image = sitk.GetImageFromArray(fake_ct(7))  # an .mha image with its own geometry
    image.SetSpacing((0.7, 0.9, 3.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    image.SetDirection(direction)
    sitk.WriteImage(image, str(source / "ct_train" / "ct_train_1003_image.mha"))
    label = sitk.GetImageFromArray(fake_label(MMWHS_CODES, 7, dtype=np.float32))
    label.CopyInformation(image)
    sitk.WriteImage(label, str(source / "ct_train" / "ct_train_1003_label.nii.gz"))
    bad = write_image(tmp_path / "bad_label.nii.gz", fake_label([501], 8, dtype=np.float32))
    cases = [Case("MMWHS_ct_1001", (source / "ct_train" / "ct_train_1001_image.nii.gz",),
                  source / "ct_train" / "ct_train_1001_label.nii.gz"),
             Case("MMWHS_ct_1003", (source / "ct_train" / "ct_train_1003_image.mha",),
                  source / "ct_train" / "ct_train_1003_label.nii.gz"),
             Case("MMWHS_ct_1004", (source / "ct_train" / "ct_train_1002_image.nii.gz",), bad)]
    out = tmp_path / "Dataset530_MMWHS"
    report = ConversionReport("mmwhs")

    write_native(spec, Listing(source, cases, []), out, 530, report)

    assert report.converted == ["MMWHS_ct_1001", "MMWHS_ct_1003"]
    assert [name for name, _ in report.skipped] == ["MMWHS_ct_1004"] and "[501]" in report.skipped[0][1]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["MMWHS_ct_1001_0000.nii.gz",
                                                                    "MMWHS_ct_1003_0000.nii.gz"]
    # a .nii.gz image is copied as it is
    assert (out / "imagesTr" / "MMWHS_ct_1001_0000.nii.gz").read_bytes() == cases[0].images[0].read_bytes()
    written_image = sitk.ReadImage(str(out / "imagesTr" / "MMWHS_ct_1003_0000.nii.gz"))
    written_label = sitk.ReadImage(str(out / "labelsTr" / "MMWHS_ct_1003.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written_image), fake_ct(7))
    for written in (written_image, written_label):
        assert np.allclose(written.GetSpacing(), (0.7, 0.9, 3.0))
        assert np.allclose(written.GetOrigin(), (1.0, 2.0, 3.0))
        assert np.allclose(written.GetDirection(), direction)
    assert written_label.GetPixelID() == sitk.sitkUInt8
    original = fake_label(MMWHS_CODES, 7, dtype=np.float32)
    remapped = read_array(out / "labelsTr" / "MMWHS_ct_1003.nii.gz")
    assert sorted(remapped[original > 0].tolist()) == [1, 2, 3, 4, 5, 6, 7]
    assert remapped[original == 850].tolist() == [7] and remapped[original == 205].tolist() == [2]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["labels"] == spec.labels and meta["name"] == "Dataset530_MMWHS"


def test_write_native_with_nothing_to_write_leaves_no_dataset_json(tmp_path):
    bad = write_image(tmp_path / "label.nii.gz", fake_label([14], 1))
    case = Case("BTCV_0001", (write_image(tmp_path / "img.nii.gz", fake_ct(1)),), bad)
    report = ConversionReport("btcv")
    write_native(DATASETS["btcv"], Listing(tmp_path, [case], []), tmp_path / "out", 531, report)
    assert report.converted == [] and report.exit_code() == 2
    assert not (tmp_path / "out" / "dataset.json").exists()
