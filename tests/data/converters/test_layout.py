"""Finding a dataset in a download: the root up to two levels down, files by case-number template."""

from __future__ import annotations

import pytest

from nnunet_subfore.data.converters.layout import locate_root, match_template, subfolders
from nnunet_subfore.data.converters.specs import DATASETS
from nnunet_subfore.errors import UserError

SPEC = DATASETS["btcv"]


def _has_marker(folder):
    return (folder / "marker").is_file()


def _mark(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "marker").touch()
    return folder


def test_locate_root_searches_the_source_and_two_levels_below(tmp_path):
    root = _mark(tmp_path / "download" / "unpacked")
    assert locate_root(root, _has_marker, SPEC) == root
    assert locate_root(tmp_path / "download", _has_marker, SPEC) == root
    assert locate_root(tmp_path, _has_marker, SPEC) == root
    with pytest.raises(UserError, match="No BTCV data found"):
        locate_root(tmp_path, _has_marker, SPEC, depth=1)


def test_locate_root_too_deep_names_the_expected_layout(tmp_path):
    _mark(tmp_path / "a" / "b" / "c")
    with pytest.raises(UserError) as error:
        locate_root(tmp_path, _has_marker, SPEC)
    assert SPEC.layout_hint in str(error.value) and SPEC.source_hint in str(error.value)


def test_locate_root_refuses_several_candidates(tmp_path):
    _mark(tmp_path / "copy1")
    _mark(tmp_path / "copy2")
    with pytest.raises(UserError, match="Several BTCV folders") as error:
        locate_root(tmp_path, _has_marker, SPEC)
    assert "copy1" in str(error.value) and "copy2" in str(error.value)


def test_locate_root_takes_the_shallowest_match(tmp_path):
    _mark(tmp_path / "outer")
    _mark(tmp_path / "outer" / "inner")
    assert locate_root(tmp_path, _has_marker, SPEC) == tmp_path / "outer"


def test_subfolders_skip_hidden_and_underscore_folders(tmp_path):
    for name in ("b", "a", ".git", "__MACOSX"):
        (tmp_path / name).mkdir()
    (tmp_path / "file.txt").touch()
    assert subfolders(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert subfolders(tmp_path / "missing") == []


def test_match_template_by_case_number(tmp_path):
    folder = tmp_path / "Training" / "img"
    folder.mkdir(parents=True)
    for name in ("img0001.nii.gz", "img0012.nii.gz", "._img0003.nii.gz", "img0004.nii", "img0005_old.nii.gz",
                 "imgX.nii.gz"):
        (folder / name).touch()
    (folder / "img0006.nii.gz").mkdir()  # a folder, not a file
    (tmp_path / "img0007.nii.gz").touch()  # outside Training/img
    assert match_template(tmp_path, "Training/img/img{num}.nii.gz") == {
        "0001": folder / "img0001.nii.gz", "0012": folder / "img0012.nii.gz"}


def test_match_template_with_the_number_inside_the_name(tmp_path):
    for name in ("ct_train_1001_image.nii.gz", "ct_train_1001_label.nii.gz", "ct_train_1002_image.nii.gz"):
        (tmp_path / name).touch()
    assert match_template(tmp_path, "ct_train_{num}_label.nii.gz") == {"1001": tmp_path / "ct_train_1001_label.nii.gz"}
    assert sorted(match_template(tmp_path, "ct_train_{num}_image.nii.gz")) == ["1001", "1002"]
