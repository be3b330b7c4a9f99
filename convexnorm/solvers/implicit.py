"""The interior-point solution as a differentiable function of the data (docs/math.md, section 9).

At a solution W with active groups J (W_j != 0) and active constraint rows R (multiplier
G = z_rows > 0), the KKT conditions

    A^T (o_j M_j * loss'(f) - E_j * G_j) + beta W_j / ||W_j|| = 0      (j in J)
    (E_j * (A W_j))_R = 0

are a square smooth system F(u, theta) = 0 in u = (W_J, G_R), theta = (A, y, beta). The
backward pass solves J_u^T v = dL/du per episode by null spaces of the active rows (no dense
Jacobian: ``_episode_vjp``) and returns -v^T dF/dtheta. (The Newton system of the last
interior-point iterate gives the same derivative only to about 1e-3 near the solution, where
its scaling is ill-conditioned; the active-set system is well conditioned once each group's
own direction W_j / ||W_j||, feasible only to solver precision, is projected out of its rows.)

The forward first polishes the interior-point solution: Newton's method on F(u) = 0 from the
active sets read off the last iterate (``active_sets``: at most k - 1 rows per group), with up to
POLISH_CORRECTIONS primal-dual corrections of the rows and a second attempt without the groups
still shrinking to zero, kept only where it certifies a gap no larger than the interior-point
method's (typically 1e-15 where it succeeds; where it fails the interior-point solution is kept).
Smooth losses only (squared, logistic).
"""

from __future__ import annotations

import logging

import torch

from convexnorm.errors import SolverError
from convexnorm.solvers.interior_point import InteriorPointResult, InteriorPointSettings, interior_point
from convexnorm.solvers.kkt import Conic, Primal, criteria
from convexnorm.losses import loss_curvature, loss_gradient
from convexnorm.solvers.problem import ConvexBNProblem
from convexnorm.solvers.threads import intra_op_threads

logger = logging.getLogger("convexnorm")

#: Groups below this fraction of the largest norm are inactive (zero, zero gradient).
ACTIVE_GROUP_RTOL = 1e-6
#: Singular values of an active group's constraint rows below this fraction of ||A||_2 span its
#: null space.
RANK_RTOL = 1e-9
#: Newton steps of the polish, and its acceptance: largest KKT residual entry relative to
#: beta max(1, ||A||_2).
POLISH_STEPS = 3
POLISH_RTOL = 1e-10
#: A polish step must shrink the largest residual entry by at least this factor.
POLISH_CONTRACTION = 0.5
#: Corrections of the polish's active rows (negative multipliers out, violated rows in).
POLISH_CORRECTIONS = 2
#: The polish's further guesses at the active groups drop those below these fractions of the largest
#: (at 128x16x128: groups shrinking to zero at 2e-7 .. 2e-6 of it, and one batch whose polish held only
#: with a group at 9e-4 of it kept: 11 of 12 random batches polished with 1e-3 alone, 12 of 12 with both).
SMALL_GROUP_RTOLS = (1e-5, 1e-3)


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


