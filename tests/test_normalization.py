"""Normalization layers against torch's own layers (float64, 1e-6 max abs)."""

from __future__ import annotations

import copy

import pytest
import torch

import convexnorm
from convexnorm import nn as cnn

TOL = 1e-6
SOLVERS = ["cvxpylayers", "torch"]

# (our class, torch class, constructor args, constructor kwargs, input shape)
CASES = {
    "bn1d": (cnn.BatchNorm1d, torch.nn.BatchNorm1d, (5,), {}, (7, 5)),
    "bn1d-3d-eps0.1": (cnn.BatchNorm1d, torch.nn.BatchNorm1d, (4,), {"eps": 0.1}, (6, 4, 3)),
    "bn1d-eps0": (cnn.BatchNorm1d, torch.nn.BatchNorm1d, (3,), {"eps": 0.0}, (9, 3)),
    "bn1d-noaffine-cumulative": (
        cnn.BatchNorm1d, torch.nn.BatchNorm1d, (3,), {"affine": False, "momentum": None}, (5, 3, 2),
    ),
    "bn1d-untracked": (cnn.BatchNorm1d, torch.nn.BatchNorm1d, (3,), {"track_running_stats": False}, (6, 3)),
    "bn2d": (cnn.BatchNorm2d, torch.nn.BatchNorm2d, (3,), {}, (4, 3, 5, 6)),
    "bn2d-nonsquare-eps0.3": (cnn.BatchNorm2d, torch.nn.BatchNorm2d, (2,), {"eps": 0.3, "momentum": 0.5}, (2, 2, 3, 7)),
    "ln": (cnn.LayerNorm, torch.nn.LayerNorm, (5,), {}, (3, 5)),
    "ln-2d-eps0.2": (cnn.LayerNorm, torch.nn.LayerNorm, ((4, 6),), {"eps": 0.2}, (2, 3, 4, 6)),
    "ln-noaffine": (cnn.LayerNorm, torch.nn.LayerNorm, (7,), {"elementwise_affine": False}, (4, 7)),
    "ln-nobias": (cnn.LayerNorm, torch.nn.LayerNorm, (7,), {"bias": False}, (4, 7)),
    "gn": (cnn.GroupNorm, torch.nn.GroupNorm, (2, 6), {}, (3, 6, 4, 5)),
    "gn-instance-eps0.5": (cnn.GroupNorm, torch.nn.GroupNorm, (3, 3), {"eps": 0.5}, (2, 3, 7)),
    "gn-noaffine": (cnn.GroupNorm, torch.nn.GroupNorm, (1, 4), {"affine": False}, (2, 4, 3, 2)),
}


def make_pair(case: str, solver: str, seed: int = 0):
    ours_cls, torch_cls, args, kwargs, shape = CASES[case]
    generator = torch.Generator().manual_seed(seed)
    reference_kwargs = dict(kwargs)
    if reference_kwargs.get("eps") == 0.0:
        # torch refuses eps=0 in training; 1e-300 vanishes next to any nonzero float64
        # variance, so torch's layer then computes the eps=0 map.
        reference_kwargs["eps"] = 1e-300
    reference = torch_cls(*args, **reference_kwargs, dtype=torch.float64)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
    ours = ours_cls(*args, **kwargs, dtype=torch.float64, solver=solver)
    ours.load_state_dict(reference.state_dict())
    assert ours.state_dict().keys() == reference.state_dict().keys()
    return ours, reference, shape, generator


def outputs_and_grads(module: torch.nn.Module, x: torch.Tensor, weights: torch.Tensor):
    x = x.clone().requires_grad_(True)
    y = module(x)
    params = [p for p in module.parameters()]
    loss = (y * weights).sum() + 0.5 * (y**2).sum()
    grads = torch.autograd.grad(loss, [x, *params])
    return y.detach(), grads


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= TOL, f"{what}: max abs error {err:.3e}"


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_in_train_and_eval(case: str, solver: str) -> None:
    ours, reference, shape, generator = make_pair(case, solver)
    for mode in ("train", "train", "eval"):
        ours.train(mode == "train")
        reference.train(mode == "train")
        x = 3 * torch.randn(shape, generator=generator, dtype=torch.float64) + 1
        weights = torch.randn(shape, generator=generator, dtype=torch.float64)
        y, grads = outputs_and_grads(ours, x, weights)
        y_ref, grads_ref = outputs_and_grads(reference, x, weights)
        assert_close(y, y_ref, f"{mode} output")
        assert len(grads) == len(grads_ref)
        for i, (g, g_ref) in enumerate(zip(grads, grads_ref)):
            assert_close(g, g_ref, f"{mode} gradient {i}")
        for name, buffer in reference.named_buffers():
            assert_close(getattr(ours, name).double(), buffer.double(), f"{mode} buffer {name}")


