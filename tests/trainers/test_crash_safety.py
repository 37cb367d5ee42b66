"""A training killed inside a checkpoint write leaves only intact checkpoints, and --c / --val go on.

The fast tests check the pieces one at a time: the write order that makes a checkpoint durable before it
replaces the previous one, and the fallback from a damaged checkpoint to the newest intact one. In the
slow end-to-end test the kill moment is certain: the test trainer SubForePretrainTrainer_killtest
(tests/ext_trainers) writes half of its epoch-2 checkpoint_latest.pth and signals the test through a
marker file before it sleeps.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from types import SimpleNamespace

import pytest
import torch
from subfore_test_helpers import result_folder, run

from nnunet_subfore.checkpoints import load_checkpoint
from nnunet_subfore.commands import console_script
from nnunet_subfore.demo import PRETRAIN_ID, PRETRAIN_NAME
from nnunet_subfore.paths import dataset_folder_name
from nnunet_subfore.trainers.subfore_base import SubForeTrainerBase
from nnunet_subfore.trainers.subfore_nnunet_copies import write_atomically

TRAINER = "SubForePretrainTrainer_killtest"
FOLD = "2"


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_then_continue_and_validate(demo_run, tmp_path):
    _, env, _ = demo_run
    fold = result_folder(env, dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME), TRAINER) / f"fold_{FOLD}"
    marker = tmp_path / "blocked"
    command = ["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", FOLD, "-tr", TRAINER, "-device", "cpu"]
    child_env = dict(env, nnUNet_n_proc_DA="0", SUBFORE_TEST_BLOCK_MARKER=str(marker))
    with open(tmp_path / "train.log", "w") as log:
        process = subprocess.Popen([console_script(command[0]), *command[1:]], env=child_env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 900
        while not marker.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert marker.exists(), (tmp_path / "train.log").read_text()[-3000:]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    # what the kill left: the previous checkpoint_latest (after epoch 1) whole, the half write aside
    latest = load_checkpoint(fold / "checkpoint_latest.pth")
    assert latest["current_epoch"] == 2
    assert load_checkpoint(fold / "checkpoint_best.pth")["current_epoch"] <= 2
    assert not (fold / "checkpoint_final.pth").exists()
    assert [p.name for p in fold.glob(".checkpoint_latest.pth.*.tmp")], "the killed write should be left aside"

    resumed = run(command + ["--c"], env, training=True)
    final = load_checkpoint(fold / "checkpoint_final.pth")
    assert final["current_epoch"] == 4 and len(final["logging"]["val_losses"]) == 4
    assert not list(fold.glob(".*.tmp")) and "epoch 2" in resumed.stdout.lower()

    # a damaged newest checkpoint (e.g. an interrupted copy) is named and skipped for the next newest one
    data = (fold / "checkpoint_final.pth").read_bytes()
    (fold / "checkpoint_final.pth").write_bytes(data[: len(data) // 3])
    validated = run(command + ["--val"], env, training=True)
    assert "Skipping" in validated.stdout and "checkpoint_final.pth" in validated.stdout
    assert (fold / "validation" / "reconstruction_metrics.json").is_file()


def test_the_checkpoint_is_fsynced_before_it_replaces_the_old_one_and_the_folder_after(tmp_path, monkeypatch):
    """Renamed before its data reaches the disk, a power loss can leave an empty checkpoint_latest.pth where
    an intact one was; the rename itself is durable only once the folder is fsynced."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        info = os.fstat(descriptor)
        events.append(("fsync", info.st_ino, "folder" if stat.S_ISDIR(info.st_mode) else info.st_size))
        real_fsync(descriptor)

    def replace(source, destination):
        events.append(("replace", os.stat(source).st_ino, os.path.basename(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "checkpoint_latest.pth"
    target.write_bytes(b"the previous checkpoint")
    write_atomically({"network_weights": {"w": torch.randn(32, 32)}}, str(target))
    written = target.stat()
    assert events == [("fsync", written.st_ino, written.st_size),  # the whole temporary file, under its own name
                      ("replace", written.st_ino, target.name),
                      ("fsync", tmp_path.stat().st_ino, "folder")]


def _checkpoints(folder, damaged: str, newest_first) -> None:
    """Small real checkpoints in ``folder``, their modification times in the order ``newest_first``; ``damaged`` cut."""
    for age, name in enumerate(newest_first):
        path = folder / name
        torch.save({"network_weights": {"w": torch.full((16, 16), float(age))}}, path)
        if name == damaged:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        os.utime(path, (1_700_000_000 - 60 * age,) * 2)


def _trainer_stub():
    """What ``_newest_intact_checkpoint`` uses of a trainer: its log, and ``fail`` (exits like the trainer's)."""
    log = []

    def fail(message):
        raise SystemExit(message)

    return SimpleNamespace(print_to_log_file=lambda *args: log.append(" ".join(map(str, args))), fail=fail), log


@pytest.mark.parametrize("newest_first", [
    ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"),
    ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth"),  # best written after the last latest
])
def test_resume_skips_a_damaged_checkpoint_for_the_newest_intact_one(tmp_path, newest_first):
    """checkpoint_final damaged (e.g. an interrupted copy): --val goes on from the newest intact checkpoint,
    not from an older one (its network would be another epoch's)."""
    _checkpoints(tmp_path, "checkpoint_final.pth", newest_first)
    trainer, log = _trainer_stub()
    chosen = SubForeTrainerBase._newest_intact_checkpoint(trainer, str(tmp_path / "checkpoint_final.pth"))
    assert chosen == str(tmp_path / newest_first[1])
    assert "Skipping" in log[0] and "checkpoint_final.pth" in log[0]
    assert log[1:] == [f"Loading {newest_first[1]} instead of checkpoint_final.pth."]

    # nothing intact: one message naming what was tried, and no guess
    for name in newest_first[1:]:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(SystemExit, match="No intact checkpoint .*checkpoint_best.pth, checkpoint_final.pth, checkpoint_latest.pth"):
        SubForeTrainerBase._newest_intact_checkpoint(trainer, str(tmp_path / "checkpoint_final.pth"))
