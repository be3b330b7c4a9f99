"""The convex BN-ReLU program as batched tensors, and its pieces in prediction space.

A batch of programs (leading dimension: episodes, classes, rounds) of one shape. Per program,
with A = U' (n x k), patterns M_i (n, i < P), groups j < 2P (S then T: mask M_j, output sign
o_j = +1 then -1) and neurons W_j (k):

    min  loss(f) + beta sum_j ||W_j||   s.t.  E_j * (A W_j) >= 0,   f = sum_j o_j M_j * (A W_j),

E_j = 2 M_j - 1 (docs/math.md, section 3). Group variables are stored as (batch, 2P, k).
A program may keep only some of its orthant rows (``candidates``: the same rows for the S and T groups
of a pattern), a relaxation that is the same program where the rows left out are implied by the
others (solvers/candidate_rows.py); the constraint maps then act on those rows alone.
The losses (convexnorm/losses.py) enter only through f: their value, gradient and curvature
(diagonal Hessian) in prediction space and the conjugate that gives the dual bound.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from convexnorm.losses import LOSSES, dual_value, loss_terms


@dataclass
class ConvexBNProblem:
    """A batch of programs: A (batch, n, k), masks (batch, n, P) 0/1, y (batch, n), beta
    (batch,), all float64 on one device; loss one of LOSSES. ``candidates`` (batch, P, c), long, or
    None (all n rows): the orthant rows kept per pattern; the constraint rows are then (batch, c, 2P),
    row a of group j the candidate a of its pattern. With candidates the program is a relaxation whose
    ``violation`` is that of the kept rows."""

    A: torch.Tensor
    masks: torch.Tensor
    y: torch.Tensor
    beta: torch.Tensor
    loss: str
    candidates: torch.Tensor | None = None
    _buffers: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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

    def buffer(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A float64 tensor of ``shape`` on the programs' device, the same one at every call with ``name`` and
        ``shape``: for temporaries of every iterate's Newton system, which a fresh allocation of their size
        (megabytes) pays for in page faults."""
        key = (name, shape)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(shape, dtype=self.A.dtype, device=self.A.device)
        return self._buffers[key]

    def mask_of(self, programs: int | list[int]) -> torch.Tensor:
        """A (batch,) boolean mask holding at ``programs`` (one index or a list)."""
        keep = torch.zeros(self.batch, dtype=torch.bool, device=self.A.device)
        keep[programs] = True
        return keep

    def select(self, keep: torch.Tensor) -> "ConvexBNProblem":
        """The programs where ``keep`` (batch,) holds."""
        return ConvexBNProblem(self.A[keep], self.masks[keep], self.y[keep], self.beta[keep], self.loss,
                               None if self.candidates is None else self.candidates[keep])

    def patterns_subset(self, chosen: torch.Tensor) -> "ConvexBNProblem":
        """The same programs restricted to the patterns ``chosen`` (P,) boolean (both groups of each; with
        candidates, their candidate rows)."""
        return ConvexBNProblem(self.A, self.masks[..., chosen], self.y, self.beta, self.loss,
                               None if self.candidates is None else self.candidates[:, chosen])

    def relaxed(self, candidates: torch.Tensor | None) -> "ConvexBNProblem":
        """The same programs with only the orthant rows ``candidates`` (batch, P, c) kept (None: all)."""
        return ConvexBNProblem(self.A, self.masks, self.y, self.beta, self.loss, candidates)

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

    @property
    def constraint_count(self) -> int:
        """The orthant rows per group: n, or the candidates per pattern."""
        return self.samples if self.candidates is None else self.candidates.shape[-1]

    @functools.cached_property
    def _candidate_rows(self) -> torch.Tensor:
        """The candidate rows of A per pattern (batch, P, c, k)."""
        return self.A[torch.arange(self.batch, device=self.A.device)[:, None, None], self.candidates]

    @functools.cached_property
    def _candidate_rows_T(self) -> torch.Tensor:
        return self._candidate_rows.transpose(-1, -2).contiguous()

    @functools.cached_property
    def constraint_signs(self) -> torch.Tensor:
        """E on the constraint rows (batch, c, 2P): ``signs`` or, with candidates, theirs."""
        if self.candidates is None:
            return self.signs
        half = (2 * self.masks - 1).gather(1, self.candidates.transpose(-1, -2))
        return torch.cat([half, half], -1)

    def signed_group_rows(self, b: int, group: int) -> torch.Tensor:
        """E_j * A on the constraint rows of group j of program b (c, k): the group's cone is {w : rows w >= 0}."""
        rows = self.A[b] if self.candidates is None else self._candidate_rows[b, group % self.patterns]
        return self.constraint_signs[b, :, group, None] * rows

    @functools.cached_property
    def negative_constraint_signs(self) -> torch.Tensor:
        return -self.constraint_signs

    def constraint_rows(self, W: torch.Tensor) -> torch.Tensor:
        """A W_j on every group's constraint rows (batch, c, 2P): ``rows`` or, with candidates, theirs."""
        if self.candidates is None:
            return self.rows(W)
        batch, P = self.batch, self.patterns
        pairs = W.view(batch, 2, P, -1).transpose(1, 2).contiguous()  # (batch, P, 2, k): S_i, T_i
        return (pairs @ self._candidate_rows_T).permute(0, 3, 2, 1).reshape(batch, -1, 2 * P)

    def constraint_rows_adjoint(self, V: torch.Tensor) -> torch.Tensor:
        """The adjoint of ``constraint_rows``: group j gets A_j^T V_j on its constraint rows, (batch, 2P, k)."""
        if self.candidates is None:
            return self.rows_adjoint(V)
        batch, P = self.batch, self.patterns
        pairs = V.view(batch, -1, 2, P).permute(0, 3, 2, 1).contiguous()  # (batch, P, 2, c)
        return (pairs @ self._candidate_rows).transpose(1, 2).reshape(batch, 2 * P, -1)

    def constraint_gram(self, weights: torch.Tensor) -> torch.Tensor:
        """sum_a weights_ja a_a a_a^T over every group's constraint rows: (batch, 2P, k, k)."""
        batch, P, k = self.batch, self.patterns, self.width
        if self.candidates is None:
            return (weights.transpose(-1, -2) @ self.outer).reshape(batch, 2 * P, k, k)
        pairs = weights.view(batch, -1, 2, P).permute(0, 3, 2, 1)  # (batch, P, 2, c)
        # the S and T groups of a pattern stacked: (2k x c) @ (c x k) per pattern
        scaled = (self._candidate_rows_T[:, :, None] * pairs.contiguous()[..., None, :]).reshape(batch, P, 2 * k, -1)
        return (scaled @ self._candidate_rows).view(batch, P, 2, k, k).transpose(1, 2).reshape(batch, 2 * P, k, k)

    @functools.cached_property
    def gram(self) -> torch.Tensor:
        """A^T A (batch, k, k): ||A W_j|| without the rows."""
        return self.A_T @ self.A

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
        of the recovered network), per program (``rows``: A W_j if already at hand; with candidates,
        ignored: A W_j on every row is formed, so that the stopping test is the whole program's. The
        convex objective instead, equal where W is feasible, stopped a relaxation at a certified gap of
        3e-9 whose network, with violations of 3e-8, was 2.4e-7 from the bound: docs/benchmarks.md,
        session 25)."""
        P = self.patterns
        Z = torch.relu(self.rows(W) if rows is None or self.candidates is not None else rows)
        f = Z[..., :P].sum(-1) - Z[..., P:].sum(-1)
        return loss_terms(self.loss, f, self.y).sum(-1) + self.beta * torch.linalg.norm(W, dim=-1).sum(-1)

    def violation(self, W: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Largest violation of E_j * (A W_j) >= 0 on the constraint rows relative to the largest
        ||A W_j||, per program (``rows``: ``constraint_rows(W)`` if already at hand)."""
        Z = self.constraint_rows(W) if rows is None else rows
        if self.candidates is None:
            scale = torch.linalg.norm(Z, dim=-2).amax(-1)
        else:
            scale = ((W @ self.gram) * W).sum(-1).clamp_min(0).amax(-1).sqrt()
        worst = (self.negative_constraint_signs * Z).flatten(1).amax(-1).clamp_min(0)
        return torch.where(scale > 0, worst / scale.clamp_min(torch.finfo(Z.dtype).tiny), torch.zeros_like(worst))

    def dual_bound(self, lam: torch.Tensor, G: torch.Tensor, rows_adjoint: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """A lower bound on the optimum from any lam (batch, n) and G >= 0 (batch, c, 2P, on the constraint
        rows; with candidates a bound on the whole program too, G zero on the other rows): the
        dual objective -loss*(-s lam) at the scale s = min(1, beta / max_j ||A^T (o_j M_j lam +
        E_j G_j)||) that makes (s lam, s G) dual feasible (docs/math.md, section 4). For the
        margin losses u = y lam is first clipped to [0, 1], the domain of loss*. ``rows_adjoint``:
        A^T (E_j G_j) of every group if already at hand (G >= 0 then, as is)."""
        lam = self.dual_multipliers(lam)
        norms = self.group_dual_norms(lam, G, rows_adjoint).amax(-1)
        scale = torch.clamp(self.beta / norms.clamp_min(1e-300), max=1.0)
        return dual_value(self.loss, scale[:, None] * lam, self.y)

    def dual_multipliers(self, lam: torch.Tensor) -> torch.Tensor:
        """lam in the domain of the loss's conjugate: as it is (squared), else u = y lam clipped to [0, 1]."""
        return lam if self.loss == "squared" else self.y * (self.y * lam).clamp(0, 1)

    def group_dual_norms(self, lam: torch.Tensor, G: torch.Tensor, rows_adjoint: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """||A^T (o_j M_j lam + E_j G_j)|| of every group (batch, 2P), G (batch, c, 2P) clamped at zero
        (``rows_adjoint``: A^T (E_j G_j) if at hand): at most beta for every group where (lam, G) is dual
        feasible (docs/math.md, section 4)."""
        if rows_adjoint is None:
            rows_adjoint = self.constraint_rows_adjoint(self.constraint_signs * G.clamp_min(0))
        return torch.linalg.norm(self.predictions_adjoint(lam) + rows_adjoint, dim=-1)
