"""The convex program of a two-layer BN-ReLU network (spec: convex-bn.md sections 3 and 9).

    min_{s_i, t_i}  loss( sum_i D_i U' (s_i - t_i), y ) + beta * sum_i (||s_i|| + ||t_i||)
    s.t.  (2 D_i - I) U' s_i >= 0,  (2 D_i - I) U' t_i >= 0

Every data-dependent matrix is a Parameter: DU[i] = D_i U', SU[i] = (2 D_i - I) U'
(products passed as one parameter each, as DPP requires), y and beta. For the margin
losses (logistic, hinge on +-1 labels) the labels are folded into DU[i] = diag(y) D_i U',
so ``output`` is the margin y * f and there is no y parameter. Columns i of the
variables S and T are s_i and t_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from convexnorm.losses import MARGIN_LOSSES, check_loss, cvxpy_loss


@dataclass(frozen=True, eq=False)
class ConvexBNProgram:
    problem: cp.Problem
    DU: tuple[cp.Parameter, ...]
    SU: tuple[cp.Parameter, ...]
    y: cp.Parameter | None
    beta: cp.Parameter
    S: cp.Variable
    T: cp.Variable
    output: cp.Expression

    @property
    def variables(self) -> tuple[cp.Variable, cp.Variable]:
        return (self.S, self.T)

    @property
    def parameters(self) -> list[cp.Parameter]:
        return [*self.DU, *self.SU, *([self.y] if self.y is not None else []), self.beta]

    def set_data(self, U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float) -> None:
        """Fill the parameters from U' (n, r'), boolean patterns (P, n), targets and beta."""
        y = np.asarray(y, dtype=np.float64)
        rows = U_prime if self.y is not None else y[:, None] * U_prime
        for i, mask in enumerate(patterns):
            self.DU[i].value = mask[:, None] * rows
            self.SU[i].value = np.where(mask, 1.0, -1.0)[:, None] * U_prime
        if self.y is not None:
            self.y.value = y
        self.beta.value = float(beta)


def convex_bn_program(n: int, r_prime: int, n_patterns: int, loss: str = "squared") -> ConvexBNProgram:
    """The DPP program for n samples, whitened rank r' = r + 1 and n_patterns patterns."""
    check_loss(loss, "convex_bn_program")
    DU = tuple(cp.Parameter((n, r_prime), name=f"DU{i}") for i in range(n_patterns))
    SU = tuple(cp.Parameter((n, r_prime), name=f"SU{i}") for i in range(n_patterns))
    y = None if loss in MARGIN_LOSSES else cp.Parameter(n, name="y")
    beta = cp.Parameter(nonneg=True, name="beta")
    S = cp.Variable((r_prime, n_patterns), name="S")
    T = cp.Variable((r_prime, n_patterns), name="T")
    output = cp.sum([DU[i] @ (S[:, i] - T[:, i]) for i in range(n_patterns)])
    penalty = cp.sum(cp.norm(S, 2, axis=0)) + cp.sum(cp.norm(T, 2, axis=0))
    constraints = [SU[i] @ S[:, i] >= 0 for i in range(n_patterns)]
    constraints += [SU[i] @ T[:, i] >= 0 for i in range(n_patterns)]
    problem = cp.Problem(cp.Minimize(cvxpy_loss(loss, output, y) + beta * penalty), constraints)
    assert problem.is_dpp()
    return ConvexBNProgram(problem, DU, SU, y, beta, S, T, output)
