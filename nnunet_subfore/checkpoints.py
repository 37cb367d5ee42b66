"""Checkpoint transfer between pretraining and fine-tuning networks.

nnU-Net's ``-pretrained_weights`` loader demands every key of the new network except those
containing ``.seg_layers.`` to exist in the checkpoint with the same shape. This module checks that
*before* the loader runs (so users get a message with the fix instead of an assertion from inside
nnU-Net), and adapts checkpoints for what the loader cannot take: more input channels and another
UNETR patch size. Nothing here loads partially or silently: every key is accounted for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from nnunet_subfore.errors import UserError
from nnunet_subfore.networks import (
    CNN_BACKBONE,
    POSITION_EMBEDDING_KEY,
    STEM_KEYS,
    TrainerNetwork,
    backbone_of_state_dict,
    token_grid,
)
from nnunet_subfore.data.fingerprints import CHECKPOINT_KEY as FINGERPRINTS_KEY
from nnunet_subfore.adaptation_plan import CITATIONS_KEY
from nnunet_subfore.transfer import (
    TRANSFER_RECORD_KEY,
    alias_groups,
    complete_aliases,
    count_groups,
    encoder_key_prefixes,
    encoder_only_weights,
    is_encoder_key,
)

HEAD_MARKER = ".seg_layers."


@dataclass
class TransferReport:
    """What a transfer from a checkpoint into a network does, key by key."""

    loaded: List[str] = field(default_factory=list)
    skipped_head: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)
    adapted: List[str] = field(default_factory=list)
    fresh: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched

    def describe(self) -> str:
        lines = [
            f"carried over: {len(self.loaded)} tensors {_groups(self.loaded)}"
            + (f" ({len(self.adapted)} adapted: {', '.join(self.adapted)})" if self.adapted else ""),
        ]
        if self.fresh:
            lines.append(f"freshly initialized (the target network's own initialization): {len(self.fresh)} tensors "
                         f"{_groups(self.fresh)}")
        lines += [
            f"not carried over (output head, retrained): {len(self.skipped_head)} tensors"
            + (f" ({', '.join(self.skipped_head)})" if self.skipped_head else ""),
        ]
        if self.unused:
            lines.append(f"in the checkpoint but not in the network: {len(self.unused)} tensors")
        if self.missing:
            lines.append(f"MISSING from the checkpoint: {len(self.missing)} tensors, e.g. {self.missing[:3]}")
        if self.mismatched:
            shown = "; ".join(f"{k}: checkpoint {tuple(a)} vs network {tuple(b)}" for k, a, b in self.mismatched[:3])
            lines.append(f"SHAPE MISMATCH: {len(self.mismatched)} tensors, e.g. {shown}")
        return "\n".join(lines)


def _groups(keys: Sequence[str]) -> str:
    """``[group n, ...]`` (:func:`transfer.count_groups`) for a summary line."""
    return "[" + ", ".join(f"{group} {n}" for group, n in count_groups(keys).items()) + "]"


def compare_state_dicts(network_state: Dict[str, torch.Tensor], checkpoint_state: Dict[str, torch.Tensor]) -> TransferReport:
    """Account for every key the way nnU-Net's ``load_pretrained_weights`` treats it."""
    report = TransferReport()
    for key, value in network_state.items():
        if HEAD_MARKER in key:
            report.skipped_head.append(key)
        elif key not in checkpoint_state:
            report.missing.append(key)
        elif tuple(checkpoint_state[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(checkpoint_state[key].shape), tuple(value.shape)))
        else:
            report.loaded.append(key)
    report.unused = [k for k in checkpoint_state if k not in network_state and HEAD_MARKER not in k]
    return report


