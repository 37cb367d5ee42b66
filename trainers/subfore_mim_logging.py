"""The pretraining trainers' logger: masked-L1 losses and their moving average, no pseudo Dice.

nnU-Net's local logger keeps pseudo-Dice lists, and its ``on_epoch_end`` picks ``checkpoint_best.pth``
by the highest smoothed pseudo Dice. Pretraining has no Dice: :class:`MIMLocalLogger` keeps the
losses and their moving average (computed on logging, as nnU-Net computes ``ema_fg_dice``), and
``subfore_nnunet_copies.mim_on_epoch_end`` saves ``checkpoint_best.pth`` at the lowest moving
average. The logger is saved in every checkpoint (``'logging'``), so the best value survives ``--c``
without private trainer state.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402

from nnunet_subfore.reporting.canvas import save_figure  # noqa: E402

#: Smoothing of the validation loss that picks checkpoint_best.pth (nnU-Net smooths its pseudo Dice alike).
VAL_LOSS_EMA = 0.9


class MIMLocalLogger(LocalLogger):
    """nnU-Net's local logger with the pretraining keys: losses, their moving average, learning rate, times."""

    def __init__(self, verbose: bool = False):
        super().__init__(verbose)
        self.my_fantastic_logging = {
            "train_losses": [],
            "val_losses": [],
            "ema_val_losses": [],
            "lrs": [],
            "epoch_start_timestamps": [],
            "epoch_end_timestamps": [],
        }

    def log(self, key, value, epoch: int):
        super().log(key, value, epoch)
        if key == "val_losses":
            previous = self.my_fantastic_logging["ema_val_losses"][: epoch]
            ema = VAL_LOSS_EMA * previous[-1] + (1 - VAL_LOSS_EMA) * value if previous else value
            super().log("ema_val_losses", ema, epoch)

    def best_epoch_is_last(self) -> bool:
        """True when the last smoothed validation loss is the lowest so far (checkpoint_best.pth is due)."""
        ema = self.my_fantastic_logging["ema_val_losses"]
        return len(ema) == 1 or (len(ema) > 1 and ema[-1] < min(ema[:-1]))

    def plot_progress_png(self, output_folder):
        log = self.my_fantastic_logging
        epochs = min(len(v) for v in log.values())
        x = list(range(epochs))
        fig, (ax_loss, ax_time, ax_lr) = plt.subplots(3, 1, figsize=(10, 14))
        ax_loss.plot(x, log["train_losses"][:epochs], color="b", label="train (masked L1)")
        ax_loss.plot(x, log["val_losses"][:epochs], color="r", label="validation (masked L1)")
        ax_loss.plot(x, log["ema_val_losses"][:epochs], color="r", ls="--", label="validation, moving average")
        ax_loss.set(xlabel="epoch", ylabel="loss")
        ax_loss.legend()
        ax_time.plot(x, np.subtract(log["epoch_end_timestamps"][:epochs], log["epoch_start_timestamps"][:epochs]),
                     color="b", label="epoch duration")
        ax_time.set(xlabel="epoch", ylabel="time [s]", ylim=(0, None))
        ax_time.legend()
        ax_lr.plot(x, log["lrs"][:epochs], color="b", label="learning rate")
        ax_lr.set(xlabel="epoch", ylabel="learning rate")
        ax_lr.legend()
        fig.tight_layout()
        save_figure(fig, os.path.join(output_folder, "progress.png"), dpi=100)
        plt.close(fig)

    def load_checkpoint(self, checkpoint: dict):
        self.my_fantastic_logging = {key: list(checkpoint.get(key, [])) for key in self.my_fantastic_logging}
