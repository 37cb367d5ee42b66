"""Per-class Dice over nnU-Net's cross-validation folds, for several trainers side by side.

nnU-Net evaluates every fold after training and writes
``$nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/fold_<f>/validation/summary.json``
(:func:`nnunetv2.evaluation.evaluate_predictions.save_summary_json`): ``mean`` holds, per label or
region, the metrics averaged over that fold's validation cases. :func:`summarize` gathers those
files and reports, per trainer and per class, the mean and the sample standard deviation
(``ddof=1``) over the folds found, plus the average over classes (computed per fold, then
averaged over folds), in the spirit of the paper's per-organ figures and tables:

- ``<stem>.md``: a Markdown table, Dice in percent, ``mean ± std``, with the number of folds per
  trainer in the header and the missing folds listed underneath;
- ``<stem>.csv``: one row per trainer and class (and the class average), Dice as a fraction as
  nnU-Net writes it, with the per-fold values;
- ``<stem>.png``: a grouped bar chart, one group per class, one bar per trainer, error bars = std.

``<stem>`` is ``dice__<plans>__<configuration>``. Missing folds are never averaged over silently:
they are listed in the Markdown and in :attr:`SummaryResult.missing`, and every mean says how many
folds it is over.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from nnunet_subfore.errors import UserError
from nnunet_subfore.paths import find_dataset_name, nnunet_folder, trainer_output_folder

AVERAGE = "average"


@dataclass(frozen=True)
class SummaryRow:
    """One trainer's statistic for one class (or for the average over classes).

    Attributes:
        trainer: trainer class name.
        class_name: the label's name from ``dataset.json`` (``"label 3"`` when unnamed), or
            ``"average"`` for the average over classes.
        label: the label or region as nnU-Net's summary.json spells it (``"3"``, ``"(1, 2, 3)"``);
            ``None`` for the average.
        n_folds: number of folds the mean is over (folds found, with a finite value).
        mean: mean over those folds (a fraction, as nnU-Net writes it); NaN when ``n_folds == 0``.
        std: sample standard deviation over those folds (``ddof=1``); NaN when ``n_folds < 2``.
        per_fold: the value of every fold found, ``{fold: value}`` (NaN where nnU-Net wrote NaN).
    """

    trainer: str
    class_name: str
    label: Optional[str]
    n_folds: int
    mean: float
    std: float
    per_fold: Dict[int, float] = field(default_factory=dict)

    @property
    def is_average(self) -> bool:
        return self.label is None


@dataclass
class SummaryResult:
    """What :func:`summarize` found and wrote.

    Attributes:
        dataset: the dataset folder name (``Dataset602_BTCV``).
        metric: the metric summarized (``"Dice"``).
        trainers: the trainers, in the order asked.
        folds: the folds asked for.
        classes: ``(label, class_name)`` pairs in table order.
        rows: one :class:`SummaryRow` per trainer and class, then per trainer the average
            (trainer-major order).
        n_folds: per trainer, the number of folds whose summary.json was found.
        missing: per trainer with at least one missing fold, the missing folds (empty dict when
            everything was there).
        markdown: the Markdown report (also written to the ``.md`` file).
        files: the files written (``.md``, ``.csv``, ``.png``).
    """

    dataset: str
    metric: str
    trainers: List[str]
    folds: Tuple[int, ...]
    classes: List[Tuple[str, str]]
    rows: List[SummaryRow]
    n_folds: Dict[str, int]
    missing: Dict[str, List[int]]
    markdown: str
    files: List[Path]

    def row(self, trainer: str, class_name: str) -> SummaryRow:
        """The row of ``trainer`` for ``class_name`` (``"average"`` for the average over classes)."""
        for r in self.rows:
            if r.trainer == trainer and r.class_name == class_name:
                return r
        raise KeyError(f"No row for trainer {trainer!r} and class {class_name!r}.")


def _label_key(value, has_regions: bool) -> str:
    """A dataset.json label value as nnU-Net's summary.json spells it (see ``label_or_region_to_key``).

    Like nnU-Net's LabelManager: a dataset is region-based when some value is a list of more than one
    label; then lists become tuples (``"(1, 2, 3)"``, ``"(3,)"``), otherwise a one-element list is its label.
    """
    if isinstance(value, (list, tuple)):
        if has_regions:
            return str(tuple(int(v) for v in value))
        (value,) = value
    return str(int(value))


def _class_names(dataset_json: Optional[Path]) -> Dict[str, str]:
    """``{summary key: name}`` from a dataset.json's ``labels`` (name -> value); empty if unavailable."""
    if dataset_json is None:
        return {}
    try:
        labels = json.loads(dataset_json.read_text(encoding="utf-8"))["labels"]
        has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
        return {_label_key(value, has_regions): name for name, value in labels.items() if name not in ("background", "ignore")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(
            f"Cannot read the labels of {dataset_json} ({type(e).__name__}: {e}). It should be the dataset.json "
            f"nnU-Net copied into the trainer folder; restore it from the raw dataset."
        ) from e


def _read_fold(path: Path, metric: str) -> Dict[str, float]:
    """``{label key: value}`` of ``metric`` from one summary.json (nnU-Net's format); UserError naming the file."""
    from nnunetv2.evaluation.evaluate_predictions import key_to_label_or_region, load_summary_json

    try:
        summary = load_summary_json(str(path))
        per_label = summary["mean"]
        values = {}
        for key, metrics in per_label.items():
            if key_to_label_or_region(str(key)) in (0, (0,)):
                continue  # background, should nnU-Net ever include it
            values[str(key)] = float(metrics[metric])
    except Exception as e:  # json errors, missing keys, wrong types: all mean "not a summary.json"
        detail = f"no {metric!r} entry" if isinstance(e, KeyError) and e.args == (metric,) else f"{type(e).__name__}: {e}"
        raise UserError(
            f"Cannot read nnU-Net's validation summary {path} ({detail}). Re-create it with "
            f"`nnUNetv2_train ... --val` (or nnUNetv2_evaluate_folder), or remove the fold folder and leave the "
            f"fold out with -f."
        ) from e
    if not values:
        raise UserError(f"{path} has no per-class entries under 'mean'; it is not a usable validation summary.")
    return values


def _stats(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise n (finite entries), mean and sample std (ddof=1) of (folds, classes), without warnings."""
    finite = np.isfinite(values)
    n = finite.sum(axis=0)
    filled = np.where(finite, values, 0.0)
    mean = np.divide(filled.sum(axis=0), n, out=np.full(n.shape, np.nan), where=n > 0)
    sq = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0)
    std = np.sqrt(np.divide(sq, n - 1, out=np.full(n.shape, np.nan), where=n > 1))
    return n, mean, std


def _fmt(mean: float, std: float, n: int, n_trainer: int) -> str:
    if n == 0:
        return "–"
    text = f"{100 * mean:.2f}"
    if n > 1:
        text += f" ± {100 * std:.2f}"
    if n != n_trainer:
        text += f" (n={n})"
    return text


def _folds_text(folds: Sequence[int]) -> str:
    return f"fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))}"


def _float_csv(x: float) -> str:
    return "" if not math.isfinite(x) else repr(float(x))


def summarize(
    dataset: Union[int, str],
    trainers: Sequence[str],
    plans: str = "nnUNetPlans",
    configuration: str = "3d_fullres",
    folds: Sequence[int] = (0, 1, 2, 3, 4),
    output_dir: Optional[Path] = None,
    metric: str = "Dice",
    results_root: Optional[Path] = None,
) -> SummaryResult:
    """Per-class mean and std over folds of nnU-Net's validation metric, per trainer: Markdown, CSV, PNG.

    Args:
        dataset: dataset ID (``602``, ``"602"``) or folder name (``"Dataset602_BTCV"``) under the results folder.
        trainers: trainer class names to compare (``["SubForeSwinUNETRTrainer", "SubForeSwinUNETRTrainer_scratch"]``).
        plans: plans identifier of the runs (``nnUNetPlans``).
        configuration: configuration of the runs (``3d_fullres``).
        folds: folds to gather; each is read from ``fold_<f>/validation/summary.json``.
        output_dir: where to write ``dice__<plans>__<configuration>.{md,csv,png}``; default
            ``$nnUNet_results/<Dataset>/subfore_summary``. Created if needed; files are overwritten.
        metric: the metric key of nnU-Net's summary (``"Dice"``, or ``"IoU"``).
        results_root: the nnU-Net results folder; default ``$nnUNet_results``.

    Returns:
        A :class:`SummaryResult`; ``result.missing`` maps each trainer with missing folds to those folds.

    Raises:
        UserError: unknown dataset, no summary found for any trainer, an unreadable summary.json
            (named), summaries with different label sets, bad arguments.
    """
    trainers, folds = _checked_selection(trainers, folds)
    root = nnunet_folder("results", results_root)
    dataset_name = find_dataset_name(dataset, root)
    out_dir = Path(output_dir) if output_dir is not None else root / dataset_name / "subfore_summary"
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"The summary folder {out_dir} is a file: pass a folder with -o.")
    runs = [_gather_run(root, dataset_name, trainer, plans, configuration, folds, metric) for trainer in trainers]
    if not any(run.values for run in runs):
        raise UserError(_nothing_found_message(root / dataset_name, trainers, plans, configuration, folds))
    classes = _common_classes(runs)
    result = SummaryResult(
        dataset=dataset_name,
        metric=metric,
        trainers=trainers,
        folds=folds,
        classes=classes,
        rows=[row for run in runs for row in _fold_statistics(run, classes, folds)],
        n_folds={run.trainer: len(run.values) for run in runs},
        missing={run.trainer: run.missing for run in runs if run.missing},
        markdown="",
        files=[],
    )
    result.markdown = _markdown(result, plans, configuration, {run.trainer: run.note for run in runs if run.note})
    result.files = _write_outputs(result, out_dir, plans, configuration)
    return result


@dataclass
class _Run:
    """What one trainer's result folder holds for the requested folds."""

    trainer: str
    folder: Path
    values: Dict[int, Dict[str, float]] = field(default_factory=dict)  # {fold: {label key: value}}
    missing: List[int] = field(default_factory=list)
    note: str = ""
    dataset_json: Optional[Path] = None

    def summary_file(self, fold: int) -> Path:
        return self.folder / f"fold_{fold}" / "validation" / "summary.json"


def _checked_selection(trainers: Sequence[str], folds: Sequence[int]) -> Tuple[List[str], Tuple[int, ...]]:
    trainers = [str(t) for t in trainers]
    folds = tuple(int(f) for f in folds)
    if not trainers:
        raise UserError("No trainer given. Name at least one, e.g. -tr SubForeSwinUNETRTrainer.")
    if len(set(trainers)) != len(trainers):
        raise UserError(f"Trainers must be distinct, got {trainers}.")
    if not folds:
        raise UserError("No fold given. Use e.g. -f 0 1 2 3 4.")
    if len(set(folds)) != len(folds):
        raise UserError(f"Folds must be distinct, got {list(folds)}.")
    return trainers, folds


def _gather_run(root: Path, dataset_name: str, trainer: str, plans: str, configuration: str,
                folds: Sequence[int], metric: str) -> _Run:
    """Read one trainer's fold summaries; note which folds are missing and why."""
    run = _Run(trainer, trainer_output_folder(root, dataset_name, trainer, plans, configuration))
    if not run.folder.is_dir():
        run.missing, run.note = list(folds), f"no folder {run.folder}"
        return run
    if (run.folder / "dataset.json").is_file():
        run.dataset_json = run.folder / "dataset.json"
    not_trained, not_validated = [], []
    for f in folds:
        if run.summary_file(f).is_file():
            run.values[f] = _read_fold(run.summary_file(f), metric)
        else:
            run.missing.append(f)
            (not_validated if (run.folder / f"fold_{f}").is_dir() else not_trained).append(f)
    reasons = []
    if not_trained:
        reasons.append(f"no fold folder for {_folds_text(not_trained)}")
    if not_validated:
        reasons.append(
            f"no validation/summary.json in {_folds_text(not_validated)} (training unfinished, or run "
            f"`nnUNetv2_train {dataset_name} {configuration} FOLD -tr {trainer} -p {plans} --val`)"
        )
    if reasons:
        run.note = f"in {run.folder}: " + "; ".join(reasons)
    return run


def _nothing_found_message(dataset_dir: Path, trainers: Sequence[str], plans: str, configuration: str,
                           folds: Sequence[int]) -> str:
    from nnunetv2.utilities.file_path_utilities import convert_identifier_to_trainer_plans_config

    available = []
    for folder in sorted(p for p in dataset_dir.iterdir() if p.is_dir() and p.name.count("__") == 2):
        trainer, folder_plans, folder_configuration = convert_identifier_to_trainer_plans_config(folder.name)
        if (folder_plans, folder_configuration) == (plans, configuration):
            available.append(trainer)
    return (
        f"No validation summary (fold_N/validation/summary.json, folds {list(folds)}) found for trainers "
        f"{list(trainers)} with plans {plans!r} and configuration {configuration!r} in {dataset_dir}. Trainers with "
        f"results for these plans and configuration: {available or 'none'}. Check -tr, -p, -c and -f."
    )


def _common_classes(runs: Sequence[_Run]) -> List[Tuple[str, str]]:
    """(label key, class name) of the one label set all summaries share, ordered as in dataset.json."""
    dataset_json = next((run.dataset_json for run in runs if run.dataset_json is not None), None)
    names = _class_names(dataset_json)
    reference: Optional[Path] = None
    label_set: Optional[set] = None
    for run in runs:
        for f, values in run.values.items():
            if label_set is None:
                label_set, reference = set(values), run.summary_file(f)
            elif set(values) != label_set:
                raise UserError(
                    f"{run.summary_file(f)} has labels {sorted(values)} but {reference} has {sorted(label_set)}. "
                    f"Summaries of different label sets cannot be compared; summarize the trainers separately."
                )
    order = {key: i for i, key in enumerate(names)}
    labels = sorted(label_set, key=lambda k: (order.get(k, len(order)), k))
    return [(key, names.get(key, f"label {key}")) for key in labels]


def _fold_statistics(run: _Run, classes: Sequence[Tuple[str, str]], folds: Sequence[int]) -> List[SummaryRow]:
    """Mean/std over folds per class and of the class average, vectorized over folds x classes."""
    labels = [key for key, _ in classes]
    fold_ids = [f for f in folds if f in run.values]
    values = np.array([[run.values[f][key] for key in labels] for f in fold_ids], dtype=float).reshape(
        len(fold_ids), len(labels)
    )
    # the average over classes per fold (NaN if a class is NaN in that fold, as nnU-Net's foreground_mean)
    table = np.concatenate([values, values.mean(axis=1, keepdims=True)], axis=1)
    n, mean, std = _stats(table)
    rows = []
    for j, (key, name) in enumerate(list(classes) + [(None, AVERAGE)]):
        per_fold = {f: float(table[i, j]) for i, f in enumerate(fold_ids)}
        rows.append(SummaryRow(run.trainer, name, key, int(n[j]), float(mean[j]), float(std[j]), per_fold))
    return rows


def _write_outputs(result: SummaryResult, out_dir: Path, plans: str, configuration: str) -> List[Path]:
    """``<metric>__<plans>__<configuration>`` .md, .csv and .png in ``out_dir`` (rewritten: they are derived
    from nnU-Net's results, which are never touched)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{result.metric.lower()}__{plans}__{configuration}"
    md_path, csv_path, png_path = (out_dir / f"{stem}.{ext}" for ext in ("md", "csv", "png"))
    md_path.write_text(result.markdown, encoding="utf-8")
    _write_csv(result, csv_path)
    _plot(result, plans, configuration, png_path)
    return [md_path, csv_path, png_path]


def _markdown(result: SummaryResult, plans: str, configuration: str, notes: Dict[str, str]) -> str:
    by_key = {(r.trainer, r.class_name): r for r in result.rows}
    header = ["Class"] + [f"{t} (n={result.n_folds[t]})" for t in result.trainers]
    lines = [
        f"## {result.metric} per class: {result.dataset}, {configuration}, {plans}",
        "",
        f"{result.metric} (%) from nnU-Net's cross-validation (`fold_N/validation/summary.json`), "
        f"folds {', '.join(map(str, result.folds))}: mean ± sample standard deviation over the folds found; "
        f"n = number of folds each mean is over (a cell says `(n=k)` where it differs). "
        f"The average over classes is taken per fold, then over folds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(result.trainers)) + "|",
    ]
    for key, name in result.classes + [(None, AVERAGE)]:
        label = f"{name} ({key})" if key is not None else "**average**"
        cells = []
        for t in result.trainers:
            r = by_key[(t, name)]
            cells.append(_fmt(r.mean, r.std, r.n_folds, result.n_folds[t]))
        lines.append("| " + " | ".join([label] + cells) + " |")
    lines.append("")
    if result.missing:
        lines.append("Missing folds (not averaged over, not counted in n):")
        lines.append("")
        for t, fs in result.missing.items():
            lines.append(f"- {t}: {_folds_text(fs)} ({notes.get(t, '')})")
    else:
        lines.append("All folds found for all trainers.")
    lines.append("")
    return "\n".join(lines)


def _write_csv(result: SummaryResult, path: Path) -> None:
    m = result.metric.lower()
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trainer", "class", "label", "n_folds", f"{m}_mean", f"{m}_std"] + [f"fold_{f}" for f in result.folds])
        for r in result.rows:
            writer.writerow(
                [r.trainer, r.class_name, "" if r.label is None else r.label, r.n_folds, _float_csv(r.mean), _float_csv(r.std)]
                + [_float_csv(r.per_fold[f]) if f in r.per_fold else "" for f in result.folds]
            )


def _plot(result: SummaryResult, plans: str, configuration: str, path: Path) -> None:
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    from nnunet_subfore.reporting.canvas import save_figure, wrap_title, wrap_to_width

    groups = [name for _, name in result.classes] + [AVERAGE]
    n_groups, n_trainers = len(groups), len(result.trainers)
    by_key = {(r.trainer, r.class_name): r for r in result.rows}
    mean = 100 * np.array([[by_key[(t, g)].mean for g in groups] for t in result.trainers])
    std = 100 * np.array([[by_key[(t, g)].std for g in groups] for t in result.trainers])
    # NaN heights / errors draw nothing: no bar for a trainer without folds, no error bar below 2 folds

    width = 0.8 / n_trainers
    x = np.arange(n_groups, dtype=float)
    fig = Figure(figsize=(min(max(6.0, 0.28 * n_groups * n_trainers + 2.5), 28.0), 4.8), layout="constrained")
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10"].colors
    for i, t in enumerate(result.trainers):
        n = result.n_folds[t]
        ax.bar(
            x + (i - (n_trainers - 1) / 2) * width,
            mean[i],
            width,
            yerr=std[i],
            capsize=min(3.0, 30.0 * width),
            color=colors[i % len(colors)],
            edgecolor="black",
            linewidth=0.4,
            error_kw={"elinewidth": 0.8, "ecolor": "black"},
            label=wrap_to_width(f"{t} ({n} fold{'s' if n != 1 else ''})" if n else f"{t} (no folds found)",
                                fig.get_figwidth() * 0.9, 8),
        )
    ax.axvline(n_groups - 1.5, color="grey", linewidth=0.8, linestyle=":")
    if n_groups > 4:
        ax.set_xticks(x, groups, rotation=35, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x, groups)
    ax.set_xlim(-0.6, n_groups - 0.4)
    ax.set_ylim(0, 105)
    ax.set_ylabel(f"{result.metric} (%)")
    ax.yaxis.grid(True, linewidth=0.5, alpha=0.5)
    ax.set_axisbelow(True)
    fig.suptitle(wrap_title(
        fig, f"{result.dataset} ({configuration}, {plans}): {result.metric} per class, mean ± std over folds", 10),
        fontsize=10)
    longest = max(len(line) for t in ax.get_legend_handles_labels()[1] for line in t.split("\n"))
    columns = max(1, min(n_trainers, 3, int(fig.get_figwidth() * 72 / (0.6 * 8 * (longest + 4)))))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=columns, fontsize=8, frameon=False)
    save_figure(fig, path, dpi=150)
