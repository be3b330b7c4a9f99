"""Jordan algebra of the nonnegative orthant and the second-order cone, batched over columns.

A second-order cone point is a column u = (u0, u1) with u0 >= ||u1||. Product and identity
(Vandenberghe, "The CVXOPT linear and quadratic cone program solvers", section 1):
u o v = (u^T v, u0 v1 + v0 u1), e = (1, 0). The Nesterov-Todd scaling of a pair (s, z) of
interior points is W = eta * boost(w) with W z = W^-1 s = lambda; ``boost(w)`` is the
hyperbolic rotation [[w0, w1^T], [w1, I + w1 w1^T / (1 + w0)]] (w^T J w = 1), whose inverse
is the boost of J w = (w0, -w1).
"""

from __future__ import annotations

import math

import torch

from convexnorm.solvers import cones


def soc_det(u: torch.Tensor) -> torch.Tensor:
    """u0^2 - ||u1||^2 per column (> 0 inside the cone)."""
    return u[0] ** 2 - (u[1:] ** 2).sum(0)


def reflect(u: torch.Tensor) -> torch.Tensor:
    """J u = (u0, -u1)."""
    return torch.cat([u[:1], -u[1:]])


def boost(w: torch.Tensor) -> torch.Tensor:
    """Columns w (w^T J w = 1, w0 > 0) -> batch of (m x m) hyperbolic rotations."""
    m, count = w.shape
    w0, w1 = w[0], w[1:]
    out = torch.empty(count, m, m, dtype=w.dtype, device=w.device)
    out[:, 0, 0] = w0
    out[:, 0, 1:] = w1.T
    out[:, 1:, 0] = w1.T
    out[:, 1:, 1:] = torch.eye(m - 1, dtype=w.dtype, device=w.device) + torch.einsum("ig,jg->gij", w1, w1 / (1 + w0))
    return out


def nt_scaling(s: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, W^-1) batched, the Nesterov-Todd scaling of interior columns s, z: W z = W^-1 s."""
    det_s, det_z = soc_det(s).sqrt(), soc_det(z).sqrt()
    s_bar, z_bar = s / det_s, z / det_z
    gamma = ((1 + (s_bar * z_bar).sum(0)) / 2).sqrt()
    w = (s_bar + reflect(z_bar)) / (2 * gamma)
    eta = (det_s / det_z).sqrt()[:, None, None]
    return eta * boost(w), boost(reflect(w)) / eta


def jordan_product(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """u o v per column."""
    return torch.cat([(u * v).sum(0, keepdim=True), u[0] * v[1:] + v[0] * u[1:]])


def jordan_divide(lam: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x with lam o x = v per column (lam inside the cone)."""
    x0 = (lam[0] * v[0] - (lam[1:] * v[1:]).sum(0)) / soc_det(lam)
    return torch.cat([x0[None], (v[1:] - x0 * lam[1:]) / lam[0]])


def soc_max_step(u: torch.Tensor, d: torch.Tensor) -> float:
    """Largest alpha with u + alpha d in every column's cone (u inside); inf if there is none."""
    return float(cones.soc_max_step(u.T, d.T).min())


def orthant_max_step(u: torch.Tensor, d: torch.Tensor) -> float:
    """Largest alpha with u + alpha d >= 0 (u > 0)."""
    ratios = torch.where(d < 0, -u / d, torch.full_like(u, math.inf))
    return float(ratios.min())


def shift_into_cones(orthant: torch.Tensor, soc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CVXOPT's initial shift: the point itself if strictly inside, else plus (1 - m) e,
    m the smallest eigenvalue (entries of the orthant part, u0 - ||u1|| of the cone part)."""
    smallest = min(float(orthant.min()), float((soc[0] - soc[1:].norm(dim=0)).min()))
    if smallest > 0:
        return orthant, soc
    shift = 1 - smallest
    return orthant + shift, torch.cat([soc[:1] + shift, soc[1:]])
