"""Implicit regularization made explicit: truncated whitening vs SGD-trained BN networks.

Gradient descent on a BN network fits high-singular-value directions first (docs/math.md section 7;
``convexnorm.diagnostics.spectral_bias``), the exact convex model has no such bias. The paper
puts it back explicitly by whitening with the top-k singular vectors only. On scikit-learn
digits 3 vs 8 (pixels / 16, squared loss on +-1 labels, train / validation / test 50/25/25):
- the exact convex model (200 sampled patterns) with full whitening,
- the same with ``whitening_rank=k``, k chosen on the validation set (``select_whitening_rank``),
- the same with ``whitening="spectral"`` (the program on [U S, 1]),
- two-layer BN networks of the same width trained by full-batch SGD (learning rate chosen on
  the validation set) from three seeds,
and the spectral-bias measurement of GD on the same data. Prints a table, writes
docs/figures/implicit_regularization.png.

Run: python examples/implicit_regularization.py  (a few minutes on 2 CPU cores; the README shows one measured run, times vary 2-3x between runs)
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
from convexnorm.diagnostics import first_step_fitted, save_figure, spectral_bias

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "implicit_regularization.png"
BETA, PATTERNS, RANKS = 0.1, 200, [2, 4, 8, 16, 32]
SGD_RATES, SGD_STEPS = [1e-4, 3e-4, 1e-3], 3000


def accuracy(predictions: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.sign(predictions) == y))


def network_predictions(module: torch.nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(X)).numpy().ravel()


def _progress_lines() -> None:
    """The library logs each stage (grow rounds, training runs) at INFO; show those lines."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def main() -> None:
    _progress_lines()
    digits = load_digits()
    keep = np.isin(digits.target, (3, 8))
    X, y = digits.data[keep] / 16.0, np.where(digits.target[keep] == 8, 1.0, -1.0)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.5, random_state=0)
    X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    rank = cn.whiten(X_train).rank
    print(f"digits 3 vs 8: {len(X_train)} train / {len(X_val)} validation / {len(X_test)} test, rank {rank}, "
          f"beta {BETA}, {PATTERNS} sampled patterns")
    rows = []
    start = time.perf_counter()
    full = cn.ConvexBNRegressor(beta=BETA, patterns=PATTERNS, random_state=0).fit(X_train, y_train)
    rows.append((f"convex, full whitening (k = {rank})", full, time.perf_counter() - start))
    start = time.perf_counter()
    best, scores = cn.select_whitening_rank(cn.ConvexBNRegressor(beta=BETA, patterns=PATTERNS, random_state=0),
                                            X_train, y_train, X_val, y_val, RANKS)
    truncated = cn.ConvexBNRegressor(beta=BETA, patterns=PATTERNS, random_state=0, whitening_rank=best).fit(X_train, y_train)
    rows.append((f"convex, whitening_rank = {best} (validation)", truncated, time.perf_counter() - start))
    start = time.perf_counter()
    spectral = cn.ConvexBNRegressor(beta=BETA, patterns=PATTERNS, random_state=0, whitening="spectral").fit(X_train, y_train)
    rows.append(("convex, whitening='spectral'", spectral, time.perf_counter() - start))
    print("validation R^2 per whitening rank: " + ", ".join(f"k={k}: {s:.3f}" for k, s in scores.items()))
    width = max(model.n_neurons_ for _, model, _ in rows)
    print(f"{'model':42} {'train acc':>9} {'val acc':>8} {'test acc':>8} {'objective':>10} {'seconds':>8}")
    for label, model, seconds in rows:
        print(f"{label:42} {accuracy(model.predict(X_train), y_train):9.3f} {accuracy(model.predict(X_val), y_val):8.3f} "
              f"{accuracy(model.predict(X_test), y_test):8.3f} {model.objective_:10.4f} {seconds:8.1f}")
    sgd_test = []
    for seed in range(3):
        start = time.perf_counter()
        trained = [(lr, *cn.train_nonconvex(X_train, y_train, BETA, width, optimizer="sgd", lr=lr, steps=SGD_STEPS,
                                            seed=seed)) for lr in SGD_RATES]
        lr, module, history = max(trained, key=lambda t: accuracy(network_predictions(t[1], X_val), y_val))
        test = accuracy(network_predictions(module, X_test), y_test)
        sgd_test.append(test)
        print(f"{f'SGD BN network, width {width}, lr {lr:g}, seed {seed}':42} "
              f"{accuracy(network_predictions(module, X_train), y_train):9.3f} "
              f"{accuracy(network_predictions(module, X_val), y_val):8.3f} {test:8.3f} {history.objective[-1]:10.4f} "
              f"{time.perf_counter() - start:8.1f}")
    bias = spectral_bias(X_train, y_train, beta=BETA, width=width, lr=1e-4, steps=400, record_every=2)
    reached = first_step_fitted(bias, 0.5)
    ranked = np.argsort(-np.abs(cn.whiten(X_train).U.T @ y_train))[:8]
    print("GD steps to fit half of the target's component along u_i (8 largest components): "
          + ", ".join(f"s={bias['singular_values'][i]:.2f}: {reached[i]:g}" for i in sorted(ranked)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = ["convex full", f"convex k={best}", "convex spectral", "SGD BN\n(mean of 3)"]
    values = [accuracy(m.predict(X_test), y_test) for _, m, _ in rows] + [np.mean(sgd_test)]
    axes[0].bar(labels, values, color=["tab:blue", "tab:green", "tab:purple", "tab:orange"])
    axes[0].set(ylim=(min(values) - 0.05, 1.0), ylabel="test accuracy", title="digits 3 vs 8")
    for i in sorted(ranked):
        axes[1].plot(bias["steps"], bias["fit"][:, i], label=f"s = {bias['singular_values'][i]:.2f}")
    axes[1].set(xlabel="GD step", ylabel="fitted fraction along u_i", ylim=(-0.5, 1.5),
                title="spectral bias of GD on the BN network")
    axes[1].legend(fontsize=7)
    print("wrote", save_figure(fig, FIGURE))


if __name__ == "__main__":
    main()
