"""The Newton (KKT) system of the interior-point method, factorized once per iterate.

At an iterate with Nesterov-Todd scaling V (``V z = V^-1 s``) the reduced Newton matrix is
grad^2 phi + G^T V^-2 G (solvers/kkt.py for G). Per group j it has the block

    H_j = V_j^-2 (its cone) + [0, A^T diag(z_j / s_j) A]   ((k+1) x (k+1), from its rows),

and everything that couples groups acts through the predictions f = B x: grad^2 phi =
B^T diag(d) B with d the loss's curvature (squared: 1, logistic: sigma(y f) sigma(-y f));
for the hinge loss the slacks xi are eliminated, which leaves d = w_s w_m / (w_s + w_m) (the
orthant weights z / s of the slack and margin parts). So the matrix is H + B^T D B with H
block diagonal, and Woodbury gives its inverse through the n x n capacitance (d > 0 inside K)

    C = D^-1 + B H^-1 B^T,   B H^-1 B^T = sum_i F_i E_i^T,  F_i = M_i * (A W_i),  E_i = M_i * A,

W_i = Q_i + Q_{i+P}, Q_j the W block of H_j^-1 (the S and T groups of a pattern share
its mask). Cost per iterate: 2P Cholesky factors and triangular inverses of size k + 1, F (n P k^2),
C (n^2 P k, of which its lower block triangle is formed: ``_lower_gram``) and its Cholesky factor
(n^3 / 3). Everything is batched over programs. Where d
grows without bound (the hinge loss's samples on the margin) the Woodbury difference
X = u - H^-1 B^T c loses the predictions B X, which their slack and multiplier steps need times
d; they are taken as c / d instead (c = D B X exactly), and the iterative refinement corrects X so that B X
follows them (the augmented system's mismatch, ``_Woodbury.solve``). Beyond ``DENSE_CURVATURE`` a program's
whole matrix is factorized densely ((2P (k + 1))^3 / 3 flops: the hinge loss's last iterations),
decided per program, up to DENSE_MAX_DIMENSION (docs/math.md, section 9).
"""

from __future__ import annotations

import torch

from convexnorm.solvers.cones import NTScaling
from convexnorm.solvers.kkt import Conic, Primal, constraint_adjoint, constraint_map, constraint_slack
from convexnorm.losses import loss_curvature
from convexnorm.solvers.problem import ConvexBNProblem


#: Largest curvature d for the Woodbury solve: beyond it (the hinge loss's samples on the margin,
#: d = w_s w_m / (w_s + w_m) unbounded) the whole matrix is factorized densely. With the margin's
#: predictions taken from c / d (``_solve_x``) thresholds up to 1e7 took the same iterations to the
#: same objectives (within 1e-10) as 1e4 on six hinge programs (at 1e9 they stalled at gaps of 2e-7 ..
#: 6e-7; without c / d, Woodbury alone stalled at 1e-5), but past 1e5 a program's answer in a batch
#: moved away from its answer alone (objectives 3e-12 apart at 1e6, 4e-9 at 1e7, 1e-14 at 1e5: the
#: rounding of batched products, amplified by d). 1e5: 128x16x128 in 12.9 s instead of 20.2 s.
DENSE_CURVATURE = 1e5
#: Largest dimension 2P (k + 1) of a program's Newton matrix that is factorized densely; past it the program keeps
#: Woodbury's solve whatever its curvature (and a solve that skips the dense route does not resume with it:
#: ``interior_point.finished_with_dense_route``). The dense factor takes about 3 (2P (k + 1))^2 float64 numbers and
#: (2P (k + 1))^3 / 3 flops: every pattern of 16 samples in R^3 (dimension 11510) took 179 s to a stall, of 20
#: samples (23190) went past the machine's 23 GB and was killed; at 8000 about 1.5 GB, and a Cholesky factor of that
#: size took 3.6 s on one core of the 2-core AMD machine (docs/benchmarks.md, session 30).
DENSE_MAX_DIMENSION = 8000
#: Steps of iterative refinement of each Newton solve.
REFINEMENT_STEPS = 1


class Breakdown(ArithmeticError):
    """The Newton matrix lost definiteness beyond regularization (float64's limit) in the programs
    ``programs`` (a boolean mask over the leading, program dimension of the matrices factorized)."""

    def __init__(self, programs: torch.Tensor) -> None:
        super().__init__(f"the Newton system is not positive definite in program(s) "
                         f"{torch.nonzero(programs).flatten().tolist()[:10]}")
        self.programs = programs

    def within(self, chosen: torch.Tensor) -> "Breakdown":
        """The same breakdown numbered in a batch of which the failing matrices were the programs
        ``chosen`` (a boolean mask over that batch)."""
        programs = torch.zeros_like(chosen)
        programs[chosen] = self.programs
        return Breakdown(programs)


