"""The design of a label-efficiency experiment: the held-out set, the nested training subsets, the folds
and the arms, and the record that lets a rerun resume it.

Pure Python and numpy (no nnU-Net): :mod:`nnunet_subfore.label_efficiency` runs the design through
nnU-Net's commands.

- **Held-out set**: ``--heldout N`` cases drawn from the sorted case list with a fixed seed
  (:data:`HELDOUT_SEED`), the same whatever the training seeds; or named cases. The rest is the pool.
- **Nested subsets**: each training seed permutes the pool once; its subset of ``n`` labelled cases is
  the first ``n`` cases of that permutation, so the 1-case set lies inside the 2-case set, and so on,
  and adding a label count or a seed later leaves the existing subsets as they were.
- **Folds**: one per (label count, seed), in nnU-Net's ``splits_final.json`` format: ``train`` the
  subset, ``val`` the held-out set. Every arm trains the same folds, so arm and scratch are paired
  by fold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nnunet_subfore.errors import UserError

#: Seed of the held-out draw (its own random stream, independent of the training seeds).
HELDOUT_SEED = 20240917
#: Random streams: held-out draw and nested subsets never share one, whatever seeds a user picks.
_HELDOUT_STREAM, _SUBSET_STREAM = 0, 1
#: Share of the cases held out when ``--heldout`` is not given (at least one case).
DEFAULT_HELDOUT_SHARE = 0.2
DEFAULT_LABEL_COUNTS = (1, 2, 4)
DEFAULT_SEEDS = (0, 1, 2)
#: The from-scratch arm, always run.
SCRATCH_ARM = "scratch"
_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class Fold:
    """One (label count, seed) combination: nnU-Net fold ``index`` trains on ``train``."""

    index: int
    labels: int
    seed: int
    train: Tuple[str, ...]

    def to_json(self) -> dict:
        return {"fold": self.index, "labels": self.labels, "seed": self.seed, "train": list(self.train)}


@dataclass(frozen=True)
class Arm:
    """One way to start the fine-tuning: a trainer and a pretrained checkpoint (None: from scratch)."""

    name: str
    trainer: str
    checkpoint: Optional[Path] = None

    def to_json(self) -> dict:
        return {"trainer": self.trainer, "checkpoint": None if self.checkpoint is None else str(self.checkpoint)}


def choose_heldout(cases: Sequence[str], count: Optional[int] = None, names: Optional[Sequence[str]] = None,
                   seed: int = HELDOUT_SEED) -> List[str]:
    """The held-out cases: ``names`` if given, else ``count`` cases (default :data:`DEFAULT_HELDOUT_SHARE` of
    them, at least 1) drawn with ``seed``; sorted.

    Raises:
        UserError: an unknown name, no case held out, or no case left for training.
    """
    cases = sorted(set(cases))
    if names:
        unknown = sorted(set(names) - set(cases))
        if unknown:
            raise UserError(f"--heldout-cases names cases the dataset does not have: {unknown} (its cases: "
                            f"{_shown(cases)}).")
        chosen = sorted(set(names))
    else:
        count = max(1, int(round(DEFAULT_HELDOUT_SHARE * len(cases)))) if count is None else int(count)
        if count < 1:
            raise UserError(f"--heldout must be at least 1, got {count}: the evaluation needs held-out cases.")
        if count >= len(cases):
            raise UserError(f"--heldout {count} leaves no case to train on: the dataset has {len(cases)} cases. "
                            f"Hold out fewer.")
        rng = np.random.default_rng((_HELDOUT_STREAM, int(seed)))
        chosen = sorted(cases[i] for i in rng.choice(len(cases), size=count, replace=False))
    if len(chosen) >= len(cases):
        raise UserError(f"All {len(cases)} cases are held out; none is left to train on. Hold out fewer.")
    return chosen


def nested_order(pool: Sequence[str], seed: int) -> List[str]:
    """The pool in the order seed ``seed`` draws it: the subset of ``n`` labelled cases is its first ``n``."""
    pool = sorted(set(pool))
    rng = np.random.default_rng((_SUBSET_STREAM, int(seed)))
    return [pool[i] for i in rng.permutation(len(pool))]


def checked_label_counts(label_counts: Sequence[int], pool_size: int, num_heldout: int) -> List[int]:
    """Distinct, sorted label counts that fit the pool; UserError naming the one that does not."""
    counts = sorted(set(int(n) for n in label_counts))
    if not counts:
        raise UserError("No label count given: pass e.g. --labels 1 2 4.")
    if counts[0] < 1:
        raise UserError(f"Label counts must be at least 1, got {counts[0]}.")
    if counts[-1] > pool_size:
        raise UserError(f"--labels {counts[-1]} needs {counts[-1]} training cases, but only {pool_size} are left "
                        f"after holding out {num_heldout}: lower the largest label count or --heldout.")
    return counts


def make_folds(pool: Sequence[str], label_counts: Sequence[int], seeds: Sequence[int],
               first_index: int = 0) -> List[Fold]:
    """One fold per (label count, seed), numbered from ``first_index`` by label count, then seed."""
    seeds = sorted(set(int(s) for s in seeds))
    if not seeds:
        raise UserError("No seed given: pass e.g. --seeds 0 1 2.")
    orders = {seed: nested_order(pool, seed) for seed in seeds}
    pairs = [(n, seed) for n in sorted(set(label_counts)) for seed in seeds]
    return [Fold(first_index + i, n, seed, tuple(sorted(orders[seed][:n]))) for i, (n, seed) in enumerate(pairs)]


def splits(folds: Sequence[Fold], heldout: Sequence[str]) -> List[dict]:
    """nnU-Net's ``splits_final.json``: entry ``k`` is fold ``k`` (folds must be numbered 0, 1, ...)."""
    ordered = sorted(folds, key=lambda f: f.index)
    if [f.index for f in ordered] != list(range(len(ordered))):
        raise ValueError(f"folds must be numbered 0..{len(ordered) - 1}, got {[f.index for f in ordered]}")
    return [{"train": list(f.train), "val": list(heldout)} for f in ordered]


