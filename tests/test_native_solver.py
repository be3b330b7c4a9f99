"""solver='torch': the native interior-point and augmented-Lagrangian solvers against Clarabel (issue 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convexnorm as cn


def data(n: int = 40, d: int = 3, seed: int = 6):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_native_objective_matches_clarabel_and_the_recovered_module() -> None:
    X, y = data()
    reference = cn.ConvexBNRegressor(beta=0.1, patterns=60).fit(X, y)
    native = cn.ConvexBNRegressor(beta=0.1, patterns=60, solver="torch").fit(X, y)
    report = native.solver_report_[0]
    assert report["converged"] and report["relative_gap"] <= 1e-5 and report["violation"] <= 1e-6
    assert rel(native.objective_, reference.objective_) < 1e-4
    assert rel(cn.nonconvex_objective(native.to_module(), X, y, 0.1).item(), native.objective_) < 1e-9


def test_native_solver_on_the_closed_form_case() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((8, 20)), rng.standard_normal(8)
    native = cn.ConvexBNRegressor(beta=0.3, patterns="exhaustive", solver="torch").fit(X, y)
    assert rel(native.objective_, cn.closed_form(X, y, 0.3).objective_) < 1e-4


def test_native_logistic_matches_clarabel() -> None:
    rng = np.random.default_rng(6)
    X = rng.standard_normal((24, 2))
    labels = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, 1, -1)
    reference = cn.ConvexBNClassifier(beta=0.1, loss="logistic", patterns=40).fit(X, labels)
    native = cn.ConvexBNClassifier(beta=0.1, loss="logistic", patterns=40, solver="torch").fit(X, labels)
    assert native.solver_report_[0]["converged"]
    assert rel(native.objective_, reference.objective_) < 1e-4
    with pytest.raises(ValueError, match="squared and logistic"):
        cn.ConvexBNClassifier(beta=0.1, loss="hinge", patterns=10, solver="torch").fit(X, labels)


def test_column_generation_with_warm_starts_reaches_clarabels_certified_optimum() -> None:
    """Both solvers grow from the same 10 patterns to the optimum over all patterns (exact
    certification); their paths may differ (the violators of slightly different multipliers)."""
    X, y = data(n=16)
    kwargs = dict(grow=True, max_rounds=20)
    reference = cn.ConvexBNRegressor(beta=0.1, patterns=10, **kwargs).fit(X, y)
    native = cn.ConvexBNRegressor(beta=0.1, patterns=10, solver="torch", **kwargs).fit(X, y)
    assert rel(native.objective_history_[0], reference.objective_history_[0]) < 1e-5
    assert reference.certify(method="exact").optimal is True
    assert rel(native.objective_, reference.objective_) < 1e-5  # the native solver's tolerance (relative gap)


def test_no_silent_iteration_limit() -> None:
    """A native solve that misses its tolerances raises SolverError and keeps the previous fit;
    keeping the inaccurate solution is an explicit opt-in (with a warning)."""
    X, y = data()
    model = cn.ConvexBNRegressor(beta=0.1, patterns=60, solver="torch").fit(X, y)
    good = model.objective_
    model.set_params(solver_options={"max_outer": 1, "max_inner": 5})
    with pytest.raises(cn.SolverError, match="ConvexBNRegressor: solver='torch' stopped .*'accept_inaccurate': True"):
        model.fit(X, y)
    assert model.objective_ == good and model.solver_report_[0]["converged"] is True
    model.set_params(solver_options={"max_outer": 1, "max_inner": 5, "accept_inaccurate": True})
    with pytest.warns(RuntimeWarning, match="without meeting its tolerances"):
        model.fit(X, y)
    assert model.solver_report_[0]["converged"] is False and model.objective_ > good


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_native_solver_on_cuda() -> None:
    X, y = data()
    reference = cn.ConvexBNRegressor(beta=0.1, patterns=60).fit(X, y)
    for dtype, tolerance in ((torch.float64, 1e-4), (torch.float32, 1e-3)):
        native = cn.ConvexBNRegressor(beta=0.1, patterns=60, solver="torch",
                                      solver_options={"device": "cuda", "dtype": dtype, "tol": tolerance}).fit(X, y)
        assert rel(native.objective_, reference.objective_) < tolerance


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_block_with_native_solver_runs_on_cuda() -> None:
    from convexnorm.nn import ConvexBNReLU

    H = torch.randn(12, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    y = torch.sin(2 * H.detach()[:, 0])
    block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch").cuda()
    predictions = block(H, y)
    predictions.sum().backward()
    reference = ConvexBNReLU(3, beta=0.2, n_patterns=10)(H.detach().cpu(), y.cpu())
    assert predictions.device.type == "cuda" and H.grad.device.type == "cuda"
    assert (predictions.detach().cpu() - reference).abs().max() < 1e-4


def test_interior_point_and_augmented_lagrangian_agree() -> None:
    """The two native methods on the same squared-loss program: both within their certified
    gap of Clarabel; the interior-point solution meets the stated violation tolerance."""
    from convexnorm.convex.native import solve_native

    X, y = data(n=60, seed=3)
    U_prime = cn.whiten(X).U_prime
    patterns = cn.arrangement_patterns(U_prime, 40, seed=1)
    reference = cn.ConvexBNRegressor(beta=0.1, patterns=patterns).fit(X, y)
    A, masks = torch.from_numpy(U_prime), torch.from_numpy(patterns.T.astype(float))
    results = {method: solve_native(A, masks, torch.from_numpy(y), 0.1, method=method) for method in ("ipm", "al")}
    for result in results.values():
        assert result.converged and result.relative_gap <= 1e-5
        assert rel(result.objective, reference.objective_) < 1e-4
        assert result.lower_bound <= reference.objective_ * (1 + 1e-7)  # a valid lower bound
    assert results["ipm"].violation <= 1e-6
    assert int((torch.linalg.norm(results["ipm"].W, dim=0) == 0).sum()) > 0  # inactive groups are exact zeros
    with pytest.raises(ValueError, match="method"):
        solve_native(A, masks, torch.from_numpy(y), 0.1, method="newton")
    with pytest.raises(ValueError, match="ipm"):
        solve_native(A.float(), masks.float(), torch.from_numpy(y).float(), 0.1, method="ipm")


def test_zero_solution_is_certified_at_once() -> None:
    """y = 0, or beta above every group's dual norm at lam = y: W = 0 is optimal (the
    certificate's bound equals its objective) and returned without iterating."""
    from convexnorm.convex.native import solve_native

    X, y = data()
    U_prime = cn.whiten(X).U_prime
    A = torch.from_numpy(U_prime)
    masks = torch.from_numpy(cn.arrangement_patterns(U_prime, 20, seed=0).T.astype(float))
    for target, beta in ((np.zeros_like(y), 0.1), (y, 1e3)):
        result = solve_native(A, masks, torch.from_numpy(target), beta)
        assert result.converged and result.iterations == 0 and not bool(result.W.any())
        assert result.objective == pytest.approx(0.5 * float(np.sum(target**2)), abs=1e-12)
        reference = cn.ConvexBNRegressor(beta=beta, patterns=20, random_state=0).fit(X, target)
        assert result.objective <= reference.objective_ + 1e-9


def test_many_samples_few_patterns_take_the_dense_route() -> None:
    """n = 300 samples, 6 patterns: the whole Newton matrix (48 x 48) is factorized instead of
    the 300 x 300 Woodbury matrix; the solution still matches Clarabel."""
    from convexnorm.convex.native import _dense_coupling, _Program

    X, y = data(n=300, seed=2)
    U_prime = cn.whiten(X).U_prime
    patterns = cn.arrangement_patterns(U_prime, 6, seed=0)
    A, masks = torch.from_numpy(U_prime), torch.from_numpy(patterns.T.astype(float))
    assert _dense_coupling(_Program.from_patterns(A, masks, torch.from_numpy(y), 0.1, "squared")) is not None
    reference = cn.ConvexBNRegressor(beta=0.1, patterns=patterns).fit(X, y)
    native = cn.ConvexBNRegressor(beta=0.1, patterns=patterns, solver="torch").fit(X, y)
    assert native.solver_report_[0]["converged"] and native.solver_report_[0]["method"] == "ipm"
    assert rel(native.objective_, reference.objective_) < 1e-4
