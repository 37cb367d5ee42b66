"""Learning-rate schedules stepped once per epoch, the way nnU-Net steps its schedulers."""

from __future__ import annotations

import math
from typing import Optional

from torch.optim import Optimizer
from torch.optim.lr_scheduler import _LRScheduler


class _WarmupLRScheduler(_LRScheduler):
    """Linear warm-up to ``initial_lr`` over ``warmup_steps``, then :meth:`decay` of the progress to ``max_steps``.

    Same calling convention as nnU-Net's ``PolyLRScheduler``: ``step(current_epoch)``.

    Args:
        optimizer: the optimizer whose parameter groups get the learning rate.
        initial_lr: peak learning rate, reached at the end of the warm-up.
        max_steps: total number of steps (nnU-Net: ``num_epochs``).
        warmup_steps: length of the linear warm-up (0 for none); must be smaller than ``max_steps``.
    """

    def __init__(self, optimizer: Optimizer, initial_lr: float, max_steps: int, warmup_steps: int,
                 current_step: Optional[int] = None) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
        if not 0 <= warmup_steps < max_steps:
            raise ValueError(f"warmup_steps must lie in [0, max_steps={max_steps}), got {warmup_steps}.")
        self.initial_lr = float(initial_lr)
        self.max_steps = int(max_steps)
        self.warmup_steps = int(warmup_steps)
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def decay(self, progress: float) -> float:
        """The learning rate's factor after the warm-up, at ``progress`` in [0, 1]."""
        raise NotImplementedError

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.initial_lr * (step + 1) / (self.warmup_steps + 1)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.initial_lr * self.decay(progress)

    def step(self, current_step: Optional[int] = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr


class WarmupCosineLRScheduler(_WarmupLRScheduler):
    """Linear warm-up, then cosine decay to 0 at ``max_steps`` (the authors' schedule for the transformers)."""

    def decay(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupPolyLRScheduler(_WarmupLRScheduler):
    """Linear warm-up, then nnU-Net's poly decay to 0 at ``max_steps``: the schedule of nnU-Net's (master)
    ``PretrainedTrainer`` for fine-tuning.

    Args:
        exponent: the poly exponent (nnU-Net's 0.9); the other arguments as :class:`_WarmupLRScheduler`.
    """

    def __init__(self, optimizer: Optimizer, initial_lr: float, max_steps: int, warmup_steps: int,
                 exponent: float = 0.9, current_step: Optional[int] = None) -> None:
        self.exponent = float(exponent)
        super().__init__(optimizer, initial_lr, max_steps, warmup_steps, current_step)

    def decay(self, progress: float) -> float:
        return (1.0 - progress) ** self.exponent
