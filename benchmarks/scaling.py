#!/usr/bin/env python
"""Registration throughput and what the fingerprint store saves, at a thousand volumes.

    python benchmarks/scaling.py                  # 1,000 small volumes; ~10 min on 2 CPU cores
    python benchmarks/scaling.py --volumes 200    # quicker

1. ``register-unlabeled`` of ``--reg-volumes`` phantoms (64 x 128 x 128) with ``-np 1`` and ``-np 2``: volumes per
   second and per core (each into a fresh raw folder and store; the body mask, the NIfTI writes, the exact
   fingerprint and the near-duplicate descriptor included).
2. ``check-overlap`` of a pretraining set of ``--volumes`` small volumes (24 x 72 x 72 at 5 x 2 x 2 mm:
   120 x 144 x 144 mm, just above the near-duplicate search's minimum field of 12 x 128 x 128 mm) against a
   downstream set of ``--downstream`` cases: cold (empty store: every image read), warm (the same command again:
   no image read), with and without the near-duplicate search, and what registration leaves (the store filled
   while registering). The reads are counted.

Writes ``benchmarks/results/scaling.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_line  # noqa: E402

from nnunet_subfore.data.fingerprint_store import FingerprintStore  # noqa: E402
from nnunet_subfore.data.overlap import check_overlap  # noqa: E402
from nnunet_subfore.data.phantoms import make_phantom, to_sitk  # noqa: E402
from nnunet_subfore.data.register import register_unlabeled  # noqa: E402


#: the check-overlap volumes: the smallest field the near-duplicate search compares, and a bit more
SMALL_SHAPE, SMALL_SPACING = (24, 72, 72), (5.0, 2.0, 2.0)


def write_volumes(folder: Path, n: int, shape, spacing, seed0: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, _, used = make_phantom(seed0 + i, shape, spacing=spacing)
        sitk.WriteImage(to_sitk(image, used), str(folder / f"vol_{i:04d}.nii.gz"), True)
    return folder


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--volumes", type=int, default=1000, help="pretraining volumes of the check-overlap part")
    p.add_argument("--downstream", type=int, default=20, help="downstream cases checked against them")
    p.add_argument("--reg-volumes", type=int, default=48, help="volumes of the registration part")
    p.add_argument("--out", default=str(HERE / "results" / "scaling.md"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="subfore_scaling_"))
    lines = ["# Scaling: registration and the fingerprint store", "", machine_line(torch.device("cpu")), ""]
    try:
        # 1. registration throughput
        sources = write_volumes(work / "reg_src", args.reg_volumes, (64, 128, 128), None, 5000)
        rows = []
        for np_ in (1, 2):
            _, seconds = timed(lambda: register_unlabeled([sources], 900 + np_, "Reg", raw_root=work / f"raw{np_}",
                                                          progress=False, num_processes=np_,
                                                          store_folder=work / f"store{np_}"))
            rows.append((np_, seconds))
        lines += ["## register-unlabeled", "",
                  f"{args.reg_volumes} phantoms of 64 x 128 x 128 voxels (about 1 M voxels, int16), the store filled "
                  f"while registering:", "", "| -np | seconds | volumes/s | volumes/s per process |", "|---:|---:|---:|---:|"]
        lines += [f"| {n} | {s:.1f} | {args.reg_volumes / s:.2f} | {args.reg_volumes / s / n:.2f} |" for n, s in rows]

        # 2. check-overlap cold and warm
        raw = work / "raw_co"
        pre_src = write_volumes(work / "pre_src", args.volumes, SMALL_SHAPE, SMALL_SPACING, 10000)
        down_src = write_volumes(work / "down_src", args.downstream, SMALL_SHAPE, SMALL_SPACING, 90000)
        _, reg_s = timed(lambda: register_unlabeled([pre_src], 910, "Pre", raw_root=raw, progress=False,
                                                    num_processes=2, store_folder=work / "store_reg"))
        register_unlabeled([down_src], 911, "Down", raw_root=raw, progress=False, store_folder=work / "store_reg")
        pre, down = raw / "Dataset910_Pre", raw / "Dataset911_Down"
        table = []
        for label, store_dir, near in (("exact only, cold", "s_exact", False), ("exact only, warm", "s_exact", False),
                                       ("with near-duplicates, cold", "s_near", True),
                                       ("with near-duplicates, warm", "s_near", True),
                                       ("after registration (store filled by it)", "store_reg", True)):
            store = FingerprintStore(work / store_dir)
            report, seconds = timed(lambda: check_overlap(pre, down, [], near=near, store=store))
            table.append((label, seconds, store.reads, len(report.shared), len(report.near_skipped)))
        lines += ["", "## check-overlap", "",
                  f"{args.volumes} registered pretraining volumes (24 x 72 x 72 at 5 x 2 x 2 mm, unrelated phantoms) against "
                  f"{args.downstream} downstream cases (registration of the {args.volumes}: {reg_s:.0f} s with -np 2):",
                  "", "| run | seconds | images read | shared cases found | checked for exact copies only |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {label} | {s:.1f} | {n} | {shared} | {skipped} |" for label, s, n, shared, skipped in table]
        pairs = args.volumes * args.downstream
        near_warm = table[3][1]
        lines += ["", f"The near-duplicate search compares {pairs} pairs: {1000 * near_warm / pairs:.2f} ms a pair warm "
                  f"(grids of 30 x 18 x 18; full-size CT grids are about 100 x 63 x 63 and a z-search longer)."]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
