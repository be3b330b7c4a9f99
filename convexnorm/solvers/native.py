"""solver="torch": the batched interior-point method behind the options every public class takes.

``native_settings`` turns ``solver_options`` (tol, violation_tol, max_iterations, step_fraction,
centering_exponent, patience, correctors, dense_curvature, threads) into the method's settings,
the same for the estimators and the block; ``solve_native`` runs it and returns the certified
solution without the solver's residue: groups far below the largest are set to exactly zero
where the dual bound still certifies the result within ``tol`` (docs/math.md, section 4).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping

import numpy as np
import torch

from convexnorm._validation import check_count, check_device
from convexnorm.errors import SolverError
from convexnorm.solvers.backends import ProgramSolution
from convexnorm.solvers.candidate_rows import solve_relaxed, widened
from convexnorm.solvers.active_sets import active_sets
from convexnorm.solvers.interior_point import InteriorPointResult, InteriorPointSettings, resumed_on
from convexnorm.solvers.implicit import WOODBURY_RESUME_FACTOR, polish_episode
from convexnorm.solvers.kkt import Conic, Criteria, Primal, bounded_criteria, multipliers
from convexnorm.solvers.problem import ConvexBNProblem
from convexnorm.solvers.threads import AUTO, solver_threads
from convexnorm.solvers.working_set import finished, on_working_set

#: Groups below these fractions of the largest norm are tried as exact zeros, largest first;
#: the first whose certified gap stays within tol (and violation within violation_tol) is kept.
ZERO_GROUP_RTOLS = (1e-3, 1e-4, 1e-5, 1e-6)
#: The option names of solver="torch" besides the settings' fields.
THREADS = "threads"
#: The estimators' certified relative gap: at 1e-7 the demo's column-generation rounds stalled
#: at 1.5e-7..1.9e-7 (degenerate programs, float64's limit); the objective is then within 1e-6
#: relative of the optimum, and measured within ~1e-8 of Clarabel's (tests/test_native_solver.py).
ESTIMATOR_TOL = 1e-6
#: The hinge loss's estimators and block solve by Woodbury alone and resume with the dense route only
#: where that stops short of tol (the estimators: where the polish does not certify it either). An
#: estimator solves one program at a time, so the drift of batched programs past DENSE_CURVATURE does not
#: arise (n = 1000, r = 10, 100 patterns in 7.4 s instead of 12.0 s); the block's output is the polished
#: point (docs/benchmarks.md, session 11).
HINGE_DENSE_CURVATURE = float("inf")
#: solver_options key that keeps an inaccurate solve (with a RuntimeWarning) instead of raising
#: SolverError.
ACCEPT_INACCURATE = "accept_inaccurate"


def option_names() -> tuple[str, ...]:
    return (*(f.name for f in fields(InteriorPointSettings)), THREADS)


def native_settings(options: Mapping[str, Any] | None, owner: str, also: tuple[str, ...] = (), **defaults: Any
                    ) -> tuple[InteriorPointSettings, int | str | None]:
    """(settings, threads) from ``options`` over ``defaults``; threads (an integer, None: torch's
    setting, or "auto": solvers/threads.py, ``AdaptiveThreads``) defaults to "auto": one thread except
    where more measurably run the iterations faster on an idle machine (on a loaded 2-core machine
    torch's default threads collapsed the method 125x: docs/benchmarks.md).
    ValueError, naming ``owner``, for an unknown option or a bad value; ``also``: the caller's
    own option names (already removed from ``options``), listed in that message."""
    merged = {**defaults, **(options or {})}
    threads = merged.pop(THREADS, AUTO)
    unknown = sorted(set(merged) - set(option_names()))
    if unknown:
        raise ValueError(f"{owner}: solver='torch' does not take option(s) {unknown}; it takes "
                         f"{[*option_names(), *also]}")
    if threads is not None and threads != AUTO:
        try:
            check_count(threads, owner, "solver_options['threads']")
        except ValueError:
            raise ValueError(f"{owner}: solver_options['threads'] must be an integer >= 1, None or {AUTO!r}, "
                             f"got {threads!r}") from None
    try:
        settings = InteriorPointSettings(**merged)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{owner}: solver='torch': {error}") from error
    return settings, threads


@dataclass
class NativeSolution:
    """Per program: neurons W (batch, 2P, k), the dual bound's multipliers lam (batch, n; the hinge
    loss: y * alpha of its margin constraints), the criteria of W, convergence and iterations."""

    W: torch.Tensor
    lam: torch.Tensor
    criteria: Criteria
    converged: torch.Tensor
    iterations: torch.Tensor


def solve_native(problem: ConvexBNProblem, settings: InteriorPointSettings = InteriorPointSettings(),
                 threads: int | str | None = AUTO) -> NativeSolution:
    """Solve every program of ``problem`` by the interior-point method (``threads``: torch's
    intra-op threads meanwhile; "auto": chosen per iteration, solvers/threads.py), then finish each
    (``_finished``: the active-set polish, the residue of inactive groups removed). Where ``settings``
    skip the dense route (Woodbury alone, the hinge loss's estimators), a program that meets its tolerance
    but whose polish is refused first resumes from its iterate to a tighter one, and only a program that stops
    short of its tolerance and whose polish is refused is solved again on its working set, and resumes with the
    dense route where that is not certified either (``_dense_where_unpolished``)."""
    with solver_threads(threads, problem.A.device) as pace, torch.inference_mode():
        polishes = _Polishes()
        result = solve_relaxed(problem, settings, on_iteration=pace, finish=_dense_where_unpolished(settings, polishes))
        solution = _finished(problem, result, settings, polishes)
    # out of inference mode (interior_point's), for callers that go on with autograd or in place
    return NativeSolution(solution.W.clone(), solution.lam.clone(), solution.criteria.map(torch.clone),
                          solution.converged.clone(), solution.iterations.clone())


class _Polishes:
    """The polishes (``polish_episode``) of one solve with their inputs, so that a program's polish runs once where
    the finish (``_dense_where_unpolished``) and ``_finished`` polish the same point: a hinge estimator's program that
    met its tolerance, whose final result is the one the finish polished. Its second polish had been 3.5-6.6% of
    a fit at 300-1000 x 10 x 100 (docs/benchmarks.md, sessions 35 and 36). Matched by value, not by index: a
    relaxation's program that violates a row left out is solved again in a second finish, numbered within the
    programs solved again."""

    def __init__(self) -> None:
        self._kept: list[tuple[list[torch.Tensor], tuple[torch.Tensor, torch.Tensor, object]]] = []

    @staticmethod
    def _inputs(problem: ConvexBNProblem, result: InteriorPointResult, groups: torch.Tensor, rows: torch.Tensor,
                b: int) -> list[torch.Tensor]:
        """Everything ``polish_episode`` reads of program ``b`` (its data, iterate, criteria and active sets)."""
        parts = [problem.A[b], problem.masks[b], problem.y[b], problem.beta[b], result.W[b], result.z.rows[b],
                 result.criteria.lower_bound[b], result.criteria.relative_gap[b], groups[b], rows[b]]
        return parts + [part[b] for part in (result.s.slack, result.s.margin, result.z.slack, result.z.margin)
                        if part is not None]

    def polish(self, problem: ConvexBNProblem, result: InteriorPointResult, groups: torch.Tensor,
               rows: torch.Tensor, b: int, keep: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, object] | None:
        """``polish_episode(problem, result, groups, rows, b)``, the one kept where its inputs are equal to a kept
        one's; ``keep``: keep this one (where it holds)."""
        inputs = self._inputs(problem, result, groups, rows, b)
        for kept, found in self._kept:
            if len(kept) == len(inputs) and all(torch.equal(a, c) for a, c in zip(kept, inputs)):
                return found
        found = polish_episode(problem, result, groups, rows, b)
        if keep and found is not None:
            self._kept.append(([part.clone() for part in inputs], found))
        return found


def _dense_where_unpolished(settings: InteriorPointSettings, polishes: _Polishes
                            ) -> Callable[[ConvexBNProblem, InteriorPointResult], InteriorPointResult]:
    """``solve_relaxed``'s finish where ``settings`` skip the dense route (the hinge loss), on the programs whose
    polish is refused. One that met tol on every row resumes from its iterate to WOODBURY_RESUME_FACTOR of it,
    where its active sets separate further, as the block's episodes do (``implicit._resumed_polish``): at n = 1000,
    r = 10, 100 patterns, beta 0.1 the polish was refused at a gap of 2e-7 and held after one or two more
    iterations, where its working set had taken 74 (the fit 1.9-2.7 s instead of 4.5-4.9 s, docs/benchmarks.md,
    session 35). One that stopped short of tol is finished by ``working_set.finished``: an exhaustive 16x3 hinge
    program stalled at a gap of 1.8e-6 was polished to 1e-8 in 2 s, where the dense resume took 42 s and stalled
    too; another, whose polish is refused (its optimum is not unique), was certified on its working set in 0.1 s,
    where the dense resume took 179 s and stalled. A polish that holds here is kept in ``polishes``, for
    ``_finished`` to reuse where the program's final result is the point polished."""
    def finish(program: ConvexBNProblem, result: InteriorPointResult) -> InteriorPointResult:
        if not settings.skips_dense_route:
            return finished(program, result, settings)
        # the polish reads every row: a relaxation's result on the whole program (``widened``)
        whole = program if program.candidates is None else program.relaxed(None)
        view = result if program.candidates is None else widened(whole, program, result, settings)
        groups, rows = active_sets(whole, view)
        # a relaxation's program that violates a row left out is solved again whole (``solve_relaxed``)
        short, whole_converged = ~result.converged, result.converged & view.converged
        refused = torch.zeros_like(short)
        for b in torch.nonzero(short | whole_converged).flatten().tolist():
            refused[b] = polishes.polish(whole, view, groups, rows, b, keep=True) is None
        resume = refused & whole_converged
        if bool(resume.any()):
            tighter = replace(settings, tol=settings.tol * WOODBURY_RESUME_FACTOR)
            result = result.replaced(resume, resumed_on(program, result, resume, tighter)[1])
        return finished(program, result, settings, refused & short)
    return finish


def _finished(problem: ConvexBNProblem, result: InteriorPointResult, settings: InteriorPointSettings,
              polishes: _Polishes) -> NativeSolution:
    """Every program of ``result`` finished by Newton's method on its active-set system (solvers/implicit.py,
    ``polish_episode``; the hinge loss's margins included), kept where it is certified (by the dual bound at
    its own multipliers or the interior-point method's): a gap of ``tol`` bounds the objective, but the
    fitted values f, and with them the certificate's multipliers y - f, only to about sqrt(tol) (unpolished
    at 1e-7, an exhaustive 30x3 program read 1.2% above beta, 100 neurons instead of 18). A program that
    stops short of ``tol``, typically at float64's limit a little above it, is finished so too (unpolished,
    the hinge loss stalled at gaps of 1.1e-6 .. 7.3e-6 on six of eight exhaustive 16x3 programs at beta
    0.01). A program whose polish is refused is polished from its working set's solution instead, where that
    holds (``_polished_on_working_set``), and where it does not keeps the better-certified of that solution and
    its own. Then the residue of inactive groups is removed where certified. ``polishes``: those of the finish,
    reused where a program's result is the point they polished."""
    W, z = result.W.clone(), result.z
    z = Conic(z.rows.clone(), z.cones, z.slack, None if z.margin is None else z.margin.clone())
    groups, rows = active_sets(problem, result)
    for b in range(problem.batch):
        found = polishes.polish(problem, result, groups, rows, b)
        if found is None:
            found, solved = _polished_on_working_set(problem, result, b, settings)
            # where no polish holds, the better-certified of the two interior-point points
            if found is None and solved is not None and bool(solved.criteria.relative_gap[0]
                                                             < result.criteria.relative_gap[b]):
                W[b], z.rows[b] = solved.W[0], solved.z.rows[0]
                if z.margin is not None:
                    z.margin[b] = solved.z.margin[0]
                continue
        if found is not None:
            W[b], z.rows[b] = found[0].T, found[1]
            if found[2] is not None:  # the hinge loss's margin multipliers alpha
                z.margin[b] = found[2].alpha
    lam = multipliers(problem, Primal.of_neurons(W), z)
    # the better of the two bounds on the optimum: at the (polished) solution's multipliers and the
    # interior-point method's own (the polish is kept where it certifies against either one)
    measured = bounded_criteria(problem, W, torch.maximum(problem.dual_bound(lam, z.rows),
                                                          result.criteria.lower_bound))
    norms = torch.linalg.norm(W, dim=-1)
    settled = torch.zeros_like(result.converged)
    for rtol in ZERO_GROUP_RTOLS:
        keep = norms > rtol * norms.amax(-1, keepdim=True)
        cleaned = W * keep[..., None]
        # against the bound at the solution's own multipliers: those of the cleaned point are
        # no longer tuned to its G (measured: a bound 1e-3 lower)
        trial = bounded_criteria(problem, cleaned, measured.lower_bound)
        accept = ~settled & trial.met(settings.tol, settings.violation_tol)
        W = torch.where(accept[:, None, None], cleaned, W)
        measured = trial.where(accept, measured)
        settled = settled | accept
    return NativeSolution(W, lam, measured, measured.met(settings.tol, settings.violation_tol), result.iterations)


def _polished_on_working_set(problem: ConvexBNProblem, result: InteriorPointResult, b: int,
                             settings: InteriorPointSettings
                             ) -> tuple[tuple[torch.Tensor, torch.Tensor, object] | None, InteriorPointResult | None]:
    """``polish_episode`` of program ``b`` after it is solved again on its working set (``on_working_set``, of
    any size: the alternative is a point the certificate cannot certify), or None; and that solve, certified on
    the whole program, or None where there is none. Where the optimum's neurons are not unique, the polish from
    one interior-point iterate can fail on every guess and succeed from another: a column-generation round over
    173 patterns of 20x3 data (squared loss, beta 0.01) was refused at its iterate, its certificate reading 0.75%
    above beta, and polished on its working set of 78 patterns. Where both fall short, the working set's point
    can still be the better one (hinge, every pattern of 20 samples in R^3, beta 0.003: 1.7e-6 against the
    whole solve's stall at 3.4e-5)."""
    solved = on_working_set(problem, result, b, settings, fraction=1.0)
    if solved is None:
        return None, None
    program = problem.select(problem.mask_of(b))
    groups, rows = active_sets(program, solved)
    return polish_episode(program, solved, groups, rows, 0), solved


def solve_native_program(U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float, loss: str,
                         solver: str, owner: str, solver_options: dict | None, pool: np.ndarray | None,
                         tight: bool) -> ProgramSolution:
    """The backend of solver="torch" (solvers/backends.py): one program in float64 on
    solver_options["device"] (default CPU); the other options are ``native_settings``'. A solve
    that misses its tolerances raises SolverError unless solver_options["accept_inaccurate"]
    (then a RuntimeWarning). Pooled (convolutional) programs are refused."""
    if pool is not None:
        raise ValueError(f"{owner}: solver='torch' does not solve pooled (convolutional) programs; "
                         "use 'clarabel' or 'scs'")
    options = dict(solver_options or {})
    device = check_device(options.pop("device", "cpu"), owner)
    accept = bool(options.pop(ACCEPT_INACCURATE, False))
    hinge = {"dense_curvature": HINGE_DENSE_CURVATURE} if loss == "hinge" else {}
    settings, threads = native_settings(options, owner, ("device", ACCEPT_INACCURATE), tol=ESTIMATOR_TOL, **hinge)
    problem = ConvexBNProblem.from_arrays([(U_prime, patterns, y)], beta, loss, device)
    result = solve_native(problem, settings, threads)
    measured = {name: float(getattr(result.criteria, name)[0])
                for name in ("objective", "lower_bound", "relative_gap", "violation")}
    converged, iterations = bool(result.converged[0]), int(result.iterations[0])
    if not converged:
        message = (f"{owner}: solver='torch' stopped after {iterations} iterations without meeting its tolerances "
                   f"(relative gap {measured['relative_gap']:.2e}, violation {measured['violation']:.2e}, "
                   f"tol {settings.tol:g})")
        if not accept:
            raise SolverError(f"{message}; raise max_iterations or loosen tol in solver_options, or pass "
                              f"solver_options={{'{ACCEPT_INACCURATE}': True}} to keep the inaccurate solution")
        warnings.warn(message, RuntimeWarning, stacklevel=5)
    P = patterns.shape[0]
    W = result.W[0].T.cpu().numpy()
    report = {"solver": "torch", "converged": converged, "iterations": iterations, **measured}
    return ProgramSolution(W[:, :P], W[:, P:], report, result.lam[0].cpu().numpy() if loss == "hinge" else None)
