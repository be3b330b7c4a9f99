"""Centering and whitening of the data (docs/math.md, section 1).

Xc = X - 1 mu^T = U S V^T (compact SVD, rank r), U' = [U, 1/sqrt(n)] with U'^T U' = I.
The test-time map, BN's analogue of running statistics, is
u'(x) = [S^{-1} V^T (x - mu); 1/sqrt(n)].

With ``scale_features`` the columns are divided by their standard deviations first
(Xc D^-1 = U S V^T, u'(x) = [S^{-1} V^T D^{-1} (x - mu); 1/sqrt(n)]): the network's
first layer absorbs any column scaling, so the program is unchanged, but the rank
decision no longer depends on the units of the features (a feature measured in 1e-6
units is not dropped as numerical noise).

The spectrum-keeping variant (docs/math.md section 7) scales the columns back, Z = U' diag(S, sqrt(n))
= [U S, 1]: the program then sees the centered data in its principal axes, and the group
norm of a neuron s on Z is that of diag(S, sqrt(n)) s on U' reweighted, which penalizes
low-singular-value directions more.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import logging

import numpy as np
import torch

from convexnorm._validation import check_matrix

logger = logging.getLogger("convexnorm")

#: "full": the program on U' (docs/math.md section 3); "spectral": on U' diag(S, sqrt(n)) = [U S, 1]
#: (section 7, keeps the spectrum: an explicit spectral bias).
WHITENINGS = ("full", "spectral")
#: Singular values below RANK_RTOL * S[0] are dropped.
RANK_RTOL = 1e-10


@dataclass(frozen=True)
class Whitening:
    """The fitted whitening of n training rows: mean, U, S, V (rank r)."""

    mean: np.ndarray  # (d,)
    U: np.ndarray  # (n, r)
    S: np.ndarray  # (r,)
    V: np.ndarray  # (d, r)
    column_scale: np.ndarray | None = None  # (r + 1,): the spectral variant's diag(S, sqrt(n))
    feature_scale: np.ndarray | None = None  # (d,): D, the features' standard deviations (scale_features)

    @property
    def n(self) -> int:
        return self.U.shape[0]

    @property
    def rank(self) -> int:
        return self.S.shape[0]

    @property
    def U_prime(self) -> np.ndarray:
        """[U, 1/sqrt(n)]: the whitened training data with its bias column, (n, r + 1)
        (times ``column_scale`` for the spectral variant: [U S, 1])."""
        return self._rows(self.U)

    def _rows(self, coords: np.ndarray) -> np.ndarray:
        """[coords, 1/sqrt(n)], times ``column_scale`` for the spectral variant."""
        return self._scaled(np.hstack([coords, np.full((coords.shape[0], 1), 1.0 / np.sqrt(self.n))]))

    def _scaled(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.column_scale is None else rows * self.column_scale

    def spectral(self) -> "Whitening":
        """The spectrum-keeping variant: U' columns scaled by diag(S, sqrt(n))."""
        return replace(self, column_scale=np.append(self.S, np.sqrt(self.n)))

    def to_whitened(self, neurons: np.ndarray) -> np.ndarray:
        """Neurons (rows) in the coordinates of ``U_prime`` -> those of plain [U, 1/sqrt(n)]."""
        return self._scaled(neurons)

    def truncated(self, k: int | None) -> "Whitening":
        """The top-k whitening U'_k = [U_k, 1/sqrt(n)] (docs/math.md section 7: the explicit form of
        gradient descent's spectral bias); k >= rank or None leaves it unchanged."""
        if self.column_scale is not None:
            raise ValueError("truncate before taking the spectral variant")
        U, S, V = truncate_rank(self.U, self.S, self.V, k)
        return replace(self, U=U, S=S, V=V)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Rows u'(x) = [S^{-1} V^T (x - mu); 1/sqrt(n)] of new data X (m, d) -> (m, r + 1)
        (times ``column_scale`` for the spectral variant)."""
        X = check_matrix(X, "Whitening.transform", columns=self.mean.shape[0])
        return self._rows(self.scaled_features(X - self.mean) @ self.V / self.S)

    def scaled_features(self, values: np.ndarray) -> np.ndarray:
        """Rows of feature values (or first-layer weights) times D^-1 (unchanged without
        ``feature_scale``)."""
        return values if self.feature_scale is None else values / self.feature_scale

    def first_layer(self, coords: np.ndarray) -> np.ndarray:
        """Weights w (rows) with Xc w = U c for coordinates c (rows, r): w = D^-1 V S^-1 c."""
        return self.scaled_features((coords / self.S) @ self.V.T)


def canonical_signs(U: torch.Tensor, Vh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """U and Vh with each singular pair's sign chosen so that the entry of largest magnitude of its
    right singular vector is positive (scikit-learn's ``svd_flip`` with the V-based decision). The
    SVD fixes each pair only up to a joint sign, which LAPACK builds choose differently, and fixed
    gate vectors meet U' with those signs: the demo's first fit, on one machine, was 14.8444 with 50
    neurons with LAPACK's signs and 15.4125 with 54 with one pair flipped."""
    largest = Vh.abs().argmax(dim=1, keepdim=True)
    signs = torch.where(Vh.detach().gather(1, largest) < 0, -1.0, 1.0).to(Vh.dtype)  # (r, 1)
    return U * signs.T, Vh * signs


def whiten_tensor(X: torch.Tensor, rtol: float = RANK_RTOL) -> tuple[torch.Tensor, ...]:
    """Differentiable whitening in torch: (mean, U, S, V) of the rank-r part of X - 1 mu^T,
    through ``torch.linalg.svd`` (gradients need distinct singular values), with canonical
    signs (``canonical_signs``)."""
    mean = X.mean(dim=0)
    U, S, Vh = torch.linalg.svd(X - mean, full_matrices=False)
    U, Vh = canonical_signs(U, Vh)
    if S.numel() == 0 or S[0] == 0:
        raise ValueError("all samples are identical; the centered data has rank 0")
    rank = int((S > rtol * S[0]).sum())
    noise = 100 * torch.finfo(S.dtype).eps * max(X.shape) * S[0]
    if rank < S.numel() and bool(S[rank] > noise):
        logger.warning("whitening: dropped %d direction(s) of the centered data with singular values down to "
                       "%.3g of the largest (below rtol=%g, above rounding noise); if a feature's units are tiny, "
                       "rescale it", S.numel() - rank, float(S[rank] / S[0]), rtol)
    return mean, U[:, :rank], S[:rank], Vh[:rank].T


def truncate_rank(U, S, V, k: int | None) -> tuple:
    """The top-k singular triplets (numpy arrays or tensors, S sorted in decreasing order)."""
    if k is None:
        return U, S, V
    check_whitening_rank(k, "whitening")
    return U[:, :k], S[:k], V[:, :k]


def check_whitening_rank(k: int | None, owner: str) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"{owner}: whitening_rank must be None or a positive integer, got {k!r}")


