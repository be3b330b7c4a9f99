"""convexnorm: the convex-optimization view of batch normalization in PyTorch."""

import logging

from convexnorm import nn, programs
from convexnorm.convex import (
    Certificate,
    ConvexBNClassifier,
    ConvexBNConvRegressor,
    ConvexBNRegressor,
    GreedyConvexBNNetwork,
    TrainingHistory,
    Whitening,
    arrangement_patterns,
    bn_relu_conv_network,
    bn_relu_network,
    closed_form,
    nonconvex_objective,
    recover_network,
    select_whitening_rank,
    train_nonconvex,
    whiten,
)
from convexnorm.errors import SolverError
from convexnorm import diagnostics, optim
from convexnorm.programs import NormalizationProgram, standardization_program

__version__ = "0.1.0"
__all__ = [
    "Certificate",
    "ConvexBNClassifier",
    "ConvexBNConvRegressor",
    "ConvexBNRegressor",
    "GreedyConvexBNNetwork",
    "NormalizationProgram",
    "SolverError",
    "TrainingHistory",
    "Whitening",
    "arrangement_patterns",
    "bn_relu_conv_network",
    "bn_relu_network",
    "closed_form",
    "diagnostics",
    "nn",
    "nonconvex_objective",
    "optim",
    "programs",
    "recover_network",
    "select_whitening_rank",
    "standardization_program",
    "train_nonconvex",
    "whiten",
    "__version__",
]

logging.getLogger("convexnorm").addHandler(logging.NullHandler())
