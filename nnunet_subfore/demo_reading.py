"""What the demo's numbers say, a line each: the reconstruction against the best constant, and the
label-efficiency table (each pretrained arm against scratch), with the likely reason when an arm
learned nothing.

Plain Python over the numbers that :class:`nnunet_subfore.reconstruction.Reconstruction` and
:class:`nnunet_subfore.reporting.label_efficiency_report.LabelEfficiencyTable` hold: the demo prints
the lines, the tests check them on made-up tables.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional

from nnunet_subfore.label_efficiency_design import SCRATCH_ARM
from nnunet_subfore.reporting.label_efficiency_report import LabelEfficiencyTable, TableRow

#: An arm whose mean held-out Dice stays below this (a fraction) at every labelled-case count learned no organ.
NOTHING_LEARNED = 0.01
#: Where the seeds and intervals that can decide live.
BENCHMARKS = "docs/benchmarks.md"


def learned_beyond_constant(masked_l1: float, constant_l1: float) -> Optional[bool]:
    """Whether the masked L1 beats the best constant's; None when nothing was masked (both NaN)."""
    if not (math.isfinite(masked_l1) and math.isfinite(constant_l1)):
        return None
    return masked_l1 < constant_l1


def reconstruction_reading(masked_l1: float, constant_l1: float) -> str:
    """One line: the pretrained network's masked L1 against predicting the masked voxels' median."""
    learned = learned_beyond_constant(masked_l1, constant_l1)
    if learned is None:
        return "nothing was masked in this patch: no reading (show-reconstruction --center picks another patch)"
    numbers = f"masked L1 {masked_l1:.3f} vs {constant_l1:.3f} for the best constant (the masked voxels' median)"
    if learned:
        return (f"{numbers}: {100 * (1 - masked_l1 / constant_l1):.0f} % lower, the network learned something "
                f"beyond the mean intensity")
    return f"{numbers}: not lower, the network learned an intensity level, not anatomy"


def _rows(table: LabelEfficiencyTable, arm: str) -> List[TableRow]:
    return [row for row in table.rows if row.arm.name == arm and row.n_seeds]


def _arms(table: LabelEfficiencyTable) -> List[str]:
    return list(dict.fromkeys(row.arm.name for row in table.rows))


def _cases(n: int) -> str:
    return f"{n} labelled case" + ("" if n == 1 else "s")


def label_efficiency_reading(table: LabelEfficiencyTable) -> str:
    """One line per pretrained arm (the demo has one): its Dice difference to scratch at each count, and
    what the number of seeds lets one conclude."""
    lines = []
    for arm in (a for a in _arms(table) if a != SCRATCH_ARM):
        pairs = [row for row in _rows(table, arm) if row.difference is not None and row.difference.n]
        if not pairs:
            lines.append(f"{arm} vs scratch: no pair of finished runs to compare")
            continue
        parts = []
        for i, row in enumerate(pairs):
            d = row.difference
            interval = f" [{100 * d.low:+.1f}, {100 * d.high:+.1f}]" if math.isfinite(d.low) else ""
            at = _cases(row.labels) if i == 0 else str(row.labels)
            parts.append(f"{100 * d.mean:+.1f}{interval} at {at}")
        if max(row.difference.n for row in pairs) < 2:
            note = f"one seed: no evidence either way; seeds and intervals that decide: {BENCHMARKS}"
        else:
            note = "; ".join(f"{row.labels}: {row.difference.reading}, {row.difference.wins}/{row.difference.n} "
                             f"seeds ahead" for row in pairs) + " (95 % t-intervals over seeds)"
        lines.append(f"{arm} vs scratch, held-out Dice points: {', '.join(parts)} ({note})")
    return "\n".join(lines)


def per_label_reading(table: LabelEfficiencyTable, label_names: Mapping[str, str]) -> str:
    """One line: each arm's held-out Dice per label at each count (mean over seeds), arms in table order, since the
    table's foreground mean hides which organs an arm found."""
    arms = _arms(table)
    dice: Dict[tuple, List[float]] = {}
    for result in table.runs:
        for label, value in result.dice_per_label.items():
            dice.setdefault((result.run.fold.labels, result.run.arm.name, label), []).append(value)
    parts = []
    for i, count in enumerate(table.label_counts):
        cells = []
        for label, name in label_names.items():
            values = [dice.get((count, arm, label)) for arm in arms]
            cells.append(f"{name} " + " / ".join("–" if not v else f"{100 * sum(v) / len(v):.1f}" for v in values))
        parts.append(f"{_cases(count) if i == 0 else count}: {', '.join(cells)}")
    return f"held-out Dice (%), {' / '.join(arms)}: {'; '.join(parts)}"


def nothing_learned_notes(table: LabelEfficiencyTable, reconstruction_learned: Optional[bool] = None,
                          iterations: Optional[int] = None) -> List[str]:
    """A note per arm that learned no organ (Dice below :data:`NOTHING_LEARNED` at every count), with the likely
    reason: the pretrained start against scratch's, or a budget too short for either.

    Args:
        table: the label-efficiency table.
        reconstruction_learned: whether the pretraining beat the best constant (:func:`learned_beyond_constant`);
            None: not known.
        iterations: fine-tuning iterations per run, named in the reason; None: not known.
    """
    silent = {arm for arm in _arms(table)
              if _rows(table, arm) and all(row.mean < NOTHING_LEARNED for row in _rows(table, arm))}
    budget = f"{iterations} fine-tuning iterations" if iterations else "this fine-tuning budget"
    counts = " and ".join(str(n) for n in table.label_counts)
    if SCRATCH_ARM in silent and len(silent) == len(_arms(table)):
        return [f"NOTE: no arm learned an organ (Dice 0 at {counts} labelled cases): {budget} are too few for a "
                f"tiny network to find one in these cases (demo --quick is a plumbing check), so the table compares "
                f"nothing."]
    if SCRATCH_ARM in silent:
        return [f"NOTE: scratch learned no organ (Dice 0 at {counts} labelled cases) in {budget}; the pretrained "
                f"start did."]
    notes = []
    for arm in sorted(silent):
        reason = (f"fine-tuning starts from the pretrained encoder and stem (the decoder as nnU-Net initializes it, "
                  f"at nnU-Net's learning rate), and in {budget} those in-painting features did not turn into organ "
                  f"features where scratch's random start did ({BENCHMARKS}, section 4: at this scale pretraining "
                  f"shows no gain over scratch, and full transfer a loss)")
        if reconstruction_learned is False:
            reason += ("; and the pretraining itself did not beat the best constant (the reconstruction line above): "
                       "it carried over an intensity level rather than anatomy")
        notes.append(f"NOTE: the {arm} arm learned nothing (Dice 0 at {counts} labelled cases) while scratch learned. "
                     f"Likely reason: {reason}.")
    return notes
