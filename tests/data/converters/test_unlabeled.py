"""Layout checks of the unlabeled pretraining collections (LUNA16, TCIA-COVID19, BTCV's images), alone and pooled.
The registrations themselves run in test_conversion.py."""

from __future__ import annotations

import pytest
from subfore_test_helpers import LUNA16_UID, fake_ct, fake_label, make_btcv, make_luna16, write_image

from nnunet_subfore.data.converters.unlabeled import (
    btcv_images,
    covid19_sources,
    luna16_sources,
    pretraining_sources,
)
from nnunet_subfore.errors import UserError


def test_luna16_takes_the_subsets_and_ignores_the_lung_masks(tmp_path):
    root = make_luna16(tmp_path / "dl" / "LUNA16")
    listing = luna16_sources(tmp_path / "dl")
    assert listing.root == root
    assert listing.files == [root / "subset0" / f"{LUNA16_UID.format(k)}.mhd" for k in (101, 102)] + [
        root / "subset1" / f"{LUNA16_UID.format(103)}.mhd"]
    assert listing.ignored == [root / "seg-lungs-LUNA16" / f"{LUNA16_UID.format(101)}.mhd"]
    (name, reason), = listing.problems
    assert name == LUNA16_UID.format(104)
    assert f"{LUNA16_UID.format(104)}.raw is missing" in reason and "re-extract subset1.zip" in reason


def test_luna16_one_subset_folder(tmp_path):
    root = make_luna16(tmp_path / "LUNA16")
    listing = luna16_sources(root / "subset0")
    assert listing.root == root
    assert [p.name for p in listing.files] == [f"{LUNA16_UID.format(k)}.mhd" for k in (101, 102)]
    assert listing.ignored == [] and listing.problems == []


def test_luna16_headers_without_a_data_file(tmp_path):
    subset = tmp_path / "subset3"
    subset.mkdir()
    (subset / "local.mhd").write_text("ObjectType = Image\nNDims = 3\nElementDataFile = LOCAL\n")
    (subset / "headless.mhd").write_text("ObjectType = Image\nNDims = 3\n")
    listing = luna16_sources(subset)
    assert listing.files == [subset / "local.mhd"]  # LOCAL: the data follow the header in the same file
    (name, reason), = listing.problems
    assert name == "headless" and "ElementDataFile missing" in reason


def test_luna16_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="No LUNA16 data found.*subset0"):
        luna16_sources(tmp_path / "empty")
    (tmp_path / "LUNA16" / "subset0").mkdir(parents=True)
    with pytest.raises(UserError, match="No .mhd volumes in"):
        luna16_sources(tmp_path / "LUNA16")


def test_covid19_leaves_masks_and_hidden_files_out(tmp_path):
    source = tmp_path / "covid19"
    kept = [write_image(source / "Train" / "volume-covid19-A-0003_ct.nii.gz", fake_ct(3)),
            write_image(source / "volume-covid19-A-0005.nii", fake_ct(5))]
    masks = [write_image(source / "Train" / name, fake_label([1], 1))
             for name in ("volume-covid19-A-0003_seg.nii.gz", "lung-mask-0003.nii.gz", "A-0004.label.nii.gz")]
    write_image(source / ".cache" / "volume-covid19-A-0009.nii.gz", fake_ct(9))
    (source / "notes.txt").write_text("not an image")
    listing = covid19_sources(source)
    assert sorted(listing.files) == sorted(kept)
    assert sorted(listing.ignored) == sorted(masks)
    assert listing.problems == [] and listing.root == source


def test_covid19_without_volumes(tmp_path):
    write_image(tmp_path / "only_seg.nii.gz", fake_label([1], 1))
    with pytest.raises(UserError, match="No NIfTI CT volumes"):
        covid19_sources(tmp_path)


def test_btcv_images_are_the_training_images(tmp_path):
    root = make_btcv(tmp_path / "RawData", n=2)
    listing = btcv_images(tmp_path)
    assert listing.files == [root / "Training" / "img" / "img0001.nii.gz", root / "Training" / "img" / "img0002.nii.gz"]


def test_pretraining_sources_pool_the_layout_checks(tmp_path):
    luna = make_luna16(tmp_path / "LUNA16")
    btcv = make_btcv(tmp_path / "RawData", n=2)
    covid = tmp_path / "covid"
    write_image(covid / "volume-covid19-A-0003.nii.gz", fake_ct(3))
    files, problems, ignored = pretraining_sources(btcv=btcv, covid19=covid, luna16=luna, other=None)
    assert [p.name for p in files[:3]] == ["img0001.nii.gz", "img0002.nii.gz", "volume-covid19-A-0003.nii.gz"]
    assert files[3:] == luna16_sources(luna).files
    assert [name for name, _ in problems] == [LUNA16_UID.format(104)]
    assert [p.parent.name for p in ignored] == ["seg-lungs-LUNA16"]
    with pytest.raises(UserError, match="known"):
        pretraining_sources(lits=tmp_path)
