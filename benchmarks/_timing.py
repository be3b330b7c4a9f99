"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synchronized(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a CPU step has ended when it returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
