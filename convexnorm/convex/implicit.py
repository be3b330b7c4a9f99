"""Gradients of the native solution by implicit differentiation (docs/math.md, section 9).

At a solution W of the convex BN-ReLU program with active groups J (W_j != 0) and active
constraint rows R (multiplier G > 0), the KKT conditions

    A^T (o_j M_j * loss'(f) - E_j * G_j) + beta W_j / ||W_j|| = 0      (j in J)
    (E_j * (A W_j))_R = 0

are a square smooth system F(z, theta) = 0 in z = (W_J, G_R), theta = (A, y, beta).
The backward pass solves J_z^T v = dL/dz and returns -v^T dF/dtheta; no conic solve.
"""

from __future__ import annotations

import torch
from torch.func import jacrev, vjp

from convexnorm.convex.native import _Program, solve_native
from convexnorm.errors import SolverError
from convexnorm.losses import loss_gradient

#: Groups below this fraction of the largest norm are inactive (zero, zero gradient).
ACTIVE_GROUP_RTOL = 1e-6
#: Multipliers below this fraction of the largest are inactive constraints.
ACTIVE_ROW_RTOL = 1e-6


def _residual(z: torch.Tensor, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, M: torch.Tensor,
              o: torch.Tensor, rows: torch.Tensor, loss: str) -> torch.Tensor:
    """F(z, theta) on the active groups (columns of M, o) and active rows (boolean n x |J|)."""
    k, groups = A.shape[1], M.shape[1]
    W = z[: k * groups].reshape(k, groups)
    flat = torch.nonzero(rows.reshape(-1)).squeeze(1)
    G = torch.zeros(rows.numel(), dtype=z.dtype, device=z.device).scatter(0, flat, z[k * groups :]).reshape(rows.shape)
    E = 2 * M - 1
    Z = A @ W
    f = (M * Z) @ o
    stationarity = A.T @ (M * loss_gradient(loss, f, y)[:, None] * o - E * G) + beta * W / torch.linalg.norm(W, dim=0)
    return torch.cat([stationarity.reshape(-1), (E * Z)[rows]])


class NativeSolve(torch.autograd.Function):
    """W*(A, y, beta) of the program (masks fixed), solved natively, differentiated implicitly."""

    @staticmethod
    def forward(ctx, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, loss: str,
                options: dict, owner: str) -> torch.Tensor:
        result = solve_native(A, masks, y, float(beta), loss, **{"method": "al", **options})
        if not result.converged:
            raise SolverError(f"{owner}: solver='torch' did not meet its tolerances "
                              f"(gap {result.relative_gap}, violation {result.violation:.2e})")
        W, G = result.W, result.G
        norms = torch.linalg.norm(W, dim=0)
        active = norms > ACTIVE_GROUP_RTOL * norms.max().clamp_min(torch.finfo(W.dtype).tiny)
        W = torch.where(active, W, torch.zeros_like(W))
        groups = _Program.from_patterns(A, masks.to(A), y, float(beta), loss)
        M, o = groups.M[:, active], groups.o[active]
        G_active = G[:, active]
        rows = G_active > ACTIVE_ROW_RTOL * G_active.max().clamp_min(torch.finfo(W.dtype).tiny)
        ctx.save_for_backward(A, y, beta, W, G_active, M, o, rows, active)
        ctx.loss = loss
        return W

    @staticmethod
    def backward(ctx, grad_W: torch.Tensor):
        A, y, beta, W, G_active, M, o, rows, active = ctx.saved_tensors
        W_active = W[:, active]
        if W_active.shape[1] == 0:
            return torch.zeros_like(A), torch.zeros_like(y), torch.zeros_like(beta), None, None, None, None
        z = torch.cat([W_active.reshape(-1), G_active[rows]])

        def residual(z_, A_, y_, beta_):
            return _residual(z_, A_, y_, beta_, M, o, rows, ctx.loss)

        jacobian = jacrev(residual, argnums=0)(z, A, y, beta)
        grad_z = torch.cat([grad_W[:, active].reshape(-1), torch.zeros(int(rows.sum()), dtype=z.dtype, device=z.device)])
        # gelsd (SVD): torch's default driver on the CPU, gelsy, gives answers that differ by ~1e-13
        # between identical calls, which breaks reentrancy (repeated backward passes must agree)
        driver = "gelsd" if jacobian.device.type == "cpu" else None
        v = torch.linalg.lstsq(jacobian.T, grad_z[:, None], driver=driver).solution[:, 0]
        _, pullback = vjp(lambda A_, y_, beta_: residual(z, A_, y_, beta_), A, y, beta)
        grad_A, grad_y, grad_beta = pullback(-v)
        return grad_A, grad_y, grad_beta, None, None, None, None
