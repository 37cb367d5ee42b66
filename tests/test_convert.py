"""Converters of public datasets (nnunet_subfore.data.converters) on tiny fake trees in each published layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_subfore.data import converters
from nnunet_subfore.data.converters import ConversionReport, convert_dataset, paper_fold, paper_splits
from nnunet_subfore.errors import UserError

SHAPE = (8, 8, 8)
SPACING = (0.8, 0.8, 2.5)
ORIGIN = (-10.0, 20.0, 5.0)


# ---------------------------------------------------------------------------------------------- helpers

def ct_volume(seed: int) -> np.ndarray:
    """Air around a soft-tissue block, in HU (int16), numpy order (z, y, x)."""
    rng = np.random.default_rng(seed)
    hu = np.full(SHAPE, -1000, dtype=np.int16)
    hu[1:7, 1:7, 1:7] = rng.integers(-100, 200, size=(6, 6, 6))
    return hu


def label_volume(values: Sequence[int], seed: int, dtype=np.uint8) -> np.ndarray:
    """Each of ``values`` present at least once, background elsewhere."""
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, dtype=dtype)
    flat = label.reshape(-1)
    positions = rng.choice(flat.size, size=len(values), replace=False)
    flat[positions] = values
    return label


def write(path: Path, array: np.ndarray, spacing=SPACING, origin=ORIGIN, compress=True) -> Path:
    image = sitk.GetImageFromArray(array, isVector=False)
    dim = image.GetDimension()
    image.SetSpacing(tuple(spacing) + (1.0,) * (dim - len(spacing)))
    image.SetOrigin(tuple(origin) + (0.0,) * (dim - len(origin)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), compress)
    return path


def tree_digest(root: Path) -> Dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


class _ThreadContext:
    """Stands in for ``multiprocessing.get_context("spawn")``: same checks, threads instead of fresh
    interpreters (each spawned worker re-imports torch and nnU-Net: ~2.5 s per call on 2 cores)."""

    @staticmethod
    def Pool(processes=None):
        from multiprocessing.pool import ThreadPool

        return ThreadPool(processes)


def verify(folder: Path, in_process: bool = True) -> None:
    """nnU-Net's own integrity check (what ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` runs)."""
    import multiprocessing
    from unittest import mock

    from nnunetv2.experiment_planning import verify_dataset_integrity as module

    if not in_process:
        module.verify_dataset_integrity(str(folder), num_processes=1)
        return
    shim = mock.Mock(wraps=multiprocessing, get_context=lambda method=None: _ThreadContext)
    with mock.patch.object(module, "multiprocessing", shim):
        module.verify_dataset_integrity(str(folder), num_processes=1)


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    raw, pre, res = tmp_path / "nnUNet_raw", tmp_path / "nnUNet_preprocessed", tmp_path / "nnUNet_results"
    for name, folder in (("nnUNet_raw", raw), ("nnUNet_preprocessed", pre), ("nnUNet_results", res)):
        monkeypatch.setenv(name, str(folder))
    return raw, pre


def make_btcv(root: Path, n: int = 6) -> Path:
    """Synapse RawData layout: Training/img/img0001.nii.gz + Training/label/label0001.nii.gz."""
    values = list(range(1, 14))
    for k in range(1, n + 1):
        write(root / "Training" / "img" / f"img{k:04d}.nii.gz", ct_volume(k))
        write(root / "Training" / "label" / f"label{k:04d}.nii.gz", label_volume(values, k))
    write(root / "Testing" / "img" / "img0061.nii.gz", ct_volume(61))
    return root


def make_flare22(root: Path, n: int = 3) -> Path:
    for k in range(1, n + 1):
        write(root / "images" / f"FLARE22_Tr_{k:04d}_0000.nii.gz", ct_volume(k))
        write(root / "labels" / f"FLARE22_Tr_{k:04d}.nii.gz", label_volume(list(range(1, 14)), k))
    return root


MMWHS_VALUES = [205, 420, 500, 550, 600, 820, 850]


