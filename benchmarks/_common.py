"""Helpers shared by the benchmark scripts (timing side by side, memory peaks, tables, machine info).

Not part of the package. Every script measures the things it compares in one process, interleaving
the repetitions (A B C, B C A, C A B, ...) so that the noise of a shared machine hits all of them
alike, and reports medians and medians of per-repetition ratios.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler's C++ log lines off the tables

import torch  # noqa: E402


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (plus family/model when the name is generic)."""
    name, family, model = platform.processor() or "unknown CPU", None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and name in ("unknown CPU", platform.processor()):
                    name = value
                elif key == "cpu family" and family is None:
                    family = value
                elif key == "model" and model is None:
                    model = value
    except OSError:
        pass
    if family is not None and model is not None:
        name = f"{name} (cpu family {family}, model {model})"
    return name


def machine_line(device: torch.device) -> str:
    cores = os.cpu_count()
    line = f"{cpu_model()}, {cores} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} intra-op threads"
    if device.type == "cuda":
        line += f"; GPU {torch.cuda.get_device_name(device)}"
    return line


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(ops: Dict[str, Callable[[], object]], repeats: int, device: torch.device,
                     warmup: int = 1, before: Optional[Callable[[], object]] = None) -> Dict[str, List[float]]:
    """Seconds per call of each op, the ops run in a rotating order within each repetition.

    ``before`` runs (untimed) before every timed call, e.g. to evict the batch from the caches.
    """
    names = list(ops)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for rep in range(warmup + repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            if before is not None:
                before()
            sync(device)
            t0 = time.perf_counter()
            ops[name]()
            sync(device)
            dt = time.perf_counter() - t0
            if rep >= warmup:
                times[name].append(dt)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(times: Dict[str, List[float]], numerator: Sequence[str], denominator: Sequence[str]) -> float:
    """Median over repetitions of sum(numerator times) / sum(denominator times) in the same repetition."""
    n = len(times[numerator[0]])
    ratios = [sum(times[k][i] for k in numerator) / sum(times[k][i] for k in denominator) for i in range(n)]
    return median(ratios)


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by ``fn`` above what was allocated when it started.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the CPU allocator's running total as recorded by
    the torch profiler (``profile_memory=True``; the ``Total Allocated`` field of its memory events,
    which counts from zero at the start of profiling).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del result
        return int(peak)
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    finally:
        os.remove(path)
    totals = [e["args"]["Total Allocated"] for e in trace["traceEvents"]
              if e.get("name") == "[memory]" and int(e["args"].get("Device Type", 0)) == 0]
    return int(max([0] + totals))


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop lines) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: Optional[str] = None) -> str:
    """A plain-text table (also valid Markdown when pasted between pipes)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    if title:
        lines.append(title)
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    lines.append(fmt(cells[0]))
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.extend(fmt(r) for r in cells[1:])
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
