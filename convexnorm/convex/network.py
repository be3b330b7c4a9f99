"""The non-convex two-layer BN-ReLU network: recovery, objective and SGD baseline.

docs/math.md, sections 2 and 3. The network is
``Sequential(Linear(d, m, bias=False), BatchNorm1d(m, eps=0), ReLU(), Linear(m, C, bias=False))``
with convexnorm's BatchNorm1d (torch refuses eps=0 in training). The paper's
BN_{g,a}(h) = g (h - mean h) / ||h - mean h|| + a / sqrt(n) is torch's BN with
weight = g / sqrt(n) and bias = a / sqrt(n).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from convexnorm._validation import check_beta, check_count, check_matrix, check_positive
from convexnorm.convex.whitening import Whitening
from convexnorm.losses import check_loss, torch_loss
from convexnorm.nn._channels import channel_affine, channel_view
from convexnorm.nn.normalization import BatchNorm1d, BatchNorm2d

logger = logging.getLogger("convexnorm")


def bn_relu_network(d: int, width: int, outputs: int = 1) -> nn.Sequential:
    """The two-layer BN-ReLU network of the paper, float64 (width 0: the zero network)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors", category=UserWarning)
        return _bn_relu_network(d, width, outputs)


def _bn_relu_network(d: int, width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d, width, bias=False),
        BatchNorm1d(width, eps=0.0, solver="torch"),
        nn.ReLU(),
        nn.Linear(width, outputs, bias=False),
    ).double()


class SumPool2d(nn.Module):
    """Sum over the spatial positions: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(2, 3))


def bn_relu_conv_network(in_channels: int, width: int, kernel_size: int | tuple[int, int], stride: int = 1,
                         outputs: int = 1) -> nn.Sequential:
    """Conv2d (no bias) -> BatchNorm2d (statistics over batch and positions) -> ReLU -> sum
    pooling -> Linear: the convolutional network of docs/math.md section 8, float64."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors", category=UserWarning)
        return _bn_relu_conv_network(in_channels, width, kernel_size, stride, outputs)


def _bn_relu_conv_network(in_channels: int, width: int, kernel_size: int | tuple[int, int], stride: int,
                          outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size, stride=stride, bias=False),
        BatchNorm2d(width, eps=0.0, solver="torch"),
        nn.ReLU(),
        SumPool2d(),
        nn.Linear(width, outputs, bias=False),
    ).double()


def _parts(module: nn.Module, owner: str) -> tuple[nn.Module, nn.Module, nn.Linear]:
    """(first layer, BN, output layer) of a network of ``bn_relu_network`` or
    ``bn_relu_conv_network`` form."""
    layers = list(module.children()) if isinstance(module, nn.Sequential) else []
    dense = (len(layers) == 4 and isinstance(layers[0], nn.Linear)
             and isinstance(layers[1], (nn.BatchNorm1d, BatchNorm1d)))
    conv = (len(layers) == 5 and isinstance(layers[0], nn.Conv2d)
            and isinstance(layers[1], (nn.BatchNorm2d, BatchNorm2d)) and isinstance(layers[3], SumPool2d))
    if not (dense or conv) or not isinstance(layers[2], nn.ReLU) or not isinstance(layers[-1], nn.Linear):
        raise ValueError(f"{owner}: expected Sequential(Linear, BatchNorm1d, ReLU, Linear) or "
                         f"Sequential(Conv2d, BatchNorm2d, ReLU, SumPool2d, Linear), got {module}")
    if layers[1].weight is None:
        raise ValueError(f"{owner}: the BatchNorm layer must be affine (its weight and bias are penalized)")
    return layers[0], layers[1], layers[-1]


def _network_input(first: nn.Module, X, owner: str) -> torch.Tensor:
    """X as a tensor of the first layer's dtype: (n, d) for Linear, (N, C, H, W) for Conv2d."""
    if isinstance(first, nn.Conv2d):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 4 or X.shape[1] != first.in_channels or not np.isfinite(X).all():
            raise ValueError(f"{owner}: expected finite images (N, {first.in_channels}, H, W), got shape {X.shape}")
        return torch.as_tensor(X, dtype=first.weight.dtype)
    return torch.as_tensor(check_matrix(X, owner, columns=first.in_features), dtype=first.weight.dtype)


