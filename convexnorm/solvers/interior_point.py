"""A batched primal-dual interior-point method for the convex BN-ReLU program, every loss.

Mehrotra predictor-corrector with Nesterov-Todd scaling of the orthant and second-order cones
and CVXOPT's initial point (Vandenberghe, "The CVXOPT linear and quadratic cone program
solvers", sections 5-6), plus Gondzio's centrality correctors where the step stays short, on the
conic form of solvers/kkt.py; the logistic loss enters
through its gradient and curvature (a Newton step on the smooth objective), the hinge loss
through slacks. The Newton equations are solved by solvers/newton.py. All programs of a
batch iterate together; a program stops (its step becomes zero) once its criteria hold:
the certified relative gap (objective of the recovered network against the dual bound) at
most ``tol`` and the relative constraint violation at most ``violation_tol``. float64, on
the device of the data.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass, replace
from typing import Callable

import torch

from convexnorm._validation import check_count, check_positive
from convexnorm.solvers.cones import (JordanDivision, NTScaling, box_correction, identity_like, jordan_product,
                                      max_step, orthant_step_rate, reflect, soc_box_correction,
                                      soc_min_eigenvalue, soc_step_rate)
from convexnorm.solvers.kkt import (Conic, Criteria, Primal, constraint_adjoint, constraint_map, constraint_offset,
                                    criteria, evaluate, objective_gradient, per_program, zero_primal)
from convexnorm.solvers import newton
from convexnorm.solvers.newton import DENSE_CURVATURE, Breakdown, NewtonSystem
from convexnorm.solvers.problem import ConvexBNProblem

logger = logging.getLogger("convexnorm")

#: Stalls are counted once the best certified gap is below this.
STALL_GAP = 1e-4
#: The corrector's Newton solve is iteratively refined once some program's certified gap is below
#: this: the refinement matters only near float64's limit (a program that stalled at 1.9e-7
#: unrefined reached 1.4e-8) and cost a tenth of every iteration before.
REFINE_GAP = 1e-3
#: ... or once some program's mu is below this fraction of its starting mu: the certified gap can lag far
#: behind (hinge, every pattern of 60 samples in R^2, beta 1e-4: mu 5e-10 of 2.3 at a gap of 5e-3, where
#: the dual residual of unrefined steps grew from 1.8e-7 to 8.7e-4 and the method ran its 100 iterations to a
#: gap of 0.9; refined from this point on, 42 iterations to 6.8e-7).
REFINE_MU = 1e-6
#: The logistic loss's gradient is not linear in the step, so its residual r_x can grow along a step that
#: keeps the cones: the step is halved, up to LINE_SEARCH_STEPS times, until ||r_x|| falls to at most
#: 1 - LINE_SEARCH_DECREASE alpha (1 - sigma) of its value (the linear model's decrease is alpha (1 - sigma)).
#: Every pattern of 60 samples in R^2 at beta 1e-4 (data almost separable: the optimum's margins large and
#: the loss's curvature vanishing there): ||r_x|| stayed at 8e-2 while mu fell, then a full step took it from
#: 7e-2 to 61, and 4 of 12 fits ended in a SolverError at gaps of 0.49 .. 0.63; with the halving all 12 certify.
LINE_SEARCH_STEPS = 6
LINE_SEARCH_DECREASE = 0.01
#: Gondzio's centrality correctors (``_centrality_corrector``): tried for the programs whose step is
#: below CORRECTOR_BELOW, toward the trial step min(1, 1.5 alpha + 0.1), the complementarity products
#: moved into [0.1, 10] sigma mu, kept where the step grows by CORRECTOR_GAIN. With the step fraction
#: 0.95, one corrector took 158 instead of 202 iterations on eight programs of the block's sizes, and 22
#: and 43 instead of 29 and 55 on bench_flops.py's two programs (docs/benchmarks.md, session 11).
CORRECTOR_BELOW = 0.9
CORRECTOR_STEP = (1.5, 0.1)
CORRECTOR_BOX = (0.1, 10.0)
CORRECTOR_GAIN = 1.01


@dataclass(frozen=True)
class InteriorPointSettings:
    """tol: certified relative gap; violation_tol: relative cone violation; max_iterations;
    step_fraction: of the step to the cone boundary; centering_exponent: sigma =
    (mu_affine / mu)^exponent (Mehrotra); patience: iterations without a smaller certified gap
    after which a program stops (at float64's limit the Newton directions lose accuracy and the
    iterates drift; the best iterate is returned); correctors: Gondzio's centrality correctors per
    iteration at most (``_centrality_corrector``; 0: Mehrotra's method alone); dense_curvature: the
    loss curvature past which a program's Newton matrix is factorized densely (solvers/newton.py;
    inf: Woodbury only, whose hinge iterates stalled at certified gaps of about 1e-6 before the
    refinement corrected their predictions' mismatch, solvers/newton.py; a program's iterates in a
    batch then drift from its iterates alone)."""

    tol: float = 1e-7
    violation_tol: float = 1e-7
    max_iterations: int = 100
    step_fraction: float = 0.95
    centering_exponent: int = 3
    patience: int = 4
    correctors: int = 1
    dense_curvature: float = DENSE_CURVATURE

    def __post_init__(self) -> None:
        """ValueError for a value the method cannot run with."""
        for name in ("tol", "violation_tol"):
            check_positive(getattr(self, name), "InteriorPointSettings", name)
        for name in ("max_iterations", "centering_exponent", "patience"):
            check_count(getattr(self, name), "InteriorPointSettings", name)
        check_count(self.correctors, "InteriorPointSettings", "correctors", minimum=0)
        if isinstance(self.dense_curvature, bool) or not isinstance(self.dense_curvature, numbers.Real) \
                or not self.dense_curvature > 0:  # inf allowed
            raise ValueError(f"InteriorPointSettings: dense_curvature must be a real number > 0 (inf allowed), "
                             f"got {self.dense_curvature!r}")
        if not 0 < check_positive(self.step_fraction, "InteriorPointSettings", "step_fraction") < 1:
            raise ValueError(f"InteriorPointSettings: step_fraction must be in (0, 1), got {self.step_fraction!r}")

    @property
    def skips_dense_route(self) -> bool:
        """Whether Woodbury serves curvatures past DENSE_CURVATURE (``with_dense_route`` undoes it)."""
        return self.dense_curvature > DENSE_CURVATURE


@dataclass
class InteriorPointResult:
    """The last iterate (x, s, z) of every program, its criteria, which programs converged and
    the iterations run (per program, until it stopped). ``interior``: whether (x, s, z) is an interior
    iterate to resume from (False for a solve on candidate rows widened to all rows, whose rows left out
    hold z = 0: solvers/candidate_rows.py)."""

    x: Primal
    s: Conic
    z: Conic
    criteria: Criteria
    converged: torch.Tensor
    iterations: torch.Tensor
    interior: bool = True

    @property
    def W(self) -> torch.Tensor:
        """The neurons (batch, 2P, k): S groups, then T groups."""
        return self.x.W

    def select(self, keep: torch.Tensor) -> "InteriorPointResult":
        """The programs where ``keep`` (batch,) holds, as a smaller batch."""
        return InteriorPointResult(*(part.select(keep) for part in (self.x, self.s, self.z, self.criteria)),
                                   self.converged[keep], self.iterations[keep], self.interior)

    def replaced(self, keep: torch.Tensor, other: "InteriorPointResult") -> "InteriorPointResult":
        """This result with the programs where ``keep`` holds taken from ``other`` (one per such
        program, in order; their iterations added)."""
        index = torch.nonzero(keep).flatten()
        parts = _index_copied((self.x, self.s, self.z, self.criteria), index, (other.x, other.s, other.z,
                                                                               other.criteria))
        return InteriorPointResult(*parts, self.converged.index_copy(0, index, other.converged),
                                   self.iterations.index_add(0, index, other.iterations),
                                   self.interior and other.interior)


def _index_copied(wholes, index: torch.Tensor, parts) -> list:
    """Each vector of ``wholes`` (x, s, z, criteria of a batch) with its programs ``index`` taken from
    the matching vector of ``parts`` (one program per index)."""
    return [whole.map(lambda a, b: a.index_copy(0, index, b), part) for whole, part in zip(wholes, parts)]


def _shifted_into_cone(u: Conic) -> Conic:
    """CVXOPT's initial shift per program: u itself if strictly inside K, else u + (1 - m) e,
    m its smallest eigenvalue."""
    smallest = torch.stack([t.flatten(1).amin(1) for t in u.orthants()]
                           + [soc_min_eigenvalue(u.cones).amin(1)]).amin(0)
    shift = torch.where(smallest > 0, torch.zeros_like(smallest), 1 - smallest)
    return _shifted(u, shift)


def _initial_point(problem: ConvexBNProblem) -> tuple[Primal, Conic, Conic]:
    """x minimizing phi's quadratic model at 0 plus ||G x - h||^2 / 2 (identity scaling),
    s = h - G x and z = G x - h, both shifted into K."""
    zero = zero_primal(problem)
    h = constraint_offset(problem)
    ones = _identity(h)
    identity = NewtonSystem(problem, zero, ones, ones, NTScaling(torch.ones_like(h.cones[..., 0]), ones.cones))
    x = identity.solve_x(constraint_adjoint(problem, h) - objective_gradient(problem, zero))
    residual = constraint_map(problem, x) - h
    return x, _shifted_into_cone(-residual), _shifted_into_cone(residual)


def _zero_network(problem: ConvexBNProblem, like: Primal) -> Primal:
    """The point W = 0, tau = 0 (hinge: the slacks xi = 1 that f = 0 needs)."""
    return Primal(torch.zeros_like(like.X), None if like.xi is None else torch.ones_like(like.xi))


class _StepLength:
    """The largest alpha per program with s + alpha ds and z + alpha dz in K, for one iterate (s, z) and
    any directions: the largest step rate 1 / alpha of any part, the cones of both in one stacked call
    with their J u and u^T J u formed once per iterate."""

    def __init__(self, s: Conic, z: Conic) -> None:
        self.orthants = s.orthants() + z.orthants()
        self.cones = torch.stack([s.cones, z.cones])
        self.reflected = reflect(self.cones)
        self.det = (self.cones * self.reflected).sum(-1)

    def __call__(self, ds: Conic, dz: Conic) -> torch.Tensor:
        rates = [orthant_step_rate(u, d) for u, d in zip(self.orthants, ds.orthants() + dz.orthants())]
        cones = soc_step_rate(self.cones, torch.stack([ds.cones, dz.cones]), self.reflected, self.det)
        return max_step(torch.stack([*rates, cones.amax(-1).amax(0)]).amax(0))


def _identity(u: Conic) -> Conic:
    """e of K shaped like u: ones in the orthant parts, (1, 0) in the cones."""
    e = u.map(torch.ones_like)
    e.cones = identity_like(u.cones)
    return e


def _shifted(u: Conic, t: torch.Tensor) -> Conic:
    """u + t e, t one per program (batch,): t added to the orthant parts and to each cone's first entry."""
    out = Conic(u.rows, None, u.slack, u.margin).map(lambda part: part + per_program(t, part))
    out.cones = u.cones.clone()
    out.cones[..., 0] += t[:, None]
    return out


