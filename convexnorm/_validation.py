"""Argument and input checks shared by the estimators, layers and optimizers (each error names its owner)."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data


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


def check_positive(value, owner: str, name: str, allow_zero: bool = False) -> float:
    """A finite real number > 0 (>= 0 with allow_zero) as a float; bools, complex numbers,
    strings and arrays get a ValueError naming ``owner`` and ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}: {name} must be a finite real number {bound}, got {value!r}")
    return float(value)


def check_beta(beta, owner: str) -> float:
    return check_positive(beta, owner, "beta")


def check_count(value, owner: str, name: str, minimum: int = 1) -> int:
    """An integer >= minimum (bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_options(options, owner: str, name: str) -> dict:
    """None or a dict of keyword options."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise ValueError(f"{owner}: {name} must be None or a dict of keyword options, got {options!r}")
    return dict(options)


def validated(estimator, X, y="no_validation", **kwargs):
    """scikit-learn's ``validate_data`` with its errors prefixed by the estimator's name."""
    try:
        return validate_data(estimator, X, y, **kwargs)
    except (TypeError, ValueError) as error:
        kind = TypeError if isinstance(error, TypeError) and not isinstance(error, ValueError) else ValueError
        raise kind(f"{type(estimator).__name__}: {error}") from error


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_momentum(momentum, owner: str, allow_zero: bool = True) -> float | None:
    """None (cumulative average) or a finite real number in [0, 1] ((0, 1] without allow_zero)."""
    if momentum is None:
        return None
    low = "[0, 1]" if allow_zero else "(0, 1]"
    if isinstance(momentum, (bool, np.bool_)) or not isinstance(momentum, numbers.Real) \
            or not (0 <= momentum <= 1) or (momentum == 0 and not allow_zero):
        raise ValueError(f"{owner}: momentum must be None or a number in {low}, got {momentum!r}")
    return float(momentum)


def check_device(device, owner: str) -> torch.device | None:
    """None or a torch device that exists here (CUDA without a CUDA device is a ValueError)."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"{owner}: device {device!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{owner}: device {str(device)!r} was asked for, but torch finds no CUDA device here")
    return device


def check_dtype(dtype, owner: str) -> torch.dtype | None:
    """None or a floating torch dtype."""
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"{owner}: dtype must be a floating torch dtype (e.g. torch.float64), got {dtype!r}")
    return dtype


def check_float_tensor(tensor, owner: str, name: str = "input") -> None:
    """A floating-point torch tensor with finite values (integer, bool and complex tensors are
    refused, as torch's own layers do)."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{owner}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{owner}: {name} must be a floating-point tensor (float32 or float64), got {tensor.dtype}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{owner}: {name} contains NaN or Inf")


def random_state_of(random_state, owner: str) -> np.random.RandomState:
    """scikit-learn's ``check_random_state`` with its error naming ``owner``."""
    try:
        return check_random_state(random_state)
    except ValueError as error:
        raise ValueError(f"{owner}: random_state must be None, an int or a numpy RandomState ({error})") from error


def check_step_sizes(values, owner: str, name: str) -> list[float]:
    """A nonempty sequence of finite numbers > 0."""
    values = list(values) if not isinstance(values, (str, bytes)) else values
    if not isinstance(values, list) or not values:
        raise ValueError(f"{owner}: {name} must be a nonempty sequence of numbers > 0")
    return [check_positive(value, owner, f"each of {name}") for value in values]
