"""Checkpoint contents as plain values, so that ``torch.load(..., weights_only=True)`` accepts them.

nnU-Net's logger keeps numpy scalars (``np.float64`` losses, ``np.float32`` Dice values), which a
``weights_only=True`` load refuses ("Weights only load failed"). nnU-Net master's pretrained
fine-tuning (``nnUNetv2_train_pretrained``) and nnssl load checkpoints that way, so every checkpoint
this package writes holds only tensors and plain Python values.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def plain_values(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists, recursively.

    Dicts, lists and tuples keep their kind; tensors, ``torch.device`` and other values that a
    ``weights_only=True`` load accepts are returned as they are.

    Args:
        value: a checkpoint or a part of it.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {plain_values(k): plain_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_values(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_values(v) for v in value)
    return value
