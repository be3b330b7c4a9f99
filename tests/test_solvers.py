"""The solver layer (issue 13): the batched interior-point method against Clarabel, batched
against one-by-one, and the block on it (episodes, gradients, bad input)."""

from __future__ import annotations

import logging
from contextlib import nullcontext

import numpy as np
import pytest
import torch

import convexnorm as cn
from convexnorm.convex.patterns import sample_patterns
from convexnorm.convex.solve import solve_convex_program
from convexnorm.convex.whitening import whiten
from convexnorm.nn import ConvexBNReLU
from convexnorm.solvers.interior_point import InteriorPointSettings, interior_point
from convexnorm.solvers.kkt import Conic, Primal, criteria
from convexnorm.solvers.problem import ConvexBNProblem


def program(seed: int, n: int, d: int, P: int, loss: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, -1]
    if loss != "squared":
        y = np.where(y > np.median(y), 1.0, -1.0)
    U_prime = whiten(X).U_prime
    patterns = sample_patterns(U_prime, 4 * P, seed)[:P]  # exactly P distinct patterns: one shape per size
    assert patterns.shape[0] == P
    return U_prime, patterns, y


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
@pytest.mark.parametrize("seed, n, d, P", [(0, 40, 3, 20), (1, 60, 5, 40)])
def test_interior_point_matches_clarabel(loss: str, seed: int, n: int, d: int, P: int) -> None:
    U_prime, patterns, y = program(seed, n, d, P, loss)
    result = interior_point(ConvexBNProblem.from_arrays([(U_prime, patterns, y)], 0.1, loss))
    reference = solve_convex_program(U_prime, patterns.astype(bool), y, 0.1, loss, "clarabel", "test",
                                     tight_first=True)
    assert bool(result.converged.all())
    objective = float(result.criteria.objective[0])
    assert abs(objective - reference.objective) <= 1e-6 * reference.objective
    assert float(result.criteria.lower_bound[0]) <= reference.objective * (1 + 1e-9)


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_a_zero_optimum_is_certified_where_the_initial_point_does_not_certify_it(loss: str) -> None:
    """beta above every group's dual norm at the optimum, but not at the initial point's multipliers:
    the iterates converge to W = 0 with a violation relative to their own size that does not vanish
    (before: 100 iterations, W ~ 1e-124, gap 0, violation ~1e-3, not converged); the zero network is
    taken once the iterate's lower bound certifies it."""
    U_prime, patterns, y = program(0, 30, 3, 12, loss)
    result = interior_point(ConvexBNProblem.from_arrays([(U_prime, patterns, y)], 3.0, loss))
    assert bool(result.converged.all()) and 0 < int(result.iterations[0]) < 20
    assert float(result.W.abs().max()) == 0 and float(result.criteria.violation[0]) == 0
    reference = solve_convex_program(U_prime, patterns.astype(bool), y, 3.0, loss, "clarabel", "test",
                                     tight_first=True)
    assert abs(float(result.criteria.objective[0]) - reference.objective) <= 1e-6 * reference.objective


@pytest.mark.parametrize("estimator, beta", [("ConvexBNRegressor", 10.0), ("ConvexBNClassifier", 3.0)])
def test_estimators_fit_the_zero_network_where_beta_is_large(estimator: str, beta: float) -> None:
    """The estimators on that path: W = 0 is the optimum (Clarabel agrees), and solver="torch" fits it
    (before: SolverError after 100 iterations, relative gap 0)."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = X[:120], (y[:120] - y[:120].mean()) / y[:120].std()
    settings = dict(beta=beta, patterns=30, random_state=0)
    if estimator == "ConvexBNClassifier":
        y, settings["loss"] = np.where(y > 0, 1, -1), "logistic"
    native = getattr(cn, estimator)(**settings, solver="torch").fit(X, y)
    reference = getattr(cn, estimator)(**settings).fit(X, y)
    assert native.n_neurons_ == reference.n_neurons_ == 0
    assert abs(native.objective_ - reference.objective_) <= 1e-6 * reference.objective_


def test_clarabel_fits_targets_far_from_unit_size() -> None:
    """y of size 1e5 at beta = 0.1: Clarabel reported the program infeasible (its tolerances are absolute);
    solved in units of y's root mean square it fits, with 1e10 times the objective of the same program in
    y's units (beta / 1e5), as the native method does."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]
    settings = dict(patterns=20, random_state=0)
    large = cn.ConvexBNRegressor(beta=0.1, **settings).fit(X, 1e5 * y)
    unit = cn.ConvexBNRegressor(beta=1e-6, **settings).fit(X, y)
    native = cn.ConvexBNRegressor(beta=0.1, solver="torch", **settings).fit(X, 1e5 * y)
    assert abs(large.objective_ - 1e10 * unit.objective_) <= 1e-6 * large.objective_
    assert abs(large.objective_ - native.objective_) <= 1e-6 * large.objective_
    assert np.allclose(large.predict(X), 1e5 * unit.predict(X), rtol=0, atol=1e-4 * 1e5 * np.abs(y).max())


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_batched_solves_equal_one_by_one(loss: str) -> None:
    items = [program(seed, 30, 3, 12, loss) for seed in range(3)]
    together = interior_point(ConvexBNProblem.from_arrays(items, 0.2, loss))
    for index, item in enumerate(items):
        alone = interior_point(ConvexBNProblem.from_arrays([item], 0.2, loss))
        # the same iterates up to the rounding of batched against single matrix products, which the
        # last iterations amplify in W's ill-determined directions (measured: objectives 1e-13 apart,
        # W up to 3e-7 of its largest entry)
        scale = float(alone.W[0].abs().max())
        assert torch.allclose(together.W[index], alone.W[0], rtol=0, atol=1e-6 * scale)
        assert abs(float(together.criteria.objective[index] - alone.criteria.objective[0])) \
            <= 1e-12 * float(alone.criteria.objective[0])
        assert int(together.iterations[index]) == int(alone.iterations[0])
    assert bool(together.converged.all())


@pytest.mark.parametrize("seed, n, d, P", [(0, 30, 3, 12), (2, 30, 3, 12), (1, 60, 5, 40)])
def test_hinge_woodbury_alone_reaches_the_tolerance(seed: int, n: int, d: int, P: int) -> None:
    """The hinge loss's margin samples (curvature d without bound) through Woodbury only, no dense
    factorization: with their predictions taken from c / d (NewtonSystem._solve_x) the method meets
    its tolerance; with f = B X from the Woodbury difference it had stalled at certified gaps of
    1.2e-6 .. 8.8e-6 on these programs."""
    U_prime, patterns, y = program(seed, n, d, P, "hinge")
    result = interior_point(ConvexBNProblem.from_arrays([(U_prime, patterns, y)], 0.2, "hinge"),
                            InteriorPointSettings(dense_curvature=float("inf")))
    assert bool(result.converged.all())
    reference = solve_convex_program(U_prime, patterns.astype(bool), y, 0.2, "hinge", "clarabel", "test",
                                     tight_first=True)
    assert abs(float(result.criteria.objective[0]) - reference.objective) <= 1e-6 * reference.objective


def test_stopped_programs_leave_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch costs the sum of its programs' iterations: programs that stop leave it (here one
    certified at W = 0 before the first iteration and three of different lengths), and each
    program's answer is still the one it gets alone, in its own place."""
    import convexnorm.solvers.interior_point as method

    items = [program(seed, 30, 3, 12, "squared") for seed in (0, 5, 6)]  # 16, 13 and 14 iterations alone
    items.insert(1, (items[0][0], items[0][1], np.zeros_like(items[0][2])))  # y = 0: W = 0 is optimal
    sizes = []
    original = method.NewtonSystem.__init__

    def counted(self, problem, *args, **kwargs):
        sizes.append(problem.batch)
        original(self, problem, *args, **kwargs)

    monkeypatch.setattr(method.NewtonSystem, "__init__", counted)
    together = interior_point(ConvexBNProblem.from_arrays(items, 0.2, "squared"))
    assert sizes[1] == 3 and sizes[-1] < 3  # after the initial point: never the zero program, then fewer
    assert sorted(sizes[1:], reverse=True) == sizes[1:]
    assert sum(sizes[1:]) == int(together.iterations.sum())
    assert int(together.iterations[1]) == 0 and float(together.W[1].abs().max()) == 0
    for index, item in enumerate(items):
        alone = interior_point(ConvexBNProblem.from_arrays([item], 0.2, "squared"))
        assert int(together.iterations[index]) == int(alone.iterations[0])
        assert abs(float(together.criteria.objective[index] - alone.criteria.objective[0])) \
            <= 1e-12 * max(float(alone.criteria.objective[0]), 1e-300)
    assert bool(together.converged.all())


