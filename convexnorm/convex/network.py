"""The non-convex two-layer BN-ReLU network: recovery, objective and SGD baseline.

Spec: convex-bn.md sections 2 and 3. The network is
``Sequential(Linear(d, m, bias=False), BatchNorm1d(m, eps=0), ReLU(), Linear(m, C, bias=False))``
with convexnorm's BatchNorm1d (torch refuses eps=0 in training). The paper's
BN_{g,a}(h) = g (h - mean h) / ||h - mean h|| + a / sqrt(n) is torch's BN with
weight = g / sqrt(n) and bias = a / sqrt(n).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from convexnorm.convex._validation import check_beta, check_matrix
from convexnorm.convex.whitening import Whitening
from convexnorm.losses import check_loss, torch_loss
from convexnorm.nn.normalization import BatchNorm1d

logger = logging.getLogger("convexnorm")


def bn_relu_network(d: int, width: int, outputs: int = 1) -> nn.Sequential:
    """The two-layer BN-ReLU network of the paper, float64."""
    return nn.Sequential(
        nn.Linear(d, width, bias=False),
        BatchNorm1d(width, eps=0.0, backend="native"),
        nn.ReLU(),
        nn.Linear(width, outputs, bias=False),
    ).double()


def _parts(module: nn.Module, owner: str) -> tuple[nn.Linear, nn.Module, nn.Linear]:
    layers = list(module.children()) if isinstance(module, nn.Sequential) else []
    if (
        len(layers) != 4
        or not isinstance(layers[0], nn.Linear)
        or not isinstance(layers[1], (nn.BatchNorm1d, BatchNorm1d))
        or not isinstance(layers[2], nn.ReLU)
        or not isinstance(layers[3], nn.Linear)
    ):
        raise ValueError(f"{owner}: expected Sequential(Linear, BatchNorm1d, ReLU, Linear), got {module}")
    if layers[1].weight is None:
        raise ValueError(f"{owner}: the BatchNorm1d layer must be affine (its weight and bias are penalized)")
    return layers[0], layers[1], layers[3]


def set_running_statistics(module: nn.Sequential, X: torch.Tensor) -> None:
    """Running mean and the biased variance of the BN layer's input on X, so that eval
    mode maps new data exactly as train mode maps X (the test-time map of the spec)."""
    first, bn, _ = _parts(module, "set_running_statistics")
    with torch.no_grad():
        h = first(X.to(first.weight.dtype))
        bn.running_mean.copy_(h.mean(0))
        bn.running_var.copy_(h.var(0, unbiased=False))
        bn.num_batches_tracked.fill_(1)


def nonconvex_objective(module: nn.Module, X, y, beta: float, loss: str = "squared") -> torch.Tensor:
    """loss(f(X), y) + (beta/2) sum_j (g_j^2 + a_j^2 + ||v_j||^2), f with batch statistics.

    g = sqrt(n) * bn.weight and a = sqrt(n) * bn.bias (the paper's parametrization); the
    first layer is not penalized (BN makes f invariant to its scale). Differentiable in
    the module's parameters; the module's state is not changed.
    """
    first, bn, last = _parts(module, "nonconvex_objective")
    check_loss(loss, "nonconvex_objective")
    beta = check_beta(beta, "nonconvex_objective")
    X = torch.as_tensor(check_matrix(X, "nonconvex_objective", columns=first.in_features), dtype=first.weight.dtype)
    y = torch.as_tensor(np.asarray(y, dtype=np.float64), dtype=first.weight.dtype)
    n = X.shape[0]
    h = first(X)
    var, mean = torch.var_mean(h, dim=0, correction=0)
    z = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    f = last(torch.relu(z))
    f = f.squeeze(1) if y.dim() == 1 else f
    penalty = n * (bn.weight**2).sum() + n * (bn.bias**2).sum() + (last.weight**2).sum()
    return torch_loss(loss, f, y) + 0.5 * beta * penalty


def recover_network(whitening: Whitening, neurons: np.ndarray, output_signs: np.ndarray) -> nn.Sequential:
    """The BN-ReLU network whose train-mode output on the training data is
    sum_j output_signs[j] * (U' s_j)_+ for the rows s_j of ``neurons`` (m, r + 1).

    Spec section 3, per s = (a, b): w = V S^{-1} a, g = ||a|| / sqrt(||s||),
    a_j = b / sqrt(||s||), v_j = sign sqrt(||s||). A neuron with a = 0 is a constant:
    any w, g = 0. ``output_signs`` is (m,) for one output or (m, C) with one nonzero
    +-1 per row (one-vs-rest classes). For the spectral variant the neurons are in the
    coordinates of ``whitening.U_prime`` = [U S, 1] and are mapped to [U, 1/sqrt(n)] first.
    """
    neurons = whitening.to_whitened(np.asarray(neurons, dtype=np.float64))
    signs = np.asarray(output_signs, dtype=np.float64)
    signs = signs[:, None] if signs.ndim == 1 else signs
    m, outputs = signs.shape
    d, r, n = whitening.V.shape[0], whitening.rank, whitening.n
    norms = np.linalg.norm(neurons, axis=1)
    a, b = neurons[:, :r], neurons[:, r]
    a_norms = np.linalg.norm(a, axis=1)
    constant = a_norms <= 1e-12 * np.maximum(norms, np.finfo(float).tiny)
    W = (a / whitening.S) @ whitening.V.T
    W[constant] = whitening.V[:, 0] / whitening.S[0]
    root = np.sqrt(norms)
    g = np.where(constant, 0.0, a_norms / root)
    alpha = b / root
    module = bn_relu_network(d, m, outputs)
    first, bn, last = _parts(module, "recover_network")
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(W))
        bn.weight.copy_(torch.from_numpy(g / np.sqrt(n)))
        bn.bias.copy_(torch.from_numpy(alpha / np.sqrt(n)))
        last.weight.copy_(torch.from_numpy((signs * root[:, None]).T))
        h_mean = torch.from_numpy(whitening.mean @ W.T)
        h_var = torch.from_numpy(np.linalg.norm((W @ whitening.V) * whitening.S, axis=1) ** 2 / n)
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
) -> tuple[nn.Sequential, TrainingHistory]:
    """Full-batch Adam or SGD on ``nonconvex_objective`` (the baseline the convex program
    is compared with). y is (n,) or (n, C); stops early once the objective <= target.
    ``callback(step, module)`` runs after every step (module in training mode).
    Returns the module (eval mode, running statistics of X) and its history."""
    check_loss(loss, "train_nonconvex")
    beta = check_beta(beta, "train_nonconvex")
    X = check_matrix(X, "train_nonconvex")
    y_arr = np.asarray(y, dtype=np.float64)
    if y_arr.shape[0] != X.shape[0] or y_arr.ndim not in (1, 2):
        raise ValueError(f"train_nonconvex: y must be (n,) or (n, C) with n = {X.shape[0]}, got {y_arr.shape}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"train_nonconvex: optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if width < 1 or steps < 1:
        raise ValueError("train_nonconvex: width and steps must be positive")
    torch.manual_seed(seed)
    module = bn_relu_network(X.shape[1], width, 1 if y_arr.ndim == 1 else y_arr.shape[1])
    Xt = torch.from_numpy(X)
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(module.parameters(), lr=lr)
    history = TrainingHistory()
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=f"{optimizer} (width {width})", disable=not progress, leave=False):
        opt.zero_grad()
        value = nonconvex_objective(module, Xt, y_arr, beta, loss)
        value.backward()
        opt.step()
        history.objective.append(value.item())
        history.seconds.append(time.perf_counter() - start)
        if callback is not None:
            callback(len(history.objective), module)
        if target is not None and value.item() <= target:
            break
    final = float(nonconvex_objective(module, Xt, y_arr, beta, loss).detach())
    history.objective.append(final)
    history.seconds.append(time.perf_counter() - start)
    set_running_statistics(module, Xt)
    module.eval()
    logger.info("train_nonconvex: %s, %d steps, objective %.6g", optimizer, len(history.objective) - 1, final)
    return module, history
