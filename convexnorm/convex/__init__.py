"""The convex reformulation of two-layer BN-ReLU networks: estimators and solvers."""

from convexnorm.convex.certificate import Certificate
from convexnorm.convex.estimators import (
    ConvexBNClassifier,
    ConvexBNRegressor,
    closed_form,
    select_whitening_rank,
)
from convexnorm.convex.conv import ConvexBNConvRegressor
from convexnorm.convex.layerwise import GreedyConvexBNNetwork
from convexnorm.convex.network import (
    TrainingHistory,
    bn_relu_conv_network,
    bn_relu_network,
    nonconvex_objective,
    recover_network,
    train_nonconvex,
)
from convexnorm.convex.patterns import arrangement_patterns
from convexnorm.convex.whitening import Whitening, whiten

__all__ = [
    "Certificate",
    "ConvexBNClassifier",
    "ConvexBNConvRegressor",
    "ConvexBNRegressor",
    "GreedyConvexBNNetwork",
    "TrainingHistory",
    "Whitening",
    "arrangement_patterns",
    "bn_relu_conv_network",
    "bn_relu_network",
    "closed_form",
    "nonconvex_objective",
    "recover_network",
    "select_whitening_rank",
    "train_nonconvex",
    "whiten",
]
