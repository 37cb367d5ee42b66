"""Helpers shared by the tests (imported as a module: ``tests/`` is on pytest's ``pythonpath``).

Fixtures live in ``conftest.py``; plain functions live here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from nnunet_subfore.commands import CommandError, nnunet_environment, run_command
from nnunet_subfore.registry import trainer_path

#: Test-only trainer variants, put on nnUNet_extTrainer next to the package's trainers.
TEST_TRAINERS = Path(__file__).parent / "ext_trainers"
#: nnU-Net variables that a test environment sets itself (never inherited from the developer's shell).
NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_n_proc_DA")


def clean_environment() -> Dict[str, str]:
    """This process's environment without any nnU-Net variable."""
    import os

    return {k: v for k, v in os.environ.items() if k not in NNUNET_VARIABLES}


def nnunet_test_environment(root: Path) -> Dict[str, str]:
    """An environment for nnU-Net commands with its folders under ``root`` and the SubFore + test trainers found."""
    return nnunet_environment([trainer_path(), TEST_TRAINERS], root=root, base=clean_environment())


def run(command: List[str], env: Dict[str, str], training: bool = False, check: bool = True,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Run an installed console script; a failure fails the test with the command's output."""
    try:
        return run_command(command, env, training=training, check=check, timeout=timeout)
    except CommandError as e:
        pytest.fail(str(e))


def result_folder(env: Dict[str, str], dataset: str, trainer: str, plans: str = "nnUNetPlans",
                  configuration: str = "3d_fullres") -> Path:
    """nnU-Net's result folder of a run in the environment's ``nnUNet_results``."""
    from nnunet_subfore.paths import trainer_output_folder

    return trainer_output_folder(env["nnUNet_results"], dataset, trainer, plans, configuration)
