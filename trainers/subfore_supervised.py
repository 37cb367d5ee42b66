"""The fine-tuning trainer of every backbone: nnU-Net's supervised training with a SubFore backbone, a
checked ``-pretrained_weights`` and the leakage guard.

nnU-Net's Dice + CE loss, sampling, augmentation, 5-fold splits, sliding-window validation and export
are unchanged. The backbone's trainers (``subfore_finetune``: SwinUNETR and UNETR, ``subfore_cnn``: the
plans' CNN) set the backbone and the few attributes that differ.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from nnunet_subfore.checkpoints import compare_state_dicts, load_checkpoint, transfer_error_message
from nnunet_subfore.data.fingerprint_store import FingerprintStore
from nnunet_subfore.data.fingerprints import (
    CHECKPOINT_KEY,
    OVERLAP_FILE,
    PRETRAINING_FINGERPRINTS_FILE,
    dataset_cases,
    find_shared,
    fingerprint_cases,
    raw_dataset_folder,
    record_fingerprints,
    split_roles,
)
from nnunet_subfore.data.overlap import near_duplicates_of_fold
from nnunet_subfore.errors import UserError
from nnunet_subfore.networks import backbone_of_state_dict
from nnunet_subfore.trainers.subfore_base import SubForeTrainerBase, pretrained_weights_from_argv


class SubForeFinetuneTrainer(SubForeTrainerBase):
    """Supervised training of a SubFore backbone in nnU-Net, from ``-pretrained_weights`` or from scratch (not
    run directly: a backbone's trainer sets :attr:`backbone`).

    Attributes:
        mirroring: test-time mirroring (nnU-Net's default); the demo variants switch it off to stay fast on CPUs.
    """

    mirroring = True

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.mirroring:
            mirror_axes = self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch, mirror_axes

    def initialize(self):
        super().initialize()
        weights = pretrained_weights_from_argv()
        if weights is not None:
            checkpoint = self.check_pretrained_weights(weights)
            self.check_pretraining_overlap(weights, checkpoint)

    def check_pretrained_weights(self, path: Path) -> dict:
        """Fail with the fix, before nnU-Net's loader asserts, when ``path`` does not fit this network."""
        try:
            checkpoint = load_checkpoint(path)
        except UserError as e:
            self.fail(str(e))
        state = checkpoint["network_weights"]
        report = compare_state_dicts(self.plain_network.state_dict(), state)
        if not report.ok:
            self.fail(transfer_error_message(report, path, self.backbone.name, backbone_of_state_dict(state),
                                             self.__class__.__name__, self.trainers_for_backbone()))
        self.print_to_log_file(f"Pretrained weights {path}:\n{report.describe()}")
        return checkpoint

    def check_pretraining_overlap(self, path: Path, checkpoint: dict) -> None:
        """Leakage guard: warn by case name when a validation case of this fold was a pretraining case.

        Compares the content fingerprints that the pretraining run recorded (in ``checkpoint``, else in
        ``pretraining_fingerprints.json`` beside it) with those of this fold's training and validation
        cases, read from the raw dataset; writes ``pretraining_overlap.json`` into the fold folder.
        """
        if self.local_rank != 0:
            return
        from nnunetv2.paths import nnUNet_raw

        out = os.path.join(self.output_folder, OVERLAP_FILE)
        record = checkpoint.get(CHECKPOINT_KEY)
        beside = Path(path).parent / PRETRAINING_FINGERPRINTS_FILE
        if record is None and beside.is_file():
            record = json.loads(beside.read_text(encoding="utf-8"))
        raw = raw_dataset_folder(nnUNet_raw, self.plans_manager.dataset_name)
        reason = None
        if record is None:
            reason = (f"{path} records no fingerprints of its pretraining cases (written by another trainer or an "
                      f"older version, or its raw data was missing)")
        elif raw is None:
            reason = f"the raw dataset {self.plans_manager.dataset_name} is not in nnUNet_raw ({nnUNet_raw})"
        if reason is not None:
            self.print_to_log_file(f"Leakage guard: not checked: {reason}. `nnunet-subfore check-overlap` compares "
                                   f"the raw datasets before training.")
            with open(out, "w") as f:
                json.dump({"checked": False, "reason": reason, "pretrained_weights": str(path)}, f, indent=2)
            return
        train_keys, val_keys = self.do_split()
        try:
            reference = record_fingerprints(record)
            cases = dataset_cases(raw)
            prints = fingerprint_cases({k: v for k, v in cases.items() if k in set(train_keys) | set(val_keys)},
                                       store=FingerprintStore())
        except UserError as e:
            self.print_to_log_file(f"Leakage guard: not checked: {e}")
            return
        report = find_shared(reference, split_roles(prints, train_keys, val_keys), str(record.get("dataset")))
        near_note = self._add_near_duplicates(report, record, cases, val_keys, nnUNet_raw)
        with open(out, "w") as f:
            json.dump({"checked": True, "pretrained_weights": str(path), "fold": self.fold, **report.to_json()},
                      f, indent=2)
        for shared in report.shared_in("validation"):
            how = "" if shared.kind == "exact" else f", a near-duplicate: {shared.kind}, score {shared.score:.3f}"
            message = (f"WARNING: validation case {shared.case} of fold {self.fold} was seen in pretraining (as "
                       f"{', '.join(shared.seen_as)} of {report.reference}{how}): its validation Dice is not an "
                       f"unseen-data result.")
            self.print_to_log_file(message)
            warnings.warn(message, stacklevel=2)
        n_val, n_train = len(report.shared_in("validation")), len(report.shared_in("training"))
        self.print_to_log_file(
            f"Leakage guard: {n_val} of {len(val_keys)} validation and {n_train} training case(s) of fold {self.fold} "
            f"share an image with the pretraining cases of {report.reference} (details: {out}).")
        if near_note:
            self.print_to_log_file(f"Leakage guard: {near_note}; `nnunet-subfore check-overlap` runs it.")

    def _add_near_duplicates(self, report, record: dict, cases: dict, val_keys, raw_root) -> str:
        """Add the validation cases that are near-duplicates (crops, resamples, rescaled copies) of pretraining
        cases to ``report``, when the pretraining raw dataset is on this machine; returns why not, if not."""
        pretrain_raw = raw_dataset_folder(raw_root, str(record.get("dataset")))
        if pretrain_raw is None:
            return f"near-duplicate search not run: the pretraining raw dataset {record.get('dataset')} is not in nnUNet_raw"
        exact = {s.case for s in report.shared_in("validation")}
        try:
            seen = set(record.get("cases", {}))
            pretrain_cases = {k: v for k, v in dataset_cases(pretrain_raw).items() if k in seen}
            shared, skipped, note = near_duplicates_of_fold(
                pretrain_cases, {k: cases[k] for k in val_keys if k in cases and k not in exact}, FingerprintStore())
        except UserError as e:
            return f"near-duplicate search not run: {e}"
        report.shared += shared
        report.near_skipped += [f"validation: {case}" for case in skipped]
        return note
