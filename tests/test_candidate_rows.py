"""Candidate orthant rows (solvers/candidate_rows.py): the relaxation on the rows nearest each cell's
inner point is the whole program, checked against exact facets (scipy's NNLS), the constraint maps
against loops over groups, and the solves against the whole program's and Clarabel's; a relaxation
that misses a facet is solved whole."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

import convexnorm as cn
from convexnorm.convex.patterns import arrangement_patterns
from convexnorm.convex.whitening import whiten
from convexnorm.solvers import candidate_rows
from convexnorm.solvers.candidate_rows import candidate_rows as nearest_rows
from convexnorm.solvers.native import native_settings, solve_native
from convexnorm.solvers.problem import ConvexBNProblem

f64 = torch.float64


def data(n: int = 150, d: int = 2, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 1 % d] + 0.1 * rng.standard_normal(n)


def program(n: int = 150, d: int = 2, patterns: int = 30, loss: str = "squared") -> ConvexBNProblem:
    X, y = data(n, d)
    if loss != "squared":
        y = np.where(y > np.median(y), 1.0, -1.0)
    U = whiten(X).U_prime
    return ConvexBNProblem.from_arrays([(U, arrangement_patterns(U, patterns, seed=0), y)], 0.1, loss)


def facets(A: np.ndarray, mask: np.ndarray) -> list[int]:
    """The rows a whose constraint is not implied by the others: E_a a_a outside the cone of the
    other signed rows (a nonnegative least-squares residual)."""
    G = np.where(mask, 1.0, -1.0)[:, None] * A
    return [a for a in range(len(A))
            if nnls(np.delete(G, a, 0).T, G[a], maxiter=5000)[1] > 1e-9 * np.linalg.norm(G[a])]


@pytest.mark.parametrize("n, d", [(150, 2), (300, 5)])
def test_candidates_hold_every_facet(n: int, d: int) -> None:
    """Every facet of every pattern's cell is among its ROWS_PER_WIDTH k candidates, which are at most
    half of the rows (and the facets fewer still)."""
    problem = program(n, d, patterns=40)
    k = problem.width
    count = candidate_rows.ROWS_PER_WIDTH * k
    assert 2 * count <= n
    chosen = nearest_rows(problem, count)[0]
    A, masks = problem.A[0].numpy(), problem.masks[0].numpy() > 0
    sizes = []
    for i in range(problem.patterns):
        needed = facets(A, masks[:, i])
        sizes.append(len(needed))
        missing = sorted(set(needed) - set(chosen[i].tolist()))
        assert not missing, f"pattern {i}: facets {missing} not among the candidates"
    assert max(sizes) < count


def test_constraint_maps_on_candidates_match_loops_over_groups() -> None:
    """constraint_rows, its adjoint, constraint_gram and constraint_signs on candidate rows against the
    group-by-group definitions; with every row a candidate, the whole program's maps."""
    generator = torch.Generator().manual_seed(0)
    batch, n, k, P, c = 2, 11, 4, 5, 6
    A = torch.randn(batch, n, k, generator=generator, dtype=f64)
    masks = (torch.rand(batch, n, P, generator=generator) > 0.5).double()
    y = torch.randn(batch, n, generator=generator, dtype=f64)
    candidates = torch.stack([torch.stack([torch.randperm(n, generator=generator)[:c] for _ in range(P)])
                              for _ in range(batch)])
    whole = ConvexBNProblem(A, masks, y, torch.full((batch,), 0.1, dtype=f64), "squared")
    relaxed = whole.relaxed(candidates)
    W = torch.randn(batch, 2 * P, k, generator=generator, dtype=f64)
    V = torch.randn(batch, c, 2 * P, generator=generator, dtype=f64)
    weights = torch.rand(batch, c, 2 * P, generator=generator, dtype=f64)
    for b in range(batch):
        for j in range(2 * P):
            rows = candidates[b, j % P]
            assert torch.allclose(relaxed.constraint_rows(W)[b, :, j], A[b, rows] @ W[b, j], rtol=1e-13, atol=1e-13)
            assert torch.equal(relaxed.constraint_signs[b, :, j], 2 * masks[b, rows, j % P] - 1)
            gram = (A[b, rows].T * weights[b, :, j]) @ A[b, rows]
            assert torch.allclose(relaxed.constraint_gram(weights)[b, j], gram, rtol=1e-13, atol=1e-13)
    left = (relaxed.constraint_rows(W) * V).sum((-1, -2))
    assert torch.allclose(left, (W * relaxed.constraint_rows_adjoint(V)).sum((-1, -2)), rtol=1e-12)
    every = whole.relaxed(torch.arange(n).expand(batch, P, n))
    V = torch.randn(batch, n, 2 * P, generator=generator, dtype=f64)
    assert torch.allclose(every.constraint_rows(W), whole.constraint_rows(W), rtol=1e-13, atol=1e-13)
    assert torch.allclose(every.constraint_rows_adjoint(V), whole.constraint_rows_adjoint(V), rtol=1e-13, atol=1e-13)
    assert torch.allclose(every.constraint_gram(V.abs()), whole.constraint_gram(V.abs()), rtol=1e-13, atol=1e-13)
    assert torch.equal(every.constraint_signs, whole.constraint_signs)
    assert torch.allclose(every.violation(W), whole.violation(W), rtol=1e-12, atol=1e-15)