def test_a_program_that_breaks_down_stops_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where one program's Newton matrix loses definiteness (here its group blocks made indefinite from
    its fifth factorization on), that program stops at its best iterate, unconverged, and the others run
    on to the answers they get alone (before, the whole batch stopped with it)."""
    import convexnorm.solvers.newton as newton

    items = [program(seed, 30, 3, 12, "squared") for seed in (0, 5, 6)]
    poisoned = float(items[1][2][0])
    factorizations = []
    original = newton._Woodbury.__init__

    def failing(self, problem, scaling, rows_part, curvature):
        hit = problem.y[:, 0] == poisoned
        factorizations.append(bool(hit.any()))
        if sum(factorizations) >= 5:
            rows_part[hit] -= 1e30 * torch.eye(rows_part.shape[-1], dtype=rows_part.dtype)
        original(self, problem, scaling, rows_part, curvature)

    monkeypatch.setattr(newton._Woodbury, "__init__", failing)
    together = interior_point(ConvexBNProblem.from_arrays(items, 0.2, "squared"))
    monkeypatch.undo()
    assert together.converged.tolist() == [True, False, True]
    assert int(together.iterations[1]) == 3  # factorized for its initial point and three steps, then broke down
    for index in (0, 2):
        alone = interior_point(ConvexBNProblem.from_arrays([items[index]], 0.2, "squared"))
        assert int(together.iterations[index]) == int(alone.iterations[0])
        assert abs(float(together.criteria.objective[index] - alone.criteria.objective[0])) \
            <= 1e-12 * float(alone.criteria.objective[0])


def episodes(B: int = 3, n: int = 12, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    H = torch.randn(B, n, d, generator=generator, dtype=torch.float64)
    return H, torch.sin(2 * H[..., 0]) + H[..., 1] * H[..., 2]


def test_block_episodes_equal_single_batches() -> None:
    H, y = episodes()
    block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch")
    predictions, objective = block(H, y, return_objective=True)
    assert predictions.shape == (3, 12) and objective.shape == (3,)
    for b in range(3):
        single, single_objective = block(H[b], y[b], return_objective=True)
        assert torch.allclose(predictions[b], single, atol=1e-12) and torch.allclose(objective[b], single_objective)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_block_episodes_on_cuda_equal_the_cpu(loss: str, workers: int) -> None:
    """The batched interior-point forward and the implicit backward on CUDA tensors: predictions,
    objectives and gradients (H, y, beta) on the GPU, equal to the CPU's answers."""
    H, y = episodes(B=4)
    if loss != "squared":
        y = torch.where(y > 0, 1.0, -1.0).double()
    weights = torch.randn(4, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    answers = {}
    for device in ("cpu", "cuda"):
        block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch", loss=loss, learnable_beta=True,
                             solver_options={"workers": workers}).to(device)
        data = H.to(device).requires_grad_(True), y.to(device).requires_grad_(True)
        predictions, objective = block(*data, return_objective=True)
        ((predictions * weights.to(device)).sum() + objective.sum()).backward()
        answers[device] = (predictions.detach(), objective.detach(), data[0].grad, data[1].grad, block.log_beta.grad)
    for got, expected in zip(answers["cuda"], answers["cpu"]):
        assert got.device.type == "cuda"
        assert torch.allclose(got.cpu(), expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max()))


@pytest.mark.parametrize("loss", ["squared", "hinge"])
def test_block_episode_workers_give_the_same_answers(loss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """solver_options["workers"] splits the episodes over threads, forward and backward: the same
    predictions, objectives and gradients (H, y, beta) as one worker, each worker on one intra-op
    thread (the solver's threads setting), in as many threads as workers."""
    import threading

    import convexnorm.solvers.implicit as implicit

    H, y = episodes(B=5)
    if loss == "hinge":
        y = torch.where(y > 0, 1.0, -1.0).double()
    weights = torch.randn(5, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    seen: dict[str, set] = {}

    def recorder(name, function):
        def recorded(*args, **kwargs):
            # by name: a finished thread's ident may be reused by the next one started
            seen.setdefault(name, set()).add((threading.current_thread().name, torch.get_num_threads()))
            return function(*args, **kwargs)
        return recorded

    monkeypatch.setattr(implicit, "solve_relaxed", recorder("forward", implicit.solve_relaxed))
    monkeypatch.setattr(implicit, "_episode_vjp", recorder("backward", implicit._episode_vjp))
    answers = {}
    for workers in (1, 2, 3):
        seen.clear()
        block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch", loss=loss, learnable_beta=True,
                             solver_options={"workers": workers})
        data = H.clone().requires_grad_(True), y.clone().requires_grad_(True)
        predictions, objective = block(*data, return_objective=True)
        ((predictions * weights).sum() + objective.sum()).backward()
        answers[workers] = (predictions.detach(), objective.detach(), data[0].grad, data[1].grad, block.log_beta.grad)
        for stage in ("forward", "backward"):
            assert len({ident for ident, _ in seen[stage]}) == workers and {t for _, t in seen[stage]} == {1}
    for workers in (2, 3):
        for got, expected in zip(answers[workers], answers[1]):
            assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12 * float(expected.abs().max()))


def test_block_episode_workers_name_the_episodes(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """With the episodes split over workers, errors and warnings number them in the whole batch,
    and a bad number of workers is a ValueError naming the block."""

    import convexnorm.solvers.implicit as implicit

    H, y = episodes()
    block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch", solver_options={"max_iterations": 3,
                                                                                     "workers": 2})
    with pytest.raises(cn.SolverError, match=r"ConvexBNReLU: solver='torch' did not meet its tolerances in "
                                             r"episode\(s\) \[0, 1, 2\] \(episode 0: relative gap"):
        block(H, y)
    polish_episode = implicit.polish_episode
    monkeypatch.setattr(implicit, "polish_episode", lambda problem, result, groups, rows, b: None if torch.equal(
        problem.y[b], y[2]) else polish_episode(problem, result, groups, rows, b))
    monkeypatch.setattr(implicit, "_resumed_polish", lambda problem, result, episodes, settings: [
        (None, implicit._iterate_solution(result, implicit.active_sets(problem, result)[1], b)) for b in episodes])
    with caplog.at_level(logging.WARNING, logger="convexnorm"):
        ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch", solver_options={"workers": 2})(H, y)
    assert [record.getMessage().startswith("ConvexBNReLU: the polish was refused in episode(s) [2];")
            for record in caplog.records] == [True]
    for workers in (0, 1.5, True):
        with pytest.raises(ValueError, match=r"ConvexBNReLU: solver_options\['workers'\] must be an integer >= 1"):
            ConvexBNReLU(3, solver="torch", solver_options={"workers": workers})(H, y)
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['method'\]; it takes \[.*'workers'\]"):
        ConvexBNReLU(3, solver="torch", solver_options={"method": "al"})(H, y)


