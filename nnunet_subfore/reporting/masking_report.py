"""How much of a pretraining dataset is foreground, and so how much the trainer really masks.

:func:`masking_report` samples patches of the preprocessed data with nnU-Net's own data loader
(``nnUNetDataLoader``: its crops, its padding with 0, its foreground oversampling of a third of each
batch, as in training) at the trainer's patch size, evaluates the masking criterion exactly as the
trainer does (:class:`nnunet_subfore.masking.ForegroundMasker` with the recipe's window mapped through
the plans' normalization, or the nonzero-region criterion of MRI plans:
:func:`nnunet_subfore.masking_setup.masker_for_plans`), and reports

- the share of foreground subvolumes per patch, per case (mean over its patches) and overall;
- the expected masked share (``ratio x foreground`` for bernoulli selection, ``round(ratio x n) / N``
  for exact, ``ratio`` for random);
- the cases with no foreground in any patch and those whose patches are all foreground;
- the same shares under the other criterion (fixed lambda or per-patch Otsu) on the same patches;
- a dataset threshold: Otsu's threshold over the block means of all patches (windowed intensity), a
  candidate lambda for ``nnunet-subfore plans --threshold-from masking_report.json``.

Outputs (:func:`write_masking_report`): a PNG (histograms of the per-patch and per-case foreground
shares), Markdown, CSV (one row per case) and JSON. The trainer class (its patch size and recipe)
is resolved by the CLI; this module knows no trainer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nnunet_subfore.errors import UserError
from nnunet_subfore.masking import ForegroundMasker, otsu_thresholds, windowed_block_means
from nnunet_subfore.masking_setup import masker_for_plans
from nnunet_subfore.plans_reading import require_configuration
from nnunet_subfore.recipe import HU_CRITERIA, PAPER_MASKING, MaskingRecipe
from nnunet_subfore.reporting.canvas import save_figure, wrap_title
from nnunet_subfore.reporting.outputs import report_paths, write_report

OUTPUT_STEM = "masking_report"
#: nnU-Net's default share of foreground-forced crops per batch (nnUNetTrainer.oversample_foreground_percent).
OVERSAMPLE_FOREGROUND = 0.33


@dataclass
class MaskingReport:
    """Per-patch foreground shares of a pretraining dataset (see the module's docstring).

    Attributes:
        dataset, plans_name, configuration: what was read.
        dataset_otsu_lambda: Otsu's threshold over the windowed block means of all patches (a dataset lambda).
        patch_size: the trainer's patch.
        recipe: the masking settings.
        masker: the masker as the trainer builds it (window in normalized units).
        patch_shares: ``{case: [foreground share of each patch]}`` under the recipe's criterion.
        other_criteria: ``{criterion: {case: [shares]}}`` under the other criteria on the same patches.
        notes: remarks (e.g. the padding value in HU).
    """

    dataset: str
    plans_name: str
    configuration: str
    patch_size: Tuple[int, int, int]
    recipe: MaskingRecipe
    masker: ForegroundMasker
    patch_shares: Dict[str, List[float]]
    n_subvolumes: int
    other_criteria: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    dataset_otsu_lambda: Optional[float] = None

    def case_share(self, case: str, shares: Optional[Dict[str, List[float]]] = None) -> float:
        return float(np.mean((shares or self.patch_shares)[case]))

    @property
    def all_shares(self) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=float) for v in self.patch_shares.values()])

    def expected_masked(self, foreground_share: np.ndarray) -> np.ndarray:
        """Expected share of masked subvolumes of patches with these foreground shares."""
        share = np.asarray(foreground_share, dtype=float)
        if self.recipe.selection == "random":
            return np.full_like(share, self.recipe.ratio)
        if self.recipe.selection == "exact":
            return np.round(self.recipe.ratio * np.round(share * self.n_subvolumes)) / self.n_subvolumes
        return self.recipe.ratio * share

    @property
    def cases_without_foreground(self) -> List[str]:
        return [c for c, v in self.patch_shares.items() if max(v) == 0]

    @property
    def cases_all_foreground(self) -> List[str]:
        return [c for c, v in self.patch_shares.items() if min(v) == 1]


def masking_report(preprocessed_dataset: Path, plans: dict, configuration: str, patch_size: Sequence[int],
                   recipe: MaskingRecipe = PAPER_MASKING, patches_per_case: int = 8, seed: int = 0,
                   max_cases: Optional[int] = None, progress=None) -> MaskingReport:
    """Sample ``patches_per_case`` patches per case as nnU-Net's loader does in training and evaluate the
    criterion as the trainer does.

    Args:
        preprocessed_dataset: ``$nnUNet_preprocessed/DatasetXXX_NAME`` (holds ``dataset.json`` and the
            configuration's data folder).
        plans: the plans the trainer runs with (a dict).
        configuration: e.g. ``3d_fullres``.
        patch_size: the trainer's patch (its fitted patch size).
        recipe: the trainer's masking recipe.
        patches_per_case: patches per case; the last third (rounded like nnU-Net) are foreground-forced crops.
        seed: numpy seed of the loader's random crops.
        max_cases: read at most this many cases, evenly spread.
    """
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    preprocessed_dataset = Path(preprocessed_dataset)
    manager = PlansManager(plans)
    folder = _data_folder(preprocessed_dataset, plans, manager, configuration)
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3 or any(p % recipe.subvolume_size for p in patch):
        raise UserError(f"patch {list(patch)} is not divisible by the subvolume size {recipe.subvolume_size}.")
    dataset_json = json.loads((preprocessed_dataset / "dataset.json").read_text(encoding="utf-8"))
    label_manager = manager.get_label_manager(dataset_json)
    masker, note = masker_for_plans(plans, configuration, recipe, source=f"plans {manager.plans_name!r}")
    dataset_class = infer_dataset_class(str(folder))
    cases = sorted(dataset_class.get_identifiers(str(folder)))
    if max_cases is not None and 0 < max_cases < len(cases):
        cases = [cases[int(i)] for i in np.linspace(0, len(cases) - 1, max_cases).round()]
    np.random.seed(seed)
    others = _other_maskers(plans, configuration, recipe, masker)
    shares: Dict[str, List[float]] = {}
    other_shares: Dict[str, Dict[str, List[float]]] = {name: {} for name in others}
    n_sub = math.prod(p // recipe.subvolume_size for p in patch)
    block_means: List[torch.Tensor] = []
    for case in cases:
        if progress is not None:
            progress(case)
        data = _training_batch(dataset_class(str(folder), [case]), patches_per_case, patch, label_manager)
        shares[case] = _patch_foreground_shares(masker, data)
        if criterion_name(masker) in HU_CRITERIA:
            block_means.append(windowed_block_means(data, masker.subvolume_size, masker.window).flatten().float())
        for name, other in others.items():
            other_shares[name][case] = _patch_foreground_shares(other, data)
    report = MaskingReport(preprocessed_dataset.name, manager.plans_name, configuration, patch, recipe, masker,
                           shares, n_sub, other_shares, [note])
    if block_means:
        report.dataset_otsu_lambda = float(otsu_thresholds(torch.cat(block_means)[None])[0])
    return report


def _data_folder(preprocessed_dataset: Path, plans: dict, manager, configuration: str) -> Path:
    """The configuration's preprocessed data folder; a UserError naming the command that fills it when it is empty."""
    require_configuration(plans, configuration, source=f"The plans {manager.plans_name!r}")
    config = manager.get_configuration(configuration)
    folder = preprocessed_dataset / config.data_identifier
    if not folder.is_dir() or not any(folder.iterdir()):
        raise UserError(f"{folder} holds no preprocessed data: run `nnUNetv2_preprocess -d {preprocessed_dataset.name} "
                        f"-plans_name {manager.plans_name} -c {configuration}` first.")
    return folder


def _training_batch(dataset, patches_per_case: int, patch: Tuple[int, int, int], label_manager) -> torch.Tensor:
    """One batch of ``patches_per_case`` patches of ``dataset`` as nnU-Net's loader cuts them in training."""
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    loader = nnUNetDataLoader(dataset, patches_per_case, patch, patch, label_manager,
                              oversample_foreground_percent=OVERSAMPLE_FOREGROUND)
    return loader.generate_train_batch()["data"]


def _patch_foreground_shares(masker: ForegroundMasker, data: torch.Tensor) -> List[float]:
    """Per patch of ``data``: the share of its subvolumes that ``masker``'s criterion calls foreground."""
    return masker.foreground(data).flatten(1).float().mean(1).tolist()


def _other_maskers(plans: dict, configuration: str, recipe: MaskingRecipe,
                   masker: ForegroundMasker) -> Dict[str, ForegroundMasker]:
    """The HU criteria other than ``masker``'s that apply to these plans; none when ``masker``'s is not an HU one."""
    if criterion_name(masker) not in HU_CRITERIA:
        return {}
    return {name: m for name, m in _comparison_maskers(plans, configuration, recipe).items()
            if m is not None and name != criterion_name(masker)}


def _comparison_maskers(plans: dict, configuration: str, recipe: MaskingRecipe) -> Dict[str, Optional[ForegroundMasker]]:
    """The fixed and Otsu criteria on the same data, where they apply (CT channels)."""
    out: Dict[str, Optional[ForegroundMasker]] = {}
    for criterion in ("fixed", "otsu"):
        try:
            out[criterion] = masker_for_plans(plans, configuration, recipe.with_changes(criterion=criterion))[0]
        except (UserError, ValueError, KeyError):
            out[criterion] = None
    return out


def criterion_name(masker: ForegroundMasker) -> str:
    return getattr(masker, "criterion", "fixed")


# ---------------------------------------------------------------------------------------------- outputs

def output_paths(output_dir: Path) -> Dict[str, Path]:
    return report_paths(output_dir, OUTPUT_STEM)


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def summary_numbers(report: MaskingReport) -> dict:
    shares = report.all_shares
    per_case = np.array([report.case_share(c) for c in report.patch_shares])
    numbers = {
        "cases": len(report.patch_shares),
        "patches": int(shares.size),
        "subvolumes_per_patch": report.n_subvolumes,
        "foreground_share": float(shares.mean()),
        "foreground_share_per_case_min": float(per_case.min()),
        "foreground_share_per_case_max": float(per_case.max()),
        "expected_masked_share": float(report.expected_masked(shares).mean()),
        "patches_without_foreground": float((shares == 0).mean()),
        "patches_all_foreground": float((shares == 1).mean()),
        "cases_without_foreground": report.cases_without_foreground,
        "cases_all_foreground": report.cases_all_foreground,
    }
    for name, per in report.other_criteria.items():
        numbers[f"foreground_share_{name}"] = float(np.concatenate([np.asarray(v) for v in per.values()]).mean())
    if report.dataset_otsu_lambda is not None:
        lo, hi = report.recipe.window
        numbers["dataset_otsu_lambda"] = report.dataset_otsu_lambda
        numbers["dataset_otsu_lambda_hu"] = lo + report.dataset_otsu_lambda * (hi - lo)
    return numbers


def markdown(report: MaskingReport) -> str:
    n = summary_numbers(report)
    r = report.recipe
    lines = [
        f"## Masking report: {report.dataset}, {report.plans_name}, {report.configuration}",
        "",
        f"{n['cases']} cases x {n['patches'] // max(n['cases'], 1)} patches of {'x'.join(map(str, report.patch_size))} "
        f"voxels sampled by nnU-Net's data loader as in training (a third foreground-forced, padding with 0); "
        f"{n['subvolumes_per_patch']} subvolumes of {r.subvolume_size}^3 per patch.",
        f"Masker as the trainer builds it: `{report.masker!r}`.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| foreground subvolumes (criterion {criterion_name(report.masker)}) | {_pct(n['foreground_share'])} |",
        f"| per case: lowest, highest | {_pct(n['foreground_share_per_case_min'])}, {_pct(n['foreground_share_per_case_max'])} |",
        f"| expected masked subvolumes ({r.selection}, ratio {r.ratio:g}) | {_pct(n['expected_masked_share'])} |",
        f"| patches without foreground (nothing masked) | {_pct(n['patches_without_foreground'])} |",
        f"| patches all foreground | {_pct(n['patches_all_foreground'])} |",
    ]
    for name in report.other_criteria:
        lines.append(f"| foreground subvolumes with the {name} criterion (same patches) | {_pct(n[f'foreground_share_{name}'])} |")
    if "dataset_otsu_lambda" in n:
        lines.append(f"| dataset threshold: Otsu over all block means | {n['dataset_otsu_lambda']:.3f} "
                     f"({n['dataset_otsu_lambda_hu']:.1f} HU for a uniform block) |")
    lines += [
        "",
        f"Cases with no foreground in any patch: {', '.join(n['cases_without_foreground']) or 'none'}.",
        f"Cases whose patches are all foreground: {', '.join(n['cases_all_foreground']) or 'none'}.",
    ]
    lines += [f"Note: {note}" for note in report.notes]
    lines += ["", "| case | foreground share (mean of its patches) | min | max | expected masked share |", "|---|---|---|---|---|"]
    for case, values in report.patch_shares.items():
        v = np.asarray(values)
        lines.append(f"| {case} | {_pct(v.mean())} | {_pct(v.min())} | {_pct(v.max())} | "
                     f"{_pct(report.expected_masked(v).mean())} |")
    return "\n".join(lines) + "\n"


def csv_text(report: MaskingReport) -> str:
    names = list(report.other_criteria)
    rows = [",".join(["case", "patches", "foreground_share", "min", "max", "expected_masked_share"] +
                     [f"foreground_share_{name}" for name in names])]
    for case, values in report.patch_shares.items():
        v = np.asarray(values)
        rows.append(",".join([case, str(v.size), f"{v.mean():.6f}", f"{v.min():.6f}", f"{v.max():.6f}",
                              f"{report.expected_masked(v).mean():.6f}"] +
                             [f"{np.mean(report.other_criteria[name][case]):.6f}" for name in names]))
    return "\n".join(rows) + "\n"


def draw(report: MaskingReport, output: Path) -> None:
    from matplotlib.figure import Figure

    n = summary_numbers(report)
    fig = Figure(figsize=(10.0, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    bins = np.linspace(0.0, 1.0, 21)
    per_case = np.array([report.case_share(c) for c in report.patch_shares])
    axes[0].hist(report.all_shares, bins=bins, color="tab:blue", alpha=0.8, label=f"{criterion_name(report.masker)} criterion")
    for k, (name, per) in enumerate(report.other_criteria.items()):
        values = np.concatenate([np.asarray(v) for v in per.values()])
        axes[0].hist(values, bins=bins, histtype="step", linewidth=2, color=["tab:orange", "tab:green"][k % 2],
                     label=f"{name} criterion")
    axes[0].axvline(n["foreground_share"], color="black", linestyle="--", label=f"mean {_pct(n['foreground_share'])}")
    axes[0].axvline(n["expected_masked_share"], color="red", linestyle=":", linewidth=2,
                    label=f"expected masked {_pct(n['expected_masked_share'])}")
    axes[0].set_xlabel("share of a patch's subvolumes that are foreground")
    axes[0].set_ylabel("patches")
    axes[0].set_title(f"{n['patches']} patches", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].hist(per_case, bins=bins, color="tab:purple", alpha=0.8)
    axes[1].set_xlabel("foreground share of a case (mean of its patches)")
    axes[1].set_ylabel("cases")
    axes[1].set_title(f"{n['cases']} cases", fontsize=10)
    fig.suptitle(wrap_title(fig, f"Foreground subvolumes as the trainer sees them: {report.dataset}\n{report.plans_name} "
                            f"{report.configuration}, patch {'x'.join(map(str, report.patch_size))}, subvolumes "
                            f"{report.recipe.subvolume_size}^3, ratio {report.recipe.ratio:g} ({report.recipe.selection})",
                            10), fontsize=10)
    save_figure(fig, output, dpi=100)


def write_masking_report(report: MaskingReport, output_dir: Path, force: bool = False) -> List[Path]:
    """PNG, Markdown, CSV and JSON into ``output_dir``; existing ones are refused without ``force``."""
    def record() -> dict:
        return {"dataset": report.dataset, "plans": report.plans_name, "configuration": report.configuration,
                "patch_size": list(report.patch_size), "masker": repr(report.masker),
                "window": list(report.recipe.window), **summary_numbers(report), "per_patch": report.patch_shares}

    return write_report(output_paths(output_dir), force, lambda path: draw(report, path), lambda: markdown(report),
                        lambda: csv_text(report), record, json_indent=1)


def report_for_trainer(trainer, dataset: str, plans_name: str = "nnUNetPlans", configuration: str = "3d_fullres",
                       output: Optional[Path] = None, force: bool = False, patches_per_case: int = 8, seed: int = 0,
                       max_cases: Optional[int] = None, preprocessed_root: Optional[Path] = None
                       ) -> Tuple[MaskingReport, Path]:
    """``masking-report``: the report of ``trainer``'s patches and masking on a preprocessed dataset, and where it goes.

    Args:
        trainer: the pretraining trainer class (its masking recipe under the plans, its fitted patch).
        dataset: ID or ``DatasetXXX_NAME`` in the preprocessed folder.
        output: the report's folder (default: ``subfore_masking_report`` in the results folder); existing
            report files are refused without ``force``, before anything is read.
        patches_per_case, seed, max_cases: see :func:`masking_report`.

    Raises:
        UserError: not a pretraining trainer, missing plans or configuration, invalid masking settings.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_subfore.paths import find_dataset_name, nnunet_folder, trainer_output_folder
    from nnunet_subfore.plans_reading import planned_patch, read_plans
    from nnunet_subfore.reporting.outputs import refuse_existing

    if getattr(trainer, "masking", None) is None:
        raise UserError(f"{trainer.__name__} is not a pretraining trainer (it has no masking recipe).")
    if patches_per_case < 1:
        raise UserError(f"--patches-per-case must be >= 1, got {patches_per_case}.")
    preprocessed = nnunet_folder("preprocessed", preprocessed_root)
    name = find_dataset_name(dataset, preprocessed)
    plans = read_plans(preprocessed / name / f"{plans_name}.json")
    planned = planned_patch(plans, configuration, source=f"The plans {plans_name!r}")
    try:
        recipe, _ = trainer.recipe_for_plans(plans)
    except SystemExit as e:
        raise UserError(str(e).strip()) from None
    patch, _ = trainer.fitted_patch_size(planned, PlansManager(plans).get_configuration(configuration), masking=recipe)
    output = Path(output) if output else trainer_output_folder(
        nnunet_folder("results") / name, "subfore_masking_report", trainer.__name__, plans_name, configuration)
    refuse_existing(output_paths(output).values(), force)
    report = masking_report(preprocessed / name, plans, configuration, patch, recipe,
                            patches_per_case=patches_per_case, seed=seed, max_cases=max_cases)
    return report, output
