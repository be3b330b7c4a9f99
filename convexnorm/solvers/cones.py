"""Jordan algebra of the nonnegative orthant and the second-order cone, batched.

A second-order cone point is a vector u = (u0, u1) in the last dimension with u0 >= ||u1||;
any leading dimensions are batch dimensions (episodes, groups). Product and identity
(Vandenberghe, "The CVXOPT linear and quadratic cone program solvers", section 1):
u o v = (u^T v, u0 v1 + v0 u1), e = (1, 0). The Nesterov-Todd scaling of interior s, z is
V = eta * boost(w) with V z = V^-1 s = lambda, where ``boost(w)`` is the hyperbolic rotation
[[w0, w1^T], [w1, I + w1 w1^T / (1 + w0)]] (w^T J w = 1, J = diag(1, -1, ..., -1)). Its inverse
is the boost of J w and its square is 2 w w^T - J, so V is kept as (eta, w) and applied in
O(m) per cone (``NTScaling``); only V^-2 is formed densely, for the Newton matrix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls


@functools.lru_cache(maxsize=64)
def _signs(m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The diagonal of J = diag(1, -1, ..., -1) (m,)."""
    J = torch.full((m,), -1.0, dtype=dtype, device=device)
    J[0] = 1
    return J


def reflect(u: torch.Tensor) -> torch.Tensor:
    """J u = (u0, -u1): one product with J's diagonal."""
    return u * _signs(u.shape[-1], u.dtype, u.device)


def soc_det(u: torch.Tensor) -> torch.Tensor:
    """u0^2 - ||u1||^2 = u^T J u per cone (> 0 inside)."""
    return (u * reflect(u)).sum(-1)


@dataclass
class NTScaling:
    """V = eta boost(w) for every cone of a batch (eta: (...,), w: (..., m)); the products below use
    w1 / (1 + w0) and (Jw) / eta^2, formed once."""

    eta: torch.Tensor
    w: torch.Tensor

    def __post_init__(self) -> None:
        self._w0, self._w1 = self.w[..., :1], self.w[..., 1:]
        self._bent = self._w1 / (1 + self._w0)  # boost(w) v = (w^T v, v1 + v0 w1 + (w1^T v1) w1 / (1 + w0))
        self._eta = self.eta[..., None]
        self._jw, self._minus_eta_2 = reflect(self.w), -self._eta ** -2

    @classmethod
    def of(cls, s: torch.Tensor, z: torch.Tensor) -> "NTScaling":
        """The Nesterov-Todd scaling of interior s, z: V z = V^-1 s."""
        det_s, det_z = soc_det(s).sqrt(), soc_det(z).sqrt()
        s_bar, z_bar = s / det_s[..., None], z / det_z[..., None]
        gamma = ((1 + (s_bar * z_bar).sum(-1)) / 2).sqrt()
        w = (s_bar + reflect(z_bar)) / (2 * gamma[..., None])
        return cls((det_s / det_z).sqrt(), w)

    def _boost(self, v: torch.Tensor, sign: float) -> torch.Tensor:
        """boost(w) v (sign +1) or boost(J w) v = boost(w)^-1 v (sign -1), per cone."""
        v0, v1 = v[..., :1], v[..., 1:]
        inner = (self._w1 * v1).sum(-1, keepdim=True)
        head = torch.addcmul(inner if sign > 0 else -inner, self._w0, v0)
        tail = torch.addcmul(torch.addcmul(v1, self._bent, inner), self._w1, v0, value=sign)
        return torch.cat([head, tail], -1)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """V v."""
        return self._eta * self._boost(v, 1.0)

    def apply_inverse(self, v: torch.Tensor) -> torch.Tensor:
        """V^-1 v."""
        return self._boost(v, -1.0) / self._eta

    def apply_inverse_square(self, v: torch.Tensor) -> torch.Tensor:
        """V^-2 v = eta^-2 (2 (Jw)(Jw)^T - J) v."""
        inner = (self._jw * v).sum(-1, keepdim=True)
        return self._minus_eta_2 * torch.addcmul(reflect(v), self._jw, inner, value=-2)

    def inverse_square(self) -> torch.Tensor:
        """V^-2 = eta^-2 (2 (Jw)(Jw)^T - J) as dense (..., m, m) matrices."""
        jw = self._jw
        out = 2 * jw[..., :, None] * jw[..., None, :]
        out.diagonal(dim1=-2, dim2=-1).add_(1)
        out[..., 0, 0] -= 2
        return out / (self.eta**2)[..., None, None]


