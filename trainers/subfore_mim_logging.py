"""Logging and epoch end of the MIM pretraining trainers: losses only, best checkpoint by validation loss.

nnU-Net's local logger keeps pseudo-Dice lists and its ``on_epoch_end`` picks ``checkpoint_best.pth``
by the highest smoothed pseudo Dice. Pretraining has no Dice: :class:`MIMLocalLogger` keeps the
masked-L1 losses and their moving average (computed on logging, as nnU-Net computes
``ema_fg_dice``), and :func:`mim_on_epoch_end` (nnU-Net's ``on_epoch_end`` adapted, see
:data:`COPIED_FROM_NNUNET`) saves ``checkpoint_best.pth`` at the lowest moving average. The logger
is saved in every checkpoint (``'logging'``), so the best value survives ``--c`` without private
trainer state.
"""

from __future__ import annotations

import os
from time import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402

#: Smoothing of the validation loss that picks checkpoint_best.pth (nnU-Net smooths its pseudo Dice alike).
VAL_LOSS_EMA = 0.9

#: nnU-Net methods re-implemented here: name -> (nnU-Net version followed, sha256 of that version's
#: ``inspect.getsource``). tests/trainers/test_nnunet_copies.py fails when the installed nnU-Net's
#: source differs, so that a change upstream is looked at.
COPIED_FROM_NNUNET = {
    "nnUNetTrainer.on_epoch_end": ("2.8.1", "988deef2bd79d339a745eec8828c6a7b66330a029ceaef601af23c2a5270cfe7"),
}


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
        fig.savefig(os.path.join(output_folder, "progress.png"))
        plt.close(fig)

    def load_checkpoint(self, checkpoint: dict):
        self.my_fantastic_logging = {key: list(checkpoint.get(key, [])) for key in self.my_fantastic_logging}


def mim_on_epoch_end(trainer) -> None:
    """nnU-Net 2.8.1's ``nnUNetTrainer.on_epoch_end``, with the losses named, no Dice, and checkpoint_best.pth
    at the lowest smoothed validation loss (:meth:`MIMLocalLogger.best_epoch_is_last`)."""
    logger = trainer.logger
    logger.log("epoch_end_timestamps", time(), trainer.current_epoch)
    trainer.print_to_log_file("train_loss (masked L1)", np.round(logger.get_value("train_losses", step=-1), decimals=4))
    trainer.print_to_log_file("val_loss (masked L1)", np.round(logger.get_value("val_losses", step=-1), decimals=4))
    trainer.print_to_log_file(
        f"Epoch time: {np.round(logger.get_value('epoch_end_timestamps', step=-1) - logger.get_value('epoch_start_timestamps', step=-1), decimals=2)} s")

    if (trainer.current_epoch + 1) % trainer.save_every == 0 and trainer.current_epoch != (trainer.num_epochs - 1):
        trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_latest.pth"))

    if logger.local_logger.best_epoch_is_last():
        trainer.print_to_log_file(
            f"New best smoothed validation loss: {np.round(logger.get_value('ema_val_losses', step=-1), decimals=4)}")
        trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_best.pth"))

    if trainer.local_rank == 0:
        logger.plot_progress_png(trainer.output_folder)

    trainer.current_epoch += 1
