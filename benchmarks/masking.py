#!/usr/bin/env python
"""Cost of HU-foreground masking and the masked L1 loss, against a clone and the authors' algorithm.

    python benchmarks/masking.py            # 4x1x96^3 and 2x1x160^3; CPU in two allocator regimes,
                                            # and CUDA when present
    python benchmarks/masking.py --quick    # 4x1x96^3 only, fewer repetitions

What it times, per batch (float32, synthetic CT phantoms in HU, the paper's window (-175, 250),
threshold 0.1, 16^3 subvolumes, ratio 0.6, Bernoulli selection):

* floors: ``x.clone()`` (the memory-bound floor of anything that writes a new batch) and
  ``x.clone(); torch.randn_like(x)`` (the floor of noise fill: the random numbers must be drawn);
* LIBRARY (``nnunet_subfore.masking.ForegroundMasker``, what the trainers run): the criterion
  alone; criterion + sampling + zero fill; the same with N(0, 1) noise fill; the masked L1 loss
  (``nnunet_subfore.losses.subvolume_masked_l1_loss``) forward + backward;
* VOXEL: the same semantics through a materialized voxel mask, from the library's public functions
  one after another (``foreground_subvolumes``, ``sample_subvolume_mask``, ``expand_subvolume_mask``,
  ``fill_masked``; loss ``masked_l1_loss``): the trainers' path before the single-buffer masker
  and the subvolume-mask loss, kept as the side-by-side "before";
* REF, written here and not library code: a straightforward implementation of the authors'
  published algorithm (github.com/AISeedHub/SubFore, docs/masking.md): window the batch, reshape it into
  16^3 blocks, block means, Bernoulli choice, ``nonzero`` block indices, the block mask permuted back
  to a voxel mask, ``torch.where`` with noise or zeros; their loss is a Python loop over the masked
  blocks that slices each block of prediction and target and averages ``nn.L1Loss`` over blocks;

All three are checked equal before timing (criterion, masks for the same generator, fills, loss
values and gradients).

CPU timings depend on the allocator: a fresh batch-sized buffer costs page faults (glibc serves
large requests with mmap and returns them on free; the 2x160^3 batch is above glibc's largest
dynamic threshold, so it always does), while a caching allocator (PyTorch's on CUDA) reuses memory.
So the CPU part runs twice, each in a child process: ``cold`` (MALLOC_MMAP_THRESHOLD_=131072: every
batch-sized buffer is a fresh mapping, the default behaviour for large batches) and ``warm``
(MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_ huge: freed memory is reused, like a caching
allocator). Before every timed call a 64 MiB buffer is written so the batch is not served from the
CPU caches (the network's activations evict it in training).

Repetitions are interleaved (rotating order); ratios are medians of per-repetition ratios. Peak
extra memory (allocated above what existed before, in units of one batch) comes from
``torch.cuda.max_memory_allocated`` on CUDA and from the torch profiler's allocator totals on CPU.
``--profile`` prints torch profiler operator tables for the library path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    format_table,
    machine_line,
    median,
    ms,
    paired_ratio,
    peak_extra_bytes,
    quiet_stderr,
    time_interleaved,
    verdict,
)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nnunet_subfore.data.phantoms import make_phantom  # noqa: E402
from nnunet_subfore.losses import masked_l1_loss, subvolume_masked_l1_loss  # noqa: E402
from nnunet_subfore.masking import (  # noqa: E402
    ForegroundMasker,
    expand_subvolume_mask,
    fill_masked,
    foreground_subvolumes,
    sample_subvolume_mask,
)

from nnunet_subfore.recipe import PAPER_MASKING  # noqa: E402

WINDOW = PAPER_MASKING.window
THRESHOLD = PAPER_MASKING.threshold
SUBVOLUME = PAPER_MASKING.subvolume_size
RATIO = PAPER_MASKING.ratio

TARGET_ZERO = 2.0  # criterion + sampling + zero fill <= 2x clone
TARGET_NOISE = 1.5  # noise fill <= 1.5x (clone + randn_like)
TARGET_LOSS = 20.0  # masked loss fwd+bwd >= 20x faster than the per-block loop (4x1x96^3)
TARGET_MEMORY = 3.0  # peak extra memory of masking + loss <= 3 batch-sized buffers

REGIMES = {
    "cold": {"MALLOC_MMAP_THRESHOLD_": "131072"},
    "warm": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)},
}


# ------------------------------------------------------------------------------------------------
# REF: the authors' published algorithm, written straightforwardly (not library code)
# ------------------------------------------------------------------------------------------------
def reference_block_masking(x: torch.Tensor, fill: str, s: int = SUBVOLUME, window=WINDOW,
                            threshold: float = THRESHOLD, ratio: float = RATIO):
    """Masking by reshaping into blocks, as in the authors' code.

    Their loader has already windowed the image to [0, 1] (ScaleIntensityRanged, clip=True); the
    batches here are HU, so the windowing is done here (one pass, as their loader does it).
    Sides are multiples of ``s`` here, so their zero padding is a no-op and left out.
    Returns the masked batch, the voxel mask (B, C, D, H, W) and the masked block indices (n, 5).
    """
    b, c, d, h, w = x.shape
    nz, ny, nx = d // s, h // s, w // s
    u = ((x - window[0]) / (window[1] - window[0])).clamp(0.0, 1.0)
    blocks = u.view(b, c, nz, s, ny, s, nx, s).permute(0, 1, 2, 4, 6, 3, 5, 7)
    block_means = blocks.mean(dim=(5, 6, 7))
    condition = (block_means >= threshold) & (block_means <= 1.0)
    chosen = condition & (torch.rand_like(block_means) < ratio)
    indices = torch.nonzero(chosen)
    mask = (chosen[..., None, None, None].expand(-1, -1, -1, -1, -1, s, s, s)
            .permute(0, 1, 2, 5, 3, 6, 4, 7).contiguous().view(b, c, d, h, w))
    if fill == "noise":
        replacement = torch.normal(0.0, 1.0, size=x.shape, device=x.device)
    else:
        replacement = torch.zeros((), device=x.device, dtype=x.dtype)
    return torch.where(mask, replacement, x), mask, indices


def reference_block_loss(prediction: torch.Tensor, target: torch.Tensor, indices: torch.Tensor,
                         s: int = SUBVOLUME) -> torch.Tensor:
    """The authors' loss: loop over the masked blocks, L1 (mean) per block, averaged over blocks."""
    if len(indices) == 0:
        return prediction.sum() * 0.0
    total = 0.0
    for sample, _, bz, by, bx in indices.tolist():
        z, y, x = bz * s, by * s, bx * s
        original = target[sample, :, z:z + s, y:y + s, x:x + s]
        predicted = prediction[sample, :, z:z + s, y:y + s, x:x + s]
        total = total + F.l1_loss(predicted, original)
    return total / len(indices)


