"""Command-line interface: convexnorm demo (convex training vs Adam) and convexnorm layers.

Heavy imports (torch, cvxpy, scikit-learn) happen inside the commands, so that --help and
argument errors answer at once. Bad arguments print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Sequence

def _with_convex_norms(model, solver: str):
    """A copy of ``model`` whose torch BatchNorm layers are convexnorm's (same state dict)."""
    import copy

    import torch
    from torch import nn

    from convexnorm import nn as cnn

    replacements = {nn.BatchNorm1d: cnn.BatchNorm1d, nn.BatchNorm2d: cnn.BatchNorm2d}
    ours = copy.deepcopy(model)
    for name, child in list(ours.named_children()):
        if type(child) in replacements:
            replacement = replacements[type(child)](
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats,
                dtype=torch.float64, solver=solver,
            )
            replacement.load_state_dict(child.state_dict())
            setattr(ours, name, replacement)
        else:
            setattr(ours, name, _with_convex_norms(child, solver))
    return ours


def _step(model, x, y) -> tuple[dict, float]:
    """Outputs, gradients and buffers of one cross-entropy step, and its wall time."""
    from torch import nn

    x = x.clone().requires_grad_(True)
    start = time.perf_counter()
    logits = model(x)
    nn.functional.cross_entropy(logits, y).backward()
    elapsed = time.perf_counter() - start
    result = {"output": logits.detach(), "input grad": x.grad}
    result.update({f"grad {k}": p.grad for k, p in model.named_parameters()})
    result.update({f"buffer {k}": b.double() for k, b in model.named_buffers()})
    return result, elapsed


