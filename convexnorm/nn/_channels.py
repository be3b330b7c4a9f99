"""Per-channel tensor plumbing shared by the normalization layers, the preconditioner and
the diagnostics: channel dimension 1 of an (N, C, *) tensor."""

from __future__ import annotations

from torch import Tensor


def channel_groups(x: Tensor) -> Tensor:
    """(N, C, *) -> (C, N * prod(*)): each channel over the batch and positions."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def channel_view(t: Tensor, ndim: int) -> Tensor:
    """A per-channel vector shaped to broadcast over (N, C, *)."""
    return t.reshape(1, -1, *([1] * (ndim - 2)))


def channel_affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """y * weight_c + bias_c per channel (either may be None)."""
    if weight is not None:
        y = y * channel_view(weight, y.ndim)
    if bias is not None:
        y = y + channel_view(bias, y.ndim)
    return y
