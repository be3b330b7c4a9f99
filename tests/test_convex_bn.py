"""Exact convex training of two-layer BN-ReLU networks (issue 3), against independent references."""

from __future__ import annotations

import copy
import itertools

import cvxpy as cp
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
import torch

import convexnorm as cn
from convexnorm.solvers import native as native_solver


def low_rank_problem(n: int = 30, d: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.1 * rng.standard_normal(n)
    return X, y


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# ---------------------------------------------------------------- whitening and patterns


def test_whitening_is_orthonormal_and_maps_training_rows_to_u_prime() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 2)) @ rng.standard_normal((2, 5)) + 3.0  # rank 2 in R^5
    w = cn.whiten(X)
    assert w.rank == 2
    U_prime = w.U_prime
    assert np.abs(U_prime.T @ U_prime - np.eye(3)).max() < 1e-12
    assert np.abs(w.transform(X) - U_prime).max() < 1e-10


def realizable_by_lp(U_prime: np.ndarray, mask: np.ndarray) -> bool:
    """Is there h with (2D - I) U' h > 0 strictly? (max margin LP)"""
    h, margin = cp.Variable(U_prime.shape[1]), cp.Variable()
    signs = np.where(mask, 1.0, -1.0)
    problem = cp.Problem(cp.Maximize(margin), [cp.multiply(signs, U_prime @ h) >= margin, cp.norm(h, "inf") <= 1])
    problem.solve(solver=cp.CLARABEL)
    return problem.value > 1e-7


def test_exhaustive_patterns_equal_brute_force_enumeration() -> None:
    X, _ = low_rank_problem(n=8, d=2, seed=3)
    U_prime = cn.whiten(X).U_prime
    found = {tuple(p) for p in cn.arrangement_patterns(U_prime, "exhaustive")}
    brute = {m for m in itertools.product([False, True], repeat=8) if any(m) and realizable_by_lp(U_prime, np.array(m))}
    assert found == brute
    sampled = {tuple(p) for p in cn.arrangement_patterns(U_prime, 5000, seed=1)}
    assert sampled <= found
    again = cn.arrangement_patterns(U_prime, 50, seed=7)
    assert np.array_equal(again, cn.arrangement_patterns(U_prime, 50, seed=7))


def test_exhaustive_enumeration_that_is_too_large_says_what_to_do() -> None:
    U_prime = cn.whiten(np.random.default_rng(0).standard_normal((200, 8))).U_prime
    with pytest.raises(ValueError, match="candidates .*pass patterns=<number of gates"):
        cn.arrangement_patterns(U_prime, "exhaustive")
    with pytest.raises(ValueError, match="ConvexBNRegressor: .*candidates"):
        cn.ConvexBNRegressor(patterns="exhaustive").fit(np.random.default_rng(0).standard_normal((200, 8)), np.ones(200))


# ---------------------------------------------------------------- the exact convex model


@pytest.fixture(scope="module")
def exhaustive_fit():
    X, y = low_rank_problem()
    model = cn.ConvexBNRegressor(beta=0.1, patterns="exhaustive").fit(X, y)
    return X, y, model


def test_convex_optimum_is_below_adam_from_several_seeds(exhaustive_fit) -> None:
    X, y, model = exhaustive_fit
    for seed in range(3):
        _, history = cn.train_nonconvex(X, y, beta=0.1, width=60, steps=1500, lr=2e-2, seed=seed)
        assert model.objective_ <= min(history.objective) * (1 + 1e-7), (seed, model.objective_, min(history.objective))


def test_recovered_module_attains_the_convex_objective(exhaustive_fit) -> None:
    X, y, model = exhaustive_fit
    module = model.to_module()
    value = cn.nonconvex_objective(module, X, y, beta=0.1).item()
    assert rel(value, model.objective_) < 1e-5
    # train mode on the training data = the convex model's fitted values
    fitted = copy.deepcopy(module).train()(torch.from_numpy(X)).detach().numpy().ravel()
    assert np.abs(fitted - model.predict(X)).max() < 1e-6
    # eval mode on new data = predict (the test-time map)
    module.eval()
    X_new = np.random.default_rng(5).standard_normal((7, 2))
    assert np.abs(module(torch.from_numpy(X_new)).detach().numpy().ravel() - model.predict(X_new)).max() < 1e-9
    assert model.n_neurons_ == module[0].out_features <= 2 * len(model.patterns_)


