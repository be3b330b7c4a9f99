"""Gradient descent's spectral bias and its explicit form, truncated whitening (issue #7)."""

import numpy as np
import pytest
import torch

import convexnorm as cn
from convexnorm.diagnostics import first_step_fitted, spectral_bias
from convexnorm.nn import ConvexBNReLU


def known_spectrum(n=64, singular_values=(10.0, 3.0, 1.0), seed=0):
    """X = U S V^T with centered orthonormal U, and y with equal parts along every u_i."""
    rng = np.random.default_rng(seed)
    k = len(singular_values)
    U, _ = np.linalg.qr(rng.standard_normal((n, k)) - rng.standard_normal((n, k)).mean(0))
    U, _ = np.linalg.qr(U - U.mean(0))
    V, _ = np.linalg.qr(rng.standard_normal((k, k)))
    return U @ np.diag(singular_values) @ V.T, 3 * U.sum(axis=1)


def test_gradient_descent_fits_the_top_singular_direction_first(tmp_path):
    X, y = known_spectrum()
    result = spectral_bias(X, y, beta=1e-4, width=50, lr=1e-4, steps=600, record_every=1)
    np.testing.assert_allclose(result["singular_values"], [10.0, 3.0, 1.0], rtol=1e-10)
    top, _, bottom = first_step_fitted(result, 0.5)
    assert top * 4 < bottom, (top, bottom)  # measured: 11 vs 120 steps
    assert cn.diagnostics.plot_spectral_bias(result, tmp_path / "bias.png").stat().st_size > 1000


def regression_data(n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) @ np.diag([3.0, 2.0, 1.0, 0.3])
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)
    return X, y


def test_truncated_whitening_with_full_rank_is_the_plain_model():
    X, y = regression_data()
    plain = cn.ConvexBNRegressor(beta=0.1, patterns=30, random_state=1).fit(X, y)
    for k in (4, 10):
        full = cn.ConvexBNRegressor(beta=0.1, patterns=30, random_state=1, whitening_rank=k).fit(X, y)
        assert full.whitening_.rank == 4
        assert abs(full.objective_ - plain.objective_) <= 1e-9 * plain.objective_
        np.testing.assert_allclose(full.predict(X), plain.predict(X), atol=1e-8)


@pytest.mark.parametrize("k", [1, 2])
def test_truncated_model_recovers_its_objective(k):
    X, y = regression_data()
    model = cn.ConvexBNRegressor(beta=0.1, patterns=30, random_state=1, whitening_rank=k).fit(X, y)
    assert model.whitening_.rank == k and model.whitening_.U_prime.shape == (40, k + 1)
    net = model.to_module()
    value = cn.nonconvex_objective(net, X, y, beta=0.1).item()
    assert abs(value - model.objective_) <= 1e-5 * model.objective_
    X_new = regression_data(seed=5)[0]
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(X_new)).numpy().ravel(), model.predict(X_new), atol=1e-8)


def test_select_whitening_rank_and_bad_ranks():
    X, y = regression_data(n=60)
    best, scores = cn.select_whitening_rank(cn.ConvexBNRegressor(beta=0.1, patterns=30), X[:40], y[:40], X[40:], y[40:],
                                            ranks=[1, 2, 4])
    assert set(scores) == {1, 2, 4} and scores[best] == max(scores.values())
    reference = cn.ConvexBNRegressor(beta=0.1, patterns=30, whitening_rank=2).fit(X[:40], y[:40])
    assert scores[2] == pytest.approx(reference.score(X[40:], y[40:]), rel=1e-9)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="whitening_rank"):
            cn.ConvexBNRegressor(whitening_rank=bad).fit(X, y)
        with pytest.raises(ValueError, match="whitening_rank"):
            ConvexBNReLU(4, whitening_rank=bad)


