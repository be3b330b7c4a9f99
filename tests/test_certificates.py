"""The optimality certificate and column generation (issue 12, part 1).

References: a direct cvxpy (Clarabel) solve of each pattern's cone subproblem, exact
certification over every enumerated pattern, and the program solved over all patterns.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import convexnorm as cn
from convexnorm.convex import estimators, solve
from convexnorm.solvers import cvxpy_backend
from convexnorm.solvers import native as native_solver
from convexnorm.convex.certificate import REFINED_PATTERNS, cone_dual_value, dual_value, probe


def issue_problem():
    """The reproduction of issue 12: 20 samples, d = 2, y = sin(2 x1) + 0.5 x2^2."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 2))
    return X, np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2


def random_problem(index: int, n_range=(10, 41), d_range=(2, 4)):
    """A random problem of the issue's family: (X, y, estimator class, loss)."""
    rng = np.random.default_rng(1000 + index)
    n, d = int(rng.integers(*n_range)), int(rng.integers(*d_range))
    loss = ("squared", "logistic", "hinge")[index % 3]
    X = rng.standard_normal((n, d))
    if loss == "squared":
        return X, np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.1 * rng.standard_normal(n), cn.ConvexBNRegressor, loss
    labels = np.where(np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - 0.8 > 0, 1, -1)
    return X, labels, cn.ConvexBNClassifier, loss


def single(certificates):
    return certificates[0] if isinstance(certificates, list) else certificates


def test_cone_dual_value_equals_a_direct_cvxpy_solve() -> None:
    """max lam^T D U' u over unit u in the pattern's cone, by NNLS, against Clarabel; the
    returned u is feasible and attains the value."""
    rng = np.random.default_rng(3)
    for trial in range(30):
        n, d = int(rng.integers(8, 30)), int(rng.integers(1, 4))
        U_prime = cn.whiten(rng.standard_normal((n, d))).U_prime
        lam = rng.standard_normal(n)
        mask = U_prime @ rng.standard_normal(U_prime.shape[1]) >= 0 if trial % 2 else rng.random(n) < 0.5
        value, u = cone_dual_value(U_prime, mask, lam)
        signed = np.where(mask, 1.0, -1.0)[:, None] * U_prime
        v = cp.Variable(U_prime.shape[1])
        problem = cp.Problem(cp.Maximize((U_prime.T @ (mask * lam)) @ v), [signed @ v >= 0, cp.norm(v, 2) <= 1])
        reference = problem.solve(solver=cp.CLARABEL)
        assert abs(value - reference) <= 1e-7 * max(1.0, reference), (trial, value, reference)
        if value > 0:
            assert abs(np.linalg.norm(u) - 1) < 1e-12 and (signed @ u).min() > -1e-10
            assert abs(dual_value(U_prime, lam, u) - value) < 1e-12


def test_issue_reproduction_probe_finds_the_violation_and_grow_reaches_the_optimum() -> None:
    X, y = issue_problem()
    model = cn.ConvexBNRegressor(beta=0.1, patterns=20).fit(X, y)
    exact, probe = model.certify(method="exact"), model.certify(method="probe")
    assert exact.violated and exact.optimal is False
    assert probe.violated and probe.optimal is False
    assert probe.max_dual_value >= exact.max_dual_value * (1 - 1e-6)
    assert abs(dual_value(model.whitening_.U_prime, y - model.predict(X), probe.witness)) == pytest.approx(
        probe.max_dual_value, rel=1e-12)  # the reported value is attained by the witness
    grown = cn.ConvexBNRegressor(beta=0.1, patterns=20, grow=True, max_rounds=30).fit(X, y)
    everything = cn.ConvexBNRegressor(beta=0.1, patterns="exhaustive").fit(X, y)
    assert abs(grown.objective_ - everything.objective_) <= 1e-6 * everything.objective_
    assert grown.certify().optimal is True and len(grown.patterns_) < len(everything.patterns_)