def test_exact_certificate_proves_the_exhaustive_solution(exhaustive_fit) -> None:
    _, _, model = exhaustive_fit
    certificate = model.certify()
    assert certificate.exact and certificate.optimal
    assert certificate.gap is not None and -1e-9 <= certificate.gap <= 1e-6 * model.objective_


def test_closed_form_equals_the_program_over_all_patterns() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((8, 20)), rng.standard_normal(8)
    formula = cn.closed_form(X, y, beta=0.3)
    program = cn.ConvexBNRegressor(beta=0.3, patterns="exhaustive").fit(X, y)
    assert len(program.patterns_) == 2**8 - 1
    assert rel(formula.objective_, program.objective_) < 1e-6
    assert formula.n_neurons_ <= 2
    assert rel(cn.nonconvex_objective(formula.to_module(), X, y, 0.3).item(), formula.objective_) < 1e-9
    assert np.abs(formula.predict(X) - program.predict(X)).max() < 1e-5
    with pytest.raises(ValueError, match="closed_form: applies when n <= d"):
        cn.closed_form(rng.standard_normal((10, 3)), rng.standard_normal(10), 0.3)


def test_too_few_patterns_certify_reports_violation_and_grow_lowers_the_objective() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 5))
    y = np.sin(3 * X[:, 0]) * np.cos(2 * X[:, 1]) + X[:, 2] * X[:, 3]
    beta = 0.05
    sparse = cn.ConvexBNRegressor(beta=beta, patterns=4, random_state=0).fit(X, y)
    _, history = cn.train_nonconvex(X, y, beta=beta, width=40, steps=1500, lr=2e-2, seed=0)
    assert min(history.objective) < sparse.objective_, "data where SGD beats the sampled program"
    certificate = sparse.certify(method="probe", n_probes=500)
    assert not certificate.exact and not certificate.optimal and certificate.violation > 0
    assert len(certificate.violating_patterns) > 0
    grown = cn.ConvexBNRegressor(beta=beta, patterns=4, random_state=0, grow=True, max_rounds=3,
                                   n_probes=500).fit(X, y)
    assert grown.objective_ < sparse.objective_ * 0.9
    assert all(b <= a * (1 + 1e-6) for a, b in zip(grown.objective_history_, grown.objective_history_[1:]))
    assert len(grown.patterns_) > len(sparse.patterns_)


@pytest.mark.parametrize("loss", ["logistic", "hinge", "squared"])
def test_classifier_module_objective_equals_convex_objective(loss: str) -> None:
    X, y_cont = low_rank_problem(n=24, seed=4)
    y = np.where(y_cont > np.median(y_cont), "a", "b")
    model = cn.ConvexBNClassifier(beta=0.1, loss=loss, patterns="exhaustive").fit(X, y)
    module = model.to_module()
    value = cn.nonconvex_objective(module, X, model.encoded_targets(), beta=0.1, loss=loss).item()
    assert rel(value, model.objective_) < 1e-5
    assert set(model.predict(X)) <= {"a", "b"}
    assert model.score(X, y) > 0.8


def test_one_vs_rest_classifier_recovers_one_network_with_class_outputs() -> None:
    rng = np.random.default_rng(6)
    X = rng.standard_normal((24, 2))
    y = np.digitize(X[:, 0] + 0.3 * X[:, 1], [-0.5, 0.5])
    model = cn.ConvexBNClassifier(beta=0.1, loss="logistic", patterns="exhaustive").fit(X, y)
    assert list(model.classes_) == [0, 1, 2] and len(model.solutions_) == 3
    module = model.to_module()
    assert module[3].out_features == 3
    value = cn.nonconvex_objective(module, X, model.encoded_targets(), beta=0.1, loss="logistic").item()
    assert rel(value, model.objective_) < 1e-5
    scores = module(torch.from_numpy(X)).detach().numpy()
    assert np.array_equal(model.classes_[scores.argmax(1)], model.predict(X))


