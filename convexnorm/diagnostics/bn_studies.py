"""The measurements of "Understanding Batch Normalization" (Bjorck et al., NeurIPS 2018) and of
the elimination-singularity view (Qiao et al. 2019); docs/math.md, section 10.

Every function returns plain data (dicts of lists / tensors); ``convexnorm.diagnostics.plots``
draws them.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from convexnorm._validation import check_count, check_float_tensor, check_step_sizes
from convexnorm.nn._channels import channel_groups

#: One SGD step diverges when the loss grows by more than this factor (Bjorck et al.).
DIVERGENCE_RATIO = 1e3

LossFunction = Callable[[Tensor, Tensor], Tensor]


def _check_data(owner: str, inputs: Tensor, targets: Tensor | None = None) -> None:
    """Nonempty finite floating-point inputs and, when given, one target per input."""
    check_float_tensor(inputs, owner, "inputs")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"{owner}: inputs are empty (shape {tuple(inputs.shape)}); need at least one sample")
    if targets is not None:
        if not isinstance(targets, Tensor) or targets.dim() == 0 or targets.shape[0] != inputs.shape[0]:
            shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"{owner}: need one target per input ({inputs.shape[0]}), got targets of shape {shape}")
        if targets.is_floating_point() and not torch.isfinite(targets).all():
            raise ValueError(f"{owner}: targets contain NaN or Inf")


def relative_loss(model: nn.Module, inputs: Tensor, targets: Tensor, step_sizes: Sequence[float],
                  loss_fn: LossFunction = F.cross_entropy, divergence: float = DIVERGENCE_RATIO) -> dict:
    """loss_after / loss_before of one SGD step of each size on (inputs, targets), each from a
    copy of ``model`` (in its current mode); ``diverged`` when the ratio exceeds ``divergence``
    or the loss is not finite. The model itself is not changed."""
    _check_data("relative_loss", inputs, targets)
    step_sizes = check_step_sizes(step_sizes, "relative_loss", "step_sizes")
    ratios, diverged = [], []
    for step in step_sizes:
        trial = copy.deepcopy(model)
        loss = loss_fn(trial(inputs), targets)
        grads = torch.autograd.grad(loss, [p for p in trial.parameters() if p.requires_grad])
        with torch.no_grad():
            for p, g in zip((p for p in trial.parameters() if p.requires_grad), grads):
                p.sub_(step * g)
            after = loss_fn(trial(inputs), targets)
        ratio = float(after) / float(loss.detach()) if math.isfinite(float(after)) else math.inf
        ratios.append(ratio)
        diverged.append(not ratio <= divergence)
    return {"step_sizes": list(map(float, step_sizes)), "relative_loss": ratios, "diverged": diverged}


def _channel_moments(channels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (biased) std of each row of ``channel_groups(x)``: per channel (dim 1; the
    last dim of a 2D input) over everything else."""
    return channels.mean(dim=1), channels.std(dim=1, unbiased=False)


def _record(model: nn.Module, inputs: Tensor, modules: tuple[type, ...], use_input: bool) -> list[tuple[str, Tensor]]:
    """Outputs (or inputs) of the modules of the given types, in call order, for one forward."""
    seen: list[tuple[str, Tensor]] = []
    names = {m: name for name, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((names[m], (i[0] if use_input else o).detach())))
             for m in model.modules() if isinstance(m, modules)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def activation_statistics(model: nn.Module, inputs: Tensor,
                          modules: tuple[type, ...] = (nn.Linear, nn.Conv2d)) -> list[dict]:
    """Per layer (outputs of the modules of type ``modules``, in call order): the name, the
    per-channel mean and std over the batch (and positions), and their averages
    ``mean_abs_mean`` and ``mean_std``. The model's mode decides batch or running statistics."""
    _check_data("activation_statistics", inputs)
    stats = []
    for name, out in _record(model, inputs, modules, use_input=False):
        mean, std = _channel_moments(channel_groups(out))
        stats.append({"name": name, "mean": mean, "std": std,
                      "mean_abs_mean": float(mean.abs().mean()), "mean_std": float(std.mean())})
    return stats


def gradient_statistics(model: nn.Module, inputs: Tensor, targets: Tensor,
                        loss_fn: LossFunction = F.cross_entropy) -> dict:
    """Per-sample gradients of the last ``nn.Linear`` layer's weight: with h_i its input and
    delta_i = d loss_i / d out_i, g_i = delta_i h_i^T (exact when nothing after that layer
    mixes samples). Returns the gradients (N, out*in), their norms, the mean pairwise cosine
    similarity and the alignment ||mean g_i|| / mean ||g_i|| (1: all point the same way)."""
    _check_data("gradient_statistics", inputs, targets)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("gradient_statistics: the model has no nn.Linear layer")
    last, captured = linears[-1], {}

    def keep(module, args, output):
        captured["input"], captured["output"] = args[0], output
    hook = last.register_forward_hook(keep)
    try:
        outputs = model(inputs)
    finally:
        hook.remove()
    try:
        losses = loss_fn(outputs, targets, reduction="none")
    except TypeError as error:
        raise ValueError("gradient_statistics: loss_fn must accept reduction='none'") from error
    if losses.shape != (inputs.shape[0],):
        raise ValueError("gradient_statistics: loss_fn(reduction='none') must return one loss per sample")
    (delta,) = torch.autograd.grad(losses.sum(), captured["output"])
    h = captured["input"].detach()
    grads = (delta.detach()[:, :, None] * h[:, None, :]).reshape(inputs.shape[0], -1)
    norms = torch.linalg.norm(grads, dim=1)
    unit = grads / norms.clamp_min(torch.finfo(grads.dtype).tiny)[:, None]
    n = grads.shape[0]
    cosine = unit @ unit.T
    mean_cosine = float((cosine.sum() - cosine.diagonal().sum()) / max(n * (n - 1), 1))
    alignment = float(torch.linalg.norm(grads.mean(dim=0)) / norms.mean().clamp_min(torch.finfo(grads.dtype).tiny))
    return {"gradients": grads, "norms": norms, "mean_cosine": mean_cosine, "alignment": alignment,
            "cosines": cosine[~torch.eye(n, dtype=torch.bool)]}


