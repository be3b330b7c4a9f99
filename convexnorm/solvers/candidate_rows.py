"""The orthant rows a pattern's constraints need: its cell's facets, found among the rows nearest a point inside.

Pattern i's constraints E_i * (A w) >= 0 cut out a polyhedral cone (the cell of the arrangement of
the rows' hyperplanes). Only its facets matter, and in an arrangement of n hyperplanes in R^k a cell
has about 2 (k - 1) of them on average over all cells (each facet bounds two cells; docs/math.md,
section 3), whatever n is; sampled gates land in large cells more often, which have more. Measured on
the benchmarks' data (``python benchmarks/bench_facets.py``, 20 patterns per size): 33-66 of 1000 rows
and 31-64 of 200 at k = 11, 12-30 of 300 at k = 6. The facets lie among the hyperplanes nearest a
point deep inside the cell: there every one of them was among the 91, 89 and 39 rows nearest the
point that ``inner_points`` finds (ascent on the soft minimum of the rows' normalized margins at a
falling temperature). So each pattern keeps the ``ROWS_PER_WIDTH`` k rows nearest that point (132 at
k = 11, 72 at k = 6).

The program on those rows is a relaxation of the whole one, the same program where it holds all
the facets. That is checked, not assumed: ``solve_relaxed`` solves the relaxation, measures the
answer on every row, and solves the whole program instead for a program whose answer violates a
row left out. The estimators (``solve_native``) and the block (``InteriorPointSolve``) solve through it.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from convexnorm.solvers.interior_point import InteriorPointResult, InteriorPointSettings, interior_point
from convexnorm.solvers.kkt import Conic, bounded_criteria
from convexnorm.solvers.problem import ConvexBNProblem
from convexnorm.solvers.working_set import finished

logger = logging.getLogger("convexnorm")

#: Candidate rows per pattern, per column of A (k); the relaxation is used where that is at most
#: half of the n rows.
ROWS_PER_WIDTH = 12
#: Steps of ascent on the soft minimum of the margins, its temperature (on margins of unit rows) from
#: the first to the last step, geometrically, and the step (times the temperature's fraction of its start).
ASCENT_STEPS = 30
ASCENT_TEMPERATURES = (0.05, 1e-3)
ASCENT_RATE = 0.5


def inner_points(A: torch.Tensor, masks: torch.Tensor, steps: int = ASCENT_STEPS) -> torch.Tensor:
    """A unit point c_i deep inside each pattern's cell {w : E_i * (A w) >= 0}, (batch, P, k): from the
    mean signed unit row, ``steps`` of ascent on the soft minimum of the margins E_ia (a_a . c) / ||a_a||
    at a falling temperature (ASCENT_TEMPERATURES). Not certified inside; it only ranks the rows."""
    unit = A / torch.linalg.norm(A, dim=-1, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
    # patterns by samples (batch, P, n): the soft minimum reduces along contiguous rows (0.16-0.26 s against
    # 0.48-0.72 s over the samples' dimension at n = P = 1000)
    signs = (2 * masks - 1).transpose(-1, -2).contiguous()
    unit_T = unit.transpose(-1, -2).contiguous()
    c = torch.nn.functional.normalize(signs @ unit, dim=-1)
    first, last = ASCENT_TEMPERATURES
    for step in range(steps):
        temperature = first * (last / first) ** (step / max(steps - 1, 1))
        margins = (c @ unit_T).mul_(signs)
        weights = torch.softmax(margins.mul_(-1 / temperature), dim=-1).mul_(signs)
        c = torch.nn.functional.normalize(torch.baddbmm(c, weights, unit, alpha=ASCENT_RATE * temperature / first),
                                          dim=-1)
    return c


def candidate_rows(problem: ConvexBNProblem, count: int) -> torch.Tensor:
    """The ``count`` rows of each pattern nearest its inner point (``inner_points``) by the angle to their
    hyperplanes, (batch, P, count), ascending (zero rows of A, whose constraints hold for every w, last)."""
    A = problem.A
    norms = torch.linalg.norm(A, dim=-1, keepdim=True)
    distance = (A @ inner_points(A, problem.masks).transpose(-1, -2)).abs() / norms.clamp_min(torch.finfo(A.dtype).tiny)
    distance = torch.where(norms > 0, distance, torch.inf)
    return distance.topk(count, dim=1, largest=False).indices.sort(dim=1).values.transpose(-1, -2).contiguous()


def candidate_count(problem: ConvexBNProblem) -> int | None:
    """The candidate rows per pattern, ROWS_PER_WIDTH k, or None where that is more than half of the n rows
    (the whole program is solved)."""
    count = ROWS_PER_WIDTH * problem.width
    return None if 2 * count > problem.samples else count


def relaxation(problem: ConvexBNProblem) -> ConvexBNProblem | None:
    """``problem`` on its ``candidate_count`` rows per pattern, or None where it keeps all of them."""
    count = candidate_count(problem)
    return None if count is None else problem.relaxed(candidate_rows(problem, count))


def full_rows(relaxed: ConvexBNProblem, values: torch.Tensor, fill: float) -> torch.Tensor:
    """Constraint-row values of ``relaxed`` (batch, c, 2P) on all n rows (batch, n, 2P), ``fill`` on the others."""
    batch, P = relaxed.batch, relaxed.patterns
    index = relaxed.candidates.transpose(-1, -2).repeat(1, 1, 2)
    out = values.new_full((batch, relaxed.samples, 2 * P), fill)
    return out.scatter_(1, index, values)


def widened(problem: ConvexBNProblem, relaxed: ConvexBNProblem, result: InteriorPointResult,
             settings: InteriorPointSettings) -> InteriorPointResult:
    """An interior-point result of ``relaxed`` on the whole ``problem``: the multipliers z zero on the rows
    left out and their slacks s one (read by the active sets and the dual bound, which are exact with G
    zero there; not an interior iterate, so a resumption starts afresh), criteria measured on every row
    against the relaxation's lower bound (a bound on the whole program's optimum too), converged where
    they are met."""
    s, z = result.s, result.z
    s = Conic(full_rows(relaxed, s.rows, 1.0), s.cones, s.slack, s.margin)
    z = Conic(full_rows(relaxed, z.rows, 0.0), z.cones, z.slack, z.margin)
    measured = bounded_criteria(problem, result.W, result.criteria.lower_bound)
    return InteriorPointResult(result.x, s, z, measured, measured.met(settings.tol, settings.violation_tol),
                               result.iterations, interior=False)


def solve_relaxed(problem: ConvexBNProblem, settings: InteriorPointSettings,
                  on_iteration: Callable[[], None] | None = None,
                  finish: Callable[[ConvexBNProblem, InteriorPointResult], InteriorPointResult] | None = None
                  ) -> InteriorPointResult:
    """``interior_point``, then ``finish`` (default: ``working_set.finished``), on the candidate rows
    (``relaxation``) where that is smaller, its answer measured on every row; a program whose answer violates
    a row left out (beyond violation_tol) is solved again whole. The result is the whole program's (rows
    (batch, n, 2P))."""
    def solved(program: ConvexBNProblem) -> InteriorPointResult:
        result = interior_point(program, settings, on_iteration=on_iteration)
        if finish is None:
            return finished(program, result, settings)
        return finish(program, result)

    relaxed = relaxation(problem)
    if relaxed is None:
        return solved(problem)
    result = widened(problem, relaxed, solved(relaxed), settings)
    missed = result.criteria.violation > settings.violation_tol
    if bool(missed.any()):
        logger.info("candidate rows: %d of %d program(s) violate a row left out (%.1e); solved whole",
                    int(missed.sum()), problem.batch, float(result.criteria.violation.max()))
        result = result.replaced(missed, solved(problem.select(missed)))
    return result
