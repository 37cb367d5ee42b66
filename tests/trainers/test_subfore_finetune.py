"""The fine-tuning trainers' leakage guard, fast: a pretraining run's recorded fingerprints against a fold's cases.

The trainers are made without nnU-Net's __init__: the methods under test read only the attributes set here.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_subfore.checkpoints import load_checkpoint
from nnunet_subfore.data.fingerprints import CHECKPOINT_KEY, OVERLAP_FILE, PRETRAINING_FINGERPRINTS_FILE
from nnunet_subfore.data.phantoms import write_labelled_dataset
from nnunet_subfore.trainers.subfore_finetune import SubForeSwinUNETRTrainer
from nnunet_subfore.trainers.subfore_pretrain import SubForePretrainTrainer

SHAPE = (16, 24, 24)


def _bare(cls, dataset_name, output_folder, train_keys, val_keys, log):
    trainer = cls.__new__(cls)
    trainer.plans_manager = PlansManager({"plans_name": "nnUNetPlans", "dataset_name": dataset_name,
                                          "configurations": {}})
    trainer.local_rank, trainer.fold, trainer.is_ddp = 0, 0, False
    trainer.output_folder = str(output_folder)
    trainer.device = torch.device("cpu")
    # nnU-Net's first do_split returns numpy strings (np.array(identifiers)[idx]): a safe load refuses those
    trainer.do_split = lambda: ([np.str_(k) for k in train_keys], [np.str_(k) for k in val_keys])
    trainer.print_to_log_file = lambda *args, **kwargs: log.append(" ".join(map(str, args)))
    return trainer


@pytest.fixture
def raw(tmp_path, monkeypatch):
    """Pretraining set Dataset801_Pre (3 phantoms); downstream Dataset802_Down (4 others), whose case
    phantom_003 is pretraining case phantom_000 stored as .mha-read float32 under the downstream's name."""
    raw = tmp_path / "raw"
    pre = write_labelled_dataset(raw, 801, "Pre", 3, seed=1, shape=SHAPE)
    down = write_labelled_dataset(raw, 802, "Down", 4, seed=2, shape=SHAPE)
    via_mha = tmp_path / "copy.mha"
    sitk.WriteImage(sitk.ReadImage(str(pre / "imagesTr" / "phantom_000_0000.nii.gz")), str(via_mha))
    sitk.WriteImage(sitk.Cast(sitk.ReadImage(str(via_mha)), sitk.sitkFloat32),
                    str(down / "imagesTr" / "phantom_003_0000.nii.gz"), True)
    import nnunetv2.paths

    monkeypatch.setattr(nnunetv2.paths, "nnUNet_raw", str(raw))
    return raw


def _pretraining_record(raw, tmp_path):
    log = []
    folder = tmp_path / "pretrain_fold_0"
    folder.mkdir()
    trainer = _bare(SubForePretrainTrainer, "Dataset801_Pre", folder, ["phantom_000", "phantom_001"], ["phantom_002"], log)
    trainer.record_pretraining_fingerprints()
    assert (folder / PRETRAINING_FINGERPRINTS_FILE).is_file()
    torch.save({"network_weights": {}, **trainer.checkpoint_extras()}, folder / "checkpoint_final.pth")
    record = load_checkpoint(folder / "checkpoint_final.pth")[CHECKPOINT_KEY]  # the safe loader takes it
    assert sorted(record["cases"]) == ["phantom_000", "phantom_001", "phantom_002"] and record["validated_on"] == ["phantom_002"]
    return record, folder


def _finetune(raw, tmp_path, checkpoint, val_keys):
    log = []
    folder = tmp_path / "finetune_fold_0"
    folder.mkdir(exist_ok=True)
    keys = ["phantom_000", "phantom_001", "phantom_002", "phantom_003"]
    trainer = _bare(SubForeSwinUNETRTrainer, "Dataset802_Down", folder, [k for k in keys if k not in val_keys],
                    val_keys, log)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.check_pretraining_overlap(tmp_path / "pretrain_fold_0" / "checkpoint_final.pth", checkpoint)
    return json.loads((folder / OVERLAP_FILE).read_text()), log, [str(w.message) for w in caught]


