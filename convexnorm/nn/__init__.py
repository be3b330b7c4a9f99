"""torch.nn modules built on convex programs, and the micro-batch normalizations.

Names are imported on first use (PEP 562): ``convexnorm.convex`` builds on the layers of
``convexnorm.nn.normalization`` while ``ConvexBNReLU`` builds on ``convexnorm.convex``, and
importing one submodule must not import the other side.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConvexBNReLU": "convexnorm.nn.convex_bn_relu",
    "BatchChannelNorm2d": "convexnorm.nn.micro_batch",
    "EstimatedBatchNorm1d": "convexnorm.nn.micro_batch",
    "EstimatedBatchNorm2d": "convexnorm.nn.micro_batch",
    "WeightStandardization": "convexnorm.nn.micro_batch",
    "WSConv2d": "convexnorm.nn.micro_batch",
    "BatchNorm1d": "convexnorm.nn.normalization",
    "BatchNorm2d": "convexnorm.nn.normalization",
    "GroupNorm": "convexnorm.nn.normalization",
    "LayerNorm": "convexnorm.nn.normalization",
    "ProgramNorm": "convexnorm.nn.normalization",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'convexnorm.nn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