@pytest.mark.parametrize("index", range(54))
def test_probe_reports_a_violation_whenever_exact_certification_does(index) -> None:
    """54 random problems (n 10-40, d 2-3, the three losses, 5-40 sampled patterns, several beta)."""
    X, y, estimator, loss = random_problem(index)
    rng = np.random.default_rng(index)
    beta = float(rng.choice([0.05, 0.1, 0.3, 1.0]))
    model = estimator(beta=beta, loss=loss, patterns=int(rng.integers(5, 41)), random_state=index).fit(X, y)
    exact = single(model.certify(method="exact"))
    probe = single(model.certify(method="probe", n_probes=500))
    assert exact.exact and not probe.exact
    if exact.violated:
        assert probe.violated, (exact.max_dual_value, probe.max_dual_value)
    assert probe.max_dual_value <= exact.max_dual_value * (1 + 1e-9) + 1e-12  # a probe never exceeds the maximum


@pytest.mark.parametrize("index", range(6))
def test_grow_from_20_patterns_reaches_the_optimum_over_all_patterns(index) -> None:
    X, y, estimator, loss = random_problem(index, n_range=(10, 25), d_range=(2, 3))
    grown = estimator(beta=0.1, loss=loss, patterns=20, grow=True, max_rounds=30, random_state=index).fit(X, y)
    everything = estimator(beta=0.1, loss=loss, patterns="exhaustive").fit(X, y)
    assert abs(grown.objective_ - everything.objective_) <= 1e-6 * abs(everything.objective_)
    assert single(grown.certify(method="exact")).optimal is True


def test_every_probe_value_is_attained_by_its_direction() -> None:
    """The ascent's values (computed from the same product as its steps) and the refined ones are
    lam^T (U' u)_+ or -lam^T (U' u)_+ at the returned unit directions."""
    rng = np.random.default_rng(5)
    U_prime = cn.whiten(rng.standard_normal((60, 3))).U_prime
    lam = rng.standard_normal(60)
    values, points, masks = probe(U_prime, lam, 200, random_state=0)
    attained = dual_value(U_prime, lam, points)
    assert np.all(np.isclose(values, attained, rtol=1e-12, atol=1e-12)
                  | np.isclose(values, -attained, rtol=1e-12, atol=1e-12))
    assert np.allclose(np.linalg.norm(points, axis=0), 1, atol=1e-12) and masks.shape == (values.size, 60)


def test_grow_by_probes_tries_the_ascent_first_and_stops_on_the_full_probe(monkeypatch) -> None:
    """Column generation by probes (patterns not enumerable: forced here): every round runs the
    ascent alone (refined_patterns=0) first, the refined probe only when that finds no new
    pattern, so growth stops on the full probe's word; it reaches the optimum over all patterns."""
    X, y = issue_problem()
    calls = []
    certify = solve.certify_multipliers

    def recorded(*args, **kwargs):
        if args[4] == "probe":  # the grow rounds' (each solve's own certificate is exact over its patterns)
            calls.append(kwargs["refined_patterns"])
        return certify(*args, **kwargs)

    monkeypatch.setattr(solve, "certify_multipliers", recorded)
    monkeypatch.setattr(estimators, "can_certify_exactly", lambda U_prime: False)
    grown = cn.ConvexBNRegressor(beta=0.1, patterns=20, grow=True, max_rounds=30, random_state=0).fit(X, y)
    assert calls[0] == 0 and calls[-2:] == [0, REFINED_PATTERNS]
    assert all(a == 0 or b == 0 for a, b in zip(calls, calls[1:]))  # the full probe only right after the ascent's
    everything = cn.ConvexBNRegressor(beta=0.1, patterns="exhaustive").fit(X, y)
    assert abs(grown.objective_ - everything.objective_) <= 1e-6 * everything.objective_
    monkeypatch.undo()
    assert grown.certify(method="exact").optimal is True