def _channel_moments(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Biased variance and mean per channel over the batch (and positions), and their count."""
    dims = (0, 2, 3) if h.dim() == 4 else (0,)
    count = h.shape[0] * (h.shape[2] * h.shape[3] if h.dim() == 4 else 1)
    if h.shape[1] == 0:  # the zero network
        return h.new_zeros(0), h.new_zeros(0), count
    var, mean = torch.var_mean(h, dim=dims, correction=0)
    return var, mean, count


def set_running_statistics(module: nn.Sequential, X: torch.Tensor) -> None:
    """Running mean and the biased variance of the BN layer's input on X, so that eval
    mode maps new data exactly as train mode maps X (the test-time map, docs/math.md section 1)."""
    first, bn, _ = _parts(module, "set_running_statistics")
    with torch.no_grad():
        var, mean, _ = _channel_moments(first(X.to(first.weight.dtype)))
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.num_batches_tracked.fill_(1)


def nonconvex_objective(module: nn.Module, X, y, beta: float, loss: str = "squared") -> torch.Tensor:
    """loss(f(X), y) + (beta/2) sum_j (g_j^2 + a_j^2 + ||v_j||^2), f with batch statistics.

    g = sqrt(c) * bn.weight and a = sqrt(c) * bn.bias (the paper's parametrization; c = values
    per channel: n, or N H' W' for the convolutional network); the first layer is not
    penalized (BN makes f invariant to its scale). Differentiable in the module's
    parameters; the module's state is not changed.
    """
    first, bn, last = _parts(module, "nonconvex_objective")
    check_loss(loss, "nonconvex_objective")
    beta = check_beta(beta, "nonconvex_objective")
    X = _network_input(first, X, "nonconvex_objective")
    y = _network_targets(y, X.shape[0], last.out_features, "nonconvex_objective").to(first.weight.dtype)
    h = first(X)
    var, mean, count = _channel_moments(h)
    if bn.eps == 0 and bool((var.detach() == 0).any()):
        channel = int(torch.nonzero(var.detach() == 0)[0, 0])
        raise ValueError(f"nonconvex_objective: channel {channel} of the BatchNorm input has zero variance on this "
                         "batch and eps=0, so the network's output is undefined (0/0)")
    z = (h - channel_view(mean, h.dim())) / channel_view(torch.sqrt(var + bn.eps), h.dim())
    a = torch.relu(channel_affine(z, bn.weight, bn.bias))
    f = last(a.sum(dim=(2, 3)) if a.dim() == 4 else a)
    f = f.squeeze(1) if y.dim() == 1 else f
    penalty = count * (bn.weight**2).sum() + count * (bn.bias**2).sum() + (last.weight**2).sum()
    return torch_loss(loss, f, y) + 0.5 * beta * penalty


def _network_targets(y, n: int, outputs: int, owner: str) -> torch.Tensor:
    """y as a finite float64 tensor (n,) (one output) or (n, outputs)."""
    try:
        y = np.asarray(y.detach().cpu() if hasattr(y, "detach") else y, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{owner}: y must be numeric, got {error}") from error
    expected = (n,) if outputs == 1 else (n, outputs)
    if y.shape != expected and not (outputs == 1 and y.shape == (n, 1)):
        raise ValueError(f"{owner}: y must have shape {expected} for {n} samples and {outputs} output(s), "
                         f"got {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"{owner}: y contains NaN or Inf")
    return torch.from_numpy(y.reshape(expected))


def recover_network(whitening: Whitening, neurons: np.ndarray, output_signs: np.ndarray,
                    conv: dict | None = None) -> nn.Sequential:
    """The BN-ReLU network whose train-mode output on the training data is
    sum_j output_signs[j] * (U' s_j)_+ for the rows s_j of ``neurons`` (m, r + 1).
    With ``conv`` = {"in_channels", "kernel_size", "stride"} the whitening is that of the
    image patches and the network is ``bn_relu_conv_network`` (filters = w_j reshaped).

    Spec section 3, per s = (a, b): w = V S^{-1} a, g = ||a|| / sqrt(||s||),
    a_j = b / sqrt(||s||), v_j = sign sqrt(||s||). A neuron with a = 0 is a constant:
    any w, g = 0. ``output_signs`` is (m,) for one output or (m, C) with one nonzero
    +-1 per row (one-vs-rest classes). For the spectral variant the neurons are in the
    coordinates of ``whitening.U_prime`` = [U S, 1] and are mapped to [U, 1/sqrt(n)] first.
    """
    neurons = np.asarray(neurons, dtype=np.float64)
    signs = np.asarray(output_signs, dtype=np.float64)
    signs = signs[:, None] if signs.ndim == 1 else signs
    if neurons.ndim != 2 or neurons.shape[1] != whitening.rank + 1 or signs.ndim != 2 or len(signs) != len(neurons):
        raise ValueError(f"recover_network: neurons must be (m, rank + 1) = (m, {whitening.rank + 1}) with one row of "
                         f"output_signs each, got {neurons.shape} and {np.shape(output_signs)}")
    if not (np.isfinite(neurons).all() and np.isfinite(signs).all()):
        raise ValueError("recover_network: neurons and output_signs must be finite")
    neurons = whitening.to_whitened(neurons)
    m, outputs = signs.shape
    d, r, n = whitening.V.shape[0], whitening.rank, whitening.n
    norms = np.linalg.norm(neurons, axis=1)
    a, b = neurons[:, :r], neurons[:, r]
    a_norms = np.linalg.norm(a, axis=1)
    constant = a_norms <= 1e-12 * np.maximum(norms, np.finfo(float).tiny)
    a_first = np.where(constant[:, None], np.eye(1, r), a)  # a constant neuron: any direction, g = 0
    W = whitening.first_layer(a_first)
    root = np.sqrt(norms)
    g = np.where(constant, 0.0, a_norms / root)
    alpha = b / root
    if conv is None:
        module = bn_relu_network(d, m, outputs)
    else:
        module = bn_relu_conv_network(conv["in_channels"], m, conv["kernel_size"], conv["stride"], outputs)
    first, bn, last = _parts(module, "recover_network")
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(W).reshape(first.weight.shape))
        bn.weight.copy_(torch.from_numpy(g / np.sqrt(n)))
        bn.bias.copy_(torch.from_numpy(alpha / np.sqrt(n)))
        last.weight.copy_(torch.from_numpy((signs * root[:, None]).T))
        h_mean = torch.from_numpy(whitening.mean @ W.T)
        h_var = torch.from_numpy(np.linalg.norm(a_first, axis=1) ** 2 / n)  # h = Xc w = U a on the training data
        bn.running_mean.copy_(h_mean)
        bn.running_var.copy_(h_var)
        bn.num_batches_tracked.fill_(1)
    module.eval()
    return module


@dataclass
class TrainingHistory:
    """The objective after each step and the wall time (seconds since the start)."""

    objective: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def train_nonconvex(
    X,
    y,
    beta: float,
    width: int,
    optimizer: str = "adam",
    loss: str = "squared",
    lr: float = 1e-2,
    steps: int = 2000,
    seed: int = 0,
    target: float | None = None,
    progress: bool = False,
    callback: Callable[[int, nn.Sequential], None] | None = None,
    module: nn.Sequential | None = None,
) -> tuple[nn.Sequential, TrainingHistory]:
    """Full-batch Adam or SGD on ``nonconvex_objective`` (the baseline the convex program
    is compared with). y is (n,) or (n, C); stops early once the objective <= target.
    ``callback(step, module)`` runs after every step (module in training mode). ``module``
    trains a given network (e.g. ``bn_relu_conv_network`` on images) instead of a fresh
    ``bn_relu_network(d, width)``; its parameters are then not re-initialized.
    Returns the module (eval mode, running statistics of X) and its history."""
    owner = "train_nonconvex"
    check_loss(loss, owner)
    beta = check_beta(beta, owner)
    lr = check_positive(lr, owner, "lr")
    check_count(width, owner, "width")
    check_count(steps, owner, "steps")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"{owner}: optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if target is not None:
        check_positive(target, owner, "target", allow_zero=True)
    y_arr = np.asarray(y, dtype=np.float64)
    if y_arr.ndim not in (1, 2):
        raise ValueError(f"{owner}: y must be (n,) or (n, C), got shape {y_arr.shape}")
    torch.manual_seed(seed)
    if module is None:
        X = check_matrix(X, owner)
        module = bn_relu_network(X.shape[1], width, 1 if y_arr.ndim == 1 else y_arr.shape[1])
    Xt = _network_input(_parts(module, owner)[0], X, owner)
    _network_targets(y_arr, Xt.shape[0], _parts(module, owner)[2].out_features, owner)
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(module.parameters(), lr=lr)
    history = TrainingHistory()
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=f"{optimizer} (width {width})", disable=not progress, leave=False):
        opt.zero_grad()
        value = nonconvex_objective(module, Xt, y_arr, beta, loss)
        if not torch.isfinite(value):
            raise ValueError(f"{owner}: the objective became {value.item()} at step {len(history.objective)} "
                             f"({optimizer}, lr={lr}): training diverged; lower lr")
        value.backward()
        opt.step()
        history.objective.append(value.item())
        history.seconds.append(time.perf_counter() - start)
        if callback is not None:
            callback(len(history.objective), module)
        if target is not None and value.item() <= target:
            break
    final = float(nonconvex_objective(module, Xt, y_arr, beta, loss).detach())
    if not math.isfinite(final):
        raise ValueError(f"{owner}: the objective became {final} after the last step ({optimizer}, lr={lr}): "
                         "training diverged; lower lr")
    history.objective.append(final)
    history.seconds.append(time.perf_counter() - start)
    set_running_statistics(module, Xt)
    module.eval()
    logger.info("train_nonconvex: %s, %d steps, objective %.6g", optimizer, len(history.objective) - 1, final)
    return module, history
