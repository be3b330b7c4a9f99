"""ProgramNorm: user programs through cvxpylayers, against torch and direct cvxpy solves."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
import torch

import convexnorm
from convexnorm.nn import ProgramNorm

BOUND = 1.2


def bounded_standardization(n: int):
    """max x^T z  s.t.  1^T z = 0, ||z|| <= sqrt(n), |z_k| <= BOUND."""
    x = cp.Parameter(n)
    z = cp.Variable(n)
    problem = cp.Problem(cp.Maximize(x @ z), [cp.sum(z) == 0, cp.norm(z, 2) <= math.sqrt(n), cp.abs(z) <= BOUND])
    return problem, x, z


def direct_solve(x: np.ndarray) -> np.ndarray:
    """The same program solved by cvxpy + Clarabel, one group at a time."""
    out = np.empty_like(x)
    for i, row in enumerate(x):
        problem, param, z = bounded_standardization(row.size)
        param.value = row
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        assert problem.status == cp.OPTIMAL
        out[i] = z.value
    return out


def test_standard_program_reproduces_torch_batchnorm_and_groupnorm() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    for ours, reference in (
        (ProgramNorm(lambda n: convexnorm.standardization_program(n, 1e-5), 4, dtype=torch.float64),
         torch.nn.BatchNorm1d(4, track_running_stats=False, dtype=torch.float64)),
        (ProgramNorm(lambda n: convexnorm.standardization_program(n, 1e-5), 4, num_groups=2, dtype=torch.float64),
         torch.nn.GroupNorm(2, 4, dtype=torch.float64)),
    ):
        with torch.no_grad():
            reference.weight.normal_()
            reference.bias.normal_()
        ours.load_state_dict(reference.state_dict())
        for train in (True, False):
            ours.train(train)
            reference.train(train)
            y, y_ref = ours(x), reference(x)
            assert (y - y_ref).abs().max() < 1e-6
            g = torch.autograd.grad((y**2).sum(), [x, ours.weight, ours.bias])
            g_ref = torch.autograd.grad((y_ref**2).sum(), [x, reference.weight, reference.bias])
            for a, b in zip(g, g_ref):
                assert (a - b).abs().max() < 1e-6


def test_bounded_program_matches_direct_cvxpy_solve() -> None:
    torch.manual_seed(1)
    x = torch.randn(10, 3, dtype=torch.float64)
    x[0, 0] = 8.0  # an outlier that makes the bound active
    module = ProgramNorm(bounded_standardization, 3, affine=False)
    y = module(x)
    expected = direct_solve(x.T.numpy()).T
    assert np.abs(y.detach().numpy() - expected).max() < 1e-6
    assert y.abs().max() <= BOUND + 1e-8
    assert (y.abs() > BOUND - 1e-6).any(), "the test should exercise an active bound"


def test_bounded_program_gradient_matches_finite_differences() -> None:
    torch.manual_seed(2)
    x = torch.randn(6, 2, dtype=torch.float64)
    x[0, 0] = 6.0
    weights = torch.randn(6, 2, dtype=torch.float64)
    module = ProgramNorm(bounded_standardization, 2, affine=False)

    def objective(inp: torch.Tensor) -> torch.Tensor:
        return (module(inp) * weights).sum()

    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x_var), x_var)
    step = 1e-5
    numeric = torch.zeros_like(x)
    with torch.no_grad():
        for idx in np.ndindex(*x.shape):
            plus, minus = x.clone(), x.clone()
            plus[idx] += step
            minus[idx] -= step
            numeric[idx] = (objective(plus) - objective(minus)) / (2 * step)
    assert torch.linalg.norm(grad - numeric) <= 1e-4 * torch.linalg.norm(numeric)


def test_program_norm_errors() -> None:
    x = torch.randn(4, 3)

    def not_dpp(n: int):
        a, b = cp.Parameter(n), cp.Parameter(n)
        z = cp.Variable(n)
        return cp.Problem(cp.Maximize(cp.multiply(a, b) @ z), [cp.norm(z) <= 1]), a, z

    def wrong_size(n: int):
        return bounded_standardization(n + 1)

    def infeasible(n: int):
        p, z = cp.Parameter(n), cp.Variable(n)
        return cp.Problem(cp.Maximize(p @ z), [cp.sum(z) == 1, z <= -1]), p, z

    with pytest.raises(ValueError, match="only parameter"):
        ProgramNorm(not_dpp, 3)(x)
    with pytest.raises(ValueError, match="program\\(4\\) built a program for groups of 5"):
        ProgramNorm(wrong_size, 3)(x)
    with pytest.raises(ValueError, match="must return"):
        ProgramNorm(lambda n: None, 3)(x)
    with pytest.raises(ValueError, match="divisible"):
        ProgramNorm(bounded_standardization, 3, num_groups=2)
    with pytest.raises(ValueError, match="ProgramNorm: input contains NaN"):
        ProgramNorm(bounded_standardization, 3)(torch.full((4, 3), float("nan")))
    with pytest.raises(convexnorm.SolverError, match="ProgramNorm: the program was not solved .*infeasible"):
        ProgramNorm(infeasible, 3)(x)
    # Clarabel inside diffcp reports no status for an infeasible problem: the
    # constraint check catches the wrong answer instead.
    with pytest.raises(convexnorm.SolverError, match="ProgramNorm: inaccurate solve"):
        ProgramNorm(infeasible, 3, solver_options={"solve_method": "Clarabel"})(x)
