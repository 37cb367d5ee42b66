"""The paper's threshold analysis (its Fig. 3b) on a user's labelled CT dataset.

The paper chose lambda = 0.1 from histograms of the windowed intensity ``u = clip((HU - low) / (high -
low), 0, 1)`` of background against organ labels over 40 CT images ("organ intensity begins around
0.1"). :func:`threshold_analysis` repeats that on a labelled nnU-Net raw dataset (images in HU,
channel 0 = CT):

- histograms of ``u`` for the voxels of the background and of each label;
- the same for ``s^3`` block means (the criterion's unit), blocks cut from each whole volume from its
  first voxel (the remainder at the far sides is left out). A block is *labelled* when at least half
  its voxels carry a label (listed under the label most of them carry), *background* when none does,
  *mixed* otherwise (histogrammed, not used for lambda);
- lambda: the block threshold with the fewest misclassified blocks, each class weighted equally
  (labelled blocks below it + background blocks at or above it, as shares of their class: the
  balanced error; background blocks far outnumber labelled ones, so unweighted counts would put lambda
  where the background ends). Of several equally good thresholds the middle one is taken. The
  unweighted optimum is reported too;
- where organ intensity starts: the 1st percentile of ``u`` over labelled voxels and over labelled
  blocks.

Outputs (:func:`write_threshold_analysis`): a PNG (voxel and block histograms, the paper's 0.1, the
found lambda and the organ onset marked; a top axis in HU for a uniform block), Markdown, CSV (the
histograms) and JSON (the numbers; ``nnunet-subfore plans --threshold-from`` reads its lambda).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nnunet_subfore.errors import UserError
from nnunet_subfore.recipe import PAPER_MASKING, check_masking_settings
from nnunet_subfore.reporting.canvas import save_figure, wrap_title, wrap_to_width
from nnunet_subfore.reporting.outputs import report_paths, write_report

#: Histogram bins over the windowed intensity [0, 1].
N_BINS = 100
#: Candidate thresholds for lambda.
CANDIDATES = np.round(np.arange(0.0, 1.0001, 0.005), 3)
#: Share of a block's voxels that must carry a label for the block to count as labelled.
LABELLED_BLOCK_SHARE = 0.5
#: Percentile of the labelled intensities reported as where organ intensity starts.
ONSET_PERCENTILE = 1.0
OUTPUT_STEM = "threshold_analysis"


@dataclass
class ThresholdAnalysis:
    """The histograms and numbers of :func:`threshold_analysis`.

    Attributes:
        dataset: the dataset's folder name.
        cases: the cases read.
        window, subvolume_size: the criterion's window (HU) and block side.
        edges: histogram bin edges over u in [0, 1].
        voxel_counts: ``{class: counts}``; classes ``background`` and the label names.
        block_counts: ``{class: counts}``; ``background``, ``labelled``, each label name, ``mixed``.
        labelled_block_means, background_block_means: the block means that choose lambda.
        labelled_voxel_onset: the :data:`ONSET_PERCENTILE` percentile of u over labelled voxels.
    """

    dataset: str
    cases: List[str]
    window: Tuple[float, float]
    subvolume_size: int
    edges: np.ndarray
    voxel_counts: Dict[str, np.ndarray]
    block_counts: Dict[str, np.ndarray]
    labelled_block_means: np.ndarray
    background_block_means: np.ndarray
    labelled_voxel_onset: float
    numbers: Dict[str, float] = field(default_factory=dict)

    def hu(self, u: float) -> float:
        """The HU of a uniform block of windowed intensity ``u``."""
        lo, hi = self.window
        return lo + u * (hi - lo)


def block_errors(labelled: np.ndarray, background: np.ndarray, thresholds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per threshold: the share of labelled blocks below it and of background blocks at or above it."""
    lab = np.sort(np.asarray(labelled, dtype=np.float64))
    bg = np.sort(np.asarray(background, dtype=np.float64))
    missed = np.searchsorted(lab, thresholds, side="left") / max(len(lab), 1)
    false = (len(bg) - np.searchsorted(bg, thresholds, side="left")) / max(len(bg), 1)
    return missed, false


