"""Cone algebra and the Newton system of the interior-point method (solvers/cones.py,
solvers/newton.py), against dense float64 references."""

from __future__ import annotations

import pytest
import torch

from convexnorm.solvers import newton
from convexnorm.solvers.cones import (JordanDivision, NTScaling, box_correction, jordan_product, max_step,
                                      orthant_step_rate, reflect, soc_box_correction, soc_det, soc_step_rate)
from convexnorm.solvers.kkt import Conic, Primal
from convexnorm.solvers.newton import Breakdown, NewtonSystem, cholesky
from convexnorm.solvers.problem import ConvexBNProblem

f64 = torch.float64


def interior(count: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """Random points strictly inside the second-order cone of dimension m (count, m)."""
    u = torch.randn(count, m, generator=generator, dtype=f64)
    u[:, 0] = u[:, 1:].norm(dim=1) + torch.rand(count, generator=generator, dtype=f64) + 0.1
    return u


def test_nesterov_todd_scaling() -> None:
    generator = torch.Generator().manual_seed(0)
    s, z = interior(7, 5, generator), interior(7, 5, generator)
    V = NTScaling.of(s, z)
    assert torch.allclose(V.apply(z), V.apply_inverse(s), atol=1e-12)  # lambda = V z = V^-1 s
    dense = V.inverse_square()
    v = torch.randn(7, 5, generator=generator, dtype=f64)
    assert torch.allclose(V.apply(V.apply_inverse(v)), v, atol=1e-12)
    assert torch.allclose(V.apply_inverse_square(v), V.apply_inverse(V.apply_inverse(v)), atol=1e-12)
    assert torch.allclose((dense @ v[..., None])[..., 0], V.apply_inverse(V.apply_inverse(v)), atol=1e-12)
    assert torch.allclose(dense, dense.transpose(1, 2))
    assert bool((soc_det(V.apply(z)) > 0).all())


def test_jordan_product_and_division() -> None:
    generator = torch.Generator().manual_seed(1)
    lam, v = interior(6, 4, generator), torch.randn(6, 4, generator=generator, dtype=f64)
    product = jordan_product(lam, v)
    assert torch.allclose(product[:, 0], (lam * v).sum(1))
    assert torch.allclose(product[:, 1:], lam[:, :1] * v[:, 1:] + v[:, :1] * lam[:, 1:])
    assert torch.allclose(JordanDivision(lam)(product), v, atol=1e-12)
    assert torch.equal(reflect(lam)[:, 1:], -lam[:, 1:])


def test_max_steps_reach_the_boundary() -> None:
    """max_step of the step rates: the cone's boundary reached exactly, inf where it is never left."""
    generator = torch.Generator().manual_seed(2)
    u, d = interior(9, 4, generator), torch.randn(9, 4, generator=generator, dtype=f64) * 3
    alpha = max_step(soc_step_rate(u, d))
    inside = u + 0.999 * alpha[:, None] * d
    assert bool((soc_det(inside) > 0).all()) and bool((inside[:, 0] > 0).all())
    at = u + alpha[:, None] * d
    on_boundary = soc_det(at).abs() / (at**2).sum(1)
    assert float(on_boundary.max()) < 1e-10
    assert bool(torch.isinf(max_step(soc_step_rate(u, u))).all())  # moving outward never leaves the cone
    assert torch.allclose(soc_step_rate(u, d, reflect(u), soc_det(u)), soc_step_rate(u, d), rtol=1e-14, atol=0)
    u, d = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), torch.tensor([[-4.0, 1.0, -2.0], [4.0, 1.0, 0.0]])
    assert torch.equal(max_step(orthant_step_rate(u, d)), torch.tensor([0.25, float("inf")]))  # per program: min over entries


