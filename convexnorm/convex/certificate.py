"""The global optimality certificate of the convex BN-ReLU program (docs/math.md, section 4).

A solution over some patterns is optimal over all of them when

    max_{||u|| <= 1}  |lam^T (U' u)_+|  <=  beta,        lam = -loss'(f)

(for the hinge loss lam is the solver's dual multiplier of the margin constraints). On
the cone K_D = {u : (2D - I) U' u >= 0} of a pattern D the function equals c^T u with
c = U'^T D lam, and by Moreau's decomposition

    max_{u in K_D, ||u|| <= 1} c^T u = ||Pi_K(c)|| = min_{mu >= 0} ||c + M^T mu||,   M = (2D - I) U',

a nonnegative least-squares problem (``cone_dual_value``). ``exact`` certification takes
this maximum over every pattern (all of them enumerated); a probe searches for large
values from many starting directions and reports only values attained by an explicit
unit vector (``Certificate.witness``): a probe's violation is real, its "no violation
found" is evidence, not proof.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils import check_random_state

from convexnorm.convex.patterns import MAX_EXHAUSTIVE_CANDIDATES, arrangement_patterns, exhaustive_candidates
from convexnorm import losses
from convexnorm.solvers.cones import cone_projection

logger = logging.getLogger("convexnorm")

#: A dual value above beta * (1 + VIOLATION_RTOL) is a violation of optimality.
VIOLATION_RTOL = 1e-5
#: Column generation adds every new pattern above beta * (1 + GROW_RTOL): a piecewise-linear
#: loss (hinge) gains linearly even from violations below VIOLATION_RTOL.
GROW_RTOL = 1e-9
#: Probe: ascent steps per start, patterns refined by exact cone solves, and moves of the
#: adjacent-cell search from each of them.
ASCENT_STEPS = 30
REFINED_PATTERNS = 64
ADJACENT_MOVES = 8
METHODS = ("auto", "exact", "probe")


@dataclass(frozen=True)
class Certificate:
    """The dual check of one scalar program.

    ``max_dual_value`` is the largest |lam^T (U' u)_+| found, attained by the unit vector
    ``witness`` (the exact maximum over all patterns when ``exact``). ``lower_bound`` is a proven
    lower bound on the optimum over all patterns, the dual objective at lam scaled to dual feasibility
    (docs/math.md, section 4; every loss), and is set only by exact certification; a probe gives
    ``lower_bound_estimate`` instead, the same formula with its largest value found, which is a bound
    only if no larger value exists. ``optimal`` says that lam is dual feasible; ``gap`` = objective -
    lower_bound says how far the solution's objective is from the optimum at most.
    """

    beta: float
    max_dual_value: float
    exact: bool
    n_probes: int
    objective: float
    lower_bound: float | None
    violating_patterns: np.ndarray
    witness: np.ndarray | None = None
    lower_bound_estimate: float | None = None

    @property
    def violation(self) -> float:
        """max_dual_value - beta: positive means the solution is not globally optimal."""
        return self.max_dual_value - self.beta

    @property
    def violated(self) -> bool:
        """A value above beta (1 + VIOLATION_RTOL) was found (attained by ``witness``)."""
        return self.max_dual_value > self.beta * (1 + VIOLATION_RTOL)

    @property
    def optimal(self) -> bool | None:
        """True: no pattern's dual value exceeds beta (exact, no violation): the solution is optimal over all
        patterns to within ``gap`` (its solve's accuracy). False: a violation was found. None: a probe found
        no violation, which proves nothing."""
        if self.violated:
            return False
        return True if self.exact else None

    @property
    def gap(self) -> float | None:
        """objective - lower_bound (exact certification only)."""
        return None if self.lower_bound is None else self.objective - self.lower_bound


def dual_value(U_prime: np.ndarray, lam: np.ndarray, u: np.ndarray) -> np.ndarray:
    """lam^T (U' u)_+ for the columns u of a (k, m) array (or one vector)."""
    return lam @ np.maximum(U_prime @ u, 0.0)


def cone_dual_value(U_prime: np.ndarray, mask: np.ndarray, lam: np.ndarray) -> tuple[float, np.ndarray]:
    """max of lam^T (U' u)_+ over unit u in the cone of pattern ``mask``: ||Pi_K(U'^T D lam)||
    by nonnegative least squares (Lawson-Hanson). Returns (value attained, unit u); the value
    is that of the returned u, 0 with u = 0 when the projection is zero (to rounding)."""
    value, u, _ = _cone_solve(U_prime, mask, lam)
    return value, u


def _cone_solve(U_prime: np.ndarray, mask: np.ndarray, lam: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``cone_dual_value`` and the multipliers mu >= 0 of the rows' constraints (n,)."""
    signed = np.where(mask, 1.0, -1.0)[:, None] * U_prime
    c = U_prime.T @ (mask * lam)
    projection, multipliers = cone_projection(c, signed)
    size = np.linalg.norm(projection)
    if size <= 1e-10 * np.linalg.norm(c) or size <= 1e-300:  # rounding residue: the cone is {0} or c is in its polar
        return 0.0, np.zeros_like(c), multipliers
    u = projection / size
    return float(dual_value(U_prime, lam, u)), u, multipliers


def _ascent_starts(U_prime: np.ndarray, lam: np.ndarray, n_random: int, rng: np.random.RandomState) -> np.ndarray:
    """Unit starting directions (k, m): random, each sample's own direction (+-), and the
    right singular vectors (+-) of diag(lam) U', diag(lam_+) U' and diag(lam_-) U'."""
    k = U_prime.shape[1]
    starts = [rng.standard_normal((k, n_random)), U_prime.T, -U_prime.T]
    for weights in (lam, np.maximum(lam, 0.0), np.maximum(-lam, 0.0)):
        _, _, Vh = np.linalg.svd(weights[:, None] * U_prime, full_matrices=False)
        starts += [Vh.T, -Vh.T]
    u = np.concatenate(starts, axis=1)
    norms = np.linalg.norm(u, axis=0)
    return u[:, norms > 0] / norms[norms > 0]


def _ascend(U_prime: np.ndarray, lam: np.ndarray, u: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-point ascent u <- U'^T D(u) lam / ||.|| from every column of u, keeping the
    best point of each path (the iteration is not monotone). One product U' u per point gives
    both its value lam^T (U' u)_+ = sum_i [U' u >= 0]_i lam_i (U' u)_i and its step.
    Returns (values, points)."""
    best_value, best_u = np.full(u.shape[1], -np.inf), u
    for step_index in range(steps + 1):
        z = U_prime @ u
        weighted = (z >= 0) * lam[:, None]
        value = np.einsum("ij,ij->j", weighted, z)
        better = value > best_value
        best_value = np.where(better, value, best_value)
        best_u = np.where(better, u, best_u)
        if step_index == steps:
            break
        step = U_prime.T @ weighted
        norms = np.linalg.norm(step, axis=0)
        u = np.where(norms > 0, step / np.maximum(norms, 1e-300), u)
    return best_value, best_u


def _climb(U_prime: np.ndarray, lam: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Exact cone solve of ``mask``, then moves to adjacent cells (one flipped row on which the
    maximizer lies) while the value grows: the rows are tried in the order of their constraint's
    multiplier (the one holding the maximizer back most first) and the first gain is taken.
    Returns (value, unit u, its pattern)."""
    value, u, multipliers = _cone_solve(U_prime, mask, lam)
    for _ in range(ADJACENT_MOVES):
        z = U_prime @ u
        boundary = np.flatnonzero(np.abs(z) <= 1e-9 * np.linalg.norm(U_prime, axis=1))
        for row in boundary[np.argsort(-multipliers[boundary], kind="stable")]:
            flipped = mask.copy()
            flipped[row] = ~flipped[row]
            candidate, v, found = _cone_solve(U_prime, flipped, lam)
            if candidate > value * (1 + 1e-12):
                value, u, mask, multipliers = candidate, v, flipped, found
                break
        else:
            break
    return value, u, mask


def probe(U_prime: np.ndarray, lam: np.ndarray, n_probes: int, random_state=None,
          refined_patterns: int = REFINED_PATTERNS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values of lam^T (U' u)_+ and -lam^T (U' u)_+ found from ``n_probes`` random starts per
    sign plus the structured starts of ``_ascent_starts``: the best point of each ascent, and
    the ``refined_patterns`` best distinct patterns refined exactly (``_climb``). Returns
    (values, unit directions (k, m), patterns (m, n)); each value is attained by its direction
    (for the sign it was found with)."""
    rng = check_random_state(random_state)
    values, points, masks = [], [], []
    for sign in (1.0, -1.0):
        direction = sign * lam
        found, u = _ascend(U_prime, direction, _ascent_starts(U_prime, direction, n_probes, rng), ASCENT_STEPS)
        cells = (U_prime @ u >= 0).T
        order = np.argsort(-found)
        _, first = np.unique(np.packbits(cells[order], axis=1), axis=0, return_index=True)
        top = order[np.sort(first)][:refined_patterns]
        refined = [_climb(U_prime, direction, cells[i]) for i in top if cells[i].any()]
        values += [found, np.array([r[0] for r in refined])]
        points += [u, np.array([r[1] for r in refined]).reshape(-1, u.shape[0]).T]
        masks += [cells, np.array([r[2] for r in refined]).reshape(-1, cells.shape[1])]
    return np.concatenate(values), np.concatenate(points, axis=1), np.concatenate(masks)


def exact_dual_values(U_prime: np.ndarray, lam: np.ndarray, beta: float, patterns: np.ndarray,
                      violation_rtol: float = VIOLATION_RTOL) -> tuple[float, np.ndarray | None, list[int], list]:
    """The maximum of |lam^T (U' u)_+| over all ``patterns`` (every pattern of U'), each pattern's
    cone value computed exactly where its ball bound ||U'^T D lam|| could exceed the running
    maximum or beta (1 + violation_rtol). Returns (maximum, its unit u, the indices of the
    patterns above that threshold, their values)."""
    bounds = np.linalg.norm((patterns * lam) @ U_prime, axis=1)
    order = np.argsort(-bounds)
    threshold = beta * (1 + violation_rtol)
    best, witness, violating, scores = 0.0, None, [], []
    for index in order:
        if bounds[index] <= min(best, threshold) or bounds[index] <= 0:
            break
        for direction in (lam, -lam):
            value, u = cone_dual_value(U_prime, patterns[index], direction)
            if value > best:
                best, witness = value, u
            if value > threshold:
                violating.append(int(index))
                scores.append(value)
    return best, witness, violating, scores


def can_certify_exactly(U_prime: np.ndarray) -> bool:
    """Whether every pattern of U' can be enumerated (MAX_EXHAUSTIVE_CANDIDATES)."""
    return exhaustive_candidates(*U_prime.shape) <= MAX_EXHAUSTIVE_CANDIDATES


def certify_multipliers(
    U_prime: np.ndarray,
    lam: np.ndarray,
    beta: float,
    objective: float,
    method: str = "auto",
    n_probes: int = 2000,
    random_state=None,
    all_patterns: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    violation_rtol: float = VIOLATION_RTOL,
    residual: np.ndarray | None = None,
    refined_patterns: int = REFINED_PATTERNS,
    loss: str = "squared",
) -> Certificate:
    """Is max_{||u|| <= 1} |lam^T (U' u)_+| <= beta? ``method``: "exact" (all patterns, from
    ``all_patterns`` when given, else enumerated), "probe", or "auto" (exact when the
    patterns can be enumerated). With ``targets`` y (and lam in sample space as ``residual`` where lam is
    pooled, convolutional programs) the dual bound -loss*(-r') at r' = min(1, beta / max) lam is reported
    (``losses.dual_value``: squared r'^T y - ||r'||^2 / 2, logistic the binary entropies of y r', hinge
    sum y r'; the margin losses' y lam must lie in [0, 1]): as ``lower_bound`` when exact, as
    ``lower_bound_estimate`` after a probe. ``violating_patterns``
    are those above beta (1 + violation_rtol), largest value first; ``refined_patterns``: how many
    of a probe's patterns are refined exactly (``probe``)."""
    if method not in METHODS:
        raise ValueError(f"certify: method must be one of {METHODS}, got {method!r}")
    enumerable = all_patterns is not None or can_certify_exactly(U_prime)
    if method == "exact" and not enumerable:
        raise ValueError("certify: exact certification needs every pattern, and enumerating them is too large "
                         f"here (more than {MAX_EXHAUSTIVE_CANDIDATES:,} candidates); use method='probe'")
    exact = method == "exact" or (method == "auto" and enumerable)
    if exact:
        patterns = arrangement_patterns(U_prime, "exhaustive") if all_patterns is None else all_patterns
        best, witness, hits, scores = exact_dual_values(U_prime, lam, beta, patterns, violation_rtol)
        violating = [patterns[i] for i in hits]
        used = 0
    else:
        values, points, masks = probe(U_prime, lam, n_probes, random_state, refined_patterns)
        top = int(np.argmax(values))
        best, witness = max(float(values[top]), 0.0), points[:, top]
        keep = values > beta * (1 + violation_rtol)
        violating, scores = list(masks[keep]), list(values[keep])
        used = 2 * n_probes
    order = np.argsort(-np.asarray(scores, dtype=float))
    violating = np.array([violating[i] for i in order], dtype=bool).reshape(-1, U_prime.shape[0])
    if len(violating):
        _, index = np.unique(np.packbits(violating, axis=1), axis=0, return_index=True)
        violating = violating[np.sort(index)]
    bound = None
    if targets is not None:
        residual = lam if residual is None else residual
        scaled = residual * min(1.0, beta / best) if best > 0 else residual
        bound = float(losses.dual_value(loss, torch.from_numpy(scaled), torch.from_numpy(targets)))
    logger.debug("certify: %s, max dual value %.6g (beta %.6g), %d violating patterns",
                 "exact" if exact else f"probe ({used} starts)", best, beta, len(violating))
    return Certificate(beta, best, exact, used, objective, bound if exact else None, violating, witness,
                       None if exact else bound)
