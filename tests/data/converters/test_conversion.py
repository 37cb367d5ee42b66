"""convert_dataset end to end: each published layout, on tiny fake trees, into a raw dataset that
nnU-Net's own integrity check accepts; problems by case, refusals, --force, --paper-split, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from subfore_test_helpers import (
    FAKE_SHAPE,
    fake_ct,
    fake_label,
    make_amos,
    make_brats,
    make_btcv,
    make_flare22,
    make_luna16,
    make_mmwhs,
    read_array,
    tree_digest,
    verify_nnunet_dataset,
    write_image,
)

from nnunet_subfore.data import converters
from nnunet_subfore.data.converters import convert_dataset
from nnunet_subfore.errors import UserError


# ---------------------------------------------------------------------------------------------- our own writer

def test_btcv_converts_with_paper_split(nnunet_folders, tmp_path):
    raw, pre = nnunet_folders
    source = make_btcv(tmp_path / "download" / "RawData")
    before = tree_digest(source)

    report = convert_dataset(name="btcv", source=tmp_path / "download", dataset_id=501, raw_root=None,
                             force=False, paper_split=True)

    assert report.exit_code() == 0, report.describe()
    out = raw / "Dataset501_BTCV"
    assert report.output_dir == out
    assert report.converted == [f"BTCV_{k:04d}" for k in range(1, 7)]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == converters.BTCV_LABELS
    assert meta["labels"]["portal and splenic veins"] == 10 and meta["labels"]["left adrenal gland"] == 13
    assert meta["numTraining"] == 6 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (out / "imagesTr").iterdir())[0] == "BTCV_0001_0000.nii.gz"
    verify_nnunet_dataset(out, in_process=False)  # once as nnU-Net runs it, in spawned worker processes
    assert tree_digest(source) == before, "the source was modified"

    splits = json.loads((pre / "Dataset501_BTCV" / "splits_final.json").read_text())
    assert report.splits_file == pre / "Dataset501_BTCV" / "splits_final.json"
    assert json.loads((out / "splits_final.json").read_text()) == splits
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    assert len(splits) == 6
    assert splits[:5] == [{"train": list(s["train"]), "val": list(s["val"])}
                          for s in generate_crossval_split(report.converted, seed=12345, n_splits=5)]
    assert (len(splits[5]["train"]), len(splits[5]["val"])) == (5, 1)  # paper 24/6: 20 % validation
    assert sorted(splits[5]["train"] + splits[5]["val"]) == report.converted
    assert any("24/6" in note and "fold 5" in note for note in report.notes)


def test_flare22_in_a_wrapper_folder(nnunet_folders, tmp_path):
    raw, _ = nnunet_folders
    make_flare22(tmp_path / "dl" / "FLARE22Train")
    report = convert_dataset("flare22", tmp_path / "dl", 502, None, False, False)
    assert report.exit_code() == 0
    out = raw / "Dataset502_FLARE22"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == converters.FLARE22_LABELS
    assert meta["labels"]["duodenum"] == 12 and meta["labels"]["left kidney"] == 13
    assert (out / "imagesTr" / "FLARE22_Tr_0001_0000.nii.gz").is_file()
    assert (out / "labelsTr" / "FLARE22_Tr_0003.nii.gz").is_file()
    verify_nnunet_dataset(out)


def test_mmwhs_remaps_label_values(nnunet_folders, tmp_path):
    raw, _ = nnunet_folders
    source = make_mmwhs(tmp_path / "mmwhs")
    report = convert_dataset("mmwhs", source, 503, None, False, False)
    assert report.exit_code() == 0
    out = raw / "Dataset503_MMWHS"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == converters.MMWHS_LABELS
    # the published codes, by structure (MM-WHS challenge description)
    codes = {"left ventricle blood cavity": 500, "left ventricle myocardium": 205, "right ventricle blood cavity": 600,
             "left atrium blood cavity": 420, "right atrium blood cavity": 550, "ascending aorta": 820,
             "pulmonary artery": 850}
    for case in report.converted:
        number = case.rsplit("_", 1)[1]
        original = read_array(source / "ct_train" / f"ct_train_{number}_label.nii.gz")
        converted = read_array(out / "labelsTr" / f"{case}.nii.gz")
        assert set(np.unique(converted).tolist()) == set(range(8))
        for structure, code in codes.items():
            assert np.all(converted[original == code] == meta["labels"][structure])
        assert np.all(converted[original == 0] == 0)
    verify_nnunet_dataset(out)


def test_problems_are_reported_by_case_and_the_rest_converted(nnunet_folders, tmp_path, capsys):
    raw, _ = nnunet_folders
    source = make_btcv(tmp_path / "RawData", n=4)
    label_dir = source / "Training" / "label"
    write_image(label_dir / "label0002.nii.gz", fake_label(list(range(1, 14)), 2), spacing=(0.8, 0.8, 3.0))
    write_image(label_dir / "label0003.nii.gz", fake_label([1, 2, 14], 3))
    write_image(source / "Training" / "img" / "img0005.nii.gz", fake_ct(5))  # no label

    report = convert_dataset("btcv", source, 504, None, False, False)

    assert report.exit_code() == 1
    assert report.converted == ["BTCV_0001", "BTCV_0004"]
    reasons = dict(report.skipped)
    assert set(reasons) == {"BTCV_0002", "BTCV_0003", "BTCV_0005"}
    assert "geometry mismatch" in reasons["BTCV_0002"] and "spacing" in reasons["BTCV_0002"]
    assert "unexpected label value(s) [14]" in reasons["BTCV_0003"] and "label0003.nii.gz" in reasons["BTCV_0003"]
    assert "no label file" in reasons["BTCV_0005"]
    printed = capsys.readouterr().out
    assert "BTCV_0002" in printed and "BTCV_0003" in printed
    out = raw / "Dataset504_BTCV"
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    verify_nnunet_dataset(out)


# ---------------------------------------------------------------------------------------------- nnU-Net's converters

def test_amos22_through_nnunet_converter(nnunet_folders, tmp_path):
    raw, pre = nnunet_folders
    source = make_amos(tmp_path / "download" / "amos22")
    write_image(source / "labelsTr" / "amos_0006.nii.gz", fake_label([1, 16], 6))  # unexpected value
    before = tree_digest(source)

    report = convert_dataset("amos22", tmp_path / "download", 512, None, False, True)

    assert report.exit_code() == 1
    assert dict(report.skipped).keys() == {"amos_0006"}
    assert "[16]" in dict(report.skipped)["amos_0006"]
    assert report.converted == ["amos_0001", "amos_0004", "amos_0005", "amos_0008", "amos_0013"]
    out = raw / "Dataset512_AMOS22"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == converters.AMOS_LABELS  # nnU-Net's converter takes the names from the source's dataset.json
    assert meta["numTraining"] == 5 and meta["channel_names"] == {"0": "CT"}
    assert meta["name"] == "Dataset512_AMOS22"
    assert (out / "imagesTs" / "amos_0002_0000.nii.gz").is_file()
    assert not (out / "labelsTr" / "amos_0540.nii.gz").exists()  # MRI stays out
    verify_nnunet_dataset(out)
    assert tree_digest(source) == before
    splits = json.loads((pre / "Dataset512_AMOS22" / "splits_final.json").read_text())
    # the paper split is AMOS's official partition: imagesTr cases train, imagesVa cases validate
    assert splits[5] == {"train": ["amos_0001", "amos_0004", "amos_0005"], "val": ["amos_0008", "amos_0013"]}


def test_brats_through_nnunet_msd_converter(nnunet_folders, tmp_path):
    raw, pre = nnunet_folders
    source = make_brats(tmp_path / "Task01_BrainTumour")
    write_image(source / "imagesTr" / "BRATS_004.nii.gz", np.zeros((4,) + FAKE_SHAPE, np.float32),
                spacing=(1, 1, 1), origin=(0, 0, 0))  # no label
    report = convert_dataset("brats", source, 514, None, False, False, num_processes=1)
    assert report.exit_code() == 1
    assert list(dict(report.skipped)) == ["BRATS_004"]
    assert report.converted == ["BRATS_001", "BRATS_002", "BRATS_003"]
    out = raw / "Dataset514_BraTS"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == converters.BRATS_CHANNELS
    assert meta["labels"] == converters.BRATS_LABELS and meta["numTraining"] == 3
    assert sorted(p.name for p in (out / "imagesTr").iterdir())[:4] == [f"BRATS_001_{c:04d}.nii.gz" for c in range(4)]
    assert (out / "imagesTs" / "BRATS_010_0003.nii.gz").is_file()
    verify_nnunet_dataset(out)


# ---------------------------------------------------------------------------------------------- unlabeled sets

def test_luna16_registers_subsets_only(nnunet_folders, tmp_path):
    raw, _ = nnunet_folders
    source = make_luna16(tmp_path / "LUNA16")

    report = convert_dataset("luna16", source, 516, None, False, False)

    assert report.exit_code() == 1
    assert len(report.converted) == 3
    (name, reason), = report.skipped
    assert "6001.104" in name and ".raw" in reason and "subset1.zip" in reason
    out = raw / "Dataset516_LUNA16"
    assert report.output_dir == out
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "body": 1}
    assert len(list((out / "imagesTr").iterdir())) == 3  # the lung mask in seg-lungs-LUNA16 is not a CT
    assert any("ignored 1 file(s)" in note and "seg-lungs-LUNA16" in note for note in report.notes)
    verify_nnunet_dataset(out)


def test_covid19_leaves_masks_out(nnunet_folders, tmp_path):
    raw, _ = nnunet_folders
    source = tmp_path / "covid19"
    for k in (3, 4):
        write_image(source / "Train" / f"volume-covid19-A-{k:04d}_ct.nii.gz", fake_ct(k))
        write_image(source / "Train" / f"volume-covid19-A-{k:04d}_seg.nii.gz", fake_label([1], k))
    write_image(source / "volume-covid19-A-0005.nii.gz", fake_ct(5))

    report = convert_dataset("covid19", source, 517, None, False, False)

    assert report.exit_code() == 0
    assert len(report.converted) == 3
    assert any("not CT volumes" in note for note in report.notes)
    out = raw / "Dataset517_COVID19"
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3
    verify_nnunet_dataset(out)


# ---------------------------------------------------------------------------------------------- refusals, --force

def test_second_run_refused_without_force_and_first_output_kept(nnunet_folders, tmp_path):
    raw, _ = nnunet_folders
    source = make_flare22(tmp_path / "flare", n=2)
    assert convert_dataset("flare22", source, 505, None, False, False).exit_code() == 0
    out = raw / "Dataset505_FLARE22"
    first = tree_digest(out)

    write_image(source / "images" / "FLARE22_Tr_0003_0000.nii.gz", fake_ct(3))
    write_image(source / "labels" / "FLARE22_Tr_0003.nii.gz", fake_label([1], 3))
    with pytest.raises(UserError, match="already exists.*--force"):
        convert_dataset("flare22", source, 505, None, False, False)
    assert tree_digest(out) == first
    assert not [p for p in raw.iterdir() if p.name.startswith(".")], "staging folder left behind"

    report = convert_dataset("flare22", source, 505, None, True, False)
    assert report.exit_code() == 0 and len(report.converted) == 3
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3


def test_nothing_convertible_leaves_earlier_output(nnunet_folders, tmp_path):
    raw, _ = nnunet_folders
    good = make_flare22(tmp_path / "good", n=1)
    convert_dataset("flare22", good, 506, None, False, False)
    first = tree_digest(raw / "Dataset506_FLARE22")
    bad = make_flare22(tmp_path / "bad", n=1)
    write_image(bad / "labels" / "FLARE22_Tr_0001.nii.gz", fake_label([99], 1))
    report = convert_dataset("flare22", bad, 506, None, True, False)
    assert report.exit_code() == 2 and report.output_dir is None
    assert tree_digest(raw / "Dataset506_FLARE22") == first


def test_refusals(nnunet_folders, tmp_path):
    raw, pre = nnunet_folders
    with pytest.raises(UserError, match="Unknown dataset"):
        convert_dataset("lits", tmp_path, 507, None, False, False)
    with pytest.raises(UserError, match="is not a folder"):
        convert_dataset("btcv", tmp_path / "missing", 507, None, False, False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="Training/img/img0001.nii.gz"):
        convert_dataset("btcv", tmp_path / "empty", 507, None, False, False)
    (raw / "Dataset507_Other").mkdir(parents=True)
    source = make_mmwhs(tmp_path / "mmwhs", n=1)
    with pytest.raises(UserError, match="already used by Dataset507_Other"):
        convert_dataset("mmwhs", source, 507, None, True, False)
    with pytest.raises(UserError, match="overlap"):
        convert_dataset("mmwhs", source, 508, source / "raw", False, False)
    with pytest.raises(UserError, match="unlabeled"):
        convert_dataset("luna16", source, 509, None, False, True)
    (pre / "Dataset510_MMWHS").mkdir(parents=True)
    (pre / "Dataset510_MMWHS" / "splits_final.json").write_text("[]")
    with pytest.raises(UserError, match="splits_final.json already exists"):
        convert_dataset("mmwhs", source, 510, None, False, True)
    assert not (raw / "Dataset510_MMWHS").exists()
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset507_Other"]


def test_raw_root_defaults_to_the_environment_and_must_be_set(tmp_path):
    source = make_mmwhs(tmp_path / "mmwhs", n=1)
    with pytest.raises(UserError, match=r"\$nnUNet_raw is not set"):
        convert_dataset("mmwhs", source, 519, None, False, False)
    report = convert_dataset("mmwhs", source, 519, tmp_path / "explicit", False, False)
    assert report.output_dir == tmp_path / "explicit" / "Dataset519_MMWHS"


# ---------------------------------------------------------------------------------------------- --paper-split

def test_paper_split_too_few_cases_is_reported(nnunet_folders, tmp_path):
    raw, pre = nnunet_folders
    report = convert_dataset("mmwhs", make_mmwhs(tmp_path / "m", n=3), 511, None, False, True)
    assert report.exit_code() == 1
    assert report.skipped == [] and "at least 5 cases" in report.not_done[0]
    assert "skipped" not in report.describe() and "not done: paper split" in report.describe()
    assert not (pre / "Dataset511_MMWHS" / "splits_final.json").exists()
    assert report.converted == ["MMWHS_ct_1001", "MMWHS_ct_1002", "MMWHS_ct_1003"]


def test_force_without_paper_split_points_at_the_old_splits(nnunet_folders, tmp_path):
    raw, pre = nnunet_folders
    source = make_mmwhs(tmp_path / "m", n=5)
    assert convert_dataset("mmwhs", source, 521, None, False, True).exit_code() == 0
    splits = pre / "Dataset521_MMWHS" / "splits_final.json"
    assert splits.is_file()
    report = convert_dataset("mmwhs", source, 521, None, True, False)
    assert report.exit_code() == 0 and report.splits_file is None
    assert any(str(splits) in note and "earlier conversion" in note for note in report.notes)


# ---------------------------------------------------------------------------------------------- the CLI

def test_cli_exit_status(tmp_path, capsys):
    from nnunet_subfore.cli import main

    source = make_mmwhs(tmp_path / "mmwhs", n=2)
    args = ["convert", "mmwhs", str(source), "-d", "520", "--raw-root", str(tmp_path / "raw")]
    assert main(args) == 0
    assert (tmp_path / "raw" / "Dataset520_MMWHS" / "dataset.json").is_file()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


@pytest.mark.parametrize("dataset, make, truncate", [
    ("btcv", make_btcv, ("Training/img/img0002.nii.gz", "Training/label/label0003.nii.gz")),
    ("flare22", make_flare22, ("images/FLARE22_Tr_0002_0000.nii.gz", "labels/FLARE22_Tr_0003.nii.gz")),
])
def test_half_downloaded_images_and_labels_are_skipped_by_name(nnunet_folders, tmp_path, dataset, make, truncate):
    """SimpleITK would read them with zeros for the missing half; convert names them and converts the rest."""
    source = make(tmp_path / "download", n=4)
    for relative in truncate:
        path = source / relative
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    report = convert_dataset(dataset, source, 530 if dataset == "btcv" else 531, None, False, False)
    assert report.exit_code() == 1 and len(report.converted) == 2
    reasons = " ".join(reason for _, reason in report.skipped)
    for relative in truncate:
        assert str(source / relative) in reasons
    assert reasons.count("re-download") == 2 and len(report.skipped) == 2
