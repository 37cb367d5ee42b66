"""The demo's one-line readings: the reconstruction against the best constant, pretrained vs scratch from the
label-efficiency table, and the note when an arm learned nothing."""

from __future__ import annotations

import math

from nnunet_subfore.demo_reading import (
    label_efficiency_reading,
    learned_beyond_constant,
    nothing_learned_notes,
    per_label_reading,
    reconstruction_reading,
)
from nnunet_subfore.label_efficiency_design import SCRATCH_ARM, Arm, Fold
from nnunet_subfore.label_efficiency_runs import Run, RunResult
from nnunet_subfore.reporting.label_efficiency_report import build_table

SCRATCH = Arm(SCRATCH_ARM, "T_scratch")
PRETRAINED = Arm("pretrained", "T", checkpoint=None)


def table(dice):
    """The table of {(arm, labels, seed): Dice}."""
    arms = {a.name: a for a in (SCRATCH, PRETRAINED)}
    results = [RunResult(Run(arms[name], Fold(k, labels, seed, ("c",) * labels)), value, {"1": value})
               for k, ((name, labels, seed), value) in enumerate(sorted(dice.items()))]
    return build_table(results, [SCRATCH, PRETRAINED], "Dataset992_X", "P", "3d_fullres", ["h1", "h2"])


def test_reconstruction_reading_says_whether_it_beat_the_constant():
    assert learned_beyond_constant(0.4, 0.5) is True and learned_beyond_constant(0.6, 0.5) is False
    assert learned_beyond_constant(math.nan, math.nan) is None
    assert "20 % lower, the network learned something beyond the mean intensity" in reconstruction_reading(0.4, 0.5)
    assert "masked L1 0.600 vs 0.500" in reconstruction_reading(0.6, 0.5)
    assert "not lower, the network learned an intensity level" in reconstruction_reading(0.6, 0.5)
    assert "no reading" in reconstruction_reading(math.nan, math.nan)


def test_one_seed_reads_as_no_evidence_with_the_differences_computed_from_the_table():
    t = table({("scratch", 1, 0): 0.50, ("pretrained", 1, 0): 0.38, ("scratch", 2, 0): 0.60,
               ("pretrained", 2, 0): 0.63})
    line = label_efficiency_reading(t)
    assert line.startswith("pretrained vs scratch, held-out Dice points: -12.0 at 1 labelled case, +3.0 at 2 (")
    assert "one seed: no evidence either way" in line and "docs/benchmarks.md" in line
    assert "\n" not in line and nothing_learned_notes(t) == []


def test_several_seeds_give_intervals_and_wins():
    t = table({(arm, 1, seed): value for seed in range(3)
               for arm, value in (("scratch", 0.5), ("pretrained", 0.6 + 0.01 * seed))})
    line = label_efficiency_reading(t)
    assert "+11.0 [" in line and "1: ahead of scratch, 3/3 seeds ahead" in line


def test_a_pretrained_arm_that_learned_nothing_is_explained():
    t = table({("scratch", 1, 0): 0.45, ("pretrained", 1, 0): 0.0, ("scratch", 2, 0): 0.61,
               ("pretrained", 2, 0): 0.004})
    notes = nothing_learned_notes(t, reconstruction_learned=False, iterations=300)
    assert len(notes) == 1
    assert notes[0].startswith("NOTE: the pretrained arm learned nothing (Dice 0 at 1 and 2 labelled cases) while "
                               "scratch learned. Likely reason:")
    assert "300 fine-tuning iterations" in notes[0] and "decoder" in notes[0]
    assert "did not beat the best constant" in notes[0]
    assert "did not beat" not in nothing_learned_notes(t, reconstruction_learned=True)[0]


def test_no_arm_learning_blames_the_budget_and_scratch_alone_is_named():
    nothing = table({(arm, n, 0): 0.0 for arm in ("scratch", "pretrained") for n in (1, 2)})
    (note,) = nothing_learned_notes(nothing, iterations=48)
    assert note.startswith("NOTE: no arm learned an organ") and "48 fine-tuning iterations are too few" in note
    scratch_only = table({("scratch", 1, 0): 0.0, ("pretrained", 1, 0): 0.3})
    (note,) = nothing_learned_notes(scratch_only)
    assert note.startswith("NOTE: scratch learned no organ") and "the pretrained start did" in note


def test_per_label_line_shows_which_organs_each_arm_found():
    t = table({("scratch", 1, 0): 0.26, ("pretrained", 1, 0): 0.23, ("scratch", 2, 0): 0.25, ("pretrained", 2, 0): 0.16})
    for result in t.runs:  # liver found, spleen not
        result.dice_per_label.clear()
        result.dice_per_label.update({"1": 3 * result.dice, "2": 0.0})
    line = per_label_reading(t, {"1": "liver", "2": "spleen"})
    assert line == ("held-out Dice (%), scratch / pretrained: 1 labelled case: liver 78.0 / 69.0, spleen "
                    "0.0 / 0.0; 2: liver 75.0 / 48.0, spleen 0.0 / 0.0")