def u_prime_rows(coords: torch.Tensor, n: int) -> torch.Tensor:
    """[coords, 1/sqrt(n)]: whitened coordinates with the bias column."""
    return torch.cat([coords, coords.new_full((coords.shape[0], 1), n**-0.5)], dim=1)


def whiten(X: np.ndarray, rtol: float = RANK_RTOL, scale_features: bool = False) -> Whitening:
    """Center X (n, d) and take its compact SVD, dropping singular values below rtol * S[0];
    with ``scale_features`` the columns are first divided by their standard deviations
    (constant columns by 1), which makes the rank independent of the features' units."""
    X = check_matrix(X, "whiten")
    if X.shape[0] < 2:
        raise ValueError(f"whiten: need at least 2 samples, got {X.shape[0]}")
    if not (np.isfinite(rtol) and 0 <= rtol < 1):
        raise ValueError(f"whiten: rtol must be in [0, 1), got {rtol}")
    scale = None
    if scale_features:
        scale = X.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    try:
        mean, U, S, V = (t.numpy() for t in whiten_tensor(torch.from_numpy(X if scale is None else X / scale), rtol))
    except ValueError as error:
        raise ValueError(f"whiten: {error}") from error
    return Whitening(mean=mean if scale is None else mean * scale, U=U, S=S, V=V, feature_scale=scale)
