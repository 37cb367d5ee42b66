"""The paper's train/validation split, as fold 5 after nnU-Net's own five folds in ``splits_final.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nnunet_subfore.data.converters.layout import Listing
from nnunet_subfore.data.converters.report import ConversionReport
from nnunet_subfore.data.converters.specs import DatasetSpec
from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import nnunet_folder


SPLIT_SEED = 12345
"""nnU-Net's seed for its 5-fold split (``nnUNetTrainer.do_split``); also seeds the paper split."""


def paper_fold(case_ids: Sequence[str], paper: Tuple[int, int], groups: Optional[Mapping[str, str]] = None,
               seed: int = SPLIT_SEED) -> Tuple[Dict[str, List[str]], str]:
    """One train/validation split in the paper's proportions.

    With an official partition (``groups`` covering every case with both ``train`` and ``val``), that
    partition is the split. Otherwise the validation set is a seeded random ``round(n * val/(train+val))``
    cases (at least one, and at least one left for training): exactly the paper's counts when the
    dataset has the paper's number of cases, the paper's validation fraction otherwise.

    Args:
        case_ids: the converted cases.
        paper: the paper's ``(train, validation)`` counts.
        groups: official ``{case_id: "train"|"val"}`` partition, if the source has one.
        seed: seed of the random choice.

    Returns:
        ``({"train": [...], "val": [...]}, note)``; ``note`` explains any deviation from the paper.

    Raises:
        ValueError: fewer than two cases.
    """
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise ValueError("a train/validation split needs at least two cases")
    n_train, n_val = paper
    if groups and set(groups) >= set(ids) and {groups[i] for i in ids} == {"train", "val"}:
        fold = {"train": [i for i in ids if groups[i] == "train"], "val": [i for i in ids if groups[i] == "val"]}
        note = (f"paper split = the source's official train/validation partition: "
                f"{len(fold['train'])}/{len(fold['val'])} (paper: {n_train}/{n_val}).")
        return fold, note
    fraction = n_val / (n_train + n_val)
    count = min(max(int(round(len(ids) * fraction)), 1), len(ids) - 1)
    chosen = set(np.random.RandomState(seed).permutation(len(ids))[:count].tolist())
    fold = {"train": [c for k, c in enumerate(ids) if k not in chosen], "val": [c for k, c in enumerate(ids) if k in chosen]}
    if len(ids) == n_train + n_val:
        note = f"paper split {len(fold['train'])}/{len(fold['val'])} as in the paper."
    else:
        note = (f"the paper used {n_train}/{n_val} cases; this dataset has {len(ids)}, so the paper split keeps the "
                f"paper's validation fraction ({fraction:.0%}): {len(fold['train'])}/{len(fold['val'])}.")
    return fold, note


def paper_splits(case_ids: Sequence[str], paper: Tuple[int, int], groups: Optional[Mapping[str, str]] = None
                 ) -> Tuple[List[Dict[str, List[str]]], str]:
    """nnU-Net's five folds (as ``nnUNetTrainer.do_split`` makes them) followed by the paper split as fold 5.

    Args:
        case_ids: the converted cases.
        paper: the paper's ``(train, validation)`` counts.
        groups: official partition, see :func:`paper_fold`.

    Raises:
        ValueError: fewer than five cases (nnU-Net's 5-fold split needs five).
    """
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = [str(i) for i in np.sort(list(case_ids))]
    if len(ids) < 5:
        raise ValueError(f"nnU-Net's 5-fold split needs at least 5 cases, got {len(ids)}")
    splits = generate_crossval_split(ids, seed=SPLIT_SEED, n_splits=5)
    splits = [{"train": [str(i) for i in s["train"]], "val": [str(i) for i in s["val"]]} for s in splits]
    fold, note = paper_fold(ids, paper, groups)
    return splits + [fold], note


def paper_split_target(folder: str, preprocessed_root: Optional[Path], force: bool) -> Path:
    """Where --paper-split writes; refused when it exists and ``force`` is False."""
    target = nnunet_folder("preprocessed", preprocessed_root) / folder / "splits_final.json"
    if target.exists() and not force:
        raise UserError(f"{target} already exists. Pass --force to replace it, or convert without --paper-split.")
    return target


def note_stale_splits(report: ConversionReport, folder: str, preprocessed_root: Optional[Path]) -> None:
    """After a --force re-conversion, point at a splits_final.json of the earlier output."""
    try:
        stale = nnunet_folder("preprocessed", preprocessed_root) / folder / "splits_final.json"
    except UserError:
        return
    if stale.is_file():
        report.notes.append(f"{stale} is from an earlier conversion; nnU-Net keeps using it. Delete it (or rerun with "
                            f"--paper-split --force) if the cases changed.")


def write_paper_split(spec: DatasetSpec, listing: Listing, report: ConversionReport, target: Path) -> None:
    """Write :func:`paper_splits` of the converted cases to ``target`` and into the dataset folder (or report why not)."""
    groups = {c.case_id: c.group for c in listing.cases if c.group}
    try:
        splits, note = paper_splits(report.converted, spec.paper_split, groups or None)
    except ValueError as error:
        report.not_done.append(f"paper split: {error}; splits_final.json not written.")
        return
    text = json.dumps(splits, indent=4)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    (report.output_dir / "splits_final.json").write_text(text)
    report.splits_file = target
    report.notes.append(note + " Train with fold 5 for the paper split (nnUNetv2_train ... 5).")
