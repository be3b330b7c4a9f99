"""A program that stops short of its tolerance, solved again on its working set and certified whole.

The hinge loss's interior-point method can stall a little above tol on a program with many groups (every
pattern of 16 samples in R^3: 2302 groups, 60 of them active at the optimum in sets of near-equal norms
around shared rays, where the optimum is not unique). The same program restricted to the patterns of its
active groups (``active_groups``) is smaller and better conditioned: solved again from its initial point, its
solution with every other group zero is a point of the whole program, and the dual bound certifies it
there once every left-out group is dual feasible. Each such group's row multipliers G_j >= 0 are taken
where they minimize its dual norm ||A^T (o_j M_j lam + E_j G_j)|| (``least_multipliers``); a group whose
least dual norm still exceeds beta belongs in the working set, which grows by those groups' patterns and
is solved again, WORKING_SET_ROUNDS times at most, while it holds at most WORKING_SET_FRACTION of the
patterns (docs/math.md, section 4 for the bound; docs/benchmarks.md, session 30 for the measurements).
The estimators also polish a program whose polish is refused from its working set's solution, of any size
(solvers/native.py): where the optimum's neurons are not unique, the polish can fail from one iterate and
hold from another.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from convexnorm.solvers.active_sets import active_groups
from convexnorm.solvers.cones import cone_projection
from convexnorm.solvers.interior_point import (InteriorPointResult, InteriorPointSettings, finished_with_dense_route,
                                               interior_point)
from convexnorm.solvers.kkt import Conic, Primal, criteria, multipliers
from convexnorm.solvers.problem import ConvexBNProblem

logger = logging.getLogger("convexnorm")

#: Solves of the working set per program at most, each after the groups that belong in it joined.
WORKING_SET_ROUNDS = 3
#: The working set is solved again only while it holds at most this fraction of the patterns; a larger one
#: costs about a cold solve of the whole program, and the dense route's resumption from the iterate costs less
#: there (hinge n = 1000, r = 10, 100 patterns: 68 in the working set, the fit 3.6 s through it against 1.2-1.4 s
#: by the dense resumption; every pattern of 16 samples in R^3: 108 of 1151, 0.3 s against 179 s).
WORKING_SET_FRACTION = 0.25
#: The working set is solved to this fraction of the tolerance, so that the whole program's certificate,
#: whose left-out groups take their least multipliers, still meets it.
WORKING_SET_TOL_FACTOR = 0.1


def least_multipliers(problem: ConvexBNProblem, b: int, targets: torch.Tensor, group: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Of group ``group`` of program ``b``: the projection of its target o_j A^T (M_j lam) (``targets`` (2P, k),
    ``problem.predictions_adjoint(lam)[b]``) onto its cone {w : E_j * (A w) >= 0} on its constraint rows,
    whose norm is the group's least dual norm, and the multipliers G_j >= 0 of those rows that attain it
    (``cone_projection``), as tensors like ``targets``."""
    rows = problem.signed_group_rows(b, group).cpu().numpy()
    projection, least = cone_projection(targets[group].cpu().numpy(), rows)
    return (torch.as_tensor(projection, dtype=targets.dtype, device=targets.device),
            torch.as_tensor(least, dtype=targets.dtype, device=targets.device))


