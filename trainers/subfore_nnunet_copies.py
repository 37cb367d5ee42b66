"""The nnU-Net methods that the SubFore trainers re-implement, kept together.

Each follows nnU-Net's own method of the version named in :data:`COPIED_FROM_NNUNET`, with the
changes its docstring lists; ``tests/trainers/test_subfore_nnunet_copies.py`` fails when the
installed nnU-Net's source of the original differs, so that a change upstream is looked at. Where
a smaller hook would do, the trainers use that instead.
"""

from __future__ import annotations

import os
from time import time

import numpy as np
import torch

from nnunet_subfore.plain_values import plain_values

#: nnU-Net methods re-implemented here: name -> (nnU-Net version followed, sha256 of that version's
#: ``inspect.getsource`` of the original).
COPIED_FROM_NNUNET = {
    "nnUNetTrainer.on_epoch_end": ("2.8.1", "988deef2bd79d339a745eec8828c6a7b66330a029ceaef601af23c2a5270cfe7"),
    "nnUNetTrainer.save_checkpoint": ("2.8.1", "de4f196c42e6bcf522641d62c8e30af2c4c094f8c541943e07bbb39b965c3307"),
}


def save_checkpoint_atomically(trainer, filename: str) -> None:
    """nnU-Net 2.8.1's ``nnUNetTrainer.save_checkpoint``, with the tensors on the CPU and one atomic write.

    Changes: every tensor is moved to the CPU (nnU-Net's ``-pretrained_weights`` loader uses no
    ``map_location``, so a CUDA checkpoint would not load on a CPU machine; the optimizer moves its
    state back to the parameters' device when it loads); the checkpoint is written to a temporary
    file in the same folder, flushed and fsynced, then renamed over ``filename`` (``os.replace``):
    a kill at any moment leaves the previous file or the new one, never a part of one; a trainer's
    ``checkpoint_extras()`` entries (plain data) are added; numpy scalars (nnU-Net's logger keeps its
    losses as such) become Python numbers (:func:`~nnunet_subfore.plain_values.plain_values`), so the
    checkpoint loads with ``torch.load(..., weights_only=True)`` as nnU-Net master and nnssl load it,
    and ``--c`` restores the same logged values.
    """
    if trainer.local_rank != 0:
        return
    if trainer.disable_checkpointing:
        trainer.print_to_log_file("No checkpoint written, checkpointing is disabled")
        return
    checkpoint = {
        "network_weights": _to_cpu(trainer.plain_network.state_dict()),
        "optimizer_state": _to_cpu(trainer.optimizer.state_dict()),
        "grad_scaler_state": trainer.grad_scaler.state_dict() if trainer.grad_scaler is not None else None,
        "logging": trainer.logger.get_checkpoint(),
        "_best_ema": trainer._best_ema,
        "current_epoch": trainer.current_epoch + 1,
        "init_args": trainer.my_init_kwargs,
        "trainer_name": trainer.__class__.__name__,
        "inference_allowed_mirroring_axes": trainer.inference_allowed_mirroring_axes,
    }
    extras = getattr(trainer, "checkpoint_extras", None)
    if extras is not None:  # entries a trainer adds (plain data, e.g. the pretraining cases' fingerprints)
        checkpoint.update(extras())
    write_atomically(plain_values(checkpoint), filename)


def write_atomically(obj, filename: str) -> None:
    """``torch.save`` to a temporary file beside ``filename``, fsync, then ``os.replace`` it into place."""
    folder = os.path.dirname(os.path.abspath(filename))
    prefix = f".{os.path.basename(filename)}."
    for name in os.listdir(folder):  # temporaries of writers that were killed (never a live one: one writer per run)
        if name.startswith(prefix) and name.endswith(".tmp"):
            os.remove(os.path.join(folder, name))
    temporary = os.path.join(folder, f"{prefix}{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, filename)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    try:  # make the rename itself durable
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def mim_on_epoch_end(trainer) -> None:
    """nnU-Net 2.8.1's ``nnUNetTrainer.on_epoch_end`` for pretraining.

    Changes: the losses are named (masked L1), no pseudo Dice is printed, and ``checkpoint_best.pth``
    follows the lowest smoothed validation loss
    (:meth:`~nnunet_subfore.trainers.subfore_mim_logging.MIMLocalLogger.best_epoch_is_last`) instead of
    the highest smoothed pseudo Dice.
    """
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