def cholesky(H: torch.Tensor) -> torch.Tensor:
    """Batched Cholesky factor; matrices that lost definiteness to rounding get a diagonal
    shift of up to 1e-8 of their largest diagonal entry, else Breakdown (naming the programs, the
    leading dimension, that hold such a matrix)."""
    L, info = torch.linalg.cholesky_ex(H)
    jitter = 1e-14
    while bool((info > 0).any()):
        if jitter > 1e-8:
            raise Breakdown((info > 0).reshape(info.shape[0], -1).any(1))
        bad = info > 0
        H = H.clone()
        H[bad] += (jitter * H[bad].diagonal(dim1=-2, dim2=-1).amax(-1))[..., None, None] * torch.eye(
            H.shape[-1], dtype=H.dtype, device=H.device)
        L, info = torch.linalg.cholesky_ex(H)
        jitter *= 10
    return L


def _dense_factor(problem: ConvexBNProblem, H: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of H + B^T D B as one dense (batch, 2P m, 2P m) matrix: H's blocks on the
    diagonal, B the predictions' map (group j: o_j M_j * A on its W part). The S and T groups of a
    pattern share M_j, so B^T D B is [[K, -K], [-K, K]] on the W parts with K = N^T D N,
    N = [M_1 * A, ..., M_P * A] (n x Pk): n (Pk)^2 flops instead of n (2P m)^2."""
    batch, groups, m, _ = H.shape
    P = groups // 2
    N = problem.masked_rows
    K = (N.transpose(-1, -2) @ (curvature[..., None] * N)).view(batch, P, m - 1, P, m - 1)
    full = H.new_zeros(batch, 2, P, m, 2, P, m)
    for a in range(2):
        for b in range(2):
            full[:, a, :, 1:, b, :, 1:] = K if a == b else -K
    full = full.view(batch, groups, m, groups, m)
    full.diagonal(dim1=1, dim2=3).add_(H.permute(0, 2, 3, 1))
    return cholesky(full.view(batch, groups * m, groups * m))


def dense_dimension(problem: ConvexBNProblem) -> int:
    """The dimension 2P (k + 1) of one program's whole Newton matrix (``_dense_factor``)."""
    return 2 * problem.patterns * (problem.width + 1)


def densely_factorizable(problem: ConvexBNProblem) -> bool:
    """Whether the programs' whole Newton matrices are at most DENSE_MAX_DIMENSION."""
    return dense_dimension(problem) <= DENSE_MAX_DIMENSION


def _predictions(problem: ConvexBNProblem, X: torch.Tensor) -> torch.Tensor:
    """B X: the predictions of the W parts of X (batch, 2P, k + 1)."""
    return problem.predictions(X[..., 1:])


def _predictions_adjoint(problem: ConvexBNProblem, v: torch.Tensor) -> torch.Tensor:
    """B^T v in X's layout (zero in the tau parts)."""
    g = problem.predictions_adjoint(v)
    return torch.cat([torch.zeros_like(g[..., :1]), g], -1)


def _dense_solve(factor: torch.Tensor, b_X: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_solve(b_X.flatten(1)[..., None], factor).view_as(b_X)


#: ``_lower_gram``'s row blocks: at most GRAM_BLOCKS, at least GRAM_BLOCK_ROWS rows each, and one block
#: below GRAM_MIN_WORK multiply-adds of the whole product (batch n^2 width), where the block products' fixed
#: costs outweigh their savings (one program of 64 x 576 in four blocks: 0.16 instead of 0.12 ms). From
#: 64 rows per block before: 1.17 instead of 1.33 ms at 128 x 2176 (four blocks, not two), 3.95 instead
#: of 4.78 ms for 32 programs of 64 x 576 (four, not one).
GRAM_BLOCK_ROWS = 16
GRAM_BLOCKS = 4
GRAM_MIN_WORK = 1e7


def gram_row_blocks(batch: int, n: int, width: int) -> int:
    """The row blocks b of ``_lower_gram`` for a batch of n x width matrices F."""
    if batch * n * n * width < GRAM_MIN_WORK:
        return 1
    return max(1, min(GRAM_BLOCKS, n // GRAM_BLOCK_ROWS))


def _lower_gram(F: torch.Tensor, E: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """diag(diagonal) + F E^T (symmetric: F = E blockdiag(W), W symmetric) on and below the diagonal blocks
    (zero above; the Cholesky factorization reads the lower triangle only): with b row blocks
    (``gram_row_blocks``), b (b + 1) / 2 of the b^2 block products (3/4 of the flops for b = 2, 5/8 for
    b = 4)."""
    batch, n, width = F.shape
    blocks = gram_row_blocks(batch, n, width)
    out = torch.diag_embed(diagonal)
    if blocks == 1:
        return out.baddbmm_(F, E.transpose(-1, -2))
    edges = [n * i // blocks for i in range(blocks + 1)]
    for i in range(blocks):
        rows = slice(edges[i], edges[i + 1])
        out[:, rows, : edges[i + 1]].baddbmm_(F[:, rows], E[:, : edges[i + 1]].transpose(-1, -2))
    return out


class _Woodbury:
    """(H + B^T D B)^-1 of a batch of programs by Woodbury (the module docstring)."""

    def __init__(self, problem: ConvexBNProblem, scaling: NTScaling, rows_part: torch.Tensor,
                 curvature: torch.Tensor) -> None:
        """``rows_part``: A^T diag(z_j / s_j) A per group (batch, 2P, k, k), overwritten."""
        self.problem = problem
        A, masks = problem.A, problem.masks
        batch, n, k = A.shape
        P = problem.patterns
        # H_j = [[h, g^T], [g, H_11]] eliminated in closed form: with V^-2 = eta^-2 (2 (Jw)(Jw)^T - J),
        # h = eta^-2 (2 w0^2 - 1), g = -2 eta^-2 w0 w1 and the Schur complement
        # S_j = H_11 - g g^T / h = eta^-2 (I - 2 w1 w1^T / (2 w0^2 - 1)) + A^T diag(z_j / s_j) A,
        # whose eta^-2 part has eigenvalues 1 and 1 / (2 w0^2 - 1) > 0 (w0^2 - ||w1||^2 = 1). Cholesky on
        # H_j itself forms S_j as the difference of two rank-one terms of size eta^-2 w0^2, which near
        # the cones' boundary (w0 large) loses what the closed form keeps.
        eta_2 = scaling.eta ** -2
        w0, w1 = scaling.w[..., 0], scaling.w[..., 1:]
        spread = 2 * w0 * w0 - 1
        S = rows_part.addcmul_(((2 * eta_2 / spread)[..., None] * w1)[..., :, None], w1[..., None, :], value=-1)
        S.diagonal(dim1=-2, dim2=-1).add_(eta_2[..., None])
        # H_j = N_j^-1 N_j^-T with the lower triangular N_j^-1 = [[sqrt(h), 0], [g / sqrt(h), L]] (L L^T = S_j);
        # its inverse N_j = [[1 / sqrt(h), 0], [-L^-1 r, L^-1]] (r = g / h) by one batched triangular solve
        # (batched LAPACK solves of tiny systems are slow, so block solves multiply by N_j; the explicit
        # inverse L^-T L^-1 was not accurate enough near the solution: the block's solves stalled at certified
        # gaps of 1e-6), and H_j^-1 = N_j^T N_j
        root_inverse = S.new_zeros(batch, 2 * P, k + 1, k + 1)
        root_inverse[..., 1:, 1:] = cholesky(S)
        head = (eta_2 * spread).sqrt()
        root_inverse[..., 0, 0] = head
        root_inverse[..., 1:, 0] = (-2 * eta_2 * w0 / head)[..., None] * w1
        #: N_j of every group (batch, 2P, k + 1, k + 1) and its transpose: block solves as two products
        root = torch.linalg.solve_triangular(root_inverse, torch.eye(k + 1, dtype=A.dtype, device=A.device)
                                             .expand_as(root_inverse), upper=False)
        # LAPACK's answer is column-major: its transpose is contiguous as it is, N_j is copied (a batched product
        # with a transposed operand took twice as long)
        self.root, self.root_T = root.contiguous(), root.transpose(-1, -2).contiguous()
        S_root = self.root[..., 1:, 1:]  # L^-1
        Q = S_root.transpose(-1, -2) @ S_root  # the W blocks of H_j^-1: S_j^-1
        # B H^-1 B^T = sum_i (M_i * A) W_i (M_i * A)^T with W_i = Q_i + Q_{i+P}: F = [M_i * (A W_i)] against the
        # masked rows E = [M_i * A], without a Cholesky factor of W_i. W and F are temporaries in the problem's
        # buffers: allocated afresh (2.2 MB at 128x16x128, more at n = P = 1000) they cost page faults, about 5%
        # of a 128x16x128 block step and 10% of a 1000x10x1000 fit (docs/benchmarks.md, session 37)
        W = problem.buffer("W", (batch, k, P, k))
        torch.add(Q[:, :P], Q[:, P:], out=W.permute(0, 2, 1, 3))
        F = torch.bmm(A, W.view(batch, k, P * k), out=problem.buffer("F", (batch, n, P * k)))
        F.view(batch, n, P, k).mul_(masks[..., None])
        self.capacitance = cholesky(_lower_gram(F, problem.masked_rows, 1 / curvature))

    def block_solve(self, X: torch.Tensor) -> torch.Tensor:
        """H^-1 X block by block: N_j^T (N_j X_j), two batched products of (k + 1)-square matrices; N_j X_j =
        (x0 / sqrt(h), L^-1 (x1 - r x0)) eliminates tau (docs/benchmarks.md, session 14: 861 instead of 911
        operations per iteration at 64x8x64 against the elimination by slices)."""
        return (self.root_T @ (self.root @ X[..., None]))[..., 0]

    def solve(self, b_X: torch.Tensor, mismatch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """X = (H + B^T D B)^-1 b_X and Woodbury's c = C^-1 B H^-1 b_X (= D B X). With ``mismatch`` m, the
        augmented system H X + B^T c = b_X, B X - c / d = m instead (X is then the correction of a point whose
        predictions f miss B X by m: B X = c / d + m, so f + c / d is B of the corrected point):
        c = C^-1 (B H^-1 b_X - m), X = H^-1 (b_X - B^T c)."""
        u = self.block_solve(b_X)
        predicted = _predictions(self.problem, u)
        if mismatch is not None:
            predicted = predicted - mismatch
        c = torch.cholesky_solve(predicted[..., None], self.capacitance)[..., 0]
        return u - self.block_solve(_predictions_adjoint(self.problem, c)), c


class NewtonSystem:
    """grad^2 phi + G^T V^-2 G at one iterate (x, s, z), factorized."""

    def __init__(self, problem: ConvexBNProblem, x: Primal, s: Conic, z: Conic,
                 scaling: NTScaling | None = None, dense_curvature: float | None = None) -> None:
        """``scaling``: V of the cones (default: the Nesterov-Todd scaling of s.cones, z.cones);
        the orthant parts are scaled by z / s. ``dense_curvature``: default DENSE_CURVATURE. Breakdown
        names the programs of this batch whose matrix lost definiteness."""
        self.problem = problem
        self.scaling = NTScaling.of(s.cones, z.cones) if scaling is None else scaling
        self.weights = Conic(z.rows / s.rows, None, *(None if a is None else a / b
                                                      for a, b in ((z.slack, s.slack), (z.margin, s.margin))))
        rows_part = problem.constraint_gram(self.weights.rows)
        if problem.loss == "hinge":
            slack, margin = self.weights.slack, self.weights.margin
            self.xi_diagonal = slack + margin
            self.curvature = slack * margin / self.xi_diagonal
        else:
            self.curvature = loss_curvature(problem.loss, problem.predictions(x.W), problem.y)
        #: the programs (batch,) whose whole matrix is factorized densely (decided per program, so that a
        #: program takes the same steps in a batch as alone), and the Woodbury solve of the others
        self.dense = (self.curvature.amax(-1) > (DENSE_CURVATURE if dense_curvature is None else dense_curvature)
                      ) & densely_factorizable(problem)
        self.dense_factor = self.woodbury = None
        if bool(self.dense.any()):
            H = self.scaling.inverse_square()[self.dense]
            H[..., 1:, 1:] += rows_part[self.dense]
            try:
                self.dense_factor = _dense_factor(problem.select(self.dense), H, self.curvature[self.dense])
            except Breakdown as failure:
                raise failure.within(self.dense) from None
        if not bool(self.dense.all()):
            if bool(self.dense.any()):
                sparse = ~self.dense
                try:
                    self.woodbury = _Woodbury(problem.select(sparse), NTScaling(self.scaling.eta[sparse],
                                                                                self.scaling.w[sparse]),
                                              rows_part[sparse], self.curvature[sparse])
                except Breakdown as failure:
                    raise failure.within(sparse) from None
            else:
                self.woodbury = _Woodbury(problem, self.scaling, rows_part, self.curvature)

    def apply(self, x: Primal, predictions: torch.Tensor | None = None) -> Primal:
        """(grad^2 phi + G^T V^-2 G) x, matrix-free (``predictions``: B x.W if at hand, see ``_solve_x``)."""
        out = constraint_adjoint(self.problem, self.inverse_square(constraint_map(self.problem, x, predictions)))
        if x.xi is None:
            out.X = out.X + _predictions_adjoint(self.problem, self.curvature * _predictions(self.problem, x.X))
        return out

    def solve_x(self, b: Primal, refine: bool = True) -> Primal:
        """(grad^2 phi + G^T V^-2 G)^-1 b, with REFINEMENT_STEPS of iterative refinement (``refine``)."""
        return self._refined(b, refine)[0]

    def _refined(self, b: Primal, refine: bool) -> tuple[Primal, torch.Tensor | None]:
        """``solve_x`` and the predictions B x.W of its answer (the hinge loss; None otherwise). The hinge loss's
        refinement also corrects the mismatch f - B X of Woodbury's predictions c / d (``_solve_x``), which the
        next iterate's margin residual would inherit (a stalled program's grew from 5e-10 to 7e-8 while the other
        residuals fell below 1e-10, docs/math.md section 9)."""
        x, f = self._solve_x(b)
        for _ in range(REFINEMENT_STEPS if refine else 0):
            mismatch = None if f is None else f - _predictions(self.problem, x.X)
            dx, df = self._solve_x(b - self.apply(x, f), mismatch)
            x, f = x + dx, None if f is None else f + df
        return x, f

    def _solve_x(self, b: Primal, mismatch: torch.Tensor | None = None) -> tuple[Primal, torch.Tensor | None]:
        """(grad^2 phi + G^T V^-2 G)^-1 b, by Woodbury (hinge: the slacks eliminated first), and for the
        hinge loss the predictions f = B X of the answer (``mismatch``: of the point this corrects,
        ``_Woodbury.solve``). Woodbury's c = C^-1 B u is D B X exactly, so
        where d is large (samples on the margin) f = c / d: the difference X = u - H^-1 B^T c keeps
        f only to rounding errors of the size of u, which d then multiplies into the margin's slack
        and multiplier steps (the iterates stalled at a certified gap of about 1e-5)."""
        b_X = b.X
        if b.xi is not None:
            b_X = b_X - _predictions_adjoint(self.problem,
                                             self.weights.margin * self.problem.y * b.xi / self.xi_diagonal)
        c = None
        if self.dense_factor is None:
            X, c = self.woodbury.solve(b_X, mismatch)
        elif self.woodbury is None:
            X = _dense_solve(self.dense_factor, b_X)
        else:
            X, c = torch.empty_like(b_X), torch.zeros_like(self.curvature)
            X[~self.dense], c[~self.dense] = self.woodbury.solve(b_X[~self.dense],
                                                                 None if mismatch is None else mismatch[~self.dense])
            X[self.dense] = _dense_solve(self.dense_factor, b_X[self.dense])
        if b.xi is None:
            return Primal(X), None
        f = _predictions(self.problem, X)
        if c is not None:
            f = torch.where(~self.dense[:, None] & (self.curvature > 1), c / self.curvature, f)
        xi = (b.xi - self.weights.margin * self.problem.y * f) / self.xi_diagonal
        return Primal(X, xi), f

    def inverse_square(self, v: Conic) -> Conic:
        """V^-2 v (orthant parts: z / s times v)."""
        out = self.weights.map(torch.mul, v)
        out.cones = self.scaling.apply_inverse_square(v.cones)
        return out

    def solve(self, b_x: Primal, b_z: Conic | None, scaled: Conic, refine: bool = True
              ) -> tuple[Primal, Conic, Conic]:
        """The Newton equations grad^2 phi dx + G^T dz = b_x, G dx + ds = b_z (None: zero) and
        dz + V^-2 ds = ``scaled``, the linearized complementarity lambda o (V dz + V^-1 ds) = c times
        V^-1 lambda^-1 (scaled = V^-1 (lambda \\ c), in the orthant parts c / s: the interior-point method
        forms it so, without lambda); returns dx, dz, ds (ds = b_z - G dx, dz = scaled - V^-2 ds)."""
        problem = self.problem
        # dx from (grad^2 phi + G^T V^-2 G) dx = b_x - G^T (scaled - V^-2 b_z)
        combined = scaled if b_z is None else self._minus_inverse_square(scaled, b_z)
        dx, f = self._refined(b_x - constraint_adjoint(problem, combined), refine)
        ds = constraint_slack(problem, dx, b_z, f)
        return dx, self._minus_inverse_square(scaled, ds), ds

    def _minus_inverse_square(self, base: Conic, v: Conic) -> Conic:
        """base - V^-2 v, one fused operation per orthant part."""
        out = Conic(base.rows, None, base.slack, base.margin).map(
            lambda b, weight, part: torch.addcmul(b, weight, part, value=-1), self.weights, v)
        out.cones = base.cones - self.scaling.apply_inverse_square(v.cones)
        return out
