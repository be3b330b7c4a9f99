"""The convex program of a two-layer BN-ReLU network (docs/math.md, sections 3 and 9).

    min_{s_i, t_i}  loss( sum_i D_i U' (s_i - t_i), y ) + beta * sum_i (||s_i|| + ||t_i||)
    s.t.  (2 D_i - I) U' s_i >= 0,  (2 D_i - I) U' t_i >= 0

Every data-dependent matrix is a Parameter: DU[i] = D_i U', SU[i] = (2 D_i - I) U'
(products passed as one parameter each, as DPP requires), y and beta. For the margin
losses (logistic, hinge on +-1 labels) the labels are folded into DU[i] = diag(y) D_i U',
so ``output`` is the margin y * f and there is no y parameter. Columns i of the
variables S and T are s_i and t_i. The hinge loss is written with slacks,
sum xi s.t. xi >= 1 - y * f, xi >= 0, so that the multipliers alpha of the margin
constraints (``margin``) give the certificate's dual variable lam = y * alpha. With
``fitted_variable`` the squared and logistic losses take their argument from a variable
F = output (``fit``), whose multipliers are -loss'(F) (the squared loss: y - f, the
certificate's lam) to the solver's accuracy, which -loss'(output) at the solver's primal
solution meets only to about its square root.

Convolutional networks (docs/math.md section 8) pool the rows of the patches' U' (N K rows,
sample-major) into the N samples: DU[i] = Pi D_i U' with Pi = I_N kron 1_K^T, while the
cone constraints keep all N K rows (``constraint_rows``).
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
    margin: cp.Constraint | None = None
    fit: cp.Constraint | None = None

    @property
    def variables(self) -> tuple[cp.Variable, cp.Variable]:
        return (self.S, self.T)

    @property
    def parameters(self) -> list[cp.Parameter]:
        return [*self.DU, *self.SU, *([self.y] if self.y is not None else []), self.beta]

    def set_data(self, U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float,
                 pool: np.ndarray | None = None) -> None:
        """Fill the parameters from U' (rows, r'), boolean patterns (P, rows), targets (n,),
        beta and, for pooled programs, the (n, rows) pooling matrix."""
        y = np.asarray(y, dtype=np.float64)
        for i, mask in enumerate(patterns):
            active = mask[:, None] * U_prime
            active = active if pool is None else pool @ active
            self.DU[i].value = active if self.y is not None else y[:, None] * active
            self.SU[i].value = np.where(mask, 1.0, -1.0)[:, None] * U_prime
        if self.y is not None:
            self.y.value = y
        self.beta.value = float(beta)


def convex_bn_program(n: int, r_prime: int, n_patterns: int, loss: str = "squared",
                      constraint_rows: int | None = None, fitted_variable: bool = False) -> ConvexBNProgram:
    """The DPP program for n samples, whitened rank r' = r + 1 and n_patterns patterns
    (``constraint_rows``: rows of U' when they are pooled, N K for convolutions; default n;
    ``fitted_variable``: the squared and logistic losses of a variable F = output, the module docstring)."""
    check_loss(loss, "convex_bn_program")
    DU = tuple(cp.Parameter((n, r_prime), name=f"DU{i}") for i in range(n_patterns))
    SU = tuple(cp.Parameter((constraint_rows or n, r_prime), name=f"SU{i}") for i in range(n_patterns))
    y = None if loss in MARGIN_LOSSES else cp.Parameter(n, name="y")
    beta = cp.Parameter(nonneg=True, name="beta")
    S = cp.Variable((r_prime, n_patterns), name="S")
    T = cp.Variable((r_prime, n_patterns), name="T")
    output = cp.sum([DU[i] @ (S[:, i] - T[:, i]) for i in range(n_patterns)])
    penalty = cp.sum(cp.norm(S, 2, axis=0)) + cp.sum(cp.norm(T, 2, axis=0))
    constraints = [SU[i] @ S[:, i] >= 0 for i in range(n_patterns)]
    constraints += [SU[i] @ T[:, i] >= 0 for i in range(n_patterns)]
    margin = fit = None
    if loss == "hinge":
        slack = cp.Variable(n, nonneg=True, name="xi")
        margin = slack >= 1 - output
        constraints.append(margin)
        data_loss = cp.sum(slack)
    elif fitted_variable:
        fitted = cp.Variable(n, name="F")
        fit = fitted == output
        constraints.append(fit)
        data_loss = cvxpy_loss(loss, fitted, y)
    else:
        data_loss = cvxpy_loss(loss, output, y)
    problem = cp.Problem(cp.Minimize(data_loss + beta * penalty), constraints)
    assert problem.is_dpp()
    return ConvexBNProgram(problem, DU, SU, y, beta, S, T, output, margin, fit)
