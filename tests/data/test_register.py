"""register_unlabeled on real files: NIfTI, MHA, DICOM, corrupt and non-CT inputs, --force, naming."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from subfore_test_helpers import write_dicom_series

from nnunet_subfore.data.phantoms import make_phantom, to_sitk, write_unlabeled_images
from nnunet_subfore.data.register import REGISTRATION_FILE, RegistrationReport, register_unlabeled
from nnunet_subfore.errors import UserError

SHAPE = (24, 40, 40)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # RAS-stored NIfTI read as LPS
c, s = np.cos(0.3), np.sin(0.3)
OBLIQUE = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture(autouse=True)
def _no_nnunet_folders(monkeypatch):
    """The same-ID check also looks in $nnUNet_preprocessed / $nnUNet_results: keep the user's out of these tests."""
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)


def _write(path: Path, array: np.ndarray, spacing=(2.0, 0.8, 0.8), origin=(0.0, 0.0, 0.0), direction=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_sitk(array, spacing, origin, direction), str(path), True)
    return path


@pytest.fixture
def sources(tmp_path):
    """Two NIfTI and two MHA CT volumes with distinct geometry, a corrupt file and an MRI-like volume."""
    nifti = tmp_path / "in" / "nifti"
    for i in range(2):
        image, _, _ = make_phantom(10 + i, SHAPE)
        _write(nifti / f"ct_{i}.nii.gz", image, spacing=(2.5, 0.7, 0.7), origin=(120.0, 90.0, -300.0 + i), direction=FLIPPED)
    for i in range(2):
        image, _, _ = make_phantom(20 + i, SHAPE)
        _write(tmp_path / "in" / "mha" / "sub" / f"scan{i}.mha", image, spacing=(1.0, 1.2, 1.1),
               origin=(-5.0, 7.5, 12.0), direction=OBLIQUE)
    (nifti / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip " * 50)
    mri = np.random.default_rng(0).uniform(0, 2000, SHAPE).astype(np.uint16)
    _write(nifti / "mri.nii.gz", mri)
    (nifti / "README.txt").write_text("not an image; ignored")
    return [tmp_path / "in" / "nifti", tmp_path / "in" / "mha"]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_registers_ct_and_reports_bad_files(tmp_path, sources, capsys):
    raw = tmp_path / "raw"
    report = register_unlabeled(sources, dataset_id=601, name="CTPretrain", raw_root=raw, progress=False)
    out = capsys.readouterr().out

    assert report.exit_code() == 1
    assert report.output_dir == (raw / "Dataset601_CTPretrain").resolve()
    assert [case for case, _ in report.registered] == ["nifti-ct-0", "nifti-ct-1", "mha-sub-scan0", "mha-sub-scan1"]
    skipped = {p.name: reason for p, reason in report.skipped}
    assert set(skipped) == {"broken.nii.gz", "mri.nii.gz"}
    assert "unreadable" in skipped["broken.nii.gz"]
    assert "Hounsfield" in skipped["mri.nii.gz"]
    assert "broken.nii.gz" in out and "mri.nii.gz" in out

    folder = report.output_dir
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "body": 1}
    assert meta["numTraining"] == 4 and meta["file_ending"] == ".nii.gz"
    assert "body mask" in meta["description"]

    for case, source in report.registered:
        original = sitk.ReadImage(str(source))
        image = sitk.ReadImage(str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        label = sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz"))
        for im in (image, label):
            assert np.allclose(im.GetSpacing(), original.GetSpacing(), atol=1e-5)
            assert np.allclose(im.GetOrigin(), original.GetOrigin(), atol=1e-4)
            assert np.allclose(im.GetDirection(), original.GetDirection(), atol=1e-5)
        hu = sitk.GetArrayFromImage(image)
        assert np.array_equal(hu, sitk.GetArrayFromImage(original))
        body = sitk.GetArrayFromImage(label)
        assert label.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(body)) == {0, 1}
        assert np.median(hu[body == 0]) < -900  # outside: mostly air (the table and the arms lie outside too)
        assert np.percentile(hu[body == 1], 0.5) < -500  # lungs count as body

    registration = json.loads((folder / REGISTRATION_FILE).read_text())
    assert [r["case"] for r in registration["registered"]] == [case for case, _ in report.registered]
    assert {Path(r["source"]).name for r in registration["skipped"]} == {"broken.nii.gz", "mri.nii.gz"}
    assert not [p for p in raw.iterdir() if p.name.startswith(".")], "no staging folder left behind"