def jordan_product(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """u o v per cone."""
    return torch.cat([(u * v).sum(-1, keepdim=True), u[..., :1] * v[..., 1:] + v[..., :1] * u[..., 1:]], -1)


class JordanDivision:
    """x with lam o x = v per cone, for one lam (inside the cone) and any v: x0 = (J lam)^T v / det(lam),
    x1 = (v1 - x0 lam1) / lam0, with J lam / det(lam) and 1 / lam0 formed once."""

    def __init__(self, lam: torch.Tensor) -> None:
        self._reflected = reflect(lam) / soc_det(lam)[..., None]
        self._tail, self._head_inverse = lam[..., 1:], 1 / lam[..., :1]

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        x0 = (self._reflected * v).sum(-1, keepdim=True)
        return torch.cat([x0, torch.addcmul(v[..., 1:], x0, self._tail, value=-1) * self._head_inverse], -1)


def identity_like(u: torch.Tensor) -> torch.Tensor:
    """e = (1, 0, ..., 0) per cone."""
    e = torch.zeros_like(u)
    e[..., 0] = 1
    return e


def soc_step_rate(u: torch.Tensor, d: torch.Tensor, reflected: torch.Tensor | None = None,
                  det: torch.Tensor | None = None) -> torch.Tensor:
    """1 / (largest alpha with u + alpha d in the cone), u inside, per cone; <= 0 where u + alpha d
    never leaves it. With a = d^T J d, b = u^T J d, c = u^T J u > 0, det(u + alpha d) = c + 2 b alpha +
    a alpha^2 vanishes first at the largest root t = (sqrt(b^2 - a c) - b) / c of c t^2 + 2 b t + a
    (t = 1 / alpha), taken as -a / (b + sqrt(b^2 - a c)) where b > 0 (no cancellation); none if b^2 < a c.
    ``reflected``, ``det``: J u and c if at hand (one u, several directions)."""
    reflected = reflect(u) if reflected is None else reflected
    a, b = (d * reflect(d)).sum(-1), (reflected * d).sum(-1)
    c = (u * reflected).sum(-1) if det is None else det
    discriminant = torch.addcmul(b * b, a, c, value=-1)
    root = discriminant.clamp_min(0).sqrt()
    rate = torch.where(b > 0, -a / (b + root), (root - b) / c)
    return rate.masked_fill(discriminant < 0, -1.0)


def orthant_step_rate(u: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """1 / (largest alpha with u + alpha d >= 0 in every entry of each program), u > 0, (batch,):
    max(-d / u), <= 0 where no entry decreases."""
    return -(d / u).flatten(1).amin(1)


def max_step(rate: torch.Tensor) -> torch.Tensor:
    """The largest step 1 / rate of a step rate (``soc_step_rate``, ``orthant_step_rate``), inf where
    rate <= 0 (NaN where it is NaN)."""
    return torch.where(rate <= 0, torch.full_like(rate, float("inf")), 1 / rate)


def soc_min_eigenvalue(u: torch.Tensor) -> torch.Tensor:
    """u0 - ||u1|| per cone."""
    return u[..., 0] - u[..., 1:].norm(dim=-1)


def box_correction(v: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """t - v with t = v clipped to [low, high] entrywise, the decrease at most ``high``: Gondzio's
    corrector target (low, high broadcast against v)."""
    return (v.clamp(min=low, max=high) - v).clamp_min(-high)


def soc_box_correction(u: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``box_correction`` of each cone's eigenvalues u0 +- ||u1|| (eigenvectors (1, +-u1 / ||u1||) / 2
    unchanged); low, high broadcast against u[..., 0]."""
    radius = u[..., 1:].norm(dim=-1)
    unit = u[..., 1:] / radius.clamp_min(torch.finfo(u.dtype).tiny)[..., None]
    plus = box_correction(u[..., 0] + radius, low, high)
    minus = box_correction(u[..., 0] - radius, low, high)
    return torch.cat([((plus + minus) / 2)[..., None], ((plus - minus) / 2)[..., None] * unit], -1)


def cone_projection(c: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The projection of c (k,) onto the polyhedral cone {u : rows u >= 0} (rows (m, k)) and the multipliers
    mu >= 0 (m,) of its rows: c + rows^T mu with mu minimizing ||c + rows^T mu|| (Moreau's decomposition: the
    rest, -rows^T mu, is c's projection onto the polar cone), by nonnegative least squares (Lawson-Hanson)."""
    multipliers, _ = nnls(rows.T, -c, maxiter=50 * max(rows.shape[0], 10))
    return c + rows.T @ multipliers, multipliers
