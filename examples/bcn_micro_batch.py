"""Micro-batch training with Batch-Channel Normalization + Weight Standardization (Qiao et al. 2019).

A small CNN on the 8x8 scikit-learn digits (two 3x3 convolutions, 16 and 32 channels, each
followed by a normalization and ReLU, global average pooling, Linear), plain SGD with
momentum 0.9, 4 epochs, at batch sizes 1 and 2:
- WSConv2d + BatchChannelNorm2d (micro-batch mode: estimated statistics, 4 groups),
- WSConv2d + GroupNorm (4 groups),
- Conv2d + BatchNorm2d (batch statistics; with one sample they are the sample's spatial
  statistics, and evaluation uses the running averages).
It also reports the elimination-singularity statistics of the trained networks on the test
set (``convexnorm.diagnostics.channel_singularities``).

Run: python examples/bcn_micro_batch.py  (a few minutes on 2 CPU cores; the README shows one measured run, times vary 2-3x between runs);
writes docs/figures/bcn_micro_batch.png.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from convexnorm.diagnostics import accuracy, channel_singularities, minibatches, save_figure
from convexnorm.nn import BatchChannelNorm2d, WSConv2d

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "bcn_micro_batch.png"
EPOCHS, LR, GROUPS = 4, 0.01, 4


def cnn(kind: str) -> nn.Sequential:
    conv = nn.Conv2d if kind == "BN" else WSConv2d

    def norm(channels: int) -> nn.Module:
        if kind == "BCN+WS":
            return BatchChannelNorm2d(channels, num_groups=GROUPS, estimated_stats=True)
        if kind == "GN+WS":
            return nn.GroupNorm(GROUPS, channels)
        return nn.BatchNorm2d(channels)

    return nn.Sequential(conv(1, 16, 3, padding=1), norm(16), nn.ReLU(),
                         conv(16, 32, 3, padding=1, stride=2), norm(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def train(kind: str, batch: int, data: tuple) -> tuple[nn.Module, list[float]]:
    X_train, y_train, X_test, y_test = data
    torch.manual_seed(0)
    model = cnn(kind)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    generator, curve = torch.Generator().manual_seed(0), []
    for _ in range(EPOCHS):
        for index in minibatches(len(X_train), batch, generator):
            loss = F.cross_entropy(model(X_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        curve.append(accuracy(model, X_test, y_test))
    return model, curve


def main() -> None:
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(digits.images / 16.0, digits.target, test_size=0.25,
                                                        random_state=0)
    data = (torch.tensor(X_train, dtype=torch.float32)[:, None], torch.tensor(y_train),
            torch.tensor(X_test, dtype=torch.float32)[:, None], torch.tensor(y_test))
    print(f"digits 8x8, CNN 16-32 channels, SGD lr {LR} momentum 0.9, {EPOCHS} epochs: test accuracy per epoch")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, batch in zip(axes, (1, 2)):
        for kind in ("BCN+WS", "GN+WS", "BN"):
            model, curve = train(kind, batch, data)
            singular = channel_singularities(model.eval(), data[2])
            dead = ", ".join(f"{s['dead_fraction']:.2f}" for s in singular)
            constant = ", ".join(f"{s['constant_fraction']:.2f}" for s in singular)
            print(f"batch {batch} {kind:>7}: " + " ".join(f"{a:.3f}" for a in curve)
                  + f"   dead channels per layer {dead}; constant {constant}", flush=True)
            ax.plot(range(1, EPOCHS + 1), curve, marker="o", label=kind)
        ax.set(xlabel="epoch", title=f"batch size {batch}", ylim=(0, 1))
        ax.legend()
    axes[0].set_ylabel("test accuracy")
    print("wrote", save_figure(fig, FIGURE))


if __name__ == "__main__":
    main()
