"""The native solver (solver='torch') vs Clarabel vs SCS vs Adam on the same convex program.

For each (n, r, gates): the first solver's optimum p (Clarabel's by default) is the
reference; each solver's wall time (ConvexBNRegressor.fit, with the polishing re-solve; each solver
in its own fresh process after an untimed small fit, unless --same-process) and relative objective
error are printed, with ratios to the reference from the same run. Adam (train_nonconvex, width = the
solution's neurons) runs until its objective is within 1e-4 of p or the step budget ends.
The issue's full grid is --sizes 200 1000 5000 --ranks 10 50 --gates 100 1000 (Clarabel
and SCS take hours per cell at n = 5000 on 2 CPU cores; the native solver alone about 37
minutes for the n = 1000 and 5000 cells); pass --device cuda for a GPU column. ``--loss logistic``
or ``hinge`` fits ConvexBNClassifier on the labels sign(y - median y) (Adam is then skipped).
Run: python benchmarks/bench_solvers.py [--sizes 200 1000] [--ranks 10] [--gates 100] [--solvers clarabel torch]
     [--loss squared|logistic|hinge] [--tol 1e-7]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import platform
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import cvxpy
import numpy as np
import torch

import convexnorm as cn
from _data import regression_problem


def timed_fit(estimator: str, settings: dict, extra: dict, X: np.ndarray, y: np.ndarray, warm_up: bool = True
              ) -> tuple[float, float, int, int]:
    """(seconds, objective, neurons, patterns) of one fit of ``cn.<estimator>``; ``warm_up``: after an
    untimed fit of the same solver on a small problem (the process's first-call costs: LAPACK, cvxpy)."""
    model_of = getattr(cn, estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if warm_up:
            model_of(**{**settings, "patterns": 20}, **extra).fit(X[:40, :3], y[:40])
        start = time.perf_counter()
        model = model_of(**settings, **extra).fit(X, y)
    return time.perf_counter() - start, float(model.objective_), int(model.n_neurons_), len(model.patterns_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--ranks", type=int, nargs="+", default=[10])
    parser.add_argument("--gates", type=int, nargs="+", default=[100])
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--device", default=None, help="also run solver='torch' on this device")
    parser.add_argument("--adam-steps", type=int, default=20_000)
    parser.add_argument("--loss", choices=["squared", "logistic", "hinge"], default="squared")
    parser.add_argument("--tol", type=float, default=1e-7, help="solver='torch': certified relative gap")
    parser.add_argument("--same-process", action="store_true",
                        help="fit every solver in this process, one after the other, without a warm-up (by "
                             "default each fits in its own fresh process after an untimed small fit: a hinge "
                             "fit at n = 1000 after Clarabel's in the same process took 11-12 s instead of 7)")
    parser.add_argument("--solvers", nargs="+", default=["clarabel", "scs", "torch"],
                        help="which of clarabel, scs, torch to run; the first one run is the reference "
                             "(ratios and errors are against it)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cvxpy {cvxpy.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"beta={args.beta}, loss={args.loss}, torch tol={args.tol:g}")
    chosen = [s for s in ("clarabel", "scs", "torch") if s in args.solvers]
    adam = args.loss == "squared"
    columns = chosen + ([f"torch-{args.device}"] if args.device else []) + (["adam"] if adam else [])
    print(f"{'n':>5} {'r':>3} {'P':>5} {'optimum':>10} " + " ".join(f"{c + ' s':>12} {'ratio':>6} {'err':>8}" for c in columns))
    for n, r, gates in itertools.product(args.sizes, args.ranks, args.gates):
        X, y = regression_problem(n, r)
        estimator = cn.ConvexBNRegressor
        settings = dict(beta=args.beta, patterns=gates, random_state=0)
        if not adam:
            estimator, y = cn.ConvexBNClassifier, np.where(y > np.median(y), 1, -1)
            settings["loss"] = args.loss
        runs = {"clarabel": {}, "scs": {"solver": "scs", "solver_options": {"eps_abs": 1e-6, "eps_rel": 1e-6}},
                "torch": {"solver": "torch", "solver_options": {"tol": args.tol}}}
        runs = {name: extra for name, extra in runs.items() if name in chosen}
        if args.device:
            runs[f"torch-{args.device}"] = {"solver": "torch", "solver_options": {"tol": args.tol, "device": args.device}}
        results = {}
        for name, extra in runs.items():
            if args.same_process:
                results[name] = timed_fit(estimator.__name__, settings, extra, X, y, warm_up=False)
                continue
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                results[name] = pool.submit(timed_fit, estimator.__name__, settings, extra, X, y).result()
        reference = results[chosen[0]]
        p, neurons = reference[1], reference[2]
        if adam:
            start = time.perf_counter()
            _, history = cn.train_nonconvex(X, y, args.beta, width=max(neurons, 1), steps=args.adam_steps,
                                            target=p * (1 + 1e-4))
            results["adam"] = (time.perf_counter() - start, min(history.objective), None, None)
        base = reference[0]
        cells = " ".join(f"{t:12.2f} {t / base:6.2f} {(v - p) / p:8.1e}" for t, v, *_ in (results[c] for c in columns))
        print(f"{n:5d} {r:3d} {reference[3]:5d} {p:10.4f} {cells}", flush=True)


if __name__ == "__main__":
    main()
