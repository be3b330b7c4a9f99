"""PNG figures of the diagnostics. Each helper takes a dict label -> result of the matching
``convexnorm.diagnostics`` function and returns the path. Figures are plain
``matplotlib.figure.Figure`` objects rendered by Agg: the user's pyplot backend and state are
never touched."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure


def _figure(**options):
    """A new (figure, axes) outside pyplot (subplots options as keyword arguments)."""
    fig = Figure(figsize=options.pop("figsize", (5, 3.5)))
    return fig, fig.subplots(**options)


def _check_results(results, owner: str) -> None:
    if not isinstance(results, dict) or not results:
        raise ValueError(f"{owner}: expected a nonempty dict label -> result, got {results!r}")


def save_figure(fig, path: str | Path) -> Path:
    """Lay out and write ``fig`` as PNG (parent folders created); a pyplot figure is closed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    if getattr(fig.canvas, "manager", None) is not None:  # made by pyplot: release it there
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def plot_learning_rate_sweep(sweeps: dict[str, dict], path: str | Path) -> Path:
    """Test (else training) accuracy over the learning rate, or the final loss when the
    targets are not classes; diverged runs marked x."""
    _check_results(sweeps, "plot_learning_rate_sweep")
    fig, ax = _figure(figsize=(5, 3.5))
    first = next(iter(sweeps.values()))
    key = next((k for k in ("test_accuracy", "train_accuracy") if first[k][0] is not None), "final_loss")
    for label, sweep in sweeps.items():
        values = [math.nan if d else v for v, d in zip(sweep[key], sweep["diverged"])]
        line, = ax.plot(sweep["learning_rates"], values, marker="o", label=label)
        bad = [lr for lr, d in zip(sweep["learning_rates"], sweep["diverged"]) if d]
        ax.plot(bad, [0.0 if key != "final_loss" else 1.0] * len(bad), "x", color=line.get_color(), markersize=9)
    ax.set_xscale("log")
    if key == "final_loss":
        ax.set_yscale("log")
    ax.set(xlabel="learning rate", ylabel=f"{key.replace('_', ' ')} (x: diverged)", title="learning-rate sweep")
    ax.legend()
    return save_figure(fig, path)


def plot_relative_loss(results: dict[str, dict], path: str | Path) -> Path:
    """loss_after / loss_before of one step over the step size, log-log, divergence line."""
    _check_results(results, "plot_relative_loss")
    fig, ax = _figure(figsize=(5, 3.5))
    low, high = 1.0, 1e4
    for label, result in results.items():
        ratios = [min(r, 1e40) for r in result["relative_loss"]]  # inf (overflow) drawn at 1e40
        ax.loglog(result["step_sizes"], ratios, marker="o", label=label)
        low, high = min(low, *ratios), max(high, *ratios)
    ax.axhline(1e3, color="gray", linestyle="--", label="divergence (1e3)")
    ax.set_ylim(low / 2, high * 10)
    ax.set(xlabel="step size", ylabel="relative loss after one step", title="one SGD step at initialization")
    ax.legend()
    return save_figure(fig, path)


def _per_layer(ax, stats: dict[str, list[dict]], solid: tuple[str, str], dashed: tuple[str, str]) -> None:
    """Two per-layer series (key, legend name) for every label, one colour per label."""
    for label, layers in stats.items():
        depth = range(1, len(layers) + 1)
        line, = ax.plot(depth, [s[solid[0]] for s in layers], marker="o", label=f"{label}: {solid[1]}")
        ax.plot(depth, [s[dashed[0]] for s in layers], marker="s", linestyle="--", color=line.get_color(),
                label=f"{label}: {dashed[1]}")


def plot_activation_statistics(stats: dict[str, list[dict]], path: str | Path) -> Path:
    """Mean channel std and mean |channel mean| per layer (log scale)."""
    _check_results(stats, "plot_activation_statistics")
    fig, ax = _figure(figsize=(5, 3.5))
    _per_layer(ax, stats, ("mean_std", "std"), ("mean_abs_mean", "|mean|"))
    ax.set_yscale("log")
    ax.set(xlabel="layer", ylabel="activation statistic (channel average)", title="activations at initialization")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_gradient_statistics(stats: dict[str, dict], path: str | Path) -> Path:
    """Histogram of the pairwise cosines of the last layer's per-sample gradients."""
    _check_results(stats, "plot_gradient_statistics")
    fig, ax = _figure(figsize=(5, 3.5))
    for label, result in stats.items():
        ax.hist(result["cosines"].cpu().numpy(), bins=40, range=(-1, 1), alpha=0.5,
                label=f"{label} (alignment {result['alignment']:.2f})")
    ax.set(xlabel="cosine between per-sample gradients", ylabel="pairs", title="last-layer gradients")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_channel_singularities(stats: dict[str, list[dict]], path: str | Path) -> Path:
    """Fraction of dead and of constant channels per layer."""
    _check_results(stats, "plot_channel_singularities")
    fig, ax = _figure(figsize=(5, 3.5))
    _per_layer(ax, stats, ("dead_fraction", "dead"), ("constant_fraction", "constant"))
    ax.set(xlabel="layer", ylabel="fraction of channels", ylim=(-0.05, 1.05), title="elimination singularities")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_spectral_bias(result: dict, path: str | Path) -> Path:
    """Fitted fraction of each singular direction's target component over GD steps."""
    fig, ax = _figure(figsize=(5, 3.5))
    for i in result["directions"]:
        ax.plot(result["steps"], result["fit"][:, i], label=f"u_{i + 1} (s = {result['singular_values'][i]:.3g})")
    ax.axhline(1.0, color="gray", linestyle="--")
    ax.set(xlabel="gradient-descent step", ylabel="fitted fraction u_i^T f / u_i^T y", title="spectral bias of GD")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
