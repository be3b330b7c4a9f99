"""Batch Normalization Preconditioning (Lange, Helfrich & Ye, JMLR 2022; docs/math.md, section 10).

BNP keeps running estimates of every layer input's per-feature mean mu and variance
sigma^2 and preconditions the gradients of the layer z = W x + b so that a gradient
step on (W, b) is a gradient step on the normalized reparametrization
z = V D^{-1} (x - mu) + c, D = diag(sqrt(sigma^2 + eps)):

    G_W' = (G_W - g_b mu^T) D^{-2},     g_b' = g_b - G_W' mu.

The statistics do not depend on the mini-batch (exponential averages over steps of the
batch means of x and x^2), so BNP trains with batch size 1 and online.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from convexnorm._validation import check_momentum, check_positive
from convexnorm.nn._channels import channel_groups


class _InputStatistics:
    """Running mean and variance of a layer's input features: a prior of mean 0 and variance 1 counted
    as one observation, then averages with rate r = max(momentum, 1/(t+1)) at step t (so a first batch of
    one sample does not give a zero variance) of the batch's mean and second moment, kept as the mixture's
    mean and variance, mu' = (1 - r) mu + r m and var' = (1 - r) var + r v + r (1 - r) (m - mu)^2 (m, v: the
    batch's mean and biased variance). Kept as the second moment, the variance was its difference with
    mu^2, which cancels in float32 where the features' mean is large against their spread (mean 1e4,
    variance 1: 16, 40 and 8 for three features; docs/benchmarks.md, session 27)."""

    def __init__(self) -> None:
        self.steps = 0
        self.mean: Tensor | None = None
        self.var: Tensor | None = None

    def update(self, features: Tensor, momentum: float) -> None:
        """features: (samples, F)."""
        if self.mean is None:
            self.mean, self.var = torch.zeros_like(features[0]), torch.ones_like(features[0])
        self.steps += 1
        rate = max(momentum, 1.0 / (self.steps + 1))
        batch_mean = features.mean(dim=0)
        shift = batch_mean - self.mean
        self.var = ((1 - rate) * self.var + rate * features.var(dim=0, unbiased=False)
                    + rate * (1 - rate) * shift**2)
        self.mean = self.mean + rate * shift


class BNP:
    """A preconditioner hooked onto the ``nn.Linear`` and ``nn.Conv2d`` layers of ``model``
    that wraps a torch ``optimizer`` over the model's parameters:

        bnp = BNP(model, torch.optim.SGD(model.parameters(), lr=0.1))
        loss.backward(); bnp.step(); bnp.zero_grad()

    Forward passes in training mode (with gradients enabled) update each layer's input
    statistics; ``step`` preconditions the layers' gradients in place, then calls
    ``optimizer.step``. With plain SGD a step is exactly gradient descent on the normalized
    reparametrization; other optimizers receive the preconditioned gradients. Conv2d layers
    use statistics per input channel, broadcast over the kernel window (zero padding is
    ignored); layers without bias are scaled only (mu = 0 in the formula).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, momentum: float = 0.1,
                 eps: float = 1e-5, layers: Iterable[nn.Module] | None = None) -> None:
        momentum = check_momentum(momentum, "BNP", allow_zero=False)
        if momentum is None:
            raise ValueError("BNP: momentum must be a number in (0, 1], got None")
        eps = check_positive(eps, "BNP", "eps")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"BNP: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.model, self.optimizer, self.momentum, self.eps = model, optimizer, momentum, eps
        chosen = list(layers) if layers is not None else [
            m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        for layer in chosen:
            if not isinstance(layer, (nn.Linear, nn.Conv2d)):
                raise ValueError(f"BNP: only nn.Linear and nn.Conv2d layers are preconditioned, got {type(layer).__name__}")
            if isinstance(layer, nn.Conv2d) and layer.groups != 1:
                raise ValueError(f"BNP: grouped convolutions (groups={layer.groups}) are not supported")
        if not chosen:
            raise ValueError("BNP: the model has no nn.Linear or nn.Conv2d layer")
        self.statistics: dict[nn.Module, _InputStatistics] = {layer: _InputStatistics() for layer in chosen}
        self._hooks = [layer.register_forward_pre_hook(self._record) for layer in chosen]

    def _record(self, layer: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if not (layer.training and torch.is_grad_enabled()):
            return
        x = inputs[0].detach()
        if isinstance(layer, nn.Conv2d):
            features = channel_groups(x).T
        else:
            features = x.reshape(-1, x.shape[-1])
        if not torch.isfinite(features).all():
            raise ValueError(f"BNP: input of {type(layer).__name__} contains NaN or Inf")
        self.statistics[layer].update(features, self.momentum)

    def mean_and_scale(self, layer: nn.Module) -> tuple[Tensor, Tensor]:
        """(mu, sigma^2 + eps) of the layer's input features (per input channel for Conv2d)."""
        stats = self.statistics[layer]
        if stats.mean is None:
            raise ValueError(f"BNP: no training-mode forward pass has reached {type(layer).__name__} yet")
        return stats.mean, stats.var + self.eps

    @torch.no_grad()
    def precondition(self) -> None:
        """G_W' = (G_W - g_b mu^T) D^{-2}, g_b' = g_b - G_W' mu, in place on every layer."""
        for layer in self.statistics:
            if layer.weight.grad is None or self.statistics[layer].mean is None:
                continue
            mean, scale = self.mean_and_scale(layer)
            grad_w = layer.weight.grad
            shape = (1, -1) + (1,) * (grad_w.dim() - 2)  # input features on dim 1
            mean, scale = mean.to(grad_w).reshape(shape), scale.to(grad_w).reshape(shape)
            has_bias = layer.bias is not None and layer.bias.grad is not None
            if has_bias:
                grad_b = layer.bias.grad
                grad_w.sub_(grad_b.reshape((-1,) + (1,) * (grad_w.dim() - 1)) * mean)
            grad_w.div_(scale)
            if has_bias:
                grad_b.sub_((grad_w * mean).reshape(grad_w.shape[0], -1).sum(dim=1))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        self.precondition()
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "statistics": [(s.steps, s.mean, s.var) for s in self.statistics.values()]}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict``; the whole state is checked before anything changes."""
        if not isinstance(state, dict) or set(state) != {"optimizer", "statistics"}:
            raise ValueError("BNP: state must be a dict with keys 'optimizer' and 'statistics' (from state_dict)")
        statistics = state["statistics"]
        if not isinstance(statistics, (list, tuple)) or len(statistics) != len(self.statistics):
            count = len(statistics) if isinstance(statistics, (list, tuple)) else type(statistics).__name__
            raise ValueError(f"BNP: state has statistics for {count} layers, this preconditioner has "
                             f"{len(self.statistics)}")
        for index, entry in enumerate(statistics):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise ValueError(f"BNP: statistics of layer {index} must be (steps, mean, var)")
            steps, mean, var = entry
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
                raise ValueError(f"BNP: statistics of layer {index}: steps must be an integer >= 0, got {steps!r}")
            if (mean is None) != (var is None) or (mean is None) != (steps == 0):
                raise ValueError(f"BNP: statistics of layer {index}: mean and var are set exactly when steps > 0")
            if mean is not None:
                for name, value in (("mean", mean), ("var", var)):
                    if not isinstance(value, Tensor) or value.dim() != 1 or not torch.isfinite(value).all():
                        raise ValueError(f"BNP: statistics of layer {index}: {name} must be a finite 1D tensor")
                if mean.shape != var.shape:
                    raise ValueError(f"BNP: statistics of layer {index}: mean and var differ in shape")
                if bool((var < 0).any()):
                    raise ValueError(f"BNP: statistics of layer {index}: var must be >= 0")
        optimizer_state = self.optimizer.state_dict()
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, TypeError, ValueError) as error:
            self.optimizer.load_state_dict(optimizer_state)
            raise ValueError(f"BNP: the optimizer state does not fit the wrapped optimizer ({error})") from error
        for stats, (steps, mean, var) in zip(self.statistics.values(), statistics):
            stats.steps, stats.mean, stats.var = steps, mean, var

    def remove(self) -> None:
        """Detach the statistics hooks from the model."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
