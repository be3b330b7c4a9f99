"""Hyperplane arrangement patterns D_i = diag(1[U' h >= 0]) (docs/math.md, section 3).

Exhaustive enumeration (rows of U' in general position, r' = r + 1 columns): every
cell of the central arrangement touches a direction u orthogonal to some r' - 1 rows.
For each (r' - 1)-subset of rows take its null direction +-u, the signs of the other
rows there, and all 2^(r'-1) signs of the subset rows: C(n, r'-1) * 2^r' candidates
whose distinct values are all the patterns. Otherwise gates h ~ N(0, I) are sampled.
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
from sklearn.utils import check_random_state

logger = logging.getLogger("convexnorm")

#: patterns="auto" enumerates exhaustively up to this many candidates.
MAX_EXHAUSTIVE_CANDIDATES = 200_000
#: patterns="auto" samples this many gate vectors otherwise.
AUTO_SAMPLES = 2_000


def exhaustive_candidates(n: int, r_prime: int) -> int:
    """C(n, r' - 1) * 2^r': the work of exhaustive enumeration."""
    return math.comb(n, r_prime - 1) * 2**r_prime


def _distinct(patterns: np.ndarray) -> np.ndarray:
    """Unique rows of a boolean (P, n) array, all-zero pattern removed, in a fixed order."""
    if patterns.size == 0:
        return patterns.reshape(0, patterns.shape[-1]).astype(bool)
    packed = np.packbits(patterns, axis=1)
    _, index = np.unique(packed, axis=0, return_index=True)
    unique = patterns[np.sort(index)]
    return unique[unique.any(axis=1)]


def _enumerate(U_prime: np.ndarray) -> np.ndarray:
    n, r_prime = U_prime.shape
    sign_choices = np.array(list(itertools.product([False, True], repeat=r_prime - 1)))
    found = []
    tol = 1e-9 * np.abs(U_prime).max()
    for subset in itertools.combinations(range(n), r_prime - 1):
        rows = list(subset)
        null = np.linalg.svd(U_prime[rows], full_matrices=True)[2][-1]
        values = U_prime @ null
        others = np.ones(n, dtype=bool)
        others[rows] = False
        if np.any(np.abs(values[others]) <= tol):
            logger.debug("arrangement_patterns: rows not in general position near subset %s", subset)
        for direction in (values, -values):
            base = direction >= 0
            block = np.repeat(base[None, :], len(sign_choices), axis=0)
            block[:, rows] = sign_choices
            found.append(block)
    return _distinct(np.concatenate(found))


def sample_patterns(U_prime: np.ndarray, n_gates: int, seed=0) -> np.ndarray:
    """Distinct nonzero patterns 1[U' h >= 0] of n_gates Gaussian gates h (``seed``: an int,
    a numpy RandomState or None, as scikit-learn's random_state)."""
    gates = check_random_state(seed).standard_normal((U_prime.shape[1], n_gates))
    return _distinct((U_prime @ gates >= 0).T)


def arrangement_patterns(U_prime: np.ndarray, patterns: str | int | np.ndarray = "auto", seed=0) -> np.ndarray:
    """Distinct nonzero arrangement patterns of U' as a boolean (P, n) array.

    ``patterns``: "exhaustive" (all of them, by enumeration; ValueError when that needs
    more than MAX_EXHAUSTIVE_CANDIDATES candidates), an int (that many sampled gate
    vectors, seeded), "auto" (exhaustive when it fits, else AUTO_SAMPLES gates), or a
    boolean (P, n) array of given patterns (for instance a ConvexBNReLU block's). ``seed``:
    an int, a numpy RandomState or None.
    """
    U_prime = np.asarray(U_prime, dtype=np.float64)
    if U_prime.ndim != 2 or U_prime.shape[0] < 1 or U_prime.shape[1] < 1:
        raise ValueError(f"arrangement_patterns: U_prime must be a nonempty 2D array, got shape {U_prime.shape}")
    if not np.isfinite(U_prime).all():
        raise ValueError("arrangement_patterns: U_prime contains NaN or Inf")
    n, r_prime = U_prime.shape
    if isinstance(patterns, np.ndarray):
        if patterns.dtype.kind not in "biuf" or not np.isin(patterns, (0, 1)).all():
            raise ValueError("arrangement_patterns: given patterns must be 0/1 or boolean")
        if patterns.ndim != 2 or patterns.shape[1] != n:
            raise ValueError(f"arrangement_patterns: given patterns must be (P, {n}), got {patterns.shape}")
        return _distinct(patterns.astype(bool))
    candidates = exhaustive_candidates(n, r_prime)
    if patterns == "auto":
        patterns = "exhaustive" if candidates <= MAX_EXHAUSTIVE_CANDIDATES else AUTO_SAMPLES
    if patterns == "exhaustive":
        if candidates > MAX_EXHAUSTIVE_CANDIDATES:
            raise ValueError(
                f"arrangement_patterns: exhaustive enumeration needs C({n}, {r_prime - 1}) * 2^{r_prime} = "
                f"{candidates:,} candidates (limit {MAX_EXHAUSTIVE_CANDIDATES:,}); pass patterns=<number of "
                "gates to sample> or patterns='auto', or reduce the rank of the data"
            )
        return _enumerate(U_prime)
    if isinstance(patterns, (int, np.integer)) and not isinstance(patterns, bool) and patterns > 0:
        return sample_patterns(U_prime, int(patterns), seed)
    raise ValueError(f"arrangement_patterns: patterns must be 'auto', 'exhaustive' or a positive int, got {patterns!r}")
