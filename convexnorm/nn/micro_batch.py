"""Normalization for micro-batches (Qiao et al. 2019, docs/math.md, section 10).

- ``WeightStandardization`` / ``WSConv2d``: each output channel's kernel standardized,
  W_hat = (W - mean W) / sqrt(var W + eps), mean and biased variance over (C_in, kh, kw),
  as a ``torch.nn.utils.parametrize`` parametrization (the stored parameter is the raw W).
- ``EstimatedBatchNorm1d/2d``: BatchNorm with estimated statistics, updated without gradient
  in training (r = momentum; mu_old = the estimate before the update):

      mu_hat  <- (1 - r) mu_hat  + r mean(x)
      var_hat <- (1 - r) var_hat + r mean((x - mu_old)^2)
      out = (x - mu_hat) / sqrt(var_hat + eps)          (then the per-channel affine)

  so it trains with batch size 1.
- ``BatchChannelNorm2d``: per-group affine(GroupNorm without affine(BN(x))), BN with its
  per-channel affine first; ``estimated_stats=True`` is the micro-batch mode (BN part =
  ``EstimatedBatchNorm2d``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from convexnorm._validation import (check_count, check_device, check_dtype, check_float_tensor, check_momentum,
                                   check_positive)
from convexnorm.nn._channels import channel_affine, channel_groups, channel_view

#: Said when batch statistics are asked of a single sample.
SINGLE_SAMPLE_HINT = ("use estimated statistics (convexnorm.nn.EstimatedBatchNorm1d/2d, "
                      "BatchChannelNorm2d(estimated_stats=True)) or BN preconditioning (convexnorm.optim.BNP)")


class WeightStandardization(nn.Module):
    """Parametrization W -> (W - mean) / sqrt(var + eps) per output channel (dim 0)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = check_positive(eps, "WeightStandardization", "eps", allow_zero=True)

    def forward(self, weight: Tensor) -> Tensor:
        flat = weight.reshape(weight.shape[0], -1)
        if flat.shape[1] < 2:
            raise ValueError("WeightStandardization: each output channel has a single weight, which standardizes "
                             "to 0 whatever it is (use a kernel with more than one weight per output channel)")
        if self.eps == 0 and bool((flat.detach().var(dim=1) == 0).any()):
            raise ValueError("WeightStandardization: an output channel's weights are all equal and eps=0 (0/0); "
                             "use eps > 0")
        mean = flat.mean(dim=1, keepdim=True)
        var = flat.var(dim=1, unbiased=False, keepdim=True)
        return ((flat - mean) * torch.rsqrt(var + self.eps)).reshape(weight.shape)


class WSConv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` whose weight is weight-standardized (``weight_eps`` is the eps of
    ``WeightStandardization``); ``self.weight`` is the standardized kernel and the trained
    parameter is ``self.parametrizations.weight.original``."""

    def __init__(self, *args, weight_eps: float = 1e-5, **kwargs) -> None:
        standardization = WeightStandardization(weight_eps)
        super().__init__(*args, **kwargs)
        if self.weight[0].numel() < 2:
            raise ValueError(f"WSConv2d: a {tuple(self.kernel_size)} kernel on {self.in_channels // self.groups} input "
                             "channel(s) per group has a single weight per output channel, which weight "
                             "standardization maps to 0; use a larger kernel or more input channels")
        parametrize.register_parametrization(self, "weight", standardization)


def _check_batch_input(name: str, input: Tensor, dims: tuple[int, ...], num_features: int) -> None:
    check_float_tensor(input, name)
    if input.dim() not in dims:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}D' for d in dims)} input, got {input.dim()}D")
    if input.shape[1] != num_features:
        raise ValueError(f"{name}: expected {num_features} channels, got {input.shape[1]}")


class _EstimatedBatchNorm(nn.Module):
    """BatchNorm with estimated statistics; torch's constructor arguments and buffers
    (``momentum=None`` is the cumulative average, r = 1 / num_batches_tracked)."""

    _input_dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        momentum = check_momentum(momentum, name, allow_zero=False)
        factory = {"device": check_device(device, name), "dtype": check_dtype(dtype, name)}
        num_features = check_count(num_features, name, "num_features")
        eps = check_positive(eps, name, "eps", allow_zero=True)
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.weight = nn.Parameter(torch.ones(num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features, **factory)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def forward(self, input: Tensor) -> Tensor:
        _check_batch_input(type(self).__name__, input, self._input_dims, self.num_features)
        if self.training:
            with torch.no_grad():
                channels = channel_groups(input.detach())
                self.num_batches_tracked.add_(1)
                rate = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                old_mean = self.running_mean.clone()
                spread = ((channels - old_mean[:, None].to(channels)) ** 2).mean(dim=1)
                self.running_mean.mul_(1 - rate).add_(rate * channels.mean(dim=1).to(self.running_mean))
                self.running_var.mul_(1 - rate).add_(rate * spread.to(self.running_var))
        mean = channel_view(self.running_mean.to(input), input.dim())
        scale = channel_view(torch.rsqrt(self.running_var.to(input) + self.eps), input.dim())
        return channel_affine((input - mean) * scale, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class EstimatedBatchNorm1d(_EstimatedBatchNorm):
    """Estimated-statistics BatchNorm for (N, C) or (N, C, L) input."""

    _input_dims = (2, 3)


class EstimatedBatchNorm2d(_EstimatedBatchNorm):
    """Estimated-statistics BatchNorm for (N, C, H, W) input."""

    _input_dims = (4,)


class BatchChannelNorm2d(nn.Module):
    """Batch-Channel Normalization: ``weight_g * GN(BN(x)) + bias_g`` with G groups, the
    GroupNorm without affine and the per-group affine broadcast over the group's channels.
    ``estimated_stats=False`` uses batch statistics (torch's BatchNorm2d, needs batches of
    more than one sample in training); ``True`` is the micro-batch mode."""

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, estimated_stats: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = "BatchChannelNorm2d"
        check_count(num_channels, name, "num_channels")
        if check_count(num_groups, name, "num_groups") and num_channels % num_groups:
            raise ValueError(f"BatchChannelNorm2d: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        eps = check_positive(eps, name, "eps", allow_zero=True)
        check_momentum(momentum, name)
        factory = {"device": check_device(device, name), "dtype": check_dtype(dtype, name)}
        self.num_channels, self.num_groups, self.eps = num_channels, num_groups, eps
        self.affine, self.estimated_stats = affine, estimated_stats
        norm = EstimatedBatchNorm2d if estimated_stats else nn.BatchNorm2d
        self.batch_norm = norm(num_channels, eps=eps, momentum=momentum, affine=affine, **factory)
        self.weight = nn.Parameter(torch.ones(num_groups, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_groups, **factory)) if affine else None

    def forward(self, input: Tensor) -> Tensor:
        _check_batch_input("BatchChannelNorm2d", input, (4,), self.num_channels)
        if self.training and not self.estimated_stats and input.shape[0] < 2:
            raise ValueError(f"BatchChannelNorm2d: batch statistics need more than one sample in training "
                             f"(got batch size {input.shape[0]}); {SINGLE_SAMPLE_HINT}")
        out = F.group_norm(self.batch_norm(input), self.num_groups, eps=self.eps)
        if not self.affine:
            return out
        per_channel = self.num_channels // self.num_groups
        return channel_affine(out, self.weight.repeat_interleave(per_channel), self.bias.repeat_interleave(per_channel))

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, num_groups={self.num_groups}, eps={self.eps}, affine={self.affine}, "
                f"estimated_stats={self.estimated_stats}")
