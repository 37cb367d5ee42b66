"""A training killed inside a checkpoint write leaves only intact checkpoints, and --c / --val go on (slow).

The kill moment is certain: the test trainer SubForePretrainTrainer_killtest (tests/ext_trainers) writes
half of its epoch-2 checkpoint_latest.pth and signals the test through a marker file before it sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from subfore_test_helpers import result_folder, run

from nnunet_subfore.checkpoints import load_checkpoint
from nnunet_subfore.commands import console_script
from nnunet_subfore.demo import PRETRAIN_ID, PRETRAIN_NAME
from nnunet_subfore.paths import dataset_folder_name

pytestmark = pytest.mark.slow

TRAINER = "SubForePretrainTrainer_killtest"
FOLD = "2"


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
