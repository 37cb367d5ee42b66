"""Continued pretraining: a pretraining run that starts from a checkpoint (ours or nnssl's) instead of a fresh network.

    nnUNetv2_train 601 3d_fullres 0 -tr SubForeCNNPretrainTrainer -p FromNNSSL -pretrained_weights nnssl.pth

nnU-Net's ``-pretrained_weights`` loader copies every tensor but the output heads (``.seg_layers.``) and asserts
that each one exists with the network's shape. A pretraining network's heads reconstruct the input, as the
checkpoint's did (an MAE's output channels are its input channels), so continued pretraining keeps them too
where they fit; this module works out which tensors that is, checks the rest before nnU-Net's loader asserts, and
keeps the fingerprints of every earlier pretraining set, so that the leakage guard of a later fine-tuning run
compares against all the images the weights have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from nnunet_subfore.checkpoints import HEAD_MARKER, TransferReport, compare_state_dicts
from nnunet_subfore.data.fingerprints import CHECKPOINT_KEY as FINGERPRINTS_KEY

#: The file a continued pretraining run writes into its fold folder: what it started from and what was loaded.
CONTINUATION_FILE = "continued_pretraining.json"


def continuation_weights(network_state: Mapping[str, torch.Tensor],
                         checkpoint_state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], TransferReport]:
    """The state dict a pretraining network continues from, and the account of every key.

    Every tensor that nnU-Net's loader copies comes from the checkpoint; so do the output heads whose shape fits
    (the report lists them under ``loaded``; heads that do not fit stay the network's own, under ``skipped_head``).
    ``report.ok`` is False when nnU-Net's loader would refuse the checkpoint (a tensor missing or of another shape).
    """
    report = compare_state_dicts(dict(network_state), dict(checkpoint_state))
    fitting_heads = [k for k in report.skipped_head
                     if k in checkpoint_state and tuple(checkpoint_state[k].shape) == tuple(network_state[k].shape)]
    report.loaded += fitting_heads
    report.skipped_head = [k for k in report.skipped_head if k not in set(fitting_heads)]
    state = dict(network_state)
    state.update({k: checkpoint_state[k] for k in report.loaded})
    return state, report


def continuation_error_message(report: TransferReport, checkpoint: Path, trainer: str, dataset: str,
                               plans: str) -> str:
    """Why ``checkpoint`` cannot start a pretraining run of ``trainer`` under ``plans``, with the fix."""
    return (
        f"Continued pretraining from {checkpoint}: its network is not the one {trainer} builds from the plans "
        f"{plans!r} of {dataset}. Every tensor but the output heads must fit (nnU-Net's -pretrained_weights loader "
        f"asserts otherwise):\n{report.describe()}\n"
        f"Plan the dataset for the checkpoint's network and pretraining spacing, then train with those plans:\n"
        f"  nnunet-subfore plans -d {dataset} --from-checkpoint {checkpoint} --plans-name FromCheckpoint\n"
        f"  nnUNetv2_preprocess -d {dataset} -plans_name FromCheckpoint -c 3d_fullres\n"
        f"  nnUNetv2_train {dataset} 3d_fullres FOLD -tr {trainer} -p FromCheckpoint -pretrained_weights {checkpoint}\n"
        f"(another number of input channels, or a checkpoint that lacks the aliases nnU-Net's networks hold: "
        f"write a fitting copy with `nnunet-subfore adapt-checkpoint {checkpoint} --plans PLANS.json -c 3d_fullres "
        f"-tr {trainer} --num-input-channels N -o fitted.pth`)."
    )


def earlier_fingerprints(checkpoint: Mapping) -> List[dict]:
    """The fingerprint records of every pretraining set behind ``checkpoint``: its own and the ones it continued
    from (a checkpoint without any, e.g. nnssl's, gives none)."""
    record = checkpoint.get(FINGERPRINTS_KEY)
    if not record:
        return []
    own = {k: v for k, v in record.items() if k != "earlier"}
    return [own, *record.get("earlier", [])]


def continuation_record(checkpoint_path: Path, checkpoint: Mapping, report: TransferReport) -> dict:
    """What :data:`CONTINUATION_FILE` holds: the checkpoint, what was loaded and what was not, its adaptation
    plan's pretraining dataset (nnssl's) and the fingerprints of the sets it was pretrained on."""
    heads_loaded = [k for k in report.loaded if HEAD_MARKER in k]
    plan = checkpoint.get("nnssl_adaptation_plan") or {}
    pretrain_plan: Optional[dict] = plan.get("pretrain_plan") if isinstance(plan, dict) else None
    return {
        "pretrained_weights": str(checkpoint_path),
        "loaded": len(report.loaded),
        "output_heads_loaded": heads_loaded,
        "output_heads_fresh": list(report.skipped_head),
        "in_checkpoint_not_in_network": len(report.unused),
        "pretrained_on": (pretrain_plan or {}).get("dataset_name"),
        "earlier_fingerprints": earlier_fingerprints(checkpoint),
    }
