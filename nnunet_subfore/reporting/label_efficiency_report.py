"""The label-efficiency table and plot: held-out Dice per arm and number of labelled cases, and each
pretrained arm's paired difference to scratch.

Every run of an experiment is evaluated on the same held-out cases by nnU-Net's final validation
(``fold_k/validation/summary.json``, its ``foreground_mean`` Dice). Per arm and label count the table
gives the mean and standard deviation over seeds. For a pretrained arm, each seed pairs it with the
scratch run on the *same* labelled subset; the difference (arm minus scratch, in Dice points) is
averaged over seeds with a 95 % **t-interval over seeds** (Student's t with n - 1 degrees of freedom
on the per-seed differences: with the 3-5 seeds such experiments afford, a bootstrap interval is
too narrow), and the wins count the seeds where the arm beat scratch.

Outputs (:func:`write_label_efficiency_report`, :func:`nnunet_subfore.reporting.outputs.write_report`):
``label_efficiency.png`` (Dice against labelled cases, one line per arm, each seed a dot),
``.md``, ``.csv`` (one row per arm and label count) and ``.json`` (the rows and every run).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from nnunet_subfore.label_efficiency_design import SCRATCH_ARM, Arm
from nnunet_subfore.label_efficiency_runs import RunResult
from nnunet_subfore.reporting.canvas import save_figure, wrap_title, wrap_to_width
from nnunet_subfore.reporting.outputs import report_paths, write_report

OUTPUT_STEM = "label_efficiency"
CONFIDENCE = 0.95
INTERVAL_METHOD = "t-interval over seeds (Student's t, n - 1 degrees of freedom, on the per-seed differences)"


@dataclass(frozen=True)
class PairedDifference:
    """Arm minus scratch over the seeds both have (Dice as a fraction).

    Attributes:
        n: seeds paired.
        mean: mean difference.
        low, high: the 95 % t-interval of the mean (NaN with fewer than 2 seeds).
        wins: seeds where the arm's Dice is higher than scratch's.
    """

    n: int
    mean: float
    low: float
    high: float
    wins: int

    @property
    def reading(self) -> str:
        if self.n == 0:
            return "no pair"
        if self.n < 2:
            return "one seed: no interval"
        if self.low > 0:
            return "ahead of scratch"
        if self.high < 0:
            return "behind scratch"
        return "no clear difference"


def paired_difference(arm: Mapping[int, float], scratch: Mapping[int, float],
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """The paired difference of two arms' Dice by seed (``{seed: Dice}``), with a t-interval over seeds.

    Seeds missing from either side, or with a non-finite Dice, are left out.
    """
    from scipy import stats

    seeds = sorted(s for s in set(arm) & set(scratch) if math.isfinite(arm[s]) and math.isfinite(scratch[s]))
    d = np.array([arm[s] - scratch[s] for s in seeds], dtype=float)
    n = len(d)
    if n == 0:
        return PairedDifference(0, math.nan, math.nan, math.nan, 0)
    mean = float(d.mean())
    low = high = math.nan
    if n >= 2:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
        low, high = mean - half, mean + half
    return PairedDifference(n, mean, low, high, int((d > 0).sum()))


@dataclass(frozen=True)
class TableRow:
    """One arm at one label count: Dice by seed, its mean and std, the difference to scratch (None for scratch)."""

    arm: Arm
    labels: int
    per_seed: Dict[int, float]
    difference: Optional[PairedDifference]

    @property
    def n_seeds(self) -> int:
        return sum(math.isfinite(v) for v in self.per_seed.values())

    @property
    def mean(self) -> float:
        values = [v for v in self.per_seed.values() if math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan

    @property
    def std(self) -> float:
        values = [v for v in self.per_seed.values() if math.isfinite(v)]
        return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


@dataclass
class LabelEfficiencyTable:
    """What the report shows: the rows (arm-major, label counts ascending) and every run."""

    dataset: str
    plans: str
    configuration: str
    heldout: List[str]
    rows: List[TableRow]
    runs: List[RunResult] = field(default_factory=list)

    @property
    def label_counts(self) -> List[int]:
        return sorted({r.labels for r in self.rows})

    @property
    def seeds(self) -> List[int]:
        return sorted({s for r in self.rows for s in r.per_seed})


def build_table(results: Sequence[RunResult], arms: Sequence[Arm], dataset: str, plans: str, configuration: str,
                heldout: Sequence[str]) -> LabelEfficiencyTable:
    """The table of ``results`` for ``arms`` (in this order; the scratch arm is named :data:`SCRATCH_ARM`)."""
    dice: Dict[tuple, Dict[int, float]] = {}
    for result in results:
        dice.setdefault((result.run.arm.name, result.run.fold.labels), {})[result.run.fold.seed] = result.dice
    counts = sorted({labels for _, labels in dice})
    rows = []
    for arm in arms:
        for labels in counts:
            per_seed = dice.get((arm.name, labels), {})
            scratch = dice.get((SCRATCH_ARM, labels), {})
            difference = None if arm.name == SCRATCH_ARM else paired_difference(per_seed, scratch)
            rows.append(TableRow(arm, labels, dict(sorted(per_seed.items())), difference))
    return LabelEfficiencyTable(dataset, plans, configuration, list(heldout), rows, list(results))


def output_paths(output_dir: Path) -> Dict[str, Path]:
    return report_paths(output_dir, OUTPUT_STEM)


def _pct(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "–"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _row_cells(row: TableRow) -> List[str]:
    dice = _pct(row.mean) + (f" ± {_pct(row.std)}" if math.isfinite(row.std) else "")
    d = row.difference
    if d is None:
        return [row.arm.name, str(row.labels), str(row.n_seeds), dice, "", "", "", ""]
    interval = f"[{_pct(d.low, True)}, {_pct(d.high, True)}]" if math.isfinite(d.low) else "–"
    return [row.arm.name, str(row.labels), str(row.n_seeds), dice, _pct(d.mean, True), interval,
            f"{d.wins}/{d.n}", d.reading]


def markdown(table: LabelEfficiencyTable) -> str:
    """The table in Markdown, with how to read it and what each arm is."""
    header = ["arm", "labelled cases", "seeds", "Dice (%) mean ± std", "difference to scratch (points)",
              f"{CONFIDENCE:.0%} interval", "wins", "reading"]
    lines = [
        f"## Label efficiency: {table.dataset} ({table.configuration}, {table.plans})",
        "",
        f"Dice (%) on the same {len(table.heldout)} held-out case(s) for every run: nnU-Net's final validation "
        f"(`foreground_mean` of `fold_k/validation/summary.json`). Each seed draws its own nested subsets of the "
        f"labelled training cases; mean ± standard deviation over seeds. Difference: the arm minus scratch trained "
        f"on the same subset, mean over seeds, with a {CONFIDENCE:.0%} {INTERVAL_METHOD}. Wins: seeds where the arm "
        f"beat scratch. Reading: ahead / behind when the interval excludes 0.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---:", "---:", "---:", "---:", "---", "---:", "---"]) + "|",
    ]
    lines += ["| " + " | ".join(_row_cells(row)) + " |" for row in table.rows]
    lines += ["", "Arms:", ""]
    for arm in dict.fromkeys(row.arm for row in table.rows):
        start = "from scratch" if arm.checkpoint is None else f"from `{arm.checkpoint}`"
        lines.append(f"- {arm.name}: `{arm.trainer}`, {start}")
    lines += ["", f"Held-out cases: {', '.join(table.heldout)}", ""]
    return "\n".join(lines)


def csv_text(table: LabelEfficiencyTable) -> str:
    """One row per arm and label count; Dice and differences as fractions (as nnU-Net writes Dice)."""
    seeds = table.seeds
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "trainer", "checkpoint", "labelled_cases", "n_seeds", "dice_mean", "dice_std",
                     "n_pairs", "difference_mean", "difference_low", "difference_high", "wins", "reading"]
                    + [f"dice_seed_{s}" for s in seeds])
    for row in table.rows:
        d = row.difference
        diff = ["", "", "", "", "", ""] if d is None else [d.n, _num(d.mean), _num(d.low), _num(d.high), d.wins,
                                                            d.reading]
        writer.writerow([row.arm.name, row.arm.trainer, row.arm.checkpoint or "", row.labels, row.n_seeds,
                         _num(row.mean), _num(row.std), *diff]
                        + [_num(row.per_seed[s]) if s in row.per_seed else "" for s in seeds])
    return out.getvalue()


def _num(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else ""


def _json_number(x: float) -> Optional[float]:
    return float(x) if math.isfinite(x) else None


def record(table: LabelEfficiencyTable) -> dict:
    """The JSON: the setting, the interval method, the rows and every run (with its training cases)."""
    rows = []
    for row in table.rows:
        d = row.difference
        rows.append({"arm": row.arm.name, "labelled_cases": row.labels, "n_seeds": row.n_seeds,
                     "dice_mean": _json_number(row.mean), "dice_std": _json_number(row.std),
                     "dice_per_seed": {str(s): _json_number(v) for s, v in row.per_seed.items()},
                     "difference_to_scratch": None if d is None else {
                         "n": d.n, "mean": _json_number(d.mean), "low": _json_number(d.low),
                         "high": _json_number(d.high), "wins": d.wins, "reading": d.reading}})
    runs = [{"arm": r.run.arm.name, **r.run.arm.to_json(), "labelled_cases": r.run.fold.labels,
             "seed": r.run.fold.seed, "fold": r.run.fold.index, "train_cases": list(r.run.fold.train),
             "dice": _json_number(r.dice), "dice_per_label": {k: _json_number(v) for k, v in r.dice_per_label.items()},
             "seconds": r.seconds} for r in table.runs]
    return {"dataset": table.dataset, "plans": table.plans, "configuration": table.configuration,
            "heldout": table.heldout, "metric": "Dice, nnU-Net's foreground_mean over the held-out cases",
            "interval": f"{CONFIDENCE:.0%} {INTERVAL_METHOD}", "rows": rows, "runs": runs}


def draw(table: LabelEfficiencyTable, output: Path) -> None:
    """Dice (%) against labelled cases (log2 axis): a line through each arm's means, each seed a dot."""
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["tab10"].colors
    arms = list(dict.fromkeys(row.arm.name for row in table.rows))
    for i, name in enumerate(arms):
        rows = [row for row in table.rows if row.arm.name == name and row.n_seeds]
        colour = colours[i % len(colours)]
        offset = 1.0 + 0.03 * (i - (len(arms) - 1) / 2)  # arms side by side at each count
        for row in rows:
            seeds = [100 * v for v in row.per_seed.values() if math.isfinite(v)]
            ax.scatter([row.labels * offset] * len(seeds), seeds, s=12, color=colour, alpha=0.45, linewidths=0)
        ax.plot([row.labels * offset for row in rows], [100 * row.mean for row in rows], marker="o", color=colour,
                label=wrap_to_width(f"{name} ({rows[0].arm.trainer})" if rows else name, 3.0, 8))
    ax.set_xscale("log", base=2)
    ax.set_xticks(table.label_counts, [str(n) for n in table.label_counts])
    ax.minorticks_off()
    ax.set_xlabel("labelled training cases")
    ax.set_ylabel("held-out Dice (%)")
    ax.set_ylim(0, 100)
    ax.yaxis.grid(True, linewidth=0.5, alpha=0.5)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(wrap_title(fig, f"{table.dataset} ({table.configuration}, {table.plans}): Dice on "
                            f"{len(table.heldout)} held-out case(s); line: mean over {len(table.seeds)} seed(s), "
                            f"dots: seeds", 10), fontsize=10)
    save_figure(fig, output, dpi=120)


def write_label_efficiency_report(table: LabelEfficiencyTable, output_dir: Path, force: bool = False) -> List[Path]:
    """PNG, Markdown, CSV and JSON into ``output_dir``; existing ones are refused without ``force``."""
    return write_report(output_paths(output_dir), force, lambda path: draw(table, path), lambda: markdown(table),
                        lambda: csv_text(table), lambda: record(table))
