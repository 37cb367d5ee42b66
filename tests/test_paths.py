"""nnU-Net's folders and dataset naming: DatasetXXX_Name, finding a dataset by ID or name, result folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import (
    dataset_folder_name,
    dataset_prefix,
    find_dataset_name,
    nnunet_folder,
    trainer_output_folder,
)


def test_dataset_folder_name():
    assert dataset_folder_name(7, "Phantoms") == "Dataset007_Phantoms"
    assert dataset_folder_name(601, "CT-Pretrain2") == "Dataset601_CT-Pretrain2"
    assert dataset_folder_name("999", "X") == "Dataset999_X"
    assert dataset_folder_name(1, "9lives") == "Dataset001_9lives"
    assert dataset_prefix(7) == "Dataset007_" and dataset_prefix("42") == "Dataset042_"


@pytest.mark.parametrize("dataset_id", [0, 1000, -5])
def test_dataset_id_out_of_range(dataset_id):
    with pytest.raises(UserError, match=f"between 1 and 999, got {dataset_id}"):
        dataset_folder_name(dataset_id, "Name")


@pytest.mark.parametrize("name", ["bad_name", "-leading", "", "with space", "dot.ted", "ümlaut"])
def test_dataset_name_letters_digits_and_dashes_only(name):
    with pytest.raises(UserError, match="letters, digits and '-'"):
        dataset_folder_name(5, name)


@pytest.fixture
def root(tmp_path):
    for name in ("Dataset601_CTPretrain", "Dataset007_Phantoms", "Dataset602_A", "Dataset602_B", "Dataset060_Ten"):
        (tmp_path / name).mkdir()
    (tmp_path / "Dataset603_File").write_text("a file, not a dataset")
    return tmp_path


def test_find_dataset_by_id_or_name(root):
    assert find_dataset_name(601, root) == "Dataset601_CTPretrain"
    assert find_dataset_name("601", root) == "Dataset601_CTPretrain"
    assert find_dataset_name(7, root) == "Dataset007_Phantoms"
    assert find_dataset_name("007", root) == "Dataset007_Phantoms"
    assert find_dataset_name(60, root) == "Dataset060_Ten"  # not Dataset601_... or Dataset602_...
    assert find_dataset_name("Dataset602_B", root) == "Dataset602_B"


def test_find_dataset_refusals(root):
    with pytest.raises(UserError, match=r"No folder Dataset603_\* in"):
        find_dataset_name(603, root)  # a file of that name is not a dataset
    with pytest.raises(UserError, match=r"Several datasets with ID 602 .*\['Dataset602_A', 'Dataset602_B'\]"):
        find_dataset_name(602, root)
    with pytest.raises(UserError, match="Dataset604_X does not exist"):
        find_dataset_name("Dataset604_X", root)
    with pytest.raises(UserError, match="must be an ID like 601"):
        find_dataset_name("CTPretrain", root)


def test_trainer_output_folder(tmp_path):
    folder = trainer_output_folder(str(tmp_path), "Dataset601_CT", "SubForeTrainer", "SubForePlans", "3d_fullres")
    assert folder == tmp_path / "Dataset601_CT" / "SubForeTrainer__SubForePlans__3d_fullres"


def test_nnunet_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    assert nnunet_folder("results") == tmp_path / "results"
    assert nnunet_folder("results", override=str(tmp_path / "mine")) == tmp_path / "mine"


@pytest.mark.parametrize("value", [None, ""])
def test_nnunet_folder_unset(monkeypatch, tmp_path, value):
    if value is None:
        monkeypatch.delenv("nnUNet_raw", raising=False)
    else:
        monkeypatch.setenv("nnUNet_raw", value)
    with pytest.raises(UserError, match=r"\$nnUNet_raw is not set.*export nnUNet_raw="):
        nnunet_folder("raw")
    assert nnunet_folder("raw", override=tmp_path) == Path(tmp_path)  # an explicit folder needs no variable


def test_nnunet_folder_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        nnunet_folder("result")
