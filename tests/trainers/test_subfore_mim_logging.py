"""Pretraining logs losses (no pseudo Dice) and picks checkpoint_best.pth by the smoothed validation loss."""

from __future__ import annotations

import pytest

from nnunet_subfore.trainers.subfore_mim_logging import VAL_LOSS_EMA, MIMLocalLogger


def test_moving_average_and_best_epoch_follow_the_validation_loss():
    logger = MIMLocalLogger()
    best = []
    for epoch, value in enumerate([1.0, 0.5, 0.9, 0.9, 0.2]):
        logger.log("val_losses", value, epoch)
        best.append(logger.best_epoch_is_last())
    ema = logger.get_value("ema_val_losses", step=None)
    expected = [1.0]
    for value in [0.5, 0.9, 0.9, 0.2]:
        expected.append(VAL_LOSS_EMA * expected[-1] + (1 - VAL_LOSS_EMA) * value)
    assert ema == pytest.approx(expected)
    # 1.0, 0.95, 0.945, 0.9405, 0.86645: each a new minimum
    assert best == [True, True, True, True, True]
    logger.log("val_losses", 5.0, 5)
    assert not logger.best_epoch_is_last()


def test_no_dice_keys_and_resume_restores_the_losses():
    logger = MIMLocalLogger()
    assert not any("dice" in key for key in logger.my_fantastic_logging)
    with pytest.raises(AssertionError):
        logger.log("mean_fg_dice", 0.5, 0)
    logger.log("val_losses", 0.7, 0)
    restored = MIMLocalLogger()
    restored.load_checkpoint(logger.get_checkpoint())
    assert restored.get_value("ema_val_losses", step=None) == [0.7]


def test_progress_plot_is_written(tmp_path):
    logger = MIMLocalLogger()
    for epoch in range(3):
        for key, value in (("train_losses", 1.0 - epoch / 10), ("val_losses", 1.1 - epoch / 10), ("lrs", 1e-3),
                           ("epoch_start_timestamps", epoch), ("epoch_end_timestamps", epoch + 0.5)):
            logger.log(key, value, epoch)
    logger.plot_progress_png(str(tmp_path))
    assert (tmp_path / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from subfore_test_helpers import ink_on_border

    assert not ink_on_border(tmp_path / "progress.png")