def parse_arms(specs: Sequence[str], trainer: str, arm_trainers: Sequence[str] = ()) -> List[Arm]:
    """``NAME=CHECKPOINT`` specs (``--arm``) with ``trainer``, or the one ``NAME=TRAINER`` (``--arm-trainer``) names."""
    trainers = dict(_split_spec(s, "--arm-trainer", "NAME=TRAINER") for s in arm_trainers)
    arms: Dict[str, Arm] = {}
    for spec in specs:
        name, checkpoint = _split_spec(spec, "--arm", "NAME=CHECKPOINT")
        if not _ARM_NAME.fullmatch(name):
            raise UserError(f"--arm name {name!r} must be letters, digits, '_' and '-' (it names a results folder).")
        if name == SCRATCH_ARM:
            raise UserError(f"--arm name {SCRATCH_ARM!r} is taken by the from-scratch arm; choose another name.")
        if name in arms:
            raise UserError(f"--arm {name} is given twice; give each checkpoint its own name.")
        arms[name] = Arm(name, trainers.pop(name, trainer), Path(checkpoint).expanduser().resolve())
    if trainers:
        raise UserError(f"--arm-trainer names arms that no --arm defines: {sorted(trainers)}.")
    return list(arms.values())


@dataclass
class Experiment:
    """What an output folder holds (its ``experiment.json``): every fold and arm run there so far.

    Attributes:
        dataset, plans, configuration: the nnU-Net dataset folder name, plans and configuration.
        heldout: the held-out cases, the ``val`` set of every fold.
        folds: every fold, numbered 0, 1, ... as in ``splits_final.json``.
        arms: every arm by name (the scratch arm included).
    """

    dataset: str
    plans: str
    configuration: str
    heldout: Tuple[str, ...]
    folds: List[Fold]
    arms: Dict[str, Arm]

    def to_json(self) -> dict:
        return {"version": RECORD_VERSION, "dataset": self.dataset, "plans": self.plans,
                "configuration": self.configuration, "heldout": list(self.heldout),
                "folds": [f.to_json() for f in self.folds], "arms": {k: a.to_json() for k, a in self.arms.items()}}

    @classmethod
    def from_json(cls, record: dict) -> "Experiment":
        folds = [Fold(int(f["fold"]), int(f["labels"]), int(f["seed"]), tuple(f["train"])) for f in record["folds"]]
        arms = {name: Arm(name, a["trainer"], None if a["checkpoint"] is None else Path(a["checkpoint"]))
                for name, a in record["arms"].items()}
        return cls(record["dataset"], record["plans"], record["configuration"], tuple(record["heldout"]), folds, arms)


