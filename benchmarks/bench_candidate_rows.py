"""Candidate rows against the whole program, in one process, alternating (issue 13).

The native solver keeps 12 k of a pattern's n orthant rows where that is at most half of them
(solvers/candidate_rows.py). For each size this times the solve with them and with every row
(``ROWS_PER_WIDTH`` set past n), alternating --repeats times on one thread, and prints the medians,
their ratio, the iterations and how far apart the answers are: the estimators' ``solve_native``
on the benchmarks' data (rows "fit"), and ConvexBNReLU(d, beta=0.05, n_patterns=P) forward +
backward on B episodes (rows "block", gradients in H compared).
Run: python benchmarks/bench_candidate_rows.py [--fits 150x3x60 300x5x100 500x3x200 600x5x300]
[--blocks 1x256x4x64 1x256x8x64 8x256x8x64 1x512x8x128] [--repeats 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from _data import regression_problem  # benchmarks/ is on the path when run as a script
from bench_block_head import data
from convexnorm.convex.patterns import arrangement_patterns
from convexnorm.convex.whitening import whiten
from convexnorm.nn import ConvexBNReLU
from convexnorm.solvers import candidate_rows
from convexnorm.solvers.native import native_settings, solve_native
from convexnorm.solvers.problem import ConvexBNProblem

WHOLE = 10**9


def alternate(run: Callable[[], tuple], repeats: int) -> dict[int, tuple[float, tuple]]:
    """{rows per width: (median seconds, the last run's answer)} for candidate rows and the whole program."""
    times: dict[int, list[float]] = {candidate_rows.ROWS_PER_WIDTH: [], WHOLE: []}
    answers = {}
    default = candidate_rows.ROWS_PER_WIDTH
    try:
        for _ in range(repeats):
            for rows in times:
                candidate_rows.ROWS_PER_WIDTH = rows
                start = time.perf_counter()
                answers[rows] = run()
                times[rows].append(time.perf_counter() - start)
    finally:
        candidate_rows.ROWS_PER_WIDTH = default
    return {rows: (statistics.median(seconds), answers[rows]) for rows, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fits", nargs="+", default=["150x3x60", "300x5x100", "500x3x200", "600x5x300"],
                        help="n x r x gates of solve_native (squared loss, beta 0.1, tol 1e-6)")
    parser.add_argument("--blocks", nargs="+", default=["1x256x4x64", "1x256x8x64", "8x256x8x64", "1x512x8x128"],
                        help="B x n x d x P of the block")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings, _ = native_settings({}, "bench", tol=1e-6)
    print(f"torch {torch.__version__}, one thread, medians of {args.repeats} alternating runs")
    print(f"{'case':<18} {'kept':>5} {'candidates s':>13} {'whole s':>8} {'ratio':>6} {'iterations':>11} {'apart':>8}")
    for size in args.fits:
        n, r, gates = (int(v) for v in size.split("x"))
        X, y = regression_problem(n, r)
        U = whiten(X).U_prime
        problem = ConvexBNProblem.from_arrays([(U, arrangement_patterns(U, gates, seed=0), y)], 0.1, "squared")
        found = alternate(lambda: solve_native(problem, settings, 1), args.repeats)
        (fast, ours), (slow, theirs) = found[candidate_rows.ROWS_PER_WIDTH], found[WHOLE]
        kept = candidate_rows.candidate_count(problem) or n
        apart = float((ours.criteria.objective - theirs.criteria.objective).abs() / theirs.criteria.objective.abs())
        print(f"{'fit ' + size:<18} {kept:5d} {fast:13.3f} {slow:8.3f} {slow / fast:6.2f} "
              f"{int(ours.iterations[0]):5d}/{int(theirs.iterations[0]):<5d} {apart:8.1e}", flush=True)
    for size in args.blocks:
        B, n, d, P = (int(v) for v in size.split("x"))
        H, y = data(B, n, d)
        block = ConvexBNReLU(d, beta=0.05, n_patterns=P, solver="torch")

        def step() -> tuple:
            H_var = H.clone().requires_grad_(True)
            block(H_var, y).sum().backward()
            return (H_var.grad,)

        found = alternate(step, args.repeats)
        (fast, (ours,)), (slow, (theirs,)) = found[candidate_rows.ROWS_PER_WIDTH], found[WHOLE]
        kept = candidate_rows.ROWS_PER_WIDTH * (d + 1)
        apart = float((ours - theirs).abs().max() / theirs.abs().max())
        print(f"{'block ' + size:<18} {kept if 2 * kept <= n else n:5d} {fast:13.3f} {slow:8.3f} {slow / fast:6.2f} "
              f"{'':>11} {apart:8.1e}", flush=True)


if __name__ == "__main__":
    main()
