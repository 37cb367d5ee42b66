"""``nnunet-subfore label-efficiency``: does pretraining help on *my* data, and with how many labels?

On a labelled dataset preprocessed with the pretraining plans, fine-tune each pretrained checkpoint
(an *arm*) and nnU-Net from scratch on nested subsets of 1, 2, 4, ... labelled cases, several seeds
each, all through ``nnUNetv2_train``, and evaluate every run on one fixed held-out set with nnU-Net's
own final validation. The table (:mod:`nnunet_subfore.reporting.label_efficiency_report`) pairs each
arm with scratch on the same subset.

Everything is written under the output folder; the user's nnU-Net folders are only read:

- ``preprocessed/DatasetXXX_NAME``: links to the user's preprocessed dataset and the experiment's own
  ``splits_final.json`` (fold k = one label count and seed; :mod:`nnunet_subfore.label_efficiency_inputs`);
- ``results/<arm>/``: each arm's ``nnUNet_results``;
- ``logs/``: one log per run; ``experiment.json``: the design (held-out cases, folds, arms), which a
  rerun extends and resumes (:mod:`nnunet_subfore.label_efficiency_design`);
- ``label_efficiency.{png,md,csv,json}``: the report, rewritten after every run of the command.

Every check (plans, preprocessed data, held-out cases, trainers, each checkpoint against its trainer's
network) runs before the first training.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, TextIO, Union

from nnunet_subfore.commands import nnunet_environment
from nnunet_subfore.demo_chains import CHAINS
from nnunet_subfore.errors import UserError
from nnunet_subfore.label_efficiency_design import (
    DEFAULT_LABEL_COUNTS,
    DEFAULT_SEEDS,
    SCRATCH_ARM,
    Arm,
    Experiment,
    checked_label_counts,
    choose_heldout,
    extend_experiment,
    parse_arms,
    splits,
)
from nnunet_subfore.label_efficiency_inputs import PreprocessedDataset, link_preprocessed, read_preprocessed
from nnunet_subfore.label_efficiency_runs import Execute, Run, RunLayout, RunResult, run_all

#: The design record in the output folder; a folder without it and not empty is not ours.
RECORD = "experiment.json"
DEFAULT_TRAINER = "nnUNetTrainer"
#: ``--quick`` (the tests): the demo's shortest CNN fine-tuning (its scratch twin for scratch), 1 and 2 labelled
#: cases, one seed, one held-out case. Use it with the tiny-CNN plans (``nnunet-subfore plans --tiny-cnn``).
QUICK_TRAINER = CHAINS["cnn"].quick_trainers[1]
QUICK_LABEL_COUNTS, QUICK_SEEDS, QUICK_HELDOUT = (1, 2), (0,), 1


@dataclass
class LabelEfficiencyResult:
    """What :func:`label_efficiency` ran and wrote."""

    experiment: Experiment
    results: List[RunResult]
    table: object  # reporting.label_efficiency_report.LabelEfficiencyTable
    markdown: str
    files: List[Path]


def label_efficiency(dataset: Union[int, str], output: Path, plans: str = "nnUNetPlans",
                     configuration: str = "3d_fullres", trainer: Optional[str] = None, arms: Sequence[str] = (),
                     arm_trainers: Sequence[str] = (), scratch_trainer: Optional[str] = None,
                     label_counts: Optional[Sequence[int]] = None, seeds: Optional[Sequence[int]] = None,
                     heldout: Optional[int] = None, heldout_cases: Optional[Sequence[str]] = None,
                     device: Optional[str] = None, quick: bool = False, preprocessed_root: Optional[Path] = None,
                     stream: TextIO = sys.stdout, execute: Optional[Execute] = None,
                     environment: Optional[Mapping[str, str]] = None) -> LabelEfficiencyResult:
    """Run (or resume) a label-efficiency experiment and write its report into ``output``.

    Args:
        dataset: ID or ``DatasetXXX_NAME`` of the labelled dataset in ``preprocessed_root``.
        output: the experiment's folder (new, empty, or one this command made: then it resumes).
        plans, configuration: the plans the dataset was preprocessed with (the pretraining plans, moved).
        trainer: fine-tuning trainer of the pretrained arms (default nnUNetTrainer; ``quick``: the demo's).
        arms: ``NAME=CHECKPOINT``, one per pretrained arm.
        arm_trainers: ``NAME=TRAINER`` for arms that fine-tune with another trainer than ``trainer``.
        scratch_trainer: trainer of the scratch arm (default ``<trainer>_scratch`` if it exists, else ``trainer``).
        label_counts, seeds: labelled cases per run and subset seeds (default 1 2 4 and 0 1 2).
        heldout, heldout_cases: how many cases to hold out (default a fifth, at least 1), or which.
        device: ``cuda``, ``cpu`` or ``mps`` (default: cuda when available).
        quick: small defaults for tests (:data:`QUICK_TRAINER`, 1 and 2 labels, one seed, one held-out case).
        preprocessed_root: default ``$nnUNet_preprocessed``.
        stream: progress lines.
        execute: runs a command (tests replace it); default nnU-Net's console scripts with a log per run.
        environment: what the runs' environment starts from (:func:`experiment_environment`; default this
            process's): ``nnUNet_raw`` for the leakage guard, worker counts that win over the sized ones.

    Raises:
        UserError: bad input, before any training; a failed run (named, with its log).
    """
    trainer = trainer or (QUICK_TRAINER if quick else DEFAULT_TRAINER)
    if quick:
        label_counts = label_counts or QUICK_LABEL_COUNTS
        seeds = seeds if seeds is not None else QUICK_SEEDS
        heldout = heldout if heldout is not None or heldout_cases else QUICK_HELDOUT
    source = read_preprocessed(dataset, plans, configuration, preprocessed_root)
    held = choose_heldout(source.cases, heldout, heldout_cases)
    pool = [c for c in source.cases if c not in set(held)]
    counts = checked_label_counts(label_counts or DEFAULT_LABEL_COUNTS, len(pool), len(held))
    seeds = list(DEFAULT_SEEDS if seeds is None else seeds)
    all_arms = parse_arms(arms, trainer, arm_trainers)  # the cheap checks first, the checkpoints last
    all_arms.insert(0, Arm(SCRATCH_ARM, scratch_trainer or scratch_twin(trainer)))
    output = Path(output).resolve()
    requested = Experiment(source.name, plans, configuration, tuple(held), [], {a.name: a for a in all_arms})
    experiment, folds = extend_experiment(read_output(output), requested, pool, counts, seeds, str(output))
    check_arms(all_arms, source, stream)
    layout = RunLayout(output, source.name, plans, configuration)
    link_preprocessed(source, layout.preprocessed, splits(experiment.folds, held))
    (output / RECORD).write_text(json.dumps(experiment.to_json(), indent=2), encoding="utf-8")
    device = device or default_device()
    runs = [Run(arm, fold) for fold in folds for arm in all_arms]
    environments = {arm.name: experiment_environment(layout, arm, device, environment) for arm in all_arms}
    stream.write(_header(source, held, pool, counts, seeds, all_arms, len(runs), device, environments[SCRATCH_ARM]))
    results = run_all(runs, layout, lambda arm: environments[arm.name], device,
                      **({"execute": execute} if execute else {}), stream=stream)
    return _report(experiment, results, all_arms, output)


def scratch_twin(trainer: str) -> str:
    """``<trainer>_scratch`` when such a trainer exists (the SubFore trainers have one), else ``trainer``."""
    import contextlib
    import io

    from nnunet_subfore.registry import find_trainer_class

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's search narrates where it looks
            find_trainer_class(f"{trainer}_scratch")
    except UserError:
        return trainer
    return f"{trainer}_scratch"


def check_arms(arms: Sequence[Arm], source: PreprocessedDataset, stream: TextIO) -> None:
    """Every trainer exists, every checkpoint fits its trainer's network on these plans (UserError naming the
    arm, with the fix); a warning when an arm trains for another budget than scratch."""
    from nnunet_subfore.registry import find_trainer_class

    classes = {arm.name: find_trainer_class(arm.trainer) for arm in arms}
    for arm in arms:
        if arm.checkpoint is not None:
            check_checkpoint(arm, source)
    scratch = _budget(classes[SCRATCH_ARM])
    for arm in arms:
        budget = _budget(classes[arm.name])
        if None not in budget + scratch and budget != scratch:
            stream.write(f"WARNING: arm {arm.name} ({arm.trainer}) trains {budget[0]} epochs x {budget[1]} "
                         f"iterations, scratch ({classes[SCRATCH_ARM].__name__}) {scratch[0]} x {scratch[1]}: "
                         f"not the same budget.\n")


def _budget(trainer_class) -> tuple:
    return getattr(trainer_class, "epochs", None), getattr(trainer_class, "iterations_per_epoch", None)


def check_checkpoint(arm: Arm, source: PreprocessedDataset) -> None:
    """UserError (``checkpoints.transfer_error_message``) when ``arm``'s checkpoint does not fit the network its
    trainer builds on ``source``'s plans, key by key as nnU-Net's ``-pretrained_weights`` loader checks it."""
    from nnunet_subfore.checkpoints import compare_state_dicts, load_checkpoint, transfer_error_message
    from nnunet_subfore.networks import backbone_of_state_dict
    from nnunet_subfore.registry import build_trainer_network, suggested_trainers

    try:
        state = load_checkpoint(arm.checkpoint)["network_weights"]
        target = build_trainer_network(arm.trainer, source.plans_file, source.configuration,
                                       source.num_input_channels, source.num_labels)
    except UserError as e:
        raise UserError(f"--arm {arm.name}: {e}") from e
    report = compare_state_dicts(target.network.state_dict(), state)
    if not report.ok:
        hints = suggested_trainers(arm.trainer)
        raise UserError(f"--arm {arm.name}: " + transfer_error_message(
            report, arm.checkpoint, target.backbone, backbone_of_state_dict(state), arm.trainer, hints))


def read_output(output: Path) -> Optional[Experiment]:
    """The experiment already in ``output`` (None for a new or empty folder); UserError for a folder that
    holds something else."""
    record = output / RECORD
    if record.is_file():
        try:
            return Experiment.from_json(json.loads(record.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{record} is damaged ({type(e).__name__}: {e}); use a new output folder.") from e
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"{output} is not empty and holds no {RECORD}: it was not made by label-efficiency. Choose "
                        f"a new or empty folder with -o (nothing is written into folders this command did not make).")
    return None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def available_cores() -> int:
    """The cores this process may run on (the affinity mask, which containers and job schedulers set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_counts(cores: int, device: str) -> Dict[str, str]:
    """nnU-Net's worker counts sized to ``cores``, one training at a time.

    ``nnUNet_def_n_proc`` (export processes of the final validation): half the cores, at most nnU-Net's 8
    (on 2 cores 1 worker validated in 29 s against 73 s with 8). Data augmentation: in-process on a CPU
    (the workers would compete with the training for the same cores) with one torch thread per core, whose
    idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``: on a shared 2-core machine spinning threads made
    a demo step 1.8-2.4 s instead of 0.30-0.33 s); ``cores - 2`` workers (at most nnU-Net's 12) beside a GPU.
    """
    counts = {"nnUNet_def_n_proc": str(max(1, min(8, cores // 2)))}
    if device == "cpu":
        counts.update(nnUNet_n_proc_DA="0", OMP_NUM_THREADS=str(max(1, cores)), OMP_WAIT_POLICY="PASSIVE")
    else:
        counts["nnUNet_n_proc_DA"] = str(max(1, min(12, cores - 2)))
    return counts


def experiment_environment(layout: RunLayout, arm: Arm, device: str, base: Optional[Mapping[str, str]] = None,
                           cores: Optional[int] = None) -> Dict[str, str]:
    """The environment of ``arm``'s ``nnUNetv2_train``: the experiment's preprocessed folder, the arm's own
    results folder, the user's ``nnUNet_raw`` (the leakage guard reads it) and :func:`worker_counts`; a
    worker variable set in ``base`` (default: this process's environment) wins."""
    from nnunet_subfore.registry import trainer_path

    base = dict(os.environ if base is None else base)
    sized = worker_counts(available_cores() if cores is None else cores, device)
    env = nnunet_environment([trainer_path()], base={**sized, **{k: v for k, v in base.items() if v}})
    env["nnUNet_n_proc_DA"] = base.get("nnUNet_n_proc_DA") or sized["nnUNet_n_proc_DA"]
    env["nnUNet_preprocessed"] = str(layout.preprocessed)
    env["nnUNet_results"] = str(layout.results_root(arm))
    return env


def _header(source: PreprocessedDataset, heldout: Sequence[str], pool: Sequence[str], counts: Sequence[int],
            seeds: Sequence[int], arms: Sequence[Arm], n_runs: int, device: str, env: Mapping[str, str]) -> str:
    arm_text = "; ".join(f"{a.name} = {a.trainer}" + (f" from {a.checkpoint}" if a.checkpoint else " from scratch")
                         for a in arms)
    names = ("nnUNet_def_n_proc", "nnUNet_n_proc_DA", "OMP_NUM_THREADS")
    workers = ", ".join(f"{k}={env[k]}" for k in names if k in env)
    return (f"label-efficiency on {source.name} ({source.configuration}, {source.plans}): {len(heldout)} held-out "
            f"case(s) ({', '.join(heldout)}), {len(pool)} to draw from; labelled cases {list(counts)}, seeds "
            f"{list(seeds)}\narms: {arm_text}\n{n_runs} runs on {device} ({workers}; export these variables to "
            f"change them)\n")


def _report(experiment: Experiment, results: List[RunResult], arms: Sequence[Arm],
            output: Path) -> LabelEfficiencyResult:
    from nnunet_subfore.reporting.label_efficiency_report import (
        build_table,
        markdown,
        write_label_efficiency_report,
    )

    table = build_table(results, arms, experiment.dataset, experiment.plans, experiment.configuration,
                        experiment.heldout)
    files = write_label_efficiency_report(table, output, force=True)  # derived from the runs: rewritten each time
    return LabelEfficiencyResult(experiment, results, table, markdown(table), files)