def test_existing_dataset_needs_force_and_another_name_is_refused_even_with_force(tmp_path, sources):
    raw = tmp_path / "raw"
    first = register_unlabeled(sources, 601, "CTPretrain", raw_root=raw, progress=False)
    before = _snapshot(first.output_dir)

    with pytest.raises(UserError) as error:  # the same folder
        register_unlabeled(sources[:1], 601, "CTPretrain", raw_root=raw, progress=False)
    assert "Dataset601_CTPretrain" in str(error.value) and "--force" in str(error.value)
    for force in (False, True):  # another folder with the same ID: --force replaces this dataset, not another one
        with pytest.raises(UserError) as error:
            register_unlabeled(sources[:1], 601, "OtherName", raw_root=raw, force=force, progress=False)
        assert "Dataset601_CTPretrain" in str(error.value) and "another dataset ID" in str(error.value)
        assert "by hand" in str(error.value)
    assert _snapshot(first.output_dir) == before

    again = register_unlabeled(sources[1:], 601, "CTPretrain", raw_root=raw, force=True, progress=False)
    assert again.exit_code() == 0
    assert sorted(p.name for p in (again.output_dir / "labelsTr").iterdir()) == [
        "mha-sub-scan0.nii.gz", "mha-sub-scan1.nii.gz"]

    with pytest.raises(UserError, match="already used by Dataset601_CTPretrain"):
        register_unlabeled(sources[:1], 601, "Renamed", raw_root=raw, force=True, progress=False)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset601_CTPretrain"]
    assert json.loads((again.output_dir / "dataset.json").read_text())["numTraining"] == 2


def test_id_used_by_another_name_in_results_is_refused(tmp_path, sources, monkeypatch):
    results = tmp_path / "results"
    (results / "Dataset601_Trained").mkdir(parents=True)
    monkeypatch.setenv("nnUNet_results", str(results))
    with pytest.raises(UserError, match="already used by Dataset601_Trained"):
        register_unlabeled(sources, 601, "CTPretrain", raw_root=tmp_path / "raw", force=True, progress=False)
    assert not (tmp_path / "raw").exists()


def test_sources_are_left_untouched(tmp_path, sources):
    before = {str(src): _snapshot(src) for src in sources}
    register_unlabeled(sources, 601, "CTPretrain", raw_root=tmp_path / "raw", progress=False)
    assert {str(src): _snapshot(src) for src in sources} == before


def test_case_names_unique_across_folders_with_same_names(tmp_path):
    for site in ("siteA", "siteB"):
        write_unlabeled_images(tmp_path / site / "img", 2, seed=1, shape=SHAPE)
    report = register_unlabeled([tmp_path / "siteA" / "img", tmp_path / "siteB" / "img"], 602, "Two",
                                raw_root=tmp_path / "raw", progress=False)
    cases = [case for case, _ in report.registered]
    assert report.exit_code() == 0 and len(cases) == 4
    assert len(set(c.lower() for c in cases)) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9-]+", c) for c in cases)
    assert cases[:2] == ["img-ct-000", "img-ct-001"] and cases[2:] == ["img-ct-000-2", "img-ct-001-2"]


