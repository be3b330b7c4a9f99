"""The program in conic form, its KKT residual and the stopping criteria.

Variables x = (X, xi): X (batch, 2P, m) holds (tau_j, W_j) per group, m = k + 1; xi (batch, n)
are the hinge loss's slacks (None otherwise). With s in the cone K the constraints are
G x + s = h, in four parts (``Conic``):

    rows    s = E * (A W)                 (orthant, batch x n x 2P; batch x c x 2P on candidate rows)
    cones   s = (tau_j, W_j)              (second-order cones, batch x 2P x m)
    slack   s = xi                        (hinge: xi >= 0)
    margin  s = xi + y * f - 1            (hinge: xi >= 1 - y f)

and the objective is phi(x) = loss(f) + beta sum_j tau_j (hinge: sum xi + beta sum_j tau_j).
The KKT conditions are r_x = grad phi(x) + G^T z = 0, r_z = G x + s - h = 0, s o z = 0 with
s, z in K. ``kkt_residual`` gives the right-hand sides of the interior-point method's Newton
steps; the method stops on ``criteria`` instead, the gap between the recovered network's
objective and the dual bound at the iterate's multipliers, which certifies the solution.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch

from convexnorm.losses import loss_gradient
from convexnorm.solvers.problem import ConvexBNProblem


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def per_program(alpha: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """alpha (batch,) shaped to broadcast against ``like`` (batch, ...)."""
    return alpha.reshape(-1, *[1] * (like.dim() - 1))


class _Vector:
    """Dataclass of tensors (or None) treated as one vector, batched over the first dimension."""

    def map(self, fn, *others):
        out = []
        for name in _names(type(self)):
            value = getattr(self, name)
            out.append(None if value is None else fn(value, *(getattr(o, name) for o in others)))
        return type(self)(*out)

    def parts(self) -> list[torch.Tensor]:
        return [part for part in (getattr(self, name) for name in _names(type(self))) if part is not None]

    def __add__(self, other):
        return self.map(torch.add, other)

    def __sub__(self, other):
        return self.map(torch.sub, other)

    def __neg__(self):
        return self.map(torch.neg)

    def scaled(self, alpha: torch.Tensor | float):
        """alpha * self, alpha a number or one per program (batch,)."""
        if isinstance(alpha, torch.Tensor):
            return self.map(lambda t: per_program(alpha, t) * t)
        return self.map(lambda t: alpha * t)

    def plus_scaled(self, alpha: torch.Tensor, other):
        """self + alpha * other, alpha one per program (batch,): one fused operation per part."""
        return self.map(lambda a, b: torch.addcmul(a, per_program(alpha, b), b), other)

    def dot(self, other) -> torch.Tensor:
        """Inner product per program (batch,)."""
        return sum((a * b).flatten(1).sum(1) for a, b in zip(self.parts(), other.parts()))

    def norm(self) -> torch.Tensor:
        return self.dot(self).sqrt()

    def where(self, keep: torch.Tensor, other):
        """self for the programs where ``keep`` (batch,) holds, else other (either one whole where
        ``keep`` is all true or all false: no selection)."""
        if bool(keep.all()):
            return self
        if not bool(keep.any()):
            return other
        return self.map(lambda a, b: torch.where(per_program(keep, a), a, b), other)

    def select(self, keep: torch.Tensor):
        """The programs where ``keep`` (batch,) holds, as a smaller batch."""
        return self.map(lambda t: t[keep])


@dataclass
class Primal(_Vector):
    X: torch.Tensor
    xi: torch.Tensor | None = None

    @classmethod
    def of_neurons(cls, W: torch.Tensor) -> "Primal":
        """The point with neurons W (batch, 2P, k) and the smallest feasible tau_j = ||W_j||."""
        return cls(torch.cat([torch.linalg.norm(W, dim=-1, keepdim=True), W], -1))

    @property
    def W(self) -> torch.Tensor:
        return self.X[..., 1:]

    @property
    def tau(self) -> torch.Tensor:
        return self.X[..., 0]


@dataclass
class Conic(_Vector):
    rows: torch.Tensor
    cones: torch.Tensor
    slack: torch.Tensor | None = None
    margin: torch.Tensor | None = None

    def orthants(self) -> list[torch.Tensor]:
        """The orthant parts (rows, and the hinge loss's slack and margin)."""
        return [t for t in (self.rows, self.slack, self.margin) if t is not None]

    def degree(self) -> int:
        """Degree of the cone K: one per orthant entry and one per second-order cone."""
        return sum(t[0].numel() for t in self.orthants()) + self.cones.shape[1]


def constraint_map(problem: ConvexBNProblem, x: Primal, predictions: torch.Tensor | None = None,
                   rows: torch.Tensor | None = None, plus: Conic | None = None) -> Conic:
    """G x, or G x + ``plus`` in one fused operation per part (``predictions``: f = B x.W, ``rows``:
    A W_j of every group, if already at hand)."""
    return _offset_map(problem, x, plus, 1.0, predictions, rows)


def constraint_slack(problem: ConvexBNProblem, x: Primal, offset: Conic | None = None,
                     predictions: torch.Tensor | None = None) -> Conic:
    """The slack s of G x + s = ``offset`` (zero if None): offset - G x, one fused operation per part."""
    return _offset_map(problem, x, offset, -1.0, predictions, None)


def _offset_map(problem: ConvexBNProblem, x: Primal, offset: Conic | None, sign: float,
                predictions: torch.Tensor | None, rows: torch.Tensor | None) -> Conic:
    """offset + sign G x, G x = (-E * (A W_j), -X, -xi, -(xi + y f)) (offset None: zero)."""
    rows = problem.constraint_rows(x.W) if rows is None else rows
    if offset is None:
        signed_rows = (problem.negative_constraint_signs if sign > 0 else problem.constraint_signs) * rows
    else:
        signed_rows = torch.addcmul(offset.rows, problem.constraint_signs, rows, value=-sign)

    def part(value: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        """base - sign * value (G x's parts are minus the variables')."""
        if base is None:
            return -value if sign > 0 else value.clone()
        return torch.add(base, value, alpha=-sign)

    if x.xi is None:
        return Conic(signed_rows, part(x.X, None if offset is None else offset.cones))
    f = problem.predictions(x.W) if predictions is None else predictions
    bases = (None, None, None) if offset is None else (offset.cones, offset.slack, offset.margin)
    return Conic(signed_rows, part(x.X, bases[0]), part(x.xi, bases[1]),
                 part(torch.addcmul(x.xi, problem.y, f), bases[2]))


def constraint_adjoint(problem: ConvexBNProblem, v: Conic, signed_rows: bool = False,
                       rows_adjoint: torch.Tensor | None = None) -> Primal:
    """G^T v (``signed_rows``: v.rows already multiplied by E; ``rows_adjoint``: A^T (E_j v_j) of the
    rows part if already at hand)."""
    if rows_adjoint is None:
        rows_adjoint = problem.constraint_rows_adjoint(v.rows if signed_rows else problem.constraint_signs * v.rows)
    W = -rows_adjoint - v.cones[..., 1:]
    if v.margin is not None:
        W = W - problem.predictions_adjoint(problem.y * v.margin)
    X = torch.cat([-v.cones[..., :1], W], -1)
    return Primal(X, None if v.slack is None else -v.slack - v.margin)


def constraint_offset(problem: ConvexBNProblem) -> Conic:
    """h: zero except -1 in the hinge loss's margin part."""
    A = problem.A
    zero_rows = A.new_zeros(problem.batch, problem.constraint_count, 2 * problem.patterns)
    zero_cones = A.new_zeros(problem.batch, 2 * problem.patterns, problem.width + 1)
    if problem.loss != "hinge":
        return Conic(zero_rows, zero_cones)
    zero = A.new_zeros(problem.batch, problem.samples)
    return Conic(zero_rows, zero_cones, zero, zero - 1)


def zero_primal(problem: ConvexBNProblem) -> Primal:
    X = problem.A.new_zeros(problem.batch, 2 * problem.patterns, problem.width + 1)
    return Primal(X, problem.A.new_zeros(problem.batch, problem.samples) if problem.loss == "hinge" else None)


def objective_gradient(problem: ConvexBNProblem, x: Primal, predictions: torch.Tensor | None = None) -> Primal:
    """grad phi(x) (``predictions``: f = B x.W if already at hand)."""
    tau = problem.beta[:, None, None].expand(-1, x.X.shape[1], 1)
    if problem.loss == "hinge":
        return Primal(torch.cat([tau, torch.zeros_like(x.W)], -1), torch.ones_like(x.xi))
    gradient = loss_gradient(problem.loss, problem.predictions(x.W) if predictions is None else predictions,
                             problem.y)
    return Primal(torch.cat([tau, problem.predictions_adjoint(gradient)], -1))


def kkt_residual(problem: ConvexBNProblem, x: Primal, s: Conic, z: Conic, rows: torch.Tensor | None = None,
                 predictions: torch.Tensor | None = None, rows_adjoint: torch.Tensor | None = None
                 ) -> tuple[Primal, Conic]:
    """(r_x, r_z) = (grad phi(x) + G^T z, G x + s - h); differentiable in problem.A, y, beta. ``rows`` (A W_j),
    ``predictions`` (f = B x.W) and ``rows_adjoint`` (A^T (E_j z_j)): if already at hand."""
    r_z = constraint_map(problem, x, predictions, rows, plus=s)
    if r_z.margin is not None:  # h: -1 in the margin part, zero elsewhere (constraint_offset)
        r_z.margin = r_z.margin + 1
    return objective_gradient(problem, x, predictions) + constraint_adjoint(problem, z, rows_adjoint=rows_adjoint), r_z


def multipliers(problem: ConvexBNProblem, x: Primal, z: Conic, predictions: torch.Tensor | None = None
                ) -> torch.Tensor:
    """lam of the dual bound: -loss'(f) for the smooth losses, y * z_margin for the hinge loss
    (``predictions``: f = B x.W if already at hand)."""
    if problem.loss == "hinge":
        return problem.y * z.margin
    return -loss_gradient(problem.loss, problem.predictions(x.W) if predictions is None else predictions, problem.y)


@dataclass
class Criteria(_Vector):
    """Measured optimality per program (each a (batch,) tensor). ``objective``: the recovered
    network's value; ``lower_bound``: the dual bound (a bound on the optimum for any point);
    ``relative_gap``: (objective - lower_bound) / max(|objective|, 1e-12); ``violation``: of the
    cone constraints, relative."""

    objective: torch.Tensor
    lower_bound: torch.Tensor
    relative_gap: torch.Tensor
    violation: torch.Tensor

    @classmethod
    def of(cls, objective: torch.Tensor, lower_bound: torch.Tensor, violation: torch.Tensor) -> "Criteria":
        """The criteria of a point with this objective and violation against this lower bound."""
        return cls(objective, lower_bound, (objective - lower_bound) / objective.abs().clamp_min(1e-12), violation)

    def met(self, tol: float, violation_tol: float) -> torch.Tensor:
        """Which programs are solved: certified gap <= tol and violation <= violation_tol."""
        return (self.relative_gap <= tol) & (self.violation <= violation_tol)


def criteria(problem: ConvexBNProblem, x: Primal, z: Conic) -> Criteria:
    """The criteria of x against the dual bound at the multipliers of (x, z)."""
    return bounded_criteria(problem, x.W, problem.dual_bound(multipliers(problem, x, z), z.rows))


def evaluate(problem: ConvexBNProblem, x: Primal, s: Conic, z: Conic) -> tuple[Criteria, Primal, Conic]:
    """The stopping criteria of an interior iterate (``criteria``) and its KKT residual (r_x, r_z)
    (``kkt_residual``), which share A W_j, f = B W and A^T (E_j z_j), each formed once (z is interior:
    its rows part is the dual bound's G as it is)."""
    rows, predictions = problem.constraint_rows(x.W), problem.predictions(x.W)
    rows_adjoint = problem.constraint_rows_adjoint(problem.constraint_signs * z.rows)
    r_x, r_z = kkt_residual(problem, x, s, z, rows, predictions, rows_adjoint)
    lower_bound = problem.dual_bound(multipliers(problem, x, z, predictions), z.rows, rows_adjoint)
    return bounded_criteria(problem, x.W, lower_bound, rows), r_x, r_z


def bounded_criteria(problem: ConvexBNProblem, W: torch.Tensor, lower_bound: torch.Tensor,
                     rows: torch.Tensor | None = None) -> Criteria:
    """The criteria of neurons W against a given lower bound on the optimum (one per program;
    ``rows``: A W_j on every group's constraint rows if already at hand)."""
    rows = problem.constraint_rows(W) if rows is None else rows
    return Criteria.of(problem.objective(W, rows), lower_bound, problem.violation(W, rows))
