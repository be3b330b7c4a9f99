"""The interior-point solution as a differentiable function of the data (docs/math.md, section 9).

At a solution W with active groups J (W_j != 0) and active constraint rows R (multiplier
G = z_rows > 0), the KKT conditions

    A^T (o_j M_j * loss'(f) - E_j * G_j) + beta W_j / ||W_j|| = 0      (j in J)
    (E_j * (A W_j))_R = 0

are a square smooth system F(u, theta) = 0 in u = (W_J, G_R), theta = (A, y, beta). The
backward pass solves J_u^T v = dL/du per episode and returns -v^T dF/dtheta. (The Newton
system of the last interior-point iterate gives the same derivative only to about 1e-3 near
the solution, where its scaling is ill-conditioned; the active-set system is well
conditioned.)
"""

from __future__ import annotations

import torch
from torch.func import jacrev, vjp

from convexnorm.errors import SolverError
from convexnorm.solvers.interior_point import InteriorPointSettings, interior_point
from convexnorm.losses import loss_gradient
from convexnorm.solvers.problem import ConvexBNProblem

#: Groups below this fraction of the largest norm are inactive (zero, zero gradient).
ACTIVE_GROUP_RTOL = 1e-6
#: Multipliers below this fraction of the largest are inactive constraints.
ACTIVE_ROW_RTOL = 1e-6


def _active_set_residual(u: torch.Tensor, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, M: torch.Tensor,
                         o: torch.Tensor, rows: torch.Tensor, loss: str) -> torch.Tensor:
    """F(u, theta) of one episode on its active groups (columns of M, signs o) and active rows
    (boolean n x |J|)."""
    k, groups = A.shape[1], M.shape[1]
    W = u[: k * groups].reshape(k, groups)
    flat = torch.nonzero(rows.reshape(-1)).squeeze(1)
    G = torch.zeros(rows.numel(), dtype=u.dtype, device=u.device).scatter(0, flat, u[k * groups :]).reshape(rows.shape)
    E = 2 * M - 1
    Z = A @ W
    f = (M * Z) @ o
    stationarity = A.T @ (M * loss_gradient(loss, f, y)[:, None] * o - E * G) + beta * W / torch.linalg.norm(W, dim=0)
    return torch.cat([stationarity.reshape(-1), (E * Z)[rows]])


def _episode_vjp(A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, W: torch.Tensor,
                 G: torch.Tensor, grad_W: torch.Tensor, loss: str) -> tuple[torch.Tensor, ...]:
    """(dL/dA, dL/dy, dL/dbeta) of one episode: W (k, 2P), G (n, 2P), grad_W (k, 2P)."""
    active = torch.linalg.norm(W, dim=0) > 0  # the forward set the inactive groups (ACTIVE_GROUP_RTOL) to zero
    if not bool(active.any()):
        return torch.zeros_like(A), torch.zeros_like(y), torch.zeros_like(beta)
    P = masks.shape[1]
    ones = torch.ones(P, dtype=A.dtype, device=A.device)
    M, o = torch.cat([masks, masks], 1)[:, active], torch.cat([ones, -ones])[active]
    G = G[:, active]
    rows = G > ACTIVE_ROW_RTOL * G.max().clamp_min(torch.finfo(W.dtype).tiny)
    u = torch.cat([W[:, active].reshape(-1), G[rows]])

    def residual(u_, A_, y_, beta_):
        return _active_set_residual(u_, A_, y_, beta_, M, o, rows, loss)

    jacobian = jacrev(residual, argnums=0)(u, A, y, beta)
    grad_u = torch.cat([grad_W[:, active].reshape(-1), torch.zeros(int(rows.sum()), dtype=u.dtype, device=u.device)])
    # gelsd (SVD): torch's default driver on the CPU, gelsy, gives answers that differ by ~1e-13
    # between identical calls, which breaks reentrancy (repeated backward passes must agree)
    driver = "gelsd" if jacobian.device.type == "cpu" else None
    v = torch.linalg.lstsq(jacobian.T, grad_u[:, None], driver=driver).solution[:, 0]
    _, pullback = vjp(lambda A_, y_, beta_: residual(u, A_, y_, beta_), A, y, beta)
    return pullback(-v)


class InteriorPointSolve(torch.autograd.Function):
    """W*(A, y, beta) (batch, 2P, k) for fixed masks, by the batched interior-point method."""

    @staticmethod
    def forward(ctx, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, loss: str,
                settings: InteriorPointSettings, owner: str) -> torch.Tensor:
        problem = ConvexBNProblem(A, masks, y, beta, loss)
        result = interior_point(problem, settings)
        failed = torch.nonzero(~result.converged).flatten().tolist()
        if failed:
            worst = int(failed[0])
            raise SolverError(
                f"{owner}: solver='torch' did not meet its tolerances in episode(s) {failed[:10]} (episode {worst}: "
                f"relative gap {float(result.criteria.relative_gap[worst]):.2e}, violation "
                f"{float(result.criteria.violation[worst]):.2e}, tol {settings.tol:g}); loosen tol in "
                "solver_options or check the episode's data")
        W = result.W
        norms = torch.linalg.norm(W, dim=-1)
        W = torch.where((norms > ACTIVE_GROUP_RTOL * norms.amax(-1, keepdim=True))[..., None], W, torch.zeros_like(W))
        ctx.save_for_backward(A, y, beta, masks, W, result.z.rows)
        ctx.loss = loss
        return W

    @staticmethod
    def backward(ctx, grad_W: torch.Tensor):
        A, y, beta, masks, W, G = ctx.saved_tensors
        grads = [_episode_vjp(A[b], y[b], beta[b], masks[b], W[b].T, G[b], grad_W[b].T, ctx.loss)
                 for b in range(A.shape[0])]
        return (*(torch.stack(parts) for parts in zip(*grads)), None, None, None, None)
