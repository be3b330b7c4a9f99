"""scikit-learn's own estimator checks (issue 12, part 3). No check is declared as an
expected failure: every one of them applies and passes. Small pattern counts keep the
solves fast (the greedy networks, two programs or more per fit, use the native solver).
Skipped only where the environment lacks pandas or the array API."""

from __future__ import annotations

import warnings

from sklearn.utils.estimator_checks import parametrize_with_checks

import convexnorm as cn

ESTIMATORS = [
    cn.ConvexBNRegressor(beta=1e-2, patterns=20),
    cn.ConvexBNClassifier(beta=1e-2, patterns=20),
    cn.ConvexBNConvRegressor(kernel_size=2, beta=1e-2, patterns=10),
    cn.GreedyConvexBNNetwork(cn.ConvexBNRegressor(beta=1e-2, patterns=20, solver="torch")),
    cn.GreedyConvexBNNetwork(cn.ConvexBNClassifier(beta=1e-2, patterns=20, loss="squared", solver="torch")),
]


@parametrize_with_checks(ESTIMATORS)
def test_scikit_learn_estimator_checks(estimator, check) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cvxpy's accuracy notes on degenerate check data
        check(estimator)
