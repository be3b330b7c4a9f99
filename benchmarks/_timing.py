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


def alternating_medians(timed: list[tuple[Callable[[], object], int]], rounds: int) -> list[float]:
    """Each (fn, calls) of ``timed`` run in turn, ``rounds`` times: per fn the median over rounds of the
    median of its ``calls`` calls in the round. On a machine whose speed drifts within a minute the
    ratios of these medians compare the functions at the same moments, where timing one after the other
    would compare them at different speeds."""
    per_round: list[list[float]] = [[] for _ in timed]
    for _ in range(rounds):
        for times, (fn, calls) in zip(per_round, timed):
            times.append(median_seconds(fn, calls))
    return [statistics.median(times) for times in per_round]