def _dense_newton_matrix(problem: ConvexBNProblem, system: NewtonSystem) -> torch.Tensor:
    """grad^2 phi + G^T V^-2 G of one program as a dense matrix, column by column through G and
    the loss's curvature (no Woodbury): the reference for NewtonSystem.solve_x."""
    from convexnorm.solvers.kkt import constraint_adjoint, constraint_map

    groups, m = 2 * problem.patterns, problem.width + 1
    hinge = problem.loss == "hinge"
    size = groups * m + (problem.samples if hinge else 0)
    columns = []
    for index in range(size):
        e = torch.zeros(size, dtype=f64)
        e[index] = 1
        x = Primal(e[: groups * m].view(1, groups, m), e[groups * m:].view(1, -1) if hinge else None)
        Gx = constraint_map(problem, x)
        column = constraint_adjoint(problem, system.inverse_square(Gx))
        if not hinge:
            curvature = system.curvature
            f = problem.predictions(x.W)
            column = column + Primal(torch.cat([torch.zeros_like(x.X[..., :1]),
                                                problem.predictions_adjoint(curvature * f)], -1))
        columns.append(torch.cat([part.flatten() for part in column.parts()]))
    return torch.stack(columns, 1)


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
@pytest.mark.parametrize("route", ["woodbury", "dense"])
def test_newton_system_matches_the_dense_matrix(loss: str, route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """NewtonSystem.solve_x (block elimination, then Woodbury over the predictions, or the whole
    matrix factorized densely past DENSE_CURVATURE) == a dense solve with grad^2 phi + G^T V^-2 G
    built column by column; and NewtonSystem.solve satisfies its three equations."""
    from convexnorm.solvers.kkt import constraint_adjoint, constraint_map

    generator = torch.Generator().manual_seed(3)
    n, k, P = 7, 3, 4
    A = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=f64))[0][None]
    masks = (torch.rand(1, n, P, generator=generator) > 0.5).double()
    y = torch.randn(1, n, generator=generator, dtype=f64)
    if loss != "squared":
        y = torch.sign(y)
    problem = ConvexBNProblem(A, masks, y, torch.tensor([0.1], dtype=f64), loss)
    if route == "dense":
        monkeypatch.setattr(newton, "DENSE_CURVATURE", -1.0)
    positive = lambda *shape: torch.rand(1, *shape, generator=generator, dtype=f64) + 0.5  # noqa: E731
    hinge = loss == "hinge"
    s = Conic(positive(n, 2 * P), interior(2 * P, k + 1, generator)[None],
              positive(n) if hinge else None, positive(n) if hinge else None)
    z = Conic(positive(n, 2 * P), interior(2 * P, k + 1, generator)[None],
              positive(n) if hinge else None, positive(n) if hinge else None)
    x = Primal(torch.randn(1, 2 * P, k + 1, generator=generator, dtype=f64),
               torch.randn(1, n, generator=generator, dtype=f64) if hinge else None)
    system = NewtonSystem(problem, x, s, z)
    assert bool(system.dense.all()) == (route == "dense")
    b = x.map(lambda t: torch.randn(t.shape, generator=generator, dtype=f64))
    solution = system.solve_x(b)
    matrix = _dense_newton_matrix(problem, system)
    reference = torch.linalg.solve(matrix, torch.cat([t.flatten() for t in b.parts()]))
    assert torch.allclose(torch.cat([t.flatten() for t in solution.parts()]), reference, atol=1e-9)
    applied = system.apply(solution)  # the matrix-free product of the iterative refinement
    assert torch.allclose(torch.cat([t.flatten() for t in applied.parts()]), matrix @ reference, atol=1e-9)

    b_z = s.map(lambda t: torch.randn(t.shape, generator=generator, dtype=f64))
    scaled = s.map(lambda t: torch.randn(t.shape, generator=generator, dtype=f64))
    for rhs_z in (b_z, None):  # None: G dx + ds = 0 (the centrality corrector's step)
        dx, dz, ds = system.solve(b, rhs_z, scaled)
        Gdx = constraint_map(problem, dx)
        curvature_term = Primal(torch.zeros_like(dx.X), None if dx.xi is None else torch.zeros_like(dx.xi))
        if not hinge:
            f = problem.predictions(dx.W)
            curvature_term = Primal(torch.cat([torch.zeros_like(dx.X[..., :1]),
                                               problem.predictions_adjoint(system.curvature * f)], -1))
        first = curvature_term + constraint_adjoint(problem, dz) - b
        second = Gdx + ds - (b_z if rhs_z is not None else b_z.map(torch.zeros_like))
        # dz + V^-2 ds = scaled, V^-2 formed densely in the cones and as z / s in the orthant parts
        third = dz.map(lambda a, c, s_part, z_part: a + c * z_part / s_part, ds, s, z) - scaled
        third.cones = (dz.cones + (system.scaling.inverse_square() @ ds.cones[..., None])[..., 0]
                       - scaled.cones)
        assert max(float(t.abs().max()) for t in first.parts() + second.parts() + third.parts()) < 1e-9


