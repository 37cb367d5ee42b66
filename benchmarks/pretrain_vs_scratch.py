#!/usr/bin/env python
"""Does pretraining pay off? Foreground-masking MIM vs random-masking MIM vs no pretraining, on synthetic CT.

    python benchmarks/pretrain_vs_scratch.py                 # 3 seeds, about 30-60 min on 2 CPU cores
    python benchmarks/pretrain_vs_scratch.py --quick         # 1 seed, a few iterations: checks the plumbing
    python benchmarks/pretrain_vs_scratch.py --backbone cnn --seeds 0 1 2 3 4   # the CNN arm (tiny U-Net)

Everything goes through nnU-Net's own commands, run with subprocess:

1. data: ``--unlabeled`` phantom CT volumes registered as an unlabeled pretraining dataset
   (``nnunet_subfore.data.register.register_unlabeled``: body masks as labels) and a labelled
   phantom dataset (liver, spleen, kidneys) with ``--train-cases`` training cases and
   ``--test-cases`` held-out cases (``imagesTs``/``labelsTs``), all ``--shape`` voxels;
2. ``nnUNetv2_plan_and_preprocess`` for the pretraining set; the labelled set gets the pretraining
   plans (``nnUNetv2_plan_and_preprocess --no_pp``, ``nnUNetv2_move_plans_between_datasets``,
   ``nnUNetv2_preprocess``) so both see the same CT normalization (nnU-Net's pretraining route);
3. per seed: ``nnUNetv2_train ... all -tr SubForeBench_PretrainFG`` (HU-foreground masking) and
   ``-tr SubForeBench_PretrainRandom`` (random subvolume masking at the same ratio) on the
   unlabeled set; then ``nnUNetv2_train ... all -tr SubForeBench_Finetune_{fg,random,scratch}``
   on the labelled training cases, the first two with ``-pretrained_weights``, all three with the
   same budget; ``nnUNetv2_predict`` on the held-out images; ``nnUNetv2_evaluate_simple``;
4. Dice per class: mean and standard deviation over seeds (per seed: the mean over held-out cases),
   a table (stdout, ``results.md``, ``results.csv``) and a bar chart (``pretrain_vs_scratch.png``).

``--backbone cnn``: the same with nnU-Net's own U-Net, shrunk by a plans preset derived from the
pretraining plans (``nnunet-subfore plans --tiny-cnn``: 3 stages, 8/16/32 features, 32^3, batch 2),
moved to the labelled set with ``nnUNetv2_move_plans_between_datasets`` and used with ``-p``; all
three arms fine-tune with the stock nnUNetTrainer's recipe (SGD lr 1e-2, poly, deep supervision), so
they differ only in the initial weights. Results go to files tagged ``_cnn``.

The trainers are the package's demo-scale ones (tiny SwinUNETR or tiny CNN, 32^3 patches, no test-time
mirroring), defined in ``benchmarks/bench_trainers`` with the run length, seed and masking subvolume
size from environment variables. At 32^3 patches the paper's 16^3 subvolumes would give 8 per patch,
so the default subvolume here is 8 (4 per side; the paper has 96/16 = 6). Runs are independent
commands, executed ``--jobs`` at a time with ``--threads`` torch threads each; finished steps are
skipped when the script is run again on the same ``--workdir`` (use ``--fresh`` to start over).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import cpu_model, format_table  # noqa: E402

from nnunet_subfore.commands import nnunet_environment, run_command  # noqa: E402
from nnunet_subfore.paths import dataset_folder_name, trainer_output_folder  # noqa: E402
from nnunet_subfore.registry import trainer_path  # noqa: E402

PRETRAIN_ID, LABELLED_ID = 951, 952
PRETRAIN_NAME, LABELLED_NAME = "SubForeBenchPretrain", "SubForeBenchLabelled"
PRETRAIN_DATASET = dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME)
LABELLED_DATASET = dataset_folder_name(LABELLED_ID, LABELLED_NAME)
CLASSES = {1: "liver", 2: "spleen", 3: "kidneys"}
ARMS = ("fg", "random", "scratch")
ARM_LABELS = {"fg": "foreground-masking MIM", "random": "random-masking MIM", "scratch": "no pretraining"}
PRETRAINER = {"fg": "SubForeBench_PretrainFG", "random": "SubForeBench_PretrainRandom"}
#: The CNN arm: trainer-name infix, plans preset, title.
CNN_PLANS = "SubForeBenchTinyCNN"
BACKBONES = {
    "swinunetr": {"infix": "", "plans": "nnUNetPlans", "title": "tiny SwinUNETR", "results": "seed{}", "file_tag": ""},
    "cnn": {"infix": "CNN_", "plans": CNN_PLANS, "title": "tiny nnU-Net U-Net", "results": "cnn_seed{}",
            "file_tag": "_cnn"},
}


def bench(args) -> dict:
    return BACKBONES[args.backbone]


def pretrainer(args, arm: str) -> str:
    return PRETRAINER[arm].replace("SubForeBench_", f"SubForeBench_{bench(args)['infix']}")

_print_lock = threading.Lock()
_t0 = time.time()


def log(message: str) -> None:
    with _print_lock:
        print(f"[{time.time() - _t0:7.0f} s] {message}", flush=True)


class Runner:
    """Runs nnU-Net commands with the benchmark's environment, one log file per step."""

    def __init__(self, workdir: Path, threads: int):
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self.timings: Dict[str, float] = {}
        self.base_env = nnunet_environment([trainer_path(), HERE / "bench_trainers"], root=workdir)

    def env(self, results: Optional[Path] = None, training: bool = False, **extra) -> dict:
        env = dict(self.base_env)
        env["nnUNet_results"] = str(results or self.workdir / "nnUNet_results")
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = env["SUBFORE_BENCH_THREADS"] = str(self.threads)
        # nnUNetv2_train/-predict on CPU set torch's threads to os.cpu_count(); the trainers reset them
        # (SUBFORE_BENCH_THREADS), and OpenMP threads that wait sleep instead of spinning, so that
        # runs sharing the cores (ours and anyone else's) do not burn them in barriers
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if training:
            env["nnUNet_n_proc_DA"] = "0"  # training only: it crashes plan_and_preprocess in nnunetv2 2.8.1
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, step: str, cmd: List[str], env: dict) -> None:
        log(f"start  {step}: {' '.join(cmd)}")
        start = time.time()
        run_command(cmd, env, log=self.logs / f"{step}.log")
        self.timings[step] = time.time() - start
        log(f"done   {step} in {self.timings[step]:.0f} s")


