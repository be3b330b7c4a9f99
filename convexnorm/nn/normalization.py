"""Normalization layers whose standardization is a convex program (docs/math.md, section 11).

Each layer cuts its input into groups (a channel over the batch for BatchNorm, a
sample's features for LayerNorm, a sample's channel group for GroupNorm), maps
every group x to z*(x) = (x - mean x) / sqrt(var x + eps) and applies the affine
map in torch. ``solver="cvxpylayers"`` computes z* by solving the program of
``convexnorm.programs.standardization_program`` for all groups in one batched
cvxpylayers call (gradients by implicit differentiation); ``solver="torch"``
computes the same numbers directly in torch.

Constructor arguments, parameters, buffers and ``state_dict`` keys are those of
the torch classes of the same name.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import cvxpy as cp
import torch
from torch import Tensor, nn

from convexnorm._validation import check_count, check_device, check_dtype, check_float_tensor, check_momentum, \
    check_options, check_positive
from convexnorm.nn._channels import channel_affine, channel_groups, channel_view
from convexnorm.solvers.cvxpylayers_backend import program_units, solve_program
from convexnorm.nn.micro_batch import SINGLE_SAMPLE_HINT
from convexnorm.programs import NormalizationProgram, standardization_program

SOLVERS = ("cvxpylayers", "torch")
#: Largest group the program backend accepts: cvxpylayers' canonical data grows as n^2
#: (measured: 4.4 GB peak for one group of 16,384 numbers, 14 s).
MAX_PROGRAM_GROUP = 8192

ProgramBuilder = Callable[[int], "NormalizationProgram | tuple[cp.Problem, cp.Parameter, cp.Variable]"]


def _ungroup_channels(z: Tensor, shape: torch.Size) -> Tensor:
    return z.reshape(shape[1], shape[0], *shape[2:]).transpose(0, 1)


class _NormBase(nn.Module):
    """Runs the normalization program of each group through the chosen backend."""

    def __init__(self, solver: str, solver_options: Mapping[str, Any] | None) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"{type(self).__name__}: solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver
        self.solver_options = check_options(solver_options, type(self).__name__, "solver_options")

    @property
    def _name(self) -> str:
        return type(self).__name__

    def _factory(self, device, dtype) -> dict:
        """The validated ``device``/``dtype`` constructor arguments."""
        return {"device": check_device(device, self._name), "dtype": check_dtype(dtype, self._name)}

    def _init_affine(self, shape: int | tuple[int, ...], weight: bool, bias: bool, factory: dict) -> None:
        """``weight`` (ones) and ``bias`` (zeros) of ``shape``, or registered as None, as in torch."""
        if weight:
            self.weight = nn.Parameter(torch.ones(shape, **factory))
        else:
            self.register_parameter("weight", None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(shape, **factory))
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _program(self, n: int) -> NormalizationProgram:
        raise NotImplementedError

    def _native(self, groups: Tensor) -> Tensor:
        raise NotImplementedError

    def _check_finite(self, input: Tensor) -> None:
        """A finite floating-point tensor."""
        check_float_tensor(input, self._name)

    def _check_channels(self, input: Tensor, channels: int, min_dim: int = 2) -> None:
        if input.dim() < min_dim:
            raise ValueError(f"{self._name}: expected at least {min_dim}D input, got {input.dim()}D")
        if input.shape[1] != channels:
            raise ValueError(
                f"{self._name}: expected {channels} channels (dim 1), got input of shape {tuple(input.shape)}"
            )

    def _normalize(self, groups: Tensor) -> Tensor:
        """Normalize every row of ``groups`` (G, n); raises before any state changes."""
        if self.solver == "torch":
            return self._native(groups)
        if groups.shape[1] > MAX_PROGRAM_GROUP:
            raise ValueError(f"{self._name}: a group of {groups.shape[1]:,} numbers is too large for "
                             f"solver='cvxpylayers' (at most {MAX_PROGRAM_GROUP:,}: its canonical program grows as "
                             "the square of the group size); use solver='torch' or a smaller batch")
        return self._solve(groups)

    def _solve(self, groups: Tensor) -> Tensor:
        """The program's z* of every row of ``groups`` (G, n), through cvxpylayers."""
        return solve_program(self._program(groups.shape[1]), groups, owner=self._name,
                             solver_options=self.solver_options)

    def extra_repr(self) -> str:
        return f"solver={self.solver!r}"


