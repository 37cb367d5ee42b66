"""The one-way structure (docs/architecture.md), as import-linter contracts in pyproject.toml.

The package is assembled from the repository the way an install lays it out (``trainers/`` becomes
``nnunet_subfore/trainers``) in a temporary folder, so the check reads this checkout's source whether
the package is installed editable or not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def assembled(tmp_path) -> Path:
    root = tmp_path / "src"
    # a worktree's nnunet_subfore/trainers link to ../trainers is left out: the next line puts the trainers there
    shutil.copytree(REPO / "nnunet_subfore", root / "nnunet_subfore",
                    ignore=lambda folder, names: [n for n in names if n == "__pycache__" or Path(folder, n).is_symlink()])
    shutil.copytree(REPO / "trainers", root / "nnunet_subfore" / "trainers", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONIOENCODING="utf-8")
    script = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(sys.argv[1]))"
    return subprocess.run([sys.executable, "-c", script, str(REPO / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300)


def add_import(module: Path, line: str) -> None:
    module.write_text(module.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_contracts_hold(assembled):
    done = lint_imports(assembled)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("masking.py", "from nnunet_subfore.trainers.subfore_pretrain import SubForePretrainTrainer",
     "Only the registry imports the trainers"),
    ("checkpoints.py", "import nnunet_subfore.trainers.subfore_finetune", "Only the registry imports the trainers"),
    ("plans.py", "from nnunet_subfore.registry import trainer_path",
     "Only the CLI, the demo and label-efficiency use the registry"),
    ("demo.py", "from nnunet_subfore.cli import main", "The CLI sits on the demo"),
    ("masking.py", "import nnunetv2.paths", "The masking math knows nothing of nnU-Net"),
    ("recipe.py", "from nnunet_subfore.reporting.masking_figure import draw_masking", "No import cycles"),
])
def test_a_wrong_door_breaks_a_contract(assembled, module, line, broken):
    add_import(assembled / "nnunet_subfore" / module, line)
    done = lint_imports(assembled)
    assert done.returncode != 0
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout, done.stdout