def test_block_with_truncated_whitening_equals_the_truncated_regressor():
    X, y = regression_data(n=16)
    H, t = torch.from_numpy(X), torch.from_numpy(y)
    block = ConvexBNReLU(4, beta=0.1, n_patterns=12, whitening_rank=2)
    _, objective = block(H, t, return_objective=True)
    U_prime = cn.whiten(X).truncated(2).U_prime
    patterns = block._patterns(torch.from_numpy(U_prime)).numpy().T.astype(bool)
    regressor = cn.ConvexBNRegressor(beta=0.1, patterns=patterns, whitening_rank=2).fit(X, y)
    assert abs(objective.item() - regressor.objective_) <= 1e-6 * regressor.objective_


@pytest.mark.parametrize("solver", ["clarabel", "torch"])
def test_spectral_variant_is_the_program_on_the_principal_axes(solver):
    """whitening='spectral' solves the same builder on Z = [U S, 1] (checked against a direct
    cvxpy solve on Z); predictions of the recovered network equal the model's."""
    import cvxpy as cp

    X, y = regression_data(n=30)
    model = cn.ConvexBNRegressor(beta=0.1, patterns=12, random_state=2, whitening="spectral", solver=solver).fit(X, y)
    plain = cn.whiten(X)
    Z = np.hstack([plain.U * plain.S, np.ones((30, 1))])
    np.testing.assert_allclose(model.whitening_.U_prime, Z, atol=1e-12)
    patterns = model.patterns_
    S, T = cp.Variable((5, len(patterns))), cp.Variable((5, len(patterns)))
    f, constraints = 0, []
    for i, mask in enumerate(patterns):
        f = f + cp.multiply(mask, Z @ (S[:, i] - T[:, i]))
        sign = np.where(mask, 1.0, -1.0)[:, None] * Z
        constraints += [sign @ S[:, i] >= 0, sign @ T[:, i] >= 0]
    objective = 0.5 * cp.sum_squares(f - y) + 0.1 * (cp.sum(cp.norm(S, 2, axis=0)) + cp.sum(cp.norm(T, 2, axis=0)))
    reference = cp.Problem(cp.Minimize(objective), constraints).solve(solver=cp.CLARABEL)
    assert abs(model.objective_ - reference) <= 1e-5 * reference  # measured 4e-11 (torch)
    net = model.to_module()
    X_new = regression_data(n=30, seed=4)[0]
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(X_new)).numpy().ravel(), model.predict(X_new), atol=1e-7)
    with pytest.raises(ValueError, match="whitening must be"):
        cn.ConvexBNRegressor(whitening="pca").fit(X, y)


def test_block_spectral_variant_equals_the_spectral_regressor_and_freezes():
    X, y = regression_data(n=16)
    H, t = torch.from_numpy(X), torch.from_numpy(y)
    block = ConvexBNReLU(4, beta=0.1, n_patterns=12, whitening="spectral")
    predictions, objective = block(H, t, return_objective=True)
    Z = cn.whiten(X).spectral().U_prime
    patterns = block._patterns(torch.from_numpy(Z)).numpy().T.astype(bool)
    regressor = cn.ConvexBNRegressor(beta=0.1, patterns=patterns, whitening="spectral").fit(X, y)
    assert abs(objective.item() - regressor.objective_) <= 1e-6 * regressor.objective_
    # training predictions are unique (strictly convex loss in f); neurons need not be
    np.testing.assert_allclose(predictions.detach().numpy(), regressor.predict(X), atol=1e-5)
    X_query = regression_data(n=16, seed=3)[0]
    frozen = block.freeze(H, t)  # the same Clarabel solve as the regressor's
    with torch.no_grad():
        np.testing.assert_allclose(frozen(torch.from_numpy(X_query)).numpy().ravel(), regressor.predict(X_query),
                                   atol=1e-7)
    with pytest.raises(ValueError, match="whitening must be"):
        ConvexBNReLU(4, whitening="pca")
