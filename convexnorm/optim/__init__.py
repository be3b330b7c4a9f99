"""Optimizers and preconditioners from the batch-normalization literature."""

from convexnorm.optim.bnp import BNP

__all__ = ["BNP"]