def zero_groups_least_multipliers(problem: ConvexBNProblem, point: Primal, z: Conic, limit: float
                                  ) -> tuple[torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Of one program at ``point`` with multipliers z: its row multipliers z.rows[0] (c, 2P), with those of each
    zero group whose dual norm ||A^T (o_j M_j lam + E_j G_j)|| exceeds ``limit`` replaced by its least ones
    (``least_multipliers``; a copy where any is), and the groups whose least dual norm still exceeds ``limit``:
    group -> (its projection, its least multipliers)."""
    lam = problem.dual_multipliers(multipliers(problem, point, z))
    zero = ~(point.W[0] != 0).any(-1)
    over = torch.nonzero(zero & (problem.group_dual_norms(lam, z.rows)[0] > limit)).flatten().tolist()
    G = z.rows[0]
    if not over:
        return G, {}
    G = G.clone()
    targets = problem.predictions_adjoint(lam)[0]  # o_j A^T (M_j lam) of every group (2P, k)
    violated = {}
    for group in over:
        projection, G[:, group] = least_multipliers(problem, 0, targets, group)
        if float(torch.linalg.norm(projection)) > limit:
            violated[group] = (projection, G[:, group])
    return G, violated


def finished(problem: ConvexBNProblem, result: InteriorPointResult, settings: InteriorPointSettings,
             short: torch.Tensor | None = None) -> InteriorPointResult:
    """``result`` of a solve with ``settings``; where those skip the dense route past DENSE_CURVATURE
    (Woodbury alone), the programs ``short`` (default: those that stopped short of their tolerances) are
    solved again on their working sets (``on_working_set``), and those still short resume from their iterate
    with the dense route (``finished_with_dense_route``)."""
    short = ~result.converged if short is None else short.clone()
    if not settings.skips_dense_route or not bool(short.any()):
        return result
    for b in torch.nonzero(short).flatten().tolist():
        solved = on_working_set(problem, result, b, settings)
        if solved is not None and bool(solved.converged[0]):
            result, short[b] = result.replaced(problem.mask_of(b), solved), False
    return finished_with_dense_route(problem, result, settings, short)


@torch.inference_mode()
def on_working_set(problem: ConvexBNProblem, result: InteriorPointResult, b: int, settings: InteriorPointSettings,
                   fraction: float = WORKING_SET_FRACTION) -> InteriorPointResult | None:
    """Program ``b`` of ``result`` solved again on the patterns of its active groups (the module docstring),
    while they are at most ``fraction`` of its patterns, as a result of the whole program (one program; not an
    interior iterate: its left-out groups are zero, with (beta, 0) in their dual cones and slacks one on their
    rows), certified there (``converged``: where that meets ``settings``' tolerances); None where the working
    set grows past ``fraction`` (or holds every pattern: the program itself, already solved) or still leaves out
    groups that belong in it after WORKING_SET_ROUNDS solves."""
    one = problem.mask_of(b)
    program = problem.select(one)
    base = result.select(one)
    groups = active_groups(base)
    P = program.patterns
    patterns = groups[0, :P] | groups[0, P:]
    tighter = replace(settings, tol=settings.tol * WORKING_SET_TOL_FACTOR)
    for _ in range(WORKING_SET_ROUNDS):
        if not bool(patterns.any()) or int(patterns.sum()) > fraction * P or bool(patterns.all()):
            return None
        whole = _embedded(program, patterns, interior_point(program.patterns_subset(patterns), tighter), base)
        joined = _dual_feasible(program, whole.x, whole.z)
        if joined is None:
            measured = criteria(program, whole.x, whole.z)
            met = measured.met(settings.tol, settings.violation_tol)
            logger.info("working set: program %d on %d of %d patterns, relative gap %.1e on the whole program",
                        b, int(patterns.sum()), P, float(measured.relative_gap[0]))
            return replace(whole, criteria=measured, converged=met)
        patterns[joined] = True
    return None


def _embedded(program: ConvexBNProblem, patterns: torch.Tensor, reduced: InteriorPointResult,
              base: InteriorPointResult) -> InteriorPointResult:
    """``reduced``, the solution of one ``program`` restricted to ``patterns``, on the whole program: the other
    groups zero, with ``base``'s row multipliers (``_dual_feasible`` corrects them), (beta, 0) in their dual
    cones and slacks one on their rows; its iterations its own (``InteriorPointResult.replaced`` adds them)."""
    index = torch.nonzero(patterns).flatten()
    groups = torch.cat([index, program.patterns + index])

    def spread(part: torch.Tensor, rest: torch.Tensor, dim: int) -> torch.Tensor:
        """``rest`` with the working set's groups (along ``dim``) taken from ``part``."""
        return rest.index_copy(dim, groups, part)

    X = spread(reduced.x.X, torch.zeros_like(base.x.X), 1)
    dual_cones = torch.zeros_like(X)
    dual_cones[..., 0] = program.beta[:, None]
    s = Conic(spread(reduced.s.rows, torch.ones_like(base.s.rows), 2), spread(reduced.s.cones, torch.zeros_like(X), 1),
              reduced.s.slack, reduced.s.margin)
    z = Conic(spread(reduced.z.rows, base.z.rows, 2), spread(reduced.z.cones, dual_cones, 1), reduced.z.slack,
              reduced.z.margin)
    return InteriorPointResult(Primal(X, reduced.x.xi), s, z, reduced.criteria, reduced.converged,
                               reduced.iterations, interior=False)


def _dual_feasible(program: ConvexBNProblem, x: Primal, z: Conic) -> torch.Tensor | None:
    """Each zero group of one ``program`` whose dual norm at (x, z) exceeds beta takes its least multipliers
    (``zero_groups_least_multipliers``, written into z.rows); returns the patterns (indices) of the groups whose
    least dual norm still exceeds beta, which belong in the working set, or None where there are none."""
    z.rows[0], violated = zero_groups_least_multipliers(program, x, z, float(program.beta[0]))
    if not violated:
        return None
    return torch.tensor(sorted({group % program.patterns for group in violated}), dtype=torch.long,
                        device=program.A.device)
