"""One entry point for every backend that solves the convex BN-ReLU program over given patterns.

``solve_program(..., solver=name)`` dispatches on ``SOLVERS``: "clarabel" and "scs" through cvxpy
(solvers/cvxpy_backend.py), "torch" through the batched interior-point method
(solvers/native.py). Each backend is a function with the signature of ``solve_program`` after
``solver`` that returns a ``ProgramSolution``; a backend is added by adding it to ``SOLVERS``.
(The differentiable paths, cvxpylayers and the interior-point method's implicit backward, live
in solvers/cvxpylayers_backend.py and solvers/implicit.py.)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

#: solver name -> (module, function) of its backend; modules are imported on first use.
SOLVERS = {
    "clarabel": ("convexnorm.solvers.cvxpy_backend", "solve_cvxpy"),
    "scs": ("convexnorm.solvers.cvxpy_backend", "solve_cvxpy"),
    "torch": ("convexnorm.solvers.native", "solve_native_program"),
}


@dataclass(frozen=True)
class ProgramSolution:
    """One solve: S and T (k, P) of the patterns solved over, the backend's report (cvxpy's
    status, or the interior-point method's measured criteria) and the certificate's lam (one per sample) from the
    solver's multipliers: for the hinge loss y * alpha of the margin constraints; from the cvxpy backends also
    for the squared loss, y - f from those of F = output (solvers/cvxpy_backend.py)."""

    S: np.ndarray
    T: np.ndarray
    report: dict = field(default_factory=dict)
    dual: np.ndarray | None = None


def check_solver(solver: object, owner: str) -> str:
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"{owner}: solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    return solver


def solve_program(U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float, loss: str, solver: str,
                  owner: str, solver_options: dict | None = None, pool: np.ndarray | None = None,
                  tight: bool = True) -> ProgramSolution:
    """Solve min loss(f) + beta sum ||.|| over ``patterns`` (P, n) on the whitened rows U'
    (summed by ``pool`` for convolutional programs) with the named backend (docs/math.md,
    section 3). ``tight``: the cvxpy backends' tight first attempt (Clarabel)."""
    module, name = SOLVERS[check_solver(solver, owner)]
    backend = getattr(importlib.import_module(module), name)
    return backend(U_prime, patterns, y, beta, loss, solver, owner, solver_options, pool, tight)
