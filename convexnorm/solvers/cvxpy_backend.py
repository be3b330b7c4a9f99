"""solver="clarabel" | "scs": the convex BN-ReLU program through cvxpy, with retries.

The program comes from ``convexnorm.programs.convex_bn_program``; its Parameters are treated as
constants (``ignore_dpp``: cvxpy's parametric canonicalization of this program grows as n P^2 r'
and suits only small layers). Clarabel is asked for TIGHT_CLARABEL first; where it reports
'optimal_inaccurate' or fails, the program is solved again at Clarabel's defaults. Which solver takes over a
program that fails here is decided in one place, ``convexnorm.convex.solve.fallback_solver``.
"""

from __future__ import annotations

import logging
import warnings

import cvxpy as cp
import numpy as np

from convexnorm.errors import SolverError
from convexnorm.programs import ConvexBNProgram, convex_bn_program
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
#: The squared loss's targets are solved as they are where their root mean square c lies in this range, else
#: in units of c (``solve_cvxpy``): the solvers' absolute tolerances suit numbers of size about one (Clarabel
#: reported 'infeasible' for y of size 1e4 and 1e5 at beta = 0.1, which the same programs in units of c solve).
#: Not always, because the solvers' residue groups move with the units (on a program with c = 1.1 the
#: polished Clarabel solution kept 26 instead of 15 neurons in those units, 13 of them of norm 5e-8 .. 2e-7).
TARGET_SCALES = (1e-3, 1e3)


def solve_cvxpy(U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float, loss: str, solver: str,
                owner: str, solver_options: dict | None, pool: np.ndarray | None, tight: bool) -> ProgramSolution:
    """One solve over ``patterns`` (P, n) with ``solver`` ("clarabel" or "scs"); ``tight``:
    Clarabel at TIGHT_CLARABEL first (the module docstring for the retries). SolverError (naming ``owner``) when
    every attempt fails.
    The squared loss with y's root mean square c outside TARGET_SCALES is solved in units of c
    (y / c, beta / c; the neurons times c): its optimum is c^2 that of the scaled program."""
    rows, r_prime = U_prime.shape
    scale = float(np.sqrt(np.mean(np.square(y)))) if loss == "squared" else 1.0
    scale = scale if scale > 0 and not TARGET_SCALES[0] <= scale <= TARGET_SCALES[1] else 1.0
    program = convex_bn_program(len(y), r_prime, len(patterns), loss, constraint_rows=rows,
                                fitted_variable=loss == "squared")
    program.set_data(U_prime, patterns, y / scale, beta / scale, pool)
    user = solver_options or {}
    attempts = [(solver, user)]
    if solver == "clarabel":
        attempts = ([(solver, {**TIGHT_CLARABEL, **user})] if tight else []) + [(solver, user)]
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
            dual = _multipliers(program, y, loss, scale)
            return ProgramSolution(scale * program.S.value, scale * program.T.value, report, dual)
        retry = index + 1 < len(attempts) and status != cp.INFEASIBLE and status != cp.UNBOUNDED
        if not retry:
            break
        logger.info("%s: %s returned %r, solving again with %s", owner, name, status, attempts[index + 1][0])
    raise SolverError(f"{owner}: solver {name!r} returned status {status!r}")


def _multipliers(program: ConvexBNProgram, y: np.ndarray, loss: str, scale: float) -> np.ndarray | None:
    """lam of the certificate from the solver's multipliers, one per sample: y alpha of the hinge loss's margin
    constraints; for the squared loss y - f from those of F = output (``convex_bn_program``'s
    ``fitted_variable``), times ``scale`` (targets solved in units of c). The logistic loss is solved without F:
    with it Clarabel failed or lay more than 1e-6 above the optimum on 11 of 24 programs instead of 9
    (``benchmarks/bench_cvxpy_certified.py``, docs/benchmarks.md session 37), so its lam is -loss'(f)."""
    if loss == "hinge":
        return y * np.asarray(program.margin.dual_value, dtype=float)
    if program.fit is None:
        return None
    return scale * np.asarray(program.fit.dual_value, dtype=float)
