"""The runs of a label-efficiency experiment: where each lives, whether it finished, the
``nnUNetv2_train`` command that (re)starts it, and the loop that runs them with one progress line each.

A run is one arm trained on one fold (:mod:`nnunet_subfore.label_efficiency_design`). nnU-Net's
final validation, which ``nnUNetv2_train`` runs after training, predicts the fold's held-out cases
and writes ``fold_k/validation/summary.json``: that file is the evaluation, and a run is finished
when it holds a Dice. A run without it restarts with ``--c`` when its fold folder holds an intact
checkpoint (nnU-Net continues from ``checkpoint_final``, else ``_latest``, else ``_best``; after a
kill during the final validation it only validates), else from the start.
"""

from __future__ import annotations

import json
import math
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

from nnunet_subfore.commands import run_command
from nnunet_subfore.errors import UserError
from nnunet_subfore.label_efficiency_design import Arm, Fold
from nnunet_subfore.paths import trainer_output_folder

#: The checkpoints ``nnUNetv2_train --c`` looks for, in its order.
CHECKPOINT_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
FINISHED, RESUME, NEW = "finished", "resume", "new"


@dataclass(frozen=True)
class Run:
    """One arm trained on one fold."""

    arm: Arm
    fold: Fold

    @property
    def name(self) -> str:
        return f"{self.arm.name}__labels{self.fold.labels}__seed{self.fold.seed}"

    def describe(self) -> str:
        cases = "case" if self.fold.labels == 1 else "cases"
        return f"{self.arm.name}, {self.fold.labels} labelled {cases}, seed {self.fold.seed} (fold {self.fold.index})"


@dataclass(frozen=True)
class RunLayout:
    """Where the runs of an experiment in ``output`` live.

    Each arm has its own ``nnUNet_results`` (``output/results/<arm>``), so two arms with the same trainer
    never share a folder; all train from ``output/preprocessed`` (:func:`label_efficiency_inputs.link_preprocessed`).
    """

    output: Path
    dataset: str
    plans: str
    configuration: str

    @property
    def preprocessed(self) -> Path:
        return self.output / "preprocessed"

    def results_root(self, arm: Arm) -> Path:
        return self.output / "results" / arm.name

    def fold_folder(self, run: Run) -> Path:
        folder = trainer_output_folder(self.results_root(run.arm), self.dataset, run.arm.trainer, self.plans,
                                       self.configuration)
        return folder / f"fold_{run.fold.index}"

    def summary_file(self, run: Run) -> Path:
        return self.fold_folder(run) / "validation" / "summary.json"

    def log_file(self, run: Run) -> Path:
        return self.output / "logs" / f"{run.name}.log"


@dataclass(frozen=True)
class RunResult:
    """A finished run: nnU-Net's foreground-mean Dice over the held-out cases, and per label."""

    run: Run
    dice: float
    dice_per_label: Dict[str, float]
    seconds: Optional[float] = None  # None: finished by an earlier invocation


