#!/usr/bin/env python
"""The checks of nnunet-subfore that only a GPU can give, in one run of a few minutes; one table at the end.

    bash benchmarks/gpu_check.sh                # on the GPU machine (installs the carried wheels first)
    bash benchmarks/gpu_check.sh --cpu-smoke    # anywhere: the same code paths, tiny, on the CPU

``gpu_check.sh`` installs the packages and calls this script, which runs

A. pretraining step timings (a child process, so that nnU-Net's runs get a clean GPU): the trainer's
   own ``train_step`` (``SubForePretrainTrainer.train_step`` on ``step_overhead.StepHarness``: masking,
   AMP autocast + GradScaler, masked L1, AdamW) on the paper's SwinUNETR and UNETR (96^3, batch 4) and
   a ResEnc-L (nnssl's MAE setting: 160^3, batch 2): s/it (median of the timed steps, synchronized),
   peak GPU memory, and the masker's share of the step (the masker alone, timed in the same loop);
B. the stock commands end to end on synthetic CT: register, plan and preprocess, move plans,
   ``nnUNetv2_train -device cuda`` of each pretraining trainer (short variants from
   ``bench_trainers/subfore_gpu_trainers.py``; one more with nnU-Net's default ``torch.compile``),
   fine-tuning from the pretrained checkpoint, resuming a pretraining run with ``--c``,
   ``nnUNetv2_predict -device cuda``, ``nnUNetv2_evaluate_folder``, and every checkpoint loaded in a
   process that sees no GPU.

Every check records PASS / FAIL / TIMEOUT / SKIP and its seconds and never stops the others; the
whole run keeps to a time budget (default 7 minutes from ``GPU_CHECK_T0``, set by gpu_check.sh
before the installation). The table goes to stdout and to ``--table`` (``$OUT/gpu_check.txt``),
rewritten after every check; the nnU-Net logs go to ``--logdir``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
T0 = float(os.environ.get("GPU_CHECK_T0") or time.time())

PRETRAIN_ID, PRETRAIN_NAME = 981, "SubForeGPUCheckCT"
DOWNSTREAM_ID, DOWNSTREAM_NAME = 982, "SubForeGPUCheckOrgans"
DOWNSTREAM_PLANS = "SubForePretrainPlans"
SHAPE = (48, 64, 64)
CNN_CLASS = "SubForeCNNPretrainTrainer_demo"
N_STEP_NETWORKS = 3  # section A: SwinUNETR, UNETR, ResEnc
RESERVE_S = 25  # kept back from every step's timeout for the checkpoint check and the report


def elapsed() -> float:
    return time.time() - T0


def say(message: str) -> None:
    """print, surviving a closed stdout (the tee of gpu_check.sh may be gone when the run is stopped)."""
    try:
        print(message, flush=True)
    except (BrokenPipeError, OSError):
        pass


# --------------------------------------------------------------------------------------------------
# the report
class Report:
    """The rows of the final table; rewritten to ``path`` after every check (a killed run keeps them)."""

    HEADERS = ("#", "section", "check", "status", "s", "detail")

    def __init__(self, path: Optional[Path], header: List[str]):
        self.path, self.header, self.rows = path, header, []

    def add(self, section: str, check: str, status: str, seconds: Optional[float], detail: str = "") -> None:
        detail = " ".join(str(detail).split())
        self.rows.append((str(len(self.rows) + 1), section, check, status,
                          "" if seconds is None else f"{seconds:.0f}", detail[:240]))
        self.write()
        say(f"  [{status}] {section} {check} ({'' if seconds is None else f'{seconds:.0f} s'}) {detail}")

    def table(self) -> str:
        cells = [list(self.HEADERS)] + [list(r) for r in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.HEADERS))]
        line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        counts = {s: sum(r[3] == s for r in self.rows) for s in ("PASS", "FAIL", "TIMEOUT", "SKIP", "INFO")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        return "\n".join(self.header + [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                         + [line(r) for r in cells[1:]] + [f"{summary}; {elapsed():.0f} s since the start"])

    def write(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(self.table() + "\n", encoding="utf-8")


def section_banner(title: str) -> float:
    say(f"\n== {title}  (at {elapsed():.0f} s)")
    return time.time()


# --------------------------------------------------------------------------------------------------
# child processes with timeouts (own process groups, killed as a whole)
def console_script(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


class Job:
    """A command running in its own process group, output to a log file."""

    ALL: List["Job"] = []

    def __init__(self, name: str, argv: Sequence[str], env: Dict[str, str], log: Path, timeout: float,
                 cwd: Path):
        self.name, self.argv, self.log, self.timeout = name, list(argv), log, timeout
        self.start = time.time()
        self.rc: Optional[int] = None
        self.timed_out = False
        self.seconds = 0.0
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log, "w", encoding="utf-8")
        self._out.write(" ".join(self.argv) + "\n\n")
        self._out.flush()
        argv = [console_script(self.argv[0]), *self.argv[1:]]
        try:
            self.proc = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=str(cwd))
        except OSError as e:
            self._out.write(f"could not start: {e}\n")
            self.proc = None
            self.rc = 127
        shown = " ".join(a if len(a) < 300 else "<...>" for a in self.argv)
        say(f"    start {name} (timeout {timeout:.0f} s): {shown}")
        Job.ALL.append(self)

    def done(self) -> bool:
        if self.rc is not None:
            return True
        if self.proc.poll() is not None:
            self._finish(self.proc.returncode)
            return True
        if time.time() - self.start > self.timeout:
            self.kill()
            self.timed_out = True
            self._finish(-9)
            return True
        return False

    def wait(self, limit: Optional[float] = None) -> "Job":
        """Wait until the job ends or its timeout (or ``limit`` seconds from now) passes; then kill it."""
        until = None if limit is None else time.time() + max(0.0, limit)
        while not self.done():
            if until is not None and time.time() > until:
                self.kill()
                self.timed_out = True
                self._finish(-9)
                break
            time.sleep(0.5)
        return self

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                self.proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def _finish(self, rc: int) -> None:
        self.rc, self.seconds = rc, time.time() - self.start
        if not self._out.closed:
            self._out.write(f"\n[gpu_check] exit {rc}{' (timed out)' if self.timed_out else ''} after {self.seconds:.0f} s\n")
            self._out.close()
        say(f"    end   {self.name}: exit {rc}{' (timed out)' if self.timed_out else ''}, {self.seconds:.0f} s")

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def status(self) -> str:
        return "PASS" if self.ok else ("TIMEOUT" if self.timed_out else "FAIL")

    def text(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def error_hint(self) -> str:
        """The last line that looks like an error, for the table."""
        if self.timed_out:
            return f"killed after {self.seconds:.0f} s (its timeout or the time budget)"
        lines = [ln.strip() for ln in self.text().splitlines() if ln.strip() and not ln.startswith("[gpu_check]")]
        for ln in reversed(lines):
            if re.search(r"(Error|Exception|error:|ERROR|Traceback|assert)", ln):
                return f"exit {self.rc}: {ln}"
        return f"exit {self.rc}: {lines[-1] if lines else 'no output'}"


def kill_all_jobs(report: Optional["Report"] = None) -> None:
    """Stop the commands still running (a stopped run); each gets a row."""
    for job in Job.ALL:
        if job.rc is None:
            job.kill()
            job.timed_out = True
            job._finish(-9)
            if report is not None:
                report.add("-", job.name, "TIMEOUT", job.seconds, "still running when the run was stopped")


# --------------------------------------------------------------------------------------------------
# A. step timings (runs in a child process: python gpu_check.py --steps-child RESULT.json)
def resenc(features: Sequence[int], blocks: Sequence[int]):
    """dynamic_network_architectures' ResidualEncoderUNet as nnU-Net's ResEnc presets build it (isotropic patch)."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    from torch import nn

    n = len(features)
    return ResidualEncoderUNet(
        input_channels=1, n_stages=n, features_per_stage=tuple(features), conv_op=nn.Conv3d, kernel_sizes=3,
        strides=(1,) + (2,) * (n - 1), n_blocks_per_stage=tuple(blocks), num_classes=1,
        n_conv_per_stage_decoder=(1,) * (n - 1), conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=False)