#: Version of ``experiment.json``.
RECORD_VERSION = 1


def extend_experiment(earlier: Optional[Experiment], requested: Experiment, pool: Sequence[str],
                      label_counts: Sequence[int], seeds: Sequence[int], where: str) -> Tuple[Experiment, List[Fold]]:
    """The experiment with the requested folds and arms added to ``earlier`` (None: a new one), and the
    requested folds. Folds and arms already there keep their numbers; a rerun resumes them.

    Args:
        requested: dataset, plans, configuration, held-out cases and arms of this run (its folds are ignored).
        where: the output folder, named in messages.

    Raises:
        UserError: ``earlier`` was run on another dataset, plans, configuration or held-out set, or an
            arm of the same name with another trainer or checkpoint, or the pool changed.
    """
    if earlier is None:
        earlier = Experiment(requested.dataset, requested.plans, requested.configuration, requested.heldout, [], {})
    _check_same_setting(earlier, requested, where)
    folds = list(earlier.folds)
    by_pair = {(f.labels, f.seed): f for f in folds}
    for fold in make_folds(pool, label_counts, seeds):
        known = by_pair.get((fold.labels, fold.seed))
        if known is None:
            by_pair[(fold.labels, fold.seed)] = known = Fold(len(folds), fold.labels, fold.seed, fold.train)
            folds.append(known)
        elif known.train != fold.train:
            raise UserError(f"{where} trained fold {known.index} ({fold.labels} labelled, seed {fold.seed}) on "
                            f"{list(known.train)}, but the dataset's cases now give {list(fold.train)}: the "
                            f"preprocessed cases changed. Use a new output folder.")
    arms = dict(earlier.arms)
    for name, arm in requested.arms.items():
        if name in arms and arms[name] != arm:
            raise UserError(f"{where} ran arm {name!r} with {arms[name].to_json()}; now it is {arm.to_json()}. "
                            f"Give the new arm another name, or use a new output folder.")
        arms[name] = arm
    wanted = [by_pair[(n, s)] for n in sorted(set(label_counts)) for s in sorted(set(seeds))]
    return Experiment(earlier.dataset, earlier.plans, earlier.configuration, earlier.heldout, folds, arms), wanted


def _check_same_setting(earlier: Experiment, requested: Experiment, where: str) -> None:
    for what in ("dataset", "plans", "configuration", "heldout"):
        before, now = getattr(earlier, what), getattr(requested, what)
        if before != now:
            shown = (lambda v: list(v)) if what == "heldout" else (lambda v: v)
            raise UserError(f"{where} holds an experiment with {what} {shown(before)}, this run asks for "
                            f"{shown(now)}. Use a new output folder (-o), or rerun with the same setting to resume it.")


def _split_spec(spec: str, option: str, form: str) -> Tuple[str, str]:
    name, sep, value = str(spec).partition("=")
    if not sep or not name or not value:
        raise UserError(f"{option} takes {form}, got {spec!r}.")
    return name, value


def _shown(items: Sequence[str], limit: int = 8) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