@pytest.mark.parametrize("solver", SOLVERS)
def test_state_dict_round_trip(solver: str) -> None:
    reference = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.LayerNorm(3))
    reference.train()
    reference(torch.randn(8, 4))
    ours = torch.nn.Sequential(
        torch.nn.Linear(4, 3), cnn.BatchNorm1d(3, solver=solver), cnn.LayerNorm(3, solver=solver)
    )
    ours.load_state_dict(reference.state_dict(), strict=True)
    back = copy.deepcopy(reference)
    back.load_state_dict(ours.state_dict(), strict=True)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32_input_gives_float32_output(solver: str) -> None:
    x = torch.randn(6, 4, 3, 3)
    for module in (cnn.BatchNorm2d(4, solver=solver), cnn.GroupNorm(2, 4, solver=solver),
                   cnn.LayerNorm((3, 3), solver=solver)):
        y = module(x)
        assert y.dtype == torch.float32 and y.device == x.device
        reference = {"BatchNorm2d": torch.nn.BatchNorm2d(4), "GroupNorm": torch.nn.GroupNorm(2, 4),
                     "LayerNorm": torch.nn.LayerNorm((3, 3))}[type(module).__name__]
        assert (y - reference(x)).abs().max() < 1e-5


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case", ["bn2d", "ln", "gn"])
def test_cuda_matches_torch(case: str, solver: str) -> None:
    ours, reference, shape, generator = make_pair(case, solver)
    ours, reference = ours.cuda(), reference.cuda()
    x = torch.randn(shape, generator=generator, dtype=torch.float64).cuda()
    weights = torch.randn(shape, generator=generator, dtype=torch.float64).cuda()
    y, grads = outputs_and_grads(ours, x, weights)
    y_ref, grads_ref = outputs_and_grads(reference, x, weights)
    assert y.device.type == "cuda"
    assert_close(y, y_ref, "cuda output")
    for g, g_ref in zip(grads, grads_ref):
        assert g.device.type == "cuda"
        assert_close(g, g_ref, "cuda gradient")
    for name, buffer in reference.named_buffers():
        assert_close(getattr(ours, name).double(), buffer.double(), f"cuda buffer {name}")
    y32 = ours.float()(x.float())
    assert y32.dtype == torch.float32 and y32.device.type == "cuda"


def test_program_is_canonicalized_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    from convexnorm.solvers import cvxpylayers_backend as _solve

    built = []
    original = _solve.CvxpyLayer

    class CountingLayer(original):
        def __init__(self, *args, **kwargs):
            built.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_solve, "CvxpyLayer", CountingLayer)
    _solve.compile_program.cache_clear()
    convexnorm.standardization_program.cache_clear()
    module = cnn.BatchNorm1d(3, dtype=torch.float64)
    other = cnn.BatchNorm1d(3, dtype=torch.float64)
    for _ in range(3):
        module(torch.randn(10, 3, dtype=torch.float64, requires_grad=True)).sum().backward()
        other(torch.randn(10, 3, dtype=torch.float64))
    assert len(built) == 1
    module(torch.randn(12, 3, dtype=torch.float64))
    assert len(built) == 2


@pytest.mark.parametrize("case", ["bn1d", "bn2d", "ln", "gn"])
@pytest.mark.parametrize("scale, shift", [(1e3, 0.0), (1e6, 0.0), (1e150, 0.0), (1.0, 1e3), (1e-3, 0.0),
                                          (1e-80, 0.0), ("mixed", 0.0)])
def test_program_gradients_hold_at_any_input_scale(case: str, scale, shift: float) -> None:
    """solver="cvxpylayers" on inputs of size 1e3, 1e6, 1e150, 1e-3 and 1e-80, shifted by 1e3, and with channels
    (features) of sizes 1e-3, 1 and 1e4 side by side: outputs and input gradients within 1e-8 of torch's
    (relative to the largest gradient entry). Solved in the data's own units, BatchNorm1d's gradient had been
    1.3e-5 off at size 1e3, 50% at 1e6 and 1.7e-6 for inputs shifted by 1e3 (diffcp's adjoint loses accuracy
    with the size of the program's data), and size 1e150 was not solved; each group is now solved centered and
    in units of the power of 16 nearest sqrt(var + eps) (in units of its root mean square instead, eps / s^2
    grew to 1e155 at size 1e-80 and that solve failed)."""
    ours, reference, shape, generator = make_pair(case, "cvxpylayers")
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    if scale == "mixed":
        sizes = torch.tensor([1e-3, 1.0, 1e4], dtype=torch.float64).repeat(shape[1])[: shape[1]]
        x = x * sizes.reshape(1, -1, *[1] * (x.dim() - 2))
    else:
        x = x * scale + shift
    weights = torch.randn(shape, generator=generator, dtype=torch.float64)
    results = []
    for module in (ours, reference):
        x_var = x.clone().requires_grad_(True)
        y = module(x_var)
        (grad,) = torch.autograd.grad((y * weights).sum(), [x_var])
        results.append((y.detach(), grad))
    (y_ours, grad_ours), (y_torch, grad_torch) = results
    assert float((y_ours - y_torch).abs().max()) <= 1e-8
    assert float((grad_ours - grad_torch).abs().max()) <= 1e-8 * float(grad_torch.abs().max())


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_raises_and_keeps_state(solver: str, bad: float) -> None:
    for module, shape in ((cnn.BatchNorm2d(3, solver=solver), (4, 3, 2, 2)),
                          (cnn.LayerNorm(5, solver=solver), (3, 5)),
                          (cnn.GroupNorm(1, 3, solver=solver), (2, 3, 4))):
        x = torch.randn(shape)
        x.view(-1)[3] = bad
        before = snapshot(module)
        with pytest.raises(ValueError, match=f"{type(module).__name__}.*NaN or Inf"):
            module(x)
        assert_unchanged(module, before)