def step_configs(smoke: bool, cnn_lr: float = 1e-4):
    """(label, builder, patch side, batch, learning rate) per network; ``cnn_lr``: step_overhead's CNN rate
    (1e-2 makes its StepHarness use SubForeCNNPretrainTrainer's SGD; otherwise AdamW)."""
    from nnunet_subfore.networks import PAPER_ARCHITECTURES, TINY_ARCHITECTURES, build_network

    if smoke:
        return [
            ("SwinUNETR tiny", lambda: build_network("swinunetr", (64,) * 3, 1, 1, TINY_ARCHITECTURES["swinunetr"]),
             64, 1, 8e-4),
            ("UNETR tiny", lambda: build_network("unetr", (32,) * 3, 1, 1, TINY_ARCHITECTURES["unetr"]), 32, 1, 1e-4),
            ("ResEnc small (4 stages)", lambda: resenc((8, 16, 32, 64), (1, 1, 1, 1)), 32, 1, cnn_lr),
        ]
    return [
        ("SwinUNETR feature 48 (paper)",
         lambda: build_network("swinunetr", (96,) * 3, 1, 1, PAPER_ARCHITECTURES["swinunetr"]), 96, 4, 8e-4),
        ("UNETR ViT-B/16 (paper)", lambda: build_network("unetr", (96,) * 3, 1, 1, PAPER_ARCHITECTURES["unetr"]),
         96, 4, 1e-4),
        ("ResEnc-L (nnssl MAE setting)",
         lambda: resenc((32, 64, 128, 256, 320, 320), (1, 3, 4, 6, 6, 6)), 160, 2, cnn_lr),
    ]


