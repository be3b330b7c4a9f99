"""The interior-point method against Clarabel on random programs (issue 13's must-hold: objectives
within 1e-6 relative for the three losses).

Program i (seed + i) draws n in [20, 120] (``--max-n``), d in [2, 8], P in [8, 60], beta log-uniform in
[10^-2.5, 10^0.5] and a scale of X in [0.1, 10]; y = sin(2 x_1) + x_1 x_d + 0.1 noise (signs about
the median for the margin losses), whitened, P sampled patterns. Each program is solved alone by
``interior_point`` (default settings: tol 1e-7) and by Clarabel (``solve_convex_program``, tight
first). Prints the largest relative difference of the objectives and where, the programs whose
dual bound exceeds Clarabel's objective by more than 1e-9 relative (an unsound certificate), the programs
the method did not solve, and those whose Clarabel solution the native method's certified bound showed off the
optimum (``solve_convex_program`` then returns the native solution: no independent reference, left out). Large
beta makes the optimum W = 0 on some (11 of the 180 from seed 100).
``--candidate-rows``: solved as the estimators and the block solve them, on candidate rows where those are
at most half of n (solvers/candidate_rows.py, ``solve_relaxed``); also prints how many programs were so
and how many of those were solved whole again (an answer that violated a row left out).
Run: python benchmarks/bench_agreement.py [--loss squared|logistic|hinge] [--programs 60] [--seed 100]
[--candidate-rows] [--max-n 120]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np

from convexnorm.convex.patterns import sample_patterns
from convexnorm.convex.solve import solve_convex_program
from convexnorm.convex.whitening import whiten
from convexnorm.solvers.candidate_rows import candidate_count, solve_relaxed
from convexnorm.solvers.interior_point import InteriorPointSettings, interior_point
from convexnorm.solvers.problem import ConvexBNProblem
from convexnorm.solvers.threads import intra_op_threads


def random_program(seed: int, loss: str, max_n: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(U', patterns, y, beta) of program ``seed`` (the module docstring; n up to ``max_n``)."""
    rng = np.random.default_rng(seed)
    n, d, P = int(rng.integers(20, max_n + 1)), int(rng.integers(2, 9)), int(rng.integers(8, 61))
    beta = float(10 ** rng.uniform(-2.5, 0.5))
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10)
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, -1] + 0.1 * rng.standard_normal(n)
    if loss != "squared":
        y = np.where(y > np.median(y), 1.0, -1.0)
    U_prime = whiten(X).U_prime
    return U_prime, sample_patterns(U_prime, 4 * P, seed)[:P], y, beta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loss", default="squared", choices=["squared", "logistic", "hinge"])
    parser.add_argument("--programs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=100, help="program i uses seed + i")
    parser.add_argument("--candidate-rows", action="store_true", help="solve through solve_relaxed")
    parser.add_argument("--max-n", type=int, default=120, help="n drawn in [20, max_n]")
    args = parser.parse_args()
    worst, worst_seed, zeros, unsound, unsolved, replaced = 0.0, None, 0, [], [], []
    relaxed, solved_whole, missed = 0, 0, []
    handler = logging.Handler()
    handler.emit = lambda record: missed.append(record) if "solved whole" in record.getMessage() else None
    logging.getLogger("convexnorm").addHandler(handler)
    logging.getLogger("convexnorm").setLevel(logging.INFO)
    start = time.perf_counter()
    for seed in range(args.seed, args.seed + args.programs):
        U_prime, patterns, y, beta = random_program(seed, args.loss, args.max_n)
        problem = ConvexBNProblem.from_arrays([(U_prime, patterns, y)], beta, args.loss)
        with intra_op_threads(1):
            if args.candidate_rows:
                missed.clear()
                result = solve_relaxed(problem, InteriorPointSettings())
                relaxed += candidate_count(problem) is not None
                solved_whole += bool(missed)
            else:
                result = interior_point(problem)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clarabel = solve_convex_program(U_prime, patterns.astype(bool), y, beta, args.loss, "clarabel",
                                            "bench_agreement", tight_first=True)
        if "replaced" in clarabel.report:  # Clarabel's solution, off the optimum, replaced by the native one
            replaced.append(seed)
            continue
        reference = clarabel.objective
        if not bool(result.converged[0]):
            unsolved.append(seed)
            continue
        zeros += not bool(result.W.any())
        difference = abs(float(result.criteria.objective[0]) - reference) / reference
        if difference > worst:
            worst, worst_seed = difference, seed
        if float(result.criteria.lower_bound[0]) > reference * (1 + 1e-9):
            unsound.append(seed)
    print(f"{args.loss}: {args.programs} programs from seed {args.seed} ({zeros} with W = 0), largest relative "
          f"difference from Clarabel {worst:.1e} (seed {worst_seed}), unsound bounds {unsound}, not solved "
          f"{unsolved}, Clarabel's solution replaced by the native one (no independent reference) "
          f"{replaced} "
          f"({time.perf_counter() - start:.0f} s)"
          + (f"; on candidate rows {relaxed}, of them solved whole again {solved_whole}" if args.candidate_rows else ""))


if __name__ == "__main__":
    main()