def _squared_problem(n: int, k: int, P: int, generator: torch.Generator) -> ConvexBNProblem:
    """One squared-loss program: orthonormal A (n x k), random masks (P patterns) and y, beta 0.1."""
    A = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=f64))[0][None]
    masks = (torch.rand(1, n, P, generator=generator) > 0.5).double()
    return ConvexBNProblem(A, masks, torch.randn(1, n, generator=generator, dtype=f64),
                           torch.tensor([0.1], dtype=f64), "squared")


def test_a_newton_system_is_unchanged_by_the_next_one_on_the_same_problem() -> None:
    """Every iterate's Newton system reuses the problem's buffers for its temporaries (``ConvexBNProblem.buffer``:
    the capacitance's factor F, session 37); a system stays valid after the next iterate's is built on the same
    problem: its solve is bit for bit the one before."""
    generator = torch.Generator().manual_seed(5)
    n, k, P = 9, 3, 5
    problem = _squared_problem(n, k, P, generator)

    def iterate() -> tuple[Primal, Conic, Conic]:
        positive = lambda *shape: torch.rand(1, *shape, generator=generator, dtype=f64) + 0.5  # noqa: E731
        s = Conic(positive(n, 2 * P), interior(2 * P, k + 1, generator)[None], None, None)
        z = Conic(positive(n, 2 * P), interior(2 * P, k + 1, generator)[None], None, None)
        return Primal(torch.randn(1, 2 * P, k + 1, generator=generator, dtype=f64)), s, z

    first = NewtonSystem(problem, *iterate())
    b = Primal(torch.randn(1, 2 * P, k + 1, generator=generator, dtype=f64))
    before = first.solve_x(b).X.clone()
    second = NewtonSystem(problem, *iterate())
    assert torch.equal(first.solve_x(b).X, before) and not torch.equal(second.solve_x(b).X, before)