def test_only_exact_certification_reports_a_lower_bound() -> None:
    X, y = issue_problem()
    optimum = cn.ConvexBNRegressor(beta=0.1, patterns="exhaustive").fit(X, y)
    exact = optimum.certify(method="exact")
    assert exact.optimal is True and exact.lower_bound is not None and exact.lower_bound_estimate is None
    assert -1e-9 <= exact.gap <= 1e-6 * optimum.objective_
    probe = optimum.certify(method="probe")
    assert probe.lower_bound is None and probe.gap is None and probe.lower_bound_estimate is not None
    assert probe.optimal is None  # no violation found by a probe proves nothing
    sampled = cn.ConvexBNRegressor(beta=0.1, patterns=20).fit(X, y)
    bound = sampled.certify(method="exact").lower_bound
    assert bound <= optimum.objective_ * (1 + 1e-9)  # a proven bound on the optimum over all patterns


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_every_loss_gets_a_lower_bound_that_sees_a_suboptimal_solution(loss: str) -> None:
    """Exact certification reports the dual bound -loss*(-r') of every loss (before: the squared loss's only),
    at r' = lam scaled to dual feasibility. It bounds the optimum over all patterns, which Clarabel's fit over
    every pattern attains to its precision; at the native fit (polished) the gap is float64's; and at that fit
    with its neurons scaled by 1.05 the gap is at least the objective's rise above the optimum (the hinge
    loss's lam is the solver's dual, unchanged by the scaling, the logistic loss's moves with f)."""
    from dataclasses import replace

    from convexnorm.convex.estimators import certify_solution
    from convexnorm.convex.solve import _evaluated

    rng = np.random.RandomState(0)
    X = rng.randn(10, 3)
    t = np.sin(X @ rng.randn(3)) + 0.1 * rng.randn(10)
    Estimator = cn.ConvexBNRegressor if loss == "squared" else cn.ConvexBNClassifier
    y = t if loss == "squared" else np.where(t > 0, 1.0, -1.0)
    reference = Estimator(beta=0.05, loss=loss, patterns="exhaustive", solver="clarabel").fit(X, y)
    native = Estimator(beta=0.05, loss=loss, patterns="exhaustive", solver="torch").fit(X, y)
    certificate = native.certify(method="exact")
    certificate = certificate[0] if isinstance(certificate, list) else certificate
    optimum = min(reference.objective_, native.objective_)
    assert certificate.optimal is True and certificate.lower_bound <= optimum * (1 + 1e-12)
    assert 0 <= certificate.gap <= 1e-10 * native.objective_
    U_prime, target, solution = native.whitening_.U_prime, native._targets[0], native.solutions_[0]
    moved = _evaluated(1.05 * solution.neurons, solution.signs, U_prime, target, 0.05, loss)
    moved = replace(moved, dual=solution.dual)
    rise = moved.objective - optimum
    assert rise > 1e-4 * optimum
    worse = certify_solution(U_prime, target, moved, 0.05, loss, method="exact")
    assert worse.lower_bound <= optimum * (1 + 1e-12) and worse.gap >= rise * (1 - 1e-9)


def test_certify_validates_its_arguments() -> None:
    X, y = issue_problem()
    model = cn.ConvexBNRegressor(beta=0.1, patterns=20).fit(X, y)
    with pytest.raises(ValueError, match="method must be one of"):
        model.certify(method="proof")
    with pytest.raises(ValueError, match="n_probes must be an integer >= 1"):
        model.certify(method="probe", n_probes=0)
    large = cn.ConvexBNRegressor(beta=0.1, patterns=20).fit(np.random.default_rng(0).standard_normal((200, 8)),
                                                             np.ones(200) + np.arange(200) / 200)
    with pytest.raises(ValueError, match="use method='probe'"):
        large.certify(method="exact")