def _scaled_complementarity(system: NewtonSystem, s: Conic, divide: JordanDivision, c: Conic,
                            base: Conic | None = None) -> Conic:
    """V^-1 (lambda \\ c) (plus ``base``), the complementarity right-hand side of ``NewtonSystem.solve``:
    in the orthant parts c / s (lambda = sqrt(s z), V^-1 = sqrt(z / s)), so lambda's orthant parts are
    never formed; ``divide``: the cones' Jordan division by lambda."""
    if base is None:
        out = c.map(torch.div, s)
        out.cones = system.scaling.apply_inverse(divide(c.cones))
        return out
    out = Conic(base.rows, None, base.slack, base.margin).map(torch.addcdiv, c, s)
    out.cones = base.cones + system.scaling.apply_inverse(divide(c.cones))
    return out


def _centering(second: Conic, target: torch.Tensor) -> Conic:
    """target e - second, target one per program (batch,)."""
    out = Conic(second.rows, None, second.slack, second.margin).map(lambda part: per_program(target, part) - part)
    out.cones = -second.cones
    out.cones[..., 0] += target[:, None]
    return out


def _scaled_product(system: NewtonSystem, u: Conic, v: Conic) -> Conic:
    """(V^-1 u) o (V v): in the orthant parts u * v."""
    return _jordan(u, v, torch.mul, lambda a, b: jordan_product(system.scaling.apply_inverse(a),
                                                                system.scaling.apply(b)))


