"""Command-line interface: ``convexnorm demo``."""

from __future__ import annotations

import argparse
import copy
import time
from typing import Sequence

import torch
from sklearn.datasets import load_digits
from torch import nn

from convexnorm import nn as cnn

_REPLACEMENTS = {nn.BatchNorm1d: cnn.BatchNorm1d, nn.BatchNorm2d: cnn.BatchNorm2d}


def _with_convex_norms(model: nn.Module, backend: str) -> nn.Module:
    """A copy of ``model`` whose torch BatchNorm layers are convexnorm's (same state dict)."""
    ours = copy.deepcopy(model)
    for name, child in list(ours.named_children()):
        if type(child) in _REPLACEMENTS:
            replacement = _REPLACEMENTS[type(child)](
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats,
                dtype=torch.float64, backend=backend,
            )
            replacement.load_state_dict(child.state_dict())
            setattr(ours, name, replacement)
        else:
            setattr(ours, name, _with_convex_norms(child, backend))
    return ours


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
    """Outputs, gradients and buffers of one cross-entropy step, and its wall time."""
    x = x.clone().requires_grad_(True)
    start = time.perf_counter()
    logits = model(x)
    nn.functional.cross_entropy(logits, y).backward()
    elapsed = time.perf_counter() - start
    result = {"output": logits.detach(), "input grad": x.grad}
    result.update({f"grad {k}": p.grad for k, p in model.named_parameters()})
    result.update({f"buffer {k}": b.double() for k, b in model.named_buffers()})
    return result, elapsed


def demo(seed: int = 0, batch_size: int = 64, backend: str = "cvxpylayers") -> int:
    """Run digit classifiers with torch's BatchNorm and with ours; print the agreement."""
    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.tensor(digits.data[:batch_size] / 16.0, dtype=torch.float64)
    y = torch.tensor(digits.target[:batch_size])
    models = {
        "MLP (BatchNorm1d)": nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)),
        "CNN (BatchNorm2d)": nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Flatten(), nn.Linear(8 * 64, 10),
        ),
    }
    print(f"convexnorm demo: {batch_size} scikit-learn digits, float64, backend={backend!r}")
    print(f"{'model':<20} {'mode':<6} {'quantity':<20} {'max abs diff':>12}")
    worst = 0.0
    for title, reference in models.items():
        reference = reference.double()
        ours = _with_convex_norms(reference, backend)
        for mode in ("train", "eval"):
            reference.train(mode == "train")
            ours.train(mode == "train")
            reference.zero_grad()
            ours.zero_grad()
            expected, t_ref = _step(reference, x, y)
            got, t_ours = _step(ours, x, y)
            rows: dict[str, float] = {}
            for key, value in expected.items():
                row = key if key in ("output", "input grad") else key.split(" ")[0]
                rows[row] = max(rows.get(row, 0.0), (got[key] - value).abs().max().item())
            labels = {"grad": "parameter grads", "buffer": "running statistics"}
            for row, diff in rows.items():
                if row == "grad" and mode == "eval":
                    continue
                worst = max(worst, diff)
                print(f"{title:<20} {mode:<6} {labels.get(row, row):<20} {diff:12.2e}")
            print(f"{title:<20} {mode:<6} {'time ours / torch':<20} {t_ours * 1e3:9.1f} ms / {t_ref * 1e3:.1f} ms")
    print(f"largest difference over all outputs, gradients and running statistics: {worst:.2e}")
    return 0 if worst < 1e-6 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convexnorm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="compare convexnorm's BatchNorm with torch's on digits")
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.add_argument("--batch-size", type=int, default=64)
    demo_parser.add_argument("--backend", choices=cnn.normalization.BACKENDS, default="cvxpylayers")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.seed, args.batch_size, args.backend)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
