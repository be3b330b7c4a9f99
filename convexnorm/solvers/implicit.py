"""The interior-point solution as a differentiable function of the data (docs/math.md, section 9).

At a solution W with active groups J (W_j != 0) and active constraint rows R (multiplier
G = z_rows > 0), the KKT conditions

    A^T (o_j M_j * loss'(f) - E_j * G_j) + beta W_j / ||W_j|| = 0      (j in J)
    (E_j * (A W_j))_R = 0

are a square smooth system F(u, theta) = 0 in u = (W_J, G_R), theta = (A, y, beta). For the
hinge loss, loss'(f) = -y alpha with alpha = 1 where y f < 1, 0 where y f > 1, and the samples on
the margin (y f = 1) add their alpha to u and y_i f_i - 1 = 0 to F (``_Margins``). The
backward pass solves J_u^T v = dL/du per episode by null spaces of the active rows (no dense
Jacobian: ``_episode_vjp``) and returns -v^T dF/dtheta. (The Newton system of the last
interior-point iterate gives the same derivative only to about 1e-3 near the solution, where
its scaling is ill-conditioned; the active-set system is well conditioned once each group's
own direction W_j / ||W_j||, feasible only to solver precision, is projected out of its rows.)

The forward first polishes the interior-point solution: Newton's method on F(u) = 0 from the
active sets read off the last iterate (``active_sets``: at most k - 1 rows per group), with up to
POLISH_CORRECTIONS primal-dual corrections of the rows, further attempts without the groups
still shrinking to zero or with parallel groups merged (one neuron split between two patterns,
where the optimum is not unique) and, where all are refused, a second try after the interior-point method
resumed to a tighter gap; kept only where it certifies a gap no larger than the interior-point
method's (typically 1e-15 where it succeeds; where it fails the interior-point solution is kept) and no
zero group could lower the objective (its least dual norm within ZERO_GROUP_DUAL_RTOL of beta; a guess
refused so is tried next with that group joined, and a point kept with a zero group above beta by more than the
polish's precision is polished once more with it joined).
Every loss (the hinge loss's margins read off the iterate and corrected the same way). Where the
settings skip the dense factorization (the hinge loss's block: Woodbury alone to 1e-5), episodes
that stop short finish with it, and a refused polish first resumes by Woodbury alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import torch

from convexnorm.errors import SolverError
from convexnorm.solvers.candidate_rows import solve_relaxed
from convexnorm.solvers.interior_point import InteriorPointResult, InteriorPointSettings, resumed_on, with_dense_route
from convexnorm.solvers.active_sets import active_sets, duplicate_sets, first_of_set
from convexnorm.solvers.kkt import Conic, Primal, criteria
from convexnorm.losses import loss_curvature, loss_gradient
from convexnorm.solvers.problem import ConvexBNProblem
from convexnorm.solvers.threads import intra_op_threads, over_chunks, solver_threads
from convexnorm.solvers.working_set import zero_groups_least_multipliers

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
#: The polish's tolerance is at least this fraction of the size of the numbers in its residual (max(1, |y|,
#: the multipliers; the squared loss's f - y is formed from f and y) times max(1, ||A||_2): float64's rounding
#: of them. At small beta the tolerance POLISH_RTOL beta lay below that (beta = 1e-5: 1e-15 against Newton's
#: method settled at 1.6e-15), and the polish was refused on 24 of 40 random batches at 32x6x32 and 64x8x64
#: (`bench_polish.py --beta 1e-5`), on 40 of 40 at 1e-6; with this floor on none. It acts below beta of
#: about 2e-4 max(1, |y|).
POLISH_ROUNDING = 100 * torch.finfo(torch.float64).eps
#: A polish step must shrink the largest residual entry by at least this factor.
POLISH_CONTRACTION = 0.5
#: ... except the first, which may grow it by up to this factor, POLISH_STEPS contracting steps following it. From
#: the interior-point iterate a small group's norm can be far from its optimum (measured at 64x8x64, beta 0.01,
#: seed 102: a group at 1.1e-3 of the largest whose optimum is 2.1e-4, where beta / ||W_j|| bends Newton's model):
#: the first step grew the residual from 2.2e-6 to 3.8e-6, the next three took it to 1e-15, and the polish, refused
#: at that step before, was refused on that batch also after resuming (its gradient 40% off central differences).
#: From a wrong active set the first step grew it 30x there (the groups at 4e-6 kept) or left it where it was (every
#: row active, tests/test_solvers.py), and the next step ends the polish.
POLISH_FIRST_GROWTH = 10.0
#: Corrections of the polish's active rows (negative multipliers out, violated rows in; one row per group each).
#: At 2, 11 of 40 copies of one program (features of a GreedyConvexBNNetwork's second block moved by 1e-13)
#: were refused with a multiplier of -8.5e-4 left; each was polished at 3.
POLISH_CORRECTIONS = 4
#: A polished point is refused where a zero group's least dual norm (over its rows' multipliers >= 0)
#: exceeds beta by more than this fraction of it: activating that group would lower the objective, so the
#: polish's active set left out a group that belongs in it (``_zero_groups_dual_feasible``). The relative
#: size of the certificate's violations (convex/certificate.py, VIOLATION_RTOL). Measured: 2.3e-4 where a
#: polish at 64x8x64 (seed 111) left out a group at 3e-6 of the largest, its gradient then up to 55% off; 3.2e-6
#: at a batch within 1e-6 of a kink (tests/test_solvers.py, seed 6139 at 48x4x96), whose polish is kept, then
#: tried with that group joined (ZERO_GROUP_DUAL_ROUNDING).
ZERO_GROUP_DUAL_RTOL = 1e-5
#: A polished point kept although a zero group's least dual norm exceeds beta by more than this fraction of it
#: (within ZERO_GROUP_DUAL_RTOL; the polish's own precision) is tried once more with those groups joined
#: (``_joined``), and the answer closer to dual feasibility kept (``polish_episode``). Measured: an exhaustive
#: 16x3 hinge program whose data moved by 1e-14 (2 of 20 copies), whose merged guess put a neuron into the wrong
#: one of two parallel patterns: left-out groups 4.3e-8 above beta, the objective 5.5e-9 above the optimum, now
#: at the optimum with every group within 7e-16; and the batch near a kink above (seed 6139 moved by 1e-6), its
#: group 3.2e-6 above beta now joined: its predictions 1.3e-6 off the cvxpylayers path before, 2e-9 after.
ZERO_GROUP_DUAL_ROUNDING = POLISH_RTOL
#: Where every attempt of the polish is refused, the interior-point method resumes from its solution
#: to this fraction of its tolerance and the polish is tried again (a 128x16x128 batch refused at a
#: certified gap of 6e-8 was polished from 9e-10).
RESUME_TOL_FACTOR = 1e-2
#: Where the interior-point method ran by Woodbury alone (the hinge loss's block), a refused polish is
#: first retried after it resumed, still so, to this fraction of its tolerance (a 128x16x128 batch
#: refused at 9e-6 was polished from 2e-6; the dense route to 1e-7 took 5 s instead of 0.45 s).
WOODBURY_RESUME_FACTOR = 1e-1
#: The polish's guesses at the active groups drop those below these fractions of the largest
#: (at 128x16x128: groups shrinking to zero at 2e-7 .. 2e-6 of it, and one batch whose polish held only
#: with a group at 9e-4 of it kept: 11 of 12 random batches polished with 1e-3 alone, 12 of 12 with both).
#: The guess without the groups below the largest fraction goes first (``polish_episode``).
SMALL_GROUP_RTOLS = (1e-5, 1e-3)
#: Of the groups between those two fractions, the polish tries dropping those up to each one (smallest first)
#: where there are at most this many; else up to the ones below the widest gaps between consecutive norms, this
#: many (``_band_thresholds``). A logistic program over every pattern of 60 samples in R^2 (beta 1e-4, stopped
#: short at a gap of 0.49) had about a thousand groups there: as many guesses, each a reduced system of about
#: 2000 solved in 1.5 s, and the fit ran for half an hour.
BAND_THRESHOLDS = 8
#: Two active groups of the same sign whose directions W_j / ||W_j|| agree to this cosine are taken for
#: one neuron split between two patterns that differ only on rows of its hyperplane (A w = 0 there, so
#: both give the same predictions): the optimum is then not unique along the split and the active-set
#: system singular there. The polish's further guesses merge such groups into the larger one (measured at
#: 32x6x32: two groups at cosine 1 - 3.6e-7, the reduced system's smallest eigenvalue 3.4e-9 of 5.8).
PARALLEL_GROUP_COSINE = 1 - 1e-5
#: The smooth losses' reduced active-set systems are solved by Cholesky up to this diagonal spread of
#: its factor (``_reduced_solve``). On the sweep's 12 smooth-loss programs (block sizes, two seeds) every
#: such system factored, with spreads of at most 3.1e3 and condition numbers of at most 6.7e4; at
#: 128x16x128 (dimension ~190) the solve took ~0.2 instead of 3.5 ms by gelsd.
CHOLESKY_MAX_SPREAD = 1e8
#: Singular values of a reduced system solved by least squares below this fraction of its largest are zero
#: (``_reduced_solve``). Where the optimum is not unique (many active groups for few samples: an exhaustive
#: 16x3 squared program at beta 0.01 with 110 active groups) the reduced system is singular, its zero
#: eigenvalues at 1e-13 of the largest after the interior-point method's rounding; gelsd's default cut (machine
#: epsilon times the dimension) kept them, Newton's first step grew the residual from 8e-5 to 2e-2, and the
#: polish was refused: the fit's certificate then read 1.1% above beta (logistic: 0.12% and 0.2% on two of 58
#: programs). With the cut at 1e-12, 1e-10 or 1e-8 it polished to a gap of 4e-14 (docs/benchmarks.md, session 30).
REDUCED_RCOND = 1e-10
#: Largest reduced system (null-space coordinates plus the hinge loss's margin samples) the polish solves: a
#: larger active set is refused without a step. The polish's systems measured 24 .. 473 on the benchmarks'
#: programs (block 128x16x128; estimators at n = 1000 with 100 and 1000 patterns; every pattern of 24x3 data),
#: while from a hinge program over every pattern of 60 samples in R^2 (beta 1e-4) stopped at a gap of 4.5e-5
#: the first guess held 2279 groups, a system of 4558 whose least-squares solve (an SVD) took 24 s, twice per
#: fit; it was refused. gelsd took 0.14 s at 1000 and 1.8 s at 2000 on the 2-core AMD machine.
POLISH_MAX_DIMENSION = 2000


def _active_set_residual(u: torch.Tensor, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, M: torch.Tensor,
                         o: torch.Tensor, rows: torch.Tensor, loss: str, margins: "_Margins | None" = None
                         ) -> torch.Tensor:
    """F(u, theta) of one episode on its active groups (columns of M, signs o) and active rows
    (boolean n x |J|). The hinge loss (``margins``): its gradient is -y alpha, alpha fixed off the
    margin and the last entries of u on it, where F adds y_i f_i - 1."""
    k, groups = A.shape[1], M.shape[1]
    W = u[: k * groups].reshape(k, groups)
    flat = torch.nonzero(rows.reshape(-1)).squeeze(1)
    count = flat.numel()
    G = torch.zeros(rows.numel(), dtype=u.dtype, device=u.device).scatter(
        0, flat, u[k * groups: k * groups + count]).reshape(rows.shape)
    E = 2 * M - 1
    Z = A @ W
    f = (M * Z) @ o
    if margins is None:
        gradient, extra = loss_gradient(loss, f, y), []
    else:
        gradient = -y * margins.with_margin_values(u[k * groups + count:]).alpha
        extra = [(y * f - 1)[margins.margin]]
    stationarity = A.T @ (M * gradient[:, None] * o - E * G) + beta * W / torch.linalg.norm(W, dim=0)
    return torch.cat([stationarity.reshape(-1), (E * Z)[rows], *extra])


@dataclass
class _Margins:
    """The hinge loss's samples at a solution: alpha (n,) its subgradient multipliers (1 where
    y f < 1, 0 where y f > 1) and ``margin`` (n,) the samples with y f = 1, whose alpha in [0, 1]
    is an unknown of the active-set system."""

    alpha: torch.Tensor
    margin: torch.Tensor

    @property
    def on_margin(self) -> torch.Tensor:
        return self.alpha[self.margin]

    def with_margin_values(self, values: torch.Tensor) -> "_Margins":
        return _Margins(self.alpha.masked_scatter(self.margin, values), self.margin)


_Solution = tuple[torch.Tensor, torch.Tensor, _Margins | None]


def _reduced_solve(reduced: torch.Tensor, rhs: torch.Tensor, bordered: bool) -> torch.Tensor:
    """reduced^-1 rhs for the symmetric reduced system of ``_ActiveSystem.solve``: by Cholesky where it
    factors with a diagonal spread (max l_ii / min l_ii)^2, a lower bound on its condition number, of at
    most CHOLESKY_MAX_SPREAD; else (the hinge loss's bordered or curvature-free systems, a singular one)
    the minimum-norm least-squares answer with singular values below REDUCED_RCOND of the largest taken as
    zero, gelsd (SVD) on the CPU: gelsy's answers differ by ~1e-13 between identical calls (reentrancy)."""
    if not bordered:
        factor, info = torch.linalg.cholesky_ex(reduced)
        if int(info) == 0:
            diagonal = factor.diagonal()
            if float(diagonal.amin()) > 0 and float((diagonal.amax() / diagonal.amin()) ** 2) <= CHOLESKY_MAX_SPREAD:
                return torch.cholesky_solve(rhs[:, None], factor)[:, 0]
    driver = "gelsd" if reduced.device.type == "cpu" else None
    return torch.linalg.lstsq(reduced, rhs[:, None], rcond=REDUCED_RCOND, driver=driver).solution[:, 0]


class _ActiveSystem:
    """The KKT system of one episode on its active groups J and rows R at (W, G): J_u = [[K, -C^T],
    [C, 0]] in u = (W_J, G_R), with K = blockdiag(beta / ||W_j|| (I - w_j w_j^T)) + B^T diag(loss''(f))
    B (B_j = o_j M_j * A) and C block diagonal (C_j = the active rows (E_j * A)[R_j]).

    Solved by null spaces: C_j = U_j S_j V_j^T after w_j = W_j / ||W_j|| is projected out of C_j's
    rows (W_j satisfies them only to solver precision, which leaves a singular value of that size
    along w_j; projected, W_j is exactly feasible and the rank decision clean), Z_j the right
    singular vectors with S_j <= RANK_RTOL ||A||_2 (docs/math.md, section 9)."""

    def __init__(self, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, M: torch.Tensor, o: torch.Tensor,
                 rows: torch.Tensor, W: torch.Tensor, G: torch.Tensor, loss: str, A_norm: float,
                 margins: _Margins | None = None) -> None:
        """W (k, |J|) and G (n, |J|) on the active groups (columns of M, signs o); rows (n, |J|);
        A_norm = ||A||_2; ``margins``: the hinge loss's (its margin equations y_i f_i = 1 join C)."""
        self.A, self.y, self.beta, self.M, self.o, self.rows, self.loss = A, y, beta, M, o, rows, loss
        self.margins = margins
        self.A_norm = A_norm
        self.W, self.G = W, G
        self.norms = torch.linalg.norm(W, dim=0)
        self.w_hat = (W / self.norms).T  # (|J|, k)
        E = 2 * M - 1
        # each group's active rows (at most k - 1 of its n, ``active_sets``) gathered into the first
        # ``capacity`` rows, padded with zero rows: the SVD of (|J|, capacity, k) instead of (|J|, n, k)
        k = A.shape[1]
        capacity = max(int(rows.sum(0).max()), 1)
        self.row_index = torch.argsort(rows.T.to(torch.int8), dim=1, descending=True, stable=True)[:, :capacity]
        self.row_valid = rows.T.gather(1, self.row_index).to(A.dtype)  # (|J|, capacity)
        C = E.T.gather(1, self.row_index)[..., None] * A[self.row_index] * self.row_valid[..., None]
        C = C - (C @ self.w_hat[:, :, None]) * self.w_hat[:, None, :]
        U, S, Vh = torch.linalg.svd(C, full_matrices=True)
        rank = min(capacity, k)  # U (|J|, capacity, k) and S (|J|, k), zero past the rank: V spans all of R^k
        self.U = torch.cat([U[..., :rank], U.new_zeros(*U.shape[:2], k - rank)], -1)
        self.S = torch.cat([S, S.new_zeros(S.shape[0], k - rank)], -1)
        self.V = Vh.transpose(-1, -2)
        self.null = self.S <= RANK_RTOL * A_norm
        self.inverse_S = torch.where(self.null, torch.zeros_like(self.S),
                                     1 / torch.where(self.null, torch.ones_like(self.S), self.S))
        self.signed_masks = o * M  # (n, |J|): B_j = o_j M_j * A, applied through A (one product for all groups)
        self.curvature = torch.zeros_like(y) if margins is not None else loss_curvature(loss, self._predicted(W.T), y)

    @property
    def margin_samples(self) -> int:
        """The hinge loss's samples on the margin (their alpha are unknowns of the system; 0 for other losses)."""
        return 0 if self.margins is None else int(self.margins.margin.sum())

    @property
    def reduced_dimension(self) -> int:
        """The dimension of ``solve``'s reduced system: the null-space coordinates and the margin samples."""
        return int(self.null.sum()) + self.margin_samples

    def pack(self, W: torch.Tensor, G: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """One vector in the layout of u and F from W-shaped (k, |J|) and G-shaped (n, |J|) parts (and
        the margin part c, the hinge loss)."""
        return torch.cat([W.reshape(-1), G[self.rows], *([] if self.margins is None else [c])])

    def unpack(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The inverse of ``pack``, as (|J|, k), (|J|, n) (zero off the active rows) and the margin part."""
        k, groups = self.W.shape
        G = torch.zeros_like(self.G)
        count = int(self.rows.sum())
        G[self.rows] = u[k * groups: k * groups + count]
        return u[: k * groups].view(k, groups).T, G.T, None if self.margins is None else u[k * groups + count:]

    def residual(self, W: torch.Tensor, G: torch.Tensor, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor,
                 c: torch.Tensor | None = None) -> torch.Tensor:
        """F = (stationarity (k |J|), active rows (|R|), margins (hinge)) at (W, G, alpha on the margin c)
        for the data (A, y, beta)."""
        return _active_set_residual(self.pack(W, G, c), A, y, beta, self.M, self.o, self.rows, self.loss,
                                    self.margins)

    def tolerance(self, W: torch.Tensor, scale: float) -> torch.Tensor:
        """The polish's tolerance of each entry of F at W (k, |J|): POLISH_RTOL ``scale`` (of the stationarity's
        size, beta max(1, ||A||_2)), for the active rows of group j at least POLISH_RTOL ||A||_2 ||W_j||, their
        constraints' own size: a group's nearly dependent rows (singular values of 1e-12, below the rank
        decision) hold an inconsistency Newton's steps cannot remove (1.3e-11 at ||W_j|| = 7.9, a relative
        1.6e-12, against 1e-12 at beta 0.01: the polish stalled on 18 of 40 copies of a program whose data
        moved by 1e-14, docs/math.md section 9)."""
        floor = POLISH_RTOL * scale
        groups = torch.nonzero(self.rows)[:, 1]
        rows = (POLISH_RTOL * self.A_norm * torch.linalg.norm(W, dim=0)[groups]).clamp_min(floor)
        return torch.cat([rows.new_full((W.numel(),), floor), rows, rows.new_full((self.margin_samples,), floor)])

    def _predicted(self, v: torch.Tensor) -> torch.Tensor:
        """B v = sum_j B_j v_j (n,), the change of f for v (|J|, k)."""
        return ((self.A @ v.T) * self.signed_masks).sum(-1)

    def _predicted_adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """B^T g (|J|, k) for g (n,)."""
        return (self.signed_masks * g[:, None]).T @ self.A

    def apply_K(self, v: torch.Tensor) -> torch.Tensor:
        """K v for v (|J|, k)."""
        w = self.w_hat
        return (self.beta / self.norms)[:, None] * (v - (v * w).sum(1, keepdim=True) * w) + self._predicted_adjoint(
            self.curvature * self._predicted(v))

    def solve(self, r_W: torch.Tensor, r_R: torch.Tensor, r_M: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """a (|J|, k), b (|J|, n) with K a + C^T b = r_W and C a = r_R (r_R (|J|, n), zero off R):
        a = a_p + Z alpha with a_p = C^+ r_R and (Z^T K Z) alpha = Z^T (r_W - K a_p), then b = C^+T (r_W - K a)
        group by group (least squares where the reduced system is singular: the minimum-norm answer).
        The hinge loss adds D a = r_M with D = Y B on the margin samples (coupling the groups through f)
        and D^T c on the left: [[Z^T K Z, (D Z)^T], [D Z, 0]] (alpha, c) = (Z^T (r_W - K a_p), r_M - D a_p)."""
        V, null, k = self.V, self.null, self.A.shape[1]
        r_R = r_R.gather(1, self.row_index) * self.row_valid  # the active rows, as C's
        a = (V @ (self.inverse_S * (self.U.transpose(-1, -2) @ r_R[..., None])[..., 0])[..., None])[..., 0]
        margin = None if self.margins is None else self.margins.margin
        c = None if margin is None else r_W.new_zeros(self.margin_samples)
        bordered = c is not None and c.numel() > 0
        keep = null.flatten()  # the null-space coordinates among the |J| k
        if bool(keep.any()):
            Z = V * null[:, None, :]
            AZ = (self.A @ Z.transpose(0, 1).reshape(k, -1)).view(-1, len(Z), k)  # A Z_j (n, |J|, k)
            BZ = (AZ * self.signed_masks[..., None]).flatten(1)[:, keep]  # (n, dim)
            Zw = (Z.transpose(-1, -2) @ self.w_hat[:, :, None])[..., 0]
            blocks = (self.beta / self.norms)[:, None, None] * (torch.diag_embed(null.to(V.dtype))
                                                                - Zw[:, :, None] * Zw[:, None, :])
            # their block diagonal on the null-space coordinates: entry (a, b) of group g_a's block where
            # g_a = g_b (the blocks vanish off their null coordinates)
            group = torch.arange(len(blocks), device=V.device).repeat_interleave(k)[keep]
            coordinate = torch.arange(k, device=V.device).repeat(len(blocks))[keep]
            diagonal = torch.where(group[:, None] == group[None, :],
                                   blocks[group[:, None], coordinate[:, None], coordinate[None, :]], 0.0)
            reduced = diagonal.addmm(BZ.T, self.curvature[:, None] * BZ)
            rhs = (Z.transpose(-1, -2) @ (r_W - self.apply_K(a))[..., None]).flatten()[keep]
            if bordered:
                DZ = (self.y[:, None] * BZ)[margin]
                Da = (self.y * self._predicted(a))[margin]
                reduced = torch.cat([torch.cat([reduced, DZ.T], 1), torch.cat([DZ, DZ.new_zeros(len(DZ), len(DZ))], 1)])
                rhs = torch.cat([rhs, r_M - Da])
            solution = _reduced_solve(reduced, rhs, bordered)
            dim = int(keep.sum())
            alpha = torch.zeros(keep.numel(), dtype=V.dtype, device=V.device)
            alpha[keep] = solution[:dim]
            if bordered:
                c = solution[dim:]
            a = a + (Z @ alpha.view(-1, k, 1))[..., 0]
        remainder = r_W - self.apply_K(a)
        if bordered:
            remainder = remainder - self._predicted_adjoint(self.y * torch.zeros_like(self.y).masked_scatter(margin, c))
        b = (self.U @ (self.inverse_S * (V.transpose(-1, -2) @ remainder[..., None])[..., 0])[..., None])[..., 0]
        b = torch.zeros_like(self.G).T.scatter_add(1, self.row_index, b * self.row_valid)
        return a, b, c


def _active_system(A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, W: torch.Tensor,
                   G: torch.Tensor, rows: torch.Tensor, loss: str, margins: _Margins | None = None,
                   A_norm: float | None = None) -> tuple[_ActiveSystem | None, torch.Tensor]:
    """The active-set system of one episode at W (k, 2P), G (n, 2P) with active rows (n, 2P) (and
    the hinge loss's margins), and the active groups (2P,). ``A_norm``: ||A||_2 if at hand."""
    active = torch.linalg.norm(W, dim=0) > 0  # the inactive groups are zero in W
    if not bool(active.any()):
        return None, active
    P = masks.shape[1]
    ones = torch.ones(P, dtype=A.dtype, device=A.device)
    M, o = torch.cat([masks, masks], 1)[:, active], torch.cat([ones, -ones])[active]
    rows = rows[:, active]
    if A_norm is None:
        A_norm = float(torch.linalg.matrix_norm(A, ord=2))
    return _ActiveSystem(A, y, beta, M, o, rows, W[:, active], G[:, active] * rows, loss, A_norm, margins), active


def _newton(system: _ActiveSystem, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, loss: str, scale: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, _ActiveSystem] | None:
    """Newton's method on F(u) = 0 of ``system``'s active sets from its point: at most POLISH_STEPS
    steps after the first, stopped once every residual entry is within its tolerance (``_ActiveSystem.tolerance``,
    from POLISH_RTOL ``scale``); None at a step that does not contract the largest ratio of an entry to its
    tolerance by POLISH_CONTRACTION (the first: that grows it by more than POLISH_FIRST_GROWTH) and does not
    land within the tolerances, where they are not reached, or before a step whose reduced system is larger
    than POLISH_MAX_DIMENSION. Returns
    (W_J, G_J, the hinge loss's alpha on the margin) and the system at the last point where a step
    was taken."""
    W_J, G_J = system.W, system.G
    c_J = None if system.margins is None else system.margins.on_margin
    def size_of(F: torch.Tensor, W: torch.Tensor) -> float:
        """The largest ratio of an entry of F to its tolerance at W (within the tolerances: at most 1)."""
        return float((F.abs() / system.tolerance(W, scale)).max())

    F = system.residual(W_J, G_J, A, y, beta, c_J)
    size = size_of(F, W_J)
    for step in range(POLISH_STEPS + 1):
        if size <= 1:
            break
        if step > 0:  # the system at the current point, only where a step is taken from it
            margins = None if c_J is None else system.margins.with_margin_values(c_J)
            system = _ActiveSystem(A, y, beta, system.M, system.o, system.rows, W_J, G_J, loss, system.A_norm,
                                   margins)
        if system.reduced_dimension > POLISH_MAX_DIMENSION:
            logger.debug("polish: an active set of %d groups (reduced system %d) refused", system.W.shape[1],
                         system.reduced_dimension)
            return None
        a, b, c = system.solve(*system.unpack(-F))
        W_next, G_next = W_J + a.T, G_J - b.T * system.rows
        c_next = None if c_J is None else c_J - c
        F_next = system.residual(W_next, G_next, A, y, beta, c_next)
        size_next = size_of(F_next, W_next)
        # Newton's method contracts from a right active set; a step that does not (a wrong or degenerate
        # set: measured diverging or stalling at 1e-7 on a 128x16x128 batch) ends the polish, unless it lands
        # within the tolerances: near float64's floor a step's contraction is rounding (1.2e-12 -> 6.2e-13
        # against a tolerance of 1e-12 refused a program's polish, docs/math.md section 9)
        if not (bool(torch.isfinite(F_next).all()) and (size_next <= 1 or size_next <= (
                POLISH_FIRST_GROWTH if step == 0 else POLISH_CONTRACTION) * size)):
            return None
        W_J, G_J, c_J, F, size = W_next, G_next, c_next, F_next, size_next
    return (W_J, G_J, c_J, system) if size <= 1 else None


def _polish(A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, W: torch.Tensor,
            G: torch.Tensor, rows: torch.Tensor, loss: str, lower_bound: torch.Tensor, gap: torch.Tensor,
            margins: _Margins | None = None, A_norm: float | None = None, left_out: dict | None = None,
            marginal: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, _Margins | None] | None:
    """Newton's method on the active-set system from the interior-point solution (W (k, 2P) with
    the inactive groups zero, its multipliers G (n, 2P), the active rows): the same optimum to
    float64's precision instead of the interior-point method's tolerance (``_newton``). A row whose
    slack and multiplier both nearly vanish may be read off on the wrong side (measured at
    128x16x128: s = 6e-7, z = 1e-5, active in one batch and inactive after a change of H by 1e-6),
    so up to POLISH_CORRECTIONS times, of each group's rows whose multiplier came out negative, the
    one the iterate held least leaves the active set (``_least_held``), the inactive rows the point
    violates join it, and Newton's method restarts from the point (a primal-dual active-set step).
    Kept only if every row is feasible and every multiplier nonnegative (within POLISH_RTOL) and its
    certified gap is no larger than the interior-point method's ``gap``; else None. The gap is measured
    against the larger of the dual bound at the polish's own multipliers and ``lower_bound`` (the
    interior-point method's: a bound on the optimum whatever the point). The own bound alone can be the
    weaker one: a group shrinking to zero that the polish drops keeps the iterate's multipliers, no
    longer matched to the polished predictions (measured at 128x16x128: its dual norm 1.5e-6 above beta,
    a gap of 1.4e-6 for a point whose objective is below the iterate's). The hinge loss (``margins``):
    samples move the same way between the margin and the sides (alpha below 0 or above 1 leaves the
    margin; a sample whose y f crosses 1 joins it). ``A_norm``: ||A||_2 if at hand. Returns (W, G, the
    margins at the polished point). ``left_out``: where a zero group's dual feasibility refuses the point,
    those groups are added to it (``_zero_groups_dual_feasible``); ``marginal``: where the point is kept, the zero
    groups whose least dual norm exceeds beta by more than ZERO_GROUP_DUAL_ROUNDING are added to it."""
    system, active = _active_system(A, y, beta, masks, W, G, rows, loss, margins, A_norm)
    if system is None:
        return None
    # beta max(1, ||A||_2), or where beta is small the rounding of the stationarity's terms (POLISH_ROUNDING)
    sizes = max(1.0, float(y.abs().max()) if loss == "squared" else 1.0, float(G[:, active].abs().max()))
    scale = max(1.0, system.A_norm) * max(float(beta), POLISH_ROUNDING * sizes / POLISH_RTOL)
    tolerance = POLISH_RTOL * scale
    held = G[:, active]
    for correction in range(POLISH_CORRECTIONS + 1):
        found = _newton(system, A, y, beta, loss, scale)
        if found is None:
            return None
        W_J, G_J, c_J, system = found
        # every row within the tolerance its active entries of F met (a bound relative to ||W_j||
        # refused a small group's active rows at that same precision: 9e-12 ||W_j|| at ||W_j|| = 0.02)
        Z = A @ W_J
        slack = (2 * system.M - 1) * Z
        negative = _least_held(system.rows & (G_J < -tolerance), held)
        violated = ~system.rows & (slack < -tolerance)
        margins = None if c_J is None else system.margins.with_margin_values(c_J)
        moved = False
        if margins is not None:
            alpha, margin = margins.alpha, margins.margin
            margin_value = y * ((system.M * Z) @ system.o)
            leave_low, leave_high = margin & (alpha < -tolerance), margin & (alpha > 1 + tolerance)
            join = ~margin & (((alpha == 0) & (margin_value < 1 - tolerance))
                              | ((alpha == 1) & (margin_value > 1 + tolerance)))
            moved = bool((leave_low | leave_high | join).any())
            margins = _Margins(torch.where(leave_low, 0.0, torch.where(leave_high, 1.0, alpha)).to(alpha),
                               (margin & ~leave_low & ~leave_high) | join)
        if not (bool((negative | violated).any()) or moved):
            break
        if correction == POLISH_CORRECTIONS:
            logger.debug("polish: %d multiplier(s) below and %d inactive row(s) beyond -%.1e after %d corrections "
                         "(least multiplier %.2e)", int(negative.sum()), int(violated.sum()), tolerance, correction,
                         float(G_J[system.rows].min()))
            return None
        rows = (system.rows & ~negative) | violated
        system = _ActiveSystem(A, y, beta, system.M, system.o, rows, W_J, G_J.clamp_min(0) * rows, loss,
                               system.A_norm, margins)
    if not bool((torch.linalg.norm(W_J, dim=0) > 0).all()):
        return None
    polished = W.clone()
    polished[:, active] = W_J
    rows_held = G.clone()  # the inactive groups' multipliers enter the dual bound as they are
    rows_held[:, active] = G_J.clamp_min(0)
    problem = ConvexBNProblem(A[None], masks[None], y[None], beta[None], loss)
    dual = None if margins is None else margins.alpha.clamp(0, 1)[None]  # the hinge loss's lam = y alpha
    point = Primal.of_neurons(polished.T[None])
    rows_held = _zero_groups_dual_feasible(problem, point, Conic(rows_held[None], None, None, dual), left_out,
                                           marginal)
    if rows_held is None:
        return None
    measured = criteria(problem, point, Conic(rows_held[None], None, None, dual))
    bound = max(float(measured.lower_bound[0]), float(lower_bound))
    objective = float(measured.objective[0])
    if objective - bound > float(gap) * max(abs(objective), 1e-12):
        return None
    return polished, rows_held, margins


def _zero_groups_dual_feasible(problem: ConvexBNProblem, point: Primal, z: Conic, left_out: dict | None = None,
                               marginal: dict | None = None) -> torch.Tensor | None:
    """The row multipliers z.rows (n, 2P) of a polished point of one program, with those of each zero group
    whose dual norm ||A^T (o_j M_j lam + E_j G_j)|| exceeds beta (1 + ZERO_GROUP_DUAL_RTOL) replaced by the
    least over G_j >= 0 (``working_set.zero_groups_least_multipliers``); None where one still does: that
    group's zero is not optimal, the polish's active set left out a group that belongs in it (each such group
    added to ``left_out``: group -> (its projection, its rows' least multipliers)). The certified gap alone let
    such a point through: at 64x8x64 (seed 111) a polish without a group at 3e-6 of the largest was 1.4e-8
    above the optimum, within the interior-point method's gap, its least dual norm 2.3e-4 above beta, and its
    gradient up to 55% off (docs/benchmarks.md, session 26). The groups whose least dual norm exceeds beta
    (1 + ZERO_GROUP_DUAL_ROUNDING) take their least multipliers too, and where the point is kept they are added to
    ``marginal`` (same layout)."""
    beta = float(problem.beta[0])
    G, over = zero_groups_least_multipliers(problem, point, z, beta * (1 + ZERO_GROUP_DUAL_ROUNDING))
    violated = {group: found for group, found in over.items()
                if _least_dual_norm(found) > beta * (1 + ZERO_GROUP_DUAL_RTOL)}
    if violated:
        if left_out is not None:
            left_out.update(violated)
        return None
    if marginal is not None:
        marginal.update(over)
    return G


def _least_held(negative: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """Of each group's rows whose multiplier came out negative (boolean (n, |J|)), the one whose multiplier
    ``held`` (n, |J|) at the interior-point iterate was smallest: one wrong row in a group's active set bends
    the multipliers of its other rows too (measured at 96x12x48, hinge loss: one row at z / s = 3 held wrongly,
    and two rows at z / s > 1e6 beside it came out at -0.46 and -0.44), so only the least certain leaves."""
    least = torch.where(negative, held, torch.inf).argmin(0, keepdim=True)
    rows = torch.arange(negative.shape[0], device=negative.device)[:, None]
    return negative & (rows == least)


def _episode_vjp(A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, W: torch.Tensor,
                 G: torch.Tensor, grad_W: torch.Tensor, loss: str, margins: _Margins | None = None,
                 A_norm: float | None = None) -> tuple[torch.Tensor, ...]:
    """(dL/dA, dL/dy, dL/dbeta) of one episode: W (k, 2P), G (n, 2P), grad_W (k, 2P). The adjoint v
    solves J_u^T v = (grad_W, 0), i.e. K v_W + C^T v_R = grad_W, C v_W = 0; the gradient is
    -v^T dF/dtheta (one vector-Jacobian product of the residual). ``A_norm``: ||A||_2 if at hand."""
    A, G, margins = _duplicates_shared(A, y, G, margins)
    system, active = _active_system(A, y, beta, masks, W, G, G > 0, loss, margins, A_norm)
    if system is None:
        return torch.zeros_like(A), torch.zeros_like(y), torch.zeros_like(beta)
    zero_margin = None if margins is None else y.new_zeros(system.margin_samples)
    v_W, v_R, v_M = system.solve(grad_W[:, active].T, torch.zeros_like(system.G).T, zero_margin)
    v = system.pack(v_W.T, v_R.T, v_M)
    data = tuple(t.detach().requires_grad_(True) for t in (A, y, beta))
    on_margin = None if margins is None else margins.on_margin
    with torch.enable_grad():  # one vector-Jacobian product of the residual (torch.func.vjp: 0.9 ms, this 0.55)
        return torch.autograd.grad(system.residual(system.W, system.G, *data, on_margin), data, -v,
                                   allow_unused=True, materialize_grads=True)


def _duplicates_shared(A: torch.Tensor, y: torch.Tensor, G: torch.Tensor, margins: _Margins | None
                       ) -> tuple[torch.Tensor, torch.Tensor, _Margins | None]:
    """A (n, k), G (n, 2P) and the hinge loss's margins with each set of duplicate rows of A (within
    DUPLICATE_RTOL of the largest row's norm: duplicate samples, equal after whitening only to rounding)
    replaced by its mean, in A and in the multipliers G, and each such set of equal y in the margins'
    alpha: such rows are one constraint in every group (and, with equal y, one margin equation), so only the
    sum of their multipliers is determined, and the mean is the minimum-norm split. A duplicate pair is a
    kink of the solution in A (moving one copy off the other activates one side). Where the active rows held
    only one copy (at most k - 1 rows per group, ``active_sets``), the backward's derivative along a direction
    that separates them was outside the two one-sided ones (-0.48 against -0.37 and 1.46, measured on a
    24x3x8 batch of 12 duplicated samples); with the means it is their average, as the cvxpylayers path
    gives (the hinge loss: its copies' alpha 1.6e-6 apart, their gradients 1.9e-4)."""
    first = duplicate_sets(A)
    if bool(first_of_set(first).all()):  # each row its own set
        return A, G, margins
    if margins is not None:
        margins = _Margins(_shared_alpha(A, y, margins), margins.margin)
    return _set_means(first, A), _set_means(first, G), margins



def hinge_multipliers(A: torch.Tensor, y: torch.Tensor, margins: list[_Margins | None]) -> torch.Tensor:
    """The hinge loss's multipliers alpha (batch, n) of episodes A (batch, n, k) with labels y (batch, n) at their
    solutions (``margins``, one per episode): -y alpha is the loss's derivative in the predictions that the KKT
    conditions hold, in [0, 1] on the margin y f = 1, where relu's derivative would follow the sign of the
    rounding; the same within each set of duplicate samples with the same label (their mean, as the backward
    shares them: ``_duplicates_shared``). Zeros where ``margins`` are None (the smooth losses)."""
    alpha = torch.zeros_like(y)
    for b, episode in enumerate(margins):
        if episode is not None:
            alpha[b] = _shared_alpha(A[b], y[b], episode)
    return alpha


def _shared_alpha(A: torch.Tensor, y: torch.Tensor, margins: _Margins) -> torch.Tensor:
    """The margins' alpha (n,) with each set of duplicate rows of A (n, k) of the same label y replaced by its
    mean (one margin equation, so only their sum is determined)."""
    return _set_means(duplicate_sets(A, y), margins.alpha[:, None])[:, 0]


def _set_means(first: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` (n, m) with each row replaced by the mean over its set (``first``: each row's set's first row)."""
    counts = torch.zeros(len(values), dtype=values.dtype, device=values.device).index_add_(
        0, first, torch.ones_like(values[:, 0]))
    return (torch.zeros_like(values).index_add_(0, first, values) / counts.clamp_min(1)[:, None])[first]


def margins_of(result: InteriorPointResult, episode: int) -> _Margins | None:
    """The hinge loss's margins read off an interior-point iterate (None for the smooth losses):
    alpha = z of the margin constraint xi + y f >= 1, fixed to 1 where only it is active (xi > 0),
    to 0 where it is not, free on the samples where both it and xi >= 0 are (multiplier above slack)."""
    if result.z.margin is None:
        return None
    z_slack, z_margin = result.z.slack[episode], result.z.margin[episode]
    slack_active, margin_active = z_slack > result.s.slack[episode], z_margin > result.s.margin[episode]
    margin = slack_active & margin_active
    alpha = torch.where(margin, z_margin, torch.where(margin_active, 1.0, 0.0).to(z_margin))
    return _Margins(alpha, margin)


@torch.inference_mode()
def polish_episode(problem: ConvexBNProblem, result: InteriorPointResult, groups: torch.Tensor, rows: torch.Tensor,
                   episode: int) -> tuple[torch.Tensor, torch.Tensor, _Margins | None] | None:
    """``_polish`` of one episode of an interior-point result from its active sets (``active_sets``,
    ``margins_of``): (W (k, 2P), G (n, 2P), margins) or None. A group still shrinking to zero may
    pass the active-group test, so the polish is tried first without the groups below the largest of
    SMALL_GROUP_RTOLS of the largest group, then with every group that passes, without those below the
    smallest of SMALL_GROUP_RTOLS, and without those up to each group between the two, smallest first (each
    distinct set once; a group shrinking to zero at 9.6e-5 of the largest beside an active one at 8.6e-4,
    measured at 80x10x80). This order refused 0-0.61 guesses per batch on 2700 random batches of the block's
    sizes (three losses and betas), against 0.06-2.37 with every group that passes first, and cut the hinge
    loss's polish by a third to a half (docs/benchmarks.md, session 35). A set refused because a group it leaves
    out belongs in the active set (``_zero_groups_dual_feasible``) is tried next with that group joined
    (``_joined``); and where all are
    refused, with the parallel groups of each set merged (``_merged_parallel_groups``: one neuron split
    between two patterns, where the active-set system is singular). A point kept with zero groups marginally above
    beta is polished once more with them joined (ZERO_GROUP_DUAL_ROUNDING). The zero network (W = 0 certified by
    the interior-point method: no active group, nothing to polish) is returned as it is."""
    b = episode
    if not bool(result.W[b].any()):
        return _iterate_solution(result, rows, b)
    A_norm = float(problem.spectral_norms[b])
    norms = torch.linalg.norm(result.W[b], dim=-1)
    margins = margins_of(result, b)
    # the thresholds SMALL_GROUP_RTOLS, then each group norm between them, smallest first
    low, high = (rtol * norms.max() for rtol in (SMALL_GROUP_RTOLS[0], SMALL_GROUP_RTOLS[-1]))
    band = groups[b] & (norms > low) & (norms <= high)
    thresholds = [rtol * norms.max() for rtol in SMALL_GROUP_RTOLS] + _band_thresholds(norms[band])
    larger = [groups[b] & (norms > threshold) for threshold in thresholds]
    attempts: list[torch.Tensor] = []
    for chosen in [larger[len(SMALL_GROUP_RTOLS) - 1], groups[b], *larger]:
        if not any(torch.equal(chosen, other) for other in attempts):
            attempts.append(chosen)

    def attempt(W: torch.Tensor, G: torch.Tensor, R: torch.Tensor, start: _Margins | None, left_out: dict | None,
                marginal: dict) -> _Solution | None:
        return _polish(problem.A[b], problem.y[b], problem.beta[b], problem.masks[b], W.T, G, R, problem.loss,
                       result.criteria.lower_bound[b], result.criteria.relative_gap[b], start, A_norm, left_out,
                       marginal)

    def polished(W: torch.Tensor, G: torch.Tensor, R: torch.Tensor, left_out: dict | None = None) -> _Solution | None:
        """The polish from (W, G, R); where it holds with zero groups marginally above beta, the polish with them
        joined (``_joined``) instead where that holds closer to dual feasibility (ZERO_GROUP_DUAL_ROUNDING)."""
        marginal: dict = {}
        found = attempt(W, G, R, margins, left_out, marginal)
        if found is None or not marginal:
            return found
        again: dict = {}
        _, W, G, R = _joined(problem, b, torch.linalg.norm(found[0], dim=0) > 0, found[0].T, found[1], found[1] > 0,
                             marginal)
        second = attempt(W, G, R, found[2], None, again)
        if logger.isEnabledFor(logging.INFO):
            beta = float(problem.beta[b])
            logger.info("polish: zero groups %s up to %.1e above beta; joined: %s", sorted(marginal),
                         _largest_dual_norm(marginal) / beta - 1, "refused" if second is None else
                         f"up to {_largest_dual_norm(again) / beta - 1:.1e} above" if again else "none above")
        return found if second is None or _largest_dual_norm(again) >= _largest_dual_norm(marginal) else second

    # a set refused for leaving out groups that belong in it is tried next with them (``_joined``)
    queue = [(False, chosen, result.W[b] * chosen[:, None], result.z.rows[b], rows[b]) for chosen in attempts]
    tried: list[torch.Tensor] = []  # every set tried, from any point (merged below where all are refused)
    tried_joined: list[torch.Tensor] = []
    while queue:
        joined, chosen, W, G, R = queue.pop(0)
        # a joined guess starts from its own point, so a set tried from the iterate is tried once more from it
        if any(torch.equal(chosen, other) for other in (tried_joined if joined else tried)):
            continue
        if joined:
            tried_joined.append(chosen)
        if not any(torch.equal(chosen, other) for other in tried):
            tried.append(chosen)
        left_out: dict = {}
        found = polished(W, G, R, left_out)
        if found is not None:
            return found
        if left_out:
            queue.insert(0, (True, *_joined(problem, b, chosen, W, G, R, left_out)))
    for chosen in list(tried):  # where all were refused: the same sets with parallel groups merged
        merged = _merged_parallel_groups(result.W[b], chosen)
        if merged is not None and not any(torch.equal(merged[0], other) for other in tried):
            tried.append(merged[0])
            found = polished(merged[1], result.z.rows[b], rows[b])
            if found is not None:
                return found
    return None


def _least_dual_norm(found: tuple[torch.Tensor, torch.Tensor]) -> float:
    """A zero group's least dual norm: the norm of its projection (``zero_groups_least_multipliers``'s
    (projection, least multipliers))."""
    return float(torch.linalg.norm(found[0]))


def _largest_dual_norm(groups: dict) -> float:
    """The largest least dual norm of zero groups (group -> (projection, least multipliers)); 0 where none."""
    return max(map(_least_dual_norm, groups.values()), default=0.0)


def _band_thresholds(norms: torch.Tensor) -> list[float]:
    """The polish's thresholds among the group norms of the band (``polish_episode``), ascending: each norm
    where there are at most BAND_THRESHOLDS, else the BAND_THRESHOLDS norms below the largest ratios between
    consecutive ones (a group shrinking to zero lies far below an active one: 9.6e-5 and 8.6e-4 of the largest
    at 80x10x80)."""
    ordered = torch.sort(norms).values
    if len(ordered) <= BAND_THRESHOLDS:
        return ordered.tolist()
    ratios = ordered[1:] / ordered[:-1]
    below = torch.topk(ratios, BAND_THRESHOLDS - 1).indices
    # the largest norm too: every group of the band dropped
    return torch.sort(torch.cat([ordered[below], ordered[-1:]])).values.tolist()


def _joined(problem: ConvexBNProblem, b: int, chosen: torch.Tensor, W: torch.Tensor, G: torch.Tensor,
            R: torch.Tensor, left_out: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The polish's next guess where groups it left out belong in the active set (``left_out``: group ->
    (the projection p of its o_j A^T (M_j lam) onto its cone, its rows' least multipliers mu)): each joins
    along p, the direction of steepest descent of the objective among its feasible W_j, at the step
    t = (||p|| - beta) / ||M_j A p_hat||^2 that minimizes the objective's quadratic model there (curvature
    1), its active rows those with mu > 0 (the face of its cone holding p) and mu their multipliers. A group
    whose p is parallel to an active group of the same sign (PARALLEL_GROUP_COSINE: one neuron on the hyperplane
    of the rows where their patterns differ) takes that group's neuron instead (the largest ||p|| first, the
    other groups parallel to it left out): beside it the active-set system is singular (an exhaustive 16x3 hinge
    program, a merged guess put the neuron in the pattern whose extra row binds, docs/math.md section 9).
    Returns (chosen, W (2P, k), G (n, 2P), R (n, 2P))."""
    active, given, norms = torch.nonzero(chosen).flatten(), W, torch.linalg.norm(W, dim=-1)
    chosen, W, G, R = chosen.clone(), W.clone(), G.clone(), R.clone()
    A, masks, beta = problem.A[b], problem.masks[b], float(problem.beta[b])
    P = problem.patterns
    moved: set[int] = set()
    for group, (projection, least) in sorted(left_out.items(), key=lambda item: -_least_dual_norm(item[1])):
        size = torch.linalg.norm(projection)
        direction = projection / size
        same_sign = active[(active // P == group // P) & (active != group)]
        parallel = same_sign[given[same_sign] @ direction > PARALLEL_GROUP_COSINE * norms[same_sign]].tolist()
        if parallel:
            if parallel[0] in moved:
                continue
            moved.add(parallel[0])
            W[group], W[parallel[0]] = W[parallel[0]], 0.0
            chosen[parallel[0]], R[:, parallel[0]] = False, False
        else:
            reach = torch.linalg.norm(masks[:, group % P] * (A @ direction))
            W[group] = direction * (size - beta) / reach.clamp_min(torch.finfo(A.dtype).tiny) ** 2
        chosen[group] = True
        R[:, group] = least > 0
        G[:, group] = least
    return chosen, W, G, R


def _merged_parallel_groups(W: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The groups ``chosen`` (2P,) of W (2P, k) with each set of same-sign groups whose directions agree
    to PARALLEL_GROUP_COSINE merged into its largest: W_i + W_j for parallel W_i, W_j is feasible for
    either group's rows and has the norm ||W_i|| + ||W_j|| (the same regularization and, where their
    patterns differ only on rows of the common hyperplane, the same predictions). (chosen, W with the
    merged groups zero) or None where no two groups are parallel."""
    P = W.shape[0] // 2
    norms = torch.linalg.norm(W, dim=-1)
    kept, merged = chosen.clone(), W * chosen[:, None]
    for half in (slice(0, P), slice(P, 2 * P)):
        index = torch.nonzero(chosen[half]).squeeze(1) + half.start
        if len(index) < 2:
            continue
        directions = W[index] / norms[index, None]
        parallel = (directions @ directions.T > PARALLEL_GROUP_COSINE).fill_diagonal_(False)
        if not bool(parallel.any()):
            continue
        for position in torch.argsort(norms[index], descending=True).tolist():
            group = int(index[position])
            if not bool(kept[group]):
                continue
            partners = [int(index[other]) for other in torch.nonzero(parallel[position]).squeeze(1).tolist()
                        if bool(kept[index[other]])]
            for partner in partners:
                merged[group] += merged[partner]
                merged[partner] = 0
                kept[partner] = False
    return None if torch.equal(kept, chosen) else (kept, merged)


def _iterate_solution(result: InteriorPointResult, rows: torch.Tensor, episode: int) -> _Solution:
    """An episode's interior-point iterate in the polish's layout, where the polish is refused: W
    (k, 2P) with the groups below ACTIVE_GROUP_RTOL of the largest zero, G (n, 2P) the multipliers
    of the active rows (``active_sets``), the margins read off the iterate."""
    W = result.W[episode]
    norms = torch.linalg.norm(W, dim=-1)
    W = torch.where((norms > ACTIVE_GROUP_RTOL * norms.amax())[:, None], W, torch.zeros_like(W))
    return W.T, result.z.rows[episode] * rows[episode], margins_of(result, episode)


def _resumed_polish(problem: ConvexBNProblem, result: InteriorPointResult, episodes: list[int],
                    settings: InteriorPointSettings) -> list[tuple[_Solution | None, _Solution]]:
    """The polish of ``episodes`` after the interior-point method resumed on them from ``result``
    (None where it is still refused), each with the tightest resumed iterate (``_iterate_solution``):
    where ``settings`` skip the dense route, first as they are to WOODBURY_RESUME_FACTOR of the
    tolerance (Woodbury alone stalled at about 1e-6 before its refinement's mismatch, solvers/newton.py),
    then, for those still refused, with the dense route to RESUME_TOL_FACTOR of it."""
    stages = [with_dense_route(replace(settings, tol=settings.tol * RESUME_TOL_FACTOR))]
    if settings.skips_dense_route:
        stages.insert(0, replace(settings, tol=settings.tol * WOODBURY_RESUME_FACTOR))
    found: dict[int, _Solution | None] = {}
    iterates: dict[int, _Solution] = {}
    for stage in stages:
        pending = [b for b in episodes if found.get(b) is None]
        if not pending:
            break
        subset, resumed = resumed_on(problem, result, problem.mask_of(pending), stage)
        groups, rows = active_sets(subset, resumed)
        for index, b in enumerate(pending):
            found[b] = polish_episode(subset, resumed, groups, rows, index)
            iterates[b] = _iterate_solution(resumed, rows, index)
    return [(found[b], iterates[b]) for b in episodes]


@dataclass
class _Unsolved:
    """Episodes (numbered in the whole batch) whose interior-point solve missed its tolerances, and
    the criteria of the first."""

    episodes: list[int]
    relative_gap: float
    violation: float


def _solve_chunk(A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, loss: str,
                 settings: InteriorPointSettings, owner: str, first: int, on_iteration: Callable[[], None] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, list[_Margins | None], list[float]] | _Unsolved:
    """The polished solutions W (batch, 2P, k), multipliers G (batch, n, 2P), margins and ||A||_2 of
    a batch of episodes numbered from ``first``, in inference mode like interior_point; _Unsolved
    where an episode missed the tolerances. ``on_iteration``: interior_point's."""
    with torch.inference_mode():
        problem = ConvexBNProblem(A, masks, y, beta, loss)
        result = solve_relaxed(problem, settings, on_iteration)
        failed = torch.nonzero(~result.converged).flatten().tolist()
        if failed:
            return _Unsolved([first + b for b in failed], float(result.criteria.relative_gap[failed[0]]),
                             float(result.criteria.violation[failed[0]]))
        groups, rows = active_sets(problem, result)
        solutions = [polish_episode(problem, result, groups, rows, b) for b in range(A.shape[0])]
        refused = [b for b, found in enumerate(solutions) if found is None]
        iterates = {}  # of the episodes refused at first: the tightest interior-point iterate
        if refused:  # resume those programs to a tighter gap, where their active sets separate further
            for b, (found, iterate) in zip(refused, _resumed_polish(problem, result, refused, settings)):
                solutions[b], iterates[b] = found, iterate
            refused = [b for b, found in enumerate(solutions) if found is None]
        if refused:
            logger.warning("%s: the polish was refused in episode(s) %s; their gradients rest on the "
                           "interior-point solution (resumed from a certified gap of %.1e) and the active "
                           "sets read off it", owner, [first + b for b in refused[:10]],
                           float(result.criteria.relative_gap[refused].max()))
        solutions = [iterates[b] if found is None else found for b, found in enumerate(solutions)]
        W = torch.stack([found[0].T for found in solutions])
        G = torch.stack([found[1] for found in solutions])
        return W, G, [found[2] for found in solutions], problem.spectral_norms.tolist()


class InteriorPointSolve(torch.autograd.Function):
    """W*(A, y, beta) (batch, 2P, k) for fixed masks, by the batched interior-point method, and (not
    differentiable) the hinge loss's multipliers alpha (batch, n) at the solution, each set of duplicate samples
    with the same label sharing their mean (zeros for the smooth losses: ``hinge_multipliers``); forward
    and backward on ``threads`` intra-op threads (solvers/threads.py: the backward runs when the
    autograd engine calls it, outside the caller's thread setting; "auto": the forward's iterations
    choose theirs where ``workers`` is 1, one thread otherwise), the episodes in ``workers`` chunks on
    as many threads (``over_chunks``)."""

    @staticmethod
    def forward(ctx, A: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor, loss: str,
                settings: InteriorPointSettings, owner: str, threads: int | str | None, workers: int = 1
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.threads, ctx.workers, ctx.loss = threads, workers, loss
        with solver_threads(threads, A.device) if workers == 1 else intra_op_threads(threads) as pace:
            parts = over_chunks(lambda chunk: _solve_chunk(A[chunk], y[chunk], beta[chunk], masks[chunk], loss,
                                                           settings, owner, chunk.start, pace), A.shape[0], workers)
        unsolved = [part for part in parts if isinstance(part, _Unsolved)]
        if unsolved:
            failed = [b for part in unsolved for b in part.episodes]
            raise SolverError(
                f"{owner}: solver='torch' did not meet its tolerances in episode(s) {failed[:10]} (episode "
                f"{failed[0]}: relative gap {unsolved[0].relative_gap:.2e}, violation {unsolved[0].violation:.2e}, "
                f"tol {settings.tol:g}); loosen tol in solver_options or check the episode's data")
        # out of inference mode for autograd to save
        W, G = torch.cat([part[0] for part in parts]), torch.cat([part[1] for part in parts])
        ctx.margins = [None if margins is None else _Margins(margins.alpha.clone(), margins.margin.clone())
                       for part in parts for margins in part[2]]
        ctx.A_norms = [norm for part in parts for norm in part[3]]
        ctx.save_for_backward(A, y, beta, masks, W, G)
        alpha = hinge_multipliers(A, y, ctx.margins)
        ctx.mark_non_differentiable(alpha)
        return W, alpha

    @staticmethod
    def backward(ctx, grad_W: torch.Tensor, _: torch.Tensor):
        A, y, beta, masks, W, G = ctx.saved_tensors

        def chunk_vjps(chunk: slice) -> list[tuple[torch.Tensor, ...]]:
            return [_episode_vjp(A[b], y[b], beta[b], masks[b], W[b].T, G[b], grad_W[b].T, ctx.loss, ctx.margins[b],
                                 ctx.A_norms[b]) for b in range(chunk.start, chunk.stop)]

        with intra_op_threads(ctx.threads):
            grads = [vjp for part in over_chunks(chunk_vjps, A.shape[0], ctx.workers) for vjp in part]
        return (*(torch.stack(parts) for parts in zip(*grads)), None, None, None, None, None, None)
