"""The convex model of a convolutional BN-ReLU network (issue #7, docs/math.md section 8)."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
import torch
import torch.nn.functional as F

import convexnorm as cn
from convexnorm.convex.conv import image_patches


def tiny_images(N=12, seed=0):
    """1x3 one-channel images, kernel 1x2: K = 2 positions, patch rank 2 (r' = 3), so every
    arrangement pattern of the N K = 24 patch rows can be enumerated."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((N, 1, 1, 3))
    y = np.sin(images[:, 0, 0, 0] + images[:, 0, 0, 2]) + images[:, 0, 0, 1]
    return images, y


def test_patches_follow_conv2d():
    rng = np.random.default_rng(1)
    images = rng.standard_normal((3, 2, 5, 4))
    weight = rng.standard_normal((4, 2, 3, 2))
    patches = image_patches(images, (3, 2), stride=2)
    conv = F.conv2d(torch.from_numpy(images), torch.from_numpy(weight), stride=2)  # (3, 4, 2, 2)
    expected = conv.permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    np.testing.assert_allclose(patches @ weight.reshape(4, -1).T, expected, atol=1e-12)


def test_exhaustive_convex_conv_model_is_at_most_adam_and_recovers_its_objective():
    images, y = tiny_images()
    model = cn.ConvexBNConvRegressor(kernel_size=(1, 2), beta=0.1, patterns="exhaustive").fit(images, y)
    net = model.to_module()
    recovered = cn.nonconvex_objective(net, images, y, 0.1).item()
    assert abs(recovered - model.objective_) <= 1e-5 * model.objective_
    with torch.no_grad():  # eval mode (running statistics) predicts like the convex model
        np.testing.assert_allclose(net(torch.from_numpy(images)).numpy().ravel(), model.predict(images), atol=1e-9)
        new = tiny_images(N=5, seed=3)[0]
        np.testing.assert_allclose(net(torch.from_numpy(new)).numpy().ravel(), model.predict(new), atol=1e-9)
    for seed in range(3):  # measured: convex 1.28826, Adam 1.2913-1.3062
        torch.manual_seed(seed)
        module = cn.bn_relu_conv_network(1, 2 * model.n_neurons_ + 4, (1, 2))
        _, history = cn.train_nonconvex(images, y, 0.1, width=module[0].out_channels, steps=3000, lr=1e-2,
                                        seed=seed, module=module)
        assert model.objective_ <= min(history.objective) * (1 + 1e-6)


def test_sampled_conv_model_on_digit_images_recovers_its_objective():
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.isin(digits.target, (0, 1))
    images, y = digits.images[keep][:40, None] / 16.0, np.where(digits.target[keep][:40] == 1, 1.0, -1.0)
    model = cn.ConvexBNConvRegressor(kernel_size=3, stride=2, beta=0.5, patterns=20, random_state=0).fit(images, y)
    assert model.n_positions_ == 9 and model.whitening_.n == 40 * 9
    value = cn.nonconvex_objective(model.to_module(), images, y, 0.5).item()
    assert abs(value - model.objective_) <= 1e-5 * model.objective_


def test_conv_bad_input():
    images, y = tiny_images()
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\)"):
        cn.ConvexBNConvRegressor(kernel_size=(1, 2)).fit(images[:, 0], y)
    with pytest.raises(ValueError, match="solver"):
        cn.ConvexBNConvRegressor(kernel_size=(1, 2), solver="torch").fit(images, y)
    bad = images.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cn.ConvexBNConvRegressor(kernel_size=(1, 2)).fit(bad, y)
    model = cn.ConvexBNConvRegressor(kernel_size=(1, 2), beta=0.1, patterns=10)
    with pytest.raises(NotFittedError):
        model.predict(images)
    model.fit(images, y)
    with pytest.raises(ValueError, match="ConvexBNConvRegressor: X has 3 features, but .* expecting 1"):
        model.predict(np.zeros((2, 3, 1, 3)))
    with pytest.raises(ValueError, match="images must be"):
        model.predict(np.zeros((2, 1, 2, 3)))


def test_conv_certificate_and_grow():
    images, y = tiny_images()
    exact = cn.ConvexBNConvRegressor(kernel_size=(1, 2), beta=0.1, patterns="exhaustive").fit(images, y)
    cert = exact.certify()
    assert cert.exact and cert.optimal and cert.gap <= 1e-5 * exact.objective_
    few = cn.ConvexBNConvRegressor(kernel_size=(1, 2), beta=0.1, patterns=3, random_state=0).fit(images, y)
    assert not few.certify(method="probe").optimal  # 3 sampled patterns miss the optimum
    grown = cn.ConvexBNConvRegressor(kernel_size=(1, 2), beta=0.1, patterns=3, random_state=0, grow=True).fit(images, y)
    assert grown.objective_ < few.objective_ and len(grown.patterns_) > 3
    assert grown.objective_ >= exact.objective_ * (1 - 1e-6)  # never below the optimum over all patterns
    assert grown.objective_history_[0] == pytest.approx(few.objective_, rel=1e-9)
