"""Batch normalization allows larger learning rates (Bjorck et al., NeurIPS 2018), on digits.

A He-initialized residual MLP (8 blocks h <- h + Linear(ReLU([BN](Linear(h)))), width 64) with and without
BatchNorm1d on scikit-learn digits (standardized pixels):
- a learning-rate sweep with plain SGD (test accuracy; diverged runs marked),
- the relative loss of one SGD step at initialization over step sizes (divergence > 1e3),
- per-layer activation statistics at initialization,
- the last layer's per-sample gradients at initialization.

Run: python examples/bn_large_learning_rates.py  (well under a minute on 2 CPU cores);
writes docs/figures/bn_large_learning_rates_{sweep,relative_loss,activations,gradients}.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from convexnorm import diagnostics

WIDTH, BLOCKS = 64, 8
FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


class Block(nn.Module):
    def __init__(self, batch_norm: bool) -> None:
        super().__init__()
        self.inner = nn.Linear(WIDTH, WIDTH)
        self.norm = nn.BatchNorm1d(WIDTH) if batch_norm else nn.Identity()
        self.outer = nn.Linear(WIDTH, WIDTH)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.outer(torch.relu(self.norm(self.inner(h))))


def residual_mlp(batch_norm: bool) -> nn.Sequential:
    """He-initialized (as the paper's ResNets), biases zero."""
    model = nn.Sequential(nn.Linear(64, WIDTH), *[Block(batch_norm) for _ in range(BLOCKS)], nn.Linear(WIDTH, 10))
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return model


def main() -> None:
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(digits.data, digits.target, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = (torch.tensor(scaler.transform(a), dtype=torch.float32) for a in (X_train, X_test))
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    rates = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0]
    steps = np.logspace(-5, 1, 13).tolist()
    sweeps, relative, activations, gradients = {}, {}, {}, {}
    for label, batch_norm in (("BN", True), ("no BN", False)):
        sweeps[label] = diagnostics.learning_rate_sweep(lambda: residual_mlp(batch_norm), X_train, y_train, rates,
                                                        epochs=5, batch_size=64, seed=0, test=(X_test, y_test))
        torch.manual_seed(0)
        model = residual_mlp(batch_norm).train()
        batch = X_train[:256], y_train[:256]
        relative[label] = diagnostics.relative_loss(model, *batch, steps)
        activations[label] = diagnostics.activation_statistics(model, batch[0])
        gradients[label] = diagnostics.gradient_statistics(model, *batch)
    print(f"learning-rate sweep, plain SGD, batch 64, 5 epochs ({BLOCKS}-block residual MLP): test accuracy")
    print(f"{'lr':>8} " + " ".join(f"{label:>8}" for label in sweeps))
    for i, lr in enumerate(rates):
        cells = ["diverged" if s["diverged"][i] else f"{s['test_accuracy'][i]:8.3f}" for s in sweeps.values()]
        print(f"{lr:8.0e} " + " ".join(f"{c:>8}" for c in cells))
    print("\nrelative loss of one SGD step at initialization (batch of 256)")
    print(f"{'step':>8} " + " ".join(f"{label:>10}" for label in relative))
    for i, step in enumerate(steps):
        print(f"{step:8.0e} " + " ".join(f"{r['relative_loss'][i]:10.3g}" for r in relative.values()))
    for label in sweeps:
        first = next((s for s, d in zip(steps, relative[label]["diverged"]) if d), None)
        acts = activations[label]
        print(f"{label}: first diverging step {'none' if first is None else f'{first:.2g}'}; activation std layer 1 {acts[0]['mean_std']:.3g} -> "
              f"last {acts[-1]['mean_std']:.3g}; last-layer gradient alignment {gradients[label]['alignment']:.3f}, "
              f"mean cosine {gradients[label]['mean_cosine']:.3f}")
    for name, plot, data in (("sweep", diagnostics.plot_learning_rate_sweep, sweeps),
                             ("relative_loss", diagnostics.plot_relative_loss, relative),
                             ("activations", diagnostics.plot_activation_statistics, activations),
                             ("gradients", diagnostics.plot_gradient_statistics, gradients)):
        print("wrote", plot(data, FIGURES / f"bn_large_learning_rates_{name}.png"))


if __name__ == "__main__":
    main()
