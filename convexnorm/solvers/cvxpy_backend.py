"""solver="clarabel" | "scs": the convex BN-ReLU program through cvxpy, with retries.

The program comes from ``convexnorm.programs.convex_bn_program``; its Parameters are treated as
constants (``ignore_dpp``: cvxpy's parametric canonicalization of this program grows as n P^2 r'
and suits only small layers). Clarabel is asked for TIGHT_CLARABEL first; where it reports
'optimal_inaccurate' or fails, the program is solved again at Clarabel's defaults, then with SCS.
"""

from __future__ import annotations

import logging
import warnings

import cvxpy as cp
import numpy as np

from convexnorm.errors import SolverError
from convexnorm.programs import convex_bn_program
from convexnorm.solvers.backends import ProgramSolution

logger = logging.getLogger("convexnorm")

#: cvxpy solver of each name and its defaults.
CVXPY_SOLVERS = {
    "clarabel": (cp.CLARABEL, {}),
    "scs": (cp.SCS, {"eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 200_000}),
}
#: The final (polishing) Clarabel solve asks for 1e-10 (at Clarabel's 1e-8 default the hinge
#: program's objective moved by up to 1e-6 relative between equivalent solves); the first solve,
#: which only finds the active patterns, runs at Clarabel's defaults (1e-10 throughout made
#: examples/implicit_regularization.py 2.7x slower).
TIGHT_CLARABEL = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}


def solve_cvxpy(U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float, loss: str, solver: str,
                owner: str, solver_options: dict | None, pool: np.ndarray | None, tight: bool) -> ProgramSolution:
    """One solve over ``patterns`` (P, n) with ``solver`` ("clarabel" or "scs"); ``tight``:
    Clarabel at TIGHT_CLARABEL first. SolverError (naming ``owner``) when every attempt fails."""
    rows, r_prime = U_prime.shape
    program = convex_bn_program(len(y), r_prime, len(patterns), loss, constraint_rows=rows)
    program.set_data(U_prime, patterns, y, beta, pool)
    user = solver_options or {}
    attempts = [(solver, user)]
    if solver == "clarabel":
        attempts = ([(solver, {**TIGHT_CLARABEL, **user})] if tight else []) + [(solver, user), ("scs", {})]
    for index, (name, options) in enumerate(attempts):
        cvxpy_solver, defaults = CVXPY_SOLVERS[name]
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
                # warm_start=False: cvxpy would otherwise reuse the previous attempt's solver settings
                program.problem.solve(solver=cvxpy_solver, ignore_dpp=True, warm_start=False,
                                      **{**defaults, **options})
            status = program.problem.status
        except cp.error.SolverError as error:
            status = f"failed ({error})"
        except TypeError as error:
            raise ValueError(f"{owner}: solver_options not accepted by {name!r}: {error}") from error
        if status == cp.OPTIMAL:
            report = {"solver": name, "status": status, "solve_time": program.problem.solver_stats.solve_time}
            dual = None if program.margin is None else y * np.asarray(program.margin.dual_value, dtype=float)
            return ProgramSolution(program.S.value, program.T.value, report, dual)
        retry = index + 1 < len(attempts) and status != cp.INFEASIBLE and status != cp.UNBOUNDED
        if not retry:
            break
        logger.info("%s: %s returned %r, solving again with %s", owner, name, status, attempts[index + 1][0])
    raise SolverError(f"{owner}: solver {name!r} returned status {status!r}")