def _numpy_scalar_globals() -> list:
    """What nnU-Net checkpoints need besides tensors: numpy scalars and dtypes (in the logged losses)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    kinds = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)
    return [scalar, np.dtype] + [type(np.dtype(kind)) for kind in kinds]


def load_checkpoint(path: Path, mmap: bool = False) -> dict:
    """Load an nnU-Net checkpoint on the CPU without running code from the file.

    ``torch.load(weights_only=True)`` with only numpy scalars and dtypes allowed besides tensors and
    plain values (nnU-Net's logging part holds numpy scalars). A pickle that asks for anything else
    (a class, a function: code a downloaded file could run) is refused before any of it runs.

    Args:
        path: the ``.pth`` file.
        mmap: map the tensors instead of reading them (to look at a checkpoint's plain entries cheaply).

    Raises:
        UserError: missing, unreadable, refused, or not an nnU-Net checkpoint.
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint {path} does not exist.")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        unsafe = _unsafe_globals(path)
        raise UserError(
            f"Refused {path}: it asks to run or build {', '.join(unsafe) if unsafe else 'objects'} beyond tensors and "
            f"plain values, and nothing of it was executed. nnU-Net checkpoints need no such objects: get the "
            f"checkpoint from its source again, or load it yourself only if you trust where it came from."
        ) from e
    except Exception as e:  # torch raises many types for corrupt files
        raise UserError(f"Cannot read checkpoint {path}: {e}. Is it an nnU-Net checkpoint (.pth)? If the file "
                        f"was copied or downloaded, it may be incomplete: copy it again.") from e
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise UserError(
            f"{path} is not an nnU-Net checkpoint (no 'network_weights'). Pass the checkpoint_final.pth of a "
            f"SubFore pretraining run."
        )
    return checkpoint


def _unsafe_globals(path: Path) -> List[str]:
    """The globals a checkpoint's pickle names that are not allowed (read without unpickling)."""
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_scalar_globals()}
        return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
    except Exception:  # a corrupt archive: nothing more to say
        return []


def transfer_error_message(
    report: TransferReport,
    checkpoint_path: Path,
    network_backbone: str,
    checkpoint_backbone: Optional[str],
    trainer_name: str,
    trainers_for_backbone: Mapping[str, Tuple[str, str]],
) -> str:
    """The message for a checkpoint the network cannot take, with the fix.

    Args:
        trainers_for_backbone: backbone -> (fine-tuning trainer, pretraining trainer) to suggest; the
            trainer asking passes its own family (e.g. the ``_demo`` variants name ``_demo`` trainers).
    """
    where = f"Pretrained weights {checkpoint_path} do not fit {trainer_name} ({network_backbone})."
    if checkpoint_backbone is None:
        return (
            f"{where} The checkpoint holds no SubFore UNETR/SwinUNETR network (its keys do not start with "
            f"'backbone.'); it was not written by a SubFore pretraining trainer.\n{report.describe()}"
        )
    if checkpoint_backbone != network_backbone:
        other = trainers_for_backbone.get(checkpoint_backbone, ("a fine-tuning trainer of that backbone",))[0]
        hint = trainers_for_backbone.get(network_backbone, (None, "a pretraining trainer of that backbone"))[1]
        return (
            f"{where} The checkpoint is a {checkpoint_backbone} network. Fine-tune it with {other}, or pretrain "
            f"{network_backbone} with {hint}."
        )
    return (
        f"{where} Same backbone, different shapes:\n{report.describe()}\n"
        f"If the difference is the number of input channels or the UNETR patch size, write an adapted "
        f"checkpoint with `nnunet-subfore adapt-checkpoint {checkpoint_path} --plans PLANS.json -c CONFIGURATION "
        f"-tr {trainer_name} --num-input-channels N -o adapted.pth` and pass that to -pretrained_weights. "
        f"Another feature size or depth cannot be adapted: pretrain with the same architecture."
    )


def spread_input_channels(weight: torch.Tensor, num_input_channels: int) -> torch.Tensor:
    """Stem weight (out, c_src, ...) -> (out, c_dst, ...): the summed kernel spread evenly over the new channels.

    An input whose channels are all equal then gives the same response as the original network.
    """
    summed = weight.sum(dim=1, keepdim=True)
    return (summed / num_input_channels).repeat(1, num_input_channels, *([1] * (weight.ndim - 2))).contiguous()


def interpolate_position_embeddings(
    embeddings: torch.Tensor, source_grid: Sequence[int], target_grid: Sequence[int]
) -> torch.Tensor:
    """UNETR position embeddings (1, n_src, hidden) on a token grid -> (1, n_dst, hidden), trilinear."""
    source_grid, target_grid = tuple(source_grid), tuple(target_grid)
    if embeddings.shape[1] != math.prod(source_grid):
        raise ValueError(f"{embeddings.shape[1]} position embeddings do not form a {source_grid} token grid.")
    hidden = embeddings.shape[2]
    grid = embeddings.reshape(1, *source_grid, hidden).permute(0, 4, 1, 2, 3)
    resized = F.interpolate(grid.float(), size=target_grid, mode="trilinear", align_corners=False)
    return resized.permute(0, 2, 3, 4, 1).reshape(1, math.prod(target_grid), hidden).to(embeddings.dtype)


@dataclass
class AdaptationReport:
    """What :func:`adapt_checkpoint` wrote."""

    output: Path
    transfer: TransferReport
    notes: List[str] = field(default_factory=list)

    def describe(self) -> str:
        notes = "".join(f"\n{n}" for n in self.notes)
        return f"{self.transfer.describe()}{notes}\nwrote {self.output} (pass it to nnUNetv2_train -pretrained_weights)"


#: What adapt-checkpoint says about the patch size of a CNN checkpoint.
CNN_PATCH_NOTE = ("patch size: nothing to adapt for a CNN (its weights do not depend on the patch; "
                  "any patch divisible by the network's total stride works)")


def adapt_state_dict(
    checkpoint_state: Dict[str, torch.Tensor],
    network_state: Dict[str, torch.Tensor],
    backbone: str,
    token_grid: Optional[Sequence[int]] = None,
    checkpoint_token_grid: Optional[Sequence[int]] = None,
    stem_keys: Optional[Sequence[str]] = None,
) -> Tuple[Dict[str, torch.Tensor], TransferReport]:
    """Adapt input channels (stem) and UNETR position embeddings of ``checkpoint_state`` to ``network_state``.

    ``token_grid`` / ``checkpoint_token_grid`` are the UNETR token grids (:func:`networks.token_grid`) of the
    target and the checkpoint; when not given they are taken to be cubic. ``stem_keys``: the keys that see
    the input channels (default :data:`STEM_KEYS` of the backbone; a CNN names its own, see
    :func:`networks.cnn_stem_keys`).

    Returns the adapted state dict (head keys dropped) and the transfer report after adaptation.
    Raises UserError when something other than these differs.
    """
    adapted = {k: v for k, v in checkpoint_state.items() if HEAD_MARKER not in k}
    names: List[str] = []
    for key in (STEM_KEYS[backbone] if stem_keys is None else stem_keys):
        if key in adapted and key in network_state and adapted[key].shape != network_state[key].shape:
            src, dst = adapted[key], network_state[key]
            if src.shape[:1] == dst.shape[:1] and src.shape[2:] == dst.shape[2:]:
                adapted[key] = spread_input_channels(src, dst.shape[1])
                names.append(key)
    if backbone == "unetr" and POSITION_EMBEDDING_KEY in adapted and POSITION_EMBEDDING_KEY in network_state:
        src, dst = adapted[POSITION_EMBEDDING_KEY], network_state[POSITION_EMBEDDING_KEY]
        if src.shape != dst.shape and src.shape[2] == dst.shape[2]:
            adapted[POSITION_EMBEDDING_KEY] = interpolate_position_embeddings(
                src,
                tuple(checkpoint_token_grid) if checkpoint_token_grid is not None else _cube_grid(src.shape[1], "checkpoint"),
                tuple(token_grid) if token_grid is not None else _cube_grid(dst.shape[1], "target"),
            )
            names.append(POSITION_EMBEDDING_KEY)
    report = compare_state_dicts(network_state, adapted)
    report.adapted = names
    return adapted, report


def source_token_grid(checkpoint: dict) -> Optional[Tuple[int, int, int]]:
    """The UNETR token grid a SubFore checkpoint was trained with, from the plans it saved (None if unknown)."""
    try:
        args = checkpoint["init_args"]
        return token_grid(args["plans"]["configurations"][args["configuration"]]["patch_size"])
    except (KeyError, TypeError):
        return None


def _cube_grid(n_tokens: int, what: str) -> Tuple[int, int, int]:
    side = round(n_tokens ** (1 / 3))
    if side ** 3 != n_tokens:
        raise UserError(
            f"The {what} UNETR has {n_tokens} position embeddings, not a cubic token grid; cannot interpolate them."
        )
    return (side, side, side)


def check_adaptation_request(output: Path, force: bool, num_input_channels: int, encoder_only: bool,
                             seed: Optional[int]) -> Optional[int]:
    """Refuse an ``adapt-checkpoint`` request before any work; returns the seed of the fresh decoder (None: full
    transfer, which takes every tensor from the checkpoint; 0 when ``--encoder-only`` is given without one)."""
    output = Path(output)
    if output.is_dir():
        raise UserError(f"{output} is a folder: give the adapted checkpoint's file name, e.g. {output / 'adapted.pth'}.")
    if output.exists() and not force:
        raise UserError(f"{output} exists; pass --force to overwrite it.")
    if num_input_channels < 1:
        raise UserError(f"--num-input-channels must be >= 1, got {num_input_channels}.")
    if seed is not None and not encoder_only:
        raise UserError(f"--seed {seed} only sets the fresh decoder of --encoder-only; a full transfer takes "
                        f"every tensor from the checkpoint. Add --encoder-only or drop --seed.")
    return (0 if seed is None else seed) if encoder_only else None


def adapt_checkpoint(
    source: Path,
    checkpoint: dict,
    target: TrainerNetwork,
    trainer_name: str,
    output: Path,
    trainers_for_backbone: Mapping[str, Tuple[str, str]],
    force: bool = False,
    encoder_only: bool = False,
) -> AdaptationReport:
    """Write a checkpoint that nnU-Net's ``-pretrained_weights`` loader accepts for ``target``.

    Args:
        source: ``checkpoint_final.pth`` of a SubFore pretraining run (named in messages and the output).
        checkpoint: its content (:func:`load_checkpoint`).
        target: the network the fine-tuning trainer builds (:func:`nnunet_subfore.registry.build_trainer_network`),
            with its input channels and patch.
        trainer_name: the fine-tuning trainer's name (for messages and the record in the output).
        output: where to write the adapted checkpoint.
        trainers_for_backbone: backbone -> (fine-tuning, pretraining) trainer names to suggest on a mismatch.
        force: overwrite ``output`` if it exists.
        encoder_only: take only the encoder, stem and input projection from the checkpoint
            (:func:`nnunet_subfore.transfer.encoder_key_prefixes`) and every other tensor from ``target`` as
            it was initialized (build it with a seed, ``target.seed``, to reproduce it); the checkpoint's
            decoder is then not needed to fit. False: every tensor but the heads from the checkpoint.
    """
    output = Path(output)
    if output.exists() and not force:
        raise UserError(f"{output} exists; pass --force to overwrite it.")
    network_state = dict(target.network.state_dict())
    _check_same_backbone(source, checkpoint, target, network_state, trainer_name, trainers_for_backbone)
    prefixes = encoder_key_prefixes(target.backbone, target.network) if encoder_only else None
    wanted = network_state if prefixes is None else {k: v for k, v in network_state.items() if is_encoder_key(k, prefixes)}
    cnn = target.backbone == CNN_BACKBONE
    weights, filled = _completed_aliases(source, checkpoint["network_weights"], target.network)
    adapted, report = adapt_state_dict(weights, wanted, target.backbone,
                                       None if cnn else target.token_grid,
                                       None if cnn else source_token_grid(checkpoint), target.stem_keys)
    num_input_channels = int(network_state[target.stem_keys[0]].shape[1])
    if not report.ok:
        raise UserError(_unadaptable_message(source, trainer_name, num_input_channels, report, cnn))
    if prefixes is not None:
        adapted, report.loaded, report.fresh = encoder_only_weights(adapted, network_state, prefixes, HEAD_MARKER)
        report.skipped_head = [k for k in network_state if HEAD_MARKER in k]
        report.unused = [k for k in report.unused if k not in network_state]
    out = {
        "network_weights": adapted,
        "trainer_name": checkpoint.get("trainer_name"),
        "adapted_from": str(Path(source).resolve()),
        "adapted_for": {"trainer": trainer_name, "num_input_channels": num_input_channels},
        TRANSFER_RECORD_KEY: transfer_record(source, report, target.seed, prefixes),
    }
    # the fine-tuning trainers' leakage guard reads the fingerprints from here; nnssl's papers to cite go along
    out.update({key: checkpoint[key] for key in (FINGERPRINTS_KEY, CITATIONS_KEY) if key in checkpoint})
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, output)
    notes = ([CNN_PATCH_NOTE] if cnn else []) + ([_alias_note(filled)] if filled else [])
    if prefixes is not None:
        notes.append(_encoder_only_note(prefixes, trainer_name, target.seed))
    return AdaptationReport(output=output, transfer=report, notes=notes)


