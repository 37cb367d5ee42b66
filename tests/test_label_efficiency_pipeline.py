"""End to end: ``nnunet-subfore label-efficiency --quick`` through nnUNetv2_train on the CNN demo's datasets,
killed after its first fine-tuning and run again: the finished run is not redone, the rest finishes, and
the user's nnU-Net folders are left as they were.

Slow: it shares the ``cnn_demo_run`` fixture (conftest.py) with test_cnn_pipeline.py.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from subfore_test_helpers import run, tree_digest

from nnunet_subfore.commands import console_script
from nnunet_subfore.demo import CHAINS, DOWNSTREAM_ID, DOWNSTREAM_NAME
from nnunet_subfore.label_efficiency import QUICK_TRAINER
from nnunet_subfore.paths import dataset_folder_name, trainer_output_folder

pytestmark = pytest.mark.slow

DOWNSTREAM = dataset_folder_name(DOWNSTREAM_ID, DOWNSTREAM_NAME)
PLANS = CHAINS["cnn"].downstream_plans


def fold_folder(output: Path, arm: str, trainer: str, fold: int) -> Path:
    return trainer_output_folder(output / "results" / arm, DOWNSTREAM, trainer, PLANS, "3d_fullres") / f"fold_{fold}"


def wait_for(condition, process: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"label-efficiency ended (exit {process.returncode}) before the kill:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("label-efficiency took too long to reach the point of the kill")
        time.sleep(0.5)


def test_quick_runs_through_nnunet_and_resumes_after_a_kill(cnn_demo_run, cnn_checkpoint, tmp_path):
    _, env, _ = cnn_demo_run
    user_folders = [Path(env[v]) / DOWNSTREAM for v in ("nnUNet_preprocessed", "nnUNet_results")]
    before = [tree_digest(folder) for folder in user_folders]
    output = tmp_path / "experiment"
    command = ["label-efficiency", "-d", str(DOWNSTREAM_ID), "-p", PLANS, "--quick", "--device", "cpu",
               "--arm", f"pretrained={cnn_checkpoint}", "-o", str(output)]
    first_summary = fold_folder(output, "scratch", f"{QUICK_TRAINER}_scratch", 0) / "validation" / "summary.json"
    second_run = fold_folder(output, "pretrained", QUICK_TRAINER, 0)
    # run 1 (scratch, 1 case) finishes, run 2 (pretrained, 1 case) starts: kill the command and its nnUNetv2_train
    process = subprocess.Popen([console_script("nnunet-subfore"), *command], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, encoding="utf-8", errors="replace", start_new_session=True)
    wait_for(lambda: first_summary.is_file() and any(second_run.glob("training_log_*.txt")), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    finished = {p: p.stat().st_mtime_ns for p in first_summary.parents[1].glob("**/*") if p.is_file()}

    done = run(["nnunet-subfore", *command], env, timeout=1800)
    assert "[1/4] scratch, 1 labelled case, seed 0 (fold 0): finished earlier" in done.stdout
    assert done.stdout.count("done in") == 3 and "all runs done" in done.stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the finished run was not touched
    record = json.loads((output / "label_efficiency.json").read_text())
    assert sorted((r["arm"], r["labelled_cases"]) for r in record["runs"]) == [
        ("pretrained", 1), ("pretrained", 2), ("scratch", 1), ("scratch", 2)]
    assert all(math.isfinite(r["dice"]) and len(r["train_cases"]) == r["labelled_cases"] for r in record["runs"])
    heldout = record["heldout"]
    assert len(heldout) == 1 and not any(heldout[0] in r["train_cases"] for r in record["runs"])
    validated = json.loads(first_summary.read_text())["metric_per_case"]
    assert [Path(case["reference_file"]).name for case in validated] == [f"{heldout[0]}.nii.gz"]
    log = next(fold_folder(output, "pretrained", QUICK_TRAINER, 1).glob("training_log_*.txt")).read_text()
    assert "carried over" in log  # the pretrained arm started from the checkpoint
    assert "| pretrained | 2 | 1 |" in done.stdout and (output / "label_efficiency.png").is_file()
    assert [tree_digest(folder) for folder in user_folders] == before
