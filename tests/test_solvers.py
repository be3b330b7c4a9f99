"""The solver layer (issue 13): the batched interior-point method against Clarabel, batched
against one-by-one, and the block on it (episodes, gradients, bad input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convexnorm as cn
from convexnorm.convex.patterns import sample_patterns
from convexnorm.convex.solve import solve_convex_program
from convexnorm.convex.whitening import whiten
from convexnorm.nn import ConvexBNReLU
from convexnorm.solvers.interior_point import InteriorPointSettings, interior_point
from convexnorm.solvers.problem import ConvexBNProblem


def program(seed: int, n: int, d: int, P: int, loss: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, -1]
    if loss != "squared":
        y = np.where(y > np.median(y), 1.0, -1.0)
    U_prime = whiten(X).U_prime
    return U_prime, sample_patterns(U_prime, P, seed), y


def batched(items: list[tuple[np.ndarray, np.ndarray, np.ndarray]], beta: float, loss: str) -> ConvexBNProblem:
    A = torch.stack([torch.from_numpy(U) for U, _, _ in items])
    masks = torch.stack([torch.from_numpy(p.T.astype(float)) for _, p, _ in items])
    y = torch.stack([torch.from_numpy(t) for _, _, t in items])
    return ConvexBNProblem(A, masks, y, torch.full((len(items),), beta, dtype=torch.float64), loss)


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
@pytest.mark.parametrize("seed, n, d, P", [(0, 40, 3, 20), (1, 60, 5, 40)])
def test_interior_point_matches_clarabel(loss: str, seed: int, n: int, d: int, P: int) -> None:
    U_prime, patterns, y = program(seed, n, d, P, loss)
    result = interior_point(batched([(U_prime, patterns, y)], 0.1, loss))
    reference = solve_convex_program(U_prime, patterns.astype(bool), y, 0.1, loss, "clarabel", "test",
                                     tight_first=True)
    assert bool(result.converged.all())
    objective = float(result.criteria.objective[0])
    assert abs(objective - reference.objective) <= 1e-6 * reference.objective
    assert float(result.criteria.lower_bound[0]) <= reference.objective * (1 + 1e-9)


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_batched_solves_equal_one_by_one(loss: str) -> None:
    items = [program(seed, 30, 3, 12, loss) for seed in range(3)]
    together = interior_point(batched(items, 0.2, loss))
    for index, item in enumerate(items):
        alone = interior_point(batched([item], 0.2, loss))
        # the same iterates up to the rounding of batched against single matrix products, which the
        # last iterations amplify in W's ill-determined directions (measured: objectives 1e-13 apart,
        # W up to 3e-7 of its largest entry)
        scale = float(alone.W[0].abs().max())
        assert torch.allclose(together.W[index], alone.W[0], rtol=0, atol=1e-6 * scale)
        assert abs(float(together.criteria.objective[index] - alone.criteria.objective[0])) \
            <= 1e-12 * float(alone.criteria.objective[0])
        assert int(together.iterations[index]) == int(alone.iterations[0])
    assert bool(together.converged.all())


def episodes(B: int = 3, n: int = 12, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    H = torch.randn(B, n, d, generator=generator, dtype=torch.float64)
    return H, torch.sin(2 * H[..., 0]) + H[..., 1] * H[..., 2]


def test_block_episodes_equal_single_batches() -> None:
    H, y = episodes()
    block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch")
    predictions, objective = block(H, y, return_objective=True)
    assert predictions.shape == (3, 12) and objective.shape == (3,)
    for b in range(3):
        single, single_objective = block(H[b], y[b], return_objective=True)
        assert torch.allclose(predictions[b], single, atol=1e-12) and torch.allclose(objective[b], single_objective)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_block_gradients_agree_with_cvxpylayers(loss: str) -> None:
    H, y = episodes(B=1)
    H, y = H[0], y[0]
    if loss == "logistic":
        y = torch.where(y > 0, 1.0, -1.0).double()
    generator = torch.Generator().manual_seed(5)
    H_query = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    weights = torch.randn(5, generator=generator, dtype=torch.float64)
    results = {}
    for solver, args in (("cvxpylayers", {"eps_abs": 1e-12, "eps_rel": 1e-12, "max_iters": 1_000_000}),
                         ("torch", {})):
        block = ConvexBNReLU(3, beta=0.2, n_patterns=10, learnable_beta=True, loss=loss, solver=solver,
                             solver_args=args)
        H_var, y_var = H.clone().requires_grad_(True), y.clone().requires_grad_(True)
        predictions, objective = block(H_var, y_var, H_query=H_query, return_objective=True)
        value = (predictions * weights).sum() + 0.3 * objective
        results[solver] = (objective.detach(), *torch.autograd.grad(value, [H_var, y_var, block.log_beta]))
    for reference, native in zip(results["cvxpylayers"], results["torch"]):
        assert torch.linalg.norm(native - reference) <= 1e-5 * torch.linalg.norm(reference)


def test_bad_episodes_are_named() -> None:
    block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch")
    H, y = episodes()
    with pytest.raises(ValueError, match=r"ConvexBNReLU: y must have shape \(3, 12\)"):
        block(H, y[:2])
    with pytest.raises(ValueError, match=r"ConvexBNReLU: H_query must be \(3, m, 3\)"):
        block(H, y, H_query=torch.randn(2, 4, 3, dtype=torch.float64))
    broken = H.clone()
    broken[1, 4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"ConvexBNReLU: H contains NaN or Inf in episode\(s\) \[1\]"):
        block(broken, y)
    flat = H.clone()
    flat[2] = flat[2, :, :1].repeat(1, 3)  # rank 1
    with pytest.raises(ValueError, match="ConvexBNReLU: the batch is rank-deficient in episode 2"):
        block(flat, y)
    with pytest.raises(ValueError, match="episodes .* need solver='torch'"):
        ConvexBNReLU(3, beta=0.2, n_patterns=10)(H, y)
    with pytest.raises(ValueError, match="solver_args for solver='torch'"):
        ConvexBNReLU(3, solver="torch", solver_args={"method": "al"})(H, y)


def test_unsolved_episode_is_named_and_settings_are_checked() -> None:
    block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch", solver_args={"max_iterations": 3})
    H, y = episodes()
    with pytest.raises(cn.SolverError, match=r"ConvexBNReLU: solver='torch' did not meet its tolerances in "
                                             r"episode\(s\) \[0, 1, 2\]"):
        block(H, y)
    assert InteriorPointSettings().tol == 1e-7


@pytest.mark.parametrize("first", ["convexnorm.solvers.implicit", "convexnorm.nn", "convexnorm.convex",
                                   "convexnorm.programs", "convexnorm.optim", "convexnorm.diagnostics"])
def test_every_subpackage_imports_first(first: str) -> None:
    """No import cycle: each subpackage can be the first one imported in a fresh interpreter."""
    import subprocess
    import sys

    code = f"import {first}; import convexnorm; convexnorm.ConvexBNRegressor; convexnorm.nn.ConvexBNReLU"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)



def test_best_iterate_never_trades_a_met_test_for_a_smaller_gap() -> None:
    """The best iterate is scored with the stopping test's violation tolerance: an iterate that
    meets it (gap 1e-8, violation 1e-13) is not replaced by one with a smaller gap whose
    violation (1e-9) exceeds violation_tol (1e-12)."""
    from convexnorm.solvers.interior_point import _Best
    from convexnorm.solvers.kkt import Conic, Criteria, Primal

    def point(value: float) -> tuple[Primal, Conic]:
        t = torch.full((1, 2, 3), value, dtype=torch.float64)
        return Primal(t), Conic(torch.full((1, 4, 2), value, dtype=torch.float64), t)

    def measured(gap: float, violation: float) -> Criteria:
        return Criteria(*(torch.tensor([v], dtype=torch.float64) for v in (1.0, 1.0 - gap, gap, violation)))

    x, s = point(1.0)
    best = _Best(x, s, s, measured(1e-8, 1e-13), violation_tol=1e-12)
    x2, s2 = point(2.0)
    best.update(x2, s2, s2, measured(1e-9, 1e-9))
    assert bool(best.criteria.met(1e-7, 1e-12).all()) and float(best.x.X[0, 0, 0]) == 1.0
