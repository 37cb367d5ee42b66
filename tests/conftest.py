"""Shared fixtures: the nnU-Net environment and one demo run whose datasets the end-to-end tests reuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from nnunet_subfore.cli import trainer_path
from nnunet_subfore.demo import console_script

TEST_TRAINERS = Path(__file__).parent / "ext_trainers"
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_n_proc_DA")


def nnunet_env(root: Path) -> Dict[str, str]:
    """An environment for nnU-Net commands with its folders under ``root`` and the SubFore trainers found."""
    env = {k: v for k, v in os.environ.items() if k not in NNUNET_VARS}
    env.update(
        nnUNet_raw=str(root / "nnUNet_raw"),
        nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
        nnUNet_results=str(root / "nnUNet_results"),
        nnUNet_extTrainer=os.pathsep.join([str(trainer_path()), str(TEST_TRAINERS)]),
        nnUNet_def_n_proc="1",
        MPLBACKEND="Agg",
    )
    return env


def run(command: List[str], env: Dict[str, str], training: bool = False, check: bool = True,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Run an installed console script (nnUNetv2_*, nnunet-subfore) and return its completed process."""
    env = dict(env)
    if training:
        env["nnUNet_n_proc_DA"] = "0"
    done = subprocess.run([console_script(command[0]), *command[1:]], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed with exit {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``nnunet-subfore demo --quick`` once per session: its datasets, results and printed report.

    Returns (workdir, env, completed process). The demo sets its own nnU-Net folders inside the workdir.
    """
    workdir = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if k not in NNUNET_VARS}
    done = run(["nnunet-subfore", "demo", "--quick", "--workdir", str(workdir), "--force"], env, timeout=1800)
    return workdir, nnunet_env(workdir), done
