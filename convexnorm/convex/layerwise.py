"""Greedy layer-wise convex training of a deep BN-ReLU MLP (docs/math.md, section 8).

With the lower layers fixed, training the last BN-ReLU-linear block is the two-layer
convex program on the activations of the layer below. Applied greedily: block 1 is the
convex model of X, its hidden layer (Linear, BatchNorm1d, ReLU) is kept and maps X to
H_1; block 2 is the convex model of H_1, and so on; the last block keeps its output
layer. The result is one ordinary torch network

    Linear -> BN -> ReLU -> ... -> Linear -> BN -> ReLU -> Linear

whose last block is globally optimal (over its patterns) given the blocks below.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import TransformerTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from convexnorm._validation import check_count, validated
from convexnorm.convex.estimators import ConvexBNClassifier, ConvexBNRegressor, unchanged_on_failure
from convexnorm.convex.network import recover_network
from convexnorm.convex.solve import NEURON_RTOL


def _hidden_layer(block: ConvexBNRegressor | ConvexBNClassifier) -> torch.nn.Sequential:
    """Linear, BatchNorm1d, ReLU of ``block``'s neurons above NEURON_RTOL of its largest norm (the
    estimators' test of an active group). The next block whitens its input, which scales every unit to
    unit variance: an interior-point solver's residue (Clarabel kept groups of 1e-9 of the largest that
    still carry its last digits) would enter the next program as features of full size (measured: the
    second block's objective 20% apart between Clarabel and the polished solver='torch' at 80x5, 30
    patterns)."""
    neurons, signs = block._output_signs()
    norms = np.linalg.norm(neurons, axis=1)
    keep = norms > NEURON_RTOL * norms.max(initial=0.0)
    return recover_network(block.whitening_, neurons[keep], signs[keep])[:3]


class GreedyConvexBNNetwork(TransformerMixin, BaseEstimator):
    """``n_blocks`` convex BN-ReLU blocks, each a clone of ``estimator`` (a
    ``ConvexBNRegressor``, the default, or a ``ConvexBNClassifier``; an integer random_state
    of the estimator is advanced by one per block) fitted on the previous block's activations
    with the same targets. A regressor or a classifier as its estimator is.

    Fitted: ``blocks_`` (the fitted estimators), ``hidden_`` (the kept hidden layers, eval
    mode: a block's neurons of at least NEURON_RTOL of its largest, ``_hidden_layer``),
    ``objectives_`` (each block's convex objective), ``objective_`` (the last one),
    ``widths_`` (units per block of ``to_module``), ``classes_`` for a classifier.
    """

    def __init__(self, estimator: ConvexBNRegressor | ConvexBNClassifier | None = None, n_blocks: int = 2) -> None:
        self.estimator = estimator
        self.n_blocks = n_blocks

    def _template(self) -> ConvexBNRegressor | ConvexBNClassifier:
        template = self.estimator if self.estimator is not None else ConvexBNRegressor()
        if not isinstance(template, (ConvexBNRegressor, ConvexBNClassifier)):
            raise ValueError("GreedyConvexBNNetwork: estimator must be a ConvexBNRegressor or ConvexBNClassifier, "
                             f"got {template!r}")
        return template

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            inner = self._template().__sklearn_tags__()
        except ValueError:
            return tags
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags, tags.regressor_tags = inner.classifier_tags, inner.regressor_tags
        tags.target_tags, tags.input_tags = inner.target_tags, inner.input_tags
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64"])  # transform: the last block's input
        return tags

    def fit(self, X, y) -> "GreedyConvexBNNetwork":
        owner = "GreedyConvexBNNetwork"
        with unchanged_on_failure(self):
            check_count(self.n_blocks, owner, "n_blocks")
            template = self._template()
            classifier = isinstance(template, ConvexBNClassifier)
            features, y = validated(self, X, y, dtype=np.float64, ensure_min_samples=2, y_numeric=not classifier)
            state = template.random_state
            blocks, hidden = [], []
            for index in range(self.n_blocks):
                # an int seed advances per block; a RandomState advances by itself; None stays None
                seed = state + index if isinstance(state, numbers.Integral) else state
                block = clone(template).set_params(random_state=seed).fit(features, y)
                blocks.append(block)
                if index + 1 < self.n_blocks:
                    layer = _hidden_layer(block)
                    hidden.append(layer)
                    with torch.no_grad():
                        features = layer(torch.from_numpy(features)).numpy()
            self.blocks_, self.hidden_ = blocks, hidden
            self.objectives_ = [b.objective_ for b in blocks]
            self.objective_ = self.objectives_[-1]
            self.widths_ = [layer[0].out_features for layer in hidden] + [blocks[-1].n_neurons_]
            if classifier:
                self.classes_ = blocks[-1].classes_
        return self

    def transform(self, X) -> np.ndarray:
        """The last block's input: X through the kept hidden layers (eval mode)."""
        check_is_fitted(self)
        features = validated(self, X, reset=False, dtype=np.float64)
        with torch.no_grad():
            for layer in self.hidden_:
                features = layer(torch.from_numpy(features)).numpy()
        return features

    def predict(self, X) -> np.ndarray:
        features = self.transform(X)
        return self.blocks_[-1].predict(features)

    @available_if(lambda self: isinstance(self._template(), ConvexBNClassifier))
    def decision_function(self, X) -> np.ndarray:
        """The last block's decision function (only with a ConvexBNClassifier estimator)."""
        features = self.transform(X)
        return self.blocks_[-1].decision_function(features)

    def score(self, X, y) -> float:
        """The last block's score (R^2 or accuracy) on the transformed X."""
        features = self.transform(X)
        return self.blocks_[-1].score(features, y)

    def to_module(self) -> torch.nn.Sequential:
        """The whole network as one ``torch.nn.Sequential`` (eval mode)."""
        check_is_fitted(self)
        layers = [module for layer in self.hidden_ for module in layer]
        return torch.nn.Sequential(*layers, *self.blocks_[-1].to_module()).eval()
