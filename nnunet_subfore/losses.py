"""Masked reconstruction loss for masked image modeling (pure torch)."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from nnunet_subfore.masking import broadcastable_subvolume_mask, subvolume_view


def masked_l1_loss(prediction: torch.Tensor, target: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked voxels only, from a voxel mask.

    Args:
        prediction: (B, C, D, H, W) reconstruction.
        target: (B, C, D, H, W) original (unmasked) input.
        voxel_mask: bool (B, 1, D, H, W) or (B, C, D, H, W), True on masked voxels.

    Returns:
        scalar tensor: sum of |prediction - target| over masked voxels (all channels) divided by
        their count. When nothing is masked the loss is 0 and still carries a graph, so
        ``backward()`` works (a patch without foreground must not break training).

    The trainers use :func:`subvolume_masked_l1_loss`, which gives the same value without a voxel mask.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}.")
    if voxel_mask.dtype != torch.bool:
        raise ValueError(f"voxel_mask must be a bool tensor, got dtype {voxel_mask.dtype}.")
    diff = (prediction.float() - target.float()).abs()
    masked_sum = torch.where(voxel_mask, diff, diff.new_zeros(())).sum()
    count = voxel_mask.sum() * (prediction.shape[1] if voxel_mask.shape[1] == 1 else 1)
    return masked_sum / count.clamp_min(1)


def masked_voxel_count(prediction: torch.Tensor, subvolume_mask: torch.Tensor) -> torch.Tensor:
    """The number of values :func:`subvolume_masked_l1_loss` averages over: masked voxels times channels.

    Args:
        prediction: (B, C, D, H, W) reconstruction (only its shape is read).
        subvolume_mask: bool (B, nd, nh, nw), True on masked subvolumes, tiling ``prediction``.

    Returns:
        0-d int64 tensor on the mask's device (0 when nothing is masked; the loss divides by at least 1).
        Under DDP the trainers weight each rank's loss by it (:mod:`nnunet_subfore.rank_masking`).
    """
    voxels = prediction.shape[1]
    for side, n in zip(prediction.shape[2:], subvolume_mask.shape[1:]):
        voxels *= side // n
    return subvolume_mask.sum() * voxels


class _SubvolumeMaskedL1(torch.autograd.Function):
    """Forward keeps one temporary (the difference, made absolute and masked in place); backward
    allocates only the gradient it returns; nothing batch-sized beyond the inputs is saved."""

    @staticmethod
    def forward(ctx, prediction, target, subvolume_mask, block):
        voxels_per_subvolume = block[0] * block[1] * block[2] * prediction.shape[1]
        count = (subvolume_mask.sum() * voxels_per_subvolume).clamp_min(1).to(prediction.dtype)
        diff = torch.sub(prediction, target).abs_()
        total = subvolume_view(diff, block).mul_(broadcastable_subvolume_mask(subvolume_mask)).sum()
        ctx.save_for_backward(prediction, target, subvolume_mask, count)
        ctx.block = block
        return total / count

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        prediction, target, subvolume_mask, count = ctx.saved_tensors
        g = torch.sub(prediction, target).sign_()
        subvolume_view(g, ctx.block).mul_(broadcastable_subvolume_mask(subvolume_mask) * (grad / count))
        grad_target = -g if ctx.needs_input_grad[1] else None
        return (g if ctx.needs_input_grad[0] else None), grad_target, None, None


def subvolume_masked_l1_loss(prediction: torch.Tensor, target: torch.Tensor,
                             subvolume_mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the voxels of the masked subvolumes, from the subvolume mask.

    The same value and gradient as :func:`masked_l1_loss` with the expanded voxel mask, in one pass
    over the batch forward and one backward, without building a voxel mask (no Python loop over
    subvolumes either).

    Args:
        prediction: float (B, C, D, H, W) reconstruction.
        target: (B, C, D, H, W) original (unmasked) input, same dtype as ``prediction``.
        subvolume_mask: bool (B, nd, nh, nw), True on masked subvolumes; D, H, W must be multiples
            of nd, nh, nw (the subvolume size follows from the shapes).

    Returns:
        scalar tensor; 0 with a graph (and zero gradients) when nothing is masked.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}.")
    if prediction.dtype != target.dtype or not prediction.is_floating_point():
        raise ValueError(f"prediction and target must share a floating point dtype, got {prediction.dtype} and "
                         f"{target.dtype}.")
    if subvolume_mask.dtype != torch.bool:
        raise ValueError(f"subvolume_mask must be a bool tensor, got dtype {subvolume_mask.dtype}.")
    if prediction.ndim != 5 or subvolume_mask.ndim != 4 or subvolume_mask.shape[0] != prediction.shape[0] or any(
            n < 1 or side % n for side, n in zip(prediction.shape[2:], subvolume_mask.shape[1:])):
        raise ValueError(f"subvolume_mask of shape {tuple(subvolume_mask.shape)} does not tile a prediction of "
                         f"shape {tuple(prediction.shape)}: expected (B, nd, nh, nw) with D, H, W multiples of "
                         f"nd, nh, nw.")
    block = tuple(side // n for side, n in zip(prediction.shape[2:], subvolume_mask.shape[1:]))
    return _SubvolumeMaskedL1.apply(prediction.contiguous(), target.contiguous(), subvolume_mask, block)


class MaskedL1Loss(nn.Module):
    """Module form of :func:`subvolume_masked_l1_loss`: ``loss(prediction, target, subvolume_mask)``."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, subvolume_mask: torch.Tensor) -> torch.Tensor:
        return subvolume_masked_l1_loss(prediction, target, subvolume_mask)