class _ActiveSystem:
    """The KKT system of one episode on its active groups J and rows R at (W, G): J_u = [[K, -C^T],
    [C, 0]] in u = (W_J, G_R), with K = blockdiag(beta / ||W_j|| (I - w_j w_j^T)) + B^T diag(loss''(f))
    B (B_j = o_j M_j * A) and C block diagonal (C_j = the active rows (E_j * A)[R_j]).

    Solved by null spaces: C_j = U_j S_j V_j^T after w_j = W_j / ||W_j|| is projected out of C_j's
    rows (W_j satisfies them only to solver precision, which leaves a singular value of that size
    along w_j; projected, W_j is exactly feasible and the rank decision clean), Z_j the right
    singular vectors with S_j <= RANK_RTOL ||A||_2 (docs/math.md, section 9)."""

    def __init__(self, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, M: torch.Tensor, o: torch.Tensor,
                 rows: torch.Tensor, W: torch.Tensor, G: torch.Tensor, loss: str, A_norm: float) -> None:
        """W (k, |J|) and G (n, |J|) on the active groups (columns of M, signs o); rows (n, |J|);
        A_norm = ||A||_2."""
        self.A, self.y, self.beta, self.M, self.o, self.rows, self.loss = A, y, beta, M, o, rows, loss
        self.A_norm = A_norm
        self.W, self.G = W, G
        self.norms = torch.linalg.norm(W, dim=0)
        self.w_hat = (W / self.norms).T  # (|J|, k)
        E = 2 * M - 1
        C = (E.T[:, :, None] * A[None]) * rows.T[:, :, None]  # (|J|, n, k), inactive rows zero
        C = C - (C @ self.w_hat[:, :, None]) * self.w_hat[:, None, :]
        self.U, self.S, Vh = torch.linalg.svd(C, full_matrices=False)
        self.V = Vh.transpose(-1, -2)
        self.null = self.S <= RANK_RTOL * A_norm
        self.inverse_S = torch.where(self.null, torch.zeros_like(self.S),
                                     1 / torch.where(self.null, torch.ones_like(self.S), self.S))
        self.curvature = loss_curvature(loss, (M * (A @ W)) @ o, y)
        self.B = (o * M).T[:, :, None] * A[None]  # (|J|, n, k)

    def pack(self, W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """One vector in the layout of u and F from W-shaped (k, |J|) and G-shaped (n, |J|) parts."""
        return torch.cat([W.reshape(-1), G[self.rows]])

    def unpack(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse of ``pack``, as (|J|, k) and (|J|, n) (zero off the active rows)."""
        k, groups = self.W.shape
        G = torch.zeros_like(self.G)
        G[self.rows] = u[k * groups:]
        return u[: k * groups].view(k, groups).T, G.T

    def residual(self, W: torch.Tensor, G: torch.Tensor, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor
                 ) -> torch.Tensor:
        """F = (stationarity (k |J|), active rows (|R|)) at (W, G) for the data (A, y, beta)."""
        return _active_set_residual(self.pack(W, G), A, y, beta, self.M, self.o, self.rows, self.loss)

    def apply_K(self, v: torch.Tensor) -> torch.Tensor:
        """K v for v (|J|, k)."""
        w = self.w_hat
        return (self.beta / self.norms)[:, None] * (v - (v * w).sum(1, keepdim=True) * w) + (
            self.B.transpose(-1, -2) @ (self.curvature * (self.B @ v[..., None])[..., 0].sum(0))[:, None])[..., 0]

    def solve(self, r_W: torch.Tensor, r_R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a (|J|, k), b (|J|, n) with K a + C^T b = r_W and C a = r_R (r_R (|J|, n), zero off R):
        a = a_p + Z alpha with a_p = C^+ r_R and (Z^T K Z) alpha = Z^T (r_W - K a_p), then b = C^+T (r_W - K a)
        group by group (least squares where the reduced system is singular: the minimum-norm answer)."""
        V, null, k = self.V, self.null, self.A.shape[1]
        a = (V @ (self.inverse_S * (self.U.transpose(-1, -2) @ r_R[..., None])[..., 0])[..., None])[..., 0]
        keep = null.flatten()  # the null-space coordinates among the |J| k
        if bool(keep.any()):
            Z = V * null[:, None, :]
            BZ = (self.B @ Z).transpose(0, 1).flatten(1)[:, keep]  # (n, dim)
            Zw = (Z.transpose(-1, -2) @ self.w_hat[:, :, None])[..., 0]
            blocks = (self.beta / self.norms)[:, None, None] * (torch.diag_embed(null.to(V.dtype))
                                                                - Zw[:, :, None] * Zw[:, None, :])
            reduced = torch.block_diag(*blocks)[keep][:, keep].addmm(BZ.T, self.curvature[:, None] * BZ)
            rhs = (Z.transpose(-1, -2) @ (r_W - self.apply_K(a))[..., None]).flatten()[keep]
            # gelsd (SVD) on the CPU: gelsy's answers differ by ~1e-13 between identical calls (reentrancy)
            driver = "gelsd" if V.device.type == "cpu" else None
            alpha = torch.zeros(keep.numel(), dtype=V.dtype, device=V.device)
            alpha[keep] = torch.linalg.lstsq(reduced, rhs[:, None], driver=driver).solution[:, 0]
            a = a + (Z @ alpha.view(-1, k, 1))[..., 0]
        remainder = r_W - self.apply_K(a)
        b = (self.U @ (self.inverse_S * (V.transpose(-1, -2) @ remainder[..., None])[..., 0])[..., None])[..., 0]
        return a, b


def _active_system(A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, W: torch.Tensor,
                   G: torch.Tensor, rows: torch.Tensor, loss: str) -> tuple[_ActiveSystem | None, torch.Tensor]:
    """The active-set system of one episode at W (k, 2P), G (n, 2P) with active rows (n, 2P), and
    the active groups (2P,)."""
    active = torch.linalg.norm(W, dim=0) > 0  # the inactive groups are zero in W
    if not bool(active.any()):
        return None, active
    P = masks.shape[1]
    ones = torch.ones(P, dtype=A.dtype, device=A.device)
    M, o = torch.cat([masks, masks], 1)[:, active], torch.cat([ones, -ones])[active]
    rows = rows[:, active]
    A_norm = float(torch.linalg.matrix_norm(A, ord=2))
    return _ActiveSystem(A, y, beta, M, o, rows, W[:, active], G[:, active] * rows, loss, A_norm), active


def _newton(system: _ActiveSystem, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, loss: str, scale: float
            ) -> tuple[torch.Tensor, torch.Tensor, _ActiveSystem] | None:
    """Newton's method on F(u) = 0 of ``system``'s active sets from its point: at most POLISH_STEPS
    steps, stopped once the largest residual entry is within POLISH_RTOL ``scale``; None at a step
    that does not contract it by POLISH_CONTRACTION or where the tolerance is not reached. Returns
    (W_J, G_J) and the system at the last point where a step was taken."""
    W_J, G_J = system.W, system.G
    F = system.residual(W_J, G_J, A, y, beta)
    for step in range(POLISH_STEPS):
        if float(F.abs().max()) <= POLISH_RTOL * scale:
            break
        if step > 0:  # the system at the current point, only where a step is taken from it
            system = _ActiveSystem(A, y, beta, system.M, system.o, system.rows, W_J, G_J, loss, system.A_norm)
        a, b = system.solve(*system.unpack(-F))
        W_next, G_next = W_J + a.T, G_J - b.T * system.rows
        F_next = system.residual(W_next, G_next, A, y, beta)
        # Newton's method contracts from a right active set; a step that does not (a wrong or degenerate
        # set: measured diverging or stalling at 1e-7 on a 128x16x128 batch) ends the polish
        if not (bool(torch.isfinite(F_next).all()) and float(F_next.abs().max()) <= POLISH_CONTRACTION
                * float(F.abs().max())):
            return None
        W_J, G_J, F = W_next, G_next, F_next
    return (W_J, G_J, system) if float(F.abs().max()) <= POLISH_RTOL * scale else None


def _polish(A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, W: torch.Tensor,
            G: torch.Tensor, rows: torch.Tensor, loss: str, lower_bound: torch.Tensor, gap: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Newton's method on the active-set system from the interior-point solution (W (k, 2P) with
    the inactive groups zero, its multipliers G (n, 2P), the active rows): the same optimum to
    float64's precision instead of the interior-point method's tolerance (``_newton``). A row whose
    slack and multiplier both nearly vanish may be read off on the wrong side (measured at
    128x16x128: s = 6e-7, z = 1e-5, active in one batch and inactive after a change of H by 1e-6),
    so up to POLISH_CORRECTIONS times the rows whose multiplier came out negative leave the active
    set, the inactive rows the point violates join it, and Newton's method restarts from the point
    (a primal-dual active-set step). Kept only if every row is feasible and every multiplier
    nonnegative (within POLISH_RTOL) and its certified gap is no larger than the interior-point
    method's ``gap``; else None. The gap is measured against the larger of the dual bound at the
    polish's own multipliers and ``lower_bound`` (the interior-point method's: a bound on the
    optimum whatever the point). The own bound alone can be the weaker one: a group shrinking to
    zero that the polish drops keeps the iterate's multipliers, no longer matched to the polished
    predictions (measured at 128x16x128: its dual norm 1.5e-6 above beta, a gap of 1.4e-6 for a
    point whose objective is below the iterate's)."""
    system, active = _active_system(A, y, beta, masks, W, G, rows, loss)
    if system is None:
        return None
    scale = float(beta) * max(1.0, system.A_norm)
    tolerance = POLISH_RTOL * scale
    for correction in range(POLISH_CORRECTIONS + 1):
        found = _newton(system, A, y, beta, loss, scale)
        if found is None:
            return None
        W_J, G_J, system = found
        # every row within the tolerance its active entries of F met (a bound relative to ||W_j||
        # refused a small group's active rows at that same precision: 9e-12 ||W_j|| at ||W_j|| = 0.02)
        slack = (2 * system.M - 1) * (A @ W_J)
        negative, violated = system.rows & (G_J < -tolerance), ~system.rows & (slack < -tolerance)
        if not bool((negative | violated).any()):
            break
        if correction == POLISH_CORRECTIONS:
            return None
        rows = (system.rows & ~negative) | violated
        system = _ActiveSystem(A, y, beta, system.M, system.o, rows, W_J, G_J.clamp_min(0) * rows, loss,
                               system.A_norm)
    if not bool((torch.linalg.norm(W_J, dim=0) > 0).all()):
        return None
    polished = W.clone()
    polished[:, active] = W_J
    multipliers = G.clone()  # the inactive groups' multipliers enter the dual bound as they are
    multipliers[:, active] = G_J.clamp_min(0)
    problem = ConvexBNProblem(A[None], masks[None], y[None], beta[None], loss)
    measured = criteria(problem, Primal.of_neurons(polished.T[None]), Conic(multipliers[None], None))
    bound = max(float(measured.lower_bound[0]), float(lower_bound))
    objective = float(measured.objective[0])
    return (polished, multipliers) if objective - bound <= float(gap) * max(abs(objective), 1e-12) else None


def _episode_vjp(A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, W: torch.Tensor,
                 G: torch.Tensor, grad_W: torch.Tensor, loss: str) -> tuple[torch.Tensor, ...]:
    """(dL/dA, dL/dy, dL/dbeta) of one episode: W (k, 2P), G (n, 2P), grad_W (k, 2P). The adjoint v
    solves J_u^T v = (grad_W, 0), i.e. K v_W + C^T v_R = grad_W, C v_W = 0; the gradient is
    -v^T dF/dtheta (one vector-Jacobian product of the residual)."""
    system, active = _active_system(A, y, beta, masks, W, G, G > 0, loss)
    if system is None:
        return torch.zeros_like(A), torch.zeros_like(y), torch.zeros_like(beta)
    v_W, v_R = system.solve(grad_W[:, active].T, torch.zeros_like(system.G).T)
    v = system.pack(v_W.T, v_R.T)
    data = tuple(t.detach().requires_grad_(True) for t in (A, y, beta))
    with torch.enable_grad():  # one vector-Jacobian product of the residual (torch.func.vjp: 0.9 ms, this 0.55)
        return torch.autograd.grad(system.residual(system.W, system.G, *data), data, -v, allow_unused=True,
                                   materialize_grads=True)


def active_sets(result: InteriorPointResult) -> tuple[torch.Tensor, torch.Tensor]:
    """The active groups (batch, 2P) and rows (batch, n, 2P) read off an interior-point iterate,
    where its primal and dual sides separate: rows whose multiplier exceeds their slack, at most
    k - 1 per group (those with the largest ratio z / s), groups whose tau exceeds their dual cone's
    distance to its boundary. A nonzero W_j (k) is orthogonal to its active rows, and rows of data
    in general position span k dimensions by any k of them, so more than k - 1 are never all active:
    such a group is still shrinking to zero, or holds a row whose slack and multiplier both vanish
    (measured at 128x16x128: a 17th row with s = 5e-7, z = 6e-6 beside 16 with z / s > 1e5)."""
    cones = result.z.cones
    groups = result.x.tau > cones[..., 0] - torch.linalg.norm(cones[..., 1:], dim=-1)
    ratio = result.z.rows / result.s.rows
    capacity = result.W.shape[-1] - 1
    rows = ratio > 1
    if result.s.rows.shape[1] > capacity:
        rows &= ratio >= ratio.topk(capacity, dim=1).values[:, -1:]
    return groups, rows


def polish_episode(problem: ConvexBNProblem, result: InteriorPointResult, groups: torch.Tensor, rows: torch.Tensor,
                   episode: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``_polish`` of one episode of an interior-point result from its active sets (``active_sets``):
    (W (k, 2P), G (n, 2P)) or None. A group still shrinking to zero may pass the active-group
    test, so the polish is also tried without the groups below each of SMALL_GROUP_RTOLS of the
    largest (each distinct set once)."""
    b = episode
    norms = torch.linalg.norm(result.W[b], dim=-1)
    attempts = [groups[b]]
    for rtol in SMALL_GROUP_RTOLS:
        larger = groups[b] & (norms > rtol * norms.max())
        if not torch.equal(larger, attempts[-1]):
            attempts.append(larger)
    for chosen in attempts:
        found = _polish(problem.A[b], problem.y[b], problem.beta[b], problem.masks[b],
                        (result.W[b] * chosen[:, None]).T, result.z.rows[b], rows[b], problem.loss,
                        result.criteria.lower_bound[b], result.criteria.relative_gap[b])
        if found is not None:
            return found
    return None


class InteriorPointSolve(torch.autograd.Function):
    """W*(A, y, beta) (batch, 2P, k) for fixed masks, by the batched interior-point method; forward
    and backward on ``threads`` intra-op threads (solvers/threads.py: the backward runs when the
    autograd engine calls it, outside the caller's thread setting)."""

    @staticmethod
    def forward(ctx, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, loss: str,
                settings: InteriorPointSettings, owner: str, threads: int | None) -> torch.Tensor:
        ctx.threads, ctx.loss = threads, loss
        with intra_op_threads(threads):
            problem = ConvexBNProblem(A, masks, y, beta, loss)
            result = interior_point(problem, settings)
            failed = torch.nonzero(~result.converged).flatten().tolist()
            if failed:
                worst = int(failed[0])
                raise SolverError(
                    f"{owner}: solver='torch' did not meet its tolerances in episode(s) {failed[:10]} "
                    f"(episode {worst}: relative gap {float(result.criteria.relative_gap[worst]):.2e}, violation "
                    f"{float(result.criteria.violation[worst]):.2e}, tol {settings.tol:g}); loosen tol in "
                    "solver_options or check the episode's data")
            norms = torch.linalg.norm(result.W, dim=-1)
            W = torch.where((norms > ACTIVE_GROUP_RTOL * norms.amax(-1, keepdim=True))[..., None], result.W,
                            torch.zeros_like(result.W))
            groups, rows = active_sets(result)
            G = result.z.rows * rows
            if loss != "hinge":
                polished = [polish_episode(problem, result, groups, rows, b) for b in range(A.shape[0])]
                refused = [b for b, found in enumerate(polished) if found is None]
                if refused:
                    logger.warning("%s: the polish was refused in episode(s) %s; their gradients rest on the "
                                   "interior-point solution (certified gap %.1e) and the active sets read off it",
                                   owner, refused[:10], float(result.criteria.relative_gap[refused].max()))
                W = torch.stack([W[b] if found is None else found[0].T for b, found in enumerate(polished)])
                G = torch.stack([G[b] if found is None else found[1] for b, found in enumerate(polished)])
            ctx.save_for_backward(A, y, beta, masks, W, G)
            return W

    @staticmethod
    def backward(ctx, grad_W: torch.Tensor):
        A, y, beta, masks, W, G = ctx.saved_tensors
        with intra_op_threads(ctx.threads):
            grads = [_episode_vjp(A[b], y[b], beta[b], masks[b], W[b].T, G[b], grad_W[b].T, ctx.loss)
                     for b in range(A.shape[0])]
        return (*(torch.stack(parts) for parts in zip(*grads)), None, None, None, None, None)
