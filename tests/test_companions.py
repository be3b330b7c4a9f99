"""BN preconditioning, weight standardization, batch-channel normalization and the
large-learning-rate diagnostics (issue #6), against formulas and torch's own layers."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import convexnorm as cn
from convexnorm.diagnostics import (
    activation_statistics,
    channel_singularities,
    gradient_statistics,
    learning_rate_sweep,
    relative_loss,
)

DTYPE = torch.float64


def _reference_step(model, bnp, layers, x, y, lr):
    """Plain gradient descent on z = V D^{-1}(x - mu) + c for the given layers (autograd on
    the reparametrization, no BNP formula), mapped back to {name: new W or b}."""
    names = {m: n for n, m in model.named_modules()}
    free, layer_of = {}, {}
    for layer in layers:
        mean, scale = bnp.mean_and_scale(layer)
        shape = (1, -1) + (1,) * (layer.weight.dim() - 2)
        d = scale.sqrt().reshape(shape)
        mu = mean.reshape(shape).expand_as(layer.weight[:1])
        W, b = layer.weight.detach(), layer.bias.detach()
        V = (W * d).clone().requires_grad_(True)
        c = (b + (W * mu).reshape(W.shape[0], -1).sum(dim=1)).clone().requires_grad_(True)
        free[layer], layer_of[layer] = (V, c), (d, mu)

    def parameters(values):
        params = {}
        for layer, (V, c) in values.items():
            d, mu = layer_of[layer]
            W = V / d
            params[f"{names[layer]}.weight"] = W
            params[f"{names[layer]}.bias"] = c - (W * mu).reshape(W.shape[0], -1).sum(dim=1)
        return params

    loss = F.mse_loss(functional_call(model, parameters(free), (x,)), y)
    grads = torch.autograd.grad(loss, [t for pair in free.values() for t in pair])
    stepped, it = {}, iter(grads)
    for layer, (V, c) in free.items():
        stepped[layer] = (V - lr * next(it), c - lr * next(it))
    return {k: v.detach() for k, v in parameters(stepped).items()}


def _bnp_models():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(DTYPE)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 2 * 2, 3)).to(DTYPE)
    return [(mlp, (5,)), (conv, (2, 4, 4))]


@pytest.mark.parametrize("case", [0, 1], ids=["mlp", "conv"])
@pytest.mark.parametrize("batch", [1, 8])
def test_bnp_step_is_gradient_descent_on_the_normalized_reparametrization(case, batch):
    model, shape = _bnp_models()[case]
    lr = 0.05
    bnp = cn.optim.BNP(model, torch.optim.SGD(model.parameters(), lr=lr), momentum=0.2)
    gen = torch.Generator().manual_seed(1)
    for step in range(4):  # a few steps so that the statistics are not the prior
        x = 3 + 2 * torch.randn(batch, *shape, generator=gen, dtype=DTYPE)
        y = torch.randn(batch, 3, generator=gen, dtype=DTYPE)
        bnp.zero_grad()
        F.mse_loss(model(x), y).backward()
        if step == 3:
            layers = list(bnp.statistics)
            bnp.remove()
            expected = _reference_step(model, bnp, layers, x, y, lr)
        bnp.step()
    for name, value in expected.items():
        assert torch.allclose(model.get_parameter(name), value, rtol=0, atol=1e-10), name


def test_bnp_statistics_and_bad_arguments():
    model = nn.Sequential(nn.Linear(2, 1)).to(DTYPE)
    bnp = cn.optim.BNP(model, torch.optim.SGD(model.parameters(), lr=0.1), momentum=0.1)
    with pytest.raises(ValueError, match="no training-mode forward"):
        bnp.mean_and_scale(model[0])
    x = torch.tensor([[1.0, 2.0]], dtype=DTYPE)
    model(x)
    mean, scale = bnp.mean_and_scale(model[0])
    # prior (0, 1) as one observation, then rate 1/2: mean x/2, second moment (1 + x^2)/2
    assert torch.allclose(mean, x[0] / 2)
    assert torch.allclose(scale - bnp.eps, (1 + x[0] ** 2) / 2 - (x[0] / 2) ** 2)
    model.eval()
    model(x)
    assert bnp.statistics[model[0]].steps == 1  # eval passes leave the statistics alone
    with pytest.raises(ValueError, match="momentum"):
        cn.optim.BNP(model, torch.optim.SGD(model.parameters(), lr=0.1), momentum=0)
    with pytest.raises(ValueError, match="grouped"):
        conv = nn.Conv2d(2, 2, 1, groups=2)
        cn.optim.BNP(conv, torch.optim.SGD(conv.parameters(), lr=0.1))
    model.train()
    with pytest.raises(ValueError, match="NaN"):
        model(torch.tensor([[math.nan, 0.0]], dtype=DTYPE))


def test_bnp_statistics_hold_in_float32_for_features_with_a_large_mean():
    """Float32 features of mean 1e4 and variance 1 (300 batches of 16): BNP's running mean and variance within
    1e-6 and 1e-3 (relative) of the definition's, the second moment minus mu^2 of the same averages computed in
    float64. Kept as that difference in float32, the variance had come out 16, 40 and 8 (mean 1e4) and 7-20%
    off (mean 1e3)."""
    generator = torch.Generator().manual_seed(0)
    model = nn.Linear(3, 1)
    bnp = cn.optim.BNP(model, torch.optim.SGD(model.parameters(), lr=0.1), momentum=0.1)
    mean, square = torch.zeros(3, dtype=DTYPE), torch.ones(3, dtype=DTYPE)
    for step in range(1, 301):
        x = torch.randn(16, 3, generator=generator) + 1e4
        model(x)
        rate = max(0.1, 1 / (step + 1))
        mean = (1 - rate) * mean + rate * x.double().mean(0)
        square = (1 - rate) * square + rate * (x.double() ** 2).mean(0)
    running, scale = bnp.mean_and_scale(model)
    assert running.dtype == torch.float32
    assert torch.allclose(running.double(), mean, rtol=1e-6, atol=0)
    assert torch.allclose(scale.double() - bnp.eps, square - mean**2, rtol=1e-3, atol=0)


def test_weight_standardization():
    torch.manual_seed(0)
    conv = cn.nn.WSConv2d(3, 4, 3, padding=1, weight_eps=0.0).to(DTYPE)
    flat = conv.weight.reshape(4, -1)
    assert torch.allclose(flat.mean(dim=1), torch.zeros(4, dtype=DTYPE), atol=1e-14)
    assert torch.allclose(flat.var(dim=1, unbiased=False), torch.ones(4, dtype=DTYPE), atol=1e-12)
    default = cn.nn.WSConv2d(3, 4, 3).to(DTYPE)
    raw = default.parametrizations.weight.original.reshape(4, -1)
    v = raw.var(dim=1, unbiased=False)
    assert torch.allclose(default.weight.reshape(4, -1).var(dim=1, unbiased=False), v / (v + 1e-5), atol=1e-12)
    x = torch.randn(2, 3, 5, 5, dtype=DTYPE)
    out = conv(x)
    assert torch.allclose(out, F.conv2d(x, conv.weight.detach(), conv.bias.detach(), padding=1))
    out.sum().backward()
    assert conv.parametrizations.weight.original.grad is not None
    assert "parametrizations.weight.original" in conv.state_dict()


def test_batch_channel_norm_matches_torch_composition():
    torch.manual_seed(0)
    bcn = cn.nn.BatchChannelNorm2d(8, num_groups=2).to(DTYPE)
    with torch.no_grad():
        for p in bcn.parameters():
            p.normal_()
    bn = nn.BatchNorm2d(8).to(DTYPE)
    bn.load_state_dict(bcn.batch_norm.state_dict())
    gn = nn.GroupNorm(2, 8, affine=False).to(DTYPE)

    def reference(x):
        out = gn(bn(x))
        w = bcn.weight.detach().repeat_interleave(4).reshape(1, -1, 1, 1)
        b = bcn.bias.detach().repeat_interleave(4).reshape(1, -1, 1, 1)
        return out * w + b

    for mode in ("train", "eval"):
        getattr(bcn, mode)(), getattr(bn, mode)()
        x = torch.randn(4, 8, 3, 3, dtype=DTYPE)
        assert torch.allclose(bcn(x), reference(x), atol=1e-12)
    assert torch.allclose(bcn.batch_norm.running_var, bn.running_var)
    bcn.train()
    with pytest.raises(ValueError, match="estimated_stats=True.*BNP"):
        bcn(torch.randn(1, 8, 3, 3, dtype=DTYPE))
    with pytest.raises(ValueError, match="divisible"):
        cn.nn.BatchChannelNorm2d(6, num_groups=4)


def test_estimated_statistics_follow_the_update_rule_without_gradient():
    torch.manual_seed(0)
    norm = cn.nn.EstimatedBatchNorm2d(3, momentum=0.3).to(DTYPE)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_(), norm.running_mean.normal_()
    r = 0.3
    for _ in range(3):
        x = torch.randn(1, 3, 2, 2, dtype=DTYPE, requires_grad=True)
        mu_old, var_old = norm.running_mean.clone(), norm.running_var.clone()
        out = norm(x)
        channels = x.detach().transpose(0, 1).reshape(3, -1)
        mu = (1 - r) * mu_old + r * channels.mean(dim=1)
        var = (1 - r) * var_old + r * ((channels - mu_old[:, None]) ** 2).mean(dim=1)
        assert torch.allclose(norm.running_mean, mu) and torch.allclose(norm.running_var, var)
        view = lambda t: t.reshape(1, -1, 1, 1)  # noqa: E731
        scale = view(norm.weight.detach() / torch.sqrt(var + norm.eps))
        assert torch.allclose(out, (x.detach() - view(mu)) * scale + view(norm.bias.detach()))
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.allclose(grad, scale.expand_as(x))  # statistics carry no gradient
    norm.eval()
    before = norm.running_mean.clone()
    norm(torch.randn(2, 3, 2, 2, dtype=DTYPE))
    assert torch.equal(before, norm.running_mean)
    micro = cn.nn.BatchChannelNorm2d(4, num_groups=2, estimated_stats=True)
    micro(torch.randn(1, 4, 3, 3))  # batch size 1 trains in micro-batch mode
    with pytest.raises(ValueError, match="channels"):
        norm(torch.randn(1, 4, 2, 2, dtype=DTYPE))


def test_batch_statistics_of_one_sample_name_the_alternatives():
    with pytest.raises(ValueError, match="EstimatedBatchNorm.*BNP"):
        cn.nn.BatchNorm1d(3, solver="torch")(torch.randn(1, 3))


def test_relative_loss_closed_form_and_divergence():
    model = nn.Linear(1, 1, bias=False).to(DTYPE)
    with torch.no_grad():
        model.weight.fill_(1.0)
    x, y = torch.ones(1, 1, dtype=DTYPE), torch.zeros(1, 1, dtype=DTYPE)
    result = relative_loss(model, x, y, [0.1, 1.0, 20.0], loss_fn=F.mse_loss)
    # loss(w) = w^2, one step: w = 1 - 2 lr
    assert result["relative_loss"] == pytest.approx([(1 - 2 * lr) ** 2 for lr in (0.1, 1.0, 20.0)], rel=1e-12)
    assert result["diverged"] == [False, False, True]
    assert model.weight.item() == 1.0


def test_activation_statistics_known_values():
    layer = nn.Linear(2, 2).to(DTYPE)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        layer.bias.copy_(torch.tensor([0.0, 1.0]))
    model = nn.Sequential(layer, nn.ReLU())
    stats = activation_statistics(model, torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=DTYPE))
    # outputs [[1, 5], [3, 9]]
    assert len(stats) == 1 and stats[0]["name"] == "0"
    assert torch.allclose(stats[0]["mean"], torch.tensor([2.0, 7.0], dtype=DTYPE))
    assert torch.allclose(stats[0]["std"], torch.tensor([1.0, 2.0], dtype=DTYPE))
    assert stats[0]["mean_std"] == pytest.approx(1.5)


def test_gradient_statistics_match_per_sample_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).to(DTYPE)
    x, y = torch.randn(5, 4, dtype=DTYPE), torch.tensor([0, 1, 2, 0, 1])
    stats = gradient_statistics(model, x, y)
    for i in range(5):
        losses = F.cross_entropy(model(x), y, reduction="none")
        (g,) = torch.autograd.grad(losses[i], model[3].weight)
        assert torch.allclose(stats["gradients"][i], g.reshape(-1), atol=1e-12)
    same = gradient_statistics(nn.Linear(2, 2).to(DTYPE), torch.ones(3, 2, dtype=DTYPE), torch.zeros(3, dtype=torch.long))
    assert same["mean_cosine"] == pytest.approx(1.0) and same["alignment"] == pytest.approx(1.0)


def test_channel_singularities_dead_and_constant_channels():
    layer = nn.Linear(1, 3).to(DTYPE)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0], [0.0], [1.0]]))
        layer.bias.copy_(torch.tensor([-3.0, 1.0, -0.5]))
    model = nn.Sequential(layer, nn.ReLU())
    stats = channel_singularities(model, torch.linspace(0, 1, 101, dtype=DTYPE)[:, None])
    # channel 0: always negative (dead), channel 1: constant 1, channel 2: half negative
    assert stats[0]["dead_fraction"] == pytest.approx(1 / 3)
    assert stats[0]["constant_fraction"] == pytest.approx(1 / 3)
    assert stats[0]["negative_fraction"].tolist() == pytest.approx([1.0, 0.0, 50 / 101])


def test_learning_rate_sweep_detects_divergence(tmp_path):
    x = torch.linspace(-1, 1, 16, dtype=DTYPE)[:, None]
    y = 2 * x

    def make_model():
        return nn.Linear(1, 1, bias=False).to(DTYPE)

    sweep = learning_rate_sweep(make_model, x, y, [0.5, 10.0], epochs=50, batch_size=16, loss_fn=F.mse_loss,
                                progress=False)
    assert sweep["diverged"] == [False, True]
    assert sweep["final_loss"][0] < 1e-2
    assert sweep["train_accuracy"] == [None, None]
    xc = torch.randn(32, 4, dtype=DTYPE)
    yc = (xc[:, 0] > 0).long()
    classification = learning_rate_sweep(lambda: nn.Linear(4, 2).to(DTYPE), xc, yc, [0.5], epochs=20,
                                         batch_size=8, test=(xc, yc), progress=False)
    assert classification["test_accuracy"][0] > 0.8
    paths = [cn.diagnostics.plot_learning_rate_sweep({"linear": classification}, tmp_path / "sweep.png"),
             cn.diagnostics.plot_learning_rate_sweep({"regression": sweep}, tmp_path / "sweep_loss.png"),
             cn.diagnostics.plot_relative_loss({"linear": relative_loss(make_model(), x, y, [0.1, 1.0],
                                                                        loss_fn=F.mse_loss)}, tmp_path / "rel.png")]
    for path in paths:
        assert path.stat().st_size > 1000


def test_bnp_state_dict_round_trip_and_estimated_batch_norm_1d():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2)).to(DTYPE)
    bnp = cn.optim.BNP(model, torch.optim.SGD(model.parameters(), lr=0.1))
    model(torch.randn(4, 3, dtype=DTYPE))
    copy = cn.optim.BNP(model, torch.optim.SGD(model.parameters(), lr=0.1))
    copy.load_state_dict(bnp.state_dict())
    for a, b in zip(bnp.mean_and_scale(model[0]), copy.mean_and_scale(model[0])):
        assert torch.equal(a, b)
    norm = cn.nn.EstimatedBatchNorm1d(3, momentum=None, affine=False).to(DTYPE)
    x = torch.randn(1, 3, dtype=DTYPE)
    out = norm(x)  # cumulative average, first step: rate 1, estimates = the sample and its spread about 0
    assert torch.allclose(norm.running_mean, x[0]) and torch.allclose(norm.running_var, x[0] ** 2)
    assert torch.allclose(out, torch.zeros_like(x))