class _Standardize(_NormBase):
    """Groups standardized to zero mean and unit variance: z = (x - mean) / sqrt(var + eps)."""

    def __init__(self, eps: float, solver: str, solver_options: Mapping[str, Any] | None) -> None:
        super().__init__(solver, solver_options)
        self.eps = check_positive(eps, type(self).__name__, "eps", allow_zero=True)

    def _program(self, n: int) -> NormalizationProgram:
        return standardization_program(n, float(self.eps))

    def _native(self, groups: Tensor) -> Tensor:
        mean = groups.mean(dim=1, keepdim=True)
        var = groups.var(dim=1, unbiased=False, keepdim=True)
        return (groups - mean) * torch.rsqrt(var + self.eps)

    def _check_variance(self, variance: Tensor, what: str) -> None:
        if self.eps == 0 and (variance == 0).any():
            index = int(torch.nonzero(variance == 0)[0, 0])
            raise ValueError(
                f"{self._name}: {what} {index} has zero variance and eps=0, so its normalization "
                "is undefined; use eps > 0"
            )

    def _normalize(self, groups: Tensor) -> Tensor:
        self._check_variance(groups.detach().var(dim=1, unbiased=False), "group")
        return super()._normalize(groups)

    def _solve(self, groups: Tensor) -> Tensor:
        """z* of every group in its own units: centered by its mean m and divided by s = ``program_units`` of
        sqrt(var + eps) (the size of the program's dual, ||(x - m, c)|| / sqrt(n)), solved at eps / s^2 (z*(x) at
        eps is z*((x - m) / s) at eps / s^2, exactly, for m and s held fixed, so the gradient is exact too): groups
        of each unit in one batched call. In the data's own units diffcp's adjoint lost accuracy with their size
        (BatchNorm1d's gradient was 1.3e-5 off torch's for inputs of size 1e3 and 50% off at 1e6, 1.7e-6 for
        inputs shifted by 1e3; docs/benchmarks.md, session 27)."""
        with torch.no_grad():
            mean = groups.mean(dim=1, keepdim=True)
            size = ((groups - mean).square().mean(dim=1) + float(self.eps)).sqrt()
            units = program_units(size)
        centered = groups - mean
        parts, rows = [], []
        for scale in units.unique().tolist():
            chosen = torch.nonzero(units == scale).squeeze(1)
            # eps / s / s: s^2 may leave float range where eps = 0 (the only case whose powers go below eps's)
            program = standardization_program(groups.shape[1], float(self.eps) / scale / scale)
            parts.append(solve_program(program, centered[chosen] / scale, owner=self._name,
                                       solver_options=self.solver_options))
            rows.append(chosen)
        return torch.cat(parts)[torch.argsort(torch.cat(rows))]


class _BatchNorm(_Standardize):
    """Batch normalization over (N, C, *) inputs, with torch's running statistics."""

    _version = 2

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        solver: str = "cvxpylayers",
        solver_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(eps, solver, solver_options)
        factory = self._factory(device, dtype)
        self.num_features = check_count(num_features, self._name, "num_features", minimum=0)
        self.momentum = check_momentum(momentum, self._name)
        self.affine = affine
        self.track_running_stats = track_running_stats
        self._init_affine(num_features, affine, affine, factory)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, **{k: v for k, v in factory.items() if k != "dtype"}),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        super().reset_parameters()

    def _check_input_dim(self, input: Tensor) -> None:
        raise NotImplementedError

    def _update_running_stats(self, groups: Tensor) -> None:
        """running = (1 - f) running + f batch, f = momentum or 1 / num_batches_tracked;
        the stored variance is the unbiased one, as in torch."""
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            mean = groups.mean(dim=1)
            var = groups.var(dim=1, unbiased=True)
            self.running_mean.mul_(1 - factor).add_(factor * mean.to(self.running_mean.dtype))
            self.running_var.mul_(1 - factor).add_(factor * var.to(self.running_var.dtype))

    def forward(self, input: Tensor) -> Tensor:
        self._check_finite(input)
        self._check_input_dim(input)
        self._check_channels(input, self.num_features)
        if self.training or self.running_mean is None:
            groups = channel_groups(input)
            if self.training and groups.shape[1] <= 1:
                raise ValueError(
                    f"{self._name}: expected more than 1 value per channel when training, "
                    f"got input size {tuple(input.shape)}; {SINGLE_SAMPLE_HINT}"
                )
            normalized = _ungroup_channels(self._normalize(groups), input.shape)
            if self.training and self.track_running_stats:
                self._update_running_stats(groups)
        else:
            self._check_variance(self.running_var, "channel (running variance)")
            mean = channel_view(self.running_mean, input.dim())
            var = channel_view(self.running_var, input.dim())
            normalized = (input - mean) * torch.rsqrt(var + self.eps)
        return channel_affine(normalized, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}, {super().extra_repr()}"
        )