def best_threshold(labelled: np.ndarray, background: np.ndarray, balanced: bool = True,
                   thresholds: np.ndarray = CANDIDATES) -> float:
    """The threshold with the fewest misclassified blocks (balanced: each class's share; else counts);
    the middle one of equally good thresholds."""
    if not len(labelled) or not len(background):
        return math.nan
    missed, false = block_errors(labelled, background, thresholds)
    error = missed + false if balanced else missed * len(labelled) + false * len(background)
    best = np.flatnonzero(np.isclose(error, error.min(), rtol=0, atol=1e-12))
    return float(thresholds[best[len(best) // 2]])


def _dataset_files(raw_folder: Path) -> Tuple[dict, Dict[str, dict]]:
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    dataset_json_path = raw_folder / "dataset.json"
    if not dataset_json_path.is_file():
        raise UserError(f"{raw_folder} holds no dataset.json: not an nnU-Net raw dataset.")
    dataset_json = json.loads(dataset_json_path.read_text(encoding="utf-8"))
    channel = str(dataset_json.get("channel_names", dataset_json.get("modality", {})).get("0", ""))
    if channel.lower() != "ct":
        raise UserError(
            f"Channel 0 of {raw_folder.name} is {channel!r}, not CT: the threshold analysis reads Hounsfield units. "
            f"For MRI the masking uses the nonzero-region criterion (docs/masking.md).")
    return dataset_json, get_filenames_of_train_images_and_targets(str(raw_folder), dataset_json)


def _label_names(dataset_json: dict) -> Dict[int, str]:
    names = {}
    for name, value in dataset_json.get("labels", {}).items():
        if isinstance(value, int) and value > 0:
            names[value] = name
    if not names:
        raise UserError("dataset.json names no integer labels > 0: the analysis needs labelled organs.")
    return names


def _blocks(array: np.ndarray, s: int) -> np.ndarray:
    """(n_blocks, s^3) of the volume cut from its first voxel (the remainder left out)."""
    d, h, w = (side // s for side in array.shape)
    a = array[: d * s, : h * s, : w * s].reshape(d, s, h, s, w, s)
    return a.transpose(0, 2, 4, 1, 3, 5).reshape(d * h * w, s ** 3)


def threshold_analysis(raw_folder: Path, window: Sequence[float] = PAPER_MASKING.window,
                       subvolume_size: int = PAPER_MASKING.subvolume_size, max_cases: Optional[int] = None,
                       progress=None) -> ThresholdAnalysis:
    """Histograms and lambda of a labelled CT raw dataset (see the module's docstring).

    Args:
        raw_folder: ``$nnUNet_raw/DatasetXXX_NAME`` with labelled CT training cases.
        window: (low, high) HU window of the criterion.
        subvolume_size: block side in voxels.
        max_cases: read at most this many cases, evenly spread over the sorted list (the paper used 40).
        progress: called with each case name.
    """
    raw_folder = Path(raw_folder)
    checked = check_masking_settings(window=window, subvolume_size=subvolume_size, error=UserError)
    (lo, hi), s = checked["window"], checked["subvolume_size"]
    dataset_json, files = _dataset_files(raw_folder)
    names = _label_names(dataset_json)
    cases = sorted(files)
    if max_cases is not None and 0 < max_cases < len(cases):
        cases = [cases[int(i)] for i in np.linspace(0, len(cases) - 1, max_cases).round()]
    if not cases:
        raise UserError(f"{raw_folder} lists no training cases.")
    edges = np.linspace(0.0, 1.0, N_BINS + 1)
    voxel_counts, block_counts, lab, bg, voxels = _histograms(files, cases, names, (lo, hi), s, edges, progress)
    analysis = ThresholdAnalysis(raw_folder.name, cases, (lo, hi), s, edges, voxel_counts, block_counts, lab, bg,
                                 float(np.percentile(voxels, ONSET_PERCENTILE)) if voxels.size else math.nan)
    analysis.numbers = _lambda_numbers(analysis)
    if not lab.size:
        raise UserError(
            f"No {s}^3 block of {raw_folder.name} is at least {LABELLED_BLOCK_SHARE:.0%} labelled: lambda cannot be "
            f"chosen from blocks. Use a smaller --subvolume-size or a dataset with larger labelled organs.")
    return analysis


def _histograms(files: Dict[str, dict], cases: Sequence[str], names: Dict[int, str], window: Tuple[float, float],
                s: int, edges: np.ndarray, progress=None
                ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Over ``cases``: the voxel and block histograms per class, the labelled and the background block means, and a
    sample of the windowed intensities of labelled voxels (at most about 200k per case)."""
    lo, hi = window
    voxel_counts = {"background": np.zeros(N_BINS, np.int64), **{n: np.zeros(N_BINS, np.int64) for n in names.values()}}
    block_counts = {k: np.zeros(N_BINS, np.int64) for k in ("background", "labelled", *names.values(), "mixed")}
    labelled_means: List[np.ndarray] = []
    background_means: List[np.ndarray] = []
    labelled_voxel_samples: List[np.ndarray] = []
    for case in cases:
        if progress is not None:
            progress(case)
        image, label = _read_case(case, files[case])
        u = np.clip((image - lo) / (hi - lo), 0.0, 1.0)
        _add_to_histogram(voxel_counts["background"], u[label == 0], edges)
        for value, name in names.items():
            _add_to_histogram(voxel_counts[name], u[label == value], edges)
        labelled_u = u[label > 0]
        if labelled_u.size:
            step = max(1, labelled_u.size // 200_000)
            labelled_voxel_samples.append(labelled_u[::step])
        ub, lb = _blocks(u, s), _blocks(label, s)
        if not len(ub):
            continue
        labelled, background = _add_blocks(ub, lb, names, edges, block_counts)
        labelled_means.append(labelled)
        background_means.append(background)
    lab = np.concatenate(labelled_means) if labelled_means else np.zeros(0)
    bg = np.concatenate(background_means) if background_means else np.zeros(0)
    voxels = np.concatenate(labelled_voxel_samples) if labelled_voxel_samples else np.zeros(0)
    return voxel_counts, block_counts, lab, bg, voxels


def _read_case(case: str, files: dict) -> Tuple[np.ndarray, np.ndarray]:
    """The case's image (float32) and label arrays; a UserError when their shapes differ."""
    from nnunet_subfore.data.ct_io import read_image
    import SimpleITK as sitk

    image = sitk.GetArrayFromImage(read_image(files["images"][0])).astype(np.float32)
    label = sitk.GetArrayFromImage(read_image(files["label"]))
    if image.shape != label.shape:
        raise UserError(f"Case {case}: image shape {image.shape} differs from its label's {label.shape}.")
    return image, label


def _add_to_histogram(counts: np.ndarray, values: np.ndarray, edges: np.ndarray) -> None:
    counts += np.histogram(values, bins=edges)[0]


def _add_blocks(ub: np.ndarray, lb: np.ndarray, names: Dict[int, str], edges: np.ndarray,
                block_counts: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Add the means of the blocks ``ub`` (labels ``lb``) to the labelled, background, mixed and per-label histograms;
    return the means of the labelled and of the background blocks."""
    means = ub.mean(axis=1)
    share = (lb > 0).mean(axis=1)
    labelled, background = share >= LABELLED_BLOCK_SHARE, share == 0
    _add_to_histogram(block_counts["labelled"], means[labelled], edges)
    _add_to_histogram(block_counts["background"], means[background], edges)
    _add_to_histogram(block_counts["mixed"], means[~labelled & ~background], edges)
    if labelled.any():
        majority = np.array([np.bincount(row[row > 0]).argmax() for row in lb[labelled]])
        for value, name in names.items():
            _add_to_histogram(block_counts[name], means[labelled][majority == value], edges)
    return means[labelled], means[background]


def _lambda_numbers(analysis: ThresholdAnalysis) -> Dict[str, float]:
    """lambda (balanced and unweighted), the blocks it and the paper's 0.1 misclassify, the organ onset, block counts."""
    lab, bg = analysis.labelled_block_means, analysis.background_block_means
    lam = best_threshold(lab, bg)
    paper = PAPER_MASKING.threshold
    missed, false = block_errors(lab, bg, np.array([lam if not math.isnan(lam) else paper, paper]))
    return {
        "lambda": lam,
        "lambda_hu": analysis.hu(lam),
        "lambda_fewest_blocks_unweighted": best_threshold(lab, bg, balanced=False),
        "labelled_blocks_below_lambda": float(missed[0]),
        "background_blocks_at_or_above_lambda": float(false[0]),
        "paper_lambda": paper,
        "labelled_blocks_below_paper_lambda": float(missed[1]),
        "background_blocks_at_or_above_paper_lambda": float(false[1]),
        "organ_onset_voxels": analysis.labelled_voxel_onset,
        "organ_onset_blocks": float(np.percentile(lab, ONSET_PERCENTILE)) if lab.size else math.nan,
        "labelled_blocks": int(lab.size),
        "background_blocks": int(bg.size),
        "mixed_blocks": int(analysis.block_counts["mixed"].sum()),
    }


# ---------------------------------------------------------------------------------------------- outputs

def output_paths(output_dir: Path) -> Dict[str, Path]:
    return report_paths(output_dir, OUTPUT_STEM)


def _fmt(u: float, analysis: ThresholdAnalysis) -> str:
    return "n/a" if math.isnan(u) else f"{u:.3f} ({analysis.hu(u):.1f} HU)"


def markdown(analysis: ThresholdAnalysis) -> str:
    n = analysis.numbers
    lo, hi = analysis.window
    s = analysis.subvolume_size
    lines = [
        f"## Threshold analysis: {analysis.dataset}",
        "",
        f"{len(analysis.cases)} cases; windowed intensity u = clip((HU - ({lo:g})) / {hi - lo:g}, 0, 1); blocks of "
        f"{s}^3 voxels (labelled: >= {LABELLED_BLOCK_SHARE:.0%} of the voxels labelled; background: none).",
        "",
        "| quantity | u (HU of a uniform block) |",
        "|---|---|",
        f"| lambda: fewest misclassified blocks, both classes weighted equally | {_fmt(n['lambda'], analysis)} |",
        f"| lambda: fewest misclassified blocks, counted | {_fmt(n['lambda_fewest_blocks_unweighted'], analysis)} |",
        f"| organ intensity starts (p{ONSET_PERCENTILE:g} of labelled voxels) | {_fmt(n['organ_onset_voxels'], analysis)} |",
        f"| organ intensity starts (p{ONSET_PERCENTILE:g} of labelled block means) | {_fmt(n['organ_onset_blocks'], analysis)} |",
        f"| the paper's lambda | {_fmt(n['paper_lambda'], analysis)} |",
        "",
        "| threshold | labelled blocks below | background blocks at or above |",
        "|---|---|---|",
        f"| lambda {n['lambda']:.3f} | {100 * n['labelled_blocks_below_lambda']:.1f}% | "
        f"{100 * n['background_blocks_at_or_above_lambda']:.1f}% |",
        f"| paper {n['paper_lambda']:g} | {100 * n['labelled_blocks_below_paper_lambda']:.1f}% | "
        f"{100 * n['background_blocks_at_or_above_paper_lambda']:.1f}% |",
        "",
        f"Blocks: {n['labelled_blocks']} labelled, {n['background_blocks']} background, {n['mixed_blocks']} mixed. "
        f"Background is everything unlabelled (air, lung, fat, muscle, ...): a background block above lambda is "
        f"body tissue, masked like an organ.",
        "",
        "| class | voxels | p1 | p50 | blocks | p50 |",
        "|---|---|---|---|---|---|",
    ]
    for name, counts in analysis.voxel_counts.items():
        blocks = analysis.block_counts.get(name, np.zeros(0))
        lines.append(f"| {name} | {int(counts.sum())} | {_quantile(analysis.edges, counts, 0.01):.3f} | "
                     f"{_quantile(analysis.edges, counts, 0.5):.3f} | {int(blocks.sum())} | "
                     f"{_quantile(analysis.edges, blocks, 0.5):.3f} |")
    lines.append("")
    lines.append(f"Set it: `nnunet-subfore plans -d ID --threshold {n['lambda']:.3f}` (or `--threshold-from "
                 f"{OUTPUT_STEM}.json`), see docs/masking.md.")
    return "\n".join(lines) + "\n"


def _quantile(edges: np.ndarray, counts: np.ndarray, q: float) -> float:
    total = counts.sum()
    if not total:
        return math.nan
    k = int(np.searchsorted(np.cumsum(counts), q * total, side="left"))
    return float((edges[k] + edges[k + 1]) / 2)


def csv_text(analysis: ThresholdAnalysis) -> str:
    header = ["u_low", "u_high"] + [f"voxels_{k}" for k in analysis.voxel_counts] + [f"blocks_{k}" for k in analysis.block_counts]
    rows = [",".join(header)]
    for i in range(N_BINS):
        values = [f"{analysis.edges[i]:.2f}", f"{analysis.edges[i + 1]:.2f}"]
        values += [str(int(c[i])) for c in analysis.voxel_counts.values()]
        values += [str(int(c[i])) for c in analysis.block_counts.values()]
        rows.append(",".join(values))
    return "\n".join(rows) + "\n"


def draw(analysis: ThresholdAnalysis, output: Path) -> None:
    from matplotlib.figure import Figure

    n = analysis.numbers
    fig = Figure(figsize=(10.0, 8.0), layout="constrained")
    axes = fig.subplots(2, 1)
    centres = (analysis.edges[:-1] + analysis.edges[1:]) / 2
    colours = ["tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    names = list(dict.fromkeys([*analysis.voxel_counts, *analysis.block_counts]))
    colour = {name: colours[k % len(colours)] for k, name in enumerate(names)}
    for ax, counts, what in ((axes[0], analysis.voxel_counts, "voxels"),
                             (axes[1], analysis.block_counts, f"{analysis.subvolume_size}^3 blocks (by block mean)")):
        for name, c in counts.items():
            if c.sum():
                ax.step(centres, c / c.sum(), where="mid", label=wrap_to_width(f"{name} ({int(c.sum())})", 2.2, 7),
                        color=colour[name], linestyle="--" if name in ("mixed", "labelled") else "-")
        ax.axvline(n["paper_lambda"], color="black", linestyle="--", label=f"paper lambda {n['paper_lambda']:g}")
        ax.axvline(n["lambda"], color="red", linewidth=2, label=f"lambda {n['lambda']:.3f}\n(fewest misclassified blocks)")
        onset = n["organ_onset_voxels"] if what == "voxels" else n["organ_onset_blocks"]
        ax.axvline(onset, color="green", linestyle=":", linewidth=2, label=f"organ onset {onset:.3f} (p{ONSET_PERCENTILE:g})")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel("windowed intensity u")
        ax.set_ylabel(f"share of the class's\n{what}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        top = ax.secondary_xaxis("top", functions=(analysis.hu, lambda hu: (hu - analysis.window[0]) /
                                                   (analysis.window[1] - analysis.window[0])))
        top.set_xlabel("HU of a uniform block", fontsize=8)
    fig.suptitle(wrap_title(fig, f"Threshold analysis of {analysis.dataset} ({len(analysis.cases)} cases): windowed "
                            f"intensity of background and labels", 11), fontsize=11)
    save_figure(fig, output, dpi=100)


def write_threshold_analysis(analysis: ThresholdAnalysis, output_dir: Path, force: bool = False) -> List[Path]:
    """PNG, Markdown, CSV and JSON into ``output_dir``; existing ones are refused without ``force``."""
    def record() -> dict:
        return {"dataset": analysis.dataset, "cases": analysis.cases, "window": list(analysis.window),
                "subvolume_size": analysis.subvolume_size,
                **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in analysis.numbers.items()}}

    return write_report(output_paths(output_dir), force, lambda path: draw(analysis, path), lambda: markdown(analysis),
                        lambda: csv_text(analysis), record)


def read_lambda(path: Path) -> Tuple[float, Tuple[float, float]]:
    """lambda and window from a ``threshold_analysis.json`` (its ``lambda``) or a ``masking_report.json`` (its
    ``dataset_otsu_lambda``)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        lam = float(record["lambda"] if "lambda" in record else record["dataset_otsu_lambda"])
        window = (float(record["window"][0]), float(record["window"][1]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a threshold_analysis.json or masking_report.json with a lambda ({e}).") from e
    return lam, window


def analyse_dataset(dataset: str, raw_root: Optional[Path] = None, output: Optional[Path] = None, force: bool = False,
                    window: Tuple[float, float] = PAPER_MASKING.window, subvolume_size: int = PAPER_MASKING.subvolume_size,
                    max_cases: Optional[int] = None, progress=None) -> Tuple["ThresholdAnalysis", Path]:
    """``threshold-analysis``: the analysis of a labelled raw dataset and the folder its report goes to.

    Args:
        dataset: ID or ``DatasetXXX_NAME`` in the raw folder (``raw_root``, default ``$nnUNet_raw``).
        output: the report's folder (default ``subfore_threshold_analysis`` in the results folder); existing
            report files are refused without ``force``, before the long part.
        window, subvolume_size, max_cases, progress: see :func:`threshold_analysis`.
    """
    from nnunet_subfore.paths import find_dataset_name, nnunet_folder
    from nnunet_subfore.reporting.outputs import refuse_existing

    raw = nnunet_folder("raw", raw_root)
    name = find_dataset_name(dataset, raw)
    output = Path(output) if output else nnunet_folder("results") / name / "subfore_threshold_analysis"
    refuse_existing(output_paths(output).values(), force)
    analysis = threshold_analysis(raw / name, window=tuple(window), subvolume_size=subvolume_size,
                                  max_cases=max_cases, progress=progress)
    return analysis, output
