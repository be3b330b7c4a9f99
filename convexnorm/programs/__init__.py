"""Pure cvxpy builders of the library's disciplined parametrized programs."""

from convexnorm.programs.normalization import NormalizationProgram, standardization_program

__all__ = ["NormalizationProgram", "standardization_program"]