# ------------------------------------------------------------------------------------------------
def prepare_data(runner: Runner, args) -> None:
    from nnunet_subfore.data.phantoms import write_labelled_dataset, write_unlabeled_images
    from nnunet_subfore.data.register import register_unlabeled

    work = runner.workdir
    raw = work / "nnUNet_raw"
    pre = work / "nnUNet_preprocessed"
    shape = tuple(args.shape)
    marker = pre / LABELLED_DATASET / "nnUNetPlans_3d_fullres"
    if marker.is_dir() and any(marker.iterdir()):
        log("data: already prepared")
        return
    start = time.time()
    unlabeled = work / "unlabeled_ct"
    if unlabeled.exists():
        shutil.rmtree(unlabeled)
    write_unlabeled_images(unlabeled, args.unlabeled, seed=100, shape=shape, force=True)
    register_unlabeled([unlabeled], PRETRAIN_ID, PRETRAIN_NAME, raw_root=raw, force=True, progress=False)
    write_labelled_dataset(raw, LABELLED_ID, LABELLED_NAME, num_training=args.train_cases, num_test=args.test_cases,
                           seed=1, shape=shape, force=True)
    runner.timings["write phantoms"] = time.time() - start
    env = runner.env()
    runner.run("plan_and_preprocess_pretrain",
               ["nnUNetv2_plan_and_preprocess", "-d", str(PRETRAIN_ID), "-c", "3d_fullres", "-np", "1"], env)
    # the labelled set takes the pretraining plans (same CT normalization); its own planning run only
    # provides the fingerprint and dataset.json that nnUNetv2_preprocess expects in the preprocessed folder.
    # The moved plans replace its nnUNetPlans, so training needs no -p (see docs/benchmarks.md).
    runner.run("plan_labelled", ["nnUNetv2_plan_and_preprocess", "-d", str(LABELLED_ID), "--no_pp", "-np", "1"], env)
    runner.run("move_plans", ["nnUNetv2_move_plans_between_datasets", "-s", str(PRETRAIN_ID), "-t", str(LABELLED_ID),
                              "-sp", "nnUNetPlans", "-tp", "nnUNetPlans"], env)
    runner.run("preprocess_labelled", ["nnUNetv2_preprocess", "-d", str(LABELLED_ID), "-plans_name", "nnUNetPlans",
                                       "-c", "3d_fullres", "-np", "1"], env)


