"""The losses of the BN-ReLU training problem, each in cvxpy and in torch (sums, not means).

squared:  (1/2) sum (f - y)^2
logistic: sum log(1 + exp(-y f))     (y in {-1, +1})
hinge:    sum max(0, 1 - y f)        (y in {-1, +1})
"""

from __future__ import annotations

import cvxpy as cp
import torch

LOSSES = ("squared", "logistic", "hinge")
CLASSIFICATION_LOSSES = ("logistic", "hinge", "squared")


def check_loss(loss: str, owner: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"{owner}: loss must be one of {LOSSES}, got {loss!r}")
    return loss


MARGIN_LOSSES = ("logistic", "hinge")


def cvxpy_loss(loss: str, out: cp.Expression, y: cp.Parameter | None) -> cp.Expression:
    """The loss as a DPP cvxpy expression. For the squared loss ``out`` is f and y the
    targets; for margin losses ``out`` is already the margin y * f (y folded into the
    data, since a parameter times a parameter is not DPP) and y is None."""
    if loss == "squared":
        return 0.5 * cp.sum_squares(out - y)
    if loss == "logistic":
        return cp.sum(cp.logistic(-out))
    return cp.sum(cp.pos(1 - out))


def loss_terms(loss: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of every entry in torch (not summed)."""
    if loss == "squared":
        return 0.5 * (f - y) ** 2
    if loss == "logistic":
        return torch.nn.functional.softplus(-y * f)
    return torch.relu(1 - y * f)


def torch_loss(loss: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The same loss in torch (summed over all entries, so vector outputs add up)."""
    return loss_terms(loss, f, y).sum()


def loss_gradient(loss: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dloss/df for the smooth losses (the certificate, the native solver and its gradients)."""
    if loss == "squared":
        return f - y
    if loss == "logistic":
        return -y * torch.sigmoid(-y * f)
    raise ValueError(f"a differentiable loss (squared or logistic) is needed here, not {loss!r}")


def loss_curvature(loss: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Diagonal of d^2 loss / d f^2 of the smooth losses (y in {-1, +1} for logistic)."""
    if loss == "squared":
        return torch.ones_like(f)
    p = torch.sigmoid(y * f)
    return p * (1 - p)


def dual_value(loss: str, lam: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-loss*(-lam) summed over the last dimension, the dual objective at lam (u = y lam must
    lie in [0, 1] for the margin losses): squared lam^T y - ||lam||^2 / 2, logistic sum of the
    binary entropy H(u), hinge sum u."""
    if loss == "squared":
        return (lam * y).sum(-1) - 0.5 * (lam**2).sum(-1)
    u = lam * y
    if loss == "hinge":
        return u.sum(-1)
    return -(torch.special.xlogy(u, u) + torch.special.xlogy(1 - u, 1 - u)).sum(-1)


def negative_gradient(loss: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """lam = -dloss/df, the dual variable of the optimality certificate."""
    return -loss_gradient(loss, f, y)
