"""Input checks shared by the convex estimators."""

from __future__ import annotations

import numpy as np


def check_matrix(X, owner: str, columns: int | None = None) -> np.ndarray:
    """X as a finite float64 (n, d) array, or a ValueError naming ``owner``."""
    X = np.asarray(X.detach().cpu() if hasattr(X, "detach") else X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{owner}: X must be a 2D array (n_samples, n_features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{owner}: X contains NaN or Inf")
    if columns is not None and X.shape[1] != columns:
        raise ValueError(f"{owner}: X has {X.shape[1]} features, the model was fitted with {columns}")
    return X


def check_targets(y, n: int, owner: str) -> np.ndarray:
    """y as a finite 1D float64 array of length n."""
    y = np.asarray(y.detach().cpu() if hasattr(y, "detach") else y)
    if y.ndim != 1:
        raise ValueError(f"{owner}: y must be 1D (n_samples,), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{owner}: X has {n} samples but y has {y.shape[0]}")
    if y.dtype.kind in "fc" and not np.isfinite(y).all():
        raise ValueError(f"{owner}: y contains NaN or Inf")
    return y


def check_beta(beta: float, owner: str) -> float:
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"{owner}: beta must be a positive number, got {beta}")
    return float(beta)
