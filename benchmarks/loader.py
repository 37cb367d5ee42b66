#!/usr/bin/env python
"""Which limits pretraining: the trainer's data loader or the network?

    python benchmarks/loader.py            # demo scale and 64^3 on CPU; the paper's 96^3 batch 4 loader
    python benchmarks/loader.py --quick    # demo scale only, fewer batches

A phantom CT collection is written, registered (``register_unlabeled``: body masks as labels) and
preprocessed with ``nnUNetv2_plan_and_preprocess`` under ``--workdir`` (reused on later runs).
For each setting a ``SubForePretrainTrainer`` subclass (patch and architecture set as class
attributes, the batch size written into the plans, as a plans preset would) is instantiated
in-process, ``initialize()`` and ``get_dataloaders()`` are called and the measurement uses exactly
what ``nnUNetv2_train`` would use: the trainer's training transforms and nnU-Net's default number of
augmentation workers (``nnUNet_n_proc_DA`` unset: ``min(12, os.cpu_count())``).

Per setting it reports
* loader: training batches per second drawn from the trainer's loader with nothing else running
  (after its prefetch queue has been drained once),
* network: ``trainer.train_step`` (masking, forward, masked L1, backward, AdamW) per second on a
  fixed batch,
* both: ``train_step(next(loader))`` per second, the loader's workers competing with the step for the
  same cores, which is what training gets,
and which of the two is the limit. The network of the paper-scale row (SwinUNETR feature 48 at
96^3, batch 4) is timed only on CUDA (``--paper-network`` forces a CPU step, minutes each).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import format_table, machine_line, median, sync  # noqa: E402

from nnunet_subfore.commands import nnunet_environment, run_command  # noqa: E402
from nnunet_subfore.paths import dataset_folder_name  # noqa: E402

DATASET_ID, DATASET_NAME = 953, "SubForeBenchLoader"


def prepare(workdir: Path, n_images: int, shape) -> None:
    from nnunet_subfore.data.phantoms import write_unlabeled_images
    from nnunet_subfore.data.register import register_unlabeled

    pre = workdir / "nnUNet_preprocessed" / dataset_folder_name(DATASET_ID, DATASET_NAME)
    if (pre / "nnUNetPlans_3d_fullres").is_dir() and any((pre / "nnUNetPlans_3d_fullres").iterdir()):
        return
    images = workdir / "unlabeled_ct"
    if images.exists():
        shutil.rmtree(images)
    write_unlabeled_images(images, n_images, seed=200, shape=shape, force=True)
    register_unlabeled([images], DATASET_ID, DATASET_NAME, raw_root=workdir / "nnUNet_raw", force=True,
                       progress=False)
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1"],
                nnunet_environment([]), log=workdir / "plan_and_preprocess.log")


def make_trainer(name: str, patch: int, batch: int, architecture, device):
    import json

    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_subfore.trainers.subfore_pretrain import SubForePretrainTrainer

    cls = type(name, (SubForePretrainTrainer,), {"patch_size": (patch,) * 3, "architecture": architecture})
    folder = Path(nnUNet_preprocessed) / dataset_folder_name(DATASET_ID, DATASET_NAME)
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["configurations"]["3d_fullres"]["batch_size"] = batch
    plans["continue_training"] = False  # what nnUNetv2_train's get_trainer_from_args adds
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer = cls(plans, "3d_fullres", "all", dataset_json, device)
    trainer.initialize()
    return trainer


def measure(trainer, n_batches: int, n_steps: int, time_network: bool):
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    device = trainer.device
    workers = get_allowed_n_proc_DA()
    t0 = time.perf_counter()
    dl_train, dl_val = trainer.get_dataloaders()
    startup = time.perf_counter() - t0
    trainer.dataset_class.unpack_dataset(trainer.preprocessed_dataset_folder, overwrite_existing=False,
                                         num_processes=1, verify=True)
    try:
        batch = next(dl_train)
        # drain the prefetch queue so the loader rate is the workers' rate, not the cache's
        for _ in range(8 if workers else 0):
            next(dl_train)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            next(dl_train)
        loader_rate = n_batches / (time.perf_counter() - t0)

        network_rate = both_rate = None
        if time_network:
            for _ in range(2):
                trainer.train_step(batch)
            times = []
            for _ in range(n_steps):
                sync(device)
                t0 = time.perf_counter()
                trainer.train_step(batch)
                sync(device)
                times.append(time.perf_counter() - t0)
            network_rate = 1.0 / median(times)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n_steps):
                trainer.train_step(next(dl_train))
            sync(device)
            both_rate = n_steps / (time.perf_counter() - t0)
    finally:
        for dl in (dl_train, dl_val):
            finish = getattr(dl, "_finish", None)
            if finish is not None:
                finish()
    return dict(workers=workers, startup=startup, loader=loader_rate, network=network_rate, both=both_rate,
                shape=tuple(batch["data"].shape))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/subfore_bench_loader"))
    parser.add_argument("--images", type=int, default=8, help="phantom volumes (default 8)")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 128, 128], help="phantom size z y x")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per loader (default 40)")
    parser.add_argument("--steps", type=int, default=10, help="network steps timed (default 10)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--paper-network", action="store_true",
                        help="also time the paper-scale network step on CPU (minutes per step)")
    parser.add_argument("--quick", action="store_true", help="demo scale only, 12 batches, 4 steps")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    for key, sub in (("nnUNet_raw", "nnUNet_raw"), ("nnUNet_preprocessed", "nnUNet_preprocessed"),
                     ("nnUNet_results", "nnUNet_results")):
        os.environ[key] = str(args.workdir / sub)
    os.environ.pop("nnUNet_n_proc_DA", None)  # nnU-Net's default worker count
    os.environ.setdefault("nnUNet_def_n_proc", "1")

    import torch

    from nnunet_subfore.networks import PAPER_ARCHITECTURES, TINY_ARCHITECTURES

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    start = time.perf_counter()
    prepare(args.workdir, args.images, args.shape)
    prep = time.perf_counter() - start
    settings = [("demo: SwinUNETR feature 12", 32, 2, TINY_ARCHITECTURES["swinunetr"], True),
                ("SwinUNETR feature 12", 64, 2, TINY_ARCHITECTURES["swinunetr"], True),
                ("paper: SwinUNETR feature 48", 96, 4, PAPER_ARCHITECTURES["swinunetr"],
                 device.type == "cuda" or args.paper_network)]
    n_batches, n_steps = args.batches, args.steps
    if args.quick:
        settings, n_batches, n_steps = settings[:1], 12, 4
    print(f"{device.type.upper()}: {machine_line(device)}; data prepared in {prep:.0f} s")
    rows = []
    trainer_log = args.workdir / "trainers.log"
    print(f"(the trainers' own output goes to {trainer_log})", flush=True)
    for i, (name, patch, batch, arch, time_network) in enumerate(settings):
        with open(trainer_log, "a", encoding="utf-8") as out, contextlib.redirect_stdout(out):
            trainer = make_trainer(f"SubForeBenchLoader{i}", patch, batch, arch, device)
            r = measure(trainer, n_batches, n_steps, time_network)
            del trainer
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if r["network"] is None:
            limit = "network (not timed here: run on a GPU or with --paper-network)"
        else:
            limit = "loader" if r["loader"] < r["network"] else "network"
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        rows.append([name, "x".join(map(str, r["shape"])), r["workers"], fmt(r["loader"]), fmt(r["network"]),
                     fmt(r["both"]), limit])
    print()
    print(format_table(["setting", "batch", "DA workers", "loader batches/s", "network steps/s",
                        "train_step(next(loader))/s", "limit"], rows,
                       f"Pretraining throughput, SubForePretrainTrainer's own loader and train_step ({device.type})"))
    print(f"\nruntime {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
