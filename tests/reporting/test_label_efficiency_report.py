"""The label-efficiency table: paired differences with a t-interval over seeds, the files, the plot."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from subfore_test_helpers import ink_on_border

from nnunet_subfore.label_efficiency_design import SCRATCH_ARM, Arm, Fold
from nnunet_subfore.label_efficiency_runs import Run, RunResult
from nnunet_subfore.reporting.label_efficiency_report import (
    build_table,
    csv_text,
    markdown,
    paired_difference,
    write_label_efficiency_report,
)

#: t quantile 0.975 with 2 and 4 degrees of freedom (tables)
T2, T4 = 4.302653, 2.776445


def test_paired_difference_is_the_mean_over_seeds_with_a_t_interval():
    arm = {0: 0.8, 1: 0.7, 2: 0.9}
    scratch = {0: 0.6, 1: 0.6, 2: 0.6}  # differences 0.2, 0.1, 0.3: mean 0.2, sd 0.1
    d = paired_difference(arm, scratch)
    half = T2 * 0.1 / math.sqrt(3)
    assert d.n == 3 and d.wins == 3
    assert d.mean == pytest.approx(0.2)
    assert (d.low, d.high) == (pytest.approx(0.2 - half, abs=1e-6), pytest.approx(0.2 + half, abs=1e-6))
    assert d.reading == "no clear difference"  # the interval [-0.048, 0.448] holds 0


def test_an_interval_above_or_below_zero_reads_ahead_or_behind():
    scratch = {s: 0.5 for s in range(5)}
    ahead = paired_difference({0: 0.61, 1: 0.59, 2: 0.60, 3: 0.62, 4: 0.58}, scratch)  # sd 0.0158
    assert ahead.low == pytest.approx(0.1 - T4 * 0.0158114 / math.sqrt(5), abs=1e-6)
    assert ahead.low > 0 and ahead.reading == "ahead of scratch" and ahead.wins == 5
    behind = paired_difference({s: 0.5 - 0.1 - 0.01 * s for s in range(5)}, scratch)
    assert behind.high < 0 and behind.reading == "behind scratch" and behind.wins == 0


def test_pairs_only_the_seeds_both_arms_have():
    d = paired_difference({0: 0.9, 1: 0.4, 2: float("nan")}, {0: 0.5, 1: 0.5, 3: 0.1})
    assert d.n == 2 and d.mean == pytest.approx(0.15) and d.wins == 1
    one = paired_difference({0: 0.9}, {0: 0.5, 1: 0.5})
    assert one.n == 1 and math.isnan(one.low) and one.reading == "one seed: no interval"


def results(arms, dice):
    """RunResults for {(arm name, labels, seed): Dice}."""
    by_name = {a.name: a for a in arms}
    out = []
    for k, ((name, labels, seed), value) in enumerate(sorted(dice.items())):
        fold = Fold(k, labels, seed, tuple(f"case_{i}" for i in range(labels)))
        out.append(RunResult(Run(by_name[name], fold), value, {"1": value}))
    return out


@pytest.fixture
def table(tmp_path):
    arms = [Arm(SCRATCH_ARM, "T_scratch"), Arm("fg", "T", tmp_path / "fg.pth")]
    dice = {(SCRATCH_ARM, 1, 0): 0.3, (SCRATCH_ARM, 1, 1): 0.5, (SCRATCH_ARM, 2, 0): 0.6, (SCRATCH_ARM, 2, 1): 0.7,
            ("fg", 1, 0): 0.4, ("fg", 1, 1): 0.45, ("fg", 2, 0): 0.8, ("fg", 2, 1): 0.9}
    return build_table(results(arms, dice), arms, "Dataset992_X", "P", "3d_fullres", ["case_8", "case_9"])


def test_rows_pair_each_arm_with_scratch_per_label_count(table):
    rows = {(r.arm.name, r.labels): r for r in table.rows}
    assert [(r.arm.name, r.labels) for r in table.rows] == [(SCRATCH_ARM, 1), (SCRATCH_ARM, 2), ("fg", 1), ("fg", 2)]
    assert rows[(SCRATCH_ARM, 1)].difference is None and rows[(SCRATCH_ARM, 1)].mean == pytest.approx(0.4)
    assert rows[("fg", 1)].difference.mean == pytest.approx(0.025) and rows[("fg", 1)].difference.wins == 1
    assert rows[("fg", 2)].difference.mean == pytest.approx(0.2) and rows[("fg", 2)].difference.wins == 2
    text = markdown(table)
    assert "| fg | 2 | 2 | 85.0 ± 7.1 | +20.0 | [+20.0, +20.0] | 2/2 | ahead of scratch |" in text
    assert "t-interval over seeds" in text and "case_8, case_9" in text


def test_csv_and_json_hold_the_rows_and_every_run(table, tmp_path):
    rows = list(csv.DictReader(io.StringIO(csv_text(table))))
    fg2 = next(r for r in rows if r["arm"] == "fg" and r["labelled_cases"] == "2")
    assert float(fg2["difference_mean"]) == pytest.approx(0.2) and fg2["wins"] == "2"
    assert float(fg2["dice_seed_1"]) == pytest.approx(0.9) and fg2["checkpoint"].endswith("fg.pth")
    files = write_label_efficiency_report(table, tmp_path / "out")
    assert sorted(p.suffix for p in files) == [".csv", ".json", ".md", ".png"]
    record = json.loads((tmp_path / "out" / "label_efficiency.json").read_text())
    assert len(record["runs"]) == 8 and record["interval"].startswith("95% t-interval")
    assert record["rows"][0]["difference_to_scratch"] is None
    assert not ink_on_border(tmp_path / "out" / "label_efficiency.png")
