"""Exact convex training of a convolutional BN-ReLU network (spec: convex-bn.md section 8).

Network: f(x) = sum_j v_j sum_k ( BN(conv_j(x))_k )_+ : one Conv2d (no bias, filters w_j),
BatchNorm2d whose channel statistics run over all (sample, position) pairs, ReLU, sum
pooling over the K positions and a Linear output (``bn_relu_conv_network``).

Stack the K patches of every image into M (N K x h, sample-major) and whiten it,
U' = [U, 1/sqrt(N K)]. A filter's BN output over all positions is U' s / sqrt(||s||)
exactly as in the fully connected case, and pooling sums each image's K rows, so the
program is that of section 3 with the predictions pooled by Pi = I_N kron 1_K^T and the
cone constraints on every patch row:

    min loss( Pi sum_i D_i U' (s_i - t_i), y ) + beta sum_i (||s_i|| + ||t_i||)
    s.t. (2 D_i - I) U' s_i >= 0, (2 D_i - I) U' t_i >= 0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, RegressorMixin

from convexnorm.convex._validation import check_beta, check_targets
from convexnorm.convex.estimators import SOLVERS, Certificate, ScalarSolution, _fit_scalar, certify_solution
from convexnorm.convex.network import recover_network
from convexnorm.convex.patterns import arrangement_patterns
from convexnorm.convex.whitening import Whitening, whiten


def image_patches(images: np.ndarray, kernel_size: int | tuple[int, int], stride: int = 1) -> np.ndarray:
    """(N, C, H, W) -> (N K, C kh kw): every image's K patches (torch's unfold order,
    sample-major), as Conv2d without padding sees them."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64))
    columns = F.unfold(x, kernel_size, stride=stride)  # (N, C kh kw, K)
    return columns.transpose(1, 2).reshape(-1, columns.shape[1]).numpy()


def patch_pooling(images: int, positions: int) -> np.ndarray:
    """Pi = I_N kron 1_K^T (N x N K): sums each image's K sample-major patch rows."""
    return np.kron(np.eye(images), np.ones((1, positions)))


class ConvexBNConvRegressor(RegressorMixin, BaseEstimator):
    """Exact convex training of ``bn_relu_conv_network`` (squared loss, scalar output).

    ``fit(images (N, C, H, W), y)``; ``objective_`` is the convex optimum over
    ``patterns_`` and equals ``nonconvex_objective(to_module(), images, y, beta)``.
    ``patterns`` as in ``arrangement_patterns`` on the N K patch rows ("exhaustive" only
    for tiny problems); solvers 'clarabel' or 'scs'. ``fit(grow=True)`` and ``certify``
    work as for ``ConvexBNRegressor`` (spec section 4 with lam spread over each image's
    patches).
    """

    loss = "squared"

    def __init__(self, kernel_size: int | tuple[int, int] = 3, stride: int = 1, beta: float = 1e-3,
                 patterns: str | int = "auto", solver: str = "clarabel", seed: int = 0,
                 solver_options: dict | None = None) -> None:
        self.kernel_size = kernel_size
        self.stride = stride
        self.beta = beta
        self.patterns = patterns
        self.solver = solver
        self.seed = seed
        self.solver_options = solver_options

    def _images(self, images, owner: str, channels: int | None = None) -> np.ndarray:
        images = np.asarray(images, dtype=np.float64)
        if images.ndim != 4 or (channels is not None and images.shape[1] != channels):
            expected = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
            raise ValueError(f"{owner}: images must be {expected}, got shape {images.shape}")
        if not np.isfinite(images).all():
            raise ValueError(f"{owner}: images contain NaN or Inf")
        return images

    def _rows(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whitened patch rows of new images (test-time map) and their pooling matrix."""
        patches = image_patches(images, self.kernel_size, self.stride)
        return self.whitening_.transform(patches), patch_pooling(images.shape[0], self.n_positions_)

    def fit(self, images, y, grow: bool = False, max_rounds: int = 10, n_probes: int = 2000,
            max_new_patterns: int = 50, progress: bool = False) -> "ConvexBNConvRegressor":
        owner = "ConvexBNConvRegressor"
        check_beta(self.beta, owner)
        if self.solver not in SOLVERS or self.solver == "torch":
            raise ValueError(f"{owner}: solver must be 'clarabel' or 'scs', got {self.solver!r}")
        images = self._images(images, owner)
        y = check_targets(y, images.shape[0], owner)
        try:
            patches = image_patches(images, self.kernel_size, self.stride)
            whitening = whiten(patches)
            U_prime = whitening.U_prime
            patterns = arrangement_patterns(U_prime, self.patterns, self.seed)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{owner}: {error}") from error
        per_image = patches.shape[0] // images.shape[0]
        solution, patterns, history = _fit_scalar(self, U_prime, patterns, y, grow, max_rounds, n_probes,
                                                  max_new_patterns, progress,
                                                  pool=patch_pooling(images.shape[0], per_image))
        self._set_fitted(whitening, patterns, solution, history, images.shape[1:], per_image)
        self._targets = y
        return self

    def certify(self, method: str = "auto", n_probes: int = 2000, seed: int = 0) -> Certificate:
        """The dual optimality check of the fitted program over all patterns (spec section 4)."""
        self._check_fitted()
        pool = patch_pooling(len(self._targets), self.n_positions_)
        return certify_solution(self.whitening_.U_prime, self._targets, self.solution_, self.beta, self.loss, method,
                                n_probes, seed, pool)

    def _set_fitted(self, whitening: Whitening, patterns: np.ndarray, solution: ScalarSolution,
                    history: list[float], image_shape: tuple[int, ...], per_image: int) -> None:
        self.whitening_ = whitening
        self.patterns_ = patterns
        self.solution_ = solution
        self.objective_ = solution.objective
        self.objective_history_ = history
        self.solver_report_ = solution.report
        self.n_neurons_ = len(solution.signs)
        self.image_shape_ = tuple(image_shape)
        self.n_positions_ = per_image

    def _check_fitted(self) -> None:
        if not hasattr(self, "solution_"):
            raise ValueError("ConvexBNConvRegressor: call fit before using the model")

    def predict(self, images) -> np.ndarray:
        self._check_fitted()
        images = self._images(images, "ConvexBNConvRegressor.predict", self.image_shape_[0])
        return self.solution_.predict(*self._rows(images))

    def to_module(self) -> torch.nn.Sequential:
        """The recovered ``bn_relu_conv_network`` (eval mode, running statistics of the training
        patches)."""
        self._check_fitted()
        conv = {"in_channels": self.image_shape_[0], "kernel_size": self.kernel_size, "stride": self.stride}
        return recover_network(self.whitening_, self.solution_.neurons, self.solution_.signs, conv=conv)
