"""Convex BN-ReLU training: Clarabel vs SCS vs Adam (train_nonconvex) on the same problem.

For each n: the convex program over the same sampled patterns is solved by Clarabel
(the reference optimum p) and by SCS; Adam trains the non-convex network of the same
width until its objective is within 1% of p (or the step budget ends). Times are
wall-clock seconds of the user-facing calls; ratios are to Clarabel in the same run.
Run: python benchmarks/bench_convex.py [--sizes 100 500 2000] [--d 10] [--gates 100]
"""

from __future__ import annotations

import argparse
import platform
import time

import cvxpy
import torch

import convexnorm as cn
from _data import regression_problem


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--gates", type=int, default=100)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--adam-steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cvxpy {cvxpy.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads; d={args.d}, {args.gates} sampled gates, beta={args.beta}")
    print(f"{'n':>5} {'P':>4} {'optimum p':>10} {'clarabel s':>10} {'scs s':>8} {'scs/clar':>8} {'scs err':>8} "
          f"{'adam s':>8} {'adam/clar':>9} {'adam best/p':>11} {'adam steps':>10}")
    for n in args.sizes:
        X, y = regression_problem(n, args.d, args.seed)
        settings = dict(beta=args.beta, patterns=args.gates, random_state=args.seed)
        clarabel, t_clarabel = timed(lambda: cn.ConvexBNRegressor(**settings).fit(X, y))
        scs, t_scs = timed(lambda: cn.ConvexBNRegressor(**settings, solver="scs",
                                                        solver_options={"eps_abs": 1e-4, "eps_rel": 1e-4}).fit(X, y))
        p = clarabel.objective_
        (_, history), t_adam = timed(lambda: cn.train_nonconvex(X, y, args.beta, width=max(clarabel.n_neurons_, 1),
                                                                lr=1e-2, steps=args.adam_steps, seed=args.seed,
                                                                target=1.01 * p))
        print(f"{n:5d} {len(clarabel.patterns_):4d} {p:10.4f} {t_clarabel:10.2f} {t_scs:8.2f} {t_scs / t_clarabel:8.2f} "
              f"{abs(scs.objective_ - p) / p:8.1e} {t_adam:8.2f} {t_adam / t_clarabel:9.2f} "
              f"{min(history.objective) / p:11.4f} {len(history.objective) - 1:10d}", flush=True)


if __name__ == "__main__":
    main()