def _completed_aliases(source: Path, weights: Dict[str, torch.Tensor], network) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The checkpoint's weights with every name of a tensor present (nnssl's checkpoints and ours hold each
    alias: ``decoder.encoder.*``, ``...all_modules.0.*``); a UserError when two names disagree."""
    try:
        return complete_aliases(weights, alias_groups(network))
    except ValueError as e:
        raise UserError(f"{source} cannot be adapted: {e}") from None


def _alias_note(filled: Sequence[str]) -> str:
    return (f"aliases: {len(filled)} tensors the checkpoint holds under another name of the same tensor "
            f"(e.g. {filled[0]}) taken from there")


def _encoder_only_note(prefixes: Sequence[str], trainer_name: str, seed: Optional[int]) -> str:
    alias = " (decoder.encoder: the decoder's reference to the encoder, the same tensors)" if any(
        p.startswith("decoder.encoder.") for p in prefixes) else ""
    return (f"encoder-only: the encoder ({', '.join(p.rstrip('.') for p in prefixes)}) from the checkpoint{alias}, "
            f"the rest initialized as {trainer_name} initializes it ({'unseeded' if seed is None else f'seed {seed}'})")


def _check_same_backbone(source: Path, checkpoint: dict, target: TrainerNetwork, network_state: Dict[str, torch.Tensor],
                         trainer_name: str, trainers_for_backbone: Mapping[str, Tuple[str, str]]) -> None:
    checkpoint_backbone = backbone_of_state_dict(checkpoint["network_weights"])
    if checkpoint_backbone != target.backbone:
        raise UserError(
            transfer_error_message(
                compare_state_dicts(network_state, checkpoint["network_weights"]), Path(source), target.backbone,
                checkpoint_backbone, trainer_name, trainers_for_backbone,
            )
        )


def _unadaptable_message(source: Path, trainer_name: str, num_input_channels: int, report: TransferReport,
                         cnn: bool) -> str:
    what = ("Only the input channels can be adapted; other stages, features or blocks per stage need a "
            "pretraining run on the same plans (move them with nnUNetv2_move_plans_between_datasets)."
            if cnn else "Only input channels and UNETR patch size can be adapted; another feature "
            "size or depth needs a pretraining run with the same architecture.")
    return (f"{source} cannot be adapted to {trainer_name} with {num_input_channels} input channel(s):\n"
            f"{report.describe()}\n{what}")


def transfer_record(source: Path, report: TransferReport, seed: Optional[int],
                    encoder_prefixes: Optional[Sequence[str]] = None) -> dict:
    """What the output checkpoint records of the transfer (``subfore_transfer``), as plain JSON-able values.

    Args:
        source: the pretrained checkpoint.
        report: the transfer's report (tensors from the checkpoint, freshly initialized ones).
        seed: the seed the target network was initialized with (None: not seeded).
        encoder_prefixes: the encoder's key prefixes for an encoder-only transfer; None: full transfer.
    """
    record = {
        "recipe": "full" if encoder_prefixes is None else "encoder-only",
        "from": str(Path(source).resolve()),
        "checkpoint_keys": len(report.loaded),
        "fresh_keys": len(report.fresh),
        "adapted_keys": list(report.adapted),
    }
    if encoder_prefixes is not None:
        record.update(seed=seed, encoder_prefixes=[p.rstrip(".") for p in encoder_prefixes])
    return record