def _small_problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """40 samples in R^4 (the benchmarks' regression data) and their labels above the median."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 4))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(40)
    return X, y


def test_a_clarabel_solution_off_the_optimum_is_replaced_by_the_certified_native_one(monkeypatch) -> None:
    """Logistic loss, beta 1e-5: Clarabel reports 'optimal' for a solution 5.3e-6 (relative) above the optimum over
    its 30 patterns. Each cvxpy solution is now certified over its patterns; here the native method's certified
    bound shows it off, and the native solution replaces it: the exact certificate over the same patterns (a dual
    bound, independent of either solver) puts it within 1e-6 of the optimum, and the unchecked Clarabel solution
    above that bound by more."""
    X, y = _small_problem(0)
    labels = np.where(y > np.median(y), 1, -1)
    kwargs = dict(beta=1e-5, patterns=30, random_state=0, loss="logistic")
    model = cn.ConvexBNClassifier(**kwargs).fit(X, labels)
    report = model.solver_report_[0]
    assert report["replaced"] == "clarabel" and report["solver"] == "torch"
    U_prime = model.whitening_.U_prime
    certificate = solve.certify_solution(U_prime, labels.astype(float), model.solutions_[0], 1e-5, "logistic",
                                         "exact", all_patterns=model.patterns_)
    bound = certificate.lower_bound
    assert -1e-12 <= (model.objective_ - bound) / model.objective_ <= 1e-6
    monkeypatch.setattr(solve, "CERTIFIED_RTOL", float("inf"))  # the solution as it was, unchecked
    unchecked = cn.ConvexBNClassifier(**kwargs).fit(X, labels)
    assert unchecked.solver_report_[0]["solver"] == "clarabel"
    assert unchecked.objective_ - bound > 2e-6 * bound


def test_the_solver_multipliers_certify_a_squared_clarabel_solution_that_its_own_do_not(monkeypatch) -> None:
    """Squared loss, beta 1e-5: the dual bound at the Clarabel solution's own multipliers y - f reads 7.9e-4 below
    its objective (they hold the fitted values only to about the square root of the solver's accuracy), though the
    solution lies within 1e-8 of the native method's. The multipliers of F = output, which Clarabel returns with
    the solution, equal y - f (stationarity) within 1e-7 and certify it to 1e-6 by themselves: the native method is
    not called. Before, it was, to certify this solution."""
    X, y = _small_problem(1)
    native = cn.ConvexBNRegressor(beta=1e-5, patterns=30, random_state=1, solver="torch").fit(X, y)

    def not_called(*args):
        raise AssertionError("the native method was called")

    monkeypatch.setattr(native_solver, "solve_native_program", not_called)
    model = cn.ConvexBNRegressor(beta=1e-5, patterns=30, random_state=1).fit(X, y)
    report, solution, U_prime = model.solver_report_[0], model.solutions_[0], model.whitening_.U_prime
    assert report["solver"] == "clarabel" and "replaced" not in report
    assert 0 <= report["relative_gap"] <= 1e-6 and report["lower_bound"] <= native.objective_ * (1 + 1e-12)
    assert abs(model.objective_ - native.objective_) <= 1e-8 * native.objective_
    assert np.linalg.norm(solution.dual - (y - solution.predict(U_prime))) <= 1e-7 * np.linalg.norm(y)
    own = solve.certify_solution(U_prime, y, solution, 1e-5, "squared", "exact", all_patterns=model.patterns_)
    assert own.gap > 1e-4 * model.objective_


def test_a_clarabel_solution_that_no_multipliers_of_its_own_certify_is_kept_where_the_native_bound_does() -> None:
    """Logistic loss (solved without F: its multipliers are -loss'(f)), beta 1e-3: its own multipliers read a gap
    of 1.4e-4, but the solution lies within 1e-6 of the optimum: the native method's certified bound shows it, and it
    is kept, with that gap in its report."""
    X, y = _small_problem(1)
    labels = np.where(y > np.median(y), 1, -1)
    kwargs = dict(beta=1e-3, patterns=30, random_state=1, loss="logistic")
    model = cn.ConvexBNClassifier(**kwargs).fit(X, labels)
    report = model.solver_report_[0]
    assert report["solver"] == "clarabel" and "replaced" not in report
    assert 0 <= report["relative_gap"] <= 1e-6 and report["lower_bound"] <= model.objective_
    own = solve.certify_solution(model.whitening_.U_prime, labels.astype(float), model.solutions_[0], 1e-3,
                                 "logistic", "exact", all_patterns=model.patterns_)
    assert own.gap > 1e-5 * model.objective_
    native = cn.ConvexBNClassifier(**kwargs, solver="torch").fit(X, labels)
    assert abs(model.objective_ - native.objective_) <= 1e-6 * native.objective_


def _conv_problem() -> tuple[np.ndarray, np.ndarray]:
    """30 one-channel signals of 16 values (kernel 3: 14 positions each)."""
    rng = np.random.RandomState(1)
    X = rng.randn(30, 16)
    return X, np.sin(X[:, 3]) + X[:, 5] * X[:, 8]


def test_a_convolutional_clarabel_solution_is_certified_at_the_solver_multipliers() -> None:
    """A pooled program, which the native method does not solve, beta 1e-4: at its own multipliers the Clarabel
    solution read a gap of 7.2e-3 (before: reported so, uncertified); at the solver's multipliers of F = output it
    reads at most 1e-6. The reported bound, recomputed independently: each pattern's cone value max (Pi^T lam)^T
    (D U' u) over unit u in its cone by a direct cvxpy (Clarabel) solve instead of nonnegative least squares, lam
    scaled to dual feasibility, the squared loss's dual value y^T r - ||r||^2 / 2."""
    from convexnorm.convex.conv import patch_pooling

    X, y = _conv_problem()
    beta = 1e-4
    model = cn.ConvexBNConvRegressor(kernel_size=3, beta=beta, patterns=30, random_state=1).fit(X, y)
    report = single(model.solver_report_)
    assert report["solver"] == "clarabel" and 0 <= report["relative_gap"] <= 1e-6
    U_prime, solution = model.whitening_.U_prime, model.solution_
    pool = patch_pooling(len(y), model.n_positions_)
    own = solve.certify_solution(U_prime, y, solution, beta, "squared", "exact", pool=pool,
                                 all_patterns=model.patterns_)
    assert own.gap > 1e-3 * model.objective_
    lam = pool.T @ solution.dual
    u = cp.Variable(U_prime.shape[1])
    values = []
    for mask in model.patterns_:
        for sign in (1.0, -1.0):
            cone = [cp.multiply(np.where(mask, 1.0, -1.0), U_prime @ u) >= 0, cp.norm(u) <= 1]
            problem = cp.Problem(cp.Maximize(sign * (mask * lam) @ (U_prime @ u)), cone)
            problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
            values.append(problem.value)
    r = solution.dual * min(1.0, beta / max(values))
    assert abs(y @ r - r @ r / 2 - report["lower_bound"]) <= 1e-9 * model.objective_


def test_a_convolutional_solution_certified_only_above_1e_6_is_solved_again_at_1e_12(caplog) -> None:
    """A pooled program at beta 1e-6 whose Clarabel solution (at TIGHT_CLARABEL) is certified only to 4.7e-6 over
    its patterns: it is solved again at EXACTING_CLARABEL and certified to 1e-6, no warning, its objective within
    1e-9 of a direct cvxpy solve over all its patterns at 1e-12 (before session 37: reported 4.7e-6, silently)."""
    from convexnorm.convex.conv import patch_pooling
    from convexnorm.programs import convex_bn_program

    X, y = _conv_problem()
    with caplog.at_level("INFO", logger="convexnorm"):
        model = cn.ConvexBNConvRegressor(kernel_size=3, beta=1e-6, patterns=30, random_state=1).fit(X, y)
    assert "certified to a relative gap of 4.7e-06 over its patterns; solving again" in caplog.text
    assert "certified only" not in caplog.text
    report = single(model.solver_report_)
    assert 0 <= report["relative_gap"] <= 1e-6
    U_prime, patterns = model.whitening_.U_prime, model.patterns_
    program = convex_bn_program(len(y), U_prime.shape[1], len(patterns), constraint_rows=U_prime.shape[0])
    program.set_data(U_prime, patterns, y, 1e-6, patch_pooling(len(y), model.n_positions_))
    program.problem.solve(solver=cp.CLARABEL, ignore_dpp=True, **solve.EXACTING_CLARABEL)
    assert abs(model.objective_ - program.problem.value) <= 1e-9 * model.objective_


def test_a_convolutional_solution_above_the_certified_rtol_is_kept_with_a_warning(monkeypatch, caplog) -> None:
    """A pooled program's solution whose certified gap exceeds CERTIFIED_RTOL (here set below every gap), after its
    second solve (here at Clarabel's tight tolerances, for time), is kept, with its gap in the report and a warning
    that says so (before: silently)."""
    monkeypatch.setattr(solve, "CERTIFIED_RTOL", -1.0)
    monkeypatch.setattr(solve, "EXACTING_CLARABEL", {})
    X, y = _conv_problem()
    with caplog.at_level("WARNING", logger="convexnorm"):
        model = cn.ConvexBNConvRegressor(kernel_size=3, beta=1e-2, patterns=30, random_state=1).fit(X, y)
    report = single(model.solver_report_)
    assert report["solver"] == "clarabel" and 0 <= report["relative_gap"] <= 1e-6
    assert "ConvexBNConvRegressor: the clarabel solution is certified only to a relative gap" in caplog.text


def test_a_program_clarabel_fails_is_solved_by_the_native_method_not_scs(monkeypatch) -> None:
    """Logistic loss, beta 1e-6: Clarabel fails on this program (tight and at its defaults). SCS then ran 17 s to
    'optimal_inaccurate' and the fit raised SolverError; now the native method solves it (SCS stays the fallback of
    pooled programs only), and the exact certificate over its patterns puts the fit within 1e-6 of the optimum."""
    def no_scs(*args, **kwargs):
        raise AssertionError("SCS was called")

    monkeypatch.setitem(cvxpy_backend.CVXPY_SOLVERS, "scs", (no_scs, {}))
    X, y = _small_problem(1)
    labels = np.where(y > np.median(y), 1, -1)
    model = cn.ConvexBNClassifier(beta=1e-6, patterns=30, random_state=1, loss="logistic").fit(X, labels)
    report = model.solver_report_[0]
    assert report["replaced"] == "clarabel" and report["solver"] == "torch"
    certificate = solve.certify_solution(model.whitening_.U_prime, labels.astype(float), model.solutions_[0], 1e-6,
                                         "logistic", "exact", all_patterns=model.patterns_)
    assert -1e-12 <= (model.objective_ - certificate.lower_bound) / model.objective_ <= 1e-6  # rounding below


def test_a_pooled_program_clarabel_fails_is_solved_by_scs_and_where_that_fails_too_the_error_names_both(
        monkeypatch) -> None:
    """Clarabel failing (here: not installed) on a pooled program, which the native method does not solve: SCS
    solves it (``fallback_solver``), its answer within 1e-8 of Clarabel's and certified; where SCS fails as well,
    SolverError names both and the estimator keeps no fitted attribute. (Before session 37 the cvxpy backend
    tried SCS itself; this path had no test.)"""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((12, 1, 1, 3))
    y = np.sin(images[:, 0, 0, 0] + images[:, 0, 0, 2]) + images[:, 0, 0, 1]
    kwargs = dict(kernel_size=(1, 2), beta=0.05, patterns=20)
    reference = cn.ConvexBNConvRegressor(**kwargs).fit(images, y)
    monkeypatch.setitem(cvxpy_backend.CVXPY_SOLVERS, "clarabel", ("NO_SUCH_SOLVER", {}))
    model = cn.ConvexBNConvRegressor(**kwargs).fit(images, y)
    report = single(model.solver_report_)
    assert report["solver"] == "scs" and 0 <= report["relative_gap"] <= 1e-6
    assert report["lower_bound"] <= reference.objective_ * (1 + 1e-12)
    assert abs(model.objective_ - reference.objective_) <= 1e-8 * reference.objective_
    monkeypatch.setitem(cvxpy_backend.CVXPY_SOLVERS, "scs", ("NO_SUCH_SOLVER", {}))
    failing = cn.ConvexBNConvRegressor(**kwargs)
    with pytest.raises(cn.SolverError, match="solver 'clarabel'.*SCS, tried instead, failed too: "
                                             "ConvexBNConvRegressor: solver 'scs'"):
        failing.fit(images, y)
    assert not [k for k in vars(failing) if k.endswith("_") and not k.startswith("_")]


def test_a_clarabel_solution_the_native_method_cannot_check_is_kept_with_its_own_gap_and_a_warning(
        monkeypatch, caplog) -> None:
    """The logistic program above (its own multipliers read a gap of 1.4e-4) with the native method failing: the
    Clarabel solution is kept, its report holding the gap at its own multipliers, and a warning says it is not
    certified."""
    def failing(*args):
        raise cn.SolverError("ConvexBNClassifier: solver='torch' stopped without meeting its tolerances")

    monkeypatch.setattr(native_solver, "solve_native_program", failing)
    X, y = _small_problem(1)
    labels = np.where(y > np.median(y), 1, -1)
    with caplog.at_level("WARNING", logger="convexnorm"):
        model = cn.ConvexBNClassifier(beta=1e-3, patterns=30, random_state=1, loss="logistic").fit(X, labels)
    report = model.solver_report_[0]
    assert report["solver"] == "clarabel" and "replaced" not in report and report["relative_gap"] > 1e-5
    assert "could not certify the clarabel solution" in caplog.text
