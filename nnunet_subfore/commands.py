"""Running nnU-Net's console scripts (``nnUNetv2_*``) in a subprocess: the one runner that the demo,
the tests and the benchmarks use.

nnU-Net reads its folders from the environment when it is imported, so every command gets an
explicit environment (:func:`nnunet_environment`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

from nnunet_subfore.errors import UserError

NNUNET_FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class CommandError(UserError):
    """A command exited with a non-zero status; the message names it, its log and the end of its output."""


def console_script(name: str) -> str:
    """The path of an installed console script: next to this Python first (an unactivated venv), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UserError(f"`{name}` not found next to {sys.executable} nor on PATH: is nnunetv2 installed?")
    return found


def nnunet_environment(trainer_folders: Sequence[Union[str, Path]], root: Optional[Path] = None,
                       keep_set_folders: bool = False, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """An environment for nnU-Net commands.

    Args:
        trainer_folders: folders for ``nnUNet_extTrainer``, first (e.g. ``registry.trainer_path()``);
            folders the base environment already lists follow.
        root: put ``nnUNet_raw`` / ``_preprocessed`` / ``_results`` under this folder; None: keep the base's.
        keep_set_folders: with ``root``, keep the folders the base environment sets (the demo honours
            a user's nnU-Net folders) and put only the unset ones under ``root``.
        base: the environment to start from (default: this process's).
    """
    env = dict(os.environ if base is None else base)
    env.pop("nnUNet_n_proc_DA", None)  # set per command (training only): see run_command
    if root is not None:
        for var in NNUNET_FOLDER_VARIABLES:
            if not (keep_set_folders and env.get(var)):
                env[var] = str(Path(root) / var)
    folders = [os.path.normpath(str(f)) for f in trainer_folders]
    folders += [os.path.normpath(p) for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    env["nnUNet_extTrainer"] = os.pathsep.join(dict.fromkeys(folders))
    env.setdefault("nnUNet_def_n_proc", "1")  # nnU-Net's default of 8 export workers swamps 2 cores
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_command(command: Sequence[str], env: Mapping[str, str], log: Optional[Path] = None, training: bool = False,
                check: bool = True, timeout: Optional[float] = None) -> subprocess.CompletedProcess:
    """Run an installed console script (``nnUNetv2_train``, ``nnunet-subfore``, ...).

    Args:
        command: the script's name and its arguments.
        env: the environment (:func:`nnunet_environment`).
        log: write stdout and stderr there (the command line first); None: capture them in the result.
        training: load data in-process (``nnUNet_n_proc_DA=0``): right for training on CPUs, but it
            crashes ``nnUNetv2_plan_and_preprocess`` in nnunetv2 2.8.1 (``torch.set_num_threads(0)``).
        check: raise :class:`CommandError` on a non-zero exit status.
        timeout: seconds (``subprocess.TimeoutExpired`` past it).
    """
    env = dict(env)
    if training:
        env["nnUNet_n_proc_DA"] = "0"
    argv = [console_script(command[0]), *command[1:]]
    if log is None:
        done = subprocess.run(argv, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout)
        output = (done.stdout or "") + (done.stderr or "")
    else:
        log = Path(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as f:
            f.write(shlex.join(command) + "\n\n")
            f.flush()
            done = subprocess.run(argv, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        output = log.read_text(encoding="utf-8", errors="replace") if done.returncode else ""
    if check and done.returncode != 0:
        tail = "".join(output.splitlines(keepends=True)[-25:])
        where = f"; log: {log}" if log is not None else ""
        raise CommandError(f"`{shlex.join(command)}` failed (exit {done.returncode}){where}\n{tail}")
    return done
