#!/usr/bin/env python
"""The benchmark that decides: does HU-foreground MIM pretraining pay off when labels are scarce?

    python benchmarks/pretraining_payoff.py                      # seeds 0 1 2, labels 1 2 4: hours on 2 CPU cores
    python benchmarks/pretraining_payoff.py --seeds 0            # one seed first; rerun with more to extend
    python benchmarks/pretraining_payoff.py --quick              # plumbing: tiny runs, one seed
    python benchmarks/pretraining_payoff.py --finetune-epochs 80 # lever: 960 fine-tuning iterations (own folder)
    python benchmarks/pretraining_payoff.py --finetune-epochs 80 --arms fg160-encoder fg-r90-encoder
                                                                 # levers: pretraining length, masking ratio

Everything goes through nnU-Net's and nnunet-subfore's own commands (subprocesses), in ``--workdir``:

1. data (``nnunet_subfore.data.phantoms``): ``--pretrain-cases`` unlabeled phantoms of the *wide* variety
   (field of view wider than the body, lungs, table, varied spacing, noise, contrast phase, offset) with
   body labels, as ``register-unlabeled`` writes them; a labelled set whose training pool is drawn from the
   *narrow* variety and whose held-out cases from the wide one (as in practice: few labelled cases from one
   site, evaluation on the rest);
2. ``nnUNetv2_plan_and_preprocess`` of the pretraining set, a tiny-CNN plans preset (``nnunet-subfore plans
   --tiny-cnn``, masking subvolumes ``--subvolume-size``), the labelled set given the same plans
   (``nnUNetv2_move_plans_between_datasets``: one normalization);
3. pretraining of the tiny U-Net with HU-foreground masking and with random masking (same ratio, same budget,
   ``--pretrain-epochs`` x 16 iterations, longer than a fine-tuning run);
4. the encoder-only checkpoints (``adapt-checkpoint --encoder-only``: decoder as nnU-Net initializes it);
5. ``nnunet-subfore label-efficiency``: every arm and scratch fine-tuned on nested subsets of 1, 2, 4 labelled
   cases per seed (300 iterations, the stock trainer's recipe unless the arm says otherwise), the held-out
   cases evaluated by nnU-Net's own validation; the table (paired difference to scratch with a 95 % t-interval,
   wins out of seeds) and the plot land in ``WORKDIR/le`` and are copied to ``benchmarks/results/``.

Besides the named arms (``ARMS``), an arm name can ask for a pretraining variant, paired with the same scratch:
``fg160-encoder`` pretrains 160 x 16 iterations instead of ``--pretrain-epochs`` (its own results folder,
``WORKDIR/pretrain_fg160``), ``fg-r90-encoder`` masks with ratio 0.90 (its own plans, ``SubForePayoffTinyCNN_r90``,
same preprocessed data); both combine (``random160-r90-full``).

Every step is skipped when its output exists, so the script resumes after a kill and a rerun with more
``--seeds`` or ``--labels`` extends the experiment (label-efficiency skips finished runs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from nnunet_subfore.commands import nnunet_environment, run_command  # noqa: E402
from nnunet_subfore.paths import dataset_folder_name, trainer_output_folder  # noqa: E402
from nnunet_subfore.registry import trainer_path  # noqa: E402

PRETRAIN_ID, LABELLED_ID = 961, 962
PRETRAIN_NAME, LABELLED_NAME = "SubForePayoffPretrain", "SubForePayoffLabelled"
PLANS = "SubForePayoffTinyCNN"
PRETRAINERS = {"fg": "SubForeBench_CNN_PretrainFG", "random": "SubForeBench_CNN_PretrainRandom"}
FINETUNER, SCRATCH, WARMUP = "SubForeCNNTrainer_demo", "SubForeCNNTrainer_demo_scratch", "SubForeCNNFinetuneTrainer_demo"
#: with ``--finetune-epochs``: the same recipes as benchmark-local classes whose length SUBFORE_BENCH_EPOCHS sets
BENCH_TRAINERS = {FINETUNER: "SubForeBench_CNN_Finetune_fg", SCRATCH: "SubForeBench_CNN_Finetune_scratch",
                  WARMUP: "SubForeBench_CNN_FinetuneWarmup"}
#: arm -> (pretraining, transfer recipe, fine-tuning trainer); the scratch arm is label-efficiency's own
ARMS = {
    "fg-full": ("fg", "full", FINETUNER),
    "random-full": ("random", "full", FINETUNER),
    "fg-encoder": ("fg", "encoder-only", FINETUNER),
    "random-encoder": ("random", "encoder-only", FINETUNER),
    "fg-warmup": ("fg", "full", WARMUP),
    "fg-encoder-warmup": ("fg", "encoder-only", WARMUP),  # nnU-Net master's PretrainedTrainer recipe
}
DEFAULT_ARMS = ("fg-full", "random-full", "fg-encoder")
#: a pretraining variant in an arm name: masking kind, optional length (epochs of 16 iterations), optional ratio
#: in percent (label-efficiency's arm names are letters, digits, '_' and '-')
VARIANT_ARM = re.compile(r"^(?P<kind>fg|random)(?P<epochs>[1-9][0-9]*)?(?:-r(?P<ratio>[1-9][0-9]?|100))?"
                         r"-(?P<recipe>encoder|full)$")


class Pretraining(NamedTuple):
    """One pretraining run: masking kind (``fg`` / ``random``), length and ratio (None: the benchmark's default)."""

    kind: str
    epochs: Optional[int] = None
    ratio: Optional[int] = None  # percent

    @property
    def name(self) -> str:
        return self.kind + (str(self.epochs) if self.epochs else "") + (f"-r{self.ratio}" if self.ratio else "")


def arm_recipe(name: str) -> Tuple[Pretraining, str, str]:
    """``(pretraining, transfer recipe, fine-tuning trainer)`` of an arm: a named one or a variant name."""
    if name in ARMS:
        kind, recipe, trainer = ARMS[name]
        return Pretraining(kind), recipe, trainer
    match = VARIANT_ARM.match(name)
    if match is None:
        raise ValueError(f"unknown arm {name!r}: one of {', '.join(sorted(ARMS))}, or a variant such as "
                         "fg160-encoder (160 pretraining epochs) or fg-r90-encoder (masking ratio 0.90)")
    epochs = int(match["epochs"]) if match["epochs"] else None
    ratio = int(match["ratio"]) if match["ratio"] else None
    recipe = "encoder-only" if match["recipe"] == "encoder" else "full"
    return Pretraining(match["kind"], epochs, ratio), recipe, FINETUNER


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.workdir).resolve()
        self.logs = self.work / "logs"
        threads = str(args.threads)
        self.env = nnunet_environment([trainer_path(), HERE / "bench_trainers"], root=self.work)
        self.env.update(OMP_NUM_THREADS=threads, SUBFORE_BENCH_THREADS=threads, OMP_WAIT_POLICY="PASSIVE")

    def run(self, name: str, command: List[str], training: bool = False, env: Dict[str, str] = None) -> None:
        log(f"{name}: {' '.join(command)}")
        started = time.time()
        run_command(command, {**self.env, **(env or {})}, log=self.logs / f"{name}.log", training=training)
        log(f"{name}: done in {time.time() - started:.0f} s")

    def folder(self, var: str) -> Path:
        return Path(self.env[var])

    # 1. data -------------------------------------------------------------------------------------------
    def make_data(self) -> List[str]:
        from nnunet_subfore.data.phantoms import write_labelled_dataset, write_phantom_dataset

        a = self.args
        raw = self.folder("nnUNet_raw")
        if not (raw / dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME)).is_dir():
            log(f"writing {a.pretrain_cases} unlabeled phantoms (wide variety)")
            write_phantom_dataset(PRETRAIN_ID, PRETRAIN_NAME, a.pretrain_cases, seed=100, unlabeled=True,
                                  raw_root=raw, variety="wide", shape=a.shape)
        labelled = raw / dataset_folder_name(LABELLED_ID, LABELLED_NAME)
        if not labelled.is_dir():
            log(f"writing {a.pool} narrow labelled cases and {a.heldout} wide held-out cases")
            write_labelled_dataset(raw, LABELLED_ID, LABELLED_NAME, a.pool, num_test=a.heldout, seed=200,
                                   shape=a.shape, variety="narrow", test_variety="wide")
            _held_out_into_training(labelled, a.pool + a.heldout)
        return [f"phantom_{i:03d}" for i in range(a.pool, a.pool + a.heldout)]

    # 2. plans ------------------------------------------------------------------------------------------
    def plan(self) -> None:
        pre = self.folder("nnUNet_preprocessed")
        np_ = ["-np", str(self.args.threads), "-npfp", str(self.args.threads)]
        if not (pre / dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME) / "nnUNetPlans.json").is_file():
            self.run("plan_pretrain", ["nnUNetv2_plan_and_preprocess", "-d", str(PRETRAIN_ID), "-c", "3d_fullres",
                                       *np_, "--verify_dataset_integrity", "--no_pp"])
        if not (pre / dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME) / f"{PLANS}.json").is_file():
            self.run("plans_tiny_cnn", ["nnunet-subfore", "plans", "-d", str(PRETRAIN_ID), "--tiny-cnn",
                                        "--subvolume-size", str(self.args.subvolume), "--plans-name", PLANS])
            self.run("preprocess_pretrain", ["nnUNetv2_preprocess", "-d", str(PRETRAIN_ID), "-plans_name", PLANS,
                                             "-c", "3d_fullres", "-np", str(self.args.threads)])
        if not (pre / dataset_folder_name(LABELLED_ID, LABELLED_NAME) / f"{PLANS}.json").is_file():
            self.run("plan_labelled", ["nnUNetv2_plan_and_preprocess", "-d", str(LABELLED_ID), "-c", "3d_fullres",
                                       *np_, "--verify_dataset_integrity", "--no_pp"])
            self.run("move_plans", ["nnUNetv2_move_plans_between_datasets", "-s", str(PRETRAIN_ID), "-t",
                                    str(LABELLED_ID), "-sp", PLANS, "-tp", PLANS])
            self.run("preprocess_labelled", ["nnUNetv2_preprocess", "-d", str(LABELLED_ID), "-plans_name", PLANS,
                                             "-c", "3d_fullres", "-np", str(self.args.threads)])

    # 3. pretraining ------------------------------------------------------------------------------------
    def ratio_plans(self, ratio: int) -> str:
        """A copy of the tiny-CNN plans with masking ratio ``ratio`` percent (same data identifier: no preprocessing)."""
        name = f"{PLANS}_r{ratio}"
        if not (self.folder("nnUNet_preprocessed") / dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME)
                / f"{name}.json").is_file():
            self.run(f"plans_{name}", ["nnunet-subfore", "plans", "-d", str(PRETRAIN_ID), "--tiny-cnn",
                                       "--subvolume-size", str(self.args.subvolume), "--ratio", str(ratio / 100),
                                       "--plans-name", name])
        return name

    def pretrain(self, variant: Pretraining) -> Path:
        trainer = PRETRAINERS[variant.kind]
        plans = self.ratio_plans(variant.ratio) if variant.ratio else PLANS
        # a longer run of the same trainer and plans needs its own results folder
        results = self.work / f"pretrain_{variant.name}" / "nnUNet_results" if variant.epochs else \
            self.folder("nnUNet_results")
        folder = trainer_output_folder(results, dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME),
                                       trainer, plans, "3d_fullres") / "fold_0"
        checkpoint = folder / "checkpoint_final.pth"
        if not checkpoint.is_file():
            env = {"SUBFORE_BENCH_EPOCHS": str(variant.epochs or self.args.pretrain_epochs),
                   "SUBFORE_BENCH_ITERS": "16", "SUBFORE_BENCH_SEED": "0", "nnUNet_results": str(results)}
            self.run(f"pretrain_{variant.name}", ["nnUNetv2_train", str(PRETRAIN_ID), "3d_fullres", "0", "-tr",
                                                  trainer, "-p", plans, "-device", "cpu"]
                     + (["--c"] if folder.is_dir() else []), training=True, env=env)
        return checkpoint

    # 4. encoder-only checkpoints ------------------------------------------------------------------------
    def encoder_only(self, variant: Pretraining, checkpoint: Path) -> Path:
        out = self.work / "checkpoints" / f"{variant.name}_encoder_only.pth"
        if not out.is_file():
            plans = self.folder("nnUNet_preprocessed") / dataset_folder_name(LABELLED_ID, LABELLED_NAME) / f"{PLANS}.json"
            self.run(f"encoder_only_{variant.name}", ["nnunet-subfore", "adapt-checkpoint", str(checkpoint), "--plans",
                                               str(plans), "-c", "3d_fullres", "-tr", FINETUNER,
                                               "--num-input-channels", "1", "--encoder-only", "-o", str(out)])
        return out

    # 5. label efficiency --------------------------------------------------------------------------------
    def label_efficiency(self, arms: Dict[str, Path], heldout: List[str]) -> Path:
        a = self.args
        epochs = a.finetune_epochs
        trainer = (lambda name: BENCH_TRAINERS[name]) if epochs else (lambda name: name)
        out = self.work / (f"le_ft{epochs}" if epochs else "le")
        command = ["nnunet-subfore", "label-efficiency", "-d", str(LABELLED_ID), "-p", PLANS,
                   "-tr", trainer(FINETUNER), "--scratch-trainer", trainer(SCRATCH),
                   "--labels", *map(str, a.labels), "--seeds", *map(str, a.seeds),
                   "--heldout-cases", *heldout, "-o", str(out), "-device", "cpu"]
        for name, checkpoint in arms.items():
            command += ["--arm", f"{name}={checkpoint}"]
            finetuner = arm_recipe(name)[2]
            if finetuner != FINETUNER:
                command += ["--arm-trainer", f"{name}={trainer(finetuner)}"]
        env = {"nnUNet_def_n_proc": "1", **({"SUBFORE_BENCH_EPOCHS": str(epochs)} if epochs else {})}
        self.run(out.name, command, env=env)
        return out


