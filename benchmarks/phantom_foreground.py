#!/usr/bin/env python
"""How much of what the pretraining trainer sees is foreground, on the synthetic CT phantoms?

    python benchmarks/phantom_foreground.py              # 8 wide-variety phantoms of 48x64x64 (the demo's shape)
    python benchmarks/phantom_foreground.py --quick      # 4 phantoms
    python benchmarks/phantom_foreground.py --shape 64 64 64 --variety narrow

An unlabeled phantom dataset is written as ``nnunet-subfore phantoms --unlabeled`` writes it (body
labels, as ``register-unlabeled``) and preprocessed with ``nnUNetv2_plan_and_preprocess`` under
``--workdir`` (rebuilt when the settings or the generator's source change). Then, with the paper's window and lambda, at the
demo's 32^3 patch and for 8^3 and 16^3 subvolumes, it reports the share of foreground subvolumes

* of the training patches, sampled by nnU-Net's own data loader as in training
  (:func:`nnunet_subfore.reporting.masking_report.masking_report`, what ``nnunet-subfore masking-report``
  prints): overall, split into the random crops and the third that nnU-Net forces onto a labelled
  (body) voxel, and the lowest and highest case;
* of the centre patch of each case (what the pretraining trainers' final reconstruction check masks);
* of the whole preprocessed volume.

Real CT for comparison (docs/datasets.md): a chest scan 71 %, a body-cropped abdominal scan 88 % of the
blocks of half-size patches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import format_table  # noqa: E402

from nnunet_subfore.commands import nnunet_environment, run_command  # noqa: E402
from nnunet_subfore.paths import dataset_folder_name  # noqa: E402

DATASET_ID, DATASET_NAME = 954, "SubForeBenchPhantoms"
PATCH = (32, 32, 32)
OVERSAMPLED = 0.33  # nnU-Net's oversample_foreground_percent


def prepare(workdir: Path, cases: int, shape, variety: str, seed: int) -> Path:
    """The preprocessed dataset folder (written and preprocessed unless it matches the settings already)."""
    from nnunet_subfore.data.phantoms import write_phantom_dataset

    settings = {"cases": cases, "shape": list(shape), "variety": variety, "seed": seed, "generator": _generator_hash()}
    stamp = workdir / "settings.json"
    pre = workdir / "nnUNet_preprocessed" / dataset_folder_name(DATASET_ID, DATASET_NAME)
    if stamp.exists() and json.loads(stamp.read_text()) == settings and (pre / "nnUNetPlans_3d_fullres").is_dir():
        return pre
    if workdir.exists():
        shutil.rmtree(workdir)
    env = nnunet_environment([], root=workdir)
    write_phantom_dataset(DATASET_ID, DATASET_NAME, cases, seed=seed, unlabeled=True, variety=variety,
                          raw_root=env["nnUNet_raw"], shape=shape)
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1", "-npfp", "1",
                 "--verify_dataset_integrity"], env, log=workdir / "plan_and_preprocess.log")
    stamp.write_text(json.dumps(settings))
    return pre


def _generator_hash() -> str:
    """A hash of the phantom generator's source: another version rebuilds the data."""
    import hashlib

    from nnunet_subfore.data import phantom_anatomy, phantom_shapes, phantom_variety, phantoms

    digest = hashlib.sha256()
    for module in (phantoms, phantom_anatomy, phantom_shapes, phantom_variety):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def shares(pre: Path, subvolume: int, patches_per_case: int, seed: int) -> dict:
    """Foreground shares of training patches (random, forced), centre patches and whole volumes."""
    import torch
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_subfore.crops import center_crop
    from nnunet_subfore.masking_setup import masker_for_plans
    from nnunet_subfore.recipe import PAPER_MASKING
    from nnunet_subfore.reporting.masking_report import masking_report

    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    recipe = PAPER_MASKING.with_changes(subvolume_size=subvolume)
    report = masking_report(pre, plans, "3d_fullres", PATCH, recipe, patches_per_case=patches_per_case, seed=seed)
    per_patch = np.array([report.patch_shares[c] for c in report.patch_shares])  # cases x patches
    random_crops = int(round(patches_per_case * (1 - OVERSAMPLED)))  # nnU-Net forces the last third
    masker, _ = masker_for_plans(plans, "3d_fullres", recipe)
    folder = pre / "nnUNetPlans_3d_fullres"
    dataset = infer_dataset_class(str(folder))
    centre, whole = [], []
    for case in report.patch_shares:
        data = np.asarray(dataset(str(folder), [case]).load_case(case)[0])
        centre.append(masker.foreground(torch.from_numpy(center_crop(data, PATCH)[0])[None]).float().mean().item())
        cut = [side // subvolume * subvolume for side in data.shape[1:]]
        volume = torch.from_numpy(np.ascontiguousarray(data[:, :cut[0], :cut[1], :cut[2]], dtype=np.float32))[None]
        whole.append(masker.foreground(volume).float().mean().item())
    per_case = per_patch.mean(axis=1)
    return {"training patches": per_patch.mean(), "random crops": per_patch[:, :random_crops].mean(),
            "foreground-forced crops": per_patch[:, random_crops:].mean(),
            "per case": f"{100 * per_case.min():.0f}-{100 * per_case.max():.0f} %",
            "centre patch": float(np.mean(centre)), "whole volume": float(np.mean(whole))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/subfore_bench_phantoms")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--shape", nargs=3, type=int, default=[48, 64, 64], metavar=("Z", "Y", "X"))
    parser.add_argument("--variety", choices=["narrow", "wide"], default="wide")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--patches-per-case", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="4 cases, 12 patches each")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.patches_per_case = 4, 12
    start = time.time()
    pre = prepare(Path(args.workdir), args.cases, tuple(args.shape), args.variety, args.seed)
    plans = json.loads((pre / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]
    print(f"{args.cases} {args.variety}-variety phantoms of {'x'.join(map(str, args.shape))} voxels (seed {args.seed}), "
          f"preprocessed at {[round(s, 2) for s in plans['spacing']]} mm; patch {'x'.join(map(str, PATCH))}, "
          f"{args.patches_per_case} patches per case; paper's window and lambda.\n")
    rows = []
    for subvolume in (8, 16):
        numbers = shares(pre, subvolume, args.patches_per_case, args.seed)
        rows.append([f"{subvolume}^3"] + [v if isinstance(v, str) else f"{100 * v:.1f} %" for v in numbers.values()])
    print(format_table(["subvolumes"] + list(numbers), rows, "Foreground share of subvolumes"))
    print(f"\n({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
