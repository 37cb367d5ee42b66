"""Near-duplicates: check-overlap finds a z-crop, a 2 mm resample and a rescaled copy of a pretraining image, names
the kind of match, leaves unrelated phantoms of the same body region alone, and reads no image twice."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_subfore.cli import main
from nnunet_subfore.data import fingerprint_store
from nnunet_subfore.data.fingerprint_store import FingerprintStore
from nnunet_subfore.data.overlap import check_overlap
from nnunet_subfore.data.near_duplicates import NEAR_THRESHOLD, best_ncc, image_descriptor, match_kind, near_score, unsearchable_cases
from nnunet_subfore.data.phantoms import make_phantom, to_sitk, write_labelled_dataset

#: 48 slices of 5 mm, 128 x 128 at 1.5 mm: 240 x 192 x 192 mm, large enough for the descriptor's minimum extent
SHAPE, SPACING = (48, 128, 128), (5.0, 1.5, 1.5)


def _phantom(seed: int) -> sitk.Image:
    return to_sitk(make_phantom(seed, SHAPE, spacing=SPACING)[0], SPACING, origin=(-96.0, -96.0, -120.0))


def _resampled(image: sitk.Image, spacing_xyz, interpolator=sitk.sitkLinear) -> sitk.Image:
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing_xyz)]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing_xyz,
                         image.GetDirection(), -1024, sitk.sitkInt16)


@pytest.fixture(scope="module")
def source():
    return _phantom(11)


@pytest.fixture(scope="module")
def copies(source):
    """What republished collections do to a scan: kind -> image."""
    return {
        "crop": source[:, :, 20:24],  # four slices (20 mm), geometry kept
        "resample": _resampled(source, (2.0, 2.0, 2.0)),
        "intensity": sitk.Cast(sitk.Cast(source, sitk.sitkFloat32) * 0.5 + 100.0, sitk.sitkFloat32),
        "reorientation": sitk.PermuteAxes(_resampled(source, (1.5, 1.5, 5.0), sitk.sitkNearestNeighbor), [1, 0, 2]),
    }


def test_each_copy_scores_above_the_threshold_and_is_named(source, copies):
    reference = image_descriptor(source)
    for kind, image in copies.items():
        descriptor = image_descriptor(image)
        score = near_score(descriptor, reference)
        assert score is not None and score >= NEAR_THRESHOLD, (kind, score)
        assert match_kind(descriptor, reference) == kind


def test_unrelated_phantoms_of_the_same_region_score_below_it(source, copies):
    reference = image_descriptor(source)
    for seed in (12, 13, 14):
        other = image_descriptor(_phantom(seed))
        assert near_score(other, reference) < NEAR_THRESHOLD, seed
        assert near_score(image_descriptor(copies["crop"]), other) < NEAR_THRESHOLD, seed


def test_a_case_is_unsearchable_only_when_none_of_its_images_is_large_enough(source):
    large = image_descriptor(source)
    small = image_descriptor(source[:32, :32, :])  # 48 mm in-plane: under the minimum extent
    cases = {"both": [small, large], "small": [small], "unread": [None], "mixed": [None, large]}
    assert unsearchable_cases(cases) == ["small", "unread"]


def test_ncc_finds_the_template_where_it_was_cut():
    rng = np.random.default_rng(0)
    large = rng.normal(size=(12, 20, 20))
    assert best_ncc(large[3:7, 5:15, 2:18] * 3.0 - 7.0, large) == pytest.approx(1.0)
    assert best_ncc(np.ones((2, 2, 2)), large) == 0.0  # a constant template correlates with nothing
    with pytest.raises(ValueError, match="does not fit"):
        best_ncc(large, large[:4])


@pytest.fixture
def datasets(tmp_path, source, copies):
    """A pretraining set holding the source among two unrelated phantoms; a downstream set holding the z-crop and
    the rescaled copy and one unrelated phantom; an imagesTs folder with the 2 mm resample."""
    raw = tmp_path / "raw"
    pre = write_labelled_dataset(raw, 811, "Pre", 3, seed=1, shape=SHAPE, spacing=SPACING)
    down = write_labelled_dataset(raw, 812, "Down", 3, seed=2, shape=SHAPE, spacing=SPACING)
    sitk.WriteImage(source, str(pre / "imagesTr" / "phantom_001_0000.nii.gz"))
    sitk.WriteImage(copies["crop"], str(down / "imagesTr" / "phantom_000_0000.nii.gz"))
    sitk.WriteImage(copies["intensity"], str(down / "imagesTr" / "phantom_002_0000.nii.gz"))
    extra = tmp_path / "imagesTs"
    extra.mkdir()
    sitk.WriteImage(copies["resample"], str(extra / "scan_7.mha"))
    return raw, pre, down, extra


def test_check_overlap_names_crop_resample_and_rescale_and_nothing_else(datasets, tmp_path, monkeypatch, capsys):
    raw, pre, down, extra = datasets
    reads = []
    original = fingerprint_store.read_image
    monkeypatch.setattr(fingerprint_store, "read_image", lambda path: reads.append(Path(path).name) or original(path))
    store = FingerprintStore(tmp_path / "store")
    report = check_overlap(pre, down, [extra], store=store)
    found = {s.case: (s.kind, s.seen_as) for s in report.shared}
    assert found == {"phantom_000": ("crop", ["phantom_001"]), "phantom_002": ("intensity", ["phantom_001"]),
                     "scan_7": ("resample", ["phantom_001"])}
    assert all(s.score >= NEAR_THRESHOLD for s in report.shared)
    assert "near-duplicate: crop, score" in report.describe()
    assert len(reads) == 7  # each image once

    again = check_overlap(pre, down, [extra], store=store)
    assert len(reads) == 7 and store.reads == 7  # the second check reads no image
    assert [(s.case, s.kind) for s in again.shared] == [(s.case, s.kind) for s in report.shared]

    changed = down / "imagesTr" / "phantom_001_0000.nii.gz"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    check_overlap(pre, down, [extra], store=store)
    assert reads[7:] == ["phantom_001_0000.nii.gz"]  # a changed file is read again, only it

    monkeypatch.setenv("SUBFORE_CACHE", str(tmp_path / "cli_store"))
    assert main(["check-overlap", "-d", "811", "-d", "812", "--images", str(extra), "--raw-root", str(raw)]) == 1
    assert "(near-duplicate: resample" in capsys.readouterr().out
    assert main(["check-overlap", "-d", "811", "-d", "812", "--raw-root", str(raw), "--exact-only"]) == 0


def test_an_in_plane_crop_matches_as_well_as_a_copy(source):
    """The crop's cut edges are left out of the comparison: its high-pass saw the edge where the source's saw anatomy."""
    crop = source[12:116, 20:110, :]  # 156 x 135 mm of the 192 x 192 mm field, geometry kept
    score = near_score(image_descriptor(crop), image_descriptor(source))
    assert score is not None and score > 0.99


def test_fields_too_small_to_tell_apart_are_checked_for_exact_copies_only(tmp_path):
    """Phantoms of a 96 mm field are miniature bodies alike at the descriptor's 8 mm scale: unrelated ones scored up
    to 0.96 against each other. Below the minimum extent no near-duplicate is reported, and the report says so."""
    raw = tmp_path / "raw"
    small = dict(shape=(24, 48, 48), spacing=(5.0, 2.0, 2.0))
    pre = write_labelled_dataset(raw, 813, "SmallPre", 6, seed=10, **small)
    down = write_labelled_dataset(raw, 814, "SmallDown", 3, seed=20, **small)
    copied = sitk.ReadImage(str(pre / "imagesTr" / "phantom_004_0000.nii.gz"))
    sitk.WriteImage(copied, str(down / "imagesTr" / "phantom_001_0000.nii.gz"))
    report = check_overlap(pre, down, store=FingerprintStore(tmp_path / "store"))
    assert [(s.case, s.kind) for s in report.shared] == [("phantom_001", "exact")]
    assert sorted(report.near_skipped) == ["Dataset814_SmallDown training: phantom_000",
                                           "Dataset814_SmallDown training: phantom_002"]
    assert "exact copies only (2:" in report.describe()
    assert report.to_json()["near_search_skipped"] == report.near_skipped


def test_a_store_that_cannot_be_written_warns_once_and_still_answers(tmp_path):
    image, _, spacing = make_phantom(3, (24, 72, 72), spacing=(5.0, 2.0, 2.0))
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(to_sitk(image, spacing), str(path))
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the store's folder should be")
    store = FingerprintStore(blocked / "fingerprints")
    with pytest.warns(UserWarning, match="cannot be written.*SUBFORE_CACHE"):
        first = store.entry(path)
    assert store.write_failed and first[0] == FingerprintStore(tmp_path / "ok").exact(path)
    assert store.entry(path)[0] == first[0] and store.reads == 2  # nothing kept: read again, no second warning
