"""Greedy layer-wise convex training of a deep BN-ReLU MLP (issue #7, docs/math.md section 8)."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
import torch

import convexnorm as cn


def data(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]


def test_deep_module_is_the_greedy_blocks_and_its_last_objective_is_the_convex_one():
    X, y = data()
    beta = 0.05
    model = cn.GreedyConvexBNNetwork(cn.ConvexBNRegressor(beta=beta, patterns=40), n_blocks=3).fit(X, y)
    assert len(model.blocks_) == 3 and len(model.hidden_) == 2
    net = model.to_module()
    assert len(net) == 3 * 3 + 1 and [m.out_features for m in net if isinstance(m, torch.nn.Linear)][:2] == model.widths_[:2]
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(X)).numpy().ravel(), model.predict(X), atol=1e-9)
        X_new = data(n=7, seed=4)[0]
        np.testing.assert_allclose(net(torch.from_numpy(X_new)).numpy().ravel(), model.predict(X_new), atol=1e-9)
    # the last block with the lower layers fixed: the paper's objective of net[-4:] on H == the convex optimum
    H = model.transform(X)
    value = cn.nonconvex_objective(net[-4:], H, y, beta).item()
    assert abs(value - model.objective_) <= 1e-5 * model.objective_
    # and the whole network in training mode on the training data gives the same fit
    with torch.no_grad():
        f_train = net.train()(torch.from_numpy(X)).numpy().ravel()
    np.testing.assert_allclose(f_train, model.predict(X), atol=1e-8)


def test_one_block_is_the_two_layer_model_and_classifier_blocks():
    X, y = data()
    single = cn.GreedyConvexBNNetwork(cn.ConvexBNRegressor(beta=0.05, patterns=40), n_blocks=1).fit(X, y)
    plain = cn.ConvexBNRegressor(beta=0.05, patterns=40).fit(X, y)
    assert single.objective_ == pytest.approx(plain.objective_, rel=1e-12)
    labels = np.digitize(y, [-0.5, 0.5])  # three classes
    clf = cn.GreedyConvexBNNetwork(cn.ConvexBNClassifier(beta=0.05, patterns=20, loss="squared"), n_blocks=2)
    clf.fit(X, labels)
    assert clf.score(X, labels) >= 0.9
    out = clf.to_module()(torch.from_numpy(X))
    assert out.shape == (40, 3)
    assert np.array_equal(clf.blocks_[-1].classes_[out.argmax(1).numpy()], clf.predict(X))
    with pytest.raises(ValueError, match="n_blocks"):
        cn.GreedyConvexBNNetwork(n_blocks=0).fit(X, y)
    with pytest.raises(NotFittedError):
        cn.GreedyConvexBNNetwork().predict(X)


def test_the_next_block_does_not_see_the_solvers_residue():
    """Clarabel's solution of the first block keeps 8 groups of 1.2e-9 of the largest (its residue; the
    polished solver='torch' has none below 5e-3) that the second block's whitening would scale to unit
    variance: before the hidden layers kept only neurons above NEURON_RTOL, the second blocks' objectives
    were 20% apart between the two solvers and the predictions 9e-3 (in units of y)."""
    rng = np.random.RandomState(0)
    X = rng.randn(80, 5)
    y = 1e-3 * (np.sin(X @ rng.randn(5)) + 0.1 * rng.randn(80))
    fits = {solver: cn.GreedyConvexBNNetwork(cn.ConvexBNRegressor(beta=1e-5, patterns=30, solver=solver),
                                             n_blocks=2).fit(X, y)
            for solver in ("clarabel", "torch")}
    clarabel, native = fits["clarabel"], fits["torch"]
    assert clarabel.widths_[0] == native.widths_[0] < clarabel.blocks_[0].n_neurons_
    assert clarabel.objectives_[0] == pytest.approx(native.objectives_[0], rel=1e-8)
    assert clarabel.objectives_[1] == pytest.approx(native.objectives_[1], rel=1e-5)
    np.testing.assert_allclose(clarabel.predict(X), native.predict(X), rtol=0, atol=1e-6 * np.abs(y).max())