def read_dice(summary_file: Path) -> Optional[Tuple[float, Dict[str, float]]]:
    """(foreground-mean Dice, {label: mean Dice}) of nnU-Net's ``summary.json``; None if missing or unreadable
    (a kill while nnU-Net wrote it).

    The Dice is nnU-Net's ``foreground_mean``; where that is NaN (a label absent from every held-out case and
    never predicted, whose Dice nnU-Net leaves undefined), the mean over the labels that have one.
    """
    try:
        summary = json.loads(Path(summary_file).read_text(encoding="utf-8"))
        dice = float(summary["foreground_mean"]["Dice"])
        per_label = {str(k): float(v["Dice"]) for k, v in summary["mean"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if math.isnan(dice):  # a label absent from every held-out case and never predicted: Dice undefined for it
        defined = [v for v in per_label.values() if math.isfinite(v)]
        dice = sum(defined) / len(defined) if defined else dice
    return dice, per_label


def run_state(fold_folder: Path, summary_file: Path) -> Tuple[str, List[str]]:
    """:data:`FINISHED`, :data:`RESUME` or :data:`NEW`, and the damaged checkpoints removed on the way.

    A checkpoint that is not a complete archive (a kill while it was written) is removed, so that
    ``--c`` (which takes the first that exists) continues from the next intact one.
    """
    if read_dice(summary_file) is not None:
        return FINISHED, []
    removed = []
    for name in CHECKPOINT_ORDER:
        path = Path(fold_folder) / name
        if not path.is_file():
            continue
        if _intact(path):
            return RESUME, removed
        path.unlink()
        removed.append(name)
    return NEW, removed


def _intact(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, EOFError, zipfile.BadZipFile):
        return False


def train_command(run: Run, layout: RunLayout, device: str, resume: bool) -> List[str]:
    """``nnUNetv2_train`` for ``run``: ``--c`` to resume (the weights are in the checkpoint), else
    ``-pretrained_weights`` for a pretrained arm."""
    command = ["nnUNetv2_train", layout.dataset, layout.configuration, str(run.fold.index), "-tr", run.arm.trainer,
               "-p", layout.plans, "-device", device]
    if resume:
        command.append("--c")
    elif run.arm.checkpoint is not None:
        command += ["-pretrained_weights", str(run.arm.checkpoint)]
    return command


#: Runs a command: (command, environment, log file) -> anything; raises on failure.
Execute = Callable[[Sequence[str], Mapping[str, str], Path], object]


def _run_command(command: Sequence[str], env: Mapping[str, str], log: Path) -> object:
    return run_command(command, env, log=log)


@dataclass
class _Clock:
    """Durations of the runs trained so far in this invocation, for the ETA."""

    to_train: int
    seconds: List[float] = field(default_factory=list)

    def eta(self) -> str:
        left = self.to_train - len(self.seconds)
        if left <= 0:
            return "all runs done"
        return f"ETA {format_seconds(left * sum(self.seconds) / len(self.seconds))} for {left} more"


def format_seconds(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3 h 05 min``."""
    if not math.isfinite(seconds) or seconds < 90:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def run_all(runs: Sequence[Run], layout: RunLayout, environment_for: Callable[[Arm], Mapping[str, str]], device: str,
            execute: Execute = _run_command, stream: TextIO = sys.stdout) -> List[RunResult]:
    """Run what has not finished, one progress line per run (``[k/n] what: outcome, Dice; ETA``).

    Args:
        environment_for: the environment of an arm's ``nnUNetv2_train`` (its own ``nnUNet_results``).
        execute: runs a command (default: :func:`nnunet_subfore.commands.run_command` with a log file);
            raises on failure, which stops the loop (rerun to resume).
        stream: where the progress lines go.
    """
    states = {run: run_state(layout.fold_folder(run), layout.summary_file(run)) for run in runs}
    clock = _Clock(to_train=sum(state != FINISHED for state, _ in states.values()))
    results = []
    for k, run in enumerate(runs, start=1):
        state, removed = states[run]
        stream.write(f"[{k}/{len(runs)}] {run.describe()}: ")
        if state == FINISHED:
            dice, per_label = read_dice(layout.summary_file(run))
            stream.write(f"finished earlier, Dice {100 * dice:.1f} % (skipped)\n")
            results.append(RunResult(run, dice, per_label))
            continue
        note = f" (removed damaged {', '.join(removed)})" if removed else ""
        stream.write(("resuming with --c" if state == RESUME else "training") + note + " ... ")
        stream.flush()
        results.append(_train(run, layout, environment_for(run.arm), device, state == RESUME, execute, clock, stream))
    return results


def _train(run: Run, layout: RunLayout, env: Mapping[str, str], device: str, resume: bool, execute: Execute,
           clock: _Clock, stream: TextIO) -> RunResult:
    start = time.monotonic()
    try:
        execute(train_command(run, layout, device, resume), env, layout.log_file(run))
    except BaseException:
        stream.write(f"stopped (log: {layout.log_file(run)})\n")
        raise
    seconds = time.monotonic() - start
    clock.seconds.append(seconds)
    found = read_dice(layout.summary_file(run))
    if found is None:
        stream.write("no summary\n")
        raise UserError(f"nnUNetv2_train finished without writing {layout.summary_file(run)}; see "
                           f"{layout.log_file(run)}.")
    stream.write(f"done in {format_seconds(seconds)}, Dice {100 * found[0]:.1f} %; {clock.eta()}\n")
    stream.flush()
    return RunResult(run, found[0], found[1], seconds)
