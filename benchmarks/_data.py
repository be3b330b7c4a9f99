"""The synthetic regression problem every solver benchmark uses, so that their rows are
the same programs: X ~ N(0, I) (n x d), y = sin(2 x_1) + x_2 x_3 + 0.1 noise."""

from __future__ import annotations

import numpy as np


def regression_problem(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(n)
