"""Shared helpers of the performance benchmarks: machine facts, interleaved timing, peak-RSS sampling.

Timings on this shared machine only mean something as ratios measured side by side in one process: every
helper here times the candidates interleaved (A B A B ...) and reports medians of both the wall-clock seconds
and the process's CPU seconds (``time.process_time``: all threads of this process, and only this process).
Under load the wall clock also counts the time other jobs held the core, so it swings from round to round;
CPU seconds do not, and ratios are taken on them.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import psutil
import torch


def machine_facts() -> str:
    """CPU model, cores, torch version and threads, load average: printed at the top of every benchmark."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"machine: {cpu}; {os.cpu_count()} logical cores; torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s); load average {load}; RAM {psutil.virtual_memory().total / 2**30:.1f} GiB"
    )


@dataclass(frozen=True)
class Timing:
    """Median seconds per call: wall clock and CPU (``time.process_time``) of the same calls."""

    wall: float
    cpu: float

    def __str__(self) -> str:
        return f"{self.cpu:.3f} CPU-s ({self.wall:.3f} s wall)"


class Stopwatch:
    """Wall-clock and CPU seconds of a block: ``with Stopwatch() as sw: ...`` then ``sw.wall``, ``sw.cpu``."""

    def __enter__(self) -> "Stopwatch":
        self.wall, self.cpu = 0.0, 0.0
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def medians(timings: list[Stopwatch]) -> Timing:
    return Timing(statistics.median(t.wall for t in timings), statistics.median(t.cpu for t in timings))


def interleaved_medians(
    candidates: dict[str, Callable[[], object]], repeats: int, warmup: bool = True
) -> dict[str, Timing]:
    """Median wall and CPU seconds per call of each candidate, calls interleaved A B A B ... (one of each per round)."""
    names = list(candidates)
    if warmup:
        for name in names:
            candidates[name]()
    times: dict[str, list[Stopwatch]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            with Stopwatch() as watch:
                candidates[name]()
            times[name].append(watch)
    return {name: medians(values) for name, values in times.items()}


@contextmanager
def peak_rss(interval: float = 0.005):
    """Sample this process's RSS while the block runs; yields a dict whose ``"peak_mb"`` is set on exit."""
    process, result, stop = psutil.Process(), {"before_mb": psutil.Process().memory_info().rss / 2**20}, threading.Event()
    peak = [result["before_mb"]]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss / 2**20)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["peak_mb"] = max(peak[0], process.memory_info().rss / 2**20)


def matmul_flops_per_second(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """The machine's dense matmul rate (n x n @ n x n, 2 n^3 FLOP) per CPU second, in this process with the current
    threads (per CPU second, so that it compares with a model call's FLOPs per CPU second at any load)."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(dtype) for _ in range(2))
    seconds = interleaved_medians({"mm": lambda: torch.mm(a, b)}, repeats)["mm"].cpu
    return 2 * n**3 / seconds
