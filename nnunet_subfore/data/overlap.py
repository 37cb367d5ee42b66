"""``check-overlap``: which cases of a downstream dataset (and of image folders) were pretraining cases, as exact
copies (:mod:`nnunet_subfore.data.fingerprints`) or near-duplicates (:mod:`nnunet_subfore.data.near_duplicates`),
with every image read once per file version (:mod:`nnunet_subfore.data.fingerprint_store`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from nnunet_subfore.data.fingerprint_store import FingerprintStore
from nnunet_subfore.data.fingerprints import (
    OverlapReport,
    SharedCase,
    dataset_cases,
    find_shared,
    fingerprint_cases,
    folder_cases,
)
from nnunet_subfore.data.near_duplicates import NEAR_THRESHOLD, match_kind, near_score, unsearchable_cases


def check_overlap(pretrain_raw: Path, downstream_raw: Optional[Path] = None,
                  image_folders: Iterable[Path] = (),
                  progress: Optional[Callable[[str], None]] = None, near: bool = True,
                  store=None) -> OverlapReport:
    """Which cases of a downstream dataset (its training cases) and of ``image_folders`` (e.g. its
    ``imagesTs``) share an image with the training cases of the pretraining dataset ``pretrain_raw``:
    exact copies, and with ``near`` also near-duplicates (crops, resamples, rescaled or reoriented copies).

    Args:
        store: a :class:`~nnunet_subfore.data.fingerprint_store.FingerprintStore` (default: one in the default
            cache folder), so that a second check reads no image again.
    """
    store = FingerprintStore() if store is None else store
    reference_cases = dataset_cases(pretrain_raw)
    checked_cases: Dict[str, Dict[str, List[Path]]] = {}
    file_ending = None
    if downstream_raw is not None:
        checked_cases[f"{Path(downstream_raw).name} training"] = dataset_cases(downstream_raw)
        file_ending = json.loads((Path(downstream_raw) / "dataset.json").read_text(encoding="utf-8")).get("file_ending")
    for folder in image_folders:
        checked_cases[str(folder)] = folder_cases(Path(folder), file_ending)
    reference = fingerprint_cases(reference_cases, progress, store)
    checked = {role: fingerprint_cases(cases, progress, store) for role, cases in checked_cases.items()}
    report = find_shared(reference, checked, Path(pretrain_raw).name)
    if near:
        exact = {(s.role, s.case) for s in report.shared}
        descriptors = {role: {case: [store.entry(p)[1] for p in files] for case, files in cases.items()
                              if (role, case) not in exact} for role, cases in checked_cases.items()}
        report.near_skipped = [f"{role}: {case}" for role, cases in descriptors.items()
                               for case in unsearchable_cases(cases)]
        report.shared += find_near(
            {case: [store.entry(p)[1] for p in files] for case, files in reference_cases.items()}, descriptors)
    return report


#: The most comparisons the fine-tuning trainers' near-duplicate search makes at a training start (about 20 s on
#: one core for the small volumes of benchmarks/scaling.py; more for full-size CT). Beyond it they say so and
#: point to ``check-overlap``, which has no limit.
TRAINER_MAX_PAIRS = 20_000


def near_duplicates_of_fold(pretrain_cases: Mapping[str, Sequence[Path]], fold_cases: Mapping[str, Sequence[Path]],
                            store, max_pairs: int = TRAINER_MAX_PAIRS) -> Tuple[List[SharedCase], List[str], str]:
    """The near-duplicate search of a training start: ``fold_cases`` (``{case: [files]}``, the validation cases not
    already found as exact copies) against the pretraining cases (``{case: [files]}``), through ``store``.

    Returns ``(shared cases with role "validation", cases checked for exact copies only, note)``; ``note`` says
    why nothing was searched (more than ``max_pairs`` comparisons) and is empty otherwise.
    """
    pairs = len(pretrain_cases) * len(fold_cases)
    if pairs > max_pairs:
        return [], [], (f"near-duplicate search not run at the training start ({len(pretrain_cases)} x "
                        f"{len(fold_cases)} = {pairs} comparisons, more than {max_pairs})")
    checked = {case: [store.entry(p)[1] for p in files] for case, files in fold_cases.items()}
    skipped = unsearchable_cases(checked)
    reference = {case: [store.entry(p)[1] for p in files] for case, files in pretrain_cases.items()}
    return find_near(reference, {"validation": checked}), skipped, ""


def find_near(reference: Mapping[str, Sequence], checked: Mapping[str, Mapping[str, Sequence]]) -> List[SharedCase]:
    """Near-duplicates: per checked case (``{role: {case: [descriptors]}}``) the reference case whose descriptor
    (``{case: [descriptors]}``) scores highest against one of its own, if that score reaches
    :data:`~nnunet_subfore.data.near_duplicates.NEAR_THRESHOLD`. Descriptors that are None are skipped."""
    found = []
    for role, cases in checked.items():
        for case, descriptors in cases.items():
            best = None
            for ref_case, ref_descriptors in reference.items():
                for d in filter(None, descriptors):
                    for r in filter(None, ref_descriptors):
                        score = near_score(d, r)
                        if score is not None and score >= NEAR_THRESHOLD and (best is None or score > best[0]):
                            best = (score, ref_case, match_kind(d, r))
            if best is not None:
                found.append(SharedCase(case, role, [best[1]], kind=best[2], score=best[0]))
    return found
