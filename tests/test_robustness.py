"""No silently wrong numbers (issue 12, part 2): bad input gets a specific error naming the
component and changes no state; degenerate but valid input gets the right answer."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import convexnorm as cn
from convexnorm.optim import BNP


def issue_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 2))
    return X, np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2


# ---------------------------------------------------------------- estimators


def test_residue_is_not_counted_as_neurons_and_the_zero_network_has_width_zero() -> None:
    """beta = 1e6 puts the optimum at f = 0; Clarabel's groups are ~1e-18 of residue."""
    X, y = issue_problem()
    for solver in ("clarabel", "torch"):
        model = cn.ConvexBNRegressor(beta=1e6, patterns=20, solver=solver).fit(X, y)
        assert model.n_neurons_ == 0 and model.objective_ == pytest.approx(0.5 * y @ y, rel=1e-12)
        net = model.to_module()
        assert net[0].out_features == 0 and net[-1].in_features == 0
        assert cn.nonconvex_objective(net, X, y, beta=1e6).item() == pytest.approx(model.objective_, rel=1e-12)
        np.testing.assert_array_equal(model.predict(X), np.zeros(len(y)))
        assert model.certify().optimal is True


@pytest.mark.parametrize("scales", [[1e6, 1e-6], [1e-8, 1e8], [1e8, 1e8], [1e-8, 1e-8], [1.0, 1e-7]])
def test_the_fit_does_not_depend_on_the_units_of_the_features(scales) -> None:
    X, y = issue_problem()
    for patterns in ("exhaustive", 20):
        reference = cn.ConvexBNRegressor(beta=0.1, patterns=patterns).fit(X, y)
        scaled = cn.ConvexBNRegressor(beta=0.1, patterns=patterns).fit(X * np.array(scales), y)
        assert scaled.whitening_.rank == 2
        assert scaled.objective_ == pytest.approx(reference.objective_, rel=1e-8)
        np.testing.assert_allclose(scaled.predict(X[:5] * np.array(scales)), reference.predict(X[:5]), atol=1e-7)


def test_whiten_says_when_it_drops_a_direction_that_is_not_rounding_noise(caplog) -> None:
    X, _ = issue_problem()
    with caplog.at_level(logging.WARNING, logger="convexnorm"):
        dropped = cn.whiten(X * np.array([1e6, 1e-6]))
    assert dropped.rank == 1 and "dropped 1 direction" in caplog.text
    assert cn.whiten(X * np.array([1e6, 1e-6]), scale_features=True).rank == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="convexnorm"):
        cn.whiten(np.hstack([X, X[:, :1]]))  # an exactly repeated column: rounding noise, no warning
    assert caplog.text == ""


def test_a_failed_fit_keeps_the_previous_fit() -> None:
    X, y = issue_problem()
    model = cn.ConvexBNRegressor(beta=0.1, patterns=20).fit(X, y)
    before = dict(vars(model))
    bad = X.copy()
    bad[0, 0] = np.nan
    for data, target in ((bad, y), (np.hstack([X, X]), y[:5]), (X, np.full(20, np.inf))):
        with pytest.raises(ValueError, match="ConvexBNRegressor"):
            model.fit(data, target)
        assert model.n_features_in_ == 2 and model.objective_ == before["objective_"]
        assert set(vars(model)) == set(before)


@pytest.mark.parametrize("parameters, message", [
    ({"beta": True}, "beta must be a finite real number > 0"),
    ({"beta": 1 + 1j}, "beta must be a finite real number > 0"),
    ({"beta": float("inf")}, "beta must be a finite real number > 0"),
    ({"n_probes": 0}, "n_probes must be an integer >= 1"),
    ({"max_rounds": -1}, "max_rounds must be an integer >= 0"),
    ({"max_new_patterns": 2.5}, "max_new_patterns must be an integer >= 1"),
    ({"grow": "yes"}, "grow must be True or False"),
    ({"solver_options": [1]}, "solver_options must be None or a dict"),
    ({"solver": "torch", "solver_options": {"device": "cuda:7" if torch.cuda.is_available() else "cuda"}},
     "device|CUDA"),
    ({"solver": "torch", "solver_options": {"dtype": torch.float32}}, "does not take option"),
    ({"solver": "torch", "solver_options": {"tol": -1.0}}, "tol must be a finite real number > 0"),
    ({"solver": "torch", "solver_options": {"correctors": -1}}, "correctors must be an integer >= 0"),
    ({"solver": "torch", "solver_options": {"dense_curvature": 0.0}}, r"dense_curvature must be a real number > 0"),
    ({"solver": "torch", "solver_options": {"dense_curvature": float("nan")}}, "dense_curvature must be a real"),
])
def test_estimator_parameters_are_validated_where_they_enter(parameters, message) -> None:
    X, y = issue_problem()
    with pytest.raises(ValueError, match=message):
        cn.ConvexBNRegressor(patterns=5, **parameters).fit(X, y)


