"""A native PyTorch solver for the convex BN-ReLU program (issue #5).

With A = U' (n x k), patterns M (n x P), signs E = 2M - 1 and the groups W = [S, T]
(k x 2P, output signs o = (+1)^P, (-1)^P), the program is

    min_W  loss(f) + beta sum_j ||W_j||   s.t.  E_j * (A W_j) >= 0,   f = sum_j o_j M_j * (A W_j).

Two methods. Squared loss in float64: a primal-dual interior-point method (Mehrotra
predictor-corrector, Nesterov-Todd scaling of the orthant and second-order cones,
``_interior_point``) whose Newton equations are solved per group with the coupling through
the predictions added by Woodbury (``_NewtonSystem``). Otherwise (logistic loss, float32,
warm starts for the block): an augmented Lagrangian with multipliers G >= 0 (n x 2P) and
penalty delta:

    L(W, G) = loss(f) + beta sum_j ||W_j|| + (delta / 2) ||(G / delta - C(W))_+||^2,  C = E * (A W),

minimized in W by FISTA with backtracking and adaptive restarts (the prox of the group
norm is group soft-thresholding), then G <- (G - delta C)_+. Everything is a batched
matrix product on the device of the data.

Stopping (measured, not an iteration count). For the squared loss the Lagrangian dual of
the program is

    max_{lam, G >= 0}  lam^T y - (1/2)||lam||^2   s.t.  ||A^T (o_j M_j * lam + E_j * G_j)|| <= beta  for all j,

so lam = y - f with multipliers G (those of the augmented Lagrangian, refined per group
by a batched nonnegative least-squares solve, ``dual_norms``), scaled by
min(1, beta / max_j ||.||), give a lower bound; the solver stops when the relative gap to
the objective and the relative constraint violation are both below tolerance. For the
logistic loss it stops on the stationarity of the Lagrangian (gradient mapping) and the
violation. The penalty grows (PENALTY_GROWTH, at most MAX_PENALTY) while the violation stalls.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from convexnorm.convex._cones import (jordan_divide, jordan_product, nt_scaling, orthant_max_step, shift_into_cones,
                                      soc_max_step)
from convexnorm._validation import check_count, check_positive
from convexnorm.solvers.newton import Breakdown as _Breakdown, cholesky as _cholesky
from convexnorm.solvers.threads import intra_op_threads
from convexnorm.losses import loss_gradient, torch_loss

logger = logging.getLogger("convexnorm")

#: Augmented-Lagrangian penalty: initial value, growth factor while the violation stalls,
#: and upper limit (larger values stall FISTA).
INITIAL_PENALTY = 300.0
PENALTY_GROWTH = 2.0
MAX_PENALTY = 1e3


@dataclass
class NativeResult:
    """Solution W (k x 2P: S then T), multipliers G (n x 2P) and the measured criteria."""

    W: torch.Tensor
    G: torch.Tensor
    objective: float
    lower_bound: float | None
    relative_gap: float | None
    stationarity: float
    violation: float
    iterations: int
    converged: bool
    method: str = "al"


class _Program:
    """Evaluation of the program's pieces for fixed data."""

    def __init__(self, A: torch.Tensor, M: torch.Tensor, o: torch.Tensor, y: torch.Tensor, beta: float, loss: str) -> None:
        """Groups j = columns of M (n x G, 0/1 pattern of group j) with output signs o (G)."""
        self.A, self.M, self.o, self.y, self.beta, self.loss = A, M, o, y, beta, loss
        self.E = 2 * M - 1
        #: 1 / ||A||_2^2 (1 for whitened data, whose columns are orthonormal)
        self.dual_step = 1.0 / float(torch.linalg.matrix_norm(A, ord=2)) ** 2

    @classmethod
    def from_patterns(cls, A: torch.Tensor, masks: torch.Tensor, y: torch.Tensor, beta: float,
                      loss: str) -> "_Program":
        """The program's 2P groups from P patterns (n x P): the s_i (sign +1), then the t_i (sign -1)."""
        P = masks.shape[1]
        ones = torch.ones(P, dtype=A.dtype, device=A.device)
        return cls(A, torch.cat([masks, masks], dim=1), torch.cat([ones, -ones]), y, beta, loss)

    def to(self, dtype: torch.dtype) -> "_Program":
        return _Program(self.A.to(dtype), self.M.to(dtype), self.o.to(dtype), self.y.to(dtype), self.beta, self.loss)

    def double(self) -> "_Program":
        """This program in float64 (itself when it already is): where the criteria are measured."""
        return self if self.A.dtype == torch.float64 else self.to(torch.float64)

    def dual_norms(self, W: torch.Tensor, G: torch.Tensor, iters: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
        """min over G_j >= 0 of ||A^T (o_j M_j * lam + E_j * G_j)|| for every group j, lam =
        -loss'(f), by projected FISTA from G (step 1 / ||A||^2, the Lipschitz constant's inverse).
        A group whose value is <= beta satisfies its dual constraint. Returns (norms, G)."""
        lam = -loss_gradient(self.loss, self.predictions(self.A @ W), self.y)
        base = self.M * lam[:, None] * self.o
        G, Y, momentum = G.clone(), G.clone(), 1.0
        for _ in range(iters):
            G_next = (Y - self.dual_step * self.E * (self.A @ (self.A.T @ (base + self.E * Y)))).clamp_min(0)
            next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
            Y = G_next + ((momentum - 1) / next_momentum) * (G_next - G)
            G, momentum = G_next, next_momentum
        return torch.linalg.norm(self.A.T @ (base + self.E * G), dim=0), G

    def predictions(self, Z: torch.Tensor) -> torch.Tensor:
        return (self.M * Z) @ self.o

    def predictions_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """B^T v for B W = predictions(A W): column j is o_j A^T (M_j * v)."""
        return self.A.T @ (self.M * v[:, None] * self.o)

    def smooth(self, W: torch.Tensor, G: torch.Tensor, delta: float,
               gradient: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Value (and gradient) of loss(f) + (delta/2) ||(G/delta - C)_+||^2."""
        Z = self.A @ W
        f = self.predictions(Z)
        excess = (G - delta * self.E * Z).clamp_min(0)
        value = torch_loss(self.loss, f, self.y) + (excess**2).sum() / (2 * delta)
        if not gradient:
            return value, None
        grad_Z = self.M * loss_gradient(self.loss, f, self.y)[:, None] * self.o - self.E * excess
        return value, self.A.T @ grad_Z

    def prox(self, W: torch.Tensor, step: float) -> torch.Tensor:
        norms = torch.linalg.norm(W, dim=0, keepdim=True)
        return W * (1 - step * self.beta / norms.clamp_min(torch.finfo(W.dtype).tiny)).clamp_min(0)

    def penalty(self, W: torch.Tensor) -> torch.Tensor:
        return self.beta * torch.linalg.norm(W, dim=0).sum()

    def objective(self, W: torch.Tensor) -> float:
        """The program's objective with ReLU predictions (the recovered network's value)."""
        f = (torch.relu(self.A @ W)) @ self.o
        return float(torch_loss(self.loss, f, self.y) + self.penalty(W))

    def violation(self, W: torch.Tensor) -> float:
        """Largest constraint violation, relative to the largest ||A W_j||."""
        Z = self.A @ W
        scale = float(torch.linalg.norm(Z, dim=0).max())
        return abs(float((-self.E * Z).clamp_min(0).max())) / scale if scale > 0 else 0.0

    def stationarity(self, W: torch.Tensor, G: torch.Tensor) -> float:
        """Relative gradient-mapping norm of the Lagrangian loss(f) - <G, C> + beta sum ||W_j||."""
        Z = self.A @ W
        grad = self.A.T @ (self.M * loss_gradient(self.loss, self.predictions(Z), self.y)[:, None] * self.o - self.E * G)
        mapped = W - self.prox(W - grad, 1.0)
        return float(torch.linalg.norm(mapped)) / max(float(torch.linalg.norm(W)), 1e-12)

    def dual_bound(self, W: torch.Tensor, G: torch.Tensor) -> float:
        """Lower bound lam^T y - ||lam||^2 / 2 at (lam, G), with G refined by ``dual_norms``
        and both scaled into dual feasibility (squared loss)."""
        lam = self.y - self.predictions(self.A @ W)
        norms, _ = self.dual_norms(W, G)
        scale = min(1.0, self.beta / max(float(norms.max()), 1e-300))
        lam = scale * lam
        return float(lam @ self.y - 0.5 * lam @ lam)


def _fista(program: _Program, W: torch.Tensor, G: torch.Tensor, delta: float, step: float, max_iters: int,
           tol: float) -> tuple[torch.Tensor, float, int]:
    """Minimize the augmented Lagrangian in W by FISTA with backtracking and restarts, until
    the gradient mapping ||Y - prox(Y - t grad)|| / t is <= tol; returns W, step, iterations."""
    Y, W_prev, momentum, value_prev = W.clone(), W.clone(), 1.0, math.inf
    for iteration in range(1, max_iters + 1):
        value_Y, grad_Y = program.smooth(Y, G, delta)
        while True:
            candidate = program.prox(Y - step * grad_Y, step)
            diff = candidate - Y
            value_c, _ = program.smooth(candidate, G, delta, gradient=False)
            slack = 10 * torch.finfo(Y.dtype).eps * abs(float(value_Y))
            if value_c <= value_Y + (grad_Y * diff).sum() + (diff**2).sum() / (2 * step) + slack:
                break
            step *= 0.5
        if float(torch.linalg.norm(diff)) / step <= tol:
            return candidate, step, iteration
        total = float(value_c + program.penalty(candidate))
        if total > value_prev:  # adaptive restart from the last accepted point
            Y, momentum, value_prev = W_prev.clone(), 1.0, math.inf
            continue
        next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
        Y = candidate + ((momentum - 1) / next_momentum) * (candidate - W_prev)
        W_prev, momentum, value_prev = candidate, next_momentum, total
        step *= 1.1
    return W_prev, step, max_iters


def _augmented_lagrangian(program: _Program, W: torch.Tensor, G: torch.Tensor, tol: float, violation_tol: float,
                          max_outer: int, max_inner: int) -> tuple[torch.Tensor, torch.Tensor, int, bool, dict | None]:
    """Multiplier updates G <- (G - delta C)_+ around FISTA solves, until the criteria of
    ``_criteria`` hold on this program; returns W, G, FISTA iterations, success and the
    criteria of the returned point (None if no update ran)."""
    exact = program.double()
    delta, step, iterations, last_violation, within = INITIAL_PENALTY, 1.0, 0, math.inf, math.inf
    criteria = None
    scale = float(torch.linalg.norm(program.A.T @ program.y)) * math.sqrt(program.dual_step) + program.beta
    floor = 100 * torch.finfo(program.A.dtype).eps
    for outer in range(max_outer):
        inner_tol = scale * max(tol * 1e-2, floor, min(1e-2 * 0.3**outer, 0.1 * abs(within)))
        W, step, used = _fista(program, W, G, delta, step, max_inner, inner_tol)
        iterations += used
        G = (G - delta * program.E * (program.A @ W)).clamp_min(0)
        criteria = _criteria(exact, W.double(), G.double())
        logger.debug("augmented Lagrangian: outer %d, %d FISTA steps, delta %g, within %.2e, violation %.2e",
                     outer, used, delta, criteria["optimal_within"], criteria["violation"])
        if _meets(criteria, tol, violation_tol):
            return W, G, iterations, True, criteria
        if criteria["violation"] > 0.25 * last_violation and criteria["violation"] > violation_tol:
            delta = min(delta * PENALTY_GROWTH, MAX_PENALTY)
        last_violation, within = criteria["violation"], criteria["optimal_within"]
    return W, G, iterations, False, criteria


#: Interior-point method: fraction of the step to the cone boundary taken, exponent of
#: Mehrotra's centering sigma = (mu_affine / mu)^3, and the fractions of the largest group
#: norm below which groups are set to zero at the end (the first threshold whose point still
#: meets the certified criteria is used).
STEP_FRACTION = 0.99
CENTERING_EXPONENT = 3
ZERO_GROUP_RTOLS = (1e-3, 1e-4, 1e-5)
#: Entries of the (n x patterns k) Woodbury factor built at once.
CHUNK_ENTRIES = 1 << 24


class _NewtonSystem:
    """P + G^T V^-2 G factorized for one primal-dual iterate (V its Nesterov-Todd scaling).

    Per group j the variables are x_j = (tau_j, W_j); G x = (-E * (A W), -(tau, W)) (orthant
    rows, then the cone (tau_j, W_j) in SOC); P = B^T B with B x = sum_j o_j M_j * (A W_j).
    G^T V^-2 G is block diagonal: H_j = V_j^-2 + [0, A^T diag(z_j / s_j) A]. B^T B is added
    by Woodbury with the n x n matrix C = I + sum_j M_j A Q_j A^T M_j, Q_j the W block of
    H_j^-1; the S and T groups of a pattern share its mask, so C = I + sum_i F_i F_i^T with
    F_i = M_i * (A R_i), R_i R_i^T = Q_i + Q_{i+P} (half the flops of one factor per group).
    With ``coupling`` (the constant dense B^T B of ``_dense_coupling``, used where it is the
    cheaper side: many samples, few patterns) the whole matrix is factorized instead.
    """

    def __init__(self, program: _Program, orthant_weight: torch.Tensor, cone_inverse: torch.Tensor,
                 coupling: torch.Tensor | None = None) -> None:
        """orthant_weight: z / s (n x groups); cone_inverse: V^-1 of the cones (groups x m x m)."""
        A, masks = program.A, program.M[:, : program.M.shape[1] // 2]
        n, k = A.shape
        patterns = masks.shape[1]
        self.program, self.orthant_weight, self.cone_inverse = program, orthant_weight, cone_inverse
        self.cone_weight = cone_inverse @ cone_inverse
        outer = (A[:, :, None] * A[:, None, :]).reshape(n, k * k)
        H = self.cone_weight.clone()
        H[:, 1:, 1:] += (orthant_weight.T @ outer).reshape(-1, k, k)
        self.dense = None
        if coupling is not None:
            groups, m = H.shape[0], k + 1
            full = coupling.clone()
            index = torch.arange(groups, device=A.device)
            full.view(groups, m, groups, m)[index, :, index, :] += H
            self.dense = _cholesky(full)
            return
        self.L = _cholesky(H)
        Q = torch.cholesky_inverse(self.L)[:, 1:, 1:]
        R = _cholesky(Q[:patterns] + Q[patterns:])
        capacitance = torch.eye(n, dtype=A.dtype, device=A.device)
        chunk = max(1, CHUNK_ENTRIES // (k * n))
        for start in range(0, patterns, chunk):
            part = slice(start, start + chunk)
            F = (masks[:, part, None] * torch.einsum("nk,pkl->npl", A, R[part])).reshape(n, -1)
            capacitance = torch.addmm(capacitance, F, F.T)
        self.LC = _cholesky(capacitance)

    def _block_solve(self, b_tau: torch.Tensor, b_W: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(torch.cat([b_tau[None], b_W]).T[:, :, None], self.L)[:, :, 0].T

    def solve_x(self, b_W: torch.Tensor, b_tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P + G^T V^-2 G)^-1 (b_W, b_tau) by Woodbury (or the dense factor)."""
        p = self.program
        if self.dense is not None:
            u = torch.cholesky_solve(torch.cat([b_tau[None], b_W]).T.reshape(-1, 1), self.dense)
            u = u.reshape(b_tau.shape[0], -1).T
            return u[1:], u[0]
        u = self._block_solve(b_tau, b_W)
        correction = torch.cholesky_solve(p.predictions(p.A @ u[1:])[:, None], self.LC)[:, 0]
        u = u - self._block_solve(torch.zeros_like(b_tau), p.predictions_adjoint(correction))
        return u[1:], u[0]

    def solve(self, b_x: tuple, b_z: tuple, d: tuple) -> tuple[torch.Tensor, ...]:
        """The Newton equations P dx + G^T dz = b_x, G dx + ds = b_z, V dz + V^-1 ds = d
        (d = lambda \\ (complementarity right-hand side)); returns dW, dtau, dz, ds (orthant
        and cone parts)."""
        (b_W, b_tau), (b_orthant, b_cone), (d_orthant, d_cone) = b_x, b_z, d
        root = self.orthant_weight.sqrt()
        v_orthant = self.orthant_weight * b_orthant - root * d_orthant
        v_cone = _batched(self.cone_weight, b_cone) - _batched(self.cone_inverse, d_cone)
        g_W, g_tau = _G_transpose(self.program, v_orthant, v_cone)
        dW, dtau = self.solve_x(b_W + g_W, b_tau + g_tau)
        Gx_orthant, Gx_cone = _G(self.program, dW, dtau)
        dz_orthant = self.orthant_weight * (Gx_orthant - b_orthant) + root * d_orthant
        dz_cone = _batched(self.cone_weight, Gx_cone - b_cone) + _batched(self.cone_inverse, d_cone)
        return dW, dtau, dz_orthant, dz_cone, b_orthant - Gx_orthant, b_cone - Gx_cone


def _dense_coupling(program: _Program) -> torch.Tensor | None:
    """B^T B (groups (k+1) square, x ordered (tau_j, W_j) per group) where factorizing the
    whole Newton matrix, (groups (k+1))^3 / 3 flops, is cheaper than the Woodbury route,
    n^2 P k + n^3 / 3 flops per iteration (B is constant: B^T B is formed once); else None."""
    (n, k), groups = program.A.shape, program.M.shape[1]
    size = groups * (k + 1)
    if size**3 / 3 >= n * n * (groups // 2) * k + n**3 / 3 or size * size > 4 * CHUNK_ENTRIES:
        return None
    return _coupling_matrix(program)


def _coupling_matrix(program: _Program) -> torch.Tensor:
    """B^T B of the loss, B x = sum_j o_j M_j * (A W_j) with x = (tau_j, W_j) per group."""
    A, M, o = program.A, program.M, program.o
    (n, k), groups = A.shape, M.shape[1]
    B = torch.zeros(n, groups, k + 1, dtype=A.dtype, device=A.device)
    B[:, :, 1:] = (M * o)[:, :, None] * A[:, None, :]
    B = B.reshape(n, groups * (k + 1))
    return B.T @ B


def _batched(matrices: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Column j of the result = matrices[j] @ columns[:, j]."""
    return torch.einsum("gij,jg->ig", matrices, columns)


def _G(program: _Program, W: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """G x: (-E * (A W), -(tau, W))."""
    return -program.E * (program.A @ W), -torch.cat([tau[None], W])


def _G_transpose(program: _Program, v_orthant: torch.Tensor, v_cone: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """G^T v: W part -A^T (E * v_orthant) - v_cone[1:], tau part -v_cone[0]."""
    return -program.A.T @ (program.E * v_orthant) - v_cone[1:], -v_cone[0]


def _without_residue(program: _Program, W: torch.Tensor, lower_bound: float, tol: float,
                     violation_tol: float) -> torch.Tensor:
    """W with the groups below the largest ZERO_GROUP_RTOLS fraction of the largest norm set
    to zero whose objective stays within tol of ``lower_bound`` (a bound on the optimum,
    valid for any primal point); W itself if none does."""
    norms = torch.linalg.norm(W, dim=0)
    for rtol in ZERO_GROUP_RTOLS:
        cleaned = torch.where(norms > rtol * norms.max(), W, torch.zeros_like(W))
        if (_relative_gap(program.objective(cleaned), lower_bound) <= tol
                and program.violation(cleaned) <= violation_tol):
            return cleaned
    return W


def _interior_point(program: _Program, tol: float, violation_tol: float,
                    max_iterations: int) -> tuple[torch.Tensor, torch.Tensor, int, bool, dict]:
    """Primal-dual interior-point method (squared loss, float64) for

        min 1/2 ||B W - y||^2 + beta sum_j tau_j   s.t.  E * (A W) >= 0,  (tau_j, W_j) in SOC,

    Mehrotra predictor-corrector with Nesterov-Todd scaling and CVXOPT's initial point
    (Vandenberghe, "The CVXOPT linear and quadratic cone program solvers", sections 5-6;
    the Newton equations of ``_NewtonSystem``). Once the complementarity s^T z is within tol
    of the objective it stops on the measured criteria of ``_criteria`` (the multipliers of
    the orthant are the program's G); returns W (residue of the zero groups removed,
    ``_without_residue`` whenever it succeeds), G, iterations, success and the criteria of W.
    W = 0 is returned at once when it is certified optimal."""
    A, y, beta = program.A, program.y, program.beta
    n, groups = program.M.shape
    m = A.shape[1] + 1
    degree = n * groups + groups
    zero, no_multipliers = torch.zeros_like(program.M[: m - 1]), torch.zeros_like(program.M)
    W, converged, criteria = _certified(program, zero, no_multipliers, tol, violation_tol)
    if converged:  # beta above every group's dual norm at lam = y: W = 0 is optimal
        return W, no_multipliers, 0, True, criteria
    identity = torch.eye(m, dtype=A.dtype, device=A.device).expand(groups, m, m)
    coupling = _dense_coupling(program)
    start = _NewtonSystem(program, torch.ones_like(program.M), identity, coupling)
    W, tau = start.solve_x(program.predictions_adjoint(y), torch.full_like(program.o, -beta))
    Gx_orthant, Gx_cone = _G(program, W, tau)
    s_orthant, s_cone = shift_into_cones(-Gx_orthant, -Gx_cone)
    z_orthant, z_cone = shift_into_cones(Gx_orthant, Gx_cone)
    iteration = 0
    for iteration in range(max_iterations):
        f = program.predictions(A @ W)
        g_W, g_tau = _G_transpose(program, z_orthant, z_cone)
        r_x = (program.predictions_adjoint(f - y) + g_W, beta + g_tau)
        Gx_orthant, Gx_cone = _G(program, W, tau)
        r_z = (Gx_orthant + s_orthant, Gx_cone + s_cone)
        gap = float((s_orthant * z_orthant).sum() + (s_cone * z_cone).sum())
        objective = float(0.5 * ((f - y) ** 2).sum() + beta * tau.sum())
        logger.debug("interior point: iteration %d, objective %.10g, s^T z %.3e", iteration, objective, gap)
        if gap <= tol * abs(objective):
            cleaned, converged, criteria = _certified(program, W, z_orthant, tol, violation_tol)
            if converged:
                return cleaned, z_orthant, iteration, True, criteria
        mu = gap / degree
        scale_cone, scale_cone_inverse = nt_scaling(s_cone, z_cone)
        lam_orthant, lam_cone = (s_orthant * z_orthant).sqrt(), _batched(scale_cone, z_cone)
        try:
            system = _NewtonSystem(program, z_orthant / s_orthant, scale_cone_inverse, coupling)
        except _Breakdown:
            break

        def direction(weight: float, c_orthant: torch.Tensor, c_cone: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return system.solve((-weight * r_x[0], -weight * r_x[1]), (-weight * r_z[0], -weight * r_z[1]),
                                (c_orthant / lam_orthant, jordan_divide(lam_cone, c_cone)))

        def max_step(d: tuple[torch.Tensor, ...]) -> float:
            return min(orthant_max_step(s_orthant, d[4]), orthant_max_step(z_orthant, d[2]),
                       soc_max_step(s_cone, d[5]), soc_max_step(z_cone, d[3]))

        lam_square = -jordan_product(lam_cone, lam_cone)
        affine = direction(1.0, -lam_orthant**2, lam_square)
        alpha = min(1.0, max_step(affine))
        _, _, dz_orthant, dz_cone, ds_orthant, ds_cone = affine
        mu_affine = float(((s_orthant + alpha * ds_orthant) * (z_orthant + alpha * dz_orthant)).sum()
                          + ((s_cone + alpha * ds_cone) * (z_cone + alpha * dz_cone)).sum()) / degree
        sigma = min(1.0, max(0.0, mu_affine / mu)) ** CENTERING_EXPONENT
        second_cone = jordan_product(_batched(scale_cone_inverse, ds_cone), _batched(scale_cone, dz_cone))
        identity_element = torch.zeros_like(lam_cone)
        identity_element[0] = 1
        combined = direction(1 - sigma, -lam_orthant**2 - ds_orthant * dz_orthant + sigma * mu,
                             lam_square - second_cone + sigma * mu * identity_element)
        alpha = min(1.0, STEP_FRACTION * max_step(combined))
        if not math.isfinite(alpha) or alpha < 1e-12:
            break
        dW, dtau, dz_orthant, dz_cone, ds_orthant, ds_cone = combined
        W, tau = W + alpha * dW, tau + alpha * dtau
        s_orthant, s_cone = s_orthant + alpha * ds_orthant, s_cone + alpha * ds_cone
        z_orthant, z_cone = z_orthant + alpha * dz_orthant, z_cone + alpha * dz_cone
    # out of iterations or at float64's limit: the last point may still meet the criteria
    W, converged, criteria = _certified(program, W, z_orthant, tol, violation_tol)
    return W, z_orthant, iteration, converged, criteria


def _meets(criteria: dict, tol: float, violation_tol: float) -> bool:
    return criteria["optimal_within"] <= tol and criteria["violation"] <= violation_tol


def _certified(program: _Program, W: torch.Tensor, G: torch.Tensor, tol: float,
               violation_tol: float) -> tuple[torch.Tensor, bool, dict]:
    """(W, success, criteria) for the squared-loss program: when the criteria of W hold, W
    with the residue of its zero groups removed (``_without_residue``) and its criteria under
    the same certified bound."""
    criteria = _criteria(program, W, G)
    if not _meets(criteria, tol, violation_tol):
        return W, False, criteria
    cleaned = _without_residue(program, W, criteria["lower_bound"], tol, violation_tol)
    return cleaned, True, _criteria(program, cleaned, G, criteria["lower_bound"])


def _relative_gap(objective: float, lower_bound: float) -> float:
    return (objective - lower_bound) / max(abs(objective), 1e-12)


def _criteria(program: _Program, W: torch.Tensor, G: torch.Tensor, lower_bound: float | None = None) -> dict:
    """Objective, violation, stationarity and (squared loss) dual bound and relative gap;
    ``optimal_within`` is the gap (squared) or the stationarity (logistic). ``lower_bound``:
    a bound already certified (it holds for any W), used instead of computing one."""
    objective = program.objective(W)
    out = {"objective": objective, "violation": program.violation(W), "stationarity": program.stationarity(W, G),
           "lower_bound": None, "relative_gap": None}
    if program.loss == "squared":
        out["lower_bound"] = program.dual_bound(W, G) if lower_bound is None else lower_bound
        out["relative_gap"] = _relative_gap(objective, out["lower_bound"])
        out["optimal_within"] = out["relative_gap"]
    else:
        out["optimal_within"] = out["stationarity"]
    return out


def _padded_warm_start(warm_start: tuple[torch.Tensor, torch.Tensor] | None, n: int, k: int, P: int,
                       like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, G) for P patterns: zeros, or a previous (W, G) with fewer patterns, its S and T
    halves placed at the start of the new S and T halves."""
    W = torch.zeros(k, 2 * P, dtype=like.dtype, device=like.device)
    G = torch.zeros(n, 2 * P, dtype=like.dtype, device=like.device)
    if warm_start is not None:
        W_old, G_old = warm_start
        half = W_old.shape[1] // 2
        for target, source in ((W, W_old), (G, G_old)):
            target[:, :half] = source[:, :half].to(like)
            target[:, P : P + half] = source[:, half:].to(like)
    return W, G


def solve_native(
    U_prime: torch.Tensor,
    masks: torch.Tensor,
    y: torch.Tensor,
    beta: float,
    loss: str = "squared",
    tol: float = 1e-5,
    violation_tol: float = 1e-6,
    max_outer: int = 200,
    max_inner: int = 2000,
    warm_start: tuple[torch.Tensor, torch.Tensor] | None = None,
    method: str = "auto",
    threads: int | None = 1,
) -> NativeResult:
    """Solve the program on the device and dtype of ``U_prime`` (masks: n x P, 0/1).

    Stops when the relative duality gap (squared loss) or the relative stationarity
    (logistic) is <= tol and the relative constraint violation is <= violation_tol;
    otherwise stops after max_outer outer iterations and reports converged=False (the
    callers raise SolverError unless the user accepts inaccurate solutions).
    ``warm_start`` is a previous (W, G), e.g. with fewer patterns (padded with zeros).
    ``method``: "ipm" (primal-dual interior-point method, squared loss, float64; warm
    starts are not used), "al" (augmented Lagrangian) or "auto" (ipm where it applies, else
    al). For "ipm", max_outer counts interior-point iterations (max_inner is not used).
    ``threads``: torch's intra-op threads during the solve (restored afterwards); None keeps
    torch's setting. One thread is the default because on a loaded machine torch's default
    threads collapsed this solver 125x (docs/benchmarks.md, bench_threads.py); idle, two
    threads were 1.3x faster than one on 2 cores.
    """
    if threads is not None:
        check_count(threads, "solver='torch'", "threads")
    with intra_op_threads(threads):
        return _solve_native(U_prime, masks, y, beta, loss, tol, violation_tol, max_outer, max_inner, warm_start,
                             method)


def _solve_native(U_prime: torch.Tensor, masks: torch.Tensor, y: torch.Tensor, beta: float, loss: str, tol: float,
                  violation_tol: float, max_outer: int, max_inner: int,
                  warm_start: tuple[torch.Tensor, torch.Tensor] | None, method: str) -> NativeResult:
    if loss not in ("squared", "logistic"):
        raise ValueError(f"solver='torch' supports the squared and logistic losses, not {loss!r}")
    if method not in ("auto", "ipm", "al"):
        raise ValueError(f"solver='torch': method must be 'auto', 'ipm' or 'al', got {method!r}")
    for name, value in (("tol", tol), ("violation_tol", violation_tol)):
        check_positive(value, "solver='torch'", name)
    check_count(max_outer, "solver='torch'", "max_outer")
    check_count(max_inner, "solver='torch'", "max_inner")
    if U_prime.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"solver='torch': dtype must be torch.float32 or torch.float64, got {U_prime.dtype}")
    if method == "ipm" and (loss != "squared" or U_prime.dtype != torch.float64):
        raise ValueError("solver='torch': method='ipm' needs the squared loss and float64")
    A = U_prime
    y = y.to(A)
    masks = masks.to(A)
    n, k = A.shape
    P = masks.shape[1]
    program = _Program.from_patterns(A, masks, y, beta, loss)
    if method == "ipm" or (method == "auto" and loss == "squared" and A.dtype == torch.float64):
        used, solved = "ipm", _interior_point(program, tol, violation_tol, max_outer)
    else:
        W, G = _padded_warm_start(warm_start, n, k, P, A)
        used, solved = "al", _augmented_lagrangian(program, W, G, tol, violation_tol, max_outer, max_inner)
    W, G, iterations, converged, criteria = solved
    if criteria is None:
        criteria = _criteria(program.double(), W.double(), G.double())
    return NativeResult(W, G, criteria["objective"], criteria["lower_bound"], criteria["relative_gap"],
                        criteria["stationarity"], criteria["violation"], iterations, converged, used)