def _identity_dot(u: Conic) -> torch.Tensor:
    """e^T u per program: the orthant entries and the cones' first entries summed."""
    return sum(part.flatten(1).sum(1) for part in u.orthants()) + u.cones[..., 0].sum(1)


def _centrality_corrector(system: NewtonSystem, s: Conic, z: Conic, ds: Conic, dz: Conic, alpha: torch.Tensor,
                          target: torch.Tensor) -> Conic:
    """Gondzio's centrality corrector (Gondzio, "Multiple centrality corrections in a primal-dual method
    for linear programming", 1996), for cones on the eigenvalues of the scaled product: at the trial
    step CORRECTOR_STEP of alpha, the complementarity products v = (V^-1 s) o (V z) of the trial point
    are moved into the box CORRECTOR_BOX times ``target`` (sigma mu), each decrease at most its upper
    end; returns that change of v, the right-hand side of a Newton step without residuals."""
    trial = (CORRECTOR_STEP[0] * alpha + CORRECTOR_STEP[1]).clamp(max=1.0)
    products = _scaled_product(system, s.plus_scaled(trial, ds), z.plus_scaled(trial, dz))
    low, high = (CORRECTOR_BOX[0] * target, CORRECTOR_BOX[1] * target)
    out = Conic(products.rows, None, products.slack, products.margin).map(
        lambda v: box_correction(v, per_program(low, v), per_program(high, v)))
    out.cones = soc_box_correction(products.cones, low[:, None], high[:, None])
    return out


