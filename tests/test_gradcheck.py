"""torch.autograd.gradcheck on every layer (both backends) and the block (both solvers),
float64 (issue 12, part 3). The program paths are checked with their solvers set tight
enough that the forward is accurate for central differences (stated per case); every
check also requires repeated backward passes to agree exactly (nondet_tol=0)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import convexnorm as cn
from convexnorm.programs import standardization_program

F64 = {"dtype": torch.float64}


def layers(solver: str) -> list[tuple[torch.nn.Module, tuple[int, ...]]]:
    return [
        (cn.nn.BatchNorm1d(3, solver=solver, **F64), (6, 3)),
        (cn.nn.BatchNorm2d(2, solver=solver, **F64), (3, 2, 2, 2)),
        (cn.nn.LayerNorm(4, solver=solver, **F64), (3, 4)),
        (cn.nn.GroupNorm(2, 4, solver=solver, **F64), (2, 4, 2)),
    ]


@pytest.mark.parametrize("solver", ["torch", "cvxpylayers"])
def test_normalization_layers_pass_gradcheck(solver) -> None:
    torch.manual_seed(0)
    for layer, shape in layers(solver):
        for training in (True, False):
            layer.train(training)
            x = torch.randn(*shape, **F64, requires_grad=True)
            # the program solver solves to 1e-10 (SCS): the forward is accurate to ~1e-10
            assert gradcheck(layer, (x,), eps=1e-6, atol=1e-6, rtol=1e-5, nondet_tol=0.0), (layer, training)


def test_program_norm_and_micro_batch_layers_pass_gradcheck() -> None:
    torch.manual_seed(1)
    program_norm = cn.nn.ProgramNorm(lambda n: standardization_program(n, 1e-5), 3, **F64)
    estimated = cn.nn.EstimatedBatchNorm1d(3, **F64)
    bcn = cn.nn.BatchChannelNorm2d(4, num_groups=2, **F64)
    ws = cn.nn.WSConv2d(2, 3, 2, **F64)
    for module, shape in ((program_norm, (5, 3)), (estimated, (5, 3)), (bcn, (3, 4, 2, 2)), (ws, (2, 2, 3, 3))):
        x = torch.randn(*shape, **F64, requires_grad=True)
        if module is estimated:
            module.eval()  # in training its output uses statistics that exclude the current batch's gradient
        assert gradcheck(module, (x,), eps=1e-6, atol=1e-6, rtol=1e-5, nondet_tol=0.0), module
    weight = ws.parametrizations.weight.original
    assert gradcheck(lambda w: cn.nn.WeightStandardization()(w), (weight.detach().clone().requires_grad_(),),
                     eps=1e-6, atol=1e-8, rtol=1e-6)


def block_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    H = torch.randn(12, 3, generator=generator, **F64).requires_grad_()
    y = torch.randn(12, generator=generator, **F64).requires_grad_()
    return H, y


@pytest.mark.parametrize("solver, solver_options, tolerance, rtol", [
    # SCS at 1e-12: central differences with eps 1e-5 agree with diffcp's gradients to 5.4e-7 (lsmr's: 1.1e-6)
    ("cvxpylayers", {"eps_abs": 1e-12, "eps_rel": 1e-12, "max_iters": 1_000_000}, 1e-6, 1e-5),
    # the batched interior-point method at its default tolerance, polished to float64's precision
    ("torch", {}, 1e-7, 1e-6),
])
def test_convex_bn_relu_block_passes_gradcheck(solver, solver_options, tolerance, rtol) -> None:
    H, y = block_inputs()
    block = cn.nn.ConvexBNReLU(3, beta=0.1, n_patterns=6, solver=solver, solver_options=solver_options,
                               learnable_beta=True)
    beta = block.log_beta
    assert gradcheck(lambda h, t: block(h, t), (H, y), eps=1e-5, atol=tolerance, rtol=rtol, nondet_tol=0.0)
    value = block(H, y, return_objective=True)[1]
    (grad_beta,) = torch.autograd.grad(value, beta)
    with torch.no_grad():
        step = 1e-5
        beta.add_(step)
        up = block(H, y, return_objective=True)[1]
        beta.sub_(2 * step)
        down = block(H, y, return_objective=True)[1]
        beta.add_(step)
    assert abs(float(grad_beta) - float(up - down) / (2 * step)) <= tolerance * max(1.0, abs(float(grad_beta)))


def test_convex_bn_relu_block_passes_gradcheck_for_the_hinge_loss() -> None:
    """solver="torch" with the hinge loss (its margin samples in the active-set system): gradcheck in
    H (the labels stay +-1), and the episodes' gradients equal the one-by-one gradients."""
    H, y = block_inputs()
    labels = torch.where(y.detach() > 0, 1.0, -1.0).double()
    block = cn.nn.ConvexBNReLU(3, beta=0.1, n_patterns=6, solver="torch", loss="hinge")
    assert gradcheck(lambda h: block(h, labels), (H,), eps=1e-6, atol=1e-7, rtol=1e-6, nondet_tol=0.0)
    generator = torch.Generator().manual_seed(1)
    episodes = torch.randn(3, 12, 3, generator=generator, **F64)
    signs = torch.where(torch.sin(2 * episodes[..., 0]) + episodes[..., 1] * episodes[..., 2] > 0, 1.0, -1.0).double()
    block = cn.nn.ConvexBNReLU(3, beta=0.1, n_patterns=10, solver="torch", loss="hinge")
    together = episodes.clone().requires_grad_(True)
    block(together, signs).sum().backward()
    for b in range(3):
        alone = episodes[b].clone().requires_grad_(True)
        block(alone, signs[b]).sum().backward()
        assert torch.allclose(alone.grad, together.grad[b], rtol=0, atol=1e-11)