class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d`` (input (N, C) or (N, C, L)) with the program backend."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"{self._name}: expected 2D or 3D input (got {input.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d`` (input (N, C, H, W)) with the program backend."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"{self._name}: expected 4D input (got {input.dim()}D input)")


class LayerNorm(_Standardize):
    """``torch.nn.LayerNorm``: each sample standardized over the trailing ``normalized_shape``."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        solver: str = "cvxpylayers",
        solver_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(eps, solver, solver_options)
        factory = self._factory(device, dtype)
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(check_count(size, self._name, "normalized_shape") for size in normalized_shape)
        self.elementwise_affine = elementwise_affine
        self._init_affine(self.normalized_shape, elementwise_affine, elementwise_affine and bias, factory)

    def forward(self, input: Tensor) -> Tensor:
        self._check_finite(input)
        k = len(self.normalized_shape)
        if input.dim() < k or tuple(input.shape[input.dim() - k :]) != self.normalized_shape:
            raise ValueError(
                f"{self._name}: expected input with trailing shape {self.normalized_shape}, "
                f"got {tuple(input.shape)}"
            )
        groups = input.reshape(-1, math.prod(self.normalized_shape))
        out = self._normalize(groups).reshape(input.shape)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"{super().extra_repr()}"
        )


class GroupNorm(_Standardize):
    """``torch.nn.GroupNorm``: each sample's channel group standardized, per-channel affine."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        solver: str = "cvxpylayers",
        solver_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(eps, solver, solver_options)
        check_count(num_groups, "GroupNorm", "num_groups")
        check_count(num_channels, "GroupNorm", "num_channels")
        if num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        factory = self._factory(device, dtype)
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.affine = affine
        self._init_affine(num_channels, affine, affine, factory)

    def forward(self, input: Tensor) -> Tensor:
        self._check_finite(input)
        self._check_channels(input, self.num_channels)
        groups = input.reshape(input.shape[0] * self.num_groups, -1)
        out = self._normalize(groups).reshape(input.shape)
        return channel_affine(out, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, {super().extra_repr()}"


class ProgramNorm(_NormBase):
    """Normalization by a user's DPP program, differentiated through cvxpylayers.

    ``program(n)`` returns a :class:`~convexnorm.programs.NormalizationProgram` (or a
    tuple ``(problem, x, z)``) for groups of n numbers; it is called once per group
    size. Groups are BatchNorm's (each channel over the batch and positions, batch
    statistics in train and eval mode) when ``num_groups`` is None, else GroupNorm's
    (``num_groups=1``: each sample over all its channels and positions). A
    per-channel affine map follows when ``affine``.
    """

    def __init__(
        self,
        program: ProgramBuilder,
        num_channels: int,
        num_groups: int | None = None,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        solver_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__("cvxpylayers", solver_options)
        if not callable(program):
            raise ValueError("ProgramNorm: program must be a callable n -> NormalizationProgram")
        check_count(num_channels, "ProgramNorm", "num_channels")
        if num_groups is not None and (check_count(num_groups, "ProgramNorm", "num_groups") < 1
                                       or num_channels % num_groups != 0):
            raise ValueError(f"ProgramNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        factory = self._factory(device, dtype)
        self.program = program
        self.num_channels = num_channels
        self.num_groups = num_groups
        self.affine = affine
        self._programs: dict[int, NormalizationProgram] = {}
        self._init_affine(num_channels, affine, affine, factory)

    def _program(self, n: int) -> NormalizationProgram:
        if n not in self._programs:
            built = self.program(n)
            if not isinstance(built, NormalizationProgram):
                try:
                    problem, x, z = built
                except (TypeError, ValueError) as error:
                    raise ValueError(
                        "ProgramNorm: program(n) must return a NormalizationProgram or (problem, x, z)"
                    ) from error
                built = NormalizationProgram(problem, x, z)
            built.validate()
            if built.n != n:
                raise ValueError(f"ProgramNorm: program({n}) built a program for groups of {built.n}")
            self._programs[n] = built
        return self._programs[n]

    def forward(self, input: Tensor) -> Tensor:
        self._check_finite(input)
        self._check_channels(input, self.num_channels)
        if self.num_groups is None:
            out = _ungroup_channels(self._normalize(channel_groups(input)), input.shape)
        else:
            groups = input.reshape(input.shape[0] * self.num_groups, -1)
            out = self._normalize(groups).reshape(input.shape)
        return channel_affine(out, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_groups={self.num_groups}, affine={self.affine}"