def test_block_forward_and_backward_run_on_the_solver_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """solver_options["threads"] holds for the block's whitening, its solve and its implicit backward
    (which the autograd engine calls outside the forward); torch's setting is restored after each."""
    import convexnorm.solvers.implicit as implicit

    seen = {}

    def recorder(name, function):
        def recorded(*args, **kwargs):
            seen.setdefault(name, set()).add(torch.get_num_threads())
            return function(*args, **kwargs)
        return recorded

    monkeypatch.setattr(implicit, "_episode_vjp", recorder("backward", implicit._episode_vjp))
    monkeypatch.setattr(implicit, "solve_relaxed", recorder("solve", implicit.solve_relaxed))
    monkeypatch.setattr(ConvexBNReLU, "_whiten", recorder("whiten", ConvexBNReLU._whiten))
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        H, y = episodes()
        H.requires_grad_(True)
        block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch", solver_options={"threads": 1})
        block(H, y).sum().backward()
        assert torch.get_num_threads() == 2
        assert seen == {"whiten": {1}, "solve": {1}, "backward": {1}} and torch.isfinite(H.grad).all()
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_block_gradients_agree_with_cvxpylayers(loss: str) -> None:
    H, y = episodes(B=1)
    H, y = H[0], y[0]
    if loss != "squared":
        y = torch.where(y > 0, 1.0, -1.0).double()
    generator = torch.Generator().manual_seed(5)
    H_query = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    weights = torch.randn(5, generator=generator, dtype=torch.float64)
    results = {}
    for solver, args in (("cvxpylayers", {"eps_abs": 1e-12, "eps_rel": 1e-12, "max_iters": 1_000_000}),
                         ("torch", {})):
        block = ConvexBNReLU(3, beta=0.2, n_patterns=10, learnable_beta=True, loss=loss, solver=solver,
                             solver_options=args)
        H_var, y_var = H.clone().requires_grad_(True), y.clone().requires_grad_(True)
        predictions, objective = block(H_var, y_var, H_query=H_query, return_objective=True)
        value = (predictions * weights).sum() + 0.3 * objective
        results[solver] = (objective.detach(), *torch.autograd.grad(value, [H_var, y_var, block.log_beta]))
    for reference, native in zip(results["cvxpylayers"], results["torch"]):
        assert torch.linalg.norm(native - reference) <= 1e-6 * torch.linalg.norm(reference)  # measured: 1e-12 (logistic: 1e-7)


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
@pytest.mark.parametrize("beta", [3.0, 10.0])
def test_block_zero_network_where_beta_is_large(loss: str, beta: float, caplog: pytest.LogCaptureFixture) -> None:
    """beta past every group's dual norm: the optimum is W = 0 (certified at the initial point for beta = 10,
    after a few iterations for beta = 3). The native block returns it with no polish to refuse (before: a
    warning, and for the logistic loss at beta = 2 on a 64x8x64 batch a SolverError), predictions and their
    gradients exactly zero; the cvxpylayers block, whose solution is zero only to its solver's accuracy, no
    longer fails its feasibility check relative to that solution's own size, and agrees."""
    H, y = episodes(B=1)
    H, y = H[0], y[0]
    if loss != "squared":
        y = torch.where(y > 0, 1.0, -1.0).double()
    H_query = torch.randn(5, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    results = {}
    for solver, args in (("cvxpylayers", {"eps_abs": 1e-12, "eps_rel": 1e-12, "max_iters": 1_000_000}),
                         ("torch", {})):
        block = ConvexBNReLU(3, beta=beta, n_patterns=10, learnable_beta=True, loss=loss, solver=solver,
                             solver_options=args)
        H_var, y_var = H.clone().requires_grad_(True), y.clone().requires_grad_(True)
        with caplog.at_level(logging.WARNING, logger="convexnorm"):
            predictions, objective = block(H_var, y_var, H_query=H_query, return_objective=True)
        value = predictions.sum() + 0.3 * objective
        results[solver] = (predictions.detach(), objective.detach(),
                           *torch.autograd.grad(value, [H_var, y_var, block.log_beta]))
    assert "polish was refused" not in caplog.text
    predictions, objective, grad_H, grad_y, grad_log_beta = results["torch"]
    assert float(predictions.abs().max()) == 0 and float(grad_H.abs().max()) == 0 and float(grad_log_beta) == 0
    assert torch.allclose(grad_y, 0.3 * y if loss == "squared" else torch.zeros_like(y), rtol=1e-12, atol=0)
    for reference, native in zip(results["cvxpylayers"], results["torch"]):  # zero, or a loss's value at zero
        assert torch.linalg.norm(native - reference) <= 1e-6 * max(float(torch.linalg.norm(reference)), 1.0)


def test_block_polishes_at_small_beta(caplog: pytest.LogCaptureFixture) -> None:
    """beta = 1e-5 on a 32 x 6 x 32 batch: the polish's Newton iterations settle at the rounding of the terms
    f - y (1.6e-15 on another batch), above POLISH_RTOL beta = 1e-15, and the polish was refused here, with a
    warning; its tolerance is now floored at POLISH_ROUNDING of those numbers. The derivative in y along a
    direction agrees with central differences."""
    H, y = episodes(B=1, n=32, d=6, seed=1)
    H, y = H[0], y[0]
    block = ConvexBNReLU(6, beta=1e-5, n_patterns=32, solver="torch")
    direction = torch.randn(32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y_var = y.clone().requires_grad_(True)
    with caplog.at_level(logging.WARNING, logger="convexnorm"):
        predictions, objective = block(H, y_var, return_objective=True)
        (grad_y,) = torch.autograd.grad(objective, [y_var])
    assert not caplog.records
    with torch.no_grad():
        central = (block(H, y + 1e-6 * direction, return_objective=True)[1]
                   - block(H, y - 1e-6 * direction, return_objective=True)[1]) / 2e-6
    assert abs(float((grad_y * direction).sum() - central)) <= 1e-5 * abs(float(central))


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_block_gradients_of_duplicate_samples(loss: str) -> None:
    """A batch of 12 samples, each twice: moving one copy off the other is a kink (one-sided derivatives
    -0.37 and 1.46 along the direction below, squared loss), and the two copies' gradients are determined
    only in sum. The native block shares them evenly, as the cvxpylayers path does, so its derivative along a
    direction that separates the copies lies between the one-sided ones (squared loss: 0.546, their mean);
    before, the multipliers sat on one copy and relu's derivative on the neurons' hyperplanes followed the
    rounding (-0.48, outside them)."""
    generator = torch.Generator().manual_seed(0)
    H = torch.randn(24, 3, generator=generator, dtype=torch.float64)
    y = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2]
    H, y = torch.cat([H[:12], H[:12]]), torch.cat([y[:12], y[:12]])
    if loss != "squared":
        y = torch.where(y > 0, 1.0, -1.0).double()
    direction = torch.randn(24, 3, generator=generator, dtype=torch.float64)
    gradients = {}
    for solver, args in (("cvxpylayers", {"eps_abs": 1e-12, "eps_rel": 1e-12, "max_iters": 1_000_000}),
                         ("torch", {})):
        torch.manual_seed(0)
        block = ConvexBNReLU(3, beta=0.05, n_patterns=8, loss=loss, solver=solver, solver_options=args)
        H_var = H.clone().requires_grad_(True)
        # the cvxpylayers path differentiates duplicate samples by lsmr, not its dense default, and says so
        with pytest.warns(UserWarning, match="duplicate samples") if solver == "cvxpylayers" else nullcontext():
            block(H_var, y).sum().backward()
        gradients[solver] = H_var.grad
    native, reference = gradients["torch"], gradients["cvxpylayers"]
    assert torch.allclose(native[:12], native[12:], rtol=1e-9, atol=1e-9 * float(native.abs().max()))
    assert torch.linalg.norm(native - reference) <= 1e-5 * torch.linalg.norm(reference)
    with torch.no_grad():  # the one-sided derivatives along the direction, which a gradient at a kink lies between
        value = [float(block(H + step * direction, y).sum()) for step in (-1e-6, 0.0, 1e-6)]
    sides = sorted([(value[2] - value[1]) / 1e-6, (value[1] - value[0]) / 1e-6])
    slack = 1e-5 * max(abs(sides[0]), abs(sides[1]), 1.0)
    assert sides[1] - sides[0] > 0.1  # a kink indeed
    assert sides[0] - slack <= float((native * direction).sum()) <= sides[1] + slack


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_block_polishes_batches_with_duplicate_samples(loss: str, caplog: pytest.LogCaptureFixture) -> None:
    """A 64x8x64 batch with 16 samples twice: a duplicate pair is one constraint, so ``active_sets`` counts it once
    against a group's k - 1 rows. Counted twice, the cap dropped rows that are active, Newton's method did not
    contract from the residual 2.5e-2 that left, and the polish was refused on every such batch (the block's
    gradients then rest on the interior-point solution, 6.7e-7 off a tighter solve's). Now it is kept (no
    warning), at the objective of a solve 1e3 times tighter, with the derivative along a direction that moves
    both copies alike (not a kink) equal to central differences. The copies share their gradient, and along a
    direction that moves them apart (a kink) the derivative lies between the one-sided ones: for the hinge
    loss the objective's derivative in the predictions is the solution's -y alpha (``hinge_multipliers``);
    relu's, on the margin, had followed the rounding (gradients 0.4 apart between copies and, on 2 of 9
    directions at three batches, outside the one-sided derivatives)."""
    generator = torch.Generator().manual_seed(0)
    H = torch.randn(64, 8, generator=generator, dtype=torch.float64)
    y = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2]
    H[32:48], y[32:48] = H[:16], y[:16]
    if loss != "squared":
        y = torch.where(y > y.median(), 1.0, -1.0).double()
    direction = torch.randn(64, 8, generator=generator, dtype=torch.float64)
    direction[32:48] = direction[:16]
    block = ConvexBNReLU(8, beta=0.05, n_patterns=64, loss=loss, solver="torch", seed=0)
    H_var = H.clone().requires_grad_(True)
    with caplog.at_level(logging.WARNING, logger="convexnorm"):
        predictions, objective = block(H_var, y, return_objective=True)
    assert not caplog.records
    (predictions.sum() + 0.3 * objective).backward()
    tighter = ConvexBNReLU(8, beta=0.05, n_patterns=64, loss=loss, solver="torch", seed=0,
                           solver_options={"tol": 1e-8 if loss == "hinge" else 1e-10})
    with torch.no_grad():
        assert abs(float(objective - tighter(H, y, return_objective=True)[1])) <= 1e-10 * float(objective)
        value = [float((lambda out: out[0].sum() + 0.3 * out[1])(block(H + step * direction, y, return_objective=True)))
                 for step in (-1e-6, 1e-6)]
    central = (value[1] - value[0]) / 2e-6
    assert abs(float((H_var.grad * direction).sum()) - central) <= 1e-6 * max(abs(central), 1.0)
    gradient = H_var.grad
    assert torch.allclose(gradient[:16], gradient[32:48], rtol=0, atol=1e-9 * float(gradient.abs().max()))
    apart = torch.randn(64, 8, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        value = [float((lambda out: out[0].sum() + 0.3 * out[1])(block(H + step * apart, y, return_objective=True)))
                 for step in (-1e-7, 0.0, 1e-7)]
    sides = sorted([(value[2] - value[1]) / 1e-7, (value[1] - value[0]) / 1e-7])
    assert sides[1] - sides[0] > 0.1  # a kink indeed
    slack = 1e-4 * max(abs(sides[0]), abs(sides[1]), 1.0)
    assert sides[0] - slack <= float((gradient * apart).sum()) <= sides[1] + slack


@pytest.mark.parametrize("loss, seed, size, beta", [
    ("squared", 0, "32x6x32", 0.05), ("logistic", 0, "32x6x32", 0.05), ("hinge", 0, "32x6x32", 0.05),
    ("squared", 1000, "32x6x32", 0.05), ("hinge", 2016, "96x12x48", 0.05), ("squared", 6139, "48x4x96", 0.05),
    ("squared", 0, "128x3x24", 0.05), ("hinge", 0, "128x3x24", 0.05), ("squared", 102, "64x8x64", 0.01)])
def test_block_gradients_match_central_differences(loss: str, seed: int, size: str, beta: float,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """At the benchmark's smallest size (n x d x P = 32 x 6 x 32) and one larger batch: directional
    derivatives in H, y and log beta against central differences of the (polished) forward, 1e-6
    relative, with no warning.
    Here the cvxpylayers path itself is 8e-5 off (measured), and the earlier dense least-squares
    backward (w_j not projected out of the rows, no polish) was 5x off. Seed 1000: the optimum splits
    one neuron between two patterns that differ only on rows of its hyperplane (directions at cosine
    1 - 3.6e-7), the active-set system is singular along the split, and before the polish merged
    such groups it was refused there, with a warning, and the gradients in y and log beta were 20%
    and 30% off (measured; now 3e-10). Seed 2016 at 96 x 12 x 48, hinge loss: one row of a group's
    active set read off the iterate wrongly (z / s = 3) bent two of its other rows' multipliers negative,
    and before the correction dropped only the least held of them (``_least_held``) the polish was
    refused, with a warning, and the gradients were 72% off (measured). Seed 6139 at 48 x 4 x 96: a group
    shrinking to zero at 7.5e-5 of the largest beside an active one at 7.6e-4, which no guess with the
    thresholds SMALL_GROUP_RTOLS alone separated (refused, with a warning, also after resuming). At
    128 x 3 x 24 the forward solves on candidate rows (solvers/candidate_rows.py: 48 of 128 per pattern). Seed 102
    at 64 x 8 x 64, beta 0.01: a group at 1.1e-3 of the largest whose optimum is 2.1e-4, where Newton's first step
    from the iterate grew the residual 1.7x; before a first step could (POLISH_FIRST_GROWTH) the polish was refused,
    with a warning, also after resuming, and a derivative was 40% off (measured). Seed 6139 lies within 1e-6 of a
    kink along the direction in H: at H + 1e-6 d a zero group's least dual norm is 3.2e-6 above beta, and the
    solution there has it active (``test_a_group_marginally_above_beta_joins_the_polished_point``), so its
    differences take steps of 1e-7 (at 1e-6 the central difference straddles the kink: 6.96 against 5.418 on
    either side)."""

    n, d, P = (int(v) for v in size.split("x"))
    H, y = episodes(B=1, n=n, d=d, seed=seed)
    _check_block_gradients(H[0], y[0], loss, beta, P, caplog, step=1e-7 if seed == 6139 else 1e-6)


def test_a_guess_with_a_left_out_group_joined_starts_from_its_own_point(caplog: pytest.LogCaptureFixture) -> None:
    """Episode 7 of 8 of 64 x 8 x 64 (seed 7), squared loss: Newton's method from the iterate's 34 active groups
    grows the residual 78x at its first step (refused), and without the group at 2e-5 of the largest the polished
    point leaves it out while its dual norm is 0.2% above beta. That group joined along its steepest descent
    (``_joined``) is the first set again, skipped before as tried: a warning, also after resuming, and the derivative
    in H 22% off central differences. From its own point Newton's method converges (4e-3 to 8e-16 in three steps),
    no warning, and the derivatives agree (measured 1e-8)."""
    H, y = episodes(B=8, n=64, d=8, seed=7)
    _check_block_gradients(H[7], y[7], "squared", 0.05, 64, caplog)


def _check_block_gradients(H: torch.Tensor, y: torch.Tensor, loss: str, beta: float, P: int,
                           caplog: pytest.LogCaptureFixture, step: float = 1e-6) -> None:
    """``test_block_gradients_match_central_differences`` on one batch (H, y): the block with no warning, its
    directional derivatives in H, y and log beta within 1e-6 of central differences with ``step``."""
    n, d = H.shape
    if loss != "squared":
        y = torch.where(y > 0, 1.0, -1.0).double()
    generator = torch.Generator().manual_seed(5)
    H_query = torch.randn(5, d, generator=generator, dtype=torch.float64)
    weights = torch.randn(5, generator=generator, dtype=torch.float64)
    directions = torch.randn(n, d, generator=generator, dtype=torch.float64), \
        torch.randn(n, generator=generator, dtype=torch.float64) * (loss == "squared")
    block = ConvexBNReLU(d, beta=beta, n_patterns=P, learnable_beta=True, loss=loss, solver="torch")

    def value(H_: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
        predictions, objective = block(H_, y_, H_query=H_query, return_objective=True)
        return (predictions * weights).sum() + 0.3 * objective

    H_var, y_var = H.clone().requires_grad_(True), y.clone().requires_grad_(True)
    with caplog.at_level(logging.WARNING, logger="convexnorm"):
        grad_H, grad_y, grad_beta = torch.autograd.grad(value(H_var, y_var), [H_var, y_var, block.log_beta])
    assert not caplog.records
    with torch.no_grad():
        along_H = (value(H + step * directions[0], y) - value(H - step * directions[0], y)) / (2 * step)
        along_y = (value(H, y + step * directions[1]) - value(H, y - step * directions[1])) / (2 * step)
        block.log_beta += step
        up = value(H, y)
        block.log_beta -= 2 * step
        along_beta = (up - value(H, y)) / (2 * step)
    for analytic, numeric in (((grad_H * directions[0]).sum(), along_H), ((grad_y * directions[1]).sum(), along_y),
                              (grad_beta, along_beta)):
        assert abs(float(analytic - numeric)) <= 1e-6 * max(abs(float(numeric)), 1e-3)


def test_a_group_marginally_above_beta_joins_the_polished_point() -> None:
    """Seed 6139 at 48 x 4 x 96 moved by 1e-6 along a direction: the first polished point leaves out a group whose
    least dual norm is 3.2e-6 above beta (within ZERO_GROUP_DUAL_RTOL, so it was kept), and its predictions were
    1.3e-6 off the cvxpylayers path (Clarabel), its objective 4e-12 above. With that group joined (its
    ZERO_GROUP_DUAL_ROUNDING second try) the polish holds with no zero group above beta, and the predictions agree
    to 2e-9 (measured)."""
    H, y = episodes(B=1, n=48, d=4, seed=6139)
    generator = torch.Generator().manual_seed(5)
    H_query = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    torch.randn(5, generator=generator, dtype=torch.float64)
    moved = H[0] + 1e-6 * torch.randn(48, 4, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out = {solver: ConvexBNReLU(4, beta=0.05, n_patterns=96, solver=solver)(moved, y[0], H_query=H_query,
                                                                              return_objective=True)
               for solver in ("torch", "cvxpylayers")}
    assert torch.allclose(out["torch"][0], out["cvxpylayers"][0], rtol=0, atol=1e-7)
    assert float(out["torch"][1]) <= float(out["cvxpylayers"][1]) * (1 + 1e-12)


@pytest.mark.parametrize("loss, beta, seed, clarabel_atol", [("logistic", 0.05, 10238, 1e-7),
                                                             ("hinge", 0.01, 20019, 1e-7),
                                                             ("squared", 0.001, 60051, None)])
def test_a_batch_with_a_group_marginally_above_beta_has_the_tighter_solves_gradient(
        loss: str, beta: float, seed: int, clarabel_atol: float | None) -> None:
    """32x6x32, the batches of ``bench_polish.py --seed S`` (logistic, beta 0.05, 10238; hinge, beta 0.01, 20019;
    squared at the default beta 1e-3, 60051): the polished point left out a group 7.4e-6 (8.1e-6, 2.6e-6) above
    beta, within ZERO_GROUP_DUAL_RTOL, so it was kept; its gradient in H and log beta was 38% (110%, 53%) off that
    of the same block solved at tol 1e-9, while central differences of that forward agreed with it (measured).
    With the group joined the gradients agree (measured 2e-11, 4e-11, 6e-11). Against the cvxpylayers path
    (Clarabel) the query predictions were 1.0e-5 and 4.9e-5 off, now 9e-9 and 9e-10 (measured); at beta 1e-3
    Clarabel's own predictions are not that accurate (8e-7 off after, 5.6e-6 before, its objective 2e-11 above
    this block's), so the squared batch is held to the tighter solve alone."""
    generator = torch.Generator().manual_seed(seed)
    H = torch.randn(32, 6, generator=generator, dtype=torch.float64)
    y = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2]
    y = y if loss == "squared" else torch.where(y > 0, 1.0, -1.0).double()
    generator = torch.Generator().manual_seed(10 ** 6 + seed)
    H_query = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    weights = torch.randn(5, generator=generator, dtype=torch.float64)

    def gradient(tol: float | None) -> torch.Tensor:
        block = ConvexBNReLU(6, beta=beta, n_patterns=32, loss=loss, solver="torch", learnable_beta=True,
                             solver_options={} if tol is None else {"tol": tol})
        H_var = H.clone().requires_grad_(True)
        predictions, objective = block(H_var, y, H_query=H_query, return_objective=True)
        parts = torch.autograd.grad((predictions * weights).sum() + 0.3 * objective, [H_var, block.log_beta])
        return torch.cat([part.flatten() for part in parts])

    expected = gradient(1e-9)
    assert float((gradient(None) - expected).abs().max()) <= 1e-8 * float(expected.abs().max())
    if clarabel_atol is not None:
        with torch.no_grad():
            torch_path, clarabel = (ConvexBNReLU(6, beta=beta, n_patterns=32, loss=loss, solver=solver)(
                H, y, H_query=H_query) for solver in ("torch", "cvxpylayers"))
        assert torch.allclose(torch_path, clarabel, rtol=0, atol=clarabel_atol)


@pytest.mark.parametrize("beta", [0.01, 0.05])
def test_the_hinge_losss_polish_holds_on_its_first_guess(monkeypatch, beta: float) -> None:
    """Four hinge episodes of 32x6x32: the polish's first guess at the active groups (those above the largest of
    SMALL_GROUP_RTOLS of the largest group) holds on each, where every group that passes the active-group test,
    the first guess before, was refused on most (10 and 7 guesses for the four episodes at beta 0.01 and 0.05,
    measured). Its gradients are those of the same block solved at tol 1e-9."""
    import convexnorm.solvers.implicit as implicit

    guesses = []
    polish = implicit._polish

    def counted(*args, **kwargs):
        found = polish(*args, **kwargs)
        guesses.append(found is not None)
        return found

    monkeypatch.setattr(implicit, "_polish", counted)
    generator = torch.Generator().manual_seed(3)
    H = torch.randn(4, 32, 6, generator=generator, dtype=torch.float64)
    y = torch.where(torch.sin(2 * H[..., 0]) + H[..., 1] * H[..., 2] > 0, 1.0, -1.0).double()
    H_query = torch.randn(4, 5, 6, generator=generator, dtype=torch.float64)
    weights = torch.randn(4, 5, generator=generator, dtype=torch.float64)

    def gradient(options: dict) -> torch.Tensor:
        block = ConvexBNReLU(6, beta=beta, n_patterns=32, loss="hinge", solver="torch", learnable_beta=True,
                             solver_options=options)
        H_var = H.clone().requires_grad_(True)
        parts = torch.autograd.grad((block(H_var, y, H_query=H_query) * weights).sum(), [H_var, block.log_beta])
        return torch.cat([part.flatten() for part in parts])

    found = gradient({})
    assert guesses == [True] * 4
    expected = gradient({"tol": 1e-9})
    assert float((found - expected).abs().max()) <= 1e-8 * float(expected.abs().max())


def test_bad_episodes_are_named() -> None:
    block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch")
    H, y = episodes()
    with pytest.raises(ValueError, match=r"ConvexBNReLU: y must have shape \(3, 12\)"):
        block(H, y[:2])
    with pytest.raises(ValueError, match=r"ConvexBNReLU: H_query must be \(3, m, 3\)"):
        block(H, y, H_query=torch.randn(2, 4, 3, dtype=torch.float64))
    broken = H.clone()
    broken[1, 4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"ConvexBNReLU: H contains NaN or Inf in episode\(s\) \[1\]"):
        block(broken, y)
    flat = H.clone()
    flat[2] = flat[2, :, :1].repeat(1, 3)  # rank 1
    with pytest.raises(ValueError, match="ConvexBNReLU: the batch is rank-deficient in episode 2"):
        block(flat, y)
    with pytest.raises(ValueError, match="episodes .* need solver='torch'"):
        ConvexBNReLU(3, beta=0.2, n_patterns=10)(H, y)
    with pytest.raises(ValueError, match=r"ConvexBNReLU: solver='torch' does not take option\(s\) \['method'\]"):
        ConvexBNReLU(3, solver="torch", solver_options={"method": "al"})(H, y)


def test_unsolved_episode_is_named_and_settings_are_checked() -> None:
    block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch", solver_options={"max_iterations": 3})
    H, y = episodes()
    with pytest.raises(cn.SolverError, match=r"ConvexBNReLU: solver='torch' did not meet its tolerances in "
                                             r"episode\(s\) \[0, 1, 2\]"):
        block(H, y)
    assert InteriorPointSettings().tol == 1e-7


@pytest.mark.parametrize("first", ["convexnorm.solvers.implicit", "convexnorm.nn", "convexnorm.convex",
                                   "convexnorm.programs", "convexnorm.optim", "convexnorm.diagnostics"])
def test_every_subpackage_imports_first(first: str) -> None:
    """No import cycle: each subpackage can be the first one imported in a fresh interpreter."""
    import subprocess
    import sys

    code = f"import {first}; import convexnorm; convexnorm.ConvexBNRegressor; convexnorm.nn.ConvexBNReLU"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_the_solver_layer_imports_neither_nn_nor_convex() -> None:
    """Imports run one way: every module of convexnorm.solvers loads without convexnorm.nn or
    convexnorm.convex (which both build on it)."""
    import subprocess
    import sys

    modules = ["backends", "cvxpy_backend", "cvxpylayers_backend", "native", "implicit", "interior_point"]
    code = ("import sys; " + "; ".join(f"import convexnorm.solvers.{m}" for m in modules)
            + "; bad = [m for m in sys.modules if m.startswith(('convexnorm.nn', 'convexnorm.convex'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_every_backend_behind_one_entry_point() -> None:
    """solve_program gives the same optimum with every backend, typed results, and names the
    owner for an unknown solver."""
    from convexnorm.solvers.backends import SOLVERS, ProgramSolution, solve_program

    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    y = np.sin(2 * X[:, 0])
    U_prime = cn.whiten(X).U_prime
    patterns = cn.arrangement_patterns(U_prime, 12, seed=0)
    objectives = {}
    for name in SOLVERS:
        solution = solve_program(U_prime, patterns, y, 0.1, "squared", name, "test")
        assert isinstance(solution, ProgramSolution) and solution.S.shape == (U_prime.shape[1], len(patterns))
        W = np.concatenate([solution.S, solution.T], 1)
        f = (patterns.T * (U_prime @ solution.S)).sum(1) - (patterns.T * (U_prime @ solution.T)).sum(1)
        objectives[name] = 0.5 * np.sum((f - y) ** 2) + 0.1 * np.linalg.norm(W, axis=0).sum()
    assert max(objectives.values()) - min(objectives.values()) <= 1e-5 * objectives["clarabel"]
    with pytest.raises(ValueError, match=r"test: solver must be one of \['clarabel', 'scs', 'torch'\]"):
        solve_program(U_prime, patterns, y, 0.1, "squared", "mosek", "test")



def test_best_iterate_never_trades_a_met_test_for_a_smaller_gap() -> None:
    """The best iterate is scored with the stopping test's violation tolerance: an iterate that
    meets it (gap 1e-8, violation 1e-13) is not replaced by one with a smaller gap whose
    violation (1e-9) exceeds violation_tol (1e-12)."""
    from convexnorm.solvers.interior_point import _Best
    from convexnorm.solvers.kkt import Conic, Criteria, Primal

    def point(value: float) -> tuple[Primal, Conic]:
        t = torch.full((1, 2, 3), value, dtype=torch.float64)
        return Primal(t), Conic(torch.full((1, 4, 2), value, dtype=torch.float64), t)

    def measured(gap: float, violation: float) -> Criteria:
        return Criteria(*(torch.tensor([v], dtype=torch.float64) for v in (1.0, 1.0 - gap, gap, violation)))

    x, s = point(1.0)
    best = _Best(x, s, s, measured(1e-8, 1e-13), violation_tol=1e-12)
    x2, s2 = point(2.0)
    best.update(x2, s2, s2, measured(1e-9, 1e-9))
    assert bool(best.criteria.met(1e-7, 1e-12).all()) and float(best.x.X[0, 0, 0]) == 1.0


def test_block_hinge_forward_is_polished_on_its_margins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hinge loss's polish: the samples on the margin (y f = 1, alpha in (0, 1)) are unknowns of
    the active-set system beside W and G; the polished forward certifies the optimum to 1e-10 and
    equals cvxpylayers' objective."""
    import convexnorm.solvers.implicit as implicit

    found = []
    polish_episode = implicit.polish_episode
    monkeypatch.setattr(implicit, "polish_episode", lambda *args: found.append(polish_episode(*args)) or found[-1])
    H, y = episodes(B=1)
    labels = torch.where(y > 0, 1.0, -1.0)
    block = ConvexBNReLU(3, beta=0.1, n_patterns=8, loss="hinge", solver="torch")
    _, objective = block(H[0], labels[0], return_objective=True)
    (W, G, margins), = found
    assert bool(margins.margin.any()) and bool(((margins.on_margin > 0) & (margins.on_margin < 1)).all())
    _, U, S, _ = block._whiten(H[0])
    U_prime = block._rows(U, S, 12)
    problem = ConvexBNProblem(U_prime[None], block._patterns(U_prime)[None], labels[0][None].double(),
                              torch.tensor([0.1], dtype=torch.float64), "hinge")
    measured = criteria(problem, Primal.of_neurons(W.T[None]), Conic(G[None], None, None, margins.alpha[None]))
    assert float(measured.relative_gap[0]) <= 1e-10  # measured 2e-11; the interior-point method stops at 1e-5
    reference = ConvexBNReLU(3, beta=0.1, n_patterns=8, loss="hinge")
    _, expected = reference(H[0], labels[0], return_objective=True)
    assert abs(float(objective) - float(expected)) <= 1e-6 * float(expected)


@pytest.mark.usefixtures("stalling_woodbury")
def test_block_hinge_finishes_with_the_dense_route_where_woodbury_stops_short(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The hinge block solves by Woodbury alone (dense_curvature=inf), which without its refinement's mismatch
    stops at certified gaps of about 1e-6: asked for 1e-7, the episodes that stop short resume with the dense
    factorization and meet it (no SolverError), with the output of the dense route throughout."""
    import convexnorm.solvers.interior_point as method

    resumed = []
    original = method.resumed_on
    monkeypatch.setattr(method, "resumed_on", lambda problem, result, keep, settings: resumed.append(
        keep.tolist()) or original(problem, result, keep, settings))
    generator = torch.Generator().manual_seed(7)
    H = torch.randn(2, 64, 8, generator=generator, dtype=torch.float64)
    labels = torch.where(torch.sin(2 * H[..., 0]) + H[..., 1] * H[..., 2] > 0, 1.0, -1.0).double()
    woodbury = ConvexBNReLU(8, beta=0.05, n_patterns=64, loss="hinge", solver="torch",
                            solver_options={"tol": 1e-7, "dense_curvature": float("inf")})
    out = woodbury(H, labels)
    assert resumed and any(any(keep) for keep in resumed)
    dense = ConvexBNReLU(8, beta=0.05, n_patterns=64, loss="hinge", solver="torch",
                         solver_options={"tol": 1e-7, "dense_curvature": 1e5})
    assert torch.allclose(out, dense(H, labels), rtol=0, atol=1e-9)


def test_polish_rejects_a_wrong_active_set() -> None:
    """The polish keeps a point only with a certified gap no larger than the interior-point
    method's: every row declared active (a wrong active set) is refused, the identified one is
    kept and certifies the optimum to 1e-10 (measured 1.2e-11, the interior-point method 1.5e-9;
    the inactive groups keep the iterate's multipliers, within 1e-9 of their dual norm's bound)."""
    from convexnorm.solvers.implicit import _polish, active_sets

    U_prime, patterns, y = program(0, 30, 3, 12, "squared")
    problem = ConvexBNProblem.from_arrays([(U_prime, patterns, y)], 0.2, "squared")
    result = interior_point(problem)
    bound, gap = result.criteria.lower_bound[0], result.criteria.relative_gap[0]
    args = problem.A[0], problem.y[0], problem.beta[0], problem.masks[0]
    groups, rows = active_sets(problem, result)
    W, G = (result.W[0] * groups[0, :, None]).T, result.z.rows[0]
    assert _polish(*args, W, G, torch.ones_like(G, dtype=torch.bool), "squared", bound, gap) is None
    found = _polish(*args, W, G, rows[0], "squared", bound, gap)
    assert found is not None
    polished, multipliers, _ = found
    measured = criteria(problem, Primal.of_neurons(polished.T[None]), Conic(multipliers[None], None))
    reference = solve_convex_program(U_prime, patterns.astype(bool), y, 0.2, "squared", "clarabel", "test",
                                     tight_first=True).objective
    assert float(measured.relative_gap[0]) <= 1e-10
    assert float(measured.lower_bound[0]) <= reference <= float(measured.objective[0]) * (1 + 1e-8)


def test_polish_refuses_a_reduced_system_past_its_largest_dimension(monkeypatch: pytest.MonkeyPatch) -> None:
    """The polish of the program above (its reduced system measured here) is refused, without a least-squares or
    Cholesky solve, once POLISH_MAX_DIMENSION is below that system's dimension, and kept at it."""
    from convexnorm.solvers import implicit

    U_prime, patterns, y = program(0, 30, 3, 12, "squared")
    problem = ConvexBNProblem.from_arrays([(U_prime, patterns, y)], 0.2, "squared")
    result = interior_point(problem)
    groups, rows = implicit.active_sets(problem, result)
    dimensions, original = [], implicit._reduced_solve
    monkeypatch.setattr(implicit, "_reduced_solve", lambda reduced, rhs, bordered: dimensions.append(
        len(reduced)) or original(reduced, rhs, bordered))
    assert implicit.polish_episode(problem, result, groups, rows, 0) is not None
    largest = max(dimensions)
    assert largest > 0
    dimensions.clear()
    monkeypatch.setattr(implicit, "POLISH_MAX_DIMENSION", largest - 1)
    assert implicit.polish_episode(problem, result, groups, rows, 0) is None
    assert all(dimension < largest for dimension in dimensions)
    monkeypatch.setattr(implicit, "POLISH_MAX_DIMENSION", largest)
    assert implicit.polish_episode(problem, result, groups, rows, 0) is not None


def test_band_thresholds_are_bounded_and_cut_at_the_widest_gaps() -> None:
    """At most BAND_THRESHOLDS guesses whatever the band holds (a thousand groups had made as many reduced
    systems of ~2000); a few norms are each a threshold, as before; among many, the cuts below the widest
    ratios, and the largest norm (every group of the band dropped)."""
    from convexnorm.solvers.implicit import BAND_THRESHOLDS, _band_thresholds

    few = torch.tensor([3e-4, 1e-5, 2e-5], dtype=torch.float64)
    assert _band_thresholds(few) == sorted(few.tolist())
    many = torch.logspace(-5, -3.5, 1000, dtype=torch.float64)  # evenly spread: no gap stands out
    many[500:] *= 20.0  # one gap of 20x between the 500th and 501st
    chosen = _band_thresholds(many)
    assert len(chosen) == BAND_THRESHOLDS and chosen == sorted(chosen)
    assert float(many[499]) in chosen and float(many.max()) in chosen


@pytest.mark.parametrize("loss, size, seed", [("squared", "64x8x64", 111), ("hinge", "128x16x128", 108)])
def test_polish_joins_a_group_it_left_out(loss: str, size: str, seed: int) -> None:
    """Batches where the polish's guess left out an active group: that point lay within the interior-point
    method's certified gap of the optimum (64x8x64, seed 111: 2.4e-9 above it, without a group at 3e-6 of the
    largest; 128x16x128 hinge, seed 108: 1.3e-11 above it) and its gradient was far off (the derivative below
    by 4.0e-2 and 1.65 of it), consistently, so that central differences of the forward agreed with it. A
    zero group whose least dual norm exceeds beta (ZERO_GROUP_DUAL_RTOL) now refuses the point and joins the
    next guess along its steepest descent direction (``_joined``): the objective is a tighter solve's to 1e-13
    (to 1e-8; hinge: to 1e-7 with the dense route), and the derivative along a random direction matches
    central differences (of forwards solved to 1e-8; hinge: of the block's own) to 1e-6 (measured 2.6e-9 and
    7e-10)."""
    from convexnorm.solvers import implicit

    n, d, P = (int(v) for v in size.split("x"))
    generator = torch.Generator().manual_seed(seed)
    H = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2]
    if loss == "hinge":
        y = torch.where(y > 0, 1.0, -1.0).double()
    direction = torch.randn(n, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    H_var = H.clone().requires_grad_(True)
    block = ConvexBNReLU(d, beta=0.05, n_patterns=P, loss=loss, solver="torch")
    joined = []
    join = implicit._joined

    def recorded(*args):
        joined.append(sorted(args[-1]))
        return join(*args)

    implicit._joined = recorded
    try:
        predictions, objective = block(H_var, y, return_objective=True)
        predictions.sum().backward()
    finally:
        implicit._joined = join
    assert len(joined) == 1
    tighter = {"tol": 1e-8} if loss == "squared" else {"tol": 1e-7, "dense_curvature": 1e5}
    tight = ConvexBNReLU(d, beta=0.05, n_patterns=P, loss=loss, solver="torch", solver_options=tighter)
    with torch.no_grad():
        reference = float(tight(H, y, return_objective=True)[1])
    assert abs(float(objective.detach()) - reference) <= 1e-13 * reference
    differenced = tight if loss == "squared" else block
    step = 1e-6
    with torch.no_grad():
        numeric = (differenced(H + step * direction, y).sum() - differenced(H - step * direction, y).sum()) / (2 * step)
    analytic = (H_var.grad * direction).sum()
    assert abs(float(analytic - numeric)) <= 1e-6 * abs(float(numeric))


def batch_of_128(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """A 128 x 16 batch (H, y) as bench_block_head.py draws them (seed 0: its own), and the tests'
    query rows, weights and directions in H and y."""
    n, d = 128, 16
    H, y = episodes(B=1, n=n, d=d, seed=seed)
    generator = torch.Generator().manual_seed(5)
    extras = (torch.randn(5, d, generator=generator, dtype=torch.float64),
              torch.randn(5, generator=generator, dtype=torch.float64),
              torch.randn(n, d, generator=generator, dtype=torch.float64),
              torch.randn(n, generator=generator, dtype=torch.float64))
    return H[0], y[0], extras


def test_polish_corrects_a_row_read_off_on_the_wrong_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """At the largest benchmark batch moved by 1e-4 along a direction in H, one row read off the
    interior-point solution as active gets a negative multiplier (-2.7e-5) at the polished point: the
    polish moves it out and restarts Newton's method (a second run), and the result is kept; without
    corrections it is refused."""
    import convexnorm.solvers.implicit as implicit
    from convexnorm.solvers.implicit import active_sets, polish_episode

    H, y, (_, _, direction, _) = batch_of_128()
    block = ConvexBNReLU(16, beta=0.05, n_patterns=128, solver="torch")
    _, U, S, _ = block._whiten(H + 1e-4 * direction)
    U_prime = block._rows(U, S, 128)
    problem = ConvexBNProblem(U_prime[None], block._patterns(U_prime)[None], y[None],
                              torch.tensor([0.05], dtype=torch.float64), "squared")
    result = interior_point(problem, InteriorPointSettings(tol=1e-7))
    groups, rows = active_sets(problem, result)
    runs = []
    newton = implicit._newton
    monkeypatch.setattr(implicit, "_newton", lambda *args: runs.append(1) or newton(*args))
    assert polish_episode(problem, result, groups, rows, 0) is not None
    assert len(runs) >= 2  # a correction and a second run of Newton's method
    monkeypatch.setattr(implicit, "POLISH_CORRECTIONS", 0)
    assert polish_episode(problem, result, groups, rows, 0) is None


def _second_block_features() -> tuple[np.ndarray, np.ndarray]:
    """The features a GreedyConvexBNNetwork(ConvexBNClassifier(beta=0.01, patterns=20, loss="squared")) fits its
    second block on, on one thread, and the labels: the training split of sklearn's check_fit_idempotent (100
    samples of N(100, 1) in R^2, labels 0/1), which failed under load once in the fresh-clone CI."""
    from sklearn.model_selection import ShuffleSplit

    rng = np.random.RandomState(0)
    X, y = rng.normal(loc=100, size=(100, 2)), rng.randint(0, 2, 100)
    train, _ = next(ShuffleSplit(test_size=0.2, random_state=rng).split(X))
    network = cn.GreedyConvexBNNetwork(_second_block(random_state=0)).fit(X[train], y[train])
    return network.transform(X[train]), y[train]


def _second_block(random_state: int = 1) -> cn.ConvexBNClassifier:
    return cn.ConvexBNClassifier(beta=0.01, patterns=20, loss="squared", solver="torch", random_state=random_state,
                                 solver_options={"threads": 1})


def test_the_polish_holds_on_data_moved_by_rounding() -> None:
    """The second block's features moved by 1e-13 relative (one and two threads' rounding moved them by 5e-14):
    every fit is polished and predicts as the unmoved fit does to 1e-9. Before, each was left at the
    interior-point method's gap of 6.2e-7 (within the estimators' tol, its decision function 5e-5 off): Newton's
    method stalled at 1.3e-11 on a group's active rows, nearly dependent (singular values of 1e-12), against a
    tolerance of 1e-12 in the units of beta, not of the rows' own size ||A|| ||W_j|| = 7.9; and two corrections
    of the rows left a multiplier of -8.5e-4 on some copies (docs/math.md section 9)."""
    H, y = _second_block_features()
    reference = _second_block().fit(H, y)
    assert reference.solver_report_[0]["relative_gap"] < 1e-11
    expected = reference.decision_function(H)
    for seed in range(6):
        moved = H * (1 + 1e-13 * np.random.RandomState(seed).standard_normal(H.shape))
        fit = _second_block().fit(moved, y)
        assert abs(fit.solver_report_[0]["relative_gap"]) < 1e-11, seed
        np.testing.assert_allclose(fit.decision_function(H), expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_a_polish_step_that_lands_within_tolerance_is_kept_whatever_its_contraction(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With POLISH_CONTRACTION 0 no step after the first is kept for contracting the residual: the second block's
    polish still holds, its Newton's method landing within its tolerances at the second step (from 7.5e-8 to
    1.2e-12). Before, such a step was refused: near float64's floor a step contracts by rounding alone (1.2e-12
    to 6.2e-13, against 0.5 of it), and a copy of this program moved by 5e-14 was left unpolished."""
    import convexnorm.solvers.implicit as implicit

    H, y = _second_block_features()
    monkeypatch.setattr(implicit, "POLISH_CONTRACTION", 0.0)
    assert _second_block().fit(H, y).solver_report_[0]["relative_gap"] < 1e-11


def test_active_rows_are_held_to_their_constraints_size() -> None:
    """The polish's tolerance per entry of F: POLISH_RTOL scale for the stationarity, at least POLISH_RTOL
    ||A||_2 ||W_j|| for an active row of group j (in F's order of rows), against a loop over the entries."""
    from convexnorm.solvers.implicit import POLISH_RTOL, _ActiveSystem

    generator = torch.Generator().manual_seed(3)
    n, k, groups = 9, 3, 4
    A = torch.randn(n, k, generator=generator, dtype=torch.float64)
    W = torch.randn(k, groups, generator=generator, dtype=torch.float64) * torch.tensor([1e-4, 1.0, 30.0, 1e-2])
    M = (torch.rand(n, groups, generator=generator) > 0.5).to(torch.float64)
    rows = torch.rand(n, groups, generator=generator) > 0.6
    system = _ActiveSystem(A, torch.randn(n, generator=generator, dtype=torch.float64), torch.tensor(0.1), M,
                           torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64), rows, W,
                           torch.rand(n, groups, generator=generator, dtype=torch.float64) * rows, "squared", 2.5)
    scale = 0.3
    expected = [POLISH_RTOL * scale] * (k * groups)
    for i in range(n):
        for j in range(groups):
            if rows[i, j]:
                expected.append(max(POLISH_RTOL * scale, POLISH_RTOL * 2.5 * float(torch.linalg.norm(W[:, j]))))
    tolerance = system.tolerance(W, scale)
    assert len(tolerance) == len(system.residual(W, system.G, A, system.y, system.beta))
    np.testing.assert_allclose(tolerance.numpy(), expected, rtol=1e-15)


def test_block_logs_the_episodes_whose_polish_was_refused(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Where the polish is refused (also after the interior-point method resumed) the block still
    returns the interior-point solution, and says so: a warning naming the block and the episodes
    (their gradients rest on unpolished active sets)."""

    import convexnorm.solvers.implicit as implicit

    polish_episode = implicit.polish_episode
    monkeypatch.setattr(implicit, "polish_episode",
                        lambda problem, result, groups, rows, b: None if b == 1 else polish_episode(
                            problem, result, groups, rows, b))
    monkeypatch.setattr(implicit, "_resumed_polish", lambda problem, result, episodes, settings: [
        (None, implicit._iterate_solution(result, implicit.active_sets(problem, result)[1], b)) for b in episodes])
    H, y = episodes()
    # one worker: the patched polish numbers episodes within a chunk
    block = ConvexBNReLU(3, beta=0.2, n_patterns=10, solver="torch", solver_options={"workers": 1})
    with caplog.at_level(logging.WARNING, logger="convexnorm"):
        block(H, y)
    assert [record.getMessage().startswith("ConvexBNReLU: the polish was refused in episode(s) [1];")
            for record in caplog.records] == [True]


def test_refused_polish_resumes_the_interior_point_method(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A 48 x 4 x 96 batch (seed 6122) whose polish is refused at the certified gap 8e-8 where the
    interior-point method stops (Newton's method contracts neither from the 23 groups and 84 rows read
    off the iterate nor without its two groups shrinking to zero): the method resumes from its solution
    to 1e-2 of its tolerance, and from 2e-10 the sets read off (21 groups, 75 rows) polish, with no
    warning; without the resumption the block warns. (The batches this test used before, 128 x 16 x 128
    of seed 110 and a logistic 48 x 4 x 96 of seed 3017, now polish at the first solve: ``_least_held``
    and the group thresholds between SMALL_GROUP_RTOLS.)"""

    import convexnorm.solvers.implicit as implicit

    generator = torch.Generator().manual_seed(6122)
    H = torch.randn(48, 4, generator=generator, dtype=torch.float64)
    y = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2]
    block = ConvexBNReLU(4, beta=0.05, n_patterns=96, solver="torch")
    resumed = []
    resume = implicit._resumed_polish
    monkeypatch.setattr(implicit, "_resumed_polish", lambda *args: resumed.append(1) or resume(*args))
    with caplog.at_level(logging.WARNING, logger="convexnorm"):
        block(H, y)
    assert resumed == [1] and not caplog.records
    monkeypatch.setattr(implicit, "_resumed_polish", lambda problem, result, episodes, settings: [
        (None, implicit._iterate_solution(result, implicit.active_sets(problem, result)[1], b)) for b in episodes])
    with caplog.at_level(logging.WARNING, logger="convexnorm"):
        block(H, y)
    assert [record.getMessage().startswith("ConvexBNReLU: the polish was refused") for record in caplog.records] == [True]


def test_refused_polish_keeps_the_tightest_iterate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the polish is refused even after the interior-point method resumed, the block returns
    the resumed iterate (certified to 1e-2 of the tolerance), not the first solve's: at tol 1e-4
    its objective is within 1e-6 of the polished optimum (measured 4.9e-9; the first solve's
    9.8e-6)."""

    import convexnorm.solvers.implicit as implicit

    generator = torch.Generator().manual_seed(3)
    H = torch.randn(64, 8, generator=generator, dtype=torch.float64)
    y = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2]
    block = ConvexBNReLU(8, beta=0.05, n_patterns=64, solver="torch", solver_options={"tol": 1e-4})
    _, optimum = block(H, y, return_objective=True)
    monkeypatch.setattr(implicit, "polish_episode", lambda *args: None)
    logging.getLogger("convexnorm").setLevel(logging.ERROR)  # the refusal's warning, tested above
    try:
        _, objective = block(H, y, return_objective=True)
    finally:
        logging.getLogger("convexnorm").setLevel(logging.NOTSET)
    assert 0 <= float(objective - optimum) <= 1e-6 * float(optimum)


def test_block_gradients_at_a_degenerate_batch_of_128(monkeypatch: pytest.MonkeyPatch) -> None:
    """A random 128 x 16 x 128 batch whose interior-point solution holds groups still shrinking to
    zero (every row looking active) and rows whose slack and multiplier both nearly vanish. Before
    the polish's corrections (capacity, row corrections, the interior-point bound) it was refused
    there and in every perturbation below, and the backward, on the unpolished active sets, was
    1.1e-3 off in H (7e-5 in y). Now the polish holds for the batch and its perturbations, and
    directional derivatives in H and y agree with central differences (h = 1e-7) of the forward
    polished to 1e-12, 1e-6 relative (measured 4e-8 and 3e-8; at the default polish tolerance the
    forward is accurate only to about 1e-11, which central differences at this step amplify)."""
    import convexnorm.solvers.implicit as implicit

    monkeypatch.setattr(implicit, "POLISH_RTOL", 1e-12)
    polished = []

    def recorded(*args):
        found = polish_episode(*args)
        polished.append(found is not None)
        return found

    polish_episode = implicit.polish_episode
    monkeypatch.setattr(implicit, "polish_episode", recorded)
    H, y, (H_query, weights, *directions) = batch_of_128(seed=102)
    block = ConvexBNReLU(16, beta=0.05, n_patterns=128, solver="torch")

    def value(H_: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
        predictions, objective = block(H_, y_, H_query=H_query, return_objective=True)
        return (predictions * weights).sum() + 0.3 * objective

    H_var, y_var = H.clone().requires_grad_(True), y.clone().requires_grad_(True)
    grad_H, grad_y = torch.autograd.grad(value(H_var, y_var), [H_var, y_var])
    step = 1e-7
    with torch.no_grad():
        along_H = (value(H + step * directions[0], y) - value(H - step * directions[0], y)) / (2 * step)
        along_y = (value(H, y + step * directions[1]) - value(H, y - step * directions[1])) / (2 * step)
    assert polished == [True] * 5
    for analytic, numeric in (((grad_H * directions[0]).sum(), along_H), ((grad_y * directions[1]).sum(), along_y)):
        assert abs(float(analytic - numeric)) <= 1e-6 * abs(float(numeric))


def test_parallel_groups_of_one_sign_merge_into_the_larger() -> None:
    """The polish's guess for a neuron split between two patterns: same-sign groups whose directions
    agree to PARALLEL_GROUP_COSINE become one (the larger, holding their sum: norms add); a parallel
    group of the other sign (the T side, whose predictions enter negated) and unchosen groups stay."""
    from convexnorm.solvers.implicit import _merged_parallel_groups

    w = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64) / 6 ** 0.5
    turned = torch.tensor([1.0, 2.0, -1.0 + 1e-4], dtype=torch.float64)
    W = torch.stack([0.5 * w, 2.0 * turned / torch.linalg.norm(turned), torch.tensor([0.0, 1.0, 0.0]).double(),
                     0.3 * w, torch.zeros(3).double(), 0.7 * w])  # P = 3: groups 0-2 S, 3-5 T
    chosen = torch.tensor([True, True, True, True, False, False])
    kept, merged = _merged_parallel_groups(W, chosen)
    assert kept.tolist() == [False, True, True, True, False, False]
    assert torch.allclose(merged[1], W[0] + W[1]) and torch.equal(merged[0], torch.zeros(3).double())
    assert torch.equal(merged[2:], W[2:] * chosen[2:, None])
    assert _merged_parallel_groups(W, torch.tensor([True, False, True, True, False, False])) is None


def test_duplicate_rows_share_their_multipliers() -> None:
    """``_duplicates_shared``: rows of A equal to rounding form a set whose A rows, multipliers and (for equal
    y) margin alphas become the set's means; distinct rows, however the distances round, are left alone."""
    from convexnorm.solvers.implicit import _duplicates_shared, _Margins

    generator = torch.Generator().manual_seed(0)
    A = torch.randn(40, 7, generator=generator, dtype=torch.float64)
    G, y = torch.rand(40, 6, generator=generator, dtype=torch.float64), torch.ones(40, dtype=torch.float64)
    margins = _Margins(torch.rand(40, generator=generator, dtype=torch.float64), torch.ones(40, dtype=torch.bool))
    same = _duplicates_shared(A, y, G, margins)
    assert same[0] is A and same[1] is G and same[2] is margins
    A[5], A[9] = A[30], A[30] + 1e-16  # rows 5, 9 and 30: one sample three times
    y[9] = -1.0  # row 9 another label: its margin alpha apart
    A_shared, G_shared, shared = _duplicates_shared(A, y, G, margins)
    assert torch.allclose(G_shared[[5, 9, 30]], G[[5, 9, 30]].mean(0).expand(3, 6), rtol=1e-15)
    assert torch.equal(G_shared[:5], G[:5]) and torch.equal(A_shared[:5], A[:5])
    assert float(shared.alpha[5]) == float(shared.alpha[30]) == float(margins.alpha[[5, 30]].mean())
    assert float(shared.alpha[9]) == float(margins.alpha[9])


def test_a_correction_drops_the_least_held_negative_row_of_each_group() -> None:
    """Of each group's rows whose multiplier came out negative, only the one with the smallest multiplier
    at the interior-point iterate leaves; groups without one keep all their rows."""
    from convexnorm.solvers.implicit import _least_held

    negative = torch.tensor([[True, False, False], [True, False, True], [False, False, True], [True, False, False]])
    held = torch.tensor([[0.03, 1.0, 0.5], [2e-5, 1e-9, 0.2], [0.9, 0.1, 0.1], [0.1, 0.0, 0.3]], dtype=torch.float64)
    assert _least_held(negative, held).tolist() == [[False, False, False], [True, False, False],
                                                   [False, False, True], [False, False, False]]


def test_polish_stops_at_its_tolerance_and_at_a_step_that_does_not_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Newton's method from a right active set contracts: the polish stops once the largest KKT
    residual entry is within POLISH_RTOL beta max(1, ||A||_2), fewer than POLISH_STEPS steps here
    (one system built per step taken); from a wrong one (every row active) the first step leaves the residual
    where it was (within POLISH_FIRST_GROWTH: a first step may grow it) and the second, which does not contract
    it, ends the polish: two systems built instead of one per step."""
    import convexnorm.solvers.implicit as implicit

    U_prime, patterns, y = program(0, 30, 3, 12, "squared")
    problem = ConvexBNProblem.from_arrays([(U_prime, patterns, y)], 0.2, "squared")
    result = interior_point(problem)
    bound, gap = result.criteria.lower_bound[0], result.criteria.relative_gap[0]
    args = problem.A[0], problem.y[0], problem.beta[0], problem.masks[0]
    groups, rows = implicit.active_sets(problem, result)
    W, G = (result.W[0] * groups[0, :, None]).T, result.z.rows[0]
    built = []
    original = implicit._ActiveSystem.__init__

    def counted(self, *system_args, **kwargs):
        built.append(1)
        original(self, *system_args, **kwargs)

    monkeypatch.setattr(implicit._ActiveSystem, "__init__", counted)
    assert implicit._polish(*args, W, G, torch.ones_like(G, dtype=torch.bool), "squared", bound, gap) is None
    assert len(built) == 2
    built.clear()
    polished, multipliers, _ = implicit._polish(*args, W, G, rows[0], "squared", bound, gap)
    assert 1 <= len(built) < implicit.POLISH_STEPS  # at least one step taken, not all of them
    system, active = implicit._active_system(*args, polished, multipliers, rows[0], "squared")
    residual = system.residual(system.W, system.G, *args[:3])
    assert float(residual.abs().max()) <= implicit.POLISH_RTOL * float(args[2]) * max(1.0, system.A_norm)


def test_active_system_solve_matches_the_dense_saddle_point_system() -> None:
    """implicit._ActiveSystem.solve (null spaces of each group's active rows, its SVD taken of those rows
    only) == a dense solve of [[K, C^T], [C, 0]] (a, b) = (r_W, r_R), with K and the rows C (w_j projected
    out) built entry by entry; groups with 0 .. k - 1 active rows."""
    import convexnorm.solvers.implicit as implicit

    generator = torch.Generator().manual_seed(11)
    n, k, groups = 20, 4, 4
    A = torch.randn(n, k, generator=generator, dtype=torch.float64)
    y = torch.randn(n, generator=generator, dtype=torch.float64)
    M = (torch.rand(n, groups, generator=generator) > 0.4).double()
    o = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    W = torch.randn(k, groups, generator=generator, dtype=torch.float64)
    rows = torch.zeros(n, groups, dtype=torch.bool)
    for j, count in enumerate([0, 1, 2, 3]):
        rows[torch.randperm(n, generator=generator)[:count], j] = True
    G = torch.rand(n, groups, generator=generator, dtype=torch.float64) * rows
    beta = torch.tensor(0.3, dtype=torch.float64)
    system = implicit._ActiveSystem(A, y, beta, M, o, rows, W, G, "squared", float(torch.linalg.matrix_norm(A, 2)))
    norms = torch.linalg.norm(W, dim=0)
    w_hat = W / norms
    B = torch.cat([(o[j] * M[:, j:j + 1]) * A for j in range(groups)], 1)  # (n, groups k)
    K = torch.block_diag(*[beta / norms[j] * (torch.eye(k, dtype=torch.float64) - torch.outer(w_hat[:, j], w_hat[:, j]))
                           for j in range(groups)]) + B.T @ B  # squared loss: curvature 1
    C_rows = []
    for j in range(groups):
        for i in torch.nonzero(rows[:, j]).flatten().tolist():
            row = torch.zeros(groups * k, dtype=torch.float64)
            c = (2 * M[i, j] - 1) * A[i]
            row[j * k:(j + 1) * k] = c - (c @ w_hat[:, j]) * w_hat[:, j]
            C_rows.append(row)
    C = torch.stack(C_rows)
    saddle = torch.cat([torch.cat([K, C.T], 1), torch.cat([C, torch.zeros(len(C), len(C), dtype=torch.float64)], 1)])
    r_W = torch.randn(groups, k, generator=generator, dtype=torch.float64)
    r_R = torch.randn(groups, n, generator=generator, dtype=torch.float64) * rows.T
    rhs = torch.cat([r_W.flatten(), torch.cat([r_R[j][rows[:, j]] for j in range(groups)])])
    reference = torch.linalg.solve(saddle, rhs)
    a, b, _ = system.solve(r_W, r_R)
    assert torch.allclose(a.flatten(), reference[: groups * k], rtol=1e-10, atol=1e-10)
    assert torch.allclose(torch.cat([b[j][rows[:, j]] for j in range(groups)]), reference[groups * k:],
                          rtol=1e-10, atol=1e-10)
    assert float(b[~rows.T].abs().max()) == 0.0  # no multiplier off the active rows


def test_reduced_solve_by_cholesky_and_by_least_squares() -> None:
    """implicit._reduced_solve: a positive definite system by Cholesky, equal to a dense solve; a singular
    one (a Cholesky factor may still come out, with pivots near zero) and a bordered one by least squares,
    the minimum-norm answer of the pseudo-inverse."""
    import convexnorm.solvers.implicit as implicit

    generator = torch.Generator().manual_seed(3)
    X = torch.randn(30, 40, generator=generator, dtype=torch.float64)
    definite = X @ X.T
    rhs = torch.randn(30, generator=generator, dtype=torch.float64)
    assert torch.allclose(implicit._reduced_solve(definite, rhs, False), torch.linalg.solve(definite, rhs),
                          rtol=1e-10, atol=1e-12)
    singular = X[:, :20] @ X[:, :20].T  # rank 20 of 30: its Cholesky factorization breaks down
    consistent = singular @ torch.randn(30, generator=generator, dtype=torch.float64)
    minimum_norm = torch.linalg.pinv(singular, hermitian=True) @ consistent
    # singular to float64's precision, yet factored by Cholesky (pivots near 1e-15 of the largest): its
    # answer is 4e-2 away from the minimum-norm one, which the spread of the factor's diagonal rules out
    nearly = singular + 1e-15 * float(torch.linalg.matrix_norm(singular, 2)) * torch.eye(30, dtype=torch.float64)
    assert int(torch.linalg.cholesky_ex(nearly)[1]) == 0
    for matrix in (singular, nearly):
        answer = implicit._reduced_solve(matrix, consistent, False)
        assert torch.allclose(answer, minimum_norm, rtol=1e-8, atol=1e-8 * float(minimum_norm.abs().max()))
    border = torch.randn(3, 30, generator=generator, dtype=torch.float64)
    bordered = torch.cat([torch.cat([definite, border.T], 1), torch.cat([border, torch.zeros(3, 3, dtype=torch.float64)], 1)])
    full = torch.randn(33, generator=generator, dtype=torch.float64)
    assert torch.allclose(implicit._reduced_solve(bordered, full, True), torch.linalg.solve(bordered, full),
                          rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_one_evaluation_gives_the_criteria_and_the_kkt_residual(loss: str) -> None:
    """kkt.evaluate (A W, f, loss'(f) and A^T (E z) formed once) == criteria and kkt_residual apart,
    exactly, at an interior iterate of two programs; ConvexBNProblem.spectral_norms == ||A||_2 each."""
    from convexnorm.solvers.kkt import evaluate, kkt_residual

    problem = ConvexBNProblem.from_arrays([program(seed, 30, 3, 12, loss) for seed in range(2)], 0.2, loss)
    result = interior_point(problem, InteriorPointSettings(max_iterations=4))
    x, s, z = result.x, result.s, result.z
    measured, r_x, r_z = evaluate(problem, x, s, z)
    alone = criteria(problem, x, z)
    residual_x, residual_z = kkt_residual(problem, x, s, z)
    for name in ("objective", "lower_bound", "relative_gap", "violation"):
        assert torch.equal(getattr(measured, name), getattr(alone, name)), name
    for mine, theirs in ((r_x, residual_x), (r_z, residual_z)):
        assert all(torch.equal(a, b) for a, b in zip(mine.parts(), theirs.parts()))
    assert float(r_x.norm().min()) > 0  # not a solution yet: the residual is nonzero
    for b in range(problem.batch):
        assert float(problem.spectral_norms[b]) == pytest.approx(float(torch.linalg.matrix_norm(problem.A[b], 2)),
                                                                 rel=1e-14)
