"""torch's intra-op threads during a native solve, and episodes solved in worker threads."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


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


def over_chunks(work: Callable[[slice], T], batch: int, workers: int) -> list[T]:
    """``work(chunk)`` for ``workers`` contiguous chunks of range(batch) (as equal as possible, at
    most one per program), each in its own thread (the first in the caller's), in order; the first
    chunk's error, if any, raised after all finished. torch releases the GIL inside its
    operations, so with one intra-op thread each the chunks' operations run on as many cores
    (docs/benchmarks.md, session 18: 32 episodes of 64x8x64 about 1.5x faster on 2 workers of 2 cores).
    Grad mode is thread-local: each chunk runs in the caller's (inference mode: ``work`` enters it)."""
    workers = max(1, min(workers, batch))
    edges = [batch * i // workers for i in range(workers + 1)]
    chunks = [slice(start, stop) for start, stop in zip(edges, edges[1:])]
    if workers == 1:
        return [work(chunks[0])]
    grad_mode = torch.is_grad_enabled()
    results: list = [None] * workers
    errors: list[BaseException | None] = [None] * workers

    def run(index: int) -> None:
        try:
            with torch.set_grad_enabled(grad_mode):
                results[index] = work(chunks[index])
        except BaseException as error:  # re-raised in the caller's thread
            errors[index] = error

    threads = [threading.Thread(target=run, args=(index,), name=f"convexnorm-{index}") for index in range(1, workers)]
    for thread in threads:
        thread.start()
    run(0)
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results
