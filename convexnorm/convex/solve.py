"""The estimators' use of a solve over a set of patterns (docs/math.md, section 3).

The backends (cvxpy with Clarabel or SCS, the native interior-point method) are the solver
layer's (``convexnorm.solvers.backends.solve_program``); here a solve is polished (re-solved
over its active patterns), left-out patterns that violate its optimality are put back, and
solver residue is removed. The estimators and the block's ``freeze`` call ``solve_convex_program``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from convexnorm.convex.certificate import GROW_RTOL, Certificate, certify_multipliers, exact_dual_values
from convexnorm.losses import negative_gradient, torch_loss
from convexnorm.errors import SolverError
from convexnorm.solvers.backends import check_solver, solve_program
from convexnorm.solvers.native import ESTIMATOR_TOL

logger = logging.getLogger("convexnorm")

#: Groups with ||s_i|| below this fraction of max(largest group, ||y|| / ||U'||) are left out of
#: the polishing solve (a left-out pattern that turns out to be needed is put back).
NEURON_RTOL = 1e-6
#: Groups of the final solution below the largest of these fractions whose removal leaves the
#: objective within DROP_RTOL (relative) and the fitted values within DROP_RTOL ||y|| (they carry
#: the certificate's multipliers) are solver residue and dropped. A fixed 1e-6 is first-order for
#: the hinge loss (a grown hinge model ended 9e-7 relative above the optimum it was certified
#: at); a fixed 1e-9 kept Clarabel's residue as neurons (44 instead of 22 on diabetes).
RESIDUE_RTOLS = (1e-6, 1e-7, 1e-8, 1e-9)
DROP_RTOL = 1e-10
#: Polishing solves at most: a pattern left out of one (inactive in the looser first solve) that
#: violates its optimality is put back and the polish repeated.
POLISH_ROUNDS = 3
#: The certified relative gap a cvxpy solution must meet over its patterns, the native method's (``_certified``).
CERTIFIED_RTOL = ESTIMATOR_TOL
#: Clarabel's tolerances for a pooled program's second solve, where its first is certified only above
#: CERTIFIED_RTOL: two programs at beta 1e-6 certified to 1.1e-6 and 4.7e-6 at TIGHT_CLARABEL were certified to
#: 1.6e-7 and 5.4e-9 here, 6.4e-7 and 2.6e-6 lower (docs/benchmarks.md, session 37).
EXACTING_CLARABEL = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "max_iter": 500}


@dataclass(frozen=True)
class ScalarSolution:
    """One scalar-output convex model: neurons s_j (rows) with output signs +-1, the
    solver's report (status or measured optimality) and the certificate's lam from the solver's
    multipliers (``ProgramSolution.dual``: the hinge loss's y alpha; from Clarabel and SCS also y - f for
    the squared loss)."""

    neurons: np.ndarray  # (m, r + 1)
    signs: np.ndarray  # (m,)
    objective: float
    report: dict = field(default_factory=dict)
    dual: np.ndarray | None = None

    def predict(self, U_rows: np.ndarray, pool: np.ndarray | None = None) -> np.ndarray:
        """sum_j sign_j (u' . s_j)_+ for whitened rows u' (training or test-time map),
        summed by ``pool`` (samples x rows) for convolutional programs."""
        out = np.maximum(U_rows @ self.neurons.T, 0.0) @ self.signs
        return out if pool is None else pool @ out


def _zero_threshold(norms: np.ndarray, U_prime: np.ndarray, y: np.ndarray,
                    rtol: float = NEURON_RTOL) -> float:
    """Group norms at or below this are zero: ``rtol`` of the larger of the largest norm and
    ||y|| / ||U'||_2 * sqrt(n / rows) (the size of a neuron that fits y; rows = n K for pooled
    programs), so that a solution made only of solver residue has no neurons."""
    rows = U_prime.shape[0]
    reference = np.linalg.norm(y) / max(np.linalg.norm(U_prime, 2), 1e-300) * np.sqrt(len(y) / rows)
    return rtol * max(float(norms.max(initial=0.0)), reference, np.finfo(float).tiny)


def solve_convex_program(
    U_prime: np.ndarray,
    patterns: np.ndarray,
    y: np.ndarray,
    beta: float,
    loss: str,
    solver: str,
    owner: str,
    solver_options: dict | None = None,
    pool: np.ndarray | None = None,
    tight_first: bool = False,
) -> ScalarSolution:
    """Solve over ``patterns`` (rows of U' summed by ``pool`` for convolutions), then polish:
    solve again over the patterns whose groups are active (norm above ``_zero_threshold``),
    so that the residue of inactive groups does not perturb the solution (Clarabel: always,
    at the cvxpy backend's TIGHT_CLARABEL); residue groups are then dropped (RESIDUE_RTOLS). The native interior-point
    method removes its residue itself (certified), so its solutions are not re-solved.
    ``tight_first`` asks Clarabel for its tight tolerances in the first solve as well. A cvxpy solution is
    certified over ``patterns`` (``_certified``); where a solve fails (SolverError) another solver takes over
    (``fallback_solver``). A pooled program, which the native method does not solve, whose Clarabel solution is
    certified only above CERTIFIED_RTOL is solved again at EXACTING_CLARABEL, and the better certified solution is
    kept; one still above it comes with a warning."""
    check_solver(solver, owner)
    solution = _solved(U_prime, patterns, y, beta, loss, solver, owner, solver_options, pool, tight_first)
    if pool is None or solution.report["relative_gap"] <= CERTIFIED_RTOL:
        return solution
    gap = solution.report["relative_gap"]
    if solver == "clarabel":
        logger.info("%s: the clarabel solution is certified to a relative gap of %.1e over its patterns; solving "
                    "again at tolerances of 1e-12", owner, gap)
        try:
            again = _solved(U_prime, patterns, y, beta, loss, solver, owner,
                            {**(solver_options or {}), **EXACTING_CLARABEL}, pool, True)
        except SolverError as error:
            logger.info("%s: %s", owner, error)
        else:
            if again.report["relative_gap"] < gap:
                solution, gap = again, again.report["relative_gap"]
    if gap > CERTIFIED_RTOL:
        logger.warning("%s: the %s solution is certified only to a relative gap of %.1e over its patterns (the "
                       "native method, which would check it, does not solve convolutional programs)", owner,
                       solution.report["solver"], gap)
    return solution


def _solved(U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float, loss: str, solver: str,
            owner: str, solver_options: dict | None, pool: np.ndarray | None, tight_first: bool) -> ScalarSolution:
    """``solve_convex_program`` before the pooled programs' second solve."""
    args = (y, beta, loss, solver, owner, solver_options)
    chosen = np.ones(len(patterns), dtype=bool)
    tight = tight_first
    for round_index in range(POLISH_ROUNDS + 1):
        try:
            solved = solve_program(U_prime, patterns[chosen], *args, pool=pool, tight=tight)
        except SolverError as error:
            fallback = fallback_solver(solver, pool)
            if fallback is None:
                raise
            logger.info("%s: %s; solving with %s instead", owner, error, fallback)
            try:
                if fallback == "torch":
                    return _replaced_by_native(solve_convex_program(U_prime, patterns, y, beta, loss, "torch", owner),
                                               solver)
                solved = solve_program(U_prime, patterns[chosen], y, beta, loss, fallback, owner, pool=pool)
            except SolverError as fallback_error:
                raise SolverError(f"{error}; {FALLBACK_NAMES[fallback]}, tried instead, failed too: {fallback_error}"
                                  ) from fallback_error
        S_chosen, T_chosen, report, dual = solved.S, solved.T, solved.report, solved.dual
        S, T = np.zeros((U_prime.shape[1], len(patterns))), np.zeros((U_prime.shape[1], len(patterns)))
        S[:, chosen], T[:, chosen] = S_chosen, T_chosen
        tight = True
        if round_index == 0 and solver != "torch":
            norms = np.maximum(np.linalg.norm(S, axis=0), np.linalg.norm(T, axis=0))
            active = norms > _zero_threshold(norms, U_prime, y)
            if active.any() and (not active[chosen].all() or solver == "clarabel"):
                chosen = active
                continue
        missed = _violating_excluded(U_prime, patterns, chosen, S, T, y, beta, loss, dual, pool)
        if not missed.any():
            break
        logger.info("%s: %d pattern(s) left out of the solve violate its optimality; solving again with them",
                    owner, int(missed.sum()))
        chosen |= missed
    norms = np.concatenate([np.linalg.norm(S, axis=0), np.linalg.norm(T, axis=0)])
    neurons = np.concatenate([S.T, T.T])
    signs = np.concatenate([np.ones(S.shape[1]), -np.ones(T.shape[1])])
    whole = _evaluated(neurons, signs, U_prime, y, beta, loss, pool)
    fitted = whole.predict(U_prime, pool)
    for rtol in RESIDUE_RTOLS:
        keep = norms > _zero_threshold(norms, U_prime, y, rtol)
        solution = _evaluated(neurons[keep], signs[keep], U_prime, y, beta, loss, pool)
        moved = np.linalg.norm(solution.predict(U_prime, pool) - fitted)
        if (solution.objective <= whole.objective + DROP_RTOL * abs(whole.objective)
                and moved <= DROP_RTOL * max(np.linalg.norm(y), 1.0)):
            break
    solution = replace(solution, report=report, dual=dual)
    if solver == "torch":  # certified by the native method itself
        return solution
    return _certified(solution, U_prime, patterns, y, beta, loss, owner, pool)


#: How ``fallback_solver``'s choices are named in errors.
FALLBACK_NAMES = {"torch": "the native method", "scs": "SCS"}


def fallback_solver(solver: str, pool: np.ndarray | None) -> str | None:
    """The solver that takes over a program ``solver`` fails (after the cvxpy backend's own retries: Clarabel at
    its defaults after its tight tolerances): the native method, which certifies its answer, for every cvxpy
    solver's program that is not pooled (SCS had taken 17-54 s to fail on logistic programs at beta 1e-5 .. 1e-6,
    docs/benchmarks.md session 36); SCS for Clarabel's pooled (convolutional) programs, which the native method
    does not solve; none for the native method, or for SCS's pooled programs."""
    if solver == "torch":
        return None
    if pool is None:
        return "torch"
    return "scs" if solver == "clarabel" else None


def _certified(solution: ScalarSolution, U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float,
               loss: str, owner: str, pool: np.ndarray | None) -> ScalarSolution:
    """A cvxpy solution over ``patterns``, its report holding its certified "relative_gap" and "lower_bound": the
    dual bound (docs/math.md section 4, lam scaled to dual feasibility over ``patterns`` by exact cone values) at the
    solver's multipliers and, where that exceeds CERTIFIED_RTOL, the larger of it and the bound at the solution's
    own lam = -loss'(f), which holds the fitted values only to about the square root of the solver's accuracy (at
    small beta a squared-loss solution 1.5e-9 above the optimum read 7.9e-4 at its own lam; at the solver's
    multipliers squared-loss gaps read 6.5e-12 .. 7.6e-7, docs/benchmarks.md session 37). Where the gap still exceeds
    CERTIFIED_RTOL, the native method (solver="torch") solves the program, and its certified lower bound either
    certifies the cvxpy solution (kept) or shows it off the optimum: then the native solution replaces it
    (Clarabel's 'optimal' logistic and hinge solutions at beta 1e-5 .. 1e-6 lay 2.7e-6 .. 1e-2 above the optimum,
    docs/benchmarks.md session 36). A pooled (convolutional) program, which the native method does not solve, keeps
    its solution and its gap here (``solve_convex_program`` solves it again where that is above CERTIFIED_RTOL)."""
    bound = -np.inf
    if loss != "hinge" and solution.dual is not None:  # the hinge loss's own lam is the solver's already
        bound = certify_solution(U_prime, y, solution, beta, loss, "exact", pool=pool, all_patterns=patterns,
                                 multipliers=solution.dual).lower_bound
    if _relative_gap(solution.objective, bound) > CERTIFIED_RTOL:
        own = certify_solution(U_prime, y, solution, beta, loss, "exact", pool=pool, all_patterns=patterns)
        bound = max(bound, own.lower_bound)
    gap = _relative_gap(solution.objective, bound)
    if gap > CERTIFIED_RTOL and pool is None:
        try:
            native = solve_convex_program(U_prime, patterns, y, beta, loss, "torch", owner)
        except SolverError as error:
            logger.warning("%s: the native method could not certify the %s solution (its relative gap %.1e at its "
                           "multipliers): %s", owner, solution.report["solver"], gap, error)
        else:
            bound = max(bound, native.report["lower_bound"])
            gap = _relative_gap(solution.objective, bound)
            if gap > CERTIFIED_RTOL:
                logger.info("%s: the %s solution lies %.1e (relative) above the native method's certified lower "
                            "bound; the native solution replaces it", owner, solution.report["solver"], gap)
                return _replaced_by_native(native, solution.report["solver"])
    return replace(solution, report={**solution.report, "lower_bound": bound, "relative_gap": gap})


def _replaced_by_native(native: ScalarSolution, solver: str) -> ScalarSolution:
    """The native method's solution in place of ``solver``'s, its report saying so ("replaced")."""
    return replace(native, report={**native.report, "replaced": solver})


def _relative_gap(objective: float, bound: float) -> float:
    return (objective - bound) / max(abs(objective), np.finfo(float).tiny)


def certify_solution(
    U_prime: np.ndarray,
    y: np.ndarray,
    solution: ScalarSolution,
    beta: float,
    loss: str,
    method: str = "auto",
    n_probes: int = 2000,
    random_state=None,
    pool: np.ndarray | None = None,
    all_patterns: np.ndarray | None = None,
    multipliers: np.ndarray | None = None,
    **options,
) -> Certificate:
    """docs/math.md section 4: is max_{||u|| <= 1} |lam^T (U' u)_+| <= beta? For pooled
    (convolutional) programs lam^T Pi (U' u)_+ = (Pi^T lam)^T (U' u)_+: the same check with
    lam spread over each sample's rows. ``multipliers``: lam (one per sample) to check instead of the
    solution's (``sample_multipliers``), taken into the domain of the loss's conjugate."""
    residual = (sample_multipliers(U_prime, y, solution, loss, pool) if multipliers is None  # in sample space
                else _conjugate_domain(loss, multipliers, y))
    lam = residual if pool is None else pool.T @ residual
    return certify_multipliers(U_prime, lam, beta, solution.objective, method, n_probes, random_state,
                               all_patterns, y, residual=residual, loss=loss, **options)


def _violating_excluded(U_prime: np.ndarray, patterns: np.ndarray, active: np.ndarray, S: np.ndarray, T: np.ndarray,
                        y: np.ndarray, beta: float, loss: str, dual: np.ndarray | None,
                        pool: np.ndarray | None) -> np.ndarray:
    """Which patterns left out of a polishing solve violate the optimality of its solution over
    all of ``patterns`` (docs/math.md section 4, exact cone values; patterns whose ball bound
    ||U'^T D lam|| is at most beta are skipped)."""
    missed = np.zeros(len(patterns), dtype=bool)
    excluded = np.flatnonzero(~active)
    if not len(excluded) or (loss == "hinge" and dual is None):
        return missed
    neurons = np.concatenate([S.T, T.T])
    signs = np.concatenate([np.ones(S.shape[1]), -np.ones(T.shape[1])])
    lam = dual_multipliers(U_prime, y, ScalarSolution(neurons, signs, 0.0, dual=dual), loss, pool)
    _, _, hits, _ = exact_dual_values(U_prime, lam, beta, patterns[excluded], GROW_RTOL)
    missed[excluded[hits]] = True
    return missed


def sample_multipliers(U_prime: np.ndarray, y: np.ndarray, solution: ScalarSolution, loss: str,
                       pool: np.ndarray | None = None) -> np.ndarray:
    """lam of the certificate, one per sample: -loss'(f) (the hinge loss: the solver's y * alpha with alpha
    clipped to [0, 1], the domain of the loss's conjugate, which the solver meets only to its precision)."""
    if loss == "hinge":
        if solution.dual is None:
            raise ValueError("certify: the hinge loss needs the solver's dual multipliers, which this solution "
                             "does not have (solve with 'clarabel' or 'scs')")
        return _conjugate_domain(loss, solution.dual, y)
    fitted = solution.predict(U_prime, pool)
    return negative_gradient(loss, torch.from_numpy(fitted), torch.from_numpy(y)).numpy()


def _conjugate_domain(loss: str, lam: np.ndarray, y: np.ndarray) -> np.ndarray:
    """lam as it is (squared loss), else y u with u = y lam clipped to [0, 1], the domain of the margin losses'
    conjugates, which a solver's multipliers meet only to its precision."""
    return lam if loss == "squared" else y * np.clip(y * lam, 0.0, 1.0)


def dual_multipliers(U_prime: np.ndarray, y: np.ndarray, solution: ScalarSolution, loss: str,
                     pool: np.ndarray | None = None) -> np.ndarray:
    """lam of the certificate, one per row of U' (``sample_multipliers``), spread over each sample's rows by
    ``pool`` for convolutional programs."""
    lam = sample_multipliers(U_prime, y, solution, loss, pool)
    return lam if pool is None else pool.T @ lam


def _evaluated(neurons: np.ndarray, signs: np.ndarray, U_prime: np.ndarray, y: np.ndarray, beta: float,
               loss: str, pool: np.ndarray | None = None) -> ScalarSolution:
    """The solution with its exact objective loss(f) + beta sum_j ||s_j||, f = sum_j sign_j (U' s_j)_+
    (pooled by ``pool``)."""
    partial = ScalarSolution(neurons, signs, 0.0)
    fitted = torch.from_numpy(partial.predict(U_prime, pool))
    value = float(torch_loss(loss, fitted, torch.from_numpy(y))) + beta * float(np.linalg.norm(neurons, axis=1).sum())
    return ScalarSolution(neurons, signs, value)
