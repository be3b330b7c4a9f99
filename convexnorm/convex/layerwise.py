"""Greedy layer-wise convex training of a deep BN-ReLU MLP (spec: convex-bn.md section 8).

With the lower layers fixed, training the last BN-ReLU-linear block is the two-layer
convex program on the activations of the layer below. Applied greedily: block 1 is the
convex model of X, its hidden layer (Linear, BatchNorm1d, ReLU) is kept and maps X to
H_1; block 2 is the convex model of H_1, and so on; the last block keeps its output
layer. The result is one ordinary torch network

    Linear -> BN -> ReLU -> ... -> Linear -> BN -> ReLU -> Linear

whose last block is globally optimal (over its patterns) given the blocks below.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone

from convexnorm.convex._validation import check_matrix
from convexnorm.convex.estimators import ConvexBNClassifier, ConvexBNRegressor


class GreedyConvexBNNetwork(BaseEstimator):
    """``n_blocks`` convex BN-ReLU blocks, each a clone of ``estimator`` (a
    ``ConvexBNRegressor`` or ``ConvexBNClassifier``, seed advanced per block) fitted on the
    previous block's activations with the same targets.

    Fitted: ``blocks_`` (the fitted estimators), ``hidden_`` (the kept hidden layers, eval
    mode), ``objectives_`` (each block's convex objective), ``objective_`` (the last one),
    ``widths_`` (neurons per block).
    """

    def __init__(self, estimator: ConvexBNRegressor | ConvexBNClassifier | None = None, n_blocks: int = 2) -> None:
        self.estimator = estimator
        self.n_blocks = n_blocks

    def fit(self, X, y, **fit_params) -> "GreedyConvexBNNetwork":
        owner = "GreedyConvexBNNetwork"
        if not isinstance(self.n_blocks, int) or self.n_blocks < 1:
            raise ValueError(f"{owner}: n_blocks must be a positive integer, got {self.n_blocks!r}")
        template = self.estimator if self.estimator is not None else ConvexBNRegressor()
        if not isinstance(template, (ConvexBNRegressor, ConvexBNClassifier)):
            raise ValueError(f"{owner}: estimator must be a ConvexBNRegressor or ConvexBNClassifier")
        features = check_matrix(X, owner)
        blocks, hidden = [], []
        for index in range(self.n_blocks):
            block = clone(template).set_params(seed=template.seed + index).fit(features, y, **fit_params)
            blocks.append(block)
            if index + 1 < self.n_blocks:
                layer = block.to_module()[:3]
                hidden.append(layer)
                with torch.no_grad():
                    features = layer(torch.from_numpy(features)).numpy()
        self.blocks_, self.hidden_ = blocks, hidden
        self.objectives_ = [b.objective_ for b in blocks]
        self.objective_ = self.objectives_[-1]
        self.widths_ = [b.n_neurons_ for b in blocks]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "blocks_"):
            raise ValueError("GreedyConvexBNNetwork: call fit before using the model")

    def transform(self, X) -> np.ndarray:
        """The last block's input: X through the kept hidden layers (eval mode)."""
        self._check_fitted()
        features = check_matrix(X, "GreedyConvexBNNetwork.transform", columns=self.blocks_[0].n_features_in_)
        with torch.no_grad():
            for layer in self.hidden_:
                features = layer(torch.from_numpy(features)).numpy()
        return features

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return self.blocks_[-1].predict(self.transform(X))

    def score(self, X, y) -> float:
        """The last block's score (R^2 or accuracy) on the transformed X."""
        self._check_fitted()
        return self.blocks_[-1].score(self.transform(X), y)

    def to_module(self) -> torch.nn.Sequential:
        """The whole network as one ``torch.nn.Sequential`` (eval mode)."""
        self._check_fitted()
        layers = [module for layer in self.hidden_ for module in layer]
        return torch.nn.Sequential(*layers, *self.blocks_[-1].to_module()).eval()
