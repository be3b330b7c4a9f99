"""Clarabel's solutions certified over their patterns (convex/solve.py, ``_certified``), at small beta.

For each loss, 40 x 4 and 120 x 6 data (the benchmarks' regression data, seeds 0 and 1; labels above the median
for the margin losses), 30 sampled patterns and beta from 1e-6 to 1e-1: the estimator's fit with Clarabel as it
was (``CERTIFIED_RTOL`` set to infinity: no check; where Clarabel fails, "Clarabel failed": the native method
solves such a program, and before session 36 SCS did) and as it is, against the certified lower bound of
``solver="torch"`` on the same program. Prints, per program, how far each lies above that bound (relative), the
solver whose solution the fit returns, its reported gap, how many native solves the checked fit took and the fits'
times. ``--pooled``: convolutional programs (ConvexBNConvRegressor, 30 and 60 signals of 16 values, kernel 3, seeds
0 and 1, 30 patterns), which the native method does not solve: the gap at the solution's own multipliers y - f
against the reported one (at the solver's multipliers, session 37).
Run: python benchmarks/bench_cvxpy_certified.py [--losses squared logistic hinge] [--pooled]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import cvxpy
import numpy as np
import torch

import convexnorm as cn
from convexnorm.convex import solve
from convexnorm.convex.conv import patch_pooling
from convexnorm.solvers import native
from _data import regression_problem

BETAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def fitted(estimator: type, kwargs: dict, X: np.ndarray, y: np.ndarray) -> tuple[object, float, str | None]:
    """(model or None, seconds, error) of one fit."""
    start = time.perf_counter()
    try:
        return estimator(**kwargs).fit(X, y), time.perf_counter() - start, None
    except cn.SolverError as error:
        return None, time.perf_counter() - start, type(error).__name__


class NativeSolves:
    """Counts the native method's solves (``native.solve_native_program``) while installed."""

    def __init__(self) -> None:
        self.count, self._solve = 0, native.solve_native_program

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self._solve(*args, **kwargs)


def pooled() -> None:
    """The pooled programs' gaps at their own multipliers and as reported (``--pooled``)."""
    for n in (30, 60):
        for seed in (0, 1):
            rng = np.random.RandomState(seed)
            X = rng.randn(n, 16)
            y = np.sin(X[:, 3]) + X[:, 5] * X[:, 8]
            for beta in BETAS:
                start = time.perf_counter()
                model = cn.ConvexBNConvRegressor(kernel_size=3, beta=beta, patterns=30, random_state=seed).fit(X, y)
                seconds = time.perf_counter() - start
                report = model.solver_report_
                report = report[0] if isinstance(report, list) else report
                pool = patch_pooling(n, model.n_positions_)
                own = solve.certify_solution(model.whitening_.U_prime, y, model.solution_, beta, "squared", "exact",
                                             pool=pool, all_patterns=model.patterns_)
                print(f"pooled   {n}x16 seed {seed} beta {beta:g}: gap at own multipliers "
                      f"{own.gap / model.objective_:9.2e}, reported {report['relative_gap']:9.2e} ({seconds:.2f} s)",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--losses", nargs="+", default=["squared", "logistic", "hinge"])
    parser.add_argument("--pooled", action="store_true", help="also the convolutional programs")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cvxpy {cvxpy.__version__}, {platform.machine()}; columns: relative distance "
          "above the native method's certified lower bound, unchecked Clarabel (s) -> checked fit (solver, "
          "reported gap, s)")
    warnings.simplefilter("ignore")
    checked_rtol = solve.CERTIFIED_RTOL
    for loss in args.losses:
        off, fixed = 0, 0
        for n, d in ((40, 4), (120, 6)):
            for seed in (0, 1):
                X, y = regression_problem(n, d, seed)
                estimator = cn.ConvexBNRegressor if loss == "squared" else cn.ConvexBNClassifier
                if loss != "squared":
                    y = np.where(y > np.median(y), 1, -1)
                for beta in BETAS:
                    kwargs = dict(beta=beta, patterns=30, random_state=seed,
                                  **({} if loss == "squared" else {"loss": loss}))
                    bound = estimator(**kwargs, solver="torch").fit(X, y).solver_report_[0]["lower_bound"]
                    solve.CERTIFIED_RTOL = float("inf")
                    before, before_s, before_error = fitted(estimator, kwargs, X, y)
                    solve.CERTIFIED_RTOL = checked_rtol
                    if before is not None and "replaced" in before.solver_report_[0]:
                        # unchecked, only a program Clarabel failed is replaced (by the native method)
                        before, before_error = None, "Clarabel failed"
                    native.solve_native_program = counted = NativeSolves()
                    after, after_s, after_error = fitted(estimator, kwargs, X, y)
                    native.solve_native_program = counted._solve
                    above = None if before is None else (before.objective_ - bound) / abs(bound)
                    now = None if after is None else (after.objective_ - bound) / abs(bound)
                    report = {} if after is None else after.solver_report_[0]
                    bad = before is None or above > 1e-6
                    off += bad
                    fixed += bad and now is not None and now <= 1e-6
                    print(f"{loss:8s} {n}x{d} seed {seed} beta {beta:g}: "
                          f"{before_error or f'{above:9.2e}'} ({before_s:.2f} s) -> "
                          f"{after_error or f'{now:9.2e}'} ({report.get('solver')}, gap "
                          f"{report.get('relative_gap', float('nan')):.1e}, {counted.count} native, {after_s:.2f} s)"
                          + ("  <- was off" if bad else ""), flush=True)
        print(f"{loss}: {off} of {4 * len(BETAS)} unchecked Clarabel fits failed or lay above 1e-6; "
              f"{fixed} of them now within 1e-6", flush=True)
    if args.pooled:
        pooled()


if __name__ == "__main__":
    main()
