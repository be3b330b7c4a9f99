"""Diagnostics of batch normalization: the large-learning-rate measurements of Bjorck et al.
(2018) and the elimination-singularity statistics of Qiao et al. (2019), with plot helpers."""

from convexnorm.diagnostics.bn_studies import (
    DIVERGENCE_RATIO,
    accuracy,
    activation_statistics,
    channel_singularities,
    gradient_statistics,
    learning_rate_sweep,
    minibatches,
    relative_loss,
)
from convexnorm.diagnostics.spectral_bias import first_step_fitted, spectral_bias
from convexnorm.diagnostics.plots import (
    plot_activation_statistics,
    plot_channel_singularities,
    plot_gradient_statistics,
    plot_learning_rate_sweep,
    plot_relative_loss,
    plot_spectral_bias,
    save_figure,
)

__all__ = ["DIVERGENCE_RATIO", "accuracy", "minibatches", "activation_statistics", "channel_singularities", "first_step_fitted", "gradient_statistics",
           "learning_rate_sweep", "plot_activation_statistics", "plot_channel_singularities",
           "plot_gradient_statistics", "plot_learning_rate_sweep", "plot_relative_loss", "plot_spectral_bias", "relative_loss", "save_figure", "spectral_bias"]
