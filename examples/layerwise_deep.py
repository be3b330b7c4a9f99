"""Greedy layer-wise convex training of a deep BN-ReLU MLP vs SGD at the same widths.

scikit-learn digits 3 vs 8 (pixels / 16), squared loss on +-1 labels, beta 0.1.
``GreedyConvexBNNetwork`` stacks 1, 2 and 3 convex BN-ReLU blocks (each the exact convex
model, over 100 sampled patterns, of the previous block's activations) into one torch
network. The same architectures (same widths) are trained end to end from scratch by
SGD with momentum on the mean squared error, three seeds each.

Run: python examples/layerwise_deep.py  (a few minutes on 2 CPU cores; the README shows one measured run, times vary 2-3x between runs);
writes docs/figures/layerwise_deep.png.
"""

from __future__ import annotations

import logging

import copy
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import convexnorm as cn
from convexnorm.diagnostics import minibatches, save_figure

FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "layerwise_deep.png"
BETA, PATTERNS, EPOCHS = 0.1, 100, 60


def accuracy(predictions: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.sign(predictions) == y))


def sgd_trained(architecture: torch.nn.Sequential, X: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Sequential:
    """The architecture re-initialized and trained by SGD (lr 0.01, momentum 0.9, batch 32)."""
    torch.manual_seed(seed)
    net = copy.deepcopy(architecture).train()
    for module in net.modules():
        if hasattr(module, "reset_parameters") and module is not net:
            module.reset_parameters()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        for batch in minibatches(len(X), 32, generator):
            loss = ((net(Xt[batch]).squeeze(1) - yt[batch]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def first_blocks(model: cn.GreedyConvexBNNetwork, blocks: int) -> cn.GreedyConvexBNNetwork:
    """The greedy network of the first ``blocks`` blocks (greedy training makes it the model
    that n_blocks=blocks would fit)."""
    part = copy.copy(model)
    part.n_blocks, part.blocks_, part.hidden_ = blocks, model.blocks_[:blocks], model.hidden_[:blocks - 1]
    part.widths_ = model.widths_[:blocks - 1] + [model.blocks_[blocks - 1].n_neurons_]
    part.objectives_ = model.objectives_[:blocks]
    part.objective_ = part.objectives_[-1]
    return part


def _progress_lines() -> None:
    """The library logs each stage (grow rounds, training runs) at INFO; show those lines."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def main() -> None:
    _progress_lines()
    digits = load_digits()
    keep = np.isin(digits.target, (3, 8))
    X, y = digits.data[keep] / 16.0, np.where(digits.target[keep] == 8, 1.0, -1.0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    print(f"digits 3 vs 8: {len(X_train)} train / {len(X_test)} test, beta {BETA}, {PATTERNS} patterns per block")
    results = {}
    start = time.perf_counter()
    deepest = cn.GreedyConvexBNNetwork(cn.ConvexBNRegressor(beta=BETA, patterns=PATTERNS), n_blocks=3)
    deepest.fit(X_train, y_train)
    print(f"3 greedy blocks fitted in {time.perf_counter() - start:.1f} s; block objectives "
          + ", ".join(f"{v:.4f}" for v in deepest.objectives_))
    print(f"{'model':44} {'widths':>14} {'train acc':>9} {'test acc':>8} {'seconds':>8}")
    for blocks in (1, 2, 3):
        model = first_blocks(deepest, blocks)
        widths = "-".join(map(str, model.widths_))
        convex_test = accuracy(model.predict(X_test), y_test)
        print(f"{f'greedy convex, {blocks} block(s)':44} {widths:>14} {accuracy(model.predict(X_train), y_train):9.3f} "
              f"{convex_test:8.3f} {'':>8}")
        sgd_tests = []
        for seed in range(3):
            start = time.perf_counter()
            net = sgd_trained(model.to_module(), X_train, y_train, seed)
            with torch.no_grad():
                train_acc = accuracy(net(torch.from_numpy(X_train)).numpy().ravel(), y_train)
                test_acc = accuracy(net(torch.from_numpy(X_test)).numpy().ravel(), y_test)
            sgd_tests.append(test_acc)
            print(f"{f'SGD, same architecture, seed {seed}':44} {widths:>14} {train_acc:9.3f} {test_acc:8.3f} "
                  f"{time.perf_counter() - start:8.1f}")
        results[blocks] = (convex_test, sgd_tests)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    depth = list(results)
    ax.plot(depth, [results[b][0] for b in depth], marker="o", label="greedy convex")
    ax.errorbar(depth, [np.mean(results[b][1]) for b in depth],
                yerr=[np.std(results[b][1]) for b in depth], marker="s", capsize=4, label="SGD (3 seeds)")
    ax.set(xlabel="hidden BN-ReLU layers", ylabel="test accuracy", xticks=depth, title="digits 3 vs 8")
    ax.legend()
    print("wrote", save_figure(fig, FIGURE))


if __name__ == "__main__":
    main()
