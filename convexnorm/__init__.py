"""convexnorm: the convex-optimization view of batch normalization in PyTorch."""

import logging

from convexnorm import nn, programs
from convexnorm.errors import SolverError
from convexnorm.programs import NormalizationProgram, standardization_program

__version__ = "0.1.0"
__all__ = ["NormalizationProgram", "SolverError", "nn", "programs", "standardization_program", "__version__"]

logging.getLogger("convexnorm").addHandler(logging.NullHandler())