def test_a_validation_case_seen_in_pretraining_under_another_name_and_format_is_named(raw, tmp_path):
    record, _ = _pretraining_record(raw, tmp_path)
    result, log, warned = _finetune(raw, tmp_path, {CHECKPOINT_KEY: record}, ["phantom_003"])
    assert result["checked"] is True and result["cases_checked"] == {"validation": 1, "training": 3}
    assert result["shared"] == [
        {"case": "phantom_003", "role": "validation", "seen_in_pretraining_as": ["phantom_000"], "kind": "exact",
         "score": 1.0}]
    assert any("validation case phantom_003" in w and "phantom_000" in w for w in warned)
    assert any("WARNING: validation case phantom_003" in line for line in log)


def test_a_shared_training_case_is_recorded_without_a_warning(raw, tmp_path):
    record, folder = _pretraining_record(raw, tmp_path)
    # the fingerprints come from the json beside the checkpoint when the checkpoint has none
    result, log, warned = _finetune(raw, tmp_path, {}, ["phantom_000"])
    assert [s["role"] for s in result["shared"]] == ["training"] and not warned


def test_no_shared_case_no_warning(raw, tmp_path):
    record, _ = _pretraining_record(raw, tmp_path)
    (raw / "Dataset802_Down" / "imagesTr" / "phantom_003_0000.nii.gz").unlink()
    (raw / "Dataset802_Down" / "labelsTr" / "phantom_003.nii.gz").unlink()
    result, log, warned = _finetune(raw, tmp_path, {CHECKPOINT_KEY: record}, ["phantom_001"])
    assert result["checked"] is True and result["shared"] == [] and not warned


def test_without_recorded_fingerprints_the_check_says_so(raw, tmp_path):
    (tmp_path / "pretrain_fold_0").mkdir()
    result, log, warned = _finetune(raw, tmp_path, {}, ["phantom_003"])
    assert result["checked"] is False and "records no fingerprints" in result["reason"]
    assert any("not checked" in line for line in log)


def test_a_validation_case_cropped_from_a_pretraining_case_is_named_as_a_near_duplicate(tmp_path, monkeypatch):
    """The warning also finds what public collections republish: here a z-crop of a pretraining scan."""
    raw = tmp_path / "raw"
    field = dict(shape=(24, 72, 72), spacing=(5.0, 2.0, 2.0))  # 120 x 144 x 144 mm: the near search's field
    pre = write_labelled_dataset(raw, 801, "Pre", 3, seed=1, **field)
    down = write_labelled_dataset(raw, 802, "Down", 4, seed=2, **field)
    for kind, suffix in (("images", "_0000"), ("labels", "")):
        source = sitk.ReadImage(str(pre / f"{kind}Tr" / f"phantom_001{suffix}.nii.gz"))
        sitk.WriteImage(source[:, :, 4:18], str(down / f"{kind}Tr" / f"phantom_003{suffix}.nii.gz"))
    import nnunetv2.paths

    monkeypatch.setattr(nnunetv2.paths, "nnUNet_raw", str(raw))
    record, _ = _pretraining_record(raw, tmp_path)
    result, log, warned = _finetune(raw, tmp_path, {CHECKPOINT_KEY: record}, ["phantom_002", "phantom_003"])
    assert [(s["case"], s["kind"], s["seen_in_pretraining_as"]) for s in result["shared"]] == [
        ("phantom_003", "crop", ["phantom_001"])]
    assert result["shared"][0]["score"] >= 0.95 and result["near_search_skipped"] == []
    assert any("phantom_003" in w and "near-duplicate: crop" in w for w in warned)
