"""Shared fixtures."""

from __future__ import annotations

import pytest

from convexnorm.solvers import interior_point, newton


@pytest.fixture
def stalling_woodbury(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Newton solves as they were before session 32: Woodbury's without the mismatch of the iterative
    refinement (``newton._Woodbury.solve``), refined only from a certified gap of REFINE_GAP (not also from
    REFINE_MU of the starting mu). The hinge loss's iterates then stall at certified gaps of about 1e-6, from
    the margin residual that the predictions c / d leave behind (docs/math.md, section 9). The tests of what
    follows a stall (the polish, the working set, the dense resumption) need one."""
    monkeypatch.setattr(interior_point, "REFINE_MU", 0.0)
    original = newton._Woodbury.solve
    monkeypatch.setattr(newton._Woodbury, "solve", lambda self, b_X, mismatch=None: original(self, b_X))
