"""Pure cvxpy builders of the library's disciplined parametrized programs."""

from convexnorm.programs.convex_bn import ConvexBNProgram, convex_bn_program
from convexnorm.programs.normalization import NormalizationProgram, standardization_program

__all__ = ["ConvexBNProgram", "NormalizationProgram", "convex_bn_program", "standardization_program"]
