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
