#!/usr/bin/env python
"""What masking + the masked loss add to one pretraining step, against a plain L1 step.

    python benchmarks/step_overhead.py            # CPU: small SwinUNETR, 64^3 patches, batch 2
    python benchmarks/step_overhead.py --quick    # CPU, fewer repetitions
    python benchmarks/step_overhead.py --gpu      # CUDA: the paper's SwinUNETR (feature 48) and UNETR
                                                  # (ViT-B) at 96^3, batch 4, AMP, and nnU-Net's ResEnc-L
                                                  # at a planned patch (batch 2); before them the CUDA
                                                  # tables of benchmarks/masking.py, after them
                                                  # benchmarks/loader.py on CUDA; a few minutes

CPU rows: the tiny SwinUNETR, and nnU-Net's U-Net (``PlainConvUNet``) twice: the layout the default
planner gives a 64^3 patch (5 stages, 32-320 features, 2 convolutions per stage) and the tiny-CNN
preset's (3 stages, 16-64 features, 2 convolutions per stage). The CNN steps use SGD (Nesterov), as
``SubForeCNNPretrainTrainer`` does.

Both steps run the trainer's own code: ``SubForePretrainTrainer.train_step`` and
``_masked_loss`` (trainers/subfore_pretrain.py) are called on a small harness object that carries
the network, masker, loss, AdamW optimizer (and GradScaler on CUDA), exactly the attributes the
trainer sets up; the baseline swaps ``_masked_loss`` for a plain L1 between the network's output
on the *unmasked* batch and that batch. Same network, same batch, same optimizer; the two steps
alternate (A B, B A, ...) and the overhead is the median of the per-pair ratios minus one.

The batch is synthetic CT (phantoms) mapped to nnU-Net's CT normalization (mean -141 HU, sd 262 HU,
clip [-874, 650] HU, the fingerprint of the registered phantom pretraining set) and the masker gets
the paper's window mapped into those units, as the trainer's ``build_masker`` does.

Also reported: the masking share (the masker alone, timed in the same loop, over the masked step);
the overhead from components, (masker + masked loss fwd+bwd - plain L1 fwd+bwd) / plain step, all
timed in the same loop, which is far less noisy than the difference of two whole steps; and, on
CUDA, peak GPU memory of each step (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_line, median, sync, verdict  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from nnunetv2.utilities.helpers import dummy_context  # noqa: E402
from torch import autocast  # noqa: E402

from nnunet_subfore.data.phantoms import make_phantom  # noqa: E402
from nnunet_subfore.intensity import CTIntensityMapping  # noqa: E402
from nnunet_subfore.losses import MaskedL1Loss  # noqa: E402
from nnunet_subfore.masking import ForegroundMasker  # noqa: E402
from nnunet_subfore.networks import PAPER_ARCHITECTURES, TINY_ARCHITECTURES, build_network  # noqa: E402
from nnunet_subfore.recipe import PAPER_MASKING  # noqa: E402
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # noqa: E402
from nnunet_subfore.trainers.subfore_pretrain import SubForePretrainTrainer  # noqa: E402

MAPPING = CTIntensityMapping(mean=-140.8, std=262.0, lower_clip=-874.0, upper_clip=650.0)
TARGET_CPU_OVERHEAD = 0.03
LEARNING_RATES = {"swinunetr": 8e-4, "unetr": 1e-4, "cnn": 1e-2}

_CNN_COMMON = dict(conv_op="torch.nn.modules.conv.Conv3d", conv_bias=True,
                   norm_op="torch.nn.modules.instancenorm.InstanceNorm3d",
                   norm_op_kwargs={"eps": 1e-05, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
                   nonlin="torch.nn.LeakyReLU", nonlin_kwargs={"inplace": True})
_CNN_IMPORTS = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def plain_unet(features, n_conv=2) -> dict:
    """A PlainConvUNet as nnU-Net's default planner lays it out (isotropic strides, 3^3 kernels)."""
    n = len(features)
    return {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": dict(n_stages=n, features_per_stage=list(features), kernel_sizes=[[3, 3, 3]] * n,
                                strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1), n_conv_per_stage=[n_conv] * n,
                                n_conv_per_stage_decoder=[n_conv] * (n - 1), **_CNN_COMMON),
            "_kw_requires_import": _CNN_IMPORTS}


#: nnUNetPlannerResEncL's layout for an isotropic 1 mm CT patch of 160^3 (6 stages, 32-320 features,
#: blocks 1-3-4-6-6-6), the size it plans for large abdominal CT within its 24 GB target.
RESENC_L = {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
            "arch_kwargs": dict(n_stages=6, features_per_stage=[32, 64, 128, 256, 320, 320],
                                kernel_sizes=[[3, 3, 3]] * 6, strides=[[1, 1, 1]] + [[2, 2, 2]] * 5,
                                n_blocks_per_stage=[1, 3, 4, 6, 6, 6], n_conv_per_stage_decoder=[1] * 5,
                                **_CNN_COMMON),
            "_kw_requires_import": _CNN_IMPORTS}


