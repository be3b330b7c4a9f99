"""The native solver vs pyscnn (the reference library for convex two-layer ReLU training).

Both solve the same program on the whitened data U' (bias column built in), with the
same gate vectors: pyscnn's ConvexReLU + NeuronGL1(lam) + AL minimizes
||f - y||^2 / (2n) + lam sum ||.||, i.e. ours divided by n, so lam = beta / n. pyscnn's
solution is re-evaluated with our objective (ReLU predictions) and constraint violation.
Needs pyscnn, which is not a dependency: in a separate environment,
  pip install --no-deps pyscnn==0.0.10 linalg_backends opt_einsum
(pyscnn never imports torchvision). Run: python benchmarks/bench_pyscnn.py [--sizes 200 1000]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from scnn.metrics import Metrics
from scnn.models import ConvexReLU
from scnn.optimize import optimize_model
from scnn.regularizers import NeuronGL1
from scnn.solvers import AL

import convexnorm as cn
from _data import regression_problem
from convexnorm.solvers.native import solve_native
from convexnorm.solvers.problem import ConvexBNProblem
from convexnorm.solvers.interior_point import InteriorPointSettings


def evaluate(U_prime: np.ndarray, gates: np.ndarray, V: np.ndarray, Wt: np.ndarray, y: np.ndarray, beta: float):
    """Our objective (ReLU predictions) and relative cone violation of groups v_i, w_i (rows);
    ``gates`` (r', P) are gate vectors, or boolean patterns (n, P) given directly."""
    D = gates if gates.dtype == bool else U_prime @ gates >= 0
    Zv, Zw = U_prime @ V.T, U_prime @ Wt.T
    f = np.maximum(Zv, 0).sum(1) - np.maximum(Zw, 0).sum(1)
    objective = 0.5 * np.sum((f - y) ** 2) + beta * (np.linalg.norm(V, axis=1).sum() + np.linalg.norm(Wt, axis=1).sum())
    signs = np.where(D, 1.0, -1.0)
    scale = max(np.linalg.norm(Zv, axis=0).max(), np.linalg.norm(Zw, axis=0).max(), 1e-300)
    violation = max(np.maximum(-signs * Zv, 0).max(), np.maximum(-signs * Zw, 0).max()) / scale
    return objective, violation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--gates", type=int, default=100)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--pyscnn-tol", type=float, default=1e-6, help="pyscnn AL tol and constraint_tol (its default 1e-6)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d={args.d}, {args.gates} gates, beta={args.beta}")
    print(f"{'n':>5} {'native s':>9} {'native obj':>12} {'viol':>8} {'pyscnn s':>9} {'pyscnn obj':>12} {'viol':>8} "
          f"{'pyscnn/native':>13}")
    for n in args.sizes:
        X, y = regression_problem(n, args.d)
        U_prime = cn.whiten(X).U_prime
        gates = np.random.default_rng(1).standard_normal((U_prime.shape[1], args.gates))
        patterns = cn.arrangement_patterns(U_prime, (U_prime @ gates >= 0).T)  # distinct, nonzero: same program
        problem = ConvexBNProblem.from_arrays([(U_prime, patterns, y)], args.beta, "squared")
        start = time.perf_counter()
        result = solve_native(problem, InteriorPointSettings(tol=1e-6))
        t_native = time.perf_counter() - start
        W, P = result.W[0].T.numpy(), patterns.shape[0]
        native = evaluate(U_prime, patterns.T, W[:, :P].T, W[:, P:].T, y, args.beta)
        model = ConvexReLU(gates, c=1, bias=False)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            solver = AL(model, tol=args.pyscnn_tol, constraint_tol=args.pyscnn_tol)
            model, _ = optimize_model(model, solver, Metrics(), U_prime, y[:, None],
                                      regularizer=NeuronGL1(args.beta / n), unitize_data=False, dtype="float64",
                                      return_convex=True)
        t_pyscnn = time.perf_counter() - start
        V, Wt = (np.asarray(p)[0] for p in model.parameters)
        theirs = evaluate(U_prime, gates, V, Wt, y, args.beta)
        print(f"{n:5d} {t_native:9.2f} {native[0]:12.6f} {native[1]:8.1e} {t_pyscnn:9.2f} {theirs[0]:12.6f} "
              f"{theirs[1]:8.1e} {t_pyscnn / t_native:13.2f}", flush=True)


if __name__ == "__main__":
    main()