def test_dicom_series_and_explicit_files(tmp_path):
    image, _, _ = make_phantom(7, SHAPE)
    volume = to_sitk(image, (2.5, 0.8, 0.8), origin=(-10.0, 20.0, 30.0))
    series = tmp_path / "dicom" / "patient1" / "CT series"
    write_dicom_series(volume, series, "1.2.826.0.1.3680043.2.1125.99")
    mha = _write(tmp_path / "loose" / "one.mha", make_phantom(8, SHAPE)[0])
    report = register_unlabeled([tmp_path / "dicom", mha, series / "IM0003"], 603, "Dicom",
                                raw_root=tmp_path / "raw", progress=False)
    assert report.exit_code() == 0
    assert [case for case, _ in report.registered] == ["dicom-patient1-CT-series", "loose-one"]
    written = sitk.ReadImage(str(report.output_dir / "imagesTr" / "dicom-patient1-CT-series_0000.nii.gz"))
    assert np.allclose(written.GetSpacing(), volume.GetSpacing(), atol=1e-4)
    assert np.allclose(written.GetOrigin(), volume.GetOrigin(), atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(written), image)


def test_nothing_registered_is_exit_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad"
    _write(bad / "normalized.nii.gz", np.random.default_rng(1).random(SHAPE).astype(np.float32))
    _write(bad / "air.nii.gz", np.full(SHAPE, -1000, dtype=np.int16))
    _write(bad / "all_nan.nii.gz", np.full(SHAPE, np.nan, dtype=np.float32))
    _write(bad / "soft_tissue_only.nii.gz", np.full(SHAPE, 40, dtype=np.int16) - 200)
    _write(bad / "rgb.nrrd", np.zeros((*SHAPE, 3), dtype=np.uint8))
    (bad / "lonely.raw").write_bytes(b"\0" * 64)
    report = register_unlabeled([bad, bad / "lonely.raw"], 604, "Bad", raw_root=tmp_path / "raw", progress=False)
    reasons = {p.name: r for p, r in report.skipped}
    assert report.exit_code() == 2 and report.registered == []
    assert "normalized" in reasons["normalized.nii.gz"]
    assert "empty body mask" in reasons["air.nii.gz"]
    assert "NaN" in reasons["all_nan.nii.gz"] and "normalized" not in reasons["all_nan.nii.gz"]
    assert "no air" in reasons["soft_tissue_only.nii.gz"]
    assert "components" in reasons["rgb.nrrd"]
    assert ".mhd" in reasons["lonely.raw"]
    assert not report.output_dir.exists()


def test_force_with_nothing_to_register_keeps_the_old_dataset(tmp_path, sources):
    raw = tmp_path / "raw"
    first = register_unlabeled(sources, 601, "CTPretrain", raw_root=raw, progress=False)
    before = _snapshot(first.output_dir)
    report = register_unlabeled([sources[0] / "broken.nii.gz"], 601, "CTPretrain", raw_root=raw, force=True,
                                progress=False)
    assert report.exit_code() == 2
    assert _snapshot(first.output_dir) == before


def test_overlapping_output_and_input_are_refused(tmp_path, sources):
    with pytest.raises(UserError, match="overlap"):
        register_unlabeled(sources, 601, "Inside", raw_root=sources[0] / "raw", progress=False)
    assert not (sources[0] / "raw").exists()
    first = register_unlabeled(sources, 601, "CT", raw_root=tmp_path / "raw", progress=False)
    with pytest.raises(UserError, match="overlap"):
        register_unlabeled([first.output_dir / "imagesTr"], 601, "CT", raw_root=tmp_path / "raw", force=True,
                           progress=False)
    assert (first.output_dir / "dataset.json").exists()


def test_bad_arguments_are_user_errors(tmp_path, sources):
    with pytest.raises(UserError, match="does not exist"):
        register_unlabeled([tmp_path / "nope"], 601, "X", raw_root=tmp_path / "raw", progress=False)
    with pytest.raises(UserError, match="name"):
        register_unlabeled(sources, 601, "bad_name", raw_root=tmp_path / "raw", progress=False)


