"""torch.nn modules built on convex programs."""

from convexnorm.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, ProgramNorm

__all__ = ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "LayerNorm", "ProgramNorm"]