def voxel_mask_masking(x: torch.Tensor, fill: str, generator=None):
    """VOXEL: the library's functions one after another, with a materialized voxel mask."""
    foreground = foreground_subvolumes(x, SUBVOLUME, WINDOW, THRESHOLD)
    chosen = sample_subvolume_mask(foreground, RATIO, "bernoulli", generator)
    voxel_mask = expand_subvolume_mask(chosen, SUBVOLUME)
    return fill_masked(x, voxel_mask, fill, generator), voxel_mask, chosen


# ------------------------------------------------------------------------------------------------
def make_batch(batch: int, side: int, device: torch.device, seed: int) -> torch.Tensor:
    """A batch of synthetic CT phantoms in HU, (batch, 1, side, side, side) float32."""
    volumes = [make_phantom(seed + i, (side, side, side))[0] for i in range(batch)]
    return torch.from_numpy(np.stack(volumes)[:, None].astype(np.float32)).to(device)


def check_equivalence(x: torch.Tensor, masker: ForegroundMasker, zero_masker: ForegroundMasker) -> str:
    """LIBRARY loss == VOXEL loss == REF loop (values, gradients); LIBRARY criterion == REF criterion;
    LIBRARY masking == VOXEL masking (same generator state -> identical masks and fills)."""
    notes = []
    out = masker(x)
    indices = torch.nonzero(out.subvolume_mask[:, None])
    pred = (x + torch.randn_like(x) * 50).requires_grad_(True)
    variants = {}
    for name, fn in (("LIBRARY", lambda p: subvolume_masked_l1_loss(p, x, out.subvolume_mask)),
                     ("VOXEL", lambda p: masked_l1_loss(p, x, out.voxel_mask)),
                     ("REF", lambda p: reference_block_loss(p, x, indices))):
        p = pred.detach().clone().requires_grad_(True)
        loss = fn(p)
        loss.backward()
        variants[name] = (loss.detach(), p.grad)
    for name in ("VOXEL", "REF"):
        la, ga = variants["LIBRARY"]
        lb, gb = variants[name]
        if not torch.allclose(la, lb, rtol=1e-4) or not torch.allclose(ga, gb, rtol=1e-3, atol=1e-12):
            notes.append(f"MISMATCH: LIBRARY loss {float(la)} and {name} loss {float(lb)} (or their gradients) disagree")
    b, c, d, h, w = x.shape
    s = SUBVOLUME
    fg = foreground_subvolumes(x, SUBVOLUME, WINDOW, THRESHOLD)
    u = ((x - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).clamp(0.0, 1.0)
    ref_means = u.view(b, c, d // s, s, h // s, s, w // s, s).permute(0, 1, 2, 4, 6, 3, 5, 7).mean(dim=(5, 6, 7))
    differing = int((fg != (ref_means[:, 0] >= THRESHOLD)).sum())
    if differing:
        notes.append(f"REF criterion differs on {differing} of {fg.numel()} subvolumes (rounding at the threshold)")
    for fill, lib in (("zero", zero_masker), ("noise", masker)):
        a = lib(x, generator=torch.Generator(device=x.device).manual_seed(7))
        masked, _, chosen = voxel_mask_masking(x, fill, generator=torch.Generator(device=x.device).manual_seed(7))
        if not (torch.equal(chosen, a.subvolume_mask) and torch.equal(masked, a.masked)):
            notes.append(f"MISMATCH: VOXEL {fill} masking differs from the LIBRARY's")
    return "; ".join(notes) or "LIBRARY == VOXEL == REF (criterion, loss, gradients); LIBRARY == VOXEL (masks, fills)"


def bench_size(batch: int, side: int, device: torch.device, repeats: int, seed: int, profile: bool):
    x = make_batch(batch, side, device, seed)
    nbytes = x.numel() * x.element_size()
    zero_masker = ForegroundMasker(SUBVOLUME, WINDOW, THRESHOLD, RATIO, "bernoulli", "zero")
    noise_masker = ForegroundMasker(SUBVOLUME, WINDOW, THRESHOLD, RATIO, "bernoulli", "noise")
    check = check_equivalence(x, noise_masker, zero_masker)

    fixed = noise_masker(x)  # the same mask for every loss
    indices = torch.nonzero(fixed.subvolume_mask[:, None])
    voxel_mask, subvolume_mask = fixed.voxel_mask, fixed.subvolume_mask
    masked_fraction = float(voxel_mask.float().mean())
    pred = (x + torch.randn_like(x)).requires_grad_(True)

    def loss_library():
        pred.grad = None
        subvolume_masked_l1_loss(pred, x, subvolume_mask).backward()

    def loss_reference():
        pred.grad = None
        reference_block_loss(pred, x, indices).backward()

    def loss_voxel():
        pred.grad = None
        masked_l1_loss(pred, x, voxel_mask).backward()

    def loss_plain():
        pred.grad = None
        F.l1_loss(pred, x).backward()

    ops = {
        "clone": lambda: x.clone(),
        "clone+randn_like": lambda: (x.clone(), torch.randn_like(x)),
        "LIBRARY criterion": lambda: foreground_subvolumes(x, SUBVOLUME, WINDOW, THRESHOLD),
        "LIBRARY mask, zero fill": lambda: zero_masker(x),
        "LIBRARY mask, noise fill": lambda: noise_masker(x),
        "REF mask, zero fill": lambda: reference_block_masking(x, "zero"),
        "REF mask, noise fill": lambda: reference_block_masking(x, "noise"),
        "VOXEL mask, zero fill": lambda: voxel_mask_masking(x, "zero"),
        "VOXEL mask, noise fill": lambda: voxel_mask_masking(x, "noise"),
        "LIBRARY loss fwd+bwd": loss_library,
        "VOXEL loss fwd+bwd": loss_voxel,
        "plain L1 (all voxels) fwd+bwd": loss_plain,
    }
    flush_buffer = torch.empty(64 * 2**20 // 4)  # CPU caches: write 64 MiB before each timed call

    def evict():
        if device.type == "cpu":
            flush_buffer.fill_(1.0)

    times = time_interleaved(ops, repeats, device, before=evict)
    # the per-block loop is slow: time it in its own interleaved pass with the library loss
    loop_times = time_interleaved({"LIBRARY loss fwd+bwd": loss_library, "REF loss loop fwd+bwd": loss_reference},
                                  max(3, repeats // 3), device, before=evict)

    def memory(fn):
        return peak_extra_bytes(fn, device) / nbytes

    def with_loss(mask_fn, loss_fn):
        def run():
            result = mask_fn()
            p = pred.detach().clone().requires_grad_(True)  # stands in for the network output
            loss_fn(p, result).backward()
        return run

    lib_loss = lambda p, r: subvolume_masked_l1_loss(p, x, r.subvolume_mask)  # noqa: E731
    ref_loss = lambda p, r: reference_block_loss(p, x, r[2])  # noqa: E731
    voxel_loss = lambda p, r: masked_l1_loss(p, x, r[1])  # noqa: E731
    # each "+ loss" run includes one clone of the batch, the stand-in network output: subtracted
    mem = {
        "LIBRARY mask, zero fill": memory(lambda: zero_masker(x)),
        "LIBRARY mask, noise fill": memory(lambda: noise_masker(x)),
        "LIBRARY loss fwd+bwd": memory(with_loss(lambda: fixed, lib_loss)) - 1.0,
        "LIBRARY mask (zero) + loss": memory(with_loss(lambda: zero_masker(x), lib_loss)) - 1.0,
        "LIBRARY mask (noise) + loss": memory(with_loss(lambda: noise_masker(x), lib_loss)) - 1.0,
        "REF mask (noise) + loss loop": memory(with_loss(lambda: reference_block_masking(x, "noise"), ref_loss)) - 1.0,
        "VOXEL mask (zero) + loss": memory(with_loss(lambda: voxel_mask_masking(x, "zero"), voxel_loss)) - 1.0,
        "VOXEL mask (noise) + loss": memory(with_loss(lambda: voxel_mask_masking(x, "noise"), voxel_loss)) - 1.0,
    }

    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        for title, fn in (("LIBRARY mask, zero fill", lambda: zero_masker(x)),
                          ("LIBRARY mask, noise fill", lambda: noise_masker(x)),
                          ("LIBRARY loss fwd+bwd", loss_library),
                          ("VOXEL mask, zero fill", lambda: voxel_mask_masking(x, "zero")),
                          ("clone", lambda: x.clone())):
            fn()
            evict()
            with quiet_stderr(), torch_profile(activities=acts, profile_memory=True) as prof:
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            print(f"\nprofile ({device.type}, {batch}x1x{side}^3): {title}, one call")
            print(prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=28,
                                            max_shapes_column_width=40))

    return dict(nbytes=nbytes, times=times, loop_times=loop_times, mem=mem, masked_fraction=masked_fraction,
                n_masked_blocks=len(indices), check=check)


def report(title: str, batch: int, side: int, r: dict):
    t, lt = r["times"], r["loop_times"]
    label = f"{batch}x1x{side}^3"
    rows = [[name, ms(median(t[name])), f"{paired_ratio(t, [name], ['clone']):.2f}"] for name in t]
    rows.append(["REF loss loop fwd+bwd", ms(median(lt["REF loss loop fwd+bwd"])),
                 f"(loop pass: library loss {ms(median(lt['LIBRARY loss fwd+bwd']))} ms)"])
    timing = format_table(["operation", "median ms", "x clone"], rows,
                          f"{title} {label} ({r['nbytes'] / 2**20:.1f} MiB; {r['masked_fraction']:.1%} of voxels, "
                          f"{r['n_masked_blocks']} blocks masked)")
    mem_table = format_table(["what", "peak extra (batches)"], [[k, f"{v:.2f}"] for k, v in r["mem"].items()],
                             f"{title} {label}: peak extra memory in batches; '+ loss' rows count the gradient "
                             "buffer of the prediction, not the prediction")

    def targets(prefix):
        zero = paired_ratio(t, [f"{prefix} mask, zero fill"], ["clone"])
        noise = paired_ratio(t, [f"{prefix} mask, noise fill"], ["clone+randn_like"])
        peak = max(r["mem"][f"{prefix} mask (zero) + loss"], r["mem"][f"{prefix} mask (noise) + loss"])
        if prefix == "LIBRARY":
            loss = paired_ratio(lt, ["REF loss loop fwd+bwd"], ["LIBRARY loss fwd+bwd"])
        else:
            loss = (paired_ratio(lt, ["REF loss loop fwd+bwd"], ["LIBRARY loss fwd+bwd"])
                    * paired_ratio(t, ["LIBRARY loss fwd+bwd"], ["VOXEL loss fwd+bwd"]))
        is_target_size = batch == 4 and side == 96
        return [
            [f"{prefix}: criterion + sampling + zero fill / clone", f"{zero:.2f}", f"<= {TARGET_ZERO}",
             verdict(zero <= TARGET_ZERO)],
            [f"{prefix}: noise fill / (clone + randn_like)", f"{noise:.2f}", f"<= {TARGET_NOISE}",
             verdict(noise <= TARGET_NOISE)],
            [f"{prefix}: REF loss loop / loss, fwd+bwd", f"{loss:.0f}", f">= {TARGET_LOSS:.0f}",
             verdict(loss >= TARGET_LOSS) if is_target_size else "(other size)"],
            [f"{prefix}: peak extra memory, masking + loss", f"{peak:.2f}", f"<= {TARGET_MEMORY:.0f}",
             verdict(peak <= TARGET_MEMORY)],
        ]

    rows = targets("LIBRARY") + targets("VOXEL") + [
        ["REF masking / LIBRARY masking, zero fill", f"{paired_ratio(t, ['REF mask, zero fill'], ['LIBRARY mask, zero fill']):.2f}", "-", "(info)"],
        ["REF masking / LIBRARY masking, noise fill", f"{paired_ratio(t, ['REF mask, noise fill'], ['LIBRARY mask, noise fill']):.2f}", "-", "(info)"],
    ]
    target_table = format_table(["ratio", "measured", "target", "verdict"], rows, f"{title} {label}: targets")
    return timing, mem_table, target_table


def compile_check(device: torch.device, title: str, repeats: int, seed: int) -> None:
    """Is the criterion's clamp + block sum faster under torch.compile? (4x1x96^3)"""
    x = make_batch(4, 96, device, seed)

    def criterion(t):
        return foreground_subvolumes(t, SUBVOLUME, WINDOW, THRESHOLD)

    start = time.perf_counter()
    compiled = torch.compile(criterion, dynamic=False)
    compiled(x)
    compile_s = time.perf_counter() - start
    flush_buffer = torch.empty(64 * 2**20 // 4)
    times = time_interleaved({"clone": lambda: x.clone(), "criterion, eager": lambda: criterion(x),
                              "criterion, torch.compile": lambda: compiled(x)}, repeats, device,
                             before=lambda: flush_buffer.fill_(1.0) if device.type == "cpu" else None)
    rows = [[k, ms(median(v)), f"{paired_ratio(times, [k], ['clone']):.2f}"] for k, v in times.items()]
    print(f"\n{format_table(['operation', 'median ms', 'x clone'], rows, f'{title} 4x1x96^3: LIBRARY criterion (clamp + staged block sums), eager vs torch.compile (compiled in {compile_s:.0f} s)')}")


def run_device(device: torch.device, title: str, sizes, repeats: int, seed: int, profile: bool) -> None:
    print(f"\n== {title}: {machine_line(device)}", flush=True)
    summaries = []
    for batch, side in sizes:
        r = bench_size(batch, side, device, repeats, seed, profile)
        timing, memory, targets = report(title, batch, side, r)
        print(f"\n{timing}\n\n{memory}\n\nchecks: {r['check']}", flush=True)
        summaries.append(targets)
        del r
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for s in summaries:
        print(f"\n{s}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4x96,2x160", help="comma-separated BATCHxSIDE batches (default 4x96,2x160)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repetitions per op (default 15)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, then CUDA when present")
    parser.add_argument("--regime", choices=("both", "cold", "warm", "as-is"), default="both",
                        help="CPU allocator regime(s), see above; as-is: this process's allocator, no child")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print torch profiler tables for the library path")
    parser.add_argument("--compile", action="store_true",
                        help="also time the LIBRARY criterion under torch.compile (needs a C++ compiler on CPU)")
    parser.add_argument("--quick", action="store_true", help="4x96 only, 5 repetitions")
    parser.add_argument("--cpu-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s.strip()]
    repeats = args.repeats
    if args.quick:
        sizes, repeats = [(4, 96)], 5
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    if args.cpu_child:
        title = f"CPU ({args.cpu_child} allocator)"
        run_device(torch.device("cpu"), title, sizes, repeats, args.seed, args.profile)
        if args.compile:
            compile_check(torch.device("cpu"), title, repeats, args.seed)
        return 0

    status = 0
    if args.device in ("auto", "cpu"):
        if args.regime == "as-is":
            run_device(torch.device("cpu"), "CPU", sizes, repeats, args.seed, args.profile)
            if args.compile:
                compile_check(torch.device("cpu"), "CPU", repeats, args.seed)
        else:
            for regime in (("cold", "warm") if args.regime == "both" else (args.regime,)):
                env = dict(os.environ)
                for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"):
                    env.pop(key, None)
                env.update(REGIMES[regime])
                child = [sys.executable, str(Path(__file__).resolve()), *argv, "--cpu-child", regime]
                status |= subprocess.run(child, env=env).returncode
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        run_device(torch.device("cuda"), "CUDA", sizes, repeats, args.seed, args.profile)
        if args.compile:
            compile_check(torch.device("cuda"), "CUDA", repeats, args.seed)
    print(f"\nruntime {time.perf_counter() - start:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
