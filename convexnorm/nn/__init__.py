"""torch.nn modules built on convex programs, and the micro-batch normalizations."""

from convexnorm.nn.convex_bn_relu import ConvexBNReLU
from convexnorm.nn.micro_batch import (
    BatchChannelNorm2d,
    EstimatedBatchNorm1d,
    EstimatedBatchNorm2d,
    WeightStandardization,
    WSConv2d,
)
from convexnorm.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, ProgramNorm

__all__ = ["BatchChannelNorm2d", "BatchNorm1d", "BatchNorm2d", "ConvexBNReLU", "EstimatedBatchNorm1d",
           "EstimatedBatchNorm2d", "GroupNorm", "LayerNorm", "ProgramNorm", "WSConv2d", "WeightStandardization"]
