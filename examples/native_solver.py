"""Certified convex training with the native PyTorch solver, against Clarabel, on diabetes.

scikit-learn's diabetes data (n = 442, d = 10, standardized target), 400 sampled
arrangement patterns, beta = 0.5: the same program solved by `solver="torch"` (the
primal-dual interior-point method) and by Clarabel through cvxpy. Prints the time,
objective, certified relative duality gap and constraint violation of each, checks that
the recovered torch network attains the native objective, and compares test R^2.

Run: python examples/native_solver.py  (40 s on 2 CPU cores, nearly all of it Clarabel).
"""

from __future__ import annotations

import logging

import time

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

import convexnorm as cn

BETA, PATTERNS, SEED = 0.5, 400, 0


def _progress_lines() -> None:
    """The library logs each stage (grow rounds, training runs) at INFO; show those lines."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def main() -> None:
    _progress_lines()
    X, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=SEED)
    print(f"diabetes: {len(X_train)} training / {len(X_test)} test samples, {X.shape[1]} features, "
          f"{PATTERNS} patterns, beta {BETA}")
    models = {}
    for solver in ("torch", "clarabel"):
        start = time.perf_counter()
        model = cn.ConvexBNRegressor(beta=BETA, patterns=PATTERNS, random_state=SEED, solver=solver).fit(X_train, y_train)
        seconds = time.perf_counter() - start
        models[solver] = model
        report = model.solver_report_[0]
        details = (f"certified gap {report['relative_gap']:.1e}, violation {report['violation']:.1e}, "
                   f"{report['iterations']} iterations" if report["solver"] == "torch" else
                   f"status {report['status']}, certified gap {report['relative_gap']:.1e}")
        if "replaced" in report:
            details += f"; {report['replaced']}'s solution replaced by the native one"
        print(f"{solver:>8}: {seconds:6.2f} s  objective {model.objective_:.6f}  {model.n_neurons_} neurons  "
              f"test R^2 {model.score(X_test, y_test):.4f}  ({details})")
    native, reference = models["torch"], models["clarabel"]
    print(f"relative objective difference: {(native.objective_ - reference.objective_) / reference.objective_:+.1e}")
    recovered = cn.nonconvex_objective(native.to_module(), X_train, y_train, BETA).item()
    print(f"recovered torch network's objective: {recovered:.6f} (native {native.objective_:.6f})")
    gap = np.abs(native.predict(X_test) - reference.predict(X_test)).max()
    print(f"largest test prediction difference between the two solutions: {gap:.1e}")


if __name__ == "__main__":
    main()