def whole_and_relaxed(problem: ConvexBNProblem, monkeypatch: pytest.MonkeyPatch, rows_per_width: int | None = None):
    settings, _ = native_settings({}, "test", tol=1e-7, **({"dense_curvature": float("inf")}
                                                           if problem.loss == "hinge" else {}))
    with monkeypatch.context() as patch:
        patch.setattr(candidate_rows, "ROWS_PER_WIDTH", 10**6)
        whole = solve_native(problem, settings, 1)
    with monkeypatch.context() as patch:
        if rows_per_width is not None:
            patch.setattr(candidate_rows, "ROWS_PER_WIDTH", rows_per_width)
        relaxed = solve_native(problem, settings, 1)
    return whole, relaxed


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_relaxed_solve_is_the_whole_program(loss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On candidate rows (a quarter of them here) the solve certifies the whole program: objectives
    within 1e-7 of the whole solve's, violation measured on every row, a lower bound below both."""
    problem = program(loss=loss)
    count = candidate_rows.candidate_count(problem)
    assert count is not None and 4 * count <= problem.samples  # the relaxation is used
    whole, relaxed = whole_and_relaxed(problem, monkeypatch)
    assert bool(whole.converged[0]) and bool(relaxed.converged[0])
    assert float(relaxed.criteria.violation[0]) <= 1e-7
    assert abs(float(relaxed.criteria.objective[0] - whole.criteria.objective[0])) <= 2e-7 * float(
        whole.criteria.objective[0])
    assert float(relaxed.criteria.lower_bound[0]) <= float(whole.criteria.objective[0]) * (1 + 1e-12)
    assert torch.allclose(problem.objective(relaxed.W), relaxed.criteria.objective, rtol=1e-12)


def test_a_relaxation_that_misses_a_facet_is_solved_whole(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """With k candidate rows per pattern (fewer than its facets) the relaxed answer violates a row left
    out; the program is then solved whole, to the whole solve's answer."""
    problem = program()
    with caplog.at_level(logging.INFO, logger="convexnorm"):
        whole, relaxed = whole_and_relaxed(problem, monkeypatch, rows_per_width=1)
    assert "solved whole" in caplog.text
    assert bool(relaxed.converged[0]) and float(relaxed.criteria.violation[0]) <= 1e-7
    assert torch.allclose(relaxed.W, whole.W, rtol=0, atol=1e-12 * float(whole.W.abs().max()))
    assert int(relaxed.iterations[0]) > int(whole.iterations[0])


def test_estimator_on_candidate_rows_matches_clarabel() -> None:
    """ConvexBNRegressor(solver="torch") at n = 150, k = 3 (candidate rows used) against Clarabel on the
    whole program, and its recovered module's objective."""
    X, y = data()
    reference = cn.ConvexBNRegressor(beta=0.1, patterns=30).fit(X, y)
    native = cn.ConvexBNRegressor(beta=0.1, patterns=30, solver="torch").fit(X, y)
    report = native.solver_report_[0]
    assert report["converged"] and report["violation"] <= 1e-7
    assert abs(native.objective_ - reference.objective_) <= 1e-6 * reference.objective_
    module_objective = cn.nonconvex_objective(native.to_module(), X, y, 0.1).item()
    assert abs(module_objective - native.objective_) <= 1e-9 * native.objective_


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_block_on_candidate_rows_matches_the_whole_program(loss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ConvexBNReLU(solver="torch") on two episodes of 128 x 3 (candidate rows used: 48 of 128): predictions,
    objectives and gradients in H, y and log beta those of the whole program's solve, 1e-8 relative."""
    from convexnorm.nn import ConvexBNReLU

    generator = torch.Generator().manual_seed(4)
    H = torch.randn(2, 128, 3, generator=generator, dtype=f64)
    y = torch.sin(2 * H[..., 0]) + H[..., 1] * H[..., 2]
    if loss != "squared":
        y = torch.where(y > 0, 1.0, -1.0).double()
    weights = torch.randn(2, 128, generator=generator, dtype=f64)
    used = []
    relaxation_of = candidate_rows.relaxation
    monkeypatch.setattr(candidate_rows, "relaxation", lambda problem: used.append(relaxation_of(problem)) or used[-1])

    def run() -> list[torch.Tensor]:
        block = ConvexBNReLU(3, beta=0.05, n_patterns=24, loss=loss, learnable_beta=True, solver="torch")
        H_var, y_var = H.clone().requires_grad_(True), y.clone().requires_grad_(True)
        predictions, objective = block(H_var, y_var, return_objective=True)
        ((predictions * weights).sum() + objective.sum()).backward()
        return [predictions.detach(), objective.detach(), H_var.grad, y_var.grad, block.log_beta.grad]

    relaxed = run()
    assert used and all(problem is not None for problem in used)
    with monkeypatch.context() as patch:
        patch.setattr(candidate_rows, "ROWS_PER_WIDTH", 10**6)
        whole = run()
    assert used[-1] is None
    for got, expected in zip(relaxed, whole):
        assert torch.allclose(got, expected, rtol=0, atol=1e-8 * float(expected.abs().max()))


def test_a_widened_result_resumes_afresh() -> None:
    """A result on candidate rows, widened to all rows (z = 0 on the rows left out: no interior iterate),
    resumes as a fresh solve of the whole program, to the whole solve's answer."""
    from convexnorm.solvers.interior_point import InteriorPointSettings, interior_point, resumed_on

    problem = program()
    settings = InteriorPointSettings(tol=1e-7)
    widened = candidate_rows.solve_relaxed(problem, settings)
    assert not widened.interior and bool((widened.z.rows == 0).any())
    keep = torch.ones(1, dtype=torch.bool)
    _, resumed = resumed_on(problem, widened, keep, InteriorPointSettings(tol=1e-8))
    whole = interior_point(problem, InteriorPointSettings(tol=1e-8))
    assert resumed.interior and bool(resumed.converged[0])
    assert torch.equal(resumed.W, whole.W)
