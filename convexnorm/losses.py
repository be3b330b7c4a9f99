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


def torch_loss(loss: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The same loss in torch (summed over all entries, so vector outputs add up)."""
    if loss == "squared":
        return 0.5 * ((f - y) ** 2).sum()
    if loss == "logistic":
        return torch.nn.functional.softplus(-y * f).sum()
    return torch.relu(1 - y * f).sum()


def loss_gradient(loss: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dloss/df for the smooth losses (the certificate, the native solver and its gradients)."""
    if loss == "squared":
        return f - y
    if loss == "logistic":
        return -y * torch.sigmoid(-y * f)
    raise ValueError(f"a differentiable loss (squared or logistic) is needed here, not {loss!r}")


def negative_gradient(loss: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """lam = -dloss/df, the dual variable of the optimality certificate."""
    return -loss_gradient(loss, f, y)
