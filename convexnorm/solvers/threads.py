"""torch's intra-op threads during a native solve."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch.set_num_threads(threads) inside the block, restored afterwards (nothing for None).
    One thread is the native solvers' default: on a loaded 2-core machine torch's default
    threads collapsed the interior-point method 125x (docs/benchmarks.md, bench_threads.py)."""
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
