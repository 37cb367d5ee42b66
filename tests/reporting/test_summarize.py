"""summarize: per-class Dice over nnU-Net folds, from summary.json files written in nnU-Net's own format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from nnunetv2.evaluation.evaluate_predictions import save_summary_json

from nnunet_subfore.errors import UserError
from nnunet_subfore.reporting.summarize import summarize

LABELS = {"background": 0, "liver": 1, "spleen": 2, "aorta": 3}
CLASSES = ["liver", "spleen", "aorta"]
DATASET = "Dataset602_Toy"
PLANS, CONFIG = "nnUNetPlans", "3d_fullres"


def _write_fold(trainer_dir: Path, fold: int, dice_per_label: dict, labels: dict = LABELS) -> Path:
    """A fold summary exactly as nnU-Net writes it (keys are labels or region tuples)."""
    mean = {k: {"Dice": float(v), "IoU": float(v) / (2 - float(v)), "FP": 1.0, "TP": 2.0} for k, v in dice_per_label.items()}
    results = {
        "metric_per_case": [{"reference_file": "a.nii.gz", "prediction_file": "b.nii.gz", "metrics": mean}],
        "mean": mean,
        "foreground_mean": {"Dice": float(np.mean(list(dice_per_label.values())))},
    }
    path = trainer_dir / f"fold_{fold}" / "validation" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_summary_json(results, str(path))
    (trainer_dir / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    return path


@pytest.fixture()
def results(tmp_path, monkeypatch):
    """Two trainers, 5 folds; fold 3 missing for the second. Returns (root, {trainer: (folds, values)})."""
    root = tmp_path / "nnUNet_results"
    monkeypatch.setenv("nnUNet_results", str(root))
    rng = np.random.default_rng(0)
    truth = {}
    for trainer, folds in (("SubForeSwinUNETRTrainer", [0, 1, 2, 3, 4]), ("SubForeSwinUNETRTrainer_scratch", [0, 1, 2, 4])):
        values = rng.uniform(0.6, 0.95, size=(len(folds), len(CLASSES)))
        tdir = root / DATASET / f"{trainer}__{PLANS}__{CONFIG}"
        for f, v in zip(folds, values):
            _write_fold(tdir, f, {1: v[0], 2: v[1], 3: v[2]})
        truth[trainer] = (folds, values)
    return root, truth


def test_means_and_std_match_numpy(results):
    root, truth = results
    res = summarize(dataset=602, trainers=list(truth), plans=PLANS, configuration=CONFIG, folds=(0, 1, 2, 3, 4), output_dir=None)
    assert [name for _, name in res.classes] == CLASSES
    for trainer, (folds, values) in truth.items():
        for j, name in enumerate(CLASSES):
            row = res.row(trainer, name)
            assert row.n_folds == len(folds)
            assert sorted(row.per_fold) == folds
            assert row.mean == pytest.approx(values[:, j].mean(), abs=1e-12)
            assert row.std == pytest.approx(values[:, j].std(ddof=1), abs=1e-12)
        avg = res.row(trainer, "average")
        assert avg.is_average and avg.n_folds == len(folds)
        assert avg.mean == pytest.approx(values.mean(axis=1).mean(), abs=1e-12)
        assert avg.std == pytest.approx(values.mean(axis=1).std(ddof=1), abs=1e-12)


def test_missing_fold_is_listed_and_excluded(results):
    root, truth = results
    res = summarize(dataset="602", trainers=list(truth), plans=PLANS, configuration=CONFIG, folds=(0, 1, 2, 3, 4), output_dir=None)
    assert res.missing == {"SubForeSwinUNETRTrainer_scratch": [3]}
    assert res.n_folds == {"SubForeSwinUNETRTrainer": 5, "SubForeSwinUNETRTrainer_scratch": 4}
    assert 3 not in res.row("SubForeSwinUNETRTrainer_scratch", "liver").per_fold
    assert "SubForeSwinUNETRTrainer_scratch (n=4)" in res.markdown
    assert "SubForeSwinUNETRTrainer (n=5)" in res.markdown
    assert "- SubForeSwinUNETRTrainer_scratch: fold 3" in res.markdown


def test_files_written_and_markdown_names_classes(results):
    root, truth = results
    res = summarize(dataset=DATASET, trainers=list(truth), plans=PLANS, configuration=CONFIG, folds=(0, 1, 2, 3, 4), output_dir=None)
    out = root / DATASET / "subfore_summary"
    assert [p.parent for p in res.files] == [out] * 3
    assert [p.suffix for p in res.files] == [".md", ".csv", ".png"]
    for p in res.files:
        assert p.is_file() and p.stat().st_size > 0
    assert res.files[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.files[0].read_text(encoding="utf-8") == res.markdown
    for name in CLASSES:
        assert f"| {name} (" in res.markdown
    with open(res.files[1], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * (len(CLASSES) + 1)
    scratch_liver = next(r for r in rows if r["trainer"] == "SubForeSwinUNETRTrainer_scratch" and r["class"] == "liver")
    assert scratch_liver["fold_3"] == "" and scratch_liver["n_folds"] == "4" and scratch_liver["label"] == "1"
    folds, values = truth["SubForeSwinUNETRTrainer_scratch"]
    assert float(scratch_liver["dice_mean"]) == pytest.approx(values[:, 0].mean(), abs=1e-12)


def test_trainer_without_any_fold(results, tmp_path):
    root, truth = results
    trainers = list(truth) + ["NoSuchTrainer"]
    res = summarize(dataset=602, trainers=trainers, plans=PLANS, configuration=CONFIG, folds=(0, 1, 2, 3, 4), output_dir=tmp_path / "out")
    assert res.missing["NoSuchTrainer"] == [0, 1, 2, 3, 4]
    row = res.row("NoSuchTrainer", "liver")
    assert row.n_folds == 0 and np.isnan(row.mean) and np.isnan(row.std)
    assert "NoSuchTrainer (n=0)" in res.markdown and "no folder" in res.markdown
    assert all(p.parent == tmp_path / "out" for p in res.files)


def test_unreadable_summary_names_the_file(results):
    root, truth = results
    bad = root / DATASET / f"SubForeSwinUNETRTrainer__{PLANS}__{CONFIG}" / "fold_2" / "validation" / "summary.json"
    bad.write_text('{"mean": {"1": {"Dice": 0.8')
    with pytest.raises(UserError, match=str(bad)):
        summarize(dataset=602, trainers=list(truth), plans=PLANS, configuration=CONFIG, folds=(0, 1, 2, 3, 4), output_dir=None)


def test_summary_without_the_metric_names_the_file(results):
    root, truth = results
    bad = root / DATASET / f"SubForeSwinUNETRTrainer__{PLANS}__{CONFIG}" / "fold_0" / "validation" / "summary.json"
    data = json.loads(bad.read_text())
    del data["mean"]["2"]["Dice"]
    bad.write_text(json.dumps(data))
    with pytest.raises(UserError, match=f"{bad}.*no 'Dice' entry"):
        summarize(dataset=602, trainers=list(truth), plans=PLANS, configuration=CONFIG, folds=(0, 1, 2, 3, 4), output_dir=None)


def test_nothing_found_is_refused(results):
    root, truth = results
    with pytest.raises(UserError, match="No validation summary.*SubForeSwinUNETRTrainer_scratch"):
        summarize(dataset=602, trainers=["Nope"], plans=PLANS, configuration=CONFIG, folds=(0, 1, 2, 3, 4), output_dir=None)


def test_regions_are_named_from_dataset_json(tmp_path):
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing": [3]}
    tdir = tmp_path / "Dataset003_Brain" / f"T__{PLANS}__{CONFIG}"
    for f in (0, 1):
        _write_fold(tdir, f, {(1, 2, 3): 0.9, (2, 3): 0.8, (3,): 0.7 + 0.1 * f}, labels)
    res = summarize(dataset=3, trainers=["T"], plans=PLANS, configuration=CONFIG, folds=(0, 1), output_dir=tmp_path / "o",
                    results_root=tmp_path)
    assert res.classes == [("(1, 2, 3)", "whole tumor"), ("(2, 3)", "tumor core"), ("(3,)", "enhancing")]
    assert res.row("T", "enhancing").mean == pytest.approx(0.75)
    assert res.missing == {}


def test_cli_exit_status_reports_missing_folds(results, capsys):
    from nnunet_subfore.cli import main

    root, truth = results
    assert main(["summarize", "-d", "602", "-tr", *truth]) == 1
    out = capsys.readouterr().out
    assert "liver" in out and "wrote" in out
    assert main(["summarize", "-d", "602", "-tr", "SubForeSwinUNETRTrainer"]) == 0


def test_the_bar_chart_keeps_title_and_legend_inside_with_long_names(tmp_path):
    """The demo's chart (900 px wide) cut its title on both sides and its legend on the right."""
    from subfore_test_helpers import ink_on_border

    root = tmp_path / "nnUNet_results"
    dataset = "Dataset992_SubForeDemoOrgansWithAVeryLongDatasetName"
    trainers = ["SubForeSwinUNETRTrainer_demo", "SubForeSwinUNETRTrainer_demo_scratch",
                "SubForeSwinUNETRTrainer_pretrained_on_luna16_covid19_btcv_with_a_long_name"]
    for k, trainer in enumerate(trainers):
        _write_fold(root / dataset / f"{trainer}__SubForePretrainPlans__{CONFIG}", 0, {"1": 0.8, "2": 0.7 - k / 10, "3": 0.6})
    res = summarize(dataset, trainers, plans="SubForePretrainPlans", configuration=CONFIG, folds=(0,),
                    output_dir=tmp_path / "out", results_root=root)
    png = next(p for p in res.files if p.suffix == ".png")
    assert not ink_on_border(png)