def prepare_cnn_plans(runner: Runner) -> None:
    """The tiny-CNN preset of the pretraining plans, moved to the labelled set under the same name: it keeps the
    data identifier nnUNetPlans_3d_fullres, whose data both sets already have in the same normalization."""
    if (runner.workdir / "nnUNet_preprocessed" / LABELLED_DATASET / f"{CNN_PLANS}.json").exists():
        return
    env = runner.env()
    runner.run("plans_tiny_cnn", ["nnunet-subfore", "plans", "-d", str(PRETRAIN_ID), "--tiny-cnn", "--plans-name",
                                  CNN_PLANS, "--force"], env)
    runner.run("move_plans_cnn", ["nnUNetv2_move_plans_between_datasets", "-s", str(PRETRAIN_ID), "-t",
                                  str(LABELLED_ID), "-sp", CNN_PLANS, "-tp", CNN_PLANS], env)


def trainer_folder(results: Path, dataset: str, trainer: str, plans: str = "nnUNetPlans") -> Path:
    return trainer_output_folder(results, dataset, trainer, plans, "3d_fullres") / "fold_all"


def pretrain(runner: Runner, args, seed: int, arm: str) -> Path:
    b = bench(args)
    results = runner.workdir / "nnUNet_results" / b["results"].format(seed)
    trainer = pretrainer(args, arm)
    folder = trainer_folder(results, PRETRAIN_DATASET, trainer, b["plans"])
    checkpoint = folder / "checkpoint_final.pth"
    if not checkpoint.exists():
        env = runner.env(results, training=True, SUBFORE_BENCH_SEED=seed, SUBFORE_BENCH_EPOCHS=args.pretrain_epochs,
                         SUBFORE_BENCH_ITERS=args.pretrain_iters, SUBFORE_BENCH_VAL_ITERS=args.val_iters,
                         SUBFORE_BENCH_SUBVOLUME=args.subvolume)
        runner.run(f"{b['results'].format(seed)}_pretrain_{arm}",
                   ["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "all", "-tr", trainer, "-p", b["plans"],
                    "-device", "cpu"], env)
    return checkpoint


