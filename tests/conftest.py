"""Shared fixtures."""

from __future__ import annotations

import pytest

from convexnorm.solvers import newton


@pytest.fixture
def stalling_woodbury(monkeypatch: pytest.MonkeyPatch) -> None:
    """Woodbury's solve without the mismatch of the iterative refinement (``newton._Woodbury.solve``, as it was
    before session 32): the hinge loss's iterates then stall at certified gaps of about 1e-6, from the margin
    residual that the predictions c / d leave behind (docs/math.md, section 9). The tests of what follows a
    stall (the polish, the working set, the dense resumption) need one."""
    original = newton._Woodbury.solve
    monkeypatch.setattr(newton._Woodbury, "solve", lambda self, b_X, mismatch=None: original(self, b_X))
