"""The convex BN-ReLU program as batched tensors, and its pieces in prediction space.

A batch of programs (leading dimension: episodes, classes, rounds) of one shape. Per program,
with A = U' (n x k), patterns M_i (n, i < P), groups j < 2P (S then T: mask M_j, output sign
o_j = +1 then -1) and neurons W_j (k):

    min  loss(f) + beta sum_j ||W_j||   s.t.  E_j * (A W_j) >= 0,   f = sum_j o_j M_j * (A W_j),

E_j = 2 M_j - 1 (docs/math.md, section 3). Group variables are stored as (batch, 2P, k).
The losses (convexnorm/losses.py) enter only through f: their value, gradient and curvature
(diagonal Hessian) in prediction space and the conjugate that gives the dual bound.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from convexnorm.losses import LOSSES, dual_value, loss_terms


@dataclass
class ConvexBNProblem:
    """A batch of programs: A (batch, n, k), masks (batch, n, P) 0/1, y (batch, n), beta
    (batch,), all float64 on one device; loss one of LOSSES."""

    A: torch.Tensor
    masks: torch.Tensor
    y: torch.Tensor
    beta: torch.Tensor
    loss: str

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @classmethod
    def from_arrays(cls, programs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], beta: float, loss: str,
                    device: torch.device | str | None = None) -> "ConvexBNProblem":
        """A batch of programs of one shape from numpy arrays (U' (n, k), patterns (P, n) boolean,
        y (n,)) and one beta, float64 on ``device``."""
        def stacked(index: int, transpose: bool = False) -> torch.Tensor:
            return torch.stack([torch.as_tensor(program[index].T if transpose else program[index],
                                                dtype=torch.float64, device=device) for program in programs])

        beta = torch.full((len(programs),), float(beta), dtype=torch.float64, device=device)
        return cls(stacked(0), stacked(1, transpose=True), stacked(2), beta, loss)

    def select(self, keep: torch.Tensor) -> "ConvexBNProblem":
        """The programs where ``keep`` (batch,) holds."""
        return ConvexBNProblem(self.A[keep], self.masks[keep], self.y[keep], self.beta[keep], self.loss)

    @property
    def batch(self) -> int:
        return self.A.shape[0]

    @property
    def samples(self) -> int:
        return self.A.shape[1]

    @property
    def width(self) -> int:
        """k, the columns of A (the neurons' dimension)."""
        return self.A.shape[2]

    @property
    def patterns(self) -> int:
        return self.masks.shape[2]

    @functools.cached_property
    def signs(self) -> torch.Tensor:
        """E = 2 M - 1 of the 2P groups (batch, n, 2P)."""
        half = 2 * self.masks - 1
        return torch.cat([half, half], -1)

    @functools.cached_property
    def negative_signs(self) -> torch.Tensor:
        """-E (batch, n, 2P)."""
        return -self.signs

    @functools.cached_property
    def A_T(self) -> torch.Tensor:
        """A^T (batch, k, n), contiguous: the adjoints' products A^T V took about 0.4 of the time of V^T A."""
        return self.A.transpose(-1, -2).contiguous()

    @functools.cached_property
    def spectral_norms(self) -> torch.Tensor:
        """||A||_2 per program (batch,): the scale of the active-set systems' tolerances
        (solvers/implicit.py), one batched call instead of one per system built."""
        return torch.linalg.matrix_norm(self.A, ord=2)

    @functools.cached_property
    def outer(self) -> torch.Tensor:
        """a_i a_i^T of the rows of A, flattened: (batch, n, k * k)."""
        return (self.A[..., :, None] * self.A[..., None, :]).flatten(-2)

    @functools.cached_property
    def masked_rows(self) -> torch.Tensor:
        """[M_1 * A, ..., M_P * A] (batch, n, P k): the predictions' map on the S groups."""
        return (self.masks[..., None] * self.A[:, :, None, :]).flatten(2)

    def rows(self, W: torch.Tensor) -> torch.Tensor:
        """A W_j for every group: (batch, n, 2P)."""
        return self.A @ W.transpose(-1, -2)

    def predictions(self, W: torch.Tensor) -> torch.Tensor:
        """f = sum_i M_i * (A (S_i - T_i)): (batch, n). The smooth losses take it as rowsum(A * (M (S - T))),
        through an n x k product instead of an n x P one (at 32 programs of 64x8x64 and at n = P = 1000 a
        quarter of the time); the hinge loss keeps the products per pattern, whose rounding its margin
        samples' curvature multiplies (by Woodbury alone 34 of 36 test programs met 1e-7 so, 31 of 36 with
        the n x k form)."""
        P = self.patterns
        difference = W[:, :P] - W[:, P:]
        if self.loss == "hinge":
            return (self.masks * (self.A @ difference.transpose(-1, -2))).sum(-1)
        return ((self.masks @ difference) * self.A).sum(-1)

    def predictions_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """The adjoint of ``predictions``: group j gets o_j A^T (M_j * v), (batch, 2P, k)."""
        g = (self.A_T @ (self.masks * v[..., None])).transpose(-1, -2)
        return torch.cat([g, -g], 1)

    def rows_adjoint(self, V: torch.Tensor) -> torch.Tensor:
        """The adjoint of ``rows``: group j gets A^T V_j, (batch, 2P, k)."""
        return (self.A_T @ V).transpose(-1, -2)

    def objective(self, W: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """loss(f) + beta sum_j ||W_j|| with ReLU predictions f = sum_j o_j (A W_j)_+ (the value
        of the recovered network), per program (``rows``: A W_j if already at hand)."""
        P = self.patterns
        Z = torch.relu(self.rows(W) if rows is None else rows)
        f = Z[..., :P].sum(-1) - Z[..., P:].sum(-1)
        return loss_terms(self.loss, f, self.y).sum(-1) + self.beta * torch.linalg.norm(W, dim=-1).sum(-1)

    def violation(self, W: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Largest violation of E_j * (A W_j) >= 0 relative to the largest ||A W_j||, per program
        (``rows``: A W_j if already at hand)."""
        Z = self.rows(W) if rows is None else rows
        scale = torch.linalg.norm(Z, dim=-2).amax(-1)
        worst = (self.negative_signs * Z).flatten(1).amax(-1).clamp_min(0)
        return torch.where(scale > 0, worst / scale.clamp_min(torch.finfo(Z.dtype).tiny), torch.zeros_like(worst))

    def dual_bound(self, lam: torch.Tensor, G: torch.Tensor, rows_adjoint: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """A lower bound on the optimum from any lam (batch, n) and G >= 0 (batch, n, 2P): the
        dual objective -loss*(-s lam) at the scale s = min(1, beta / max_j ||A^T (o_j M_j lam +
        E_j G_j)||) that makes (s lam, s G) dual feasible (docs/math.md, section 4). For the
        margin losses u = y lam is first clipped to [0, 1], the domain of loss*. ``rows_adjoint``:
        A^T (E_j G_j) of every group if already at hand (G >= 0 then, as is)."""
        if self.loss != "squared":
            lam = self.y * (self.y * lam).clamp(0, 1)
        if rows_adjoint is None:
            rows_adjoint = self.rows_adjoint(self.signs * G.clamp_min(0))
        norms = torch.linalg.norm(self.predictions_adjoint(lam) + rows_adjoint, dim=-1).amax(-1)
        scale = torch.clamp(self.beta / norms.clamp_min(1e-300), max=1.0)
        return dual_value(self.loss, scale[:, None] * lam, self.y)
