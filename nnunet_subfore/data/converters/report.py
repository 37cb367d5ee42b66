"""What a conversion did (:class:`ConversionReport`), and how it tells the user while it runs
(progress bar, skipped cases)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from tqdm import tqdm

from nnunet_subfore.data.converters.layout import Case
from nnunet_subfore.data.converters.specs import DatasetSpec


@dataclass
class ConversionReport:
    """Outcome of :func:`convert_dataset`.

    Attributes:
        dataset: the dataset key (``btcv`` ...).
        output_dir: the nnU-Net raw dataset folder (None if nothing was written).
        converted: case identifiers written.
        skipped: ``(case or file, reason)`` for every case or file left out.
        not_done: steps that could not be done, with the reason (e.g. the paper split); not cases.
        notes: remarks worth reading (paper split adjustments, ignored files).
        splits_file: the ``splits_final.json`` written under ``nnUNet_preprocessed``, if any.
    """

    dataset: str
    output_dir: Optional[Path] = None
    converted: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    not_done: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    splits_file: Optional[Path] = None

    def exit_code(self) -> int:
        """0 all converted, 1 something skipped or not done, 2 nothing converted."""
        if not self.converted:
            return 2
        return 1 if self.skipped or self.not_done else 0

    def describe(self) -> str:
        """A human-readable summary (printed by :func:`convert_dataset`)."""
        lines = []
        if self.converted:
            lines.append(f"{self.dataset}: converted {len(self.converted)} case(s) into {self.output_dir}")
        else:
            lines.append(f"{self.dataset}: nothing converted; any earlier output was left as it was.")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines.extend(f"  {name}: {reason}" for name, reason in self.skipped)
        lines.extend(f"not done: {step}" for step in self.not_done)
        lines.extend(f"note: {note}" for note in self.notes)
        if self.splits_file is not None:
            lines.append(f"wrote {self.splits_file} (nnU-Net's folds 0-4, paper split as fold 5)")
        if self.converted and self.output_dir is not None:
            dataset_id = self.output_dir.name[len("Dataset"):len("Dataset") + 3]
            lines.append(f"next: nnUNetv2_plan_and_preprocess -d {int(dataset_id)} --verify_dataset_integrity")
        return "\n".join(lines)


def case_progress(cases: Sequence[Case], spec: DatasetSpec, what: str):
    """A progress bar over ``cases`` (shown on terminals only)."""
    return tqdm(cases, desc=f"{spec.title}: {what}", unit="case", disable=None)


def skip_case(report: ConversionReport, case_id: str, reason: str) -> None:
    """Record a skipped case in ``report`` and say so at once (above any progress bar)."""
    report.skipped.append((case_id, reason))
    tqdm.write(f"skipped {case_id}: {reason}")