def _jordan(u: Conic, v: Conic, orthant, cone) -> Conic:
    out = u.map(orthant, v)
    out.cones = cone(u.cones, v.cones)
    return out


@torch.inference_mode()
def interior_point(problem: ConvexBNProblem, settings: InteriorPointSettings = InteriorPointSettings(),
                   start: tuple[Primal, Conic, Conic] | None = None,
                   on_iteration: Callable[[], None] | None = None) -> InteriorPointResult:
    """Solve every program of the batch (see the module docstring); stopped programs leave the batch,
    so a batch costs about the sum of its programs' iterations, not B times the largest. A program
    whose Newton matrix breaks down (``Breakdown``: float64's limit) stops at its best iterate and the
    others go on, so each program's iterates are those it has alone. ``start``:
    an interior iterate (x, s, z) of the same programs to continue from instead of the initial
    point (a result's, to resume it at a tighter tolerance). ``on_iteration``: called at the start of
    every iteration (``threads.AdaptiveThreads`` times them). Runs in ``torch.inference_mode``
    (without autograd's bookkeeping a 32x6x32 solve took 0.041 s instead of 0.050 s): its
    results are inference tensors, to be cloned before autograd records them."""
    x, s, z = _initial_point(problem) if start is None else start
    batch = problem.batch
    iterations = torch.zeros(batch, dtype=torch.long, device=problem.A.device)
    degree = s.degree()
    mu_start = s.dot(z) / degree
    # the zero network W = 0 and its criteria, against the best lower bound so far: its own multipliers'
    # (lam = -loss'(0): y = 0, or beta above every group's dual norm there) to begin with
    zero = _zero_network(problem, x)
    # the criteria and the KKT residual (the next Newton step's right-hand side) of each iterate, together
    (measured, r_x, r_z), at_zero = evaluate(problem, x, s, z), criteria(problem, zero, z)
    done = torch.zeros(batch, dtype=torch.bool, device=problem.A.device)
    best = _Best(x, s, z, measured, settings.violation_tol)
    # the batch shrinks to the programs still running (indices ``running``); the stopped ones' best
    # iterates are written into the full-size ``final`` (x, s, z, criteria)
    running = torch.arange(batch, device=problem.A.device)
    final = [best.x, best.s, best.z, best.criteria]

    def settle(stopped: torch.Tensor) -> None:
        final[:] = _index_copied(final, running[stopped],
                                 [part.select(stopped) for part in (best.x, best.s, best.z, best.criteria)])

    for iteration in range(settings.max_iterations):
        if on_iteration is not None:
            on_iteration()
        met = measured.met(settings.tol, settings.violation_tol)
        # iterates converging to W = 0 keep a violation relative to their own size however small W gets
        # (measured: 5e-4 at ||W|| = 1e-124 after 100 iterations, gap 0): W = 0 stops a program where
        # a lower bound certifies it (before the first step where its own multipliers do) and the
        # iterate itself does not meet the test
        at_zero = Criteria.of(at_zero.objective, torch.maximum(at_zero.lower_bound, measured.lower_bound),
                              at_zero.violation)
        zero_met = ~(done | met) & at_zero.met(settings.tol, settings.violation_tol)
        if bool(zero_met.any()):
            best.take(zero_met, zero, at_zero)
        done = done | met | zero_met | (best.stalled >= settings.patience)
        if logger.isEnabledFor(logging.DEBUG):  # its arguments synchronize with the device
            logger.debug("interior point: iteration %d, %d of %d stopped, largest gap %.2e", iteration,
                         batch - len(running) + int(done.sum()), batch, float(measured.relative_gap.max()))
        system = None
        while not bool(done.all()):
            if bool(done.any()):
                settle(done)
                keep = ~done
                running, problem, best, done = running[keep], problem.select(keep), best.select(keep), done[keep]
                mu_start = mu_start[keep]
                x, s, z, measured, r_x, r_z, zero, at_zero = (part.select(keep) for part in
                                                              (x, s, z, measured, r_x, r_z, zero, at_zero))
            try:
                system = NewtonSystem(problem, x, s, z, dense_curvature=settings.dense_curvature)
                break
            except Breakdown as failure:  # those programs stop at their best iterate, the others go on
                logger.debug("interior point: %s at iteration %d", failure, iteration)
                done = failure.programs
        if system is None:
            break
        mu = s.dot(z) / degree
        divide = JordanDivision(system.scaling.apply(z.cones))  # by lambda = V z in the cones
        minus_z, step_length = -z, _StepLength(s, z)

        def direction(weight: float | torch.Tensor, scaled: Conic, refine: bool) -> tuple[Primal, Conic, Conic]:
            """Newton step to (1 - weight) of the residuals with dz + V^-2 ds = ``scaled``
            (``_scaled_complementarity``; ``refine``: iteratively refined, for the step taken; the
            predictor only sets sigma)."""
            b_z = None if isinstance(weight, float) and weight == 0 else r_z.scaled(-weight)
            return system.solve(r_x.scaled(-weight), b_z, scaled, refine)

        # the affine step: lambda o (V dz + V^-1 ds) = -lambda o lambda, i.e. dz + V^-2 ds = -V^-1 lambda = -z
        dx, dz, ds = direction(1.0, minus_z, False)
        alpha = step_length(ds, dz).clamp(max=1.0)
        # Mehrotra's corrector: the second-order term (V^-1 ds) o (V dz) of the affine step, whose e^T is
        # ds^T dz; with s^T dz + z^T ds = -s^T z (the affine step's own equation) the affine point's
        # (s + alpha ds)^T (z + alpha dz) is (1 - alpha) s^T z + alpha^2 ds^T dz
        second = _scaled_product(system, ds, dz)
        mu_affine = (1 - alpha) * mu + alpha * alpha * _identity_dot(second) / degree
        sigma = (mu_affine / mu).clamp(0, 1) ** settings.centering_exponent
        refine = bool(((measured.relative_gap < REFINE_GAP) | (mu < REFINE_MU * mu_start)).any())
        dx, dz, ds = direction(1 - sigma, _scaled_complementarity(system, s, divide, _centering(second, mu * sigma),
                                                                  base=minus_z), refine)
        alpha = (settings.step_fraction * step_length(ds, dz)).clamp(max=1.0)
        for _ in range(settings.correctors):
            trying = ~done & (alpha < CORRECTOR_BELOW)
            if not bool(trying.any()):
                break
            correction = _centrality_corrector(system, s, z, ds, dz, alpha, sigma * mu)
            # unrefined: on the sweep's 18 programs of the block's sizes, three losses, the same iterations
            # and objectives within 2e-12 (hinge 1.5e-8 at its tol 1e-5) as refined, one solve fewer
            cx, cz, cs = direction(0.0, _scaled_complementarity(system, s, divide, correction), False)
            corrected = (dx + cx, dz + cz, ds + cs)
            wider = (settings.step_fraction * step_length(corrected[2], corrected[1])).clamp(max=1.0)
            better = trying & (wider >= CORRECTOR_GAIN * alpha)
            if not bool(better.any()):
                break
            dx, dz, ds = (new.where(better, old) for new, old in zip(corrected, (dx, dz, ds)))
            alpha = torch.where(better, wider, alpha)
        alpha = torch.where(done | ~torch.isfinite(alpha), torch.zeros_like(alpha), alpha)
        def stepped(alpha: torch.Tensor) -> tuple[Primal, Conic, Conic]:
            return x.plus_scaled(alpha, dx), s.plus_scaled(alpha, ds), z.plus_scaled(alpha, dz)

        evaluated = evaluate(problem, *stepped(alpha))
        if problem.loss == "logistic":
            residual = r_x.norm()
            for _ in range(LINE_SEARCH_STEPS):
                worse = ~(evaluated[1].norm() <= (1 - LINE_SEARCH_DECREASE * alpha * (1 - sigma)) * residual)
                if not bool(worse.any()):
                    break
                alpha = torch.where(worse, alpha / 2, alpha)
                evaluated = evaluate(problem, *stepped(alpha))
        x, s, z = stepped(alpha)
        iterations.index_add_(0, running, (~done).long())
        measured, r_x, r_z = evaluated
        best.update(x, s, z, measured)
    settle(torch.ones_like(done))
    x, s, z, measured = final
    return InteriorPointResult(x, s, z, measured, measured.met(settings.tol, settings.violation_tol), iterations)