def _held_out_into_training(folder: Path, total: int) -> None:
    """Move the wide held-out cases (imagesTs/labelsTs) into imagesTr/labelsTr: label-efficiency holds out cases
    of the training folder (``--heldout-cases``), evaluated by nnU-Net's validation of each fold."""
    for kind in ("images", "labels"):
        source = folder / f"{kind}Ts"
        for path in sorted(source.iterdir()):
            shutil.move(str(path), str(folder / f"{kind}Tr" / path.name))
        source.rmdir()
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["numTraining"] = total
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=4))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/subfore_payoff")
    p.add_argument("--pretrain-cases", type=int, default=32)
    p.add_argument("--pool", type=int, default=8, help="labelled training pool (narrow variety)")
    p.add_argument("--heldout", type=int, default=4, help="held-out cases (wide variety)")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 64, 64))
    p.add_argument("--subvolume", type=int, default=8, help="masking subvolume side at the 32^3 patch (paper: 16 at 96^3)")
    p.add_argument("--pretrain-epochs", type=int, default=40, help="x 16 iterations")
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS),
                   help=f"named arms ({', '.join(sorted(ARMS))}) or pretraining variants such as fg160-encoder "
                        "(160 pretraining epochs) and fg-r90-encoder (masking ratio 0.90); default: %(default)s")
    p.add_argument("--labels", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="fine-tuning epochs of 12 iterations for every arm (default: the demo trainers' 25); "
                        "results in WORKDIR/le_ft<N>")
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--results-tag", default="",
                   help="suffix of the copies in benchmarks/results (e.g. _seeds678), so that a run in another work "
                        "folder does not replace the committed tables of an earlier one")
    p.add_argument("--quick", action="store_true", help="plumbing: 6 pretraining cases, 2 epochs, one seed, 1 label")
    args = p.parse_args(argv)
    for name in args.arms:
        try:
            arm_recipe(name)
        except ValueError as error:
            p.error(str(error))
    if args.quick:
        args.pretrain_cases, args.pool, args.heldout, args.pretrain_epochs = 6, 2, 1, 2
        args.labels, args.seeds, args.workdir = [1], [0], args.workdir + "_quick"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    heldout = bench.make_data()
    bench.plan()
    recipes = {name: arm_recipe(name) for name in args.arms}
    checkpoints = {variant: bench.pretrain(variant) for variant in sorted({r[0] for r in recipes.values()}, key=lambda v: v.name)}
    arms = {}
    for name, (variant, recipe, _) in recipes.items():
        arms[name] = checkpoints[variant] if recipe == "full" else bench.encoder_only(variant, checkpoints[variant])
    out = bench.label_efficiency(arms, heldout)
    results = HERE / "results"
    tag = ("_quick" if args.quick else "") + (f"_ft{args.finetune_epochs}" if args.finetune_epochs else "") + args.results_tag
    for suffix in ("md", "csv", "json", "png"):
        source = out / f"label_efficiency.{suffix}"
        if source.is_file():
            shutil.copy(source, results / f"pretraining_payoff{tag}.{suffix}")
    log(f"report: {out}/label_efficiency.md (copied to {results})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
