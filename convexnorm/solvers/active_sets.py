"""The active sets of an interior-point iterate: the groups and constraint rows its primal and dual sides
separate into (``active_sets``), with duplicate rows of A (duplicate samples) taken as one constraint
(``duplicate_sets``). The polish (solvers/implicit.py) starts from them, and the working set
(solvers/working_set.py) is their groups' patterns."""

from __future__ import annotations

import torch

from convexnorm.solvers.interior_point import InteriorPointResult
from convexnorm.solvers.problem import ConvexBNProblem

#: Rows of A closer than this fraction of its largest row's norm are duplicates (``_duplicates_shared``):
#: duplicate samples differ after whitening by rounding (1.5e-16 measured).
DUPLICATE_RTOL = 1e-10
#: ``duplicate_sets`` compares this many rows with all at a time.
DUPLICATE_CHUNK = 1024


def active_sets(problem: ConvexBNProblem, result: InteriorPointResult) -> tuple[torch.Tensor, torch.Tensor]:
    """The active groups (batch, 2P) and rows (batch, n, 2P) read off an interior-point iterate of ``problem``,
    where its primal and dual sides separate: rows whose multiplier exceeds their slack, at most k - 1
    distinct rows per group (those with the largest ratio z / s), groups whose tau exceeds their dual cone's
    distance to its boundary. A nonzero W_j (k) is orthogonal to its active rows, and rows of data
    in general position span k dimensions by any k of them, so more than k - 1 are never all active:
    such a group is still shrinking to zero, or holds a row whose slack and multiplier both vanish
    (measured at 128x16x128: a 17th row with s = 5e-7, z = 6e-6 beside 16 with z / s > 1e5). Duplicate
    rows of A (``duplicate_sets``: duplicate samples) are one constraint: a set's copies are active
    together, by its largest ratio, and count once (counted each, the cap dropped active rows of a 64x8x64
    batch with 16 duplicated samples, where the polish was then refused on every batch: docs/benchmarks.md,
    session 27)."""
    groups = active_groups(result)
    ratio = result.z.rows / result.s.rows
    capacity = result.W.shape[-1] - 1
    first = duplicate_sets(problem.A)  # (batch, n)
    own = first_of_set(first)
    if not bool(own.all()):  # each row takes its set's largest ratio
        index = first[..., None].expand_as(ratio)
        ratio = torch.full_like(ratio, -torch.inf).scatter_reduce(1, index, ratio, "amax").gather(1, index)
    rows = ratio > 1
    if int(own.sum(1).amax()) > capacity:  # the sets ranked by their first rows
        rows &= ratio >= torch.where(own[..., None], ratio, -torch.inf).topk(capacity, dim=1).values[:, -1:]
    return groups, rows


def active_groups(result: InteriorPointResult) -> torch.Tensor:
    """The active groups (batch, 2P) of an interior-point iterate (``active_sets``'s): those whose tau exceeds
    their dual cone's distance to its boundary (any program, its candidate rows' relaxations too)."""
    cones = result.z.cones
    return result.x.tau > cones[..., 0] - torch.linalg.norm(cones[..., 1:], dim=-1)


def duplicate_sets(A: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """For rows of A (..., n, k) the index (..., n) of the first row of their set of duplicates, the rows within
    DUPLICATE_RTOL of the largest row's norm of it (duplicate samples, equal after whitening only to rounding)
    and, given ``labels`` (..., n), with the same label. DUPLICATE_CHUNK rows at a time (an estimator's n x n
    distances at n = 5000 would take 200 MB)."""
    largest = torch.linalg.norm(A, dim=-1).amax(-1)[..., None, None]
    firsts = []
    for start in range(0, A.shape[-2], DUPLICATE_CHUNK):
        chunk = slice(start, start + DUPLICATE_CHUNK)
        # the differences themselves (the product form of the distances is off by ~1e-8 even on the diagonal)
        distances = torch.cdist(A[..., chunk, :], A, compute_mode="donot_use_mm_for_euclid_dist")
        close = distances <= DUPLICATE_RTOL * largest
        if labels is not None:
            close &= labels[..., chunk, None] == labels[..., None, :]
        firsts.append(close.to(torch.int8).argmax(-1))
    return torch.cat(firsts, -1)


def first_of_set(first: torch.Tensor) -> torch.Tensor:
    """Which rows (..., n) are the first of their set of duplicates, given ``duplicate_sets``'s ``first``: all of
    them where no two rows are duplicates."""
    return first == torch.arange(first.shape[-1], device=first.device)