def test_classifier_refuses_regression_targets_and_one_class() -> None:
    X, y = issue_problem()
    with pytest.raises(ValueError, match="Unknown label type"):
        cn.ConvexBNClassifier(patterns=5).fit(X, y)
    with pytest.raises(ValueError, match="1 class"):
        cn.ConvexBNClassifier(patterns=5).fit(X, np.ones(20))


def test_whiten_and_arrangement_patterns_refuse_nan() -> None:
    X, _ = issue_problem()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="whiten: X contains NaN"):
        cn.whiten(X)
    U_prime = cn.whiten(issue_problem()[0]).U_prime
    U_prime[0, 0] = np.nan
    with pytest.raises(ValueError, match="arrangement_patterns: U_prime contains NaN"):
        cn.arrangement_patterns(U_prime, 10)


# ---------------------------------------------------------------- the non-convex network


def test_nonconvex_objective_and_training_check_their_data() -> None:
    X, y = issue_problem()
    net = cn.bn_relu_network(2, 4)
    with pytest.raises(ValueError, match=r"nonconvex_objective: y must have shape \(20,\)"):
        cn.nonconvex_objective(net, X, y[:19], beta=0.1)
    with pytest.raises(ValueError, match="nonconvex_objective: y contains NaN"):
        cn.nonconvex_objective(net, X, np.where(np.arange(20) == 2, np.nan, y), beta=0.1)
    with pytest.raises(ValueError, match="zero variance"):
        cn.nonconvex_objective(net, np.ones((20, 2)), y, beta=0.1)
    with pytest.raises(ValueError, match="train_nonconvex: y must have shape"):
        cn.train_nonconvex(X, y[:10], beta=0.1, width=4, steps=2)
    with pytest.raises(ValueError, match="lr must be a finite real number > 0"):
        cn.train_nonconvex(X, y, beta=0.1, width=4, steps=2, lr=-1.0)
    with pytest.raises(ValueError, match="training diverged; lower lr"):
        cn.train_nonconvex(X, y, beta=0.1, width=4, steps=50, lr=1e12, optimizer="sgd")


# ---------------------------------------------------------------- layers, block, BNP, diagnostics


@pytest.mark.parametrize("make, message", [
    (lambda: cn.nn.BatchNorm1d(3, eps=-1.0), "eps must be a finite real number >= 0"),
    (lambda: cn.nn.BatchNorm1d(3, eps=float("nan")), "eps must be a finite real number >= 0"),
    (lambda: cn.nn.BatchNorm1d(3, momentum=1.5), r"momentum must be None or a number in \[0, 1\]"),
    (lambda: cn.nn.BatchNorm1d(3, momentum=True), "momentum must be None"),
    (lambda: cn.nn.BatchNorm1d(-1), "num_features must be an integer >= 0"),
    (lambda: cn.nn.BatchNorm1d(2.5), "num_features must be an integer >= 0"),
    (lambda: cn.nn.BatchNorm1d(3, device="cuda:9" if torch.cuda.is_available() else "cuda"), "CUDA|device"),
    (lambda: cn.nn.BatchNorm1d(3, dtype=torch.int32), "dtype must be a floating torch dtype"),
    (lambda: cn.nn.LayerNorm((3, 0)), "normalized_shape must be an integer >= 1"),
    (lambda: cn.nn.GroupNorm(0, 4), "num_groups must be an integer >= 1"),
    (lambda: cn.nn.EstimatedBatchNorm1d(3, momentum=0.0), r"momentum must be None or a number in \(0, 1\]"),
    (lambda: cn.nn.BatchChannelNorm2d(4, num_groups=2, eps=-1.0), "eps must be"),
    (lambda: cn.nn.WSConv2d(1, 4, 1), "single weight per output channel"),
    (lambda: cn.nn.WSConv2d(2, 4, 3, weight_eps=-1e-5), "eps must be a finite real number >= 0"),
    (lambda: cn.nn.ConvexBNReLU(3, beta=float("nan")), "ConvexBNReLU: beta must be"),
    (lambda: cn.nn.ConvexBNReLU(3, n_patterns=0), "ConvexBNReLU: n_patterns must be"),
    (lambda: BNP(torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1), momentum=0),
     r"BNP: momentum must be"),
])
def test_layer_arguments_are_validated(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex128])
def test_layers_and_block_refuse_non_floating_input(dtype) -> None:
    x = torch.ones(4, 3).to(dtype)
    for module in (cn.nn.BatchNorm1d(3, solver="torch"), cn.nn.LayerNorm(3, solver="torch"),
                   cn.nn.GroupNorm(1, 3, solver="torch"), cn.nn.EstimatedBatchNorm1d(3)):
        with pytest.raises(ValueError, match=f"{type(module).__name__}: input must be a floating-point tensor"):
            module(x)
    block = cn.nn.ConvexBNReLU(3, beta=0.1, n_patterns=4)
    with pytest.raises(ValueError, match="ConvexBNReLU: H must be a floating-point tensor"):
        block(x, torch.ones(4))
    with pytest.raises(ValueError, match="ConvexBNReLU: y must be a floating-point tensor"):
        block(torch.randn(4, 3, dtype=torch.float64), torch.ones(4).to(dtype))


