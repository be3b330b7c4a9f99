"""solver_options={"threads": "auto"}: torch's intra-op threads chosen per interior-point iteration
(convexnorm/solvers/threads.py, ``AdaptiveThreads``)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import convexnorm as cn
from convexnorm.nn import ConvexBNReLU
from convexnorm.solvers import threads


class _Clock:
    """perf_counter for AdaptiveThreads: each iteration lasts seconds[threads] of torch's current setting."""

    def __init__(self, seconds: dict[int, float]) -> None:
        self.now, self.seconds = 0.0, seconds

    def __call__(self) -> float:
        return self.now

    def iterate(self) -> None:
        self.now += self.seconds[torch.get_num_threads()]


def _run(monkeypatch, seconds: dict[int, float], others: int | None, iterations: int = 30,
         most: int = 2) -> list[int]:
    """The thread counts of ``iterations`` simulated iterations under AdaptiveThreads(most)."""
    clock = _Clock(seconds)
    monkeypatch.setattr(threads, "perf_counter", clock)
    monkeypatch.setattr(threads, "others_running", lambda: others)
    chosen = []
    pace = threads.AdaptiveThreads(most)
    pace.cores = max(pace.cores, most)
    pace.most = most
    with pace:
        for _ in range(iterations):
            pace()
            chosen.append(torch.get_num_threads())
            clock.iterate()
    return chosen


@pytest.fixture
def restored_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_auto_settles_on_the_faster_count_and_restores_torchs_setting(monkeypatch, restored_threads) -> None:
    """Idle machine: all cores from the start, then the faster count on all iterations but the probes of
    the other, whose interval doubles each time it stays slower; torch's setting comes back on exit."""
    torch.set_num_threads(3)
    chosen = _run(monkeypatch, {1: 1.0, 2: 0.5}, others=0)
    assert torch.get_num_threads() == 3
    # two threads from the start; one tried at the second iteration, then 8 and 16 iterations apart
    assert [i for i, count in enumerate(chosen) if count == 1] == [1, 9, 25]
    chosen = _run(monkeypatch, {1: 0.5, 2: 1.0}, others=0)
    # one thread from the second iteration on, two tried again 4, 8 and 16 iterations apart
    assert [i for i, count in enumerate(chosen) if count == 2] == [0, 5, 13, 29]


def test_auto_keeps_one_thread_under_load_or_without_a_load_reading(monkeypatch, restored_threads) -> None:
    """Another running process (the machine's cores taken) or no /proc: never more than one thread,
    even where more would be faster."""
    for others in (1, None):
        assert set(_run(monkeypatch, {1: 1.0, 2: 0.1}, others=others)) == {1}
    assert set(_run(monkeypatch, {1: 1.0, 2: 0.5}, others=0, most=1)) == {1}


def _spin(stop) -> None:
    while not stop.is_set():
        pass


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="reads Linux's /proc")
def test_others_running_sees_a_busy_process() -> None:
    """On Linux an integer >= 0 (this process's own running threads not counted), at least one
    while another process spins."""
    assert isinstance(threads.others_running(), int) and threads.others_running() >= 0
    stop = multiprocessing.Event()
    spinner = multiprocessing.Process(target=_spin, args=(stop,))
    spinner.start()
    try:
        time.sleep(0.2)
        readings = []
        for _ in range(20):
            readings.append(threads.others_running())
            time.sleep(0.01)
    finally:
        stop.set()
        spinner.join()
    assert max(readings) >= 1


def _data(n: int = 60, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)


def test_auto_is_the_estimators_default_and_solves_the_same_program(restored_threads) -> None:
    """threads="auto" (the default), 1 and 2 give the same objective to float64's rounding; torch's
    setting is unchanged afterwards."""
    X, y = _data()
    fits = [cn.ConvexBNRegressor(beta=0.1, patterns=30, random_state=0, solver="torch",
                                 solver_options=None if count is None else {"threads": count}).fit(X, y)
            for count in (None, "auto", 1, 2)]
    assert torch.get_num_threads() == restored_threads
    objectives = [fit.objective_ for fit in fits]
    assert max(objectives) - min(objectives) <= 1e-10 * objectives[0]
    assert len({fit.solver_report_[0]["iterations"] for fit in fits}) == 1