def finetune_predict_evaluate(runner: Runner, args, seed: int, arm: str, weights: Optional[Path]) -> dict:
    work = runner.workdir
    b = bench(args)
    run_name = f"{b['results'].format(seed)}{args.tag}"
    results = work / "nnUNet_results" / run_name
    trainer = f"SubForeBench_{b['infix']}Finetune_{arm}"
    dataset = LABELLED_DATASET
    folder = trainer_folder(results, dataset, trainer, b["plans"])
    pred = work / "predictions" / f"{run_name}_{arm}"
    summary = pred / "summary.json"
    if not summary.exists():
        if not (folder / "checkpoint_final.pth").exists():
            env = runner.env(results, training=True, SUBFORE_BENCH_SEED=seed,
                             SUBFORE_BENCH_EPOCHS=args.finetune_epochs, SUBFORE_BENCH_ITERS=args.finetune_iters,
                             SUBFORE_BENCH_VAL_ITERS=args.val_iters)
            cmd = ["nnUNetv2_train", str(LABELLED_ID), "3d_fullres", "all", "-tr", trainer, "-p", b["plans"],
                   "-device", "cpu"]
            if weights is not None:
                cmd += ["-pretrained_weights", str(weights)]
            runner.run(f"{run_name}_finetune_{arm}", cmd, env)
        if pred.exists():
            shutil.rmtree(pred)
        env = runner.env(results)
        raw = work / "nnUNet_raw" / dataset
        runner.run(f"{run_name}_predict_{arm}",
                   ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(LABELLED_ID),
                    "-c", "3d_fullres", "-tr", trainer, "-p", b["plans"], "-f", "all", "-device", "cpu", "--disable_tta",
                    "-npp", "1", "-nps", "1"], env)
        runner.run(f"{run_name}_evaluate_{arm}",
                   ["nnUNetv2_evaluate_simple", str(raw / "labelsTs"), str(pred), "-l", *[str(c) for c in CLASSES],
                    "-o", str(summary), "-np", "1"], env)
    data = json.loads(summary.read_text(encoding="utf-8"))
    dice = {CLASSES[int(k)]: float(v["Dice"]) for k, v in data["mean"].items() if int(k) in CLASSES}
    dice["mean"] = float(np.mean([dice[c] for c in CLASSES.values()]))
    return dice


def pretraining_stats(runner: Runner, args, seed: int, arm: str) -> dict:
    b = bench(args)
    results = runner.workdir / "nnUNet_results" / b["results"].format(seed)
    folder = trainer_folder(results, PRETRAIN_DATASET, pretrainer(args, arm), b["plans"])
    path = folder / "validation" / "reconstruction_metrics.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    cases = list(data["per_case"].values())
    return {"masked_l1": data.get("mean_masked_l1"),
            "masked_fraction": float(np.mean([c["masked_fraction"] for c in cases])),
            # None for random masking, which never evaluates the HU criterion
            "foreground_fraction": (float(np.mean([c["foreground_fraction"] for c in cases]))
                                    if all(c.get("foreground_fraction") is not None for c in cases) else None)}


def seed_chains(runner: Runner, args, seed: int) -> List:
    """Three independent chains per seed: (pretrain fg -> fine-tune), (pretrain random -> fine-tune), (scratch)."""

    def chain(arm):
        def run():
            weights = pretrain(runner, args, seed, arm) if arm != "scratch" else None
            return (seed, arm), finetune_predict_evaluate(runner, args, seed, arm, weights)
        return run

    return [chain(arm) for arm in ARMS]


