"""convexnorm: the convex-optimization view of batch normalization in PyTorch.

The public names below are imported on first use (PEP 562), so that ``import convexnorm``
and ``convexnorm --help`` do not pay for torch and cvxpy until they are needed.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "Certificate": "convexnorm.convex",
    "ConvexBNClassifier": "convexnorm.convex",
    "ConvexBNConvRegressor": "convexnorm.convex",
    "ConvexBNRegressor": "convexnorm.convex",
    "GreedyConvexBNNetwork": "convexnorm.convex",
    "TrainingHistory": "convexnorm.convex",
    "Whitening": "convexnorm.convex",
    "arrangement_patterns": "convexnorm.convex",
    "bn_relu_conv_network": "convexnorm.convex",
    "bn_relu_network": "convexnorm.convex",
    "closed_form": "convexnorm.convex",
    "nonconvex_objective": "convexnorm.convex",
    "recover_network": "convexnorm.convex",
    "select_whitening_rank": "convexnorm.convex",
    "train_nonconvex": "convexnorm.convex",
    "whiten": "convexnorm.convex",
    "SolverError": "convexnorm.errors",
    "NormalizationProgram": "convexnorm.programs",
    "standardization_program": "convexnorm.programs",
}
_SUBPACKAGES = ("convex", "diagnostics", "nn", "optim", "programs")

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"convexnorm.{name}")
    else:
        raise AttributeError(f"module 'convexnorm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


logging.getLogger("convexnorm").addHandler(logging.NullHandler())
