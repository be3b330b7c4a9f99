"""torch's intra-op threads during a native solve, chosen per iteration where asked, and episodes
solved in worker threads."""

from __future__ import annotations

import contextlib
import os
import threading
from time import perf_counter
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")

#: solver_options["threads"] value: one thread or all cores, chosen per iteration (``AdaptiveThreads``).
AUTO = "auto"


@contextlib.contextmanager
def intra_op_threads(threads: int | str | None) -> Iterator[None]:
    """torch.set_num_threads(threads) inside the block, restored afterwards (nothing for None; AUTO:
    one thread, for work that is not chosen per iteration). One thread is the native solvers'
    fixed choice: on a loaded 2-core machine torch's default threads collapsed the interior-point
    method 125x (docs/benchmarks.md, bench_threads.py)."""
    if threads == AUTO:
        threads = 1
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def available_cores() -> int:
    """The cores this process may use (its CPU affinity where the platform tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: AUTO's most worker threads. The workers share Python's GIL, which each holds between its torch operations,
#: so more of them than cores, or than the GIL's share of the work allows, wait on each other: 32 episodes of
#: 64x8x64 on a 2-core machine took 1.70 / 1.27 / 1.41 / 1.71 / 2.99 s on 1 / 2 / 3 / 4 / 8 workers
#: (docs/benchmarks.md, session 26). Two is what was measured to help; more cores are untried.
AUTO_WORKERS = 2


def chunk_workers(workers: int | str, batch: int, device: torch.device) -> int:
    """The worker threads ``over_chunks`` splits ``batch`` programs over: ``workers`` (an integer), or for
    AUTO one per core this process may use on the CPU, at most AUTO_WORKERS (one on other devices, whose
    operations queue on one stream), at most one per program."""
    if workers == AUTO:
        workers = min(available_cores(), AUTO_WORKERS) if device.type == "cpu" else 1
    return max(1, min(workers, batch))


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


@contextlib.contextmanager
def solver_threads(threads: int | str | None, device: torch.device) -> Iterator[Callable[[], None] | None]:
    """``intra_op_threads(threads)`` inside the block, or for AUTO on the CPU an ``AdaptiveThreads``;
    yields the per-iteration call for ``interior_point`` (None where nothing is chosen per iteration)."""
    if threads == AUTO and device.type == "cpu":
        with AdaptiveThreads() as pace:
            yield pace
    else:
        with intra_op_threads(threads):
            yield None


def _read(path: str) -> bytes:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return os.read(descriptor, 4096)
    finally:
        os.close(descriptor)


def others_running() -> int | None:
    """Runnable tasks of other processes at this moment: /proc/loadavg's count of running tasks
    less this process's running threads (Linux); None where /proc cannot tell."""
    try:
        running = int(_read("/proc/loadavg").split()[3].split(b"/")[0])
        if running <= 1:  # this thread, which is reading
            return 0
        own = 0
        for task in os.listdir("/proc/self/task"):
            stat = _read(f"/proc/self/task/{task}/stat")
            own += stat[stat.rindex(b")") + 2] == ord("R")  # the state follows the command's ") "
    except (OSError, ValueError, IndexError):
        return None
    return max(running - own, 0)


class AdaptiveThreads:
    """torch's intra-op threads per interior-point iteration, one or ``most`` (default and at most: the cores
    this process may use, whatever torch's setting: the block pins its own work to one thread around the
    solve), by the measured seconds of the latest iteration at each: on an idle 2-core machine two threads
    solved n = 1000, r = 10, 1000 patterns 1.75x faster than one, but with one busy process 1.4x slower and
    with two 3x (at n = 200, 100 patterns: 70x; docs/benchmarks.md, session 24). So ``most`` runs only
    while no other process is running (``others_running``): from the start where the machine is idle, the
    other count at the second iteration, then the slower of the two again every ``probe_every`` iterations
    (the interval doubling each time it stays slower); one thread where the load cannot be read. A context
    manager (torch's setting restored on exit); call it at the start of every iteration."""

    def __init__(self, most: int | None = None, probe_every: int = 4) -> None:
        self.cores = available_cores()
        self.most = self.cores if most is None else min(most, self.cores)
        self.seconds: dict[int, float] = {}
        self.interval = self.countdown = probe_every
        self.current, self.probing, self.started = 1, False, None

    def __enter__(self) -> "AdaptiveThreads":
        """``most`` threads from the start (the initial point, the first iteration) where the machine is idle."""
        self.previous = torch.get_num_threads()
        self.current, self.started = (self.most if self._idle() else 1), None
        torch.set_num_threads(self.current)
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.previous)

    def _record(self, seconds: float) -> None:
        """The latest iteration's seconds at the current count; a probe that lost doubles the interval."""
        other = 1 if self.current == self.most else self.most
        if self.probing and other in self.seconds and seconds >= self.seconds[other]:
            self.interval *= 2
            self.countdown = self.interval
        self.seconds[self.current] = seconds

    def _idle(self) -> bool:
        """Whether ``most`` threads may run: no more other running tasks than the cores left to them."""
        if self.most == 1:
            return False
        others = others_running()
        return others is not None and others <= self.cores - self.most

    def _choice(self) -> int:
        """The count for the next iteration; the load is read only before running ``most`` (8 us where
        nothing else runs, 0.15 ms otherwise)."""
        self.probing = False
        if self.current not in self.seconds:  # the first iteration
            choice = self.current
        elif len(self.seconds) == 1:
            self.probing = True
            choice = self.most if self.current == 1 else 1
        else:
            faster = min(self.seconds, key=self.seconds.__getitem__)
            self.countdown -= 1
            choice = faster
            if self.countdown <= 0:
                self.countdown, self.probing = self.interval, True
                choice = self.most if faster == 1 else 1
        if choice == self.most and not self._idle():
            self.probing = False
            return 1
        return choice

    def __call__(self) -> None:
        if self.started is not None:
            self._record(perf_counter() - self.started)
        choice = self._choice()
        if choice != self.current:
            torch.set_num_threads(choice)
            self.current = choice
        self.started = perf_counter()
