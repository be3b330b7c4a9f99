"""A native PyTorch solver for the convex BN-ReLU program (issue #5).

With A = U' (n x k), patterns M (n x P), signs E = 2M - 1 and the groups W = [S, T]
(k x 2P, output signs o = (+1)^P, (-1)^P), the program is

    min_W  loss(f) + beta sum_j ||W_j||   s.t.  E_j * (A W_j) >= 0,   f = sum_j o_j M_j * (A W_j).

Augmented Lagrangian with multipliers G >= 0 (n x 2P) and penalty delta:

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
import warnings
from dataclasses import dataclass

import torch

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
        return float((-self.E * Z).clamp_min(0).max()) / scale if scale > 0 else 0.0

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
        if criteria["optimal_within"] <= tol and criteria["violation"] <= violation_tol:
            return W, G, iterations, True, criteria
        if criteria["violation"] > 0.25 * last_violation and criteria["violation"] > violation_tol:
            delta = min(delta * PENALTY_GROWTH, MAX_PENALTY)
        last_violation, within = criteria["violation"], criteria["optimal_within"]
    return W, G, iterations, False, criteria


#: Interior-point method: growth of the barrier weight t per centering (a sweep of 20 and
#: 50 on n = 200 gave 141 vs 350 Newton steps), and the fractions of the largest group norm
#: below which groups are set to zero at the end (the barrier keeps them strictly inside;
#: the first threshold whose point still meets the certified criteria is used).
BARRIER_GROWTH = 20.0
ZERO_GROUP_RTOLS = (1e-3, 1e-4, 1e-5)
#: Entries of the (groups x k x n) Woodbury factor built at once.
CHUNK_ENTRIES = 1 << 24


def _interior_start(program: _Program, max_iters: int = 10_000) -> torch.Tensor | None:
    """A W strictly inside every cone E_j * (A W_j) > 0 (batched perceptron from
    A^T E_j, unit columns), or None when the iteration budget runs out."""
    A, E = program.A, program.E
    W = A.T @ E
    for _ in range(max_iters):
        norms = torch.linalg.norm(W, dim=0).clamp_min(torch.finfo(W.dtype).tiny)
        below = E * (A @ W) <= 1e-9 * norms
        if not below.any():
            return W / norms
        W = W + A.T @ (E * below)
    return None


def _smoothed_norms(W: torch.Tensor, c: float) -> tuple[torch.Tensor, ...]:
    """h(w) = min_tau c tau - log(tau^2 - ||w||^2) per column: value, tau, s, rho with
    rho = ||w||, s = sqrt(1 + c^2 rho^2), tau = (1 + s) / c; gradient c w / tau, Hessian
    (c / tau) (I - u u^T + u u^T / s), u = w / rho."""
    rho = torch.linalg.norm(W, dim=0)
    s = torch.sqrt(1 + (c * rho) ** 2)
    tau = (1 + s) / c
    return c * tau - torch.log(tau**2 - rho**2), tau, s, rho


def _barrier(program: _Program, W: torch.Tensor, t: float) -> float:
    """t (loss + beta sum tau_j) - sum log(E * A W) - sum log(tau_j^2 - ||W_j||^2), tau minimized."""
    Z = program.A @ W
    slack = program.E * Z
    if not bool((slack > 0).all()):
        return math.inf
    value = torch_loss(program.loss, program.predictions(Z), program.y)
    return float(t * value + _smoothed_norms(W, t * program.beta)[0].sum() - torch.log(slack).sum())


def _newton_direction(program: _Program, W: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton step of the barrier (squared loss) and its gradient. The Hessian is
    t B^T B + blockdiag(H_j), B W = sum_j o_j M_j * (A W_j); solved through Woodbury with the
    n x n matrix I / t + sum_j (M_j A) H_j^{-1} (M_j A)^T."""
    A, M, E, o = program.A, program.M, program.E, program.o
    n, k = A.shape
    Z = A @ W
    slack = E * Z
    residual = program.predictions(Z) - program.y
    c = t * program.beta
    _, tau, s, rho = _smoothed_norms(W, c)
    grad = t * (A.T @ (M * residual[:, None] * o)) - A.T @ (E / slack) + c * W / tau
    unit = W / rho.clamp_min(torch.finfo(W.dtype).tiny)
    outer = torch.einsum("ig,jg->gij", unit, unit)
    eye = torch.eye(k, dtype=W.dtype, device=W.device)
    H = torch.einsum("ni,nj,ng->gij", A, A, slack**-2) + (c / tau)[:, None, None] * (eye - outer + outer / s[:, None, None])
    L, info = torch.linalg.cholesky_ex(H)
    jitter = 1e-14
    while bool((info > 0).any()):  # regularize the blocks that lost definiteness to rounding
        bad = info > 0
        H[bad] += (jitter * H[bad].diagonal(dim1=1, dim2=2).amax(1))[:, None, None] * eye
        L, info = torch.linalg.cholesky_ex(H)
        jitter *= 10
    step0 = torch.cholesky_solve(-grad.T[:, :, None], L)[:, :, 0].T
    capacitance = torch.eye(n, dtype=W.dtype, device=W.device) / t
    chunk = max(1, CHUNK_ENTRIES // (k * n))
    for start in range(0, M.shape[1], chunk):
        part = slice(start, start + chunk)
        factor = torch.linalg.solve_triangular(L[part], A.T.expand(L[part].shape[0], k, n), upper=False)
        factor = (factor * M.T[part][:, None, :]).reshape(-1, n)
        capacitance = capacitance + factor.T @ factor
    z = torch.linalg.solve(capacitance, program.predictions(A @ step0))
    back = (A.T @ (M * z[:, None] * o)).T
    return step0 - torch.cholesky_solve(back[:, :, None], L)[:, :, 0].T, grad


def _without_residue(program: _Program, W: torch.Tensor, lower_bound: float, tol: float) -> torch.Tensor:
    """W with the groups below the largest ZERO_GROUP_RTOLS fraction of the largest norm set
    to zero whose objective stays within tol of ``lower_bound`` (a bound on the optimum,
    valid for any primal point); W itself if none does."""
    norms = torch.linalg.norm(W, dim=0)
    for rtol in ZERO_GROUP_RTOLS:
        cleaned = torch.where(norms > rtol * norms.max(), W, torch.zeros_like(W))
        if _relative_gap(program.objective(cleaned), lower_bound) <= tol and program.violation(cleaned) == 0:
            return cleaned
    return W


def _interior_point(program: _Program, tol: float, violation_tol: float, max_outer: int,
                    max_inner: int) -> tuple[torch.Tensor, torch.Tensor, int, bool, dict | None] | None:
    """Barrier method (squared loss, float64): damped Newton centering of ``_barrier`` for
    t = 1, 20, 400, ...; multipliers G = 1 / (t E * A W). Stops on the measured criteria of
    ``_criteria`` (checked once nu / t, nu = groups (n + 2), is within 10 tol of the
    objective); returns W (residue of the zero groups removed, ``_without_residue``), G, Newton
    steps, success and the criteria of W with the certified lower bound (None without
    success); None when no interior start is found."""
    W = _interior_start(program)
    if W is None:
        return None
    W = 1e-3 * W
    n, groups = program.M.shape
    nu, t, steps = groups * (n + 2), 1.0 / BARRIER_GROWTH, 0
    for _ in range(max_outer):
        t *= BARRIER_GROWTH
        for _ in range(max_inner):
            direction, grad = _newton_direction(program, W, t)
            decrement = float(-(grad * direction).sum())
            steps += 1
            if decrement / 2 <= 1e-3:
                break
            size, current = 1.0, _barrier(program, W, t)
            while _barrier(program, W + size * direction, t) > current - 0.01 * size * decrement and size > 1e-14:
                size *= 0.5
            W = W + size * direction
        G = 1.0 / (t * program.E * (program.A @ W))
        objective = program.objective(W)
        logger.debug("interior point: t %g, %d Newton steps, objective %.10g", t, steps, objective)
        if nu / t <= 10 * tol * abs(objective):
            criteria = _criteria(program, W, G)
            if criteria["optimal_within"] <= tol and criteria["violation"] <= violation_tol:
                cleaned = _without_residue(program, W, criteria["lower_bound"], tol)
                return cleaned, G, steps, True, _criteria(program, cleaned, G, criteria["lower_bound"])
    return W, G, steps, False, None


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
) -> NativeResult:
    """Solve the program on the device and dtype of ``U_prime`` (masks: n x P, 0/1).

    Stops when the relative duality gap (squared loss) or the relative stationarity
    (logistic) is <= tol and the relative constraint violation is <= violation_tol;
    otherwise warns after max_outer outer iterations and reports converged=False.
    ``warm_start`` is a previous (W, G), e.g. with fewer patterns (padded with zeros).
    ``method``: "ipm" (barrier interior-point method, squared loss, float64; warm starts
    are not used), "al" (augmented Lagrangian) or "auto" (ipm where it applies, else al).
    For "ipm", max_outer counts barrier updates and max_inner Newton steps per centering.
    """
    if loss not in ("squared", "logistic"):
        raise ValueError(f"solver='torch' supports the squared and logistic losses, not {loss!r}")
    if method not in ("auto", "ipm", "al"):
        raise ValueError(f"solver='torch': method must be 'auto', 'ipm' or 'al', got {method!r}")
    if method == "ipm" and (loss != "squared" or U_prime.dtype != torch.float64):
        raise ValueError("solver='torch': method='ipm' needs the squared loss and float64")
    A = U_prime
    y = y.to(A)
    masks = masks.to(A)
    n, k = A.shape
    P = masks.shape[1]
    program = _Program.from_patterns(A, masks, y, beta, loss)
    solved, used = None, "ipm"
    if method == "ipm" or (method == "auto" and loss == "squared" and A.dtype == torch.float64):
        solved = _interior_point(program, tol, violation_tol, max_outer, min(max_inner, 200))
        if solved is None:
            logger.info("solver='torch': no interior start found for the interior-point method; using the "
                        "augmented Lagrangian")
    if solved is None:
        W, G = _padded_warm_start(warm_start, n, k, P, A)
        solved, used = _augmented_lagrangian(program, W, G, tol, violation_tol, max_outer, max_inner), "al"
    W, G, iterations, converged, criteria = solved
    if criteria is None:
        criteria = _criteria(program.double(), W.double(), G.double())
    if not converged:
        warnings.warn(
            f"solver='torch' stopped after {max_outer} outer iterations ({used}: "
            f"{'barrier' if used == 'ipm' else 'multiplier'} updates) without meeting its tolerances "
            f"(relative gap {criteria['relative_gap']}, stationarity {criteria['stationarity']:.2e}, "
            f"violation {criteria['violation']:.2e}); raise max_outer/max_inner or loosen tol",
            RuntimeWarning, stacklevel=2,
        )
    return NativeResult(W, G, criteria["objective"], criteria["lower_bound"], criteria["relative_gap"],
                        criteria["stationarity"], criteria["violation"], iterations, converged, used)