def channel_singularities(model: nn.Module, inputs: Tensor, modules: tuple[type, ...] = (nn.ReLU,),
                          dead_fraction: float = 0.99, constant_tol: float = 1e-2) -> list[dict]:
    """Elimination singularities per layer, from the inputs of the modules of type ``modules``
    (the pre-activations of the ReLUs by default): per channel the fraction of negative values,
    the mean and std; a channel is dead when at least ``dead_fraction`` of its values are
    negative, constant when std <= constant_tol * sqrt(mean^2 + std^2)."""
    _check_data("channel_singularities", inputs)
    layers = []
    for name, x in _record(model, inputs, modules, use_input=True):
        channels = channel_groups(x)
        negative = (channels < 0).to(x.dtype).mean(dim=1)
        mean, std = _channel_moments(channels)
        dead = negative >= dead_fraction
        constant = std <= constant_tol * torch.sqrt(mean**2 + std**2)
        layers.append({"name": name, "negative_fraction": negative, "mean": mean, "std": std,
                       "dead_fraction": float(dead.to(x.dtype).mean()),
                       "constant_fraction": float(constant.to(x.dtype).mean())})
    return layers


def learning_rate_sweep(make_model: Callable[[], nn.Module], inputs: Tensor, targets: Tensor,
                        learning_rates: Sequence[float], epochs: int = 5, batch_size: int = 64, seed: int = 0,
                        loss_fn: LossFunction = F.cross_entropy, test: tuple[Tensor, Tensor] | None = None,
                        divergence: float = DIVERGENCE_RATIO, progress: bool | None = None) -> dict:
    """Train a fresh ``make_model()`` (built after ``torch.manual_seed(seed)``) with plain SGD at
    each learning rate, shuffling with the same seed. Per rate: the final training loss, the
    training and test accuracy (argmax, for integer class targets) and ``diverged`` (loss not finite or above
    ``divergence`` times the initial loss, training stops there)."""
    _check_data("learning_rate_sweep", inputs, targets)
    learning_rates = check_step_sizes(learning_rates, "learning_rate_sweep", "learning_rates")
    check_count(epochs, "learning_rate_sweep", "epochs")
    check_count(batch_size, "learning_rate_sweep", "batch_size")
    results = {"learning_rates": list(map(float, learning_rates)), "final_loss": [], "train_accuracy": [],
               "test_accuracy": [], "diverged": []}
    for lr in tqdm(learning_rates, desc="learning rates", disable=None if progress is None else not progress):
        torch.manual_seed(seed)
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        with torch.no_grad():
            initial = float(loss_fn(model(inputs), targets))
        diverged = False
        for _ in range(epochs):
            for batch in minibatches(inputs.shape[0], batch_size, generator):
                loss = loss_fn(model(inputs[batch]), targets[batch])
                value = float(loss.detach())
                if not math.isfinite(value) or value > divergence * initial:
                    diverged = True
                    break
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if diverged:
                break
        model.eval()
        with torch.no_grad():
            final = float(loss_fn(model(inputs), targets))
        diverged = diverged or not math.isfinite(final) or final > divergence * initial
        results["final_loss"].append(final)
        results["train_accuracy"].append(accuracy(model, inputs, targets))
        results["test_accuracy"].append(accuracy(model, *test) if test is not None else None)
        results["diverged"].append(diverged)
    return results


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Indices of one shuffled pass over n samples in batches of ``batch_size`` (a last,
    smaller batch is dropped, as batch statistics need full batches)."""
    check_count(n, "minibatches", "n")
    check_count(batch_size, "minibatches", "batch_size")
    order = torch.randperm(n, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start:start + batch_size]


def accuracy(model: nn.Module, inputs: Tensor, targets: Tensor) -> float | None:
    """Argmax accuracy in eval mode (the model's mode is restored) for integer class
    targets; None for other targets, NaN when the outputs are not finite."""
    _check_data("accuracy", inputs, targets)
    if targets.dtype not in (torch.int64, torch.int32):
        return None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outputs = model(inputs)
    model.train(was_training)
    if not torch.isfinite(outputs).all():
        return float("nan")
    return float((outputs.argmax(dim=1) == targets).to(torch.float64).mean())