@pytest.mark.parametrize("seed", range(3))
def test_hinge_steps_stay_consistent_with_their_predictions_on_the_margin(seed: int) -> None:
    """Samples on the margin (slack and margin both 1e-8 of their multipliers: curvature d near 1e8) by Woodbury:
    X = u - H^-1 B^T c loses B X to rounding of u's size, and the predictions c / d taken for the slack steps
    left the step's margin equation G dx + ds = b_z off by 1.5e-8 .. 3.8e-8 (what the next iterate's margin
    residual inherits). With the mismatch f - B X in the refinement's augmented system, the equation holds with
    G applied to dx itself, and solve_x agrees with the dense matrix's solve to its conditioning."""
    from convexnorm.solvers.kkt import constraint_map

    generator = torch.Generator().manual_seed(seed)
    n, k, P = 12, 3, 5
    A = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=f64))[0][None]
    masks = (torch.rand(1, n, P, generator=generator) > 0.5).double()
    y = torch.sign(torch.randn(1, n, generator=generator, dtype=f64))
    problem = ConvexBNProblem(A, masks, y, torch.tensor([0.1], dtype=f64), "hinge")
    positive = lambda *shape: torch.rand(1, *shape, generator=generator, dtype=f64) + 0.5  # noqa: E731
    s, z = (Conic(positive(n, 2 * P), interior(2 * P, k + 1, generator)[None], positive(n), positive(n))
            for _ in range(2))
    s.slack[0, :4] *= 1e-8
    s.margin[0, :4] *= 1e-8
    x = Primal(torch.randn(1, 2 * P, k + 1, generator=generator, dtype=f64),
               torch.randn(1, n, generator=generator, dtype=f64))
    system = NewtonSystem(problem, x, s, z, dense_curvature=float("inf"))
    assert system.woodbury is not None and float(system.curvature.max()) > 1e7
    b, b_z, scaled = (v.map(lambda t: torch.randn(t.shape, generator=generator, dtype=f64)) for v in (x, s, s))
    dx, dz, ds = system.solve(b, b_z, scaled)
    second = constraint_map(problem, dx) + ds - b_z
    assert max(float(t.abs().max()) for t in second.parts()) < 1e-12 * float(dx.norm())
    solution = torch.cat([t.flatten() for t in system.solve_x(b).parts()])
    rhs = torch.cat([t.flatten() for t in b.parts()])
    assert float((_dense_newton_matrix(problem, system) @ solution - rhs).norm()) < 1e-7 * float(rhs.norm())


def test_block_solve_inverts_the_dense_group_blocks() -> None:
    """_Woodbury.block_solve (two products with the closed-form root N_j of H_j^-1) == H_j^-1 X_j with
    H_j = V_j^-2 + [0, A^T diag(z_j / s_j) A] formed densely, N_j^T N_j == H_j^-1, and L^-T L^-1 (from N_j's
    W block L^-1) == its W block's Schur complement inverse."""
    generator = torch.Generator().manual_seed(5)
    n, k, P = 9, 3, 4
    problem = _squared_problem(n, k, P, generator)
    rows = lambda: torch.rand(1, n, 2 * P, generator=generator, dtype=f64) + 0.5  # noqa: E731
    s, z = (Conic(rows(), interior(2 * P, k + 1, generator)[None]) for _ in range(2))
    x = Primal(torch.randn(1, 2 * P, k + 1, generator=generator, dtype=f64))
    system = NewtonSystem(problem, x, s, z)
    H = system.scaling.inverse_square().clone()
    weights = z.rows / s.rows
    H[..., 1:, 1:] += torch.einsum("bnj,bnk,bnl->bjkl", weights, problem.A, problem.A)
    woodbury = system.woodbury
    schur = H[..., 1:, 1:] - H[..., 1:, :1] * H[..., :1, 1:] / H[..., :1, :1]
    S_root = woodbury.root[..., 1:, 1:]
    assert torch.allclose(S_root.transpose(-1, -2) @ S_root, torch.linalg.inv(schur), rtol=1e-10, atol=1e-12)
    assert torch.allclose(woodbury.root_T @ woodbury.root, torch.linalg.inv(H), rtol=1e-10, atol=1e-12)
    X = torch.randn(1, 2 * P, k + 1, generator=generator, dtype=f64)
    assert torch.allclose(woodbury.block_solve(X), torch.linalg.solve(H, X[..., None])[..., 0], rtol=1e-10,
                          atol=1e-12)