def make_mmwhs(root: Path, n: int = 3) -> Path:
    for k in range(1001, 1001 + n):
        write(root / "ct_train" / f"ct_train_{k}_image.nii.gz", ct_volume(k))
        # MM-WHS stores its labels as floats; values are the published intensity codes
        write(root / "ct_train" / f"ct_train_{k}_label.nii.gz", label_volume(MMWHS_VALUES, k, dtype=np.float32))
    return root


def make_amos(root: Path) -> Path:
    """Post-challenge AMOS: dataset.json with training/validation/test, imagesTr/Va/Ts, labelsTr/Va."""
    meta = {"name": "AMOS", "labels": {str(v): k for k, v in converters.AMOS_LABELS.items()},
            "training": [], "validation": [], "test": []}
    for ident, key, images, labels in (
        (1, "training", "imagesTr", "labelsTr"), (4, "training", "imagesTr", "labelsTr"),
        (5, "training", "imagesTr", "labelsTr"), (6, "training", "imagesTr", "labelsTr"),
        (540, "training", "imagesTr", "labelsTr"),  # MRI: not part of the CT task
        (8, "validation", "imagesVa", "labelsVa"), (13, "validation", "imagesVa", "labelsVa"),
    ):
        name = f"amos_{ident:04d}.nii.gz"
        write(root / images / name, ct_volume(ident))
        write(root / labels / name, label_volume(list(range(1, 16)), ident))
        meta[key].append({"image": f"./{images}/{name}", "label": f"./{labels}/{name}"})
    write(root / "imagesTs" / "amos_0002.nii.gz", ct_volume(2))
    meta["test"].append({"image": "./imagesTs/amos_0002.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_brats(root: Path, n: int = 3) -> Path:
    """MSD Task01_BrainTumour: 4D images (4 MRI channels), 3D labels, dataset.json with modality."""
    meta = {"name": "BRATS", "modality": dict(converters.BRATS_CHANNELS),
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            "numTraining": n, "numTest": 1, "training": [], "test": ["./imagesTs/BRATS_010.nii.gz"]}
    rng = np.random.default_rng(0)
    for k in range(1, n + 1):
        name = f"BRATS_{k:03d}.nii.gz"
        write(root / "imagesTr" / name, rng.normal(size=(4,) + SHAPE).astype(np.float32), spacing=(1, 1, 1), origin=(0, 0, 0))
        write(root / "labelsTr" / name, label_volume([1, 2, 3], k), spacing=(1, 1, 1), origin=(0, 0, 0))
        meta["training"].append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    write(root / "imagesTs" / "BRATS_010.nii.gz", rng.normal(size=(4,) + SHAPE).astype(np.float32),
          spacing=(1, 1, 1), origin=(0, 0, 0))
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"macOS resource fork, not an image")
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


# ---------------------------------------------------------------------------------------------- labelled sets

def test_btcv_converts_with_paper_split(nnunet_env, tmp_path):
    raw, pre = nnunet_env
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
    verify(out, in_process=False)  # once as nnU-Net runs it, in spawned worker processes
    assert tree_digest(source) == before, "the source was modified"

    splits = json.loads((pre / "Dataset501_BTCV" / "splits_final.json").read_text())
    assert json.loads((out / "splits_final.json").read_text()) == splits
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    assert len(splits) == 6
    assert splits[:5] == [{"train": list(s["train"]), "val": list(s["val"])}
                          for s in generate_crossval_split(report.converted, seed=12345, n_splits=5)]
    assert (len(splits[5]["train"]), len(splits[5]["val"])) == (5, 1)  # paper 24/6: 20 % validation
    assert sorted(splits[5]["train"] + splits[5]["val"]) == report.converted
    assert any("24/6" in note and "fold 5" in note for note in report.notes)


def test_flare22_in_a_wrapper_folder(nnunet_env, tmp_path):
    raw, _ = nnunet_env
    make_flare22(tmp_path / "dl" / "FLARE22Train")
    report = convert_dataset("flare22", tmp_path / "dl", 502, None, False, False)
    assert report.exit_code() == 0
    out = raw / "Dataset502_FLARE22"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == converters.FLARE22_LABELS
    assert meta["labels"]["duodenum"] == 12 and meta["labels"]["left kidney"] == 13
    assert (out / "imagesTr" / "FLARE22_Tr_0001_0000.nii.gz").is_file()
    assert (out / "labelsTr" / "FLARE22_Tr_0003.nii.gz").is_file()
    verify(out)


def test_mmwhs_remaps_label_values(nnunet_env, tmp_path):
    raw, _ = nnunet_env
    source = make_mmwhs(tmp_path / "mmwhs")
    report = convert_dataset("mmwhs", source, 503, None, False, False)
    assert report.exit_code() == 0
    out = raw / "Dataset503_MMWHS"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == converters.MMWHS_LABELS
    for case in report.converted:
        number = case.rsplit("_", 1)[1]
        original = read_labels(source / "ct_train" / f"ct_train_{number}_label.nii.gz")
        converted = read_labels(out / "labelsTr" / f"{case}.nii.gz")
        assert set(np.unique(converted).tolist()) == set(range(8))
        for value, expected in converters.MMWHS_SOURCE_VALUES.items():
            assert np.all(converted[original == value] == expected)
    assert converters.MMWHS_SOURCE_VALUES[500] == 1 and converters.MMWHS_SOURCE_VALUES[850] == 7
    verify(out)


def test_problems_are_reported_by_case_and_the_rest_converted(nnunet_env, tmp_path, capsys):
    raw, _ = nnunet_env
    source = make_btcv(tmp_path / "RawData", n=4)
    label_dir = source / "Training" / "label"
    write(label_dir / "label0002.nii.gz", label_volume(list(range(1, 14)), 2), spacing=(0.8, 0.8, 3.0))
    write(label_dir / "label0003.nii.gz", label_volume([1, 2, 14], 3))
    write(source / "Training" / "img" / "img0005.nii.gz", ct_volume(5))  # no label

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
    verify(out)


def test_second_run_refused_without_force_and_first_output_kept(nnunet_env, tmp_path):
    raw, _ = nnunet_env
    source = make_flare22(tmp_path / "flare", n=2)
    assert convert_dataset("flare22", source, 505, None, False, False).exit_code() == 0
    out = raw / "Dataset505_FLARE22"
    first = tree_digest(out)

    write(source / "images" / "FLARE22_Tr_0003_0000.nii.gz", ct_volume(3))
    write(source / "labels" / "FLARE22_Tr_0003.nii.gz", label_volume([1], 3))
    with pytest.raises(UserError, match="already exists.*--force"):
        convert_dataset("flare22", source, 505, None, False, False)
    assert tree_digest(out) == first
    assert not [p for p in raw.iterdir() if p.name.startswith(".")], "staging folder left behind"

    report = convert_dataset("flare22", source, 505, None, True, False)
    assert report.exit_code() == 0 and len(report.converted) == 3
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3


def test_nothing_convertible_leaves_earlier_output(nnunet_env, tmp_path):
    raw, _ = nnunet_env
    good = make_flare22(tmp_path / "good", n=1)
    convert_dataset("flare22", good, 506, None, False, False)
    first = tree_digest(raw / "Dataset506_FLARE22")
    bad = make_flare22(tmp_path / "bad", n=1)
    write(bad / "labels" / "FLARE22_Tr_0001.nii.gz", label_volume([99], 1))
    report = convert_dataset("flare22", bad, 506, None, True, False)
    assert report.exit_code() == 2
    assert tree_digest(raw / "Dataset506_FLARE22") == first


def test_refusals(nnunet_env, tmp_path):
    raw, pre = nnunet_env
    with pytest.raises(UserError, match="Unknown dataset"):
        convert_dataset("lits", tmp_path, 507, None, False, False)
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


def test_paper_split_too_few_cases_is_reported(nnunet_env, tmp_path):
    raw, pre = nnunet_env
    report = convert_dataset("mmwhs", make_mmwhs(tmp_path / "m", n=3), 511, None, False, True)
    assert report.exit_code() == 1
    assert "at least 5 cases" in dict(report.skipped)["paper split"]
    assert not (pre / "Dataset511_MMWHS" / "splits_final.json").exists()


@pytest.mark.parametrize("paper", [(24, 6), (100, 31), (14, 6), (240, 120), (388, 96)])
def test_paper_fold_matches_the_paper_counts(paper):
    ids = [f"case_{k:03d}" for k in range(sum(paper))]
    fold, note = paper_fold(ids, paper)
    assert (len(fold["train"]), len(fold["val"])) == paper
    assert sorted(fold["train"] + fold["val"]) == ids
    assert "as in the paper" in note


def test_paper_fold_keeps_the_validation_fraction_on_smaller_sets():
    fold, note = paper_fold([f"FLARE22_Tr_{k:04d}" for k in range(1, 51)], (100, 31))
    assert (len(fold["train"]), len(fold["val"])) == (38, 12)  # 50 * 31/131 = 11.8
    assert "100/31" in note and "validation fraction" in note
    tiny, _ = paper_fold(["a", "b"], (24, 6))
    assert len(tiny["val"]) == 1 and sorted(tiny["train"] + tiny["val"]) == ["a", "b"]
    splits, _ = paper_splits([f"c{k}" for k in range(7)], (14, 6))
    assert len(splits) == 6


# ---------------------------------------------------------------------------------------------- nnU-Net's converters

def test_amos22_through_nnunet_converter(nnunet_env, tmp_path):
    raw, pre = nnunet_env
    source = make_amos(tmp_path / "download" / "amos22")
    write(source / "labelsTr" / "amos_0006.nii.gz", label_volume([1, 16], 6))  # unexpected value
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
    assert (out / "imagesTs" / "amos_0002_0000.nii.gz").is_file()
    assert not (out / "labelsTr" / "amos_0540.nii.gz").exists()  # MRI stays out
    verify(out)
    assert tree_digest(source) == before
    splits = json.loads((pre / "Dataset512_AMOS22" / "splits_final.json").read_text())
    assert splits[5] == {"train": ["amos_0001", "amos_0004", "amos_0005"], "val": ["amos_0008", "amos_0013"]}


def test_amos22_layout_errors(nnunet_env, tmp_path):
    source = make_amos(tmp_path / "amos22")
    (source / "dataset.json").write_text(json.dumps({"labels": {"0": "background"}}))
    with pytest.raises(UserError, match="lacks"):
        convert_dataset("amos22", source, 513, None, False, False)


def test_brats_through_nnunet_msd_converter(nnunet_env, tmp_path):
    raw, pre = nnunet_env
    source = make_brats(tmp_path / "Task01_BrainTumour")
    write(source / "imagesTr" / "BRATS_004.nii.gz", np.zeros((4,) + SHAPE, np.float32), spacing=(1, 1, 1), origin=(0, 0, 0))
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
    verify(out)


def test_brats_wrong_modalities_refused(nnunet_env, tmp_path):
    source = make_brats(tmp_path / "Task01_BrainTumour", n=1)
    meta = json.loads((source / "dataset.json").read_text())
    meta["modality"] = {"0": "MRI"}
    (source / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="modalities"):
        convert_dataset("brats", source, 515, None, False, False)


# ---------------------------------------------------------------------------------------------- unlabeled sets

def make_luna16(root: Path) -> Path:
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.{}"
    for subset, ids in (("subset0", (101, 102)), ("subset1", (103, 104))):
        for k in ids:
            write(root / subset / f"{uid.format(k)}.mhd", ct_volume(k), compress=False)
    (root / "subset1" / f"{uid.format(104)}.raw").unlink()
    write(root / "seg-lungs-LUNA16" / f"{uid.format(101)}.mhd", label_volume([3, 4], 1), compress=False)
    (root / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    return root


def test_luna16_registers_subsets_only(nnunet_env, tmp_path):
    raw, _ = nnunet_env
    source = make_luna16(tmp_path / "LUNA16")
    listing = converters.luna16_sources(source)
    assert [p.parent.name for p in listing.files] == ["subset0", "subset0", "subset1"]
    assert [p.parent.name for p in listing.ignored] == ["seg-lungs-LUNA16"]

    report = convert_dataset("luna16", source, 516, None, False, False)

    assert report.exit_code() == 1
    assert len(report.converted) == 3
    (name, reason), = report.skipped
    assert "6001.104" in name and ".raw" in reason and "subset1.zip" in reason
    out = raw / "Dataset516_LUNA16"
    assert report.output_dir == out
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "body": 1}
    verify(out)


def test_covid19_leaves_masks_out(nnunet_env, tmp_path):
    raw, _ = nnunet_env
    source = tmp_path / "covid19"
    for k in (3, 4):
        write(source / "Train" / f"volume-covid19-A-{k:04d}_ct.nii.gz", ct_volume(k))
        write(source / "Train" / f"volume-covid19-A-{k:04d}_seg.nii.gz", label_volume([1], k))
    write(source / f"volume-covid19-A-0005.nii.gz", ct_volume(5))

    report = convert_dataset("covid19", source, 517, None, False, False)

    assert report.exit_code() == 0
    assert len(report.converted) == 3
    assert any("not CT volumes" in note for note in report.notes)
    verify(raw / "Dataset517_COVID19")
    assert converters.covid19_sources(source).ignored == sorted(source.rglob("*_seg.nii.gz"))


def test_pretraining_sources_pool_the_layout_checks(tmp_path):
    luna = make_luna16(tmp_path / "LUNA16")
    btcv = make_btcv(tmp_path / "RawData", n=2)
    covid = tmp_path / "covid"
    write(covid / "volume-covid19-A-0003.nii.gz", ct_volume(3))
    files, problems, ignored = converters.pretraining_sources(btcv=btcv, covid19=covid, luna16=luna)
    assert [p.name for p in files[:3]] == ["img0001.nii.gz", "img0002.nii.gz", "volume-covid19-A-0003.nii.gz"]
    assert len(files) == 6 and len(problems) == 1 and len(ignored) == 1
    with pytest.raises(UserError, match="known"):
        converters.pretraining_sources(lits=tmp_path)


def test_unlabeled_layout_errors(nnunet_env, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="subset0"):
        converters.luna16_sources(tmp_path / "empty")
    with pytest.raises(UserError, match="NIfTI"):
        convert_dataset("covid19", tmp_path / "empty", 518, None, False, False)


def test_report_exit_codes():
    assert ConversionReport("btcv").exit_code() == 2
    assert ConversionReport("btcv", converted=["a"]).exit_code() == 0
    assert ConversionReport("btcv", converted=["a"], skipped=[("b", "why")]).exit_code() == 1


def test_cli_exit_status(tmp_path, monkeypatch, capsys):
    from nnunet_subfore.cli import main

    monkeypatch.delenv("nnUNet_raw", raising=False)
    source = make_mmwhs(tmp_path / "mmwhs", n=2)
    args = ["convert", "mmwhs", str(source), "-d", "520", "--raw-root", str(tmp_path / "raw")]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


def test_label_values_and_remap():
    values, problem = converters.label_values(np.array([[[0, 500]], [[850, 205]]], dtype=np.float32), slab=1)
    assert problem is None and values.tolist() == [0, 205, 500, 850]
    assert converters.label_values(np.array([[[0.5]]], dtype=np.float32))[1] == "label contains non-integer values"
    assert converters.label_values(np.array([[[np.nan]]], dtype=np.float32))[1] == "label contains NaN/inf values"
    assert converters.label_values(np.array([[[-1, 70000]]], dtype=np.int32))[0].tolist() == [-1, 70000]
    assert converters.label_values(np.array([[[True, False]]]))[0].tolist() == [0, 1]
    remapped = converters.remap_labels(np.array([[[0, 500, 850]]], dtype=np.float32), converters.MMWHS_SOURCE_VALUES)
    assert remapped.dtype == np.uint8 and remapped.tolist() == [[[0, 1, 7]]]
    assert converters.remap_labels(np.array([[[True, False]]]), {0: 0, 1: 1}).tolist() == [[[1, 0]]]