@pytest.mark.parametrize("solver", SOLVERS)
def test_one_value_per_channel_in_training_raises_as_torch(solver: str) -> None:
    for ours, reference, x in ((cnn.BatchNorm1d(3, solver=solver), torch.nn.BatchNorm1d(3), torch.randn(1, 3)),
                               (cnn.BatchNorm2d(3, solver=solver), torch.nn.BatchNorm2d(3), torch.randn(1, 3, 1, 1))):
        with pytest.raises(ValueError):
            reference(x)
        before = snapshot(ours)
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            ours(x)
        assert_unchanged(ours, before)
        ours.eval()
        assert torch.allclose(ours(x), reference.eval()(x))


@pytest.mark.parametrize("solver", SOLVERS)
def test_wrong_shapes_raise_value_error(solver: str) -> None:
    with pytest.raises(ValueError, match="BatchNorm1d: expected 3 channels"):
        cnn.BatchNorm1d(3, solver=solver)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="BatchNorm2d: expected 4D"):
        cnn.BatchNorm2d(3, solver=solver)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="LayerNorm: expected input with trailing shape"):
        cnn.LayerNorm((2, 3), solver=solver)(torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match="GroupNorm: expected 4 channels"):
        cnn.GroupNorm(2, 4, solver=solver)(torch.randn(4, 6, 2))
    with pytest.raises(ValueError, match="divisible"):
        cnn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="solver"):
        cnn.BatchNorm1d(3, solver="scs")
    with pytest.raises(ValueError, match="eps"):
        cnn.LayerNorm(3, eps=-1.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_zero_variance_with_eps_zero_raises(solver: str) -> None:
    x = torch.randn(6, 3, dtype=torch.float64)
    x[:, 1] = 2.5
    module = cnn.BatchNorm1d(3, eps=0.0, dtype=torch.float64, solver=solver)
    before = snapshot(module)
    with pytest.raises(ValueError, match="BatchNorm1d: group 1 has zero variance and eps=0"):
        module(x)
    assert_unchanged(module, before)
    module.running_var[2] = 0.0
    module.eval()
    with pytest.raises(ValueError, match="zero variance"):
        module(torch.randn(6, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="LayerNorm: group 0 has zero variance"):
        cnn.LayerNorm(4, eps=0.0, solver=solver)(torch.ones(2, 4))
    # with eps > 0 a constant group is well defined: zeros, as in torch
    y = cnn.BatchNorm1d(3, dtype=torch.float64, solver=solver)(x)
    assert_close(y, torch.nn.BatchNorm1d(3, dtype=torch.float64)(x), "constant channel, eps > 0")


@pytest.mark.parametrize(
    "solver_options, message",
    [
        ({"max_iters": 2}, "the program was not solved .*max_iters"),
        ({"eps_abs": 1e-3, "eps_rel": 1e-3}, "inaccurate solve, optimality error"),
    ],
)
def test_failed_or_inaccurate_solve_raises_solver_error(solver_options: dict, message: str) -> None:
    module = cnn.BatchNorm1d(3, dtype=torch.float64, solver_options=solver_options)
    before = snapshot(module)
    with pytest.raises(convexnorm.SolverError, match=f"BatchNorm1d: {message}"):
        module(torch.randn(16, 3, dtype=torch.float64))
    assert_unchanged(module, before)


def test_other_solve_method_is_checked_too() -> None:
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    module = cnn.BatchNorm1d(3, dtype=torch.float64, solver_options={"solve_method": "Clarabel"})
    y = module(x)
    assert_close(y.detach(), torch.nn.BatchNorm1d(3, dtype=torch.float64)(x).detach(), "Clarabel forward")


def test_standardization_certificate_detects_a_wrong_solution() -> None:
    program = convexnorm.standardization_program(6, 0.1)
    x = torch.randn(4, 6, dtype=torch.float64) * 2 + 1
    var = x.var(dim=1, unbiased=False, keepdim=True)
    z = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(var + 0.1)
    t = torch.sqrt(6 * 0.1 / (var.squeeze(1) + 0.1))  # the optimal t: ||(z, t)|| = sqrt(n)
    assert program.certificate(x, z, t).max() < 1e-12
    assert program.certificate(x, 1.01 * z, t).min() > 1e-3  # outside the ball
    assert program.certificate(x, 0.9 * z, 0.9 * t).min() > 1e-3  # feasible but suboptimal