def test_newton_blocks_regularized_only_within_rounding() -> None:
    """A block singular to rounding gets a tiny diagonal shift; an indefinite one raises
    Breakdown naming its program, which stops there instead of returning a wrong step."""
    singular = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]], dtype=f64)
    L = cholesky(singular)
    assert torch.allclose(L @ L.transpose(1, 2), singular, atol=1e-6)
    with pytest.raises(Breakdown):
        cholesky(torch.tensor([[[1.0, 0.0], [0.0, -1.0]]], dtype=f64))
    blocks = torch.eye(2, dtype=f64).repeat(3, 4, 1, 1)  # (programs, groups, 2, 2)
    blocks[1, 2, 1, 1] = -1.0
    with pytest.raises(Breakdown) as failure:
        cholesky(blocks)
    assert failure.value.programs.tolist() == [False, True, False]  # the program, whichever of its blocks
    chosen = torch.tensor([True, False, True, False, True])  # those three were programs 0, 2 and 4 of a batch
    assert failure.value.within(chosen).programs.tolist() == [False, False, True, False, False]


def test_newton_system_chooses_its_route_per_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a batch where one hinge program's curvature is past DENSE_CURVATURE and another's is not,
    the first is factorized densely and the second by Woodbury, each solved as it is alone."""
    generator = torch.Generator().manual_seed(4)
    n, k, P = 7, 3, 4
    A = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=f64))[0][None].expand(2, n, k)
    masks = (torch.rand(1, n, P, generator=generator) > 0.5).double().expand(2, n, P)
    y = torch.sign(torch.randn(1, n, generator=generator, dtype=f64)).expand(2, n)
    problem = ConvexBNProblem(A, masks, y, torch.tensor([0.1, 0.1], dtype=f64), "hinge")
    positive = lambda *shape: torch.rand(2, *shape, generator=generator, dtype=f64) + 0.5  # noqa: E731
    cones = lambda: torch.stack([interior(2 * P, k + 1, generator) for _ in range(2)])  # noqa: E731
    s = Conic(positive(n, 2 * P), cones(), positive(n), positive(n))
    z = Conic(positive(n, 2 * P), cones(), positive(n), positive(n) * torch.tensor([[1e3], [1.0]], dtype=f64))
    s.slack[0] /= 1e3  # program 0: slack and margin weights of 1e3 and more, curvature above 100
    x = Primal(torch.randn(2, 2 * P, k + 1, generator=generator, dtype=f64), torch.randn(2, n, generator=generator,
                                                                                        dtype=f64))
    monkeypatch.setattr(newton, "DENSE_CURVATURE", 10.0)
    system = NewtonSystem(problem, x, s, z)
    assert system.dense.tolist() == [True, False]
    b = x.map(lambda t: torch.randn(t.shape, generator=generator, dtype=f64))
    together = system.solve_x(b)
    for index in range(2):
        keep = torch.arange(2) == index
        alone = NewtonSystem(problem.select(keep), x.select(keep), s.select(keep), z.select(keep))
        assert alone.dense.tolist() == [index == 0]
        solution = alone.solve_x(b.select(keep))
        for part, whole in zip(solution.parts(), together.parts()):
            assert torch.allclose(part[0], whole[index], rtol=0, atol=1e-10)


def test_box_corrections_clip_the_eigenvalues() -> None:
    """Gondzio's corrector targets: v + box_correction(v) is v clipped to [low, high] (a decrease at
    most high); for a cone, u + soc_box_correction(u) has u's eigenvectors and its eigenvalues
    u0 +- ||u1|| clipped the same way."""
    v = torch.tensor([[0.01, 0.5, 20.0, 50.0]], dtype=f64)
    assert torch.allclose(v + box_correction(v, torch.tensor(0.1, dtype=f64), torch.tensor(10.0, dtype=f64)),
                          torch.tensor([[0.1, 0.5, 10.0, 40.0]], dtype=f64))
    # eigenvalues (5.96, 0.04), (3, 1) and (40, 20)
    u = torch.tensor([[[3.0, 0.0, 2.96], [2.0, 0.6, 0.8], [30.0, 6.0, 8.0]]], dtype=f64)
    t = u + soc_box_correction(u, torch.tensor([[0.1]], dtype=f64), torch.tensor([[10.0]], dtype=f64))
    radius = t[..., 1:].norm(dim=-1)
    assert torch.allclose(t[..., 0] + radius, torch.tensor([[5.96, 3.0, 30.0]], dtype=f64))
    assert torch.allclose(t[..., 0] - radius, torch.tensor([[0.1, 1.0, 10.0]], dtype=f64))
    assert torch.allclose(t[0, 0, 1:] / radius[0, 0], u[0, 0, 1:] / u[0, 0, 1:].norm())


@pytest.mark.parametrize(("n", "width", "blocks"), [(7, 40, 1), (40, 4000, 2), (300, 100, 4)])
def test_lower_gram_is_the_capacitance_below_its_diagonal_blocks(n: int, width: int, blocks: int) -> None:
    """newton._lower_gram (1, 2 and 4 row blocks at these sizes) of F = E blockdiag(W_i) (W_i = R_i R_i^T, 4 x 4)
    and E == diag(d) + (E R)(E R)^T on and below the diagonal (torch's product as the reference), and its
    Cholesky factor == that of the full matrix."""
    assert newton.gram_row_blocks(2, n, width) == blocks
    generator = torch.Generator().manual_seed(n)
    E = torch.randn(2, n, width, generator=generator, dtype=f64)
    R = torch.randn(width // 4, 4, 4, generator=generator, dtype=f64)
    d = torch.rand(2, n, generator=generator, dtype=f64) + 0.5
    factor = (E.view(2, n, width // 4, 1, 4) @ R).flatten(2)
    full = torch.diag_embed(d) + factor @ factor.transpose(-1, -2)
    F = (E.view(2, n, width // 4, 1, 4) @ (R @ R.transpose(-1, -2))).flatten(2)
    lower = newton._lower_gram(F, E, d)
    # the classical bound on a sum of ``width`` products in floating point: width eps sum_i |a_i b_i| (measured
    # 5e-15 of sum_i |a_i b_i| at width 4000; a fixed rtol 1e-13 held on one CPU's kernels and not another's)
    rounding = width * torch.finfo(f64).eps * (factor.abs() @ factor.abs().transpose(-1, -2) + torch.diag_embed(d))
    assert bool(((lower - full).tril().abs() <= rounding.tril()).all())
    assert torch.allclose(cholesky(lower), torch.linalg.cholesky(full), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", ["squared", "hinge"])
def test_predictions_and_their_adjoint_match_a_loop_over_patterns(loss: str) -> None:
    """ConvexBNProblem.predictions (the smooth losses' n x k form, the hinge loss's per-pattern form)
    == sum_i M_i * (A (S_i - T_i)) pattern by pattern, and <B W, v> == <W, B^T v>."""
    generator = torch.Generator().manual_seed(5)
    batch, n, k, P = 2, 9, 4, 6
    A = torch.randn(batch, n, k, generator=generator, dtype=f64)
    masks = (torch.rand(batch, n, P, generator=generator) > 0.5).double()
    y = torch.sign(torch.randn(batch, n, generator=generator, dtype=f64))
    problem = ConvexBNProblem(A, masks, y, torch.full((batch,), 0.1, dtype=f64), loss)
    W = torch.randn(batch, 2 * P, k, generator=generator, dtype=f64)
    reference = sum(masks[..., i] * (A @ (W[:, i] - W[:, P + i])[..., None])[..., 0] for i in range(P))
    assert torch.allclose(problem.predictions(W), reference, rtol=1e-13, atol=1e-13)
    v = torch.randn(batch, n, generator=generator, dtype=f64)
    left = (problem.predictions(W) * v).sum(-1)
    right = (W * problem.predictions_adjoint(v)).sum((-1, -2))
    assert torch.allclose(left, right, rtol=1e-13, atol=1e-13)
    V = torch.randn(batch, n, 2 * P, generator=generator, dtype=f64)
    assert torch.allclose((problem.rows(W) * V).sum((-1, -2)), (W * problem.rows_adjoint(V)).sum((-1, -2)))
