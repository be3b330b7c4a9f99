"""Cone algebra and the Newton system of the native interior-point method (issue 5), against
dense float64 references."""

from __future__ import annotations

import pytest
import torch

from convexnorm.convex._cones import (boost, jordan_divide, jordan_product, nt_scaling, orthant_max_step, reflect,
                                      shift_into_cones, soc_det, soc_max_step)
from convexnorm.convex.native import _coupling_matrix, _dense_coupling, _NewtonSystem, _Program, _batched


def interior(m: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """Random columns strictly inside the second-order cone of dimension m."""
    u = torch.randn(m, count, generator=generator, dtype=torch.float64)
    u[0] = u[1:].norm(dim=0) + torch.rand(count, generator=generator, dtype=torch.float64) + 0.1
    return u


def test_nesterov_todd_scaling() -> None:
    generator = torch.Generator().manual_seed(0)
    s, z = interior(5, 7, generator), interior(5, 7, generator)
    V, V_inverse = nt_scaling(s, z)
    assert torch.allclose(_batched(V, z), _batched(V_inverse, s), atol=1e-12)  # lambda = V z = V^-1 s
    assert torch.allclose(V @ V_inverse, torch.eye(5, dtype=torch.float64).expand(7, 5, 5), atol=1e-12)
    assert torch.allclose(V, V.transpose(1, 2))
    assert bool((soc_det(_batched(V, z)) > 0).all())
    w = interior(5, 3, generator)
    w = w / soc_det(w).sqrt()
    J = torch.diag(torch.tensor([1.0, -1, -1, -1, -1], dtype=torch.float64))
    assert torch.allclose(boost(w) @ J @ boost(w), J.expand(3, 5, 5), atol=1e-12)  # a hyperbolic rotation
    assert torch.allclose(boost(w) @ boost(reflect(w)), torch.eye(5, dtype=torch.float64).expand(3, 5, 5), atol=1e-12)


def test_jordan_product_and_division() -> None:
    generator = torch.Generator().manual_seed(1)
    lam, v = interior(4, 6, generator), torch.randn(4, 6, generator=generator, dtype=torch.float64)
    product = jordan_product(lam, v)
    assert torch.allclose(product[0], (lam * v).sum(0))
    assert torch.allclose(product[1:], lam[0] * v[1:] + v[0] * lam[1:])
    assert torch.allclose(jordan_divide(lam, product), v, atol=1e-12)


def test_max_steps_reach_the_boundary() -> None:
    generator = torch.Generator().manual_seed(2)
    u, d = interior(4, 9, generator), torch.randn(4, 9, generator=generator, dtype=torch.float64) * 3
    alpha = soc_max_step(u, d)
    inside = u + 0.999 * alpha * d
    assert bool((soc_det(inside) > 0).all()) and bool((inside[0] > 0).all())
    at = u + alpha * d
    on_boundary = soc_det(at).abs() / (at**2).sum(0)
    assert float(on_boundary.min()) < 1e-10
    assert soc_max_step(u, u) == float("inf")  # moving outward never leaves the cone
    assert orthant_max_step(torch.tensor([1.0, 2.0]), torch.tensor([-4.0, 1.0])) == 0.25
    orthant, cone = shift_into_cones(torch.tensor([-1.0, 3.0]), torch.tensor([[0.5], [2.0]]))
    assert float(orthant.min()) > 0 and float(soc_det(cone)) > 0  # shifted by 1 - min eigenvalue (-1.5)
    assert torch.equal(orthant, torch.tensor([1.5, 5.5]))


@pytest.mark.parametrize("route", ["woodbury", "dense"])
def test_newton_system_matches_the_dense_kkt_solve(route: str) -> None:
    """_NewtonSystem.solve (block elimination, then Woodbury over pattern pairs or the whole
    matrix with B^T B) == the dense solve of P dx + G^T dz = b_x, G dx + ds = b_z,
    V dz + V^-1 ds = d."""
    generator = torch.Generator().manual_seed(3)
    n, k, P = 7, 3, 4
    A = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))[0]
    masks = (torch.rand(n, P, generator=generator) > 0.5).double()
    program = _Program.from_patterns(A, masks, torch.randn(n, generator=generator, dtype=torch.float64), 0.1, "squared")
    groups, m = 2 * P, k + 1
    s, z = interior(m, groups, generator), interior(m, groups, generator)
    weight = torch.rand(n, groups, generator=generator, dtype=torch.float64) + 0.5
    V, V_inverse = nt_scaling(s, z)
    assert _dense_coupling(program) is None  # 2P(k+1) = 32 > n = 7: Woodbury is the cheaper side
    system = _NewtonSystem(program, weight, V_inverse, _coupling_matrix(program) if route == "dense" else None)
    b_W, b_tau = torch.randn(k, groups, generator=generator, dtype=torch.float64), torch.randn(groups, generator=generator, dtype=torch.float64)
    b_o, b_c = torch.randn(n, groups, generator=generator, dtype=torch.float64), torch.randn(m, groups, generator=generator, dtype=torch.float64)
    d_o, d_c = torch.randn(n, groups, generator=generator, dtype=torch.float64), torch.randn(m, groups, generator=generator, dtype=torch.float64)
    dW, dtau, dz_o, dz_c, ds_o, ds_c = system.solve((b_W, b_tau), (b_o, b_c), (d_o, d_c))

    # dense reference: x = (tau_j, W_j) per group; rows of z, s: the orthant (n per group), then the cones
    nx, no, nc = groups * m, n * groups, m * groups
    G = torch.zeros(no + nc, nx, dtype=torch.float64)
    B = torch.zeros(n, nx, dtype=torch.float64)
    for j in range(groups):
        cols = slice(j * m, (j + 1) * m)
        G[j * n:(j + 1) * n, j * m + 1:(j + 1) * m] = -program.E[:, j:j + 1] * A
        G[no + j * m:no + (j + 1) * m, cols] = -torch.eye(m, dtype=torch.float64)
        B[:, j * m + 1:(j + 1) * m] = program.o[j] * program.M[:, j:j + 1] * A
    scaling, scaling_inverse = torch.zeros(no + nc, no + nc, dtype=torch.float64), torch.zeros(no + nc, no + nc, dtype=torch.float64)
    root = (1 / weight).sqrt().T.reshape(-1)  # orthant V = diag(sqrt(s / z)) = weight^-1/2
    scaling[:no, :no], scaling_inverse[:no, :no] = torch.diag(root), torch.diag(1 / root)
    scaling[no:, no:], scaling_inverse[no:, no:] = torch.block_diag(*V), torch.block_diag(*V_inverse)
    size = nx + 2 * (no + nc)
    K = torch.zeros(size, size, dtype=torch.float64)
    K[:nx, :nx], K[:nx, nx:nx + no + nc] = B.T @ B, G.T
    K[nx:nx + no + nc, :nx], K[nx:nx + no + nc, nx + no + nc:] = G, torch.eye(no + nc, dtype=torch.float64)
    K[nx + no + nc:, nx:nx + no + nc], K[nx + no + nc:, nx + no + nc:] = scaling, scaling_inverse
    flat = lambda orthant, cone: torch.cat([orthant.T.reshape(-1), cone.T.reshape(-1)])  # noqa: E731
    rhs = torch.cat([torch.cat([b_tau[None], b_W]).T.reshape(-1), flat(b_o, b_c), flat(d_o, d_c)])
    solution = torch.linalg.solve(K, rhs)
    assert torch.allclose(torch.cat([dtau[None], dW]).T.reshape(-1), solution[:nx], atol=1e-9)
    assert torch.allclose(flat(dz_o, dz_c), solution[nx:nx + no + nc], atol=1e-9)
    assert torch.allclose(flat(ds_o, ds_c), solution[nx + no + nc:], atol=1e-9)


def test_newton_blocks_regularized_only_within_rounding() -> None:
    """A block singular to rounding gets a tiny diagonal shift; an indefinite one raises
    _Breakdown, which stops the interior-point method instead of returning a wrong step."""
    from convexnorm.convex.native import _Breakdown, _cholesky

    singular = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    L = _cholesky(singular)
    assert torch.allclose(L @ L.transpose(1, 2), singular, atol=1e-6)
    with pytest.raises(_Breakdown):
        _cholesky(torch.tensor([[[1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64))
