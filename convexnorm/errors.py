"""Exceptions raised by convexnorm."""


class SolverError(RuntimeError):
    """A convex solve failed or returned an inaccurate solution.

    The message names the layer or estimator and the solver's status.
    """
