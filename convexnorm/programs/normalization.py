"""Normalization as a disciplined parametrized program (docs/math.md, section 11).

Every standard normalization standardizes a group x in R^n. With c = sqrt(n * eps),

    max_{z, t}  x^T z + c t   s.t.  1^T z = 0,  ||(z, t)||_2 <= sqrt(n)

has the unique solution z* = (x - mean x) / sqrt(var(x) + eps) (biased variance),
which is exactly torch's normalization. The program is DPP: x enters the objective
linearly, the constraints are fixed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import cvxpy as cp
import torch

Certificate = Callable[..., torch.Tensor]


@dataclass(frozen=True, eq=False)
class NormalizationProgram:
    """A DPP problem whose only parameter is the group ``x`` (shape ``(n,)``).

    ``z`` (shape ``(n,)``) is the normalized group the layer returns. ``variables``
    lists every variable the layer asks the solver for, ``z`` first (default: all
    of the problem's variables). ``certificate``,
    if given, maps batched ``(x, *variable values)`` (float64, leading group
    dimension) to a per-group optimality error (relative duality gap or
    infeasibility); without one, layers check the constraint violation in cvxpy.
    """

    problem: cp.Problem
    x: cp.Parameter
    z: cp.Variable
    variables: tuple[cp.Variable, ...] = field(default=())
    certificate: Certificate | None = None

    def __post_init__(self) -> None:
        if not self.variables:
            others = tuple(v for v in self.problem.variables() if v is not self.z)
            object.__setattr__(self, "variables", (self.z, *others))
        if self.variables[0] is not self.z:
            raise ValueError("NormalizationProgram: variables must start with z")

    @property
    def parameters(self) -> list[cp.Parameter]:
        return [self.x]

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def validate(self) -> None:
        """Raise ValueError unless this is a DPP problem in one parameter x with n == len(z)."""
        if len(self.x.shape) != 1 or tuple(self.z.shape) != tuple(self.x.shape):
            raise ValueError(
                f"normalization program: x and z must be vectors of the same length, "
                f"got x {tuple(self.x.shape)} and z {tuple(self.z.shape)}"
            )
        params = self.problem.parameters()
        if len(params) != 1 or params[0] is not self.x:
            raise ValueError(
                "normalization program: x must be the problem's only parameter, "
                f"found {[p.name() for p in params]}"
            )
        if not self.problem.is_dpp():
            raise ValueError("normalization program: the problem is not DPP (see cvxpy's DPP rules)")
        known = {v.id for v in self.problem.variables()}
        if any(v.id not in known for v in self.variables):
            raise ValueError("normalization program: z and the listed variables must belong to the problem")


def _standardization_certificate(eps: float) -> Certificate:
    """Relative duality gap and infeasibility of a standardization solve.

    Weak duality with the multiplier nu = mean(x) for 1^T z = 0 bounds the objective by
    sqrt(n) * ||(x - mean x, c)||; the bound is attained, so
    gap = (bound - (x^T z + c t)) / bound is the solver's relative suboptimality.
    """

    def certificate(x: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        radius = math.sqrt(n)
        c = math.sqrt(n * eps)
        t = t.reshape(-1)
        centered = x - x.mean(dim=-1, keepdim=True)
        bound = radius * torch.sqrt((centered**2).sum(-1) + c * c)
        value = (x * z).sum(-1) + c * t
        scale = bound.clamp_min(torch.finfo(x.dtype).tiny)
        gap = (bound - value).abs() / scale
        equality = z.sum(-1).abs() / radius
        ball = (torch.sqrt((z**2).sum(-1) + t**2) - radius).clamp_min(0) / radius
        return torch.maximum(gap, torch.maximum(equality, ball))

    return certificate


@functools.lru_cache(maxsize=128)
def standardization_program(n: int, eps: float) -> NormalizationProgram:
    """The standardization program for a group of n numbers (built once per (n, eps))."""
    if n < 1:
        raise ValueError(f"standardization_program: n must be >= 1, got {n}")
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"standardization_program: eps must be finite and >= 0, got {eps}")
    x = cp.Parameter(n, name="x")
    z = cp.Variable(n, name="z")
    t = cp.Variable(name="t")
    c = math.sqrt(n * eps)
    problem = cp.Problem(
        cp.Maximize(x @ z + c * t),
        [cp.sum(z) == 0, cp.norm(cp.hstack([z, t]), 2) <= math.sqrt(n)],
    )
    program = NormalizationProgram(problem, x, z, (z, t), _standardization_certificate(eps))
    program.validate()
    return program
