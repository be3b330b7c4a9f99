"""Batch-size-1 (online) training with BN Preconditioning (Lange, Helfrich & Ye, JMLR 2022).

scikit-learn digits with raw pixel values (0..16, not standardized: the setting where
normalization matters), MLP 64-64-64-10 with ReLU, cross-entropy, plain SGD, 3 passes:
- SGD, batch size 1;
- SGD + BNP (``convexnorm.optim.BNP``), batch size 1;
- SGD on the same MLP with BatchNorm1d after each hidden Linear, batch size 2 (the smallest
  batch BatchNorm can train on: batch size 1 raises).
Each method gets the best of five learning rates (by final test accuracy); the curves are
test accuracy over samples seen.

Run: python examples/bnp_online.py  (a few minutes on 2 CPU cores; the README shows one measured run, times vary 2-3x between runs);
writes docs/figures/bnp_online.png.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from convexnorm.diagnostics import accuracy, minibatches, save_figure
from convexnorm.optim import BNP

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "bnp_online.png"
RATES = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
PASSES, EVAL_EVERY = 3, 200


def mlp(batch_norm: bool) -> nn.Sequential:
    norm = (lambda: nn.BatchNorm1d(64)) if batch_norm else nn.Identity
    return nn.Sequential(nn.Linear(64, 64), norm(), nn.ReLU(), nn.Linear(64, 64), norm(), nn.ReLU(), nn.Linear(64, 10))


def train(method: str, lr: float, data: tuple) -> list[tuple[int, float]]:
    X_train, y_train, X_test, y_test = data
    torch.manual_seed(0)
    model = mlp(batch_norm=method == "BN")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    stepper = BNP(model, optimizer) if method == "BNP" else optimizer
    batch = 2 if method == "BN" else 1
    generator, seen, curve = torch.Generator().manual_seed(0), 0, []
    for _ in range(PASSES):
        for index in minibatches(len(X_train), batch, generator):
            loss = F.cross_entropy(model(X_train[index]), y_train[index])
            stepper.zero_grad()
            loss.backward()
            stepper.step()
            if seen // EVAL_EVERY != (seen + batch) // EVAL_EVERY:
                curve.append((seen + batch, accuracy(model, X_test, y_test)))
            seen += batch
    return curve


def main() -> None:
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(digits.data, digits.target, test_size=0.25, random_state=0)
    data = (torch.tensor(X_train, dtype=torch.float32), torch.tensor(y_train),
            torch.tensor(X_test, dtype=torch.float32), torch.tensor(y_test))
    print(f"digits, raw pixels 0..16, MLP 64-64-64-10, {PASSES} passes of plain SGD; final test accuracy per lr")
    print(f"{'method':>18} " + " ".join(f"{lr:>7.0e}" for lr in RATES))
    best = {}
    for method, label in (("SGD", "SGD, batch 1"), ("BNP", "SGD + BNP, batch 1"), ("BN", "BN, batch 2")):
        curves = {lr: train(method, lr, data) for lr in RATES}
        finals = {lr: curve[-1][1] for lr, curve in curves.items()}
        print(f"{label:>18} " + " ".join(f"{finals[lr]:7.3f}" for lr in RATES), flush=True)
        lr = max(RATES, key=lambda r: finals[r] if finals[r] == finals[r] else -1)
        best[f"{label} (lr {lr:g})"] = curves[lr]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, curve in best.items():
        ax.plot(*zip(*curve), label=label)
    ax.set(xlabel="training samples seen", ylabel="test accuracy", ylim=(0, 1),
           title="online training on raw digits (best lr each)")
    ax.legend()
    print("wrote", save_figure(fig, FIGURE))


if __name__ == "__main__":
    main()
