"""Masked reconstruction loss for masked image modeling (pure torch)."""

from __future__ import annotations

import torch
from torch import nn


def masked_l1_loss(prediction: torch.Tensor, target: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked voxels only.

    Args:
        prediction: (B, C, D, H, W) reconstruction.
        target: (B, C, D, H, W) original (unmasked) input.
        voxel_mask: bool (B, 1, D, H, W) or (B, C, D, H, W), True on masked voxels.

    Returns:
        scalar tensor: sum of |prediction - target| over masked voxels (all channels) divided by
        their count. When nothing is masked the loss is 0 and still carries a graph, so
        ``backward()`` works (a patch without foreground must not break training).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}.")
    if voxel_mask.dtype != torch.bool:
        raise ValueError(f"voxel_mask must be a bool tensor, got dtype {voxel_mask.dtype}.")
    diff = (prediction.float() - target.float()).abs()
    masked_sum = torch.where(voxel_mask, diff, diff.new_zeros(())).sum()
    count = voxel_mask.sum() * (prediction.shape[1] if voxel_mask.shape[1] == 1 else 1)
    return masked_sum / count.clamp_min(1)


class MaskedL1Loss(nn.Module):
    """Module form of :func:`masked_l1_loss` (``loss(prediction, target, voxel_mask)``)."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
        return masked_l1_loss(prediction, target, voxel_mask)
