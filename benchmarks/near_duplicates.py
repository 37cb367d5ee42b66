#!/usr/bin/env python
"""How well does the near-duplicate guard find copies, and how often does it flag unrelated scans?

    python benchmarks/near_duplicates.py                 # 8 + 8 phantoms, ~5 min on one CPU core
    python benchmarks/near_duplicates.py --sources 4     # quicker

Positive pairs: each source phantom against what republished collections do to a scan:
z-crops of 2 to 16 slices and an in-plane crop (geometry kept, as SimpleITK, nnU-Net and most tools crop; and
with the origin reset to 0, as a re-export may do), resamples to 1-5 mm (linear and nearest), a linear rescale,
an 8-bit re-quantization (clipped to [-1000, 1000] HU), an axis permutation and a flip (with the direction
updated: the same scan stored in another order). Negative pairs: every pair of distinct phantoms, of the wide
variety (varied bodies, spacing, phase) and of the narrow one (one protocol: the most alike), and each source's
z-crop against the other phantoms. Reports sensitivity per kind, the false-positive rate at the threshold, the
score ranges, and the cost of a descriptor and of a comparison. Writes ``benchmarks/results/near_duplicates.md``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_subfore.data.near_duplicates import NEAR_THRESHOLD, image_descriptor, match_kind, near_score
from nnunet_subfore.data.phantoms import make_phantom, to_sitk

HERE = Path(__file__).resolve().parent
SHAPE = (64, 192, 192)


def phantom(seed: int, variety: str) -> sitk.Image:
    image, _, spacing = make_phantom(seed, SHAPE, variety=variety)
    return to_sitk(image, spacing, origin=(-150.0, -150.0, -200.0))


def resample(image: sitk.Image, spacing_xyz, interpolator=sitk.sitkLinear) -> sitk.Image:
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing_xyz)]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing_xyz,
                         image.GetDirection(), -1024, sitk.sitkInt16)


def reset_origin(image: sitk.Image) -> sitk.Image:
    out = sitk.Image(image)
    out.SetOrigin((0.0, 0.0, 0.0))
    return out


def copies(source: sitk.Image) -> List[Tuple[str, str, sitk.Image]]:
    """(label, expected kind, image) of one source."""
    n_z = source.GetSize()[2]
    out = []
    for slices in (2, 4, 8, 16):
        start = n_z // 2 - slices // 2
        crop = source[:, :, start:start + slices]
        out += [(f"z-crop {slices} slices", "crop", crop), (f"z-crop {slices} slices, origin reset", "crop",
                                                            reset_origin(crop))]
    nx, ny = source.GetSize()[:2]
    inplane = source[nx // 6: nx - nx // 5, ny // 5: ny - ny // 6, :]
    out += [("in-plane crop (2/3 of the field)", "crop", inplane),
            ("in-plane crop, origin reset", "crop", reset_origin(inplane))]
    for mm in (1.0, 2.0, 3.0, 5.0):
        out.append((f"resample {mm:g} mm linear", "resample", resample(source, (mm, mm, mm))))
    out.append(("resample 1 x 1 x 5 mm nearest", "resample", resample(source, (1.0, 1.0, 5.0), sitk.sitkNearestNeighbor)))
    out.append(("rescale 0.5 x + 100", "intensity", sitk.Cast(source, sitk.sitkFloat32) * 0.5 + 100.0))
    clipped = sitk.Clamp(source, sitk.sitkFloat32, -1000.0, 1000.0)
    out.append(("8-bit re-quantization", "intensity", sitk.Cast((clipped + 1000.0) / 8.0, sitk.sitkUInt8)))
    out.append(("axis permutation", "reorientation", sitk.PermuteAxes(source, [1, 0, 2])))
    flipped = sitk.Flip(source, [True, False, False])  # SimpleITK's Flip keeps the physical positions
    out.append(("flip (direction updated)", "reorientation", flipped))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, default=8, help="phantoms per variety (wide and narrow)")
    p.add_argument("--out", default=str(HERE / "results" / "near_duplicates.md"))
    args = p.parse_args(argv)

    images: Dict[str, sitk.Image] = {}
    for variety in ("wide", "narrow"):
        for seed in range(args.sources):
            images[f"{variety}-{seed}"] = phantom(1000 + seed, variety)
    started = time.perf_counter()
    descriptors = {name: image_descriptor(image) for name, image in images.items()}
    descriptor_s = (time.perf_counter() - started) / len(images)
    voxels = int(np.mean([np.prod(i.GetSize()) for i in images.values()]))

    positives: Dict[str, List[Tuple[float, bool]]] = {}
    compare_s: List[float] = []
    negatives: List[Tuple[str, float]] = []
    crops = {}
    for name, source in images.items():
        for label, expected, image in copies(source):
            d = image_descriptor(image)
            t = time.perf_counter()
            score = near_score(d, descriptors[name])
            compare_s.append(time.perf_counter() - t)
            kind_ok = score is not None and match_kind(d, descriptors[name]) == expected
            positives.setdefault(label, []).append((score if score is not None else float("nan"), kind_ok))
            if label == "z-crop 8 slices":
                crops[name] = d
    for a, b in itertools.combinations(images, 2):
        score = near_score(descriptors[a], descriptors[b])
        negatives.append((f"{a} vs {b}", score if score is not None else float("nan")))
    for a, d in crops.items():
        for b in images:
            if b != a:
                score = near_score(d, descriptors[b])
                negatives.append((f"z-crop of {a} vs {b}", score if score is not None else float("nan")))

    lines = [
        "# Near-duplicate guard: sensitivity and false positives",
        "",
        f"`python benchmarks/near_duplicates.py --sources {args.sources}`; phantoms {SHAPE} voxels at their variety's",
        f"spacing (about {voxels / 1e6:.1f} M voxels), {2 * args.sources} sources (wide and narrow variety); "
        f"threshold NCC >= {NEAR_THRESHOLD}.",
        "",
        "| copy | found | kind right (of compared) | score min / median |",
        "|---|---:|---:|---|",
    ]
    for label, rows in positives.items():
        scores = np.array([s for s, _ in rows])
        found = np.nan_to_num(scores, nan=-1.0) >= NEAR_THRESHOLD
        finite = scores[np.isfinite(scores)]
        spread = f"{finite.min():.3f} / {np.median(finite):.3f}" if finite.size else "not compared"
        lines.append(f"| {label} | {found.sum()}/{len(rows)} | {sum(k for _, k in rows)}/{len(rows)} | {spread} |")
    neg = np.array([s for _, s in negatives])
    compared = neg[np.isfinite(neg)]
    flagged = [(n, s) for n, s in negatives if np.isfinite(s) and s >= NEAR_THRESHOLD]
    lines += [
        "",
        f"Unrelated pairs: {len(negatives)} ({len(compared)} compared, the rest not nested in size); flagged "
        f"{len(flagged)} ({100.0 * len(flagged) / max(1, len(negatives)):.1f} %); score max {compared.max():.3f}, "
        f"99th percentile {np.percentile(compared, 99):.3f}, median {np.median(compared):.3f}.",
    ]
    lines += [f"- flagged: {n} ({s:.3f})" for n, s in flagged]
    lines += [
        "",
        f"Cost (one CPU core): a descriptor {descriptor_s:.2f} s per volume of about {voxels / 1e6:.1f} M voxels "
        f"(computed once, then stored); a comparison median {1000 * np.median(compare_s):.0f} ms, "
        f"max {1000 * np.max(compare_s):.0f} ms.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