def test_groups_too_large_for_the_program_backend_are_refused_up_front() -> None:
    layer = cn.nn.BatchNorm1d(1)
    with pytest.raises(ValueError, match="too large for solver='cvxpylayers'.*solver='torch'"):
        layer(torch.randn(10_000, 1, dtype=torch.float64))
    assert int(layer.num_batches_tracked) == 0  # no state changed


def test_bnp_load_state_dict_checks_everything_before_changing_anything() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    bnp = BNP(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    for _ in range(2):
        bnp.zero_grad()
        model(torch.randn(8, 3)).pow(2).mean().backward()
        bnp.step()
    saved = bnp.state_dict()
    buffers = [s["momentum_buffer"].clone() for s in bnp.optimizer.state.values()]
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    fresh = BNP(other, torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9))
    broken = {"optimizer": fresh.state_dict()["optimizer"], "statistics": saved["statistics"][:1]}
    with pytest.raises(ValueError, match="BNP: state has statistics for 1 layers"):
        bnp.load_state_dict(broken)
    bad_values = {"optimizer": saved["optimizer"],
                  "statistics": [(s, m * float("nan") if m is not None else m, q) for s, m, q in saved["statistics"]]}
    with pytest.raises(ValueError, match="mean must be a finite 1D tensor"):
        bnp.load_state_dict(bad_values)
    for before, state in zip(buffers, bnp.optimizer.state.values()):
        assert torch.equal(before, state["momentum_buffer"])
    bnp.load_state_dict(saved)  # a valid state still loads


def test_diagnostics_refuse_empty_data() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    empty = torch.empty(0, 3)
    with pytest.raises(ValueError, match="activation_statistics: inputs are empty"):
        cn.diagnostics.activation_statistics(model, empty)
    with pytest.raises(ValueError, match="accuracy: inputs are empty"):
        cn.diagnostics.accuracy(model, empty, torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="relative_loss: need one target per input"):
        cn.diagnostics.relative_loss(model, torch.randn(4, 3), torch.zeros(3, dtype=torch.long), [0.1])


def _catalogue():
    X, y = issue_problem()
    H, t = torch.from_numpy(X), torch.from_numpy(y)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    labels = torch.zeros(4, dtype=torch.long)
    return [
        (lambda: cn.ConvexBNRegressor(patterns=5, random_state="abc").fit(X, y), "ConvexBNRegressor: random_state"),
        (lambda: cn.ConvexBNRegressor(patterns=5).fit(X, y).certify(method="probe", random_state="x"),
         "ConvexBNRegressor.certify: random_state"),
        (lambda: cn.nn.ConvexBNReLU(2, n_patterns=3).freeze(H, t, solver="foo"), "ConvexBNReLU.freeze: solver must be"),
        (lambda: cn.nn.ConvexBNReLU(2, seed="x"), "ConvexBNReLU: seed must be"),
        (lambda: cn.nn.BatchNorm1d(2, solver_options=[1, 2]), "BatchNorm1d: solver_options must be"),
        (lambda: cn.diagnostics.plot_relative_loss({}, "unused.png"), "plot_relative_loss: expected a nonempty dict"),
        (lambda: cn.diagnostics.relative_loss(model, torch.randn(4, 2), labels, [-1.0]), "relative_loss: each of"),
        (lambda: cn.diagnostics.relative_loss(model, torch.randn(4, 2), labels, []), "relative_loss: step_sizes"),
        (lambda: cn.diagnostics.learning_rate_sweep(lambda: model, torch.randn(4, 2), labels, [0.1], epochs=0),
         "learning_rate_sweep: epochs"),
        (lambda: cn.diagnostics.spectral_bias(X, y, steps=5, record_every=0), "spectral_bias: record_every"),
        (lambda: cn.recover_network(cn.whiten(X), np.ones((2, 5)), np.ones(2)), "recover_network: neurons must be"),
        (lambda: cn.ConvexBNRegressor(patterns=0).fit(X, y), "ConvexBNRegressor: .*patterns must be"),
        (lambda: cn.whiten(np.ones((4, 3))), "whiten: all samples are identical"),
    ]


@pytest.mark.parametrize("index", range(13))
def test_catalogue_of_bad_arguments_gets_named_value_errors(index) -> None:
    make, message = _catalogue()[index]
    with pytest.raises(ValueError, match=message):
        make()