def test_exit_codes():
    assert RegistrationReport(Path("x"), registered=[("a", Path("a"))]).exit_code() == 0
    assert RegistrationReport(Path("x"), [("a", Path("a"))], [(Path("b"), "why")]).exit_code() == 1
    assert RegistrationReport(Path("x"), [], [(Path("b"), "why")]).exit_code() == 2
    assert RegistrationReport(Path("x")).exit_code() == 2


@pytest.mark.slow
def test_nnunet_fingerprint_lower_percentile_is_air(tmp_path, sources):
    raw, preprocessed, results = (tmp_path / n for n in ("raw", "preprocessed", "results"))
    register_unlabeled(sources, 605, "Finger", raw_root=raw, progress=False)
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(preprocessed), nnUNet_results=str(results))
    env.pop("nnUNet_n_proc_DA", None)  # 0 there crashes planning/preprocessing in nnU-Net 2.8.1
    command = shutil.which("nnUNetv2_extract_fingerprint", path=str(Path(sys.executable).parent)) or shutil.which(
        "nnUNetv2_extract_fingerprint")
    assert command, "nnUNetv2_extract_fingerprint not found next to the Python interpreter or on PATH"
    done = subprocess.run([command, "-d", "605", "-np", "1", "--verify_dataset_integrity", "--no_pbar"], env=env,
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    fingerprint = json.loads((preprocessed / "Dataset605_Finger" / "dataset_fingerprint.json").read_text())
    properties = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    assert properties["percentile_00_5"] < -500, properties



def test_body_threshold_decides_what_is_body(tmp_path):
    """A -400 HU slab (lung-like) touching a soft-tissue block is body at the default -500 HU, not at -300 HU."""
    hu = np.full((8, 32, 32), -1000, dtype=np.int16)
    hu[:, 8:24, 8:16] = 40  # soft tissue
    hu[:, 8:24, 16:24] = -400  # lung-like, joined to the tissue
    source = _write(tmp_path / "in" / "ct.nii.gz", hu)
    labels = {}
    for threshold in (-500.0, -300.0):
        raw = tmp_path / f"raw{int(-threshold)}"
        report = register_unlabeled([source], 7, "Body", raw_root=raw, body_threshold=threshold, progress=False)
        assert report.exit_code() == 0
        (label_file,) = (raw / "Dataset007_Body" / "labelsTr").iterdir()
        labels[threshold] = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
    assert labels[-500.0][:, 8:24, 8:24].all() and labels[-500.0].sum() == 8 * 16 * 16
    assert labels[-300.0][:, 8:24, 8:16].all() and not labels[-300.0][:, :, 16:].any()


def test_truncated_download_is_skipped_by_name(tmp_path, sources, capsys):
    whole = sources[0] / "ct_0.nii.gz"
    data = whole.read_bytes()
    (sources[0] / "half.nii.gz").write_bytes(data[: len(data) // 2])
    report = register_unlabeled(sources, 8, "Trunc", raw_root=tmp_path / "raw", progress=False)
    reasons = {p.name: r for p, r in report.skipped}
    assert "half.nii.gz" in reasons and "re-download" in reasons["half.nii.gz"]
    assert report.exit_code() == 1 and all("half" not in case for case, _ in report.registered)
    assert "half.nii.gz" in capsys.readouterr().out


def test_a_volume_smaller_than_one_subvolume_is_registered_with_a_note(tmp_path, capsys):
    tiny = np.full((5, 5, 5), 40, dtype=np.int16)
    tiny[0] = -1000
    source = _write(tmp_path / "in" / "thumb.nii.gz", tiny)
    report = register_unlabeled([source], 9, "Tiny", raw_root=tmp_path / "raw", progress=False)
    assert report.exit_code() == 0 and len(report.registered) == 1
    (path, note), = report.notes
    assert path == source and "5 x 5 x 5" in note and "16^3" in note
    assert "thumb.nii.gz" in capsys.readouterr().out