def layers(seed: int = 0, batch_size: int = 64, solver: str = "cvxpylayers") -> int:
    """Run digit classifiers with torch's BatchNorm and with ours; print the agreement."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

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
    print(f"convexnorm layers: {batch_size} scikit-learn digits, float64, solver={solver!r}")
    print(f"{'model':<20} {'mode':<6} {'quantity':<20} {'max abs diff':>12}")
    worst = 0.0
    for title, reference in models.items():
        reference = reference.double()
        ours = _with_convex_norms(reference, solver)
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


def _digit_pair(pair: tuple[int, int], components: int, seed: int):
    """Train/test split of two digit classes, labels +-1, projected on ``components`` principal axes."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    keep = np.isin(digits.target, pair)
    X, y = digits.data[keep] / 16.0, np.where(digits.target[keep] == pair[1], 1.0, -1.0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    pca = PCA(components, random_state=seed).fit(X_train)
    return pca.transform(X_train), pca.transform(X_test), y_train, y_test


def demo(pair: tuple[int, int] = (8, 9), components: int = 5, beta: float = 1e-2, patterns: int = 50,
         rounds: int = 6, steps: int = 2000, seed: int = 0, progress: bool = True) -> int:
    """Exact convex training of a BN-ReLU network on two digit classes vs Adam at the same width."""
    import numpy as np
    import torch

    from convexnorm.convex import ConvexBNClassifier, nonconvex_objective, train_nonconvex

    X_train, X_test, y_train, y_test = _digit_pair(pair, components, seed)
    print(f"convexnorm demo: digits {pair[0]} vs {pair[1]}, {len(y_train)} train / {len(y_test)} test samples, "
          f"{components} principal components, squared loss on +-1 labels, beta={beta}", flush=True)
    rows = []
    settings = dict(beta=beta, loss="squared", patterns=patterns, random_state=seed, solver="torch")
    start = time.perf_counter()
    convex = ConvexBNClassifier(**settings).fit(X_train, y_train)
    rows.append((f"convex, {len(convex.patterns_)} sampled patterns", convex.objective_, convex.score(X_train, y_train),
                 convex.score(X_test, y_test), convex.n_neurons_, time.perf_counter() - start))
    start = time.perf_counter()
    grown = ConvexBNClassifier(**settings, grow=True, max_rounds=rounds, progress=progress).fit(X_train, y_train)
    rows.append((f"convex + grow, {len(grown.patterns_)} patterns", grown.objective_, grown.score(X_train, y_train),
                 grown.score(X_test, y_test), grown.n_neurons_, time.perf_counter() - start))
    start = time.perf_counter()
    module, history = train_nonconvex(X_train, y_train, beta, width=grown.n_neurons_, steps=steps, seed=seed,
                                      progress=progress)
    with torch.no_grad():
        scores = [module(torch.from_numpy(X)).numpy().ravel() for X in (X_train, X_test)]
    rows.append((f"Adam, {steps} full-batch steps", history.objective[-1], np.mean((scores[0] > 0) == (y_train > 0)),
                 np.mean((scores[1] > 0) == (y_test > 0)), grown.n_neurons_, time.perf_counter() - start))
    print(f"{'model':<36} {'objective':>10} {'train acc':>9} {'test acc':>9} {'neurons':>8} {'seconds':>8}")
    for name, objective, train_acc, test_acc, neurons, seconds in rows:
        print(f"{name:<36} {objective:10.4f} {train_acc:9.3f} {test_acc:9.3f} {neurons:8d} {seconds:8.1f}")
    recovered = nonconvex_objective(grown.to_module(), X_train, y_train, beta).item()
    certificate = grown.certify(method="probe", random_state=seed + 100)[0]
    print(f"recovered torch network: objective {recovered:.6f} (convex {grown.objective_:.6f})")
    if certificate.violated:
        verdict = (f"not optimal over all patterns: the probe found a dual value of {certificate.max_dual_value:.4g} "
                   f"> beta {beta}")
    else:
        verdict = (f"no violation found by the probe (largest dual value {certificate.max_dual_value:.4g}, beta "
                   f"{beta}); this is evidence, not a proof")
    print(f"certificate ({certificate.n_probes} probe starts): {verdict}; lower-bound estimate "
          f"{certificate.lower_bound_estimate:.4f} (a bound only if no larger dual value exists)")
    return 0 if abs(recovered - grown.objective_) <= 1e-5 * abs(grown.objective_) else 1


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (exit status 2, no usage block)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(minimum: int):
    """An argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _digit(text: str) -> int:
    value = _count(0)(text)
    if value > 9:
        raise argparse.ArgumentTypeError(f"digits are 0-9, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="convexnorm", description="The convex-optimization view of batch normalization: "
                     "demonstrations on scikit-learn's digits (offline).",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo_parser = commands.add_parser("demo", help="convex training of a BN-ReLU network vs Adam on two digit classes",
                                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo_parser.add_argument("--pair", type=_digit, nargs=2, default=(8, 9), metavar=("NEG", "POS"),
                             help="the two digit classes (labels -1 and +1)")
    demo_parser.add_argument("--components", type=_count(1), default=5, help="principal components of the pixels")
    demo_parser.add_argument("--beta", type=_positive_float, default=1e-2, help="weight decay of the network")
    demo_parser.add_argument("--patterns", type=_count(1), default=50, help="sampled gate vectors before growing")
    demo_parser.add_argument("--rounds", type=_count(0), default=6, help="column-generation rounds")
    demo_parser.add_argument("--steps", type=_count(1), default=2000, help="Adam steps of the baseline")
    demo_parser.add_argument("--seed", type=_count(0), default=0, help="seed of the split, patterns and Adam")
    layers_parser = commands.add_parser("layers", help="compare convexnorm's BatchNorm with torch's on digits",
                                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    layers_parser.add_argument("--seed", type=_count(0), default=0, help="seed of the models' initialization")
    layers_parser.add_argument("--batch-size", type=_count(2), default=64, help="digits in the batch")
    layers_parser.add_argument("--solver", choices=("cvxpylayers", "torch"), default="cvxpylayers",
                               help="how the layers compute the normalization")
    args = parser.parse_args(argv)
    interactive = sys.stderr.isatty()
    if not interactive:  # piped: one line per stage on stderr instead of progress bars
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        library = logging.getLogger("convexnorm")
        library.addHandler(handler)
        library.setLevel(logging.INFO)
    try:
        if args.command == "demo":
            return demo(tuple(args.pair), args.components, args.beta, args.patterns, args.rounds, args.steps,
                        args.seed, progress=interactive)
        return layers(args.seed, args.batch_size, args.solver)
    except ValueError as error:  # bad input found by the library (e.g. a batch too large for a solver)
        print(f"convexnorm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