def steps_child(result_path: Path, smoke: bool, warmup: int, repeats: int, budget: float) -> int:
    """Time the trainer's train_step per network; write one JSON record per network to ``result_path``."""
    import gc

    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    import step_overhead
    from step_overhead import MAPPING, StepHarness, make_batch  # the benchmark's harness: the trainer's own code

    from nnunet_subfore.masking import ForegroundMasker
    from nnunet_subfore.recipe import PAPER_MASKING

    device = torch.device("cpu" if smoke else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnUNetv2_train sets it
    else:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    start = time.time()
    records = []

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t

    cnn_lr = getattr(step_overhead, "LEARNING_RATES", {}).get("cnn", 1e-4)
    for name, build, patch, batch, lr in step_configs(smoke, cnn_lr):
        rec = {"network": name, "patch": patch, "batch": batch}
        if time.time() - start > budget:
            rec.update(status="SKIP", error=f"section A budget of {budget:.0f} s spent")
            records.append(rec)
            continue
        t_net = time.time()
        harness = net = x = None
        try:
            if device.type == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            torch.manual_seed(0)
            net = build().to(device)
            rec["params_M"] = sum(p.numel() for p in net.parameters()) / 1e6
            masker = ForegroundMasker.from_recipe(PAPER_MASKING, window=MAPPING.window_to_normalized(PAPER_MASKING.window))
            x = make_batch(batch, patch, device)
            harness = StepHarness(net, masker, device, lr)
            step_input = {"data": x}
            for _ in range(warmup):
                harness.train_step(step_input)
            steps, masks, outs = [], [], []
            for _ in range(repeats):
                steps.append(timed(lambda: outs.append(harness.train_step(step_input))))
                masks.append(timed(lambda: masker(x)))
            loss = float(np.mean([float(o["loss"]) for o in outs]))  # mean over the timed steps
            fraction = float(np.mean([float(masker(x).masked_fraction) for _ in range(5)]))
            rec.update(
                s_per_it=statistics.median(steps), s_min=min(steps), s_max=max(steps), n=len(steps),
                mask_s=statistics.median(masks), loss=loss,
                masked_fraction=fraction,
                amp=("fp16 autocast + GradScaler" if harness.grad_scaler is not None else "fp32 (CPU, no AMP)")
                + f", {type(harness.optimizer).__name__} lr {lr:g}",
            )
            rec["mask_share"] = rec["mask_s"] / rec["s_per_it"]
            if device.type == "cuda":
                sync()
                rec["peak_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
            rec["status"] = "PASS" if math.isfinite(loss) else "FAIL"
            if not math.isfinite(loss):
                rec["error"] = f"loss {loss}"
        except Exception as e:  # noqa: BLE001 - report and go on with the next network
            traceback.print_exc()
            rec.update(status="FAIL", error=f"{type(e).__name__}: {e}"[:300])
        finally:
            harness = net = x = None  # free the GPU memory before the next network
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rec["seconds"] = time.time() - t_net
        say(f"    {json.dumps(rec)}")
        records.append(rec)
        result_path.write_text(json.dumps(records, indent=1))
    result_path.write_text(json.dumps(records, indent=1))
    return 0


def section_a(report: Report, args, clock) -> None:
    t = section_banner("A. pretraining step timings (the trainer's train_step)")
    result = Path(args.workdir) / "steps.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    budget = args.steps_budget
    argv = [sys.executable, "-u", str(Path(__file__).resolve()), "--steps-child", str(result),
            "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--steps-budget", str(budget)]
    if args.cpu_smoke:
        argv.append("--cpu-smoke")
    timeout = clock.timeout(budget + 60)
    if timeout < 20:
        report.add("A", "step timings", "SKIP", 0, "no time left")
        return
    env = dict(os.environ)
    job = Job("steps", argv, env, Path(args.logdir_work) / "steps.log", timeout, Path(args.workdir))
    job.wait()
    say(job.text())
    records = json.loads(result.read_text()) if result.exists() else []
    for rec in records:
        label = f"{rec['network']}, {rec['batch']}x1x{rec['patch']}^3"
        if rec.get("status") == "PASS":
            detail = (f"{rec['s_per_it']:.3f} s/it (min {rec['s_min']:.3f}, max {rec['s_max']:.3f}, n {rec['n']}); "
                      + (f"peak {rec['peak_GiB']:.1f} GiB; " if "peak_GiB" in rec else "")
                      + f"masking {rec['mask_s'] * 1e3:.1f} ms = {rec['mask_share']:.1%} of the step; "
                      f"masked {rec['masked_fraction']:.0%}; mean loss {rec['loss']:.3f}; {rec['params_M']:.1f} M params; "
                      f"{rec['amp']}")
        else:
            detail = rec.get("error", "")
        report.add("A", label, rec.get("status", "FAIL"), rec.get("seconds"), detail)
    if not job.ok or len(records) < N_STEP_NETWORKS:
        report.add("A", "step-timing process", job.status(), job.seconds,
                   job.error_hint() + f"; {len(records)} network(s) reported")
    report.add("A", "section A total", "INFO", time.time() - t, "")


# --------------------------------------------------------------------------------------------------
# B. the stock commands end to end
class Clock:
    def __init__(self, budget: float):
        self.deadline = T0 + budget

    def left(self) -> float:
        return self.deadline - time.time()

    def timeout(self, want: float, reserve: float = RESERVE_S) -> float:
        return max(0.0, min(want, self.left() - reserve))


class EndToEnd:
    def __init__(self, report: Report, args, clock: Clock):
        self.report, self.args, self.clock = report, args, clock
        self.smoke = args.cpu_smoke
        self.device = "cpu" if self.smoke else "cuda"
        self.work = Path(args.workdir)
        self.logs = Path(args.logdir_work)
        self.results = self.work / "nnUNet_results"
        self.epochs = 1 if self.smoke else 2
        self.iters = 2 if self.smoke else 10
        self.val_iters = 1 if self.smoke else 2
        self.timeout_scale = 6 if self.smoke else 1  # the timeouts are sized for the GPU machine (16 cores)
        self.np = "2" if self.smoke else "4"  # preprocessing workers
        self.passed: Dict[str, bool] = {}
        self.killed_trainers: List[str] = []  # runs killed at their timeout: their checkpoints may be half-written
        self.env = self._env()

    # ---- helpers
    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.pop("nnUNet_n_proc_DA", None)
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            env[var] = str(self.work / var)
        env["nnUNet_def_n_proc"] = "1"
        env["MPLBACKEND"] = "Agg"
        env["SUBFORE_GPU_EPOCHS"], env["SUBFORE_GPU_ITERS"] = str(self.epochs), str(self.iters)
        env["SUBFORE_GPU_VAL_ITERS"] = str(self.val_iters)
        if self.smoke:
            env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS") or "1"
        return env

    def training_env(self, compile_: bool = False, **extra) -> Dict[str, str]:
        env = dict(self.env)
        env["nnUNet_n_proc_DA"] = "0"  # training only: it crashes plan_and_preprocess in nnunetv2 2.8.1
        env["nnUNet_compile"] = "t" if compile_ else "f"
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, name: str, argv: Sequence[str], want_timeout: float, env=None, needs=(),
              reserve: float = RESERVE_S) -> Optional[Job]:
        missing = [n for n in needs if not self.passed.get(n)]
        if missing:
            self.report.add("B", name, "SKIP", 0, f"needs {', '.join(missing)}")
            self.passed[name] = False
            return None
        timeout = self.clock.timeout(want_timeout * self.timeout_scale, reserve)
        if timeout < 15:
            self.report.add("B", name, "SKIP", 0, f"time budget spent ({self.clock.left():.0f} s left)")
            self.passed[name] = False
            return None
        return Job(name, argv, env or self.env, self.logs / f"{name}.log", timeout, self.work)

    def finish(self, name: str, job: Optional[Job], detail_fn=None, wait_limit: Optional[float] = None) -> bool:
        if job is None:
            return False
        job.wait(wait_limit)
        if job.timed_out and "-tr" in job.argv:
            self.killed_trainers.append(job.argv[job.argv.index("-tr") + 1])
        ok, detail = job.ok, ""
        if ok and detail_fn is not None:
            try:
                ok, detail = detail_fn(job)
            except Exception as e:  # noqa: BLE001
                ok, detail = False, f"check failed: {type(e).__name__}: {e}"
        elif not ok:
            detail = job.error_hint()
        self.report.add("B", name, ("PASS" if ok else "FAIL") if not job.timed_out else "TIMEOUT", job.seconds, detail)
        self.passed[name] = ok
        return ok

    def run(self, name, argv, want_timeout, env=None, needs=(), detail_fn=None) -> bool:
        return self.finish(name, self.start(name, argv, want_timeout, env, needs), detail_fn)

    def train_argv(self, dataset: int, trainer: str, plans: Optional[str] = None, extra=()) -> List[str]:
        argv = ["nnUNetv2_train", str(dataset), "3d_fullres", "0", "-tr", trainer, "-device", self.device]
        return argv + (["-p", plans] if plans else []) + list(extra)

    def out_dir(self, dataset_folder: str, trainer: str, plans: str = "nnUNetPlans") -> Path:
        from nnunet_subfore.paths import trainer_output_folder

        return trainer_output_folder(self.results, dataset_folder, trainer, plans, "3d_fullres") / "fold_0"

    @property
    def pre_folder(self) -> str:
        from nnunet_subfore.paths import dataset_folder_name

        return dataset_folder_name(PRETRAIN_ID, PRETRAIN_NAME)

    @property
    def down_folder(self) -> str:
        from nnunet_subfore.paths import dataset_folder_name

        return dataset_folder_name(DOWNSTREAM_ID, DOWNSTREAM_NAME)

    @staticmethod
    def epochs_in(text: str) -> List[int]:
        return [int(m) for m in re.findall(r": Epoch (\d+)\s*$", text, flags=re.M)]

    @staticmethod
    def epoch_times(text: str) -> List[float]:
        return [float(m) for m in re.findall(r"Epoch time: ([0-9.]+) s", text)]

    # ---- checks
    def pretrain_detail(self, trainer: str, compile_: bool = False):
        def detail(job: Job):
            plans = job.argv[job.argv.index("-p") + 1] if "-p" in job.argv else "nnUNetPlans"
            out = self.out_dir(self.pre_folder, trainer, plans)
            text = job.text()
            epochs = self.epochs_in(text)
            times = self.epoch_times(text)
            problems = []
            if not (out / "checkpoint_final.pth").exists():
                problems.append("no checkpoint_final.pth")
            if epochs != list(range(self.epochs)):
                problems.append(f"epochs run {epochs}")
            metrics = out / "validation" / "reconstruction_metrics.json"
            l1 = json.loads(metrics.read_text()).get("mean_masked_l1") if metrics.exists() else None
            if not metrics.exists():
                problems.append("no validation/reconstruction_metrics.json")
            compiled = "Using torch.compile" in text
            if compile_ and not self.smoke and not compiled:
                problems.append("nnU-Net did not compile the network")
            parts = [f"{len(epochs)} epochs x {self.iters} it", "epoch s " + "/".join(f"{t:.1f}" for t in times),
                     f"val masked L1 {l1:.3f}" if isinstance(l1, (int, float)) else "val masked L1 n/a"]
            if compile_:
                parts.append("torch.compile used" if compiled else "torch.compile not used (CPU)")
            if plans != "nnUNetPlans" or trainer == "SubForeGPU_PretrainCNN":
                parts.append(f"plans {plans}")
            return not problems, "; ".join(problems + parts)
        return detail

    def data(self) -> None:
        t = time.time()
        name = "synthetic CT + register-unlabeled"
        try:
            from nnunet_subfore.data.phantoms import write_labelled_dataset, write_unlabeled_images
            from nnunet_subfore.data.register import register_unlabeled

            n_pre, n_train, n_test = (6, 5, 2) if self.smoke else (8, 6, 2)
            self.n_test = n_test
            raw = self.work / "nnUNet_raw"
            for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
                (self.work / var).mkdir(parents=True, exist_ok=True)
            src = self.work / "ct_collection"
            write_unlabeled_images(src / "scanner_a", n_pre // 2, seed=1000, shape=SHAPE)
            write_unlabeled_images(src / "scanner_b", n_pre - n_pre // 2, seed=2000, shape=SHAPE, file_format="mha")
            write_labelled_dataset(raw, DOWNSTREAM_ID, DOWNSTREAM_NAME, n_train, num_test=n_test, seed=3000,
                                   shape=SHAPE)
            reg = register_unlabeled([src / "scanner_a", src / "scanner_b"], PRETRAIN_ID, PRETRAIN_NAME,
                                     raw_root=raw, progress=False)
            ok = reg.exit_code() == 0
            n_images = len(list((raw / self.pre_folder / "imagesTr").iterdir()))
            detail = f"{n_images} unlabeled (NIfTI + MHA) registered, {n_train}+{n_test} labelled, shape {SHAPE}"
            if not ok:
                detail = f"register-unlabeled skipped files: {reg.skipped}"
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            ok, detail = False, f"{type(e).__name__}: {e}"
        self.report.add("B", name, "PASS" if ok else "FAIL", time.time() - t, detail)
        self.passed["data"] = ok

    def trainer_path(self) -> Optional[str]:
        t = time.time()
        try:
            out = subprocess.run([console_script("nnunet-subfore"), "trainer-path"], capture_output=True, encoding="utf-8", errors="replace",
                                 timeout=60, env=self.env, cwd=str(self.work))
            path = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
            ok = out.returncode == 0 and (Path(path) / "subfore_variants.py").exists()
            site = os.environ.get("GPU_CHECK_SITE", "")
            installed = bool(site) and Path(path).resolve().is_relative_to(Path(site).resolve())
            detail = f"{path} ({'the installed copy' if installed else 'NOT under ' + (site or 'the install dir')})"
            ok = ok and (installed or not site)
            if out.returncode:
                detail = (out.stderr or out.stdout).strip()[-200:]
        except Exception as e:  # noqa: BLE001
            ok, path, detail = False, "", f"{type(e).__name__}: {e}"
        self.report.add("B", "nnunet-subfore trainer-path", "PASS" if ok else "FAIL", time.time() - t, detail)
        return path if ok else None

    def has_cnn_trainer(self, trainer_folder: Optional[str]) -> bool:
        pattern = f"class {CNN_CLASS}"
        folders = [Path(trainer_folder)] if trainer_folder else []
        folders.append(HERE.parent / "trainers")
        for folder in folders:
            for path in folder.glob("*.py") if folder.is_dir() else []:
                if pattern in path.read_text(encoding="utf-8", errors="replace"):
                    return True
        return False

    def run_all(self) -> None:
        t = section_banner("B. stock nnU-Net commands end to end" + (" (CPU smoke)" if self.smoke else " (CUDA)"))
        if self.work.exists():
            shutil.rmtree(self.work / "nnUNet_raw", ignore_errors=True)
            shutil.rmtree(self.work / "nnUNet_preprocessed", ignore_errors=True)
            shutil.rmtree(self.work / "nnUNet_results", ignore_errors=True)
            shutil.rmtree(self.work / "ct_collection", ignore_errors=True)
            shutil.rmtree(self.work / "predictions", ignore_errors=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        trainer_folder = self.trainer_path()
        ext = [trainer_folder] if trainer_folder else []
        ext.append(str(HERE / "bench_trainers"))
        self.env["nnUNet_extTrainer"] = os.pathsep.join(ext)
        self.data()

        # plan and preprocess; the downstream set takes the pretraining plans (one normalization). On the
        # GPU the downstream planning (CPU work) overlaps the pretraining runs (GPU work).
        parallel = not self.smoke
        ts = time.time()
        self.run("plan_and_preprocess pretrain", ["nnUNetv2_plan_and_preprocess", "-d", str(PRETRAIN_ID), "-c",
                                                  "3d_fullres", "-np", self.np, "--verify_dataset_integrity"],
                 120, needs=["data"])
        down_name = "plan downstream (--no_pp)"
        down_job = self.start(down_name, ["nnUNetv2_plan_and_preprocess", "-d", str(DOWNSTREAM_ID), "-c",
                                          "3d_fullres", "-np", self.np, "--no_pp", "--verify_dataset_integrity"],
                              90, needs=["data"])
        if not parallel:
            self.finish(down_name, down_job)
            self.downstream_plans()
        jobs, compile_job = self.start_pretraining(trainer_folder, parallel)
        if parallel:
            self.finish(down_name, down_job)
            self.downstream_plans()
            for name, (job, trainer) in jobs.items():
                self.finish(name, job, self.pretrain_detail(trainer))
        say(f"    planning + pretraining took {time.time() - ts:.0f} s")

        # stage 2: fine-tune from the pretrained checkpoint; resume another pretraining run with --c
        ts = time.time()
        weights = self.out_dir(self.pre_folder, "SubForeGPU_PretrainFG") / "checkpoint_final.pth"
        weights_note = "SubForeGPU_PretrainFG"
        if not weights.exists():
            alt = self.out_dir(self.pre_folder, "SubForeGPU_PretrainRandom") / "checkpoint_final.pth"
            if alt.exists():
                weights, weights_note = alt, "SubForeGPU_PretrainRandom (the HU-fg run failed)"
        self.passed["pretrained checkpoint"] = weights.exists()
        ft_name, resume_name = "fine-tune SwinUNETR -pretrained_weights", "resume UNETR pretraining --c"
        ft = self.start(ft_name, self.train_argv(DOWNSTREAM_ID, "SubForeGPU_Finetune", DOWNSTREAM_PLANS,
                                                 ["-pretrained_weights", str(weights)]),
                        150, self.training_env(), needs=["preprocess downstream", "pretrained checkpoint"])
        if self.smoke:
            self.finish(ft_name, ft, self.finetune_detail(weights_note))
        resume = self.start(resume_name, self.train_argv(PRETRAIN_ID, "SubForeGPU_PretrainUNETR", None, ["--c"]),
                            120, self.training_env(SUBFORE_GPU_EPOCHS=self.epochs + 1),
                            needs=["pretrain UNETR HU-fg"])
        if not self.smoke:
            self.finish(ft_name, ft, self.finetune_detail(weights_note))
        self.finish(resume_name, resume, self.resume_detail)
        say(f"    fine-tune/resume stage took {time.time() - ts:.0f} s")

        # stage 3: inference with the fine-tuned model, and evaluation
        raw = self.work / "nnUNet_raw" / self.down_folder
        pred = self.work / "predictions" / "finetuned"
        model = self.out_dir(self.down_folder, "SubForeGPU_Finetune", DOWNSTREAM_PLANS).parent
        self.run("nnUNetv2_predict", ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d",
                                      str(DOWNSTREAM_ID), "-c", "3d_fullres", "-tr", "SubForeGPU_Finetune", "-p",
                                      DOWNSTREAM_PLANS, "-f", "0", "-device", self.device, "-npp", "1", "-nps", "1"],
                 120, needs=[ft_name], detail_fn=lambda job: self.predict_detail(pred))
        self.run("nnUNetv2_evaluate_folder", ["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred),
                                              "-djfile", str(model / "dataset.json"), "-pfile",
                                              str(model / "plans.json"), "-np", "1"],
                 60, needs=["nnUNetv2_predict"], detail_fn=lambda job: self.evaluate_detail(pred))

        # the torch.compile run (GPU: it ran in the background meanwhile), then every checkpoint
        if compile_job is not None:  # leave time for the checkpoint check
            job, name, trainer = compile_job
            self.finish(name, job, self.pretrain_detail(trainer, compile_=True), wait_limit=self.clock.left() - 35)
        self.check_checkpoints()
        self.report.add("B", "section B total", "INFO", time.time() - t, "")

    def downstream_plans(self) -> None:
        self.run("move_plans_between_datasets", ["nnUNetv2_move_plans_between_datasets", "-s", str(PRETRAIN_ID),
                                                 "-t", str(DOWNSTREAM_ID), "-sp", "nnUNetPlans", "-tp",
                                                 DOWNSTREAM_PLANS],
                 60, needs=["plan_and_preprocess pretrain", "plan downstream (--no_pp)"])
        self.run("preprocess downstream", ["nnUNetv2_preprocess", "-d", str(DOWNSTREAM_ID), "-plans_name",
                                           DOWNSTREAM_PLANS, "-c", "3d_fullres", "-np", self.np],
                 90, needs=["move_plans_between_datasets"])

    def cnn_plans(self) -> Optional[str]:
        """The plans of the CNN pretraining run: SUBFORE_GPU_CNN_PLANS if set; on the GPU nnU-Net's default plans
        (the planned U-Net); on the CPU the demo's tiny-CNN preset (``nnunet-subfore plans --tiny-cnn``), made here."""
        if os.environ.get("SUBFORE_GPU_CNN_PLANS"):
            return os.environ["SUBFORE_GPU_CNN_PLANS"]
        if not self.smoke:
            return None
        name = "SubForeGPUTinyCNNPlans"
        self.run("nnunet-subfore plans --tiny-cnn", ["nnunet-subfore", "plans", "-d", str(PRETRAIN_ID), "--tiny-cnn",
                                                     "--plans-name", name, "--force"],
                 60, needs=["plan_and_preprocess pretrain"])
        return name

    def start_pretraining(self, trainer_folder: Optional[str], parallel: bool):
        """The pretraining runs. CPU: one after the other, each checked at once. GPU: all at once (one GPU
        holds them all); returns the running jobs, and the torch.compile run, which goes on in the
        background until the end."""
        plan_ok = ["plan_and_preprocess pretrain"]
        runs = [("pretrain SwinUNETR HU-fg", "SubForeGPU_PretrainFG"),
                ("pretrain UNETR HU-fg", "SubForeGPU_PretrainUNETR"),
                ("pretrain SwinUNETR random-mask", "SubForeGPU_PretrainRandom")]
        if self.has_cnn_trainer(trainer_folder):
            runs.append(("pretrain CNN HU-fg", "SubForeGPU_PretrainCNN"))
        else:
            self.report.add("B", "pretrain CNN HU-fg", "SKIP", 0, f"no class {CNN_CLASS} in the installed trainers")
        compile_name, compile_trainer = "pretrain SwinUNETR HU-fg, torch.compile", "SubForeGPU_PretrainFGCompile"
        cnn_plans = self.cnn_plans() if runs[-1][1] == "SubForeGPU_PretrainCNN" else None

        def launch(name, trainer, compile_=False):
            plans = cnn_plans if trainer == "SubForeGPU_PretrainCNN" else None
            return self.start(name, self.train_argv(PRETRAIN_ID, trainer, plans), 240 if compile_ else 150,
                              self.training_env(compile_=compile_), needs=plan_ok)

        if not parallel:
            for name, trainer in runs:
                self.finish(name, launch(name, trainer), self.pretrain_detail(trainer))
            self.finish(compile_name, launch(compile_name, compile_trainer, True),
                        self.pretrain_detail(compile_trainer, compile_=True))
            return {}, None
        jobs = {}
        first_name, first_trainer = runs[0]
        first = launch(first_name, first_trainer)
        jobs[first_name] = (first, first_trainer)
        if first is not None:
            # the first run writes splits_final.json; the others must not race it
            splits = self.work / "nnUNet_preprocessed" / self.pre_folder / "splits_final.json"
            while not first.done() and not splits.exists():
                time.sleep(0.5)
            time.sleep(1.0)
        for name, trainer in runs[1:]:
            jobs[name] = (launch(name, trainer), trainer)
        return jobs, (launch(compile_name, compile_trainer, True), compile_name, compile_trainer)

    def finetune_detail(self, weights_note: str):
        def detail(job: Job):
            text = job.text()
            out = self.out_dir(self.down_folder, "SubForeGPU_Finetune", DOWNSTREAM_PLANS)
            loaded = "Loading pretrained weights" in text and "################### Done" in text
            summary = out / "validation" / "summary.json"
            dice = json.loads(summary.read_text())["foreground_mean"]["Dice"] if summary.exists() else None
            problems = [p for p, bad in (("pretrained weights not loaded", not loaded),
                                         ("no checkpoint_final.pth", not (out / "checkpoint_final.pth").exists()),
                                         ("no validation/summary.json", dice is None)) if bad]
            parts = [f"weights of {weights_note}", f"{len(self.epochs_in(text))} epochs x {self.iters} it",
                     "epoch s " + "/".join(f"{t:.1f}" for t in self.epoch_times(text)),
                     f"val Dice {dice:.3f} (tiny net, seconds of training)" if dice is not None else ""]
            return not problems, "; ".join(problems + [p for p in parts if p])
        return detail

    def resume_detail(self, job: Job):
        text = job.text()
        epochs = self.epochs_in(text)
        final = self.out_dir(self.pre_folder, "SubForeGPU_PretrainUNETR") / "checkpoint_final.pth"
        ok = epochs == [self.epochs] and final.exists()
        return ok, (f"loaded the {self.device.upper()}-written checkpoint_final.pth (epoch {self.epochs}), "
                    f"ran epochs {epochs} (expected [{self.epochs}]), finished with a new checkpoint_final.pth"
                    if ok else f"ran epochs {epochs}, expected [{self.epochs}]; checkpoint_final {final.exists()}")

    def predict_detail(self, pred: Path):
        files = sorted(p.name for p in pred.glob("*.nii.gz"))
        return len(files) == self.n_test, f"{len(files)} of {self.n_test} held-out cases segmented"

    def evaluate_detail(self, pred: Path):
        summary = json.loads((pred / "summary.json").read_text())
        return True, f"held-out foreground Dice {summary['foreground_mean']['Dice']:.3f} (tiny net: a pipeline check)"

    def check_checkpoints(self) -> None:
        name = "checkpoints load on a CPU-only view"
        paths = sorted(str(p) for p in self.results.rglob("*.pth")
                       if not any(f"{t}__" in str(p) for t in self.killed_trainers))
        if not paths:
            self.report.add("B", name, "SKIP", 0, "no checkpoints were written")
            return
        code = CHECKPOINT_CHECK
        env = dict(self.env)
        env["CUDA_VISIBLE_DEVICES"] = ""
        job = self.start(name, [sys.executable, "-c", code, *paths], 90, env, reserve=3)
        if job is None:
            return
        job.wait()
        records = []
        for line in job.text().splitlines():
            if line.startswith("CKPT "):
                records.append(json.loads(line[5:]))
        bad = [r for r in records if not r.get("ok")]
        ok = job.ok and len(records) == len(paths) and not bad
        for r in records:
            say(f"    {json.dumps(r)}")
        rel = lambda p: "/".join(Path(p).parts[-3:])  # noqa: E731
        detail = (f"{len(records) - len(bad)}/{len(paths)} ok: torch.load(map_location='cpu') and without "
                  f"map_location under CUDA_VISIBLE_DEVICES=''; network_weights on cpu, no _orig_mod. keys")
        if bad:
            detail += "; FAILED: " + "; ".join(f"{rel(r['path'])}: {r.get('error') or r}" for r in bad[:3])
        elif not job.ok:
            detail = job.error_hint()
        self.report.add("B", name, "PASS" if ok else job.status() if not job.ok else "FAIL", job.seconds, detail)


CHECKPOINT_CHECK = r"""
import json, sys
import torch
assert not torch.cuda.is_available(), "this check must not see a GPU"
for path in sys.argv[1:]:
    rec = {"path": path}
    try:
        locations = []
        def record(storage, location):
            locations.append(str(location))
            return storage
        ck = torch.load(path, map_location=record, weights_only=False)
        rec["stored_on"] = sorted(set(locations))
        ck = torch.load(path, map_location="cpu", weights_only=False)
        weights = ck["network_weights"]
        rec["tensors"] = len(weights)
        rec["network_weights_on_cpu"] = all(t.device.type == "cpu" for t in weights.values())
        rec["orig_mod_keys"] = sum(k.startswith("_orig_mod.") for k in weights)
        rec["trainer"], rec["epoch"] = ck.get("trainer_name"), ck.get("current_epoch")
        try:
            torch.load(path, weights_only=False)  # no map_location: nnU-Net's -pretrained_weights loader
            rec["plain_load"] = True
        except Exception as e:
            rec["plain_load"] = False
            rec["error"] = f"load without map_location: {type(e).__name__}: {e}"[:200]
        rec["ok"] = (rec["plain_load"] and rec["network_weights_on_cpu"] and not rec["orig_mod_keys"]
                     and all(l.startswith("cpu") for l in rec["stored_on"]))
        if not rec["ok"] and "error" not in rec:
            rec["error"] = f"stored on {rec['stored_on']}, _orig_mod keys {rec['orig_mod_keys']}"
    except Exception as e:
        rec["ok"] = False
        rec["error"] = f"{type(e).__name__}: {e}"[:200]
    print("CKPT " + json.dumps(rec), flush=True)
"""


# --------------------------------------------------------------------------------------------------
def collect_logs(args) -> None:
    """At most a few files in ``--logdir``: every command's output, and nnU-Net's training logs."""
    if not args.logdir:
        return
    logdir = Path(args.logdir)
    logdir.mkdir(parents=True, exist_ok=True)

    def clip(text: str, head: int = 80, tail: int = 400) -> str:
        lines = text.splitlines()
        if len(lines) <= head + tail:
            return text
        return "\n".join(lines[:head] + [f"[... {len(lines) - head - tail} lines left out ...]"] + lines[-tail:])

    parts = []
    for job in Job.ALL:
        parts.append(f"\n===== {job.name}: exit {job.rc}{' (timed out)' if job.timed_out else ''}, "
                     f"{job.seconds:.0f} s =====\n{clip(job.text())}")
    (logdir / "commands.log").write_text("".join(parts)[-12_000_000:], encoding="utf-8")
    train_logs = sorted(Path(args.workdir, "nnUNet_results").rglob("training_log_*.txt"))
    parts = [f"\n===== {'/'.join(p.parts[-4:])} =====\n{clip(p.read_text(errors='replace'), 40, 200)}"
             for p in train_logs]
    (logdir / "training_logs.txt").write_text("".join(parts)[-12_000_000:] or "no training logs\n", encoding="utf-8")


def read_pre_checks(report: Report, path: Optional[str]) -> None:
    """Rows written by gpu_check.sh (installation, imports): name<TAB>status<TAB>seconds<TAB>detail."""
    if not path or not Path(path).exists():
        return
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 3:
            seconds = float(fields[2]) if fields[2].strip() else None
            report.add("0", fields[0], fields[1], seconds, fields[3] if len(fields) > 3 else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny networks, -device cpu, 2 iterations, no AMP")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for everything from GPU_CHECK_T0 (GPU default 420; CPU smoke 3600)")
    parser.add_argument("--workdir", default=None, help="scratch folder for nnU-Net data (deleted and rebuilt)")
    parser.add_argument("--logdir", default=None, help="where the collected logs go (e.g. $OUT/logs)")
    parser.add_argument("--table", default=None, help="write the table here too (e.g. $OUT/gpu_check.txt)")
    parser.add_argument("--pre", default=None, help="rows from gpu_check.sh (installation)")
    parser.add_argument("--header", action="append", default=[], help="a line above the table (repeatable)")
    parser.add_argument("--skip-steps", action="store_true", help="skip section A")
    parser.add_argument("--skip-e2e", action="store_true", help="skip section B")
    parser.add_argument("--warmup", type=int, default=None, help="section A warm-up steps (GPU 3, smoke 1)")
    parser.add_argument("--repeats", type=int, default=None, help="section A timed steps (GPU 10, smoke 2)")
    parser.add_argument("--steps-budget", type=float, default=None, help="section A seconds (GPU 150)")
    parser.add_argument("--steps-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 3)
    args.repeats = args.repeats if args.repeats is not None else (2 if smoke else 10)
    args.steps_budget = args.steps_budget if args.steps_budget is not None else (600 if smoke else 150)
    if args.steps_child:
        return steps_child(Path(args.steps_child), smoke, args.warmup, args.repeats, args.steps_budget)

    args.budget = args.budget if args.budget is not None else (3600 if smoke else 420)
    args.workdir = str(Path(args.workdir or ("/tmp/gpu_check_smoke" if smoke else "/tmp/gpu_check_work")).resolve())
    args.logdir_work = str(Path(args.workdir) / "logs")
    Path(args.logdir_work).mkdir(parents=True, exist_ok=True)
    # nnU-Net reads its folders when first imported (the step-timing child imports it too)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = str(Path(args.workdir) / var)
    os.environ.setdefault("MPLBACKEND", "Agg")

    clock = Clock(args.budget)
    mode = "CPU smoke (tiny networks, -device cpu, no AMP)" if smoke else "CUDA"
    header = [f"nnunet-subfore GPU check, {mode}; budget {args.budget:.0f} s from the start of gpu_check.sh"]
    header += args.header
    report = Report(Path(args.table) if args.table else None, header)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    status = 0
    try:
        read_pre_checks(report, args.pre)
        if not args.skip_steps:
            section_a(report, args, clock)
        if not args.skip_e2e:
            EndToEnd(report, args, clock).run_all()
    except KeyboardInterrupt as e:
        report.add("-", "run aborted", "FAIL", elapsed(), f"interrupted ({e}); the rows above are complete")
        status = 1
    except Exception as e:  # noqa: BLE001 - the table must still come out
        traceback.print_exc()
        report.add("-", "gpu_check.py itself", "FAIL", elapsed(), f"{type(e).__name__}: {e}")
        status = 1
    finally:
        kill_all_jobs(report)
        try:
            collect_logs(args)
        except Exception as e:  # noqa: BLE001
            say(f"collecting logs failed: {e}")
    report.write()
    say("\n" + report.table())
    return status if status else (1 if any(r[3] in ("FAIL", "TIMEOUT") for r in report.rows) else 0)


if __name__ == "__main__":
    sys.exit(main())
