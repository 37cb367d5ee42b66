"""Masked pretraining across processes (DDP): one mask stream per rank, the masked loss as the mean over all ranks.

Pure torch (no nnU-Net): the pretraining trainers call these alone and under nnU-Net's DDP (``-num_gpus N``).

- Masks: torch's default generator is seeded alike in every spawned process, so every rank would draw the
  same masks. Each training step instead draws from its own generator, seeded by
  :func:`mask_stream_seed` from (base seed, rank, global step): the ranks draw different masks, a rerun with
  the same base seed draws the same ones, and a run resumed at epoch ``e`` (``--c``) draws step
  ``e * iterations_per_epoch`` onwards exactly as the uninterrupted run did (with the same number of ranks).
- Loss: each rank's masked L1 is a mean over its own masked voxels, and those counts differ per rank. DDP
  averages the ranks' gradients, which would weigh every rank alike (a mean of means). Scaling each rank's
  loss by :func:`union_mean_scale` (``world_size * local_count / global_count``) makes DDP's average the
  gradient of the mean over the masked voxels of all ranks together, and the mean of the scaled losses
  over the ranks that mean itself.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Optional, Sequence

import numpy as np
import torch
from torch import distributed as dist

#: Mixed into every seed, so that mask streams do not coincide with other streams seeded from small integers.
_STREAM_TAG = b"nnunet-subfore mask stream"


def mask_stream_seed(base_seed: int, rank: int, step: int) -> int:
    """The seed of the masks that ``rank`` draws at global training step ``step`` (a pure function).

    Args:
        base_seed: the run's seed (the trainers' ``mask_seed`` attribute).
        rank: the process's rank in the DDP group (0 when training alone).
        step: the global training iteration, ``epoch * iterations_per_epoch + iteration``.

    Returns:
        an integer in [0, 2**63): a hash of the three numbers (BLAKE2b), the same in every process and
        Python session, different for neighbouring ranks and steps.
    """
    for name, value in (("base_seed", base_seed), ("rank", rank), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2 ** 63:
            raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}.")
    digest = hashlib.blake2b(_STREAM_TAG + struct.pack("<3q", base_seed, rank, step), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


def mask_generator(base_seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`mask_stream_seed` (what the masker draws from)."""
    return torch.Generator(device=device).manual_seed(mask_stream_seed(base_seed, rank, step))


def is_distributed() -> bool:
    """True inside an initialized torch.distributed process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def union_mean_scale(local_count: torch.Tensor, group: Optional[object] = None) -> torch.Tensor:
    """The factor for this rank's mean loss that turns DDP's gradient average into the mean over all ranks' voxels.

    A collective: every rank of the group must call it at the same step (one all-reduce of one number).

    Args:
        local_count: 0-d tensor, the values this rank's loss averaged over
            (:func:`nnunet_subfore.losses.masked_voxel_count`), on the device the group communicates on.
        group: the process group (None: the default one).

    Returns:
        0-d float64 tensor ``world_size * local_count / global_count`` on ``local_count``'s device; 1 when not
        distributed; 0 when no rank masked anything (every loss is 0 then).
    """
    local = local_count.detach().to(torch.float64)
    if not is_distributed():
        return torch.ones((), dtype=torch.float64, device=local.device)
    total = local.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    world_size = dist.get_world_size(group)
    return torch.where(total > 0, world_size * local / total.clamp_min(1), torch.zeros_like(total))


def union_means(losses: Sequence[Sequence[float]], counts: Sequence[Sequence[float]]) -> np.ndarray:
    """Per step, the mean over the masked voxels of all ranks, from each rank's mean and count.

    Args:
        losses: (ranks, steps) each rank's mean masked loss at each step.
        counts: (ranks, steps) the values each of those means averaged over.

    Returns:
        (steps,) ``sum(loss * count) / sum(count)`` over the ranks; 0 at a step where nothing was masked (as the
        loss itself is then). With one rank: the losses.
    """
    losses, counts = np.asarray(losses, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if losses.shape != counts.shape or losses.ndim != 2:
        raise ValueError(f"losses {losses.shape} and counts {counts.shape} must both be (ranks, steps).")
    total = counts.sum(axis=0)
    return np.where(total > 0, (losses * counts).sum(axis=0) / np.maximum(total, 1), 0.0)
