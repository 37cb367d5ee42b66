"""The paper split: fold 5 after nnU-Net's five folds, in the paper's proportions or the official partition."""

from __future__ import annotations

import pytest

from nnunet_subfore.data.converters.report import ConversionReport
from nnunet_subfore.data.converters.splits import note_stale_splits, paper_fold, paper_split_target, paper_splits
from nnunet_subfore.errors import UserError


@pytest.mark.parametrize("paper", [(24, 6), (100, 31), (14, 6), (240, 120), (388, 96)])
def test_paper_fold_matches_the_paper_counts(paper):
    ids = [f"case_{k:03d}" for k in range(sum(paper))]
    fold, note = paper_fold(ids, paper)
    assert (len(fold["train"]), len(fold["val"])) == paper
    assert sorted(fold["train"] + fold["val"]) == ids
    assert "as in the paper" in note


def test_paper_fold_keeps_the_validation_fraction_on_smaller_sets():
    fold, note = paper_fold([f"FLARE22_Tr_{k:04d}" for k in range(1, 51)], (100, 31))
    assert (len(fold["train"]), len(fold["val"])) == (38, 12)  # 50 * 31/131 = 11.8
    assert "100/31" in note and "validation fraction" in note
    tiny, _ = paper_fold(["a", "b"], (24, 6))  # round(0.4) = 0, but one case validates
    assert len(tiny["val"]) == 1 and sorted(tiny["train"] + tiny["val"]) == ["a", "b"]
    most, _ = paper_fold(["a", "b", "c"], (1, 9))  # round(2.7) = 3, but one case trains
    assert (len(most["train"]), len(most["val"])) == (1, 2)


def test_paper_fold_is_seeded_and_independent_of_the_input_order():
    ids = [f"c{k:02d}" for k in range(30)]
    first, _ = paper_fold(ids, (24, 6))
    assert paper_fold(list(reversed(ids)), (24, 6))[0] == first
    assert paper_fold(ids, (24, 6), seed=1)[0] != first


def test_paper_fold_takes_the_official_partition():
    groups = {"a": "train", "b": "val", "c": "train", "d": "val", "e": "train"}
    fold, note = paper_fold(list(groups), (240, 120), groups)
    assert fold == {"train": ["a", "c", "e"], "val": ["b", "d"]}
    assert "official" in note and "3/2" in note
    fold, note = paper_fold(list(groups), (3, 2), {"a": "train", "b": "val"})  # partial partition: not used
    assert "official" not in note and "as in the paper" in note
    assert fold == paper_fold(list(groups), (3, 2))[0]
    only_train = {k: "train" for k in groups}
    fold, note = paper_fold(list(groups), (4, 1), only_train)  # one group: not a split
    assert "official" not in note and len(fold["val"]) == 1


def test_paper_fold_needs_two_cases():
    with pytest.raises(ValueError, match="at least two"):
        paper_fold(["a"], (24, 6))


def test_paper_splits_are_five_cross_validation_folds_then_the_paper_fold():
    ids = [f"c{k}" for k in range(7)]
    splits, note = paper_splits(ids, (14, 6))
    assert len(splits) == 6
    vals = [set(s["val"]) for s in splits[:5]]
    assert set().union(*vals) == set(ids) and sum(len(v) for v in vals) == len(ids)  # each case validates once
    for s in splits[:5]:
        assert sorted(s["train"] + s["val"]) == sorted(ids) and not set(s["train"]) & set(s["val"])
    assert splits[5] == paper_fold(ids, (14, 6))[0]
    with pytest.raises(ValueError, match="at least 5 cases"):
        paper_splits(ids[:4], (14, 6))


def test_paper_split_target(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    target = paper_split_target("Dataset501_BTCV", tmp_path, force=False)
    assert target == tmp_path / "Dataset501_BTCV" / "splits_final.json"
    target.parent.mkdir()
    target.write_text("[]")
    with pytest.raises(UserError, match="already exists.*--force"):
        paper_split_target("Dataset501_BTCV", tmp_path, force=False)
    assert paper_split_target("Dataset501_BTCV", tmp_path, force=True) == target
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "env"))
    assert paper_split_target("Dataset501_BTCV", None, False) == tmp_path / "env" / "Dataset501_BTCV" / "splits_final.json"


def test_note_stale_splits(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    report = ConversionReport("btcv", converted=["a"])
    note_stale_splits(report, "Dataset501_BTCV", None)  # no preprocessed folder known: nothing to say
    note_stale_splits(report, "Dataset501_BTCV", tmp_path)  # no splits file
    assert report.notes == []
    stale = tmp_path / "Dataset501_BTCV" / "splits_final.json"
    stale.parent.mkdir()
    stale.write_text("[]")
    note_stale_splits(report, "Dataset501_BTCV", tmp_path)
    assert len(report.notes) == 1 and str(stale) in report.notes[0] and "Delete it" in report.notes[0]
