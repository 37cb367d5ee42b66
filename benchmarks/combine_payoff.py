#!/usr/bin/env python
"""Pool label-efficiency tables of runs that used different seeds into one table.

    python benchmarks/combine_payoff.py results/pretraining_payoff_ft80.csv results/pretraining_payoff_ft80_seeds345.csv \
        -o results/pretraining_payoff_ft80_pooled.md --plot results/pretraining_payoff_ft80_pooled.png \
        --versus fg-encoder random-encoder

Each CSV is what ``nnunet-subfore label-efficiency`` writes (a ``dice_seed_N`` column per seed). A run is paired
with scratch *of the same CSV* only (each work folder pretrained its own checkpoints; CPU pretraining is not
bit-reproducible), so a seed present in two files is refused. The pooled table uses the package's own paired
difference (95 % t-interval over seeds, wins), so it reads like ``label_efficiency.md``; ``--plot`` draws the pooled
runs with the package's own label-efficiency plot (dataset, plans and held-out cases from the JSON beside each CSV,
which must agree).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, Sequence, Tuple

from nnunet_subfore.label_efficiency_design import SCRATCH_ARM, Arm
from nnunet_subfore.reporting.label_efficiency_report import LabelEfficiencyTable, TableRow, draw, paired_difference

def read(paths) -> Dict[Tuple[str, int], Dict[int, float]]:
    """``{(arm, labelled cases): {seed: Dice}}`` over every file; a seed may come from one file only."""
    dice: Dict[Tuple[str, int], Dict[int, float]] = defaultdict(dict)
    owner: Dict[int, Path] = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for column, value in row.items():
                    if not column.startswith("dice_seed_") or value in ("", None):
                        continue
                    seed = int(column[len("dice_seed_"):])
                    if owner.setdefault(seed, path) != path:
                        raise SystemExit(f"seed {seed} is in {owner[seed]} and in {path}: pool runs of distinct seeds")
                    dice[(row["arm"], int(row["labelled_cases"]))][seed] = float(value)
    return dice


def table(dice: Dict[Tuple[str, int], Dict[int, float]], sources, versus: Sequence[Tuple[str, str]] = ()) -> str:
    lines = ["| arm | labelled cases | seeds | Dice (%) mean | difference to scratch (points) | 95% interval | wins | reading |",
             "|---|---:|---:|---:|---:|---|---:|---|"]
    for (arm, labels) in sorted(dice, key=lambda k: (k[0] != SCRATCH_ARM, k[0], k[1])):
        values = dice[(arm, labels)]
        mean = 100 * sum(values.values()) / len(values)
        if arm == SCRATCH_ARM:
            lines.append(f"| {arm} | {labels} | {len(values)} | {mean:.1f} |  |  |  |  |")
            continue
        d = paired_difference(values, dice.get((SCRATCH_ARM, labels), {}))
        interval = f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]" if d.n >= 2 else ""
        lines.append(f"| {arm} | {labels} | {d.n} | {mean:.1f} | {100 * d.mean:+.1f} | {interval} | {d.wins}/{d.n} "
                     f"| {d.reading} |")
    for first, second in versus:
        for labels in sorted({n for (arm, n) in dice if arm == first}):
            d = paired_difference(dice[(first, labels)], dice.get((second, labels), {}))
            interval = f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]" if d.n >= 2 else ""
            lines.append(f"| {first} minus {second} | {labels} | {d.n} |  | {100 * d.mean:+.1f} | {interval} "
                         f"| {d.wins}/{d.n} | {d.reading.replace('scratch', second)} |")
    head = ["## Pooled label efficiency", "",
            "Runs pooled (each arm paired with scratch of its own run, seeds distinct): "
            + ", ".join(f"`{Path(p).name}`" for p in sources) + ".", ""]
    return "\n".join(head + lines) + "\n"


def trainers(paths) -> Dict[str, str]:
    """``{arm: fine-tuning trainer}`` over every file (the CSVs' ``trainer`` column)."""
    names: Dict[str, str] = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                names.setdefault(row["arm"], row["trainer"])
    return names


def plot(dice: Dict[Tuple[str, int], Dict[int, float]], paths, output: Path) -> None:
    """The package's label-efficiency plot of the pooled runs: each arm's mean over its seeds, each seed a dot."""
    setting = set()
    for path in paths:
        record = json.loads(Path(path).with_suffix(".json").read_text())
        setting.add((record["dataset"], record["plans"], record["configuration"], tuple(record["heldout"])))
    if len(setting) != 1:
        raise SystemExit(f"--plot: the runs differ in dataset, plans, configuration or held-out cases: {sorted(setting)}")
    dataset, plans, configuration, heldout = setting.pop()
    names = trainers(paths)
    arms = sorted({arm for arm, _ in dice}, key=lambda a: (a != SCRATCH_ARM, a))
    rows = [TableRow(Arm(arm, names[arm]), labels, dict(sorted(dice[(arm, labels)].items())), None)
            for arm in arms for labels in sorted(n for a, n in dice if a == arm)]
    draw(LabelEfficiencyTable(dataset, plans, configuration, list(heldout), rows), output)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, help="Markdown file (default: print only)")
    p.add_argument("--plot", type=Path, help="PNG of the pooled runs (the package's label-efficiency plot)")
    p.add_argument("--versus", nargs=2, action="append", default=[], metavar=("ARM", "OTHER"),
                   help="also the paired difference ARM minus OTHER (same seeds), e.g. fg-encoder random-encoder")
    args = p.parse_args(argv)
    dice = read(args.csv)
    text = table(dice, args.csv, [tuple(v) for v in args.versus])
    if args.plot:
        plot(dice, args.csv, args.plot)
    if args.output:
        args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