def test_scs_solver_reaches_the_same_optimum() -> None:
    """SCS's solution, certified over its patterns to 1e-6 by its own multipliers (not replaced by the native
    method), lies within 1e-6 of Clarabel's (measured 9e-13; before its solutions were certified this test allowed
    1e-4)."""
    X, y = low_rank_problem(n=20)
    clarabel = cn.ConvexBNRegressor(beta=0.1, patterns=40).fit(X, y)
    scs = cn.ConvexBNRegressor(beta=0.1, patterns=40, solver="scs").fit(X, y)
    report = scs.solver_report_[0]
    assert report["solver"] == "scs" and "replaced" not in report and 0 <= report["relative_gap"] <= 1e-6
    assert rel(scs.objective_, clarabel.objective_) < 1e-6


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_value_error_with_advice() -> None:
    X, y = low_rank_problem(n=10)
    est = cn.ConvexBNRegressor
    bad_X = X.copy()
    bad_X[0, 0] = np.nan
    with pytest.raises(ValueError, match="ConvexBNRegressor: Input X contains NaN"):
        est().fit(bad_X, y)
    with pytest.raises(ValueError, match="ConvexBNRegressor: Input y contains infinity"):
        est().fit(X, np.where(np.arange(10) == 3, np.inf, y))
    with pytest.raises(ValueError, match=r"ConvexBNRegressor: .*inconsistent numbers of samples: \[10, 9\]"):
        est().fit(X, y[:9])
    with pytest.raises(ValueError, match="1 sample"):
        est().fit(X[:1], y[:1])
    for beta in (0.0, -1.0, float("nan"), True, 1j, "0.1"):
        with pytest.raises(ValueError, match="beta must be a finite real number > 0"):
            est(beta=beta).fit(X, y)
    with pytest.raises(ValueError, match="loss must be 'squared'"):
        est(loss="logistic").fit(X, y)
    with pytest.raises(ValueError, match="patterns must be"):
        est(patterns="many").fit(X, y)
    with pytest.raises(NotFittedError):
        est().predict(X)
    with pytest.raises(ValueError, match="at least 2 classes"):
        cn.ConvexBNClassifier().fit(X, np.zeros(10))


def test_solver_failure_raises_solver_error_and_leaves_no_fitted_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cvxpy solver that fails (SCS stopped after 2 iterations) hands the program to the native method, whose
    certified solution is kept, its report saying so; where the native method fails too, SolverError names the
    estimator and both failures, and the estimator keeps its state."""
    X, y = low_rank_problem(n=20)
    replaced = cn.ConvexBNRegressor(beta=0.1, patterns=20, solver="scs", solver_options={"max_iters": 2}).fit(X, y)
    native = cn.ConvexBNRegressor(beta=0.1, patterns=20, solver="torch").fit(X, y)
    report = replaced.solver_report_[0]
    assert report["replaced"] == "scs" and report["solver"] == "torch" and report["relative_gap"] <= 1e-6
    assert abs(replaced.objective_ - native.objective_) <= 1e-9 * native.objective_

    def failing(*args):
        raise cn.SolverError("ConvexBNRegressor: solver='torch' stopped without meeting its tolerances")

    monkeypatch.setattr(native_solver, "solve_native_program", failing)
    model = cn.ConvexBNRegressor(beta=0.1, patterns=20, solver="scs", solver_options={"max_iters": 2})
    with pytest.raises(cn.SolverError, match="ConvexBNRegressor: solver 'scs'.*failed too: ConvexBNRegressor"):
        model.fit(X, y)
    assert not [k for k in vars(model) if k.endswith("_") and not k.startswith("_")]
    fitted = cn.ConvexBNRegressor(beta=0.1, patterns=20).fit(X, y)
    before = fitted.objective_
    fitted.set_params(solver="scs", solver_options={"max_iters": 2})
    with pytest.raises(cn.SolverError):
        fitted.fit(X, 2 * y)
    assert fitted.objective_ == before
