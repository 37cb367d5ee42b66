#!/usr/bin/env python
"""Can the pretraining loader feed a GPU? Samples per second per CPU core, and the cores an A100 run needs.

    python benchmarks/loader_per_core.py              # ~5 min on 2 CPU cores (plus building the data once)
    python benchmarks/loader_per_core.py --quick

The loader runs in this process (``nnUNet_n_proc_DA=0``: one core makes every batch), so batches/s x batch size
is the rate of one core; nnU-Net's augmentation workers each add about that much. Two pipelines, both from the
trainers' own ``get_dataloaders()`` on the same preprocessed phantom CT (``benchmarks/loader.py``'s data, 160 x 192
x 192 voxels so that a 160^3 patch is a crop, not a pad):

- the pretraining trainers' reduced one (``SubForePretrainTrainer``: crop only, no augmentation, as the paper);
- nnU-Net's own (the stock ``nnUNetTrainer``: rotation, scaling, elastic-free spatial transform, noise, blur,
  brightness, contrast, low resolution, gamma, mirroring; foreground oversampling).

Patches: the paper's 96^3 (batch 4) and 160^3 (batch 2: nnssl's ResEnc-L pretraining patch). The cores needed
are the published A100 rates of nnU-Net's presets (documentation/resenc_presets.md: 1000 epochs x 250 iterations
in 9 h default U-Net, 12 h ResEnc M, 35 h ResEnc L, batch 2) divided by the per-core rate. Writes
``benchmarks/results/loader_per_core.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ["nnUNet_n_proc_DA"] = "0"  # before nnU-Net reads it: the loader in this process, one core

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import torch  # noqa: E402
from _common import machine_line  # noqa: E402
from loader import DATASET_ID, DATASET_NAME, prepare  # noqa: E402

from nnunet_subfore.commands import nnunet_environment  # noqa: E402
from nnunet_subfore.paths import dataset_folder_name  # noqa: E402

#: nnU-Net's published A100 (PCIe 40 GB) training times for 250k iterations at batch 2 (resenc_presets.md).
A100_HOURS = {"nnU-Net default U-Net": 9, "ResEnc M": 12, "ResEnc L": 35}
ITERATIONS = 1000 * 250


def make_trainer(kind: str, patch: int, batch: int):
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_subfore.trainers.subfore_pretrain import SubForePretrainTrainer

    folder = Path(nnUNet_preprocessed) / dataset_folder_name(DATASET_ID, DATASET_NAME)
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    config["batch_size"], config["patch_size"] = batch, [patch] * 3
    plans["continue_training"] = False
    dataset_json = json.loads((folder / "dataset.json").read_text())
    if kind == "reduced":
        cls = type("LoaderReduced", (SubForePretrainTrainer,), {"patch_size": (patch,) * 3})
    else:
        cls = nnUNetTrainer
    trainer = cls(plans, "3d_fullres", "all", dataset_json, torch.device("cpu"))
    trainer.initialize()
    return trainer


def samples_per_second(trainer, batches: int) -> float:
    loader, val = trainer.get_dataloaders()
    try:
        next(loader)
        started = time.perf_counter()
        for _ in range(batches):
            batch = next(loader)
        rate = batches * batch["data"].shape[0] / (time.perf_counter() - started)
    finally:
        for dl in (loader, val):
            getattr(dl, "_finish", lambda: None)()
    return rate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/subfore_bench_loader_large"))
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--quick", action="store_true", help="96^3 only, 4 batches")
    p.add_argument("--out", default=str(HERE / "results" / "loader_per_core.md"))
    args = p.parse_args(argv)
    os.environ.update(nnunet_environment([], root=args.workdir))
    prepare(args.workdir, 6, (160, 192, 192))
    torch.set_num_threads(1)
    settings = [(96, 4)] + ([] if args.quick else [(160, 2)])
    batches = 4 if args.quick else args.batches
    rows = []
    for patch, batch in settings:
        for kind in ("reduced", "nnU-Net"):
            rate = samples_per_second(make_trainer(kind, patch, batch), batches)
            rows.append((patch, batch, kind, rate))
            print(f"{patch}^3 batch {batch} {kind}: {rate:.2f} samples/s per core", flush=True)
    lines = ["# Pretraining loader: samples per second per CPU core", "", machine_line(torch.device("cpu")),
             f"(loader in-process, nnUNet_n_proc_DA=0; {batches} batches timed after the first)", "",
             "| patch | batch | pipeline | samples/s per core | " + " | ".join(f"cores for {k} (A100)" for k in A100_HOURS) + " |",
             "|---|---:|---|---:|" + "---:|" * len(A100_HOURS)]
    for patch, batch, kind, rate in rows:
        need = [2 * ITERATIONS / (hours * 3600) / rate for hours in A100_HOURS.values()]
        lines.append(f"| {patch}^3 | {batch} | {kind} | {rate:.2f} | " + " | ".join(f"{n:.2f}" for n in need) + " |")
    lines += ["", "A100 rates: 250k iterations of batch 2 in " + ", ".join(f"{h} h ({k})" for k, h in A100_HOURS.items())
              + " = " + ", ".join(f"{2 * ITERATIONS / (h * 3600):.1f}" for h in A100_HOURS.values())
              + " samples/s (nnU-Net's documentation/resenc_presets.md; those runs include validation and use "
              "each preset's own planned patch, so the figures are an estimate)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