# ------------------------------------------------------------------------------------------------
def summarize(results: Dict, seeds: List[int], out: Path, pre_stats: Dict, tag: str = "",
              title: str = "tiny SwinUNETR") -> str:
    columns = list(CLASSES.values()) + ["mean"]
    rows, csv_rows = [], []
    for arm in ARMS:
        values = {c: np.array([results[(s, arm)][c] for s in seeds]) for c in columns}
        cells = [ARM_LABELS[arm]]
        for c in columns:
            v = values[c]
            sd = v.std(ddof=1) if len(v) > 1 else float("nan")
            cells.append(f"{v.mean():.3f} ± {sd:.3f}")
            csv_rows.append([arm, c, f"{v.mean():.4f}", f"{sd:.4f}", len(v)] + [f"{x:.4f}" for x in v])
        rows.append(cells)
    table = format_table(["arm"] + [f"Dice {c}" for c in columns], rows,
                         f"Held-out Dice, mean ± standard deviation over {len(seeds)} seed(s) "
                         f"(per seed: mean over the held-out cases)")
    per_seed = format_table(
        ["seed"] + [f"{ARM_LABELS[a]} (mean Dice)" for a in ARMS],
        [[s] + [f"{results[(s, a)]['mean']:.3f}" for a in ARMS] for s in seeds], "Per seed")
    diffs = []
    for arm in ("fg", "random"):
        d = np.array([results[(s, arm)]["mean"] - results[(s, "scratch")]["mean"] for s in seeds])
        diffs.append([f"{ARM_LABELS[arm]} - no pretraining", f"{d.mean():+.3f}",
                      f"{d.std(ddof=1):.3f}" if len(d) > 1 else "nan", f"{int((d > 0).sum())}/{len(d)}"])
    d = np.array([results[(s, "fg")]["mean"] - results[(s, "random")]["mean"] for s in seeds])
    diffs.append(["foreground - random masking", f"{d.mean():+.3f}", f"{d.std(ddof=1):.3f}" if len(d) > 1 else "nan",
                  f"{int((d > 0).sum())}/{len(d)}"])
    paired = format_table(["paired difference of mean Dice", "mean", "sd", "seeds > 0"], diffs,
                          "Paired differences (same seed)")
    pre_rows = []
    for arm in ("fg", "random"):
        stats = [pre_stats[(s, arm)] for s in seeds if pre_stats.get((s, arm))]
        if stats:
            pre_rows.append([ARM_LABELS[arm],
                             f"{np.mean([x['masked_fraction'] for x in stats]):.1%}",
                             f"{np.mean([x['foreground_fraction'] for x in stats]):.1%}" if arm == "fg" else "-",
                             f"{np.mean([x['masked_l1'] for x in stats if x['masked_l1'] is not None]):.3f}"])
    pre_table = format_table(["pretraining", "voxels masked", "foreground subvolumes", "masked L1 (normalized units)"],
                             pre_rows, "Pretraining, final reconstruction check (the trainer's validation: centre "
                                       "patch of each unlabeled case, fixed mask seed; mean over seeds)")
    text = "\n\n".join([table, per_seed, paired, pre_table])
    (out / f"results{tag}.md").write_text(text + "\n", encoding="utf-8")
    with open(out / f"results{tag}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["arm", "class", "mean_dice", "sd_dice", "n_seeds"] + [f"seed{s}" for s in seeds])
        w.writerows(csv_rows)
    _plot(results, seeds, columns, out / f"pretrain_vs_scratch{tag}.png", title)
    return text


def _plot(results, seeds, columns, path: Path, title: str = "tiny SwinUNETR") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.0))
    width = 0.26
    x = np.arange(len(columns))
    for i, arm in enumerate(ARMS):
        vals = np.array([[results[(s, arm)][c] for c in columns] for s in seeds])
        err = vals.std(0, ddof=1) if len(seeds) > 1 else None
        ax.bar(x + (i - 1) * width, vals.mean(0), width, yerr=err, capsize=3, label=ARM_LABELS[arm])
        for j in range(len(columns)):
            ax.scatter(np.full(len(seeds), x[j] + (i - 1) * width), vals[:, j], s=8, color="k", zorder=3)
    ax.set_xticks(x)
    ax.set_xticklabels(columns)
    ax.set_ylabel("held-out Dice")
    ax.set_ylim(0, 1)
    ax.set_title(f"Synthetic CT, {title}, {len(seeds)} seed(s): mean ± sd, dots = seeds", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/subfore_bench_pretrain_vs_scratch"))
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="swinunetr",
                        help="swinunetr (tiny SwinUNETR) or cnn (tiny nnU-Net U-Net from a --tiny-cnn plans preset)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--unlabeled", type=int, default=16, help="unlabeled phantoms for pretraining (default 16)")
    parser.add_argument("--train-cases", type=int, default=3, help="labelled training cases (default 3)")
    parser.add_argument("--test-cases", type=int, default=6, help="held-out labelled cases (default 6)")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 64], help="phantom size z y x (default 64^3)")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--pretrain-iters", type=int, default=25, help="iterations per pretraining epoch")
    parser.add_argument("--finetune-epochs", type=int, default=25)
    parser.add_argument("--finetune-iters", type=int, default=12, help="iterations per fine-tuning epoch")
    parser.add_argument("--val-iters", type=int, default=2, help="validation iterations per epoch")
    parser.add_argument("--subvolume", type=int, default=8, help="masking subvolume side (default 8 at 32^3 patches)")
    parser.add_argument("--jobs", type=int, default=2, help="commands run at the same time (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per command (default cores/jobs)")
    parser.add_argument("--tag", default="",
                        help="suffix for the fine-tuning runs and result files: another fine-tuning budget on the same "
                             "workdir reuses the pretraining (e.g. --finetune-epochs 50 --tag _ft600)")
    parser.add_argument("--fresh", action="store_true", help="delete --workdir first")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 4 unlabeled, 2+2 cases, 2x5 pretraining and 2x5 fine-tuning iterations")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.unlabeled, args.train_cases, args.test_cases = 4, 2, 2
        args.pretrain_epochs, args.pretrain_iters = 2, 5
        args.finetune_epochs, args.finetune_iters = 2, 5
        args.val_iters = 1
        if args.workdir == parser.get_default("workdir"):
            args.workdir = Path(str(args.workdir) + "_quick")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.workdir, threads)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {args.jobs} command(s) at a time, "
          f"{threads} torch thread(s) each")
    print(f"budget: pretraining {args.pretrain_epochs}x{args.pretrain_iters} iterations, fine-tuning "
          f"{args.finetune_epochs}x{args.finetune_iters} iterations, seeds {args.seeds}; subvolume {args.subvolume}; "
          f"{args.unlabeled} unlabeled, {args.train_cases} labelled training and {args.test_cases} held-out cases of "
          f"{'x'.join(map(str, args.shape))}; workdir {args.workdir}", flush=True)

    start = time.time()
    prepare_data(runner, args)
    if args.backbone == "cnn":
        prepare_cnn_plans(runner)
    tag = bench(args)["file_tag"] + args.tag
    chains = [c for s in args.seeds for c in seed_chains(runner, args, s)]
    results = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for key, dice in pool.map(lambda c: c(), chains):
            results[key] = dice
    pre_stats = {(s, a): pretraining_stats(runner, args, s, a) for s in args.seeds for a in ("fg", "random")}
    text = summarize(results, args.seeds, args.workdir, pre_stats, tag, bench(args)["title"])
    total = time.time() - start

    phases: Dict[str, List[float]] = {}
    for step, seconds in runner.timings.items():
        phase = re.sub(r"^(cnn_)?seed\d+(" + re.escape(args.tag) + ")?_", "", step)
        phase = phase.rsplit("_", 1)[0] if phase.startswith(("pretrain_", "finetune_", "predict_", "evaluate_")) else phase
        phases.setdefault(phase, []).append(seconds)
    timing = format_table(["step", "runs", "median s", "total s"],
                          [[k, len(v), f"{np.median(v):.0f}", f"{np.sum(v):.0f}"] for k, v in phases.items()],
                          f"Wall time per step ({args.jobs} at a time; total {total / 60:.1f} min)")
    print()
    print(text)
    print()
    print(timing)
    (args.workdir / f"timings{tag}.md").write_text(timing + "\n", encoding="utf-8")
    print(f"\nwrote {args.workdir / f'results{tag}.md'}, .csv and pretrain_vs_scratch{tag}.png; "
          f"runtime {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
