"""Train a feature extractor end to end through a convex BN-ReLU head.

Task: scikit-learn digits, 0-4 (label -1) vs 5-9 (label +1), squared loss.
- Convex head: each batch of 64 is split into a support half, on which
  ``ConvexBNReLU`` solves the convex BN-ReLU program, and a query half, whose squared
  error under the fitted network is the loss; Adam updates the extractor through the
  program's solution. At test time the head is frozen on all training features
  (``freeze``) and predicts the test set.
- Baseline: the same extractor with an ordinary Linear-BatchNorm1d-ReLU-Linear head of
  the same width, trained by Adam on the whole batch.

Run: python examples/end_to_end_convex_head.py  (under a minute on 2 CPU cores; the README shows one measured run, times vary 2-3x between runs);
writes docs/figures/end_to_end_convex_head.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from convexnorm.nn import ConvexBNReLU

FEATURES, WIDTH = 6, 24


def extractor() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, FEATURES)).double()


def accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    return float(((scores > 0) == (y > 0)).double().mean())


def train_convex_head(data, epochs: int, seed: int) -> dict[str, list[float]]:
    X_train, X_test, y_train, y_test = data
    torch.manual_seed(seed)
    features = extractor()
    head = ConvexBNReLU(FEATURES, beta=1e-2, n_patterns=WIDTH, seed=seed, solver="torch")
    optimizer = torch.optim.Adam(features.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    curves: dict[str, list[float]] = {"loss": [], "test": [], "seconds": []}
    for _ in range(epochs):
        start, losses = time.perf_counter(), []
        for batch in torch.randperm(len(X_train), generator=generator).split(64):
            if len(batch) < 2 * (FEATURES + 2):
                continue
            support, query = batch[: len(batch) // 2], batch[len(batch) // 2 :]
            optimizer.zero_grad()
            predictions = head(features(X_train[support]), y_train[support], H_query=features(X_train[query]))
            loss = 0.5 * ((predictions - y_train[query]) ** 2).mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        curves["seconds"].append(time.perf_counter() - start)
        with torch.no_grad():
            frozen = head.freeze(features(X_train), y_train, solver="torch")
            curves["test"].append(accuracy(frozen(features(X_test)).squeeze(1), y_test))
        curves["loss"].append(float(np.mean(losses)))
    return curves


def train_bn_head(data, epochs: int, seed: int) -> dict[str, list[float]]:
    X_train, X_test, y_train, y_test = data
    torch.manual_seed(seed)
    model = nn.Sequential(extractor(), nn.Linear(FEATURES, WIDTH), nn.BatchNorm1d(WIDTH), nn.ReLU(),
                          nn.Linear(WIDTH, 1)).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    curves: dict[str, list[float]] = {"loss": [], "test": [], "seconds": []}
    for _ in range(epochs):
        start, losses = time.perf_counter(), []
        model.train()
        for batch in torch.randperm(len(X_train), generator=generator).split(64):
            if len(batch) < 2:
                continue
            optimizer.zero_grad()
            loss = 0.5 * ((model(X_train[batch]).squeeze(1) - y_train[batch]) ** 2).mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        curves["seconds"].append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            curves["test"].append(accuracy(model(X_test).squeeze(1), y_test))
        curves["loss"].append(float(np.mean(losses)))
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "figures")
    args = parser.parse_args()
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data / 16.0, np.where(digits.target >= 5, 1.0, -1.0), test_size=0.25, random_state=args.seed,
        stratify=digits.target,
    )
    data = tuple(torch.tensor(a, dtype=torch.float64) for a in (X_train, X_test, y_train, y_test))
    results = {"convex BN-ReLU head (support/query)": train_convex_head(data, args.epochs, args.seed),
               "BN-ReLU head, Adam": train_bn_head(data, args.epochs, args.seed)}
    print(f"{'model':<38} {'final test acc':>14} {'best test acc':>13} {'s / epoch':>10}")
    for name, curves in results.items():
        print(f"{name:<38} {curves['test'][-1]:14.3f} {max(curves['test']):13.3f} {np.mean(curves['seconds']):10.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, curves in results.items():
        epochs = range(1, len(curves["loss"]) + 1)
        left.plot(epochs, curves["loss"], marker="o", label=name)
        right.plot(epochs, curves["test"], marker="o", label=name)
    left.set(xlabel="epoch", ylabel="training loss (query half / batch)", yscale="log")
    right.set(xlabel="epoch", ylabel="test accuracy (0-4 vs 5-9)")
    right.legend()
    figure.tight_layout()
    path = args.out / "end_to_end_convex_head.png"
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