def make_network(backbone: str, architecture: dict, patch: int):
    if backbone == "cnn":
        return get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                      architecture["_kw_requires_import"], 1, 1, deep_supervision=False)
    return build_network(backbone, (patch,) * 3, 1, 1, architecture)


class StepHarness:
    """Carries what ``SubForePretrainTrainer.train_step`` reads from ``self``; runs the trainer's code."""

    train_step = SubForePretrainTrainer.train_step
    _masked_loss = SubForePretrainTrainer._masked_loss
    _union_loss = SubForePretrainTrainer._union_loss
    next_mask_generator = SubForePretrainTrainer.next_mask_generator
    # one process: rank 0's mask stream, no loss scaling (what nnU-Net's __init__ sets without DDP)
    mask_seed, is_ddp, local_rank, current_epoch, num_iterations_per_epoch = 0, False, 0, 0, 250

    def __init__(self, network, masker, device, lr):
        self.network = network
        self.masker = masker
        self.device = device
        self.loss = MaskedL1Loss()
        if lr == LEARNING_RATES["cnn"]:  # SubForeCNNPretrainTrainer's optimizer
            self.optimizer = torch.optim.SGD(network.parameters(), lr=lr, weight_decay=3e-5, momentum=0.99,
                                             nesterov=True)
        else:
            self.optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.05)
        self.grad_scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None


class PlainL1Harness(StepHarness):
    """The baseline: the same step with a plain L1 on the unmasked batch (no masking, no mask in the loss)."""

    def _masked_loss(self, data, generator=None):
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            reconstruction = self.network(data)
        return F.l1_loss(reconstruction.float(), data), None


def make_batch(batch: int, side: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    hu = np.stack([make_phantom(seed + i, (side, side, side))[0] for i in range(batch)])[:, None].astype(np.float32)
    return MAPPING.to_normalized(torch.from_numpy(hu)).to(device)


def measure(backbone: str, architecture: dict, arch_name: str, patch: int, batch: int, device: torch.device,
            repeats: int, warmup: int) -> dict:
    if isinstance(patch, dict):  # per-network patch and batch (the --gpu ResEnc-L row)
        patch, batch = patch["patch"], patch["batch"]
    torch.manual_seed(0)
    net = make_network(backbone, architecture, patch).to(device)
    masker = ForegroundMasker.from_recipe(PAPER_MASKING, window=MAPPING.window_to_normalized(PAPER_MASKING.window))
    x = make_batch(batch, patch, device)
    lr = LEARNING_RATES[backbone]
    masked = StepHarness(net, masker, device, lr)
    plain = PlainL1Harness(net, masker, device, lr)
    plain.optimizer, plain.grad_scaler = masked.optimizer, masked.grad_scaler  # one optimizer state, as in training
    step_input = {"data": x}

    def timed(fn):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    peaks = {}
    for name, harness in (("masked", masked), ("plain", plain)):
        for _ in range(warmup):
            harness.train_step(step_input)
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            harness.train_step(step_input)
            sync(device)
            peaks[name] = torch.cuda.max_memory_allocated(device)

    # the components the masked step adds, timed in the same loop: the masker, and the masked loss
    # minus the plain L1 (forward + backward on a stand-in for the network output)
    out = masker(x)
    pred = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)

    def loss_masked():
        pred.grad = None
        masked.loss(pred, x, out.subvolume_mask).backward()

    def loss_plain():
        pred.grad = None
        F.l1_loss(pred, x).backward()

    t_masked, t_plain, t_mask_only, t_lm, t_lp = [], [], [], [], []
    for i in range(repeats):
        order = [("masked", masked), ("plain", plain)] if i % 2 == 0 else [("plain", plain), ("masked", masked)]
        for name, harness in order:
            dt = timed(lambda: harness.train_step(step_input))
            (t_masked if name == "masked" else t_plain).append(dt)
        t_mask_only.append(timed(lambda: masker(x)))
        t_lm.append(timed(loss_masked))
        t_lp.append(timed(loss_plain))
    ratios = np.array(t_masked) / np.array(t_plain)
    component = (median(t_mask_only) + median(t_lm) - median(t_lp)) / median(t_plain)
    fraction = float(masker(x).masked_fraction)
    del net, masked, plain
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(arch=arch_name, patch=patch, batch=batch, masked=median(t_masked), plain=median(t_plain),
                mask=median(t_mask_only), overhead=float(np.median(ratios)) - 1.0,
                q1=float(np.percentile(ratios, 25)) - 1.0, q3=float(np.percentile(ratios, 75)) - 1.0,
                peaks=peaks, fraction=fraction, n=repeats, component=component,
                loss_masked=median(t_lm), loss_plain=median(t_lp))


