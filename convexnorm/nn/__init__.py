"""torch.nn modules built on convex programs."""

from convexnorm.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, ProgramNorm
from convexnorm.nn.convex_bn_relu import ConvexBNReLU

__all__ = ["BatchNorm1d", "BatchNorm2d", "ConvexBNReLU", "GroupNorm", "LayerNorm", "ProgramNorm"]
