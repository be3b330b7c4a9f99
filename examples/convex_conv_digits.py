"""Exact convex training of a convolutional BN-ReLU network on 8x8 digits (docs/math.md section 8).

Network: Conv2d(1 -> m, 3x3, stride 2, no bias) -> BatchNorm2d (statistics over images and
the 9 positions) -> ReLU -> sum pooling -> Linear(m -> 1); squared loss on +-1 labels,
digits 3 vs 8 (pixels / 16). ``ConvexBNConvRegressor`` solves the convex program over
sampled patterns of the 9-pixel patches, grows them by column generation (the dual
certificate's probe) and hands back the torch network; Adam trains the
same architecture at the same width on the same objective from three seeds.

Run: python examples/convex_conv_digits.py  (a few minutes on 2 CPU cores; the README shows one measured run, times vary 2-3x between runs);
writes docs/figures/convex_conv_digits.png.
"""

from __future__ import annotations

import logging

import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import convexnorm as cn
from convexnorm.diagnostics import save_figure

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "convex_conv_digits.png"
BETA, PATTERNS, ROUNDS, ADAM_STEPS = 0.1, 60, 4, 3000


def accuracy(predictions: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.sign(predictions) == y))


def _progress_lines() -> None:
    """The library logs each stage (grow rounds, training runs) at INFO; show those lines."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def main() -> None:
    _progress_lines()
    digits = load_digits()
    keep = np.isin(digits.target, (3, 8))
    images, y = digits.images[keep][:, None] / 16.0, np.where(digits.target[keep] == 8, 1.0, -1.0)
    X_train, X_test, y_train, y_test = train_test_split(images, y, test_size=0.3, random_state=0)
    start = time.perf_counter()
    model = cn.ConvexBNConvRegressor(kernel_size=3, stride=2, beta=BETA, patterns=PATTERNS, random_state=0,
                                     grow=True, max_rounds=ROUNDS)
    model.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    net = model.to_module()
    recovered = cn.nonconvex_objective(net, X_train, y_train, BETA).item()
    print(f"digits 3 vs 8: {len(X_train)} train / {len(X_test)} test images, 3x3 filters stride 2 "
          f"({model.n_positions_} positions), beta {BETA}, {PATTERNS} sampled patterns grown to {len(model.patterns_)} "
          f"in {len(model.objective_history_) - 1} rounds (objective {model.objective_history_[0]:.4f} -> "
          f"{model.objective_:.4f})")
    print(f"{'model':38} {'objective':>10} {'train acc':>9} {'test acc':>8} {'seconds':>8}")
    print(f"{'convex (' + str(model.n_neurons_) + ' filters)':38} {model.objective_:10.4f} "
          f"{accuracy(model.predict(X_train), y_train):9.3f} {accuracy(model.predict(X_test), y_test):8.3f} "
          f"{seconds:8.1f}")
    print(f"recovered torch network: objective {recovered:.6f} (convex {model.objective_:.6f})")
    cert = model.certify(method="probe")
    verdict = ("not optimal over all patterns (a violation attained by an explicit direction)" if cert.violated
               else "no violation found (evidence, not a proof)")
    print(f"certificate (probe): max dual value {cert.max_dual_value:.4f} vs beta {BETA}: {verdict}")
    curves = {}
    for seed in range(3):
        torch.manual_seed(seed)
        module = cn.bn_relu_conv_network(1, model.n_neurons_, 3, stride=2)
        start = time.perf_counter()
        trained, history = cn.train_nonconvex(X_train, y_train, BETA, model.n_neurons_, lr=1e-2, steps=ADAM_STEPS,
                                              seed=seed, module=module)
        with torch.no_grad():
            train_acc = accuracy(trained(torch.from_numpy(X_train)).numpy().ravel(), y_train)
            test_acc = accuracy(trained(torch.from_numpy(X_test)).numpy().ravel(), y_test)
        curves[seed] = history.objective
        print(f"{f'Adam, same width, seed {seed}':38} {history.objective[-1]:10.4f} {train_acc:9.3f} {test_acc:8.3f} "
              f"{time.perf_counter() - start:8.1f}")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for seed, objective in curves.items():
        ax.semilogy(objective, label=f"Adam, seed {seed}")
    ax.axhline(model.objective_, color="black", linestyle="--", label="convex optimum (grown patterns)")
    ax.set(xlabel="Adam step", ylabel="objective", title="convolutional BN network, digits 3 vs 8")
    ax.legend(fontsize=8)
    print("wrote", save_figure(fig, FIGURE))


if __name__ == "__main__":
    main()