def rows_for(results, device):
    rows = []
    for r in results:
        row = [r["arch"], f"{r['batch']}x1x{r['patch']}^3", f"{r['fraction']:.0%}", f"{r['plain'] * 1e3:.0f}",
               f"{r['masked'] * 1e3:.0f}", f"{r['overhead']:+.1%} [{r['q1']:+.1%}, {r['q3']:+.1%}]",
               f"{r['mask'] * 1e3:.1f} ({r['mask'] / r['masked']:.1%})",
               f"{r['loss_masked'] * 1e3:.1f} / {r['loss_plain'] * 1e3:.1f}", f"{r['component']:+.1%}"]
        if device.type == "cuda":
            row += [f"{r['peaks']['plain'] / 2**30:.2f}", f"{r['peaks']['masked'] / 2**30:.2f}"]
        rows.append(row)
    headers = ["network", "batch", "masked voxels", "plain L1 step ms", "masked step ms",
               "overhead (median [IQR] of pairs)", "masking alone ms (share)",
               "masked / plain loss fwd+bwd ms", "overhead from components"]
    if device.type == "cuda":
        headers += ["peak GiB plain", "peak GiB masked"]
    return headers, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true",
                        help="CUDA: paper SwinUNETR and UNETR at 96^3, batch 4, AMP (needs a GPU)")
    parser.add_argument("--patch", type=int, default=None, help="patch side (CPU default 64, GPU 96)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (CPU default 2, GPU 4)")
    parser.add_argument("--repeats", type=int, default=None, help="alternating pairs (CPU default 15, GPU 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    parser.add_argument("--no-masking", action="store_true", help="--gpu: skip the CUDA masking tables")
    parser.add_argument("--no-loader", action="store_true", help="--gpu: skip benchmarks/loader.py on CUDA")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CPU 5 pairs at 32^3)")
    parser.add_argument("--backbone", choices=["swinunetr", "cnn"], help="CPU: only the SwinUNETR or only the CNN rows")
    parser.add_argument("--resenc-patch", type=int, default=160, help="--gpu: ResEnc-L patch side (default 160)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    if args.gpu:
        if not torch.cuda.is_available():
            print("--gpu: no CUDA device here; nothing measured.")
            return 0
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        patch, batch = args.patch or 96, args.batch or 4
        repeats = args.repeats or (5 if args.quick else 20)
        configs = [("swinunetr", PAPER_ARCHITECTURES["swinunetr"], "SwinUNETR feature 48 (paper)"),
                   ("unetr", PAPER_ARCHITECTURES["unetr"], "UNETR ViT-B/16 (paper)"),
                   ("cnn", RESENC_L, "nnU-Net ResEnc-L, SGD", {"patch": args.resenc_patch, "batch": 2})]
        warmup = 3
        if not args.no_masking:
            import masking

            masking.run_device(device, "CUDA", [(4, 96), (2, 160)], 5 if args.quick else 15, 0, False)
            torch.cuda.empty_cache()
            print()
    else:
        device = torch.device("cpu")
        patch = args.patch or (32 if args.quick else 64)
        batch = args.batch or 2
        repeats = args.repeats or (5 if args.quick else 15)
        configs = [("swinunetr", TINY_ARCHITECTURES["swinunetr"], "SwinUNETR feature 12 (tiny)"),
                   ("cnn", plain_unet((32, 64, 128, 256, 320)), "nnU-Net U-Net 5 stages 32-320, SGD"),
                   ("cnn", plain_unet((16, 32, 64)), "nnU-Net U-Net tiny preset 16-64, SGD")]
        if args.backbone:
            configs = [c for c in configs if (c[0] == "cnn") == (args.backbone == "cnn")]
        warmup = 2
    print(f"{device.type.upper()}: {machine_line(device)}")
    results = [measure(c[0], c[1], c[2], c[3] if len(c) > 3 else patch, batch, device, repeats, warmup)
               for c in configs]
    headers, rows = rows_for(results, device)
    print()
    amp = ", AMP" if args.gpu else ""
    print(format_table(headers, rows, f"One pretraining step (forward, backward, AdamW; SGD for the CNNs{amp}), "
                                      f"{repeats} alternating pairs"))
    if device.type == "cpu":
        rows = []
        for r in results:
            rows += [[f"overhead <= {TARGET_CPU_OVERHEAD:.0%} on CPU ({r['arch']}), direct A/B",
                      f"{r['overhead']:+.1%}", verdict(r["overhead"] <= TARGET_CPU_OVERHEAD)],
                     [f"overhead <= {TARGET_CPU_OVERHEAD:.0%} on CPU ({r['arch']}), from components",
                      f"{r['component']:+.1%}", verdict(r["component"] <= TARGET_CPU_OVERHEAD)]]
        print()
        print(format_table(["target", "measured", "verdict"], rows))
    if args.gpu and not args.no_loader:
        # a separate process: nnU-Net reads its folder variables when first imported
        print("\nbenchmarks/loader.py --device cuda" + (" --quick" if args.quick else ""), flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve().parent / "loader.py"), "--device", "cuda"]
        subprocess.run(cmd + (["--quick"] if args.quick else []))
    print(f"\nruntime {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