def resumed_on(problem: ConvexBNProblem, result: InteriorPointResult, keep: torch.Tensor,
               settings: InteriorPointSettings) -> tuple[ConvexBNProblem, InteriorPointResult]:
    """The method resumed from ``result`` on the programs where ``keep`` holds: their problem and result
    (started afresh where ``result`` holds no interior iterate)."""
    subset = problem.select(keep)
    if not result.interior:
        return subset, interior_point(subset, settings)
    chosen = result.select(keep)
    return subset, interior_point(subset, settings, start=(chosen.x, chosen.s, chosen.z))


def with_dense_route(settings: InteriorPointSettings) -> InteriorPointSettings:
    """``settings`` with the dense factorization past DENSE_CURVATURE at the latest."""
    return replace(settings, dense_curvature=min(settings.dense_curvature, DENSE_CURVATURE))


def finished_with_dense_route(problem: ConvexBNProblem, result: InteriorPointResult,
                              settings: InteriorPointSettings, short: torch.Tensor | None = None
                              ) -> InteriorPointResult:
    """``result`` of a solve with ``settings``; where those skip the dense route past DENSE_CURVATURE
    (Woodbury alone: for the hinge loss, programs that stall at certified gaps of about 1e-6) the programs
    ``short`` (default: those that stopped short of their tolerances) resume from their iterate with it,
    unless their Newton matrix is too large to factorize densely (``newton.DENSE_MAX_DIMENSION``: they stay
    short)."""
    short = ~result.converged if short is None else short
    if not settings.skips_dense_route or not bool(short.any()):
        return result
    if not newton.densely_factorizable(problem):
        logger.warning("interior point: %d program(s) stopped short of tol (relative gap %.1e) and are not resumed "
                       "with the dense factorization: their Newton matrix of dimension %d exceeds %d",
                       int(short.sum()), float(result.criteria.relative_gap[short].max()),
                       newton.dense_dimension(problem), newton.DENSE_MAX_DIMENSION)
        return result
    return result.replaced(short, resumed_on(problem, result, short, with_dense_route(settings))[1])


