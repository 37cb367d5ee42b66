"""The leakage guard: content fingerprints find the same scan under another name and format, and nothing else."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_subfore.cli import main
from nnunet_subfore.data.fingerprints import (
    dataset_cases,
    file_fingerprint,
    find_shared,
    fingerprint_cases,
    folder_cases,
    split_roles,
)
from nnunet_subfore.data.overlap import check_overlap
from nnunet_subfore.data.phantoms import make_phantom, to_sitk, write_labelled_dataset

SHAPE = (16, 24, 24)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # stored as RAS, the same scan after DICOMOrient


def _write(path: Path, array: np.ndarray, direction=None, origin=(0.0, 0.0, 0.0), spacing=(2.0, 1.5, 1.5)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_sitk(array, spacing, origin=origin, direction=direction), str(path), True)
    return path


def test_the_same_voxels_under_another_name_format_dtype_and_storage_order_match(tmp_path):
    image = make_phantom(1, SHAPE)[0].round().astype(np.int16)
    a = file_fingerprint(_write(tmp_path / "img0001.nii.gz", image))
    b = file_fingerprint(_write(tmp_path / "other" / "scan_17.mha", image.astype(np.float32), origin=(5.0, -3.0, 9.0)))
    # the same scan stored with flipped x and y axes: another voxel order on disk, the same after LPS reorientation
    flipped = to_sitk(image[:, ::-1, ::-1].copy(), (2.0, 1.5, 1.5), direction=FLIPPED)
    flipped.SetOrigin(flipped.TransformIndexToPhysicalPoint((-(SHAPE[2] - 1), -(SHAPE[1] - 1), 0)))
    path = tmp_path / "flipped.nii.gz"
    sitk.WriteImage(flipped, str(path), True)
    assert a == b == file_fingerprint(path)


def test_the_same_scan_as_nifti_and_as_metaimage_match_at_a_spacing_float32_cannot_hold(tmp_path):
    """NIfTI stores the spacing as float32, MetaImage as decimal text: 0.7031249 mm reads back as 0.70312488
    from the .nii.gz and as 0.7031249 from the .mha, and the fingerprint must not see the difference."""
    image = make_phantom(1, SHAPE)[0].round().astype(np.int16)
    spacing = (1.2345678, 0.7031249, 0.7031249)
    nifti = _write(tmp_path / "scan.nii.gz", image, spacing=spacing)
    metaimage = _write(tmp_path / "scan.mha", image, spacing=spacing)
    assert sitk.ReadImage(str(nifti)).GetSpacing() != sitk.ReadImage(str(metaimage)).GetSpacing()  # what is tested
    assert file_fingerprint(nifti) == file_fingerprint(metaimage)


def test_different_scans_do_not_match(tmp_path):
    image = make_phantom(1, SHAPE)[0].round().astype(np.int16)
    reference = file_fingerprint(_write(tmp_path / "a.nii.gz", image))
    changed = image.copy()
    changed[3, 4, 5] += 1  # one voxel
    assert file_fingerprint(_write(tmp_path / "b.nii.gz", changed)) != reference
    assert file_fingerprint(_write(tmp_path / "c.nii.gz", image, spacing=(2.5, 1.5, 1.5))) != reference
    assert file_fingerprint(_write(tmp_path / "d.nii.gz", make_phantom(2, SHAPE)[0].round().astype(np.int16))) != reference


def test_folder_cases_group_channels_and_skip_other_files(tmp_path):
    image = make_phantom(3, SHAPE)[0]
    for name in ("case_a_0000.nii.gz", "case_a_0001.nii.gz", "b.mha", "c.mhd"):
        _write(tmp_path / name, image)
    (tmp_path / "README.txt").write_text("no image")
    cases = folder_cases(tmp_path, ".nii.gz")
    assert sorted(cases) == ["b", "c", "case_a"] and len(cases["case_a"]) == 2


@pytest.fixture
def datasets(tmp_path):
    """Pretraining set of 3 phantoms; downstream set of 4 others, whose training case 2 is pretraining case 1
    re-saved as float32, and an extra folder holding pretraining case 0 as .mha under another name."""
    raw = tmp_path / "raw"
    pre = write_labelled_dataset(raw, 801, "Pre", 3, seed=1, shape=SHAPE)
    down = write_labelled_dataset(raw, 802, "Down", 4, seed=2, shape=SHAPE)
    copied = sitk.Cast(sitk.ReadImage(str(pre / "imagesTr" / "phantom_001_0000.nii.gz")), sitk.sitkFloat32)
    sitk.WriteImage(copied, str(down / "imagesTr" / "phantom_002_0000.nii.gz"), True)
    extra = tmp_path / "test_images"
    extra.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(pre / "imagesTr" / "phantom_000_0000.nii.gz")), str(extra / "patient_9.mha"))
    sitk.WriteImage(sitk.ReadImage(str(down / "imagesTr" / "phantom_003_0000.nii.gz")), str(extra / "patient_3.mha"))
    return raw, pre, down, extra


def test_check_overlap_names_each_shared_case(datasets):
    _, pre, down, extra = datasets
    report = check_overlap(pre, down, [extra])
    found = {(s.role, s.case, tuple(s.seen_as)) for s in report.shared}
    assert found == {("Dataset802_Down training", "phantom_002", ("phantom_001",)),
                     (str(extra), "patient_9", ("phantom_000",))}
    assert "patient_9" in report.describe() and "phantom_002" in report.describe()
    assert not check_overlap(pre, None, []).shared  # nothing to compare: nothing shared
    assert not find_shared(fingerprint_cases(dataset_cases(pre)), {"x": fingerprint_cases(folder_cases(pre / "labelsTr"))},
                           "Pre").shared


def test_split_roles_put_a_fold_s_cases_in_their_role():
    prints = {"a": ["1"], "b": ["2"], "c": ["3"]}
    roles = split_roles(prints, ["a", "b"], ["c"])
    assert roles == {"validation": {"c": ["3"]}, "training": {"a": ["1"], "b": ["2"]}}


def test_check_overlap_command_exits_1_naming_shared_cases_and_0_without(datasets, capsys):
    raw, pre, down, extra = datasets
    assert main(["check-overlap", "-d", "801", "-d", "802", "--images", str(extra), "--raw-root", str(raw)]) == 1
    out = capsys.readouterr().out
    shared, _, skipped = out.partition("Checked for exact copies only")
    assert "phantom_002" in shared and "patient_9" in shared and "phantom_001" in shared and "patient_3" not in shared
    assert "patient_3" in skipped  # the small test volumes are too small a field for the near-duplicate search
    (down / "imagesTr" / "phantom_002_0000.nii.gz").unlink()
    (down / "labelsTr" / "phantom_002.nii.gz").unlink()
    (extra / "patient_9.mha").unlink()
    assert main(["check-overlap", "-d", "801", "-d", "Dataset802_Down", "--images", str(extra), "--raw-root", str(raw)]) == 0
    assert "No case" in capsys.readouterr().out
    assert main(["check-overlap", "-d", "801", "--raw-root", str(raw)]) == 2
