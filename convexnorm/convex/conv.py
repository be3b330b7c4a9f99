"""Exact convex training of a convolutional BN-ReLU network (docs/math.md, section 8).

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

from sklearn.utils.validation import check_is_fitted

from convexnorm._validation import check_beta, check_count, random_state_of, validated
from convexnorm.convex.certificate import Certificate
from convexnorm.convex.estimators import (ScalarSolution, _fit_scalar, certify_solution, check_growth_parameters,
                                          unchanged_on_failure)
from convexnorm.convex.network import recover_network
from convexnorm.convex.patterns import arrangement_patterns
from convexnorm.convex.whitening import Whitening, whiten
from convexnorm.solvers.backends import SOLVERS


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

    ``fit(X, y)`` with images X of shape (N, C, H, W); 2-D X (N, F) is reshaped to
    (N, *image_shape) when ``image_shape`` = (C, H, W) is given, and read as one-channel
    signals (N, 1, 1, F) with a (1, kernel_size) kernel otherwise. ``objective_`` is the
    convex optimum over ``patterns_`` and equals ``nonconvex_objective(to_module(), images,
    y, beta)``. ``patterns`` as in ``arrangement_patterns`` on the N K patch rows
    ("exhaustive" only for tiny problems); solvers 'clarabel' or 'scs'. ``grow`` and
    ``certify`` work as for ``ConvexBNRegressor`` (docs/math.md section 4 with lam spread over
    each image's patches).
    """

    loss = "squared"

    def __init__(self, kernel_size: int | tuple[int, int] = 3, stride: int = 1, beta: float = 1e-3,
                 patterns: str | int = "auto", solver: str = "clarabel",
                 random_state: int | np.random.RandomState | None = 0, solver_options: dict | None = None,
                 image_shape: tuple[int, int, int] | None = None, grow: bool = False, max_rounds: int = 10,
                 n_probes: int = 2000, max_new_patterns: int = 50, progress: bool = False) -> None:
        self.kernel_size = kernel_size
        self.stride = stride
        self.beta = beta
        self.patterns = patterns
        self.solver = solver
        self.random_state = random_state
        self.solver_options = solver_options
        self.image_shape = image_shape
        self.grow = grow
        self.max_rounds = max_rounds
        self.n_probes = n_probes
        self.max_new_patterns = max_new_patterns
        self.progress = progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        # a one-filter-bank convolution with sum pooling over positions is a poor model of the
        # generic regression data of scikit-learn's checks
        tags.regressor_tags.poor_score = True
        return tags

    def _kernel(self) -> tuple[int, int]:
        return (self.kernel_size, self.kernel_size) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)

    def _check_params(self, owner: str) -> None:
        check_beta(self.beta, owner)
        if not isinstance(self.solver, str) or self.solver not in SOLVERS or self.solver == "torch":
            raise ValueError(f"{owner}: solver must be 'clarabel' or 'scs', got {self.solver!r}")
        kernel = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        if len(kernel) not in (1, 2):
            raise ValueError(f"{owner}: kernel_size must be an int or a pair of ints, got {self.kernel_size!r}")
        for value in kernel:
            check_count(value, owner, "kernel_size")
        check_count(self.stride, owner, "stride")
        check_growth_parameters(self, owner)
        if self.image_shape is not None and (len(tuple(self.image_shape)) != 3
                                             or min(tuple(self.image_shape)) < 1):
            raise ValueError(f"{owner}: image_shape must be None or (C, H, W), got {self.image_shape!r}")

    def _images(self, X: np.ndarray, owner: str) -> tuple[np.ndarray, tuple[int, int]]:
        """(N, C, H, W) images and the kernel for validated X (4-D, or 2-D per ``image_shape``)."""
        kernel = self._kernel()
        if X.ndim == 2:
            if self.image_shape is not None:
                shape = tuple(self.image_shape)
                if int(np.prod(shape)) != X.shape[1]:
                    raise ValueError(f"{owner}: X has {X.shape[1]} features, image_shape {shape} needs "
                                     f"{int(np.prod(shape))}")
                X = X.reshape(X.shape[0], *shape)
            else:
                if isinstance(self.kernel_size, int):
                    kernel = (1, self.kernel_size)
                X = X.reshape(X.shape[0], 1, 1, X.shape[1])
        if X.ndim != 4:
            raise ValueError(f"{owner}: X must be images (N, C, H, W) or 2-D (N, features), got shape {X.shape}")
        if X.shape[2] < kernel[0] or X.shape[3] < kernel[1]:
            raise ValueError(f"{owner}: images of size {X.shape[2]} x {X.shape[3]} (X has {X.shape[-1]} "
                             f"feature(s) per row) are smaller than the kernel {kernel}")
        return X, kernel

    def fit(self, X, y) -> "ConvexBNConvRegressor":
        owner = "ConvexBNConvRegressor"
        with unchanged_on_failure(self):
            self._check_params(owner)
            X, y = validated(self, X, y, dtype=np.float64, allow_nd=True, ensure_min_samples=2, y_numeric=True)
            images, kernel = self._images(X, owner)
            rng = random_state_of(self.random_state, type(self).__name__)
            try:
                patches = image_patches(images, kernel, self.stride)
                whitening = whiten(patches, scale_features=True)
                U_prime = whitening.U_prime
                patterns = arrangement_patterns(U_prime, self.patterns, rng)
            except (ValueError, RuntimeError) as error:
                raise ValueError(f"{owner}: {error}") from error
            per_image = patches.shape[0] // images.shape[0]
            solution, patterns, history = _fit_scalar(self, U_prime, patterns, np.asarray(y, dtype=np.float64), rng,
                                                      pool=patch_pooling(images.shape[0], per_image))
            self._set_fitted(whitening, patterns, solution, history, images.shape[1:], per_image, kernel)
            self._targets = np.asarray(y, dtype=np.float64)
        return self

    def certify(self, method: str = "auto", n_probes: int | None = None,
                random_state: int | np.random.RandomState | None = 0) -> Certificate:
        """The dual optimality check of the fitted program over all patterns (docs/math.md section 4)."""
        check_is_fitted(self)
        n_probes = self.n_probes if n_probes is None else check_count(n_probes, "certify", "n_probes")
        pool = patch_pooling(len(self._targets), self.n_positions_)
        return certify_solution(self.whitening_.U_prime, self._targets, self.solution_, self.beta, self.loss, method,
                                n_probes, random_state_of(random_state, "ConvexBNConvRegressor.certify"), pool)

    def _set_fitted(self, whitening: Whitening, patterns: np.ndarray, solution: ScalarSolution,
                    history: list[float], image_shape: tuple[int, ...], per_image: int,
                    kernel: tuple[int, int]) -> None:
        self.whitening_ = whitening
        self.patterns_ = patterns
        self.solution_ = solution
        self.objective_ = solution.objective
        self.objective_history_ = history
        self.solver_report_ = solution.report
        self.n_neurons_ = len(solution.signs)
        self.image_shape_ = tuple(image_shape)
        self.n_positions_ = per_image
        self.kernel_ = kernel

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validated(self, X, reset=False, dtype=np.float64, allow_nd=True)
        images, _ = self._images(X, "ConvexBNConvRegressor.predict")
        if images.shape[1:] != self.image_shape_:
            raise ValueError(f"ConvexBNConvRegressor.predict: images must be (N, *{self.image_shape_}), "
                             f"got shape {images.shape}")
        patches = image_patches(images, self.kernel_, self.stride)
        rows = self.whitening_.transform(patches)
        return self.solution_.predict(rows, patch_pooling(images.shape[0], self.n_positions_))

    def to_module(self) -> torch.nn.Sequential:
        """The recovered ``bn_relu_conv_network`` (eval mode, running statistics of the training
        patches); it takes (N, *image_shape_) images."""
        check_is_fitted(self)
        conv = {"in_channels": self.image_shape_[0], "kernel_size": self.kernel_, "stride": self.stride}
        return recover_network(self.whitening_, self.solution_.neurons, self.solution_.signs, conv=conv)