class _Best:
    """The iterate of every program with the smallest certified gap among those within the
    violation tolerance (the last one where none is), and the iterations since it improved.
    Scored against the stopping test's own violation tolerance, so an iterate that meets the
    test is never replaced by one that does not."""

    def __init__(self, x: Primal, s: Conic, z: Conic, measured: Criteria, violation_tol: float) -> None:
        self.x, self.s, self.z, self.criteria = x, s, z, measured
        self.violation_tol = violation_tol
        self.stalled = torch.zeros_like(measured.objective, dtype=torch.long)

    def select(self, keep: torch.Tensor) -> "_Best":
        """The programs where ``keep`` (batch,) holds."""
        chosen = _Best(*(part.select(keep) for part in (self.x, self.s, self.z, self.criteria)), self.violation_tol)
        chosen.stalled = self.stalled[keep]
        return chosen

    def score(self, measured: Criteria) -> torch.Tensor:
        return torch.where(measured.violation <= self.violation_tol, measured.relative_gap,
                           torch.full_like(measured.relative_gap, float("inf")))

    def take(self, chosen: torch.Tensor, x: Primal, measured: Criteria) -> None:
        """The point x with its criteria as the best of the programs ``chosen`` (their s and z kept)."""
        self.x, self.criteria = x.where(chosen, self.x), measured.where(chosen, self.criteria)

    def update(self, x: Primal, s: Conic, z: Conic, measured: Criteria) -> None:
        old, new = self.score(self.criteria), self.score(measured)
        better = (new < old) | (torch.isinf(old) & torch.isinf(new))
        self.x, self.s, self.z = x.where(better, self.x), s.where(better, self.s), z.where(better, self.z)
        self.criteria = measured.where(better, self.criteria)
        counting = self.criteria.relative_gap <= STALL_GAP
        self.stalled = torch.where(better | ~counting, torch.zeros_like(self.stalled), self.stalled + 1)