def test_bad_threads_value_names_the_owner() -> None:
    X, y = _data()
    for value in ("fast", 0, 1.5):
        with pytest.raises(ValueError, match=r"ConvexBNRegressor: solver_options\['threads'\] must be an integer "
                                             r">= 1, None or 'auto'"):
            cn.ConvexBNRegressor(beta=0.1, patterns=10, solver="torch", solver_options={"threads": value}).fit(X, y)


@pytest.mark.parametrize("workers", [1, 2])
def test_block_takes_auto(workers: int, restored_threads) -> None:
    """The block with threads="auto" (one worker: chosen per iteration; more: one thread each) gives the
    predictions and gradients of threads=1."""
    generator = torch.Generator().manual_seed(0)
    H = torch.randn(2, 24, 3, dtype=torch.float64, generator=generator)
    y = torch.randn(2, 24, dtype=torch.float64, generator=generator)
    outputs = []
    for count in (1, "auto"):
        block = ConvexBNReLU(3, beta=0.1, n_patterns=8, seed=0, solver="torch",
                             solver_options={"threads": count, "workers": workers})
        leaf = H.clone().requires_grad_()
        predictions = block(leaf, y)
        predictions.sum().backward()
        outputs.append((predictions.detach(), leaf.grad))
    assert torch.get_num_threads() == restored_threads
    for first, second in zip(*outputs):
        assert torch.allclose(first, second, rtol=1e-8, atol=1e-10)


def test_block_defaults_to_one_thread_and_repeats_exactly() -> None:
    """The block keeps one thread unless asked ("auto" picks its count by timing, so two forwards of one
    batch could round differently): two forwards of the same batch give the same bits."""
    generator = torch.Generator().manual_seed(1)
    H = torch.randn(40, 4, dtype=torch.float64, generator=generator)
    y = torch.sign(torch.randn(40, dtype=torch.float64, generator=generator))
    block = ConvexBNReLU(4, beta=0.05, n_patterns=16, loss="hinge", solver="torch")
    assert block._native_settings()[1] == 1
    assert torch.equal(block(H, y), block(H, y))


def test_chunk_workers_auto_takes_one_per_core_on_the_cpu(monkeypatch) -> None:
    """workers="auto" (the block's default): one worker per core this process may use on the CPU, at most
    AUTO_WORKERS, one on other devices, at most one per program; an integer is kept, at most one per program."""
    assert 1 <= threads.available_cores() <= (os.cpu_count() or 1)
    monkeypatch.setattr(threads, "AUTO_WORKERS", 3)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [threads.chunk_workers("auto", batch, cpu) for batch in (1, 2, 3, 32)] == [1, 2, 3, 3]
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert threads.chunk_workers("auto", 32, cpu) == 2
    assert threads.chunk_workers("auto", 32, cuda) == 1
    assert [threads.chunk_workers(2, batch, device) for batch in (1, 5) for device in (cpu, cuda)] == [1, 1, 2, 2]


def test_block_episodes_split_over_the_cores_by_default_and_repeat_exactly(monkeypatch) -> None:
    """Episodes run in one worker per core by default (each on one intra-op thread), and two forwards of
    the same batch give the same bits."""
    import threading

    import convexnorm.solvers.implicit as implicit

    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    seen = set()
    solve_relaxed = implicit.solve_relaxed

    def recorded(*args, **kwargs):
        seen.add((threading.get_ident(), torch.get_num_threads()))
        return solve_relaxed(*args, **kwargs)

    monkeypatch.setattr(implicit, "solve_relaxed", recorded)
    generator = torch.Generator().manual_seed(2)
    H = torch.randn(3, 30, 3, dtype=torch.float64, generator=generator)
    y = torch.randn(3, 30, dtype=torch.float64, generator=generator)
    block = ConvexBNReLU(3, beta=0.1, n_patterns=8, solver="torch")
    first = block(H, y)
    assert len({ident for ident, _ in seen}) == 2 and {count for _, count in seen} == {1}
    assert torch.equal(first, block(H, y))
