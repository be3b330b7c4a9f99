"""Exact convex training of two-layer BN-ReLU networks (spec: convex-bn.md sections 3-6).

``ConvexBNRegressor`` and ``ConvexBNClassifier`` solve the convex program of
``convexnorm.programs.convex_bn_program`` with cvxpy and hand back the ordinary
network through ``to_module``. ``certify`` checks global optimality (section 4) and
``fit(grow=True)`` adds violating patterns until none is found. ``closed_form``
solves the overparameterized case (section 5) by formula.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, replace

import cvxpy as cp
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from tqdm.auto import tqdm

from convexnorm.convex._validation import check_beta, check_matrix, check_targets
from convexnorm.convex.native import solve_native
from convexnorm.convex.network import recover_network
from convexnorm.convex.patterns import (
    MAX_EXHAUSTIVE_CANDIDATES,
    arrangement_patterns,
    exhaustive_candidates,
)
from convexnorm.convex.whitening import Whitening, check_whitening_rank, whiten
from convexnorm.errors import SolverError
from convexnorm.losses import check_loss, negative_gradient, torch_loss
from convexnorm.programs import convex_bn_program

logger = logging.getLogger("convexnorm")

SOLVERS = {
    "clarabel": (cp.CLARABEL, {}),
    "scs": (cp.SCS, {"eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 200_000}),
    "torch": (None, {}),
}
#: "full": the program on U' (spec section 3); "spectral": on U' diag(S, sqrt(n)) = [U S, 1]
#: (spec section 7, keeps the spectrum: an explicit spectral bias).
WHITENINGS = ("full", "spectral")
#: Groups with ||s_i|| below this fraction of the largest are zero (interior-point
#: residue); dropping them changed the objective by < 1e-7 relative in our checks.
NEURON_RTOL = 1e-6
#: A dual value above beta * (1 + VIOLATION_RTOL) is a violation of optimality.
VIOLATION_RTOL = 1e-5


@dataclass(frozen=True)
class ScalarSolution:
    """One scalar-output convex model: neurons s_j (rows) with output signs +-1, the
    solver's report (status or measured optimality) and, for solver='torch', the full
    (W, G) iterate used to warm-start a later solve."""

    neurons: np.ndarray  # (m, r + 1)
    signs: np.ndarray  # (m,)
    objective: float
    report: dict = field(default_factory=dict)
    warm: tuple | None = None

    def predict(self, U_rows: np.ndarray, pool: np.ndarray | None = None) -> np.ndarray:
        """sum_j sign_j (u' . s_j)_+ for whitened rows u' (training or test-time map),
        summed by ``pool`` (samples x rows) for convolutional programs."""
        out = np.maximum(U_rows @ self.neurons.T, 0.0) @ self.signs
        return out if pool is None else pool @ out


@dataclass(frozen=True)
class Certificate:
    """The dual check of spec section 4 for one scalar program.

    ``max_dual_value`` is the largest |lam^T (U' u)_+| over ||u|| <= 1 that was found
    (the exact maximum when ``exact``); optimality over all patterns holds when it is
    <= beta. ``lower_bound`` (squared loss only) is a lower bound on the optimum over
    all patterns when ``exact``; otherwise it holds only if no probe missed a larger
    value ("no violation found in n_probes probes").
    """

    beta: float
    max_dual_value: float
    exact: bool
    n_probes: int
    objective: float
    lower_bound: float | None
    violating_patterns: np.ndarray

    @property
    def violation(self) -> float:
        """max_dual_value - beta: positive means the solution is not globally optimal."""
        return self.max_dual_value - self.beta

    @property
    def optimal(self) -> bool:
        return self.max_dual_value <= self.beta * (1 + VIOLATION_RTOL)

    @property
    def gap(self) -> float | None:
        return None if self.lower_bound is None else self.objective - self.lower_bound


def _solve_native(
    U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float, loss: str, owner: str,
    solver_options: dict | None, warm_start: tuple | None,
) -> tuple[np.ndarray, np.ndarray, dict, tuple]:
    """solver='torch': the native solver on solver_options['device'] (default CPU), float64
    unless solver_options['dtype'] says otherwise; other options go to solve_native."""
    options = dict(solver_options or {})
    device = torch.device(options.pop("device", "cpu"))
    dtype = options.pop("dtype", torch.float64)
    A = torch.as_tensor(U_prime, dtype=dtype, device=device)
    masks = torch.as_tensor(patterns.T, dtype=dtype, device=device)
    try:
        result = solve_native(A, masks, torch.as_tensor(y, dtype=dtype, device=device), beta, loss,
                              warm_start=warm_start, **options)
    except ValueError as error:
        raise ValueError(f"{owner}: {error}") from error
    P = patterns.shape[0]
    W = result.W.double().cpu().numpy()
    report = {"solver": "torch", "method": result.method, "converged": result.converged,
              "relative_gap": result.relative_gap,
              "stationarity": result.stationarity, "violation": result.violation, "iterations": result.iterations}
    return W[:, :P], W[:, P:], report, (result.W, result.G)


def _solve_variables(
    U_prime: np.ndarray, patterns: np.ndarray, y: np.ndarray, beta: float, loss: str, solver: str,
    owner: str, solver_options: dict | None, warm_start: tuple | None = None, pool: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict, tuple | None]:
    """S and T of one solve, the solver's report and the native warm-start state.
    For cvxpy, Parameters are treated as constants (cvxpy's parametric canonicalization
    of this program grows as n P^2 r' and suits only small layers). Clarabel's
    'optimal_inaccurate' or failure (seen on logistic programs) is retried with SCS."""
    if solver == "torch":
        if pool is not None:
            raise ValueError(f"{owner}: solver='torch' does not solve pooled (convolutional) programs; "
                             "use 'clarabel' or 'scs'")
        return _solve_native(U_prime, patterns, y, beta, loss, owner, solver_options, warm_start)
    rows, r_prime = U_prime.shape
    program = convex_bn_program(len(y), r_prime, len(patterns), loss, constraint_rows=rows)
    program.set_data(U_prime, patterns, y, beta, pool)
    attempts = [(solver, solver_options or {})] + ([("scs", {})] if solver == "clarabel" else [])
    for index, (name, options) in enumerate(attempts):
        cvxpy_solver, defaults = SOLVERS[name]
        try:
            program.problem.solve(solver=cvxpy_solver, ignore_dpp=True, **{**defaults, **options})
            status = program.problem.status
        except cp.error.SolverError as error:
            status = f"failed ({error})"
        if status == cp.OPTIMAL:
            report = {"solver": name, "status": status, "solve_time": program.problem.solver_stats.solve_time}
            return program.S.value, program.T.value, report, None
        retry = index + 1 < len(attempts) and status != cp.INFEASIBLE and status != cp.UNBOUNDED
        if not retry:
            break
        logger.warning("%s: %s returned %r, solving again with SCS", owner, name, status)
    raise SolverError(f"{owner}: solver {name!r} returned status {status!r}")


def solve_convex_program(
    U_prime: np.ndarray,
    patterns: np.ndarray,
    y: np.ndarray,
    beta: float,
    loss: str,
    solver: str,
    owner: str,
    solver_options: dict | None = None,
    warm_start: tuple | None = None,
    pool: np.ndarray | None = None,
) -> ScalarSolution:
    """Solve over ``patterns`` (rows of U' summed by ``pool`` for convolutions), then polish:
    solve again over the patterns whose groups are active (norm above NEURON_RTOL of the
    largest), so that the residue of inactive groups does not perturb the solution; the
    residue left is dropped. The native interior-point method removes its residue itself
    (certified), so its solutions are not re-solved. ``warm_start`` is a previous
    solution's ``warm`` state (solver='torch')."""
    args = (y, beta, loss, solver, owner, solver_options)
    S, T, report, warm = _solve_variables(U_prime, patterns, *args, warm_start=warm_start, pool=pool)
    norms = np.maximum(np.linalg.norm(S, axis=0), np.linalg.norm(T, axis=0))
    active = norms > NEURON_RTOL * max(norms.max(), np.finfo(float).tiny)
    if 0 < active.sum() < len(patterns) and report.get("method") != "ipm":
        restricted = None
        if warm is not None:
            index = torch.as_tensor(np.concatenate([np.flatnonzero(active), len(patterns) + np.flatnonzero(active)]),
                                    device=warm[0].device)
            restricted = (warm[0][:, index], warm[1][:, index])
        first = report
        S, T, report, _ = _solve_variables(U_prime, patterns[active], *args, warm_start=restricted, pool=pool)
        if "iterations" in first:
            report = {**report, "iterations": first["iterations"] + report["iterations"]}
    norms = np.concatenate([np.linalg.norm(S, axis=0), np.linalg.norm(T, axis=0)])
    keep = norms > NEURON_RTOL * max(norms.max(), np.finfo(float).tiny)
    neurons = np.concatenate([S.T, T.T])[keep]
    signs = np.concatenate([np.ones(S.shape[1]), -np.ones(T.shape[1])])[keep]
    return replace(_evaluated(neurons, signs, U_prime, y, beta, loss, pool), report=report, warm=warm)


def _evaluated(neurons: np.ndarray, signs: np.ndarray, U_prime: np.ndarray, y: np.ndarray, beta: float,
               loss: str, pool: np.ndarray | None = None) -> ScalarSolution:
    """The solution with its exact objective loss(f) + beta sum_j ||s_j||, f = sum_j sign_j (U' s_j)_+
    (pooled by ``pool``)."""
    partial = ScalarSolution(neurons, signs, 0.0)
    fitted = torch.from_numpy(partial.predict(U_prime, pool))
    value = float(torch_loss(loss, fitted, torch.from_numpy(y))) + beta * float(np.linalg.norm(neurons, axis=1).sum())
    return ScalarSolution(neurons, signs, value)


@functools.lru_cache(maxsize=32)
def _cone_maximizer(n: int, r_prime: int) -> tuple[cp.Problem, cp.Parameter, cp.Parameter, cp.Variable]:
    """max c^T u  s.t.  M u >= 0, ||u|| <= 1: the dual value of one pattern (DPP)."""
    c, M, u = cp.Parameter(r_prime), cp.Parameter((n, r_prime)), cp.Variable(r_prime)
    return cp.Problem(cp.Maximize(c @ u), [M @ u >= 0, cp.norm(u, 2) <= 1]), c, M, u


def _pattern_dual_value(U_prime: np.ndarray, mask: np.ndarray, lam: np.ndarray) -> tuple[float, np.ndarray]:
    problem, c, M, u = _cone_maximizer(*U_prime.shape)
    c.value = U_prime.T @ (mask * lam)
    M.value = np.where(mask, 1.0, -1.0)[:, None] * U_prime
    problem.solve(solver=cp.CLARABEL)
    if problem.status != cp.OPTIMAL:
        raise SolverError(f"certify: a pattern's dual subproblem returned status {problem.status!r}")
    return float(problem.value), u.value


def _probe(U_prime: np.ndarray, lam: np.ndarray, n_probes: int, seed: int, steps: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Dual values lam^T (U' u)_+ (for lam and -lam) of unit u from random starts, each
    improved by the ascent u <- U'^T D(u) lam / ||.||; returns values and masks."""
    rng = np.random.default_rng(seed)
    values, masks = [], []
    for direction in (lam, -lam):
        u = rng.standard_normal((U_prime.shape[1], n_probes))
        for _ in range(steps):
            step = U_prime.T @ ((U_prime @ u >= 0) * direction[:, None])
            u = step / np.maximum(np.linalg.norm(step, axis=0), np.finfo(float).tiny)
        z = U_prime @ u
        values.append(direction @ np.maximum(z, 0.0))
        masks.append((z >= 0).T)
    return np.concatenate(values), np.concatenate(masks)


def certify_solution(
    U_prime: np.ndarray,
    y: np.ndarray,
    solution: ScalarSolution,
    beta: float,
    loss: str,
    method: str = "auto",
    n_probes: int = 2000,
    seed: int = 0,
    pool: np.ndarray | None = None,
) -> Certificate:
    """Spec section 4: is max_{||u|| <= 1} |lam^T (U' u)_+| <= beta, lam = -loss'(f)?
    For pooled (convolutional) programs lam^T Pi (U' u)_+ = (Pi^T lam)^T (U' u)_+: the same
    check with lam spread over each sample's rows."""
    if method not in ("auto", "exact", "probe"):
        raise ValueError(f"certify: method must be 'auto', 'exact' or 'probe', got {method!r}")
    fitted = solution.predict(U_prime, pool)
    residual = negative_gradient(loss, torch.from_numpy(fitted), torch.from_numpy(y)).numpy()
    lam = residual if pool is None else pool.T @ residual
    n, r_prime = U_prime.shape
    enumerable = exhaustive_candidates(n, r_prime) <= MAX_EXHAUSTIVE_CANDIDATES
    if method == "exact" and not enumerable:
        raise ValueError("certify: exact certification needs exhaustive pattern enumeration, which is too large here; use method='probe'")
    exact = method == "exact" or (method == "auto" and enumerable)
    violating = []
    if exact:
        best = 0.0
        for mask in arrangement_patterns(U_prime, "exhaustive"):
            for direction in (lam, -lam):
                # the ball bound ||U'^T D lam|| caps the cone maximum: skip what cannot violate
                if np.linalg.norm(U_prime.T @ (mask * direction)) <= max(best, beta):
                    continue
                value, _ = _pattern_dual_value(U_prime, mask, direction)
                best = max(best, value)
                if value > beta * (1 + VIOLATION_RTOL):
                    violating.append(mask)
        n_probes_used = 0
    else:
        values, masks = _probe(U_prime, lam, n_probes, seed)
        best = float(values.max())
        order = np.argsort(-values)
        violating = [masks[i] for i in order if values[i] > beta * (1 + VIOLATION_RTOL)]
        n_probes_used = 2 * n_probes
    lower = None
    if loss == "squared":
        scaled = residual * min(1.0, beta / best) if best > 0 else residual
        lower = float(0.5 * y @ y - 0.5 * np.sum((scaled - y) ** 2))
    patterns = np.array(violating, dtype=bool).reshape(-1, n)
    if len(patterns):
        _, index = np.unique(np.packbits(patterns, axis=1), axis=0, return_index=True)
        patterns = patterns[np.sort(index)]
    return Certificate(beta, best, exact, n_probes_used, solution.objective, lower, patterns)


def _fit_scalar(
    estimator: "_ConvexBNBase",
    U_prime: np.ndarray,
    patterns: np.ndarray,
    y: np.ndarray,
    grow: bool,
    max_rounds: int,
    n_probes: int,
    max_new_patterns: int,
    progress: bool = False,
    pool: np.ndarray | None = None,
) -> tuple[ScalarSolution, np.ndarray, list[float]]:
    """Solve, then (grow=True) add violating patterns and re-solve until none is found."""
    owner = type(estimator).__name__
    args = (estimator.beta, estimator.loss, estimator.solver, owner, estimator.solver_options)
    solution = solve_convex_program(U_prime, patterns, y, *args, pool=pool)
    history = [solution.objective]
    if grow:
        for round_index in tqdm(range(max_rounds), desc=f"{owner} grow", disable=not progress, leave=False):
            cert = certify_solution(U_prime, y, solution, estimator.beta, estimator.loss, "probe", n_probes,
                                    estimator.seed + round_index + 1, pool)
            known = {bytes(np.packbits(p)) for p in patterns}
            new = [p for p in cert.violating_patterns if bytes(np.packbits(p)) not in known][:max_new_patterns]
            if not new:
                break
            patterns = np.concatenate([patterns, np.array(new)])
            solution = solve_convex_program(U_prime, patterns, y, *args, warm_start=solution.warm, pool=pool)
            history.append(solution.objective)
            logger.info("%s: grow round %d, %d patterns, objective %.8g", owner, round_index + 1,
                        len(patterns), solution.objective)
    return solution, patterns, history


class _ConvexBNBase(BaseEstimator):
    """Shared fitting of one or more scalar programs on the same whitened data."""

    def __init__(
        self,
        beta: float = 1e-3,
        patterns: str | int = "auto",
        solver: str = "clarabel",
        loss: str = "squared",
        seed: int = 0,
        solver_options: dict | None = None,
        whitening_rank: int | None = None,
        whitening: str = "full",
    ) -> None:
        self.beta = beta
        self.patterns = patterns
        self.solver = solver
        self.loss = loss
        self.seed = seed
        self.solver_options = solver_options
        self.whitening_rank = whitening_rank
        self.whitening = whitening

    def _check_params(self) -> None:
        owner = type(self).__name__
        check_beta(self.beta, owner)
        check_loss(self.loss, owner)
        check_whitening_rank(self.whitening_rank, owner)
        if self.whitening not in WHITENINGS:
            raise ValueError(f"{owner}: whitening must be one of {WHITENINGS}, got {self.whitening!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"{owner}: solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")

    def _fit_targets(self, X, targets: list[np.ndarray], grow: bool, max_rounds: int, n_probes: int,
                     max_new_patterns: int, progress: bool) -> None:
        """Fit one scalar program per target column; set fitted attributes only on success."""
        owner = type(self).__name__
        try:
            whitening = whiten(X).truncated(self.whitening_rank)
            if self.whitening == "spectral":
                whitening = whitening.spectral()
            U_prime = whitening.U_prime
            patterns = arrangement_patterns(U_prime, self.patterns, self.seed)
        except ValueError as error:
            raise ValueError(f"{owner}: {error}") from error
        solutions, all_patterns, histories = [], [], []
        for target in tqdm(targets, desc=owner, disable=not progress or len(targets) == 1, leave=False):
            solution, grown, history = _fit_scalar(self, U_prime, patterns, target, grow, max_rounds,
                                                   n_probes, max_new_patterns, progress)
            solutions.append(solution)
            all_patterns.append(grown)
            histories.append(history)
        self._set_fitted(whitening, targets, solutions, all_patterns, histories)

    def _set_fitted(self, whitening: Whitening, targets: list[np.ndarray], solutions: list[ScalarSolution],
                    patterns: list[np.ndarray], histories: list[list[float]]) -> None:
        """All fitted attributes at once (one list entry per scalar program; a single
        program's patterns and history are stored unwrapped)."""
        self.whitening_ = whitening
        self.patterns_ = patterns[0] if len(patterns) == 1 else patterns
        self.solutions_ = solutions
        self.objective_history_ = histories[0] if len(histories) == 1 else histories
        self.objective_ = float(sum(s.objective for s in solutions))
        self.solver_report_ = [s.report for s in solutions]
        self.n_neurons_ = int(sum(len(s.signs) for s in solutions))
        self.n_features_in_ = whitening.V.shape[0]
        self._targets = targets

    def _check_fitted(self) -> None:
        if not hasattr(self, "solutions_"):
            raise ValueError(f"{type(self).__name__}: call fit before using the model")

    def _decision(self, X) -> np.ndarray:
        """(m, len(solutions_)) outputs of the fitted model on new data (test-time map)."""
        self._check_fitted()
        rows = self.whitening_.transform(check_matrix(X, type(self).__name__, columns=self.n_features_in_))
        return np.stack([s.predict(rows) for s in self.solutions_], axis=1)

    def _output_signs(self) -> tuple[np.ndarray, np.ndarray]:
        neurons = np.concatenate([s.neurons for s in self.solutions_])
        signs = np.zeros((len(neurons), len(self.solutions_)))
        start = 0
        for k, s in enumerate(self.solutions_):
            signs[start : start + len(s.signs), k] = s.signs
            start += len(s.signs)
        return neurons, signs

    def to_module(self) -> torch.nn.Sequential:
        """The fitted network as Sequential(Linear, BatchNorm1d(eps=0), ReLU, Linear), float64.

        Train mode on the training X gives the convex model's fitted values; eval mode
        (the returned mode, running statistics from the training data, biased variance)
        gives ``decision_function`` / ``predict`` on new data. A train-mode forward
        updates the running statistics as torch does (unbiased variance, momentum),
        after which eval mode no longer reproduces ``predict`` exactly.
        """
        self._check_fitted()
        neurons, signs = self._output_signs()
        return recover_network(self.whitening_, neurons, signs[:, 0] if signs.shape[1] == 1 else signs)

    def certify(self, method: str = "auto", n_probes: int = 2000, seed: int = 0) -> list[Certificate]:
        """One Certificate per scalar program (exact over all patterns when they can be
        enumerated, else by probing)."""
        self._check_fitted()
        U_prime = self.whitening_.U_prime
        return [certify_solution(U_prime, t, s, self.beta, self.loss, method, n_probes, seed)
                for t, s in zip(self._targets, self.solutions_)]


class ConvexBNRegressor(RegressorMixin, _ConvexBNBase):
    """Exact convex training of a scalar-output two-layer BN-ReLU network (squared loss).

    ``objective_`` = (1/2)||f - y||^2 + beta * sum_i (||s_i|| + ||t_i||), the optimum of
    the program over ``patterns_``; equal to the paper's non-convex objective of
    ``to_module()`` (spec section 3).
    """

    def fit(self, X, y, grow: bool = False, max_rounds: int = 10, n_probes: int = 2000,
            max_new_patterns: int = 50, progress: bool = False) -> "ConvexBNRegressor":
        self._check_params()
        if self.loss != "squared":
            raise ValueError(f"ConvexBNRegressor: loss must be 'squared', got {self.loss!r}; "
                             "use ConvexBNClassifier for logistic or hinge")
        X = check_matrix(X, "ConvexBNRegressor")
        y = check_targets(y, X.shape[0], "ConvexBNRegressor").astype(np.float64)
        self._fit_targets(X, [y], grow, max_rounds, n_probes, max_new_patterns, progress)
        return self

    def predict(self, X) -> np.ndarray:
        return self._decision(X)[:, 0]

    def certify(self, method: str = "auto", n_probes: int = 2000, seed: int = 0) -> Certificate:
        return super().certify(method, n_probes, seed)[0]


class ConvexBNClassifier(ClassifierMixin, _ConvexBNBase):
    """Exact convex training for classification on +-1 labels: binary, or one exact
    scalar program per class (one-vs-rest) for C > 2 classes."""

    def __init__(self, beta: float = 1e-3, patterns: str | int = "auto", solver: str = "clarabel",
                 loss: str = "logistic", seed: int = 0, solver_options: dict | None = None,
                 whitening_rank: int | None = None, whitening: str = "full") -> None:
        super().__init__(beta, patterns, solver, loss, seed, solver_options, whitening_rank, whitening)

    def fit(self, X, y, grow: bool = False, max_rounds: int = 10, n_probes: int = 2000,
            max_new_patterns: int = 50, progress: bool = False) -> "ConvexBNClassifier":
        self._check_params()
        X = check_matrix(X, "ConvexBNClassifier")
        y = check_targets(y, X.shape[0], "ConvexBNClassifier")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"ConvexBNClassifier: y needs at least 2 classes, got {classes}")
        columns = [classes[1:]] if len(classes) == 2 else [[c] for c in classes]
        targets = [np.where(np.isin(y, c), 1.0, -1.0) for c in columns]
        self._fit_targets(X, targets, grow, max_rounds, n_probes, max_new_patterns, progress)
        self.classes_ = classes
        return self

    def decision_function(self, X) -> np.ndarray:
        scores = self._decision(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]

    def encoded_targets(self) -> np.ndarray:
        """The +-1 targets of the fitted programs, (n,) or (n, C): what nonconvex_objective takes."""
        stacked = np.stack(self._targets, axis=1)
        return stacked[:, 0] if stacked.shape[1] == 1 else stacked


def closed_form(X, y, beta: float) -> ConvexBNRegressor:
    """The optimum when n <= d and the centered data has rank n - 1 (spec section 5).

    f* = (||y+|| - beta)_+ y+/||y+|| - (||y-|| - beta)_+ y-/||y-||, with at most two
    neurons s = (1 - beta/||y+||)_+ U'^T y+ and t likewise for y-. Returns a fitted
    ConvexBNRegressor (predict, to_module and certify work as after fit).
    """
    X = check_matrix(X, "closed_form")
    y = check_targets(y, X.shape[0], "closed_form").astype(np.float64)
    beta = check_beta(beta, "closed_form")
    n, d = X.shape
    whitening = whiten(X)
    if n > d or whitening.rank != n - 1:
        raise ValueError(
            f"closed_form: applies when n <= d and the centered data has rank n - 1 "
            f"(got n={n}, d={d}, rank {whitening.rank}); use ConvexBNRegressor instead"
        )
    U_prime = whitening.U_prime
    neurons, signs, objective = [], [], 0.0
    for sign, part in ((1.0, np.maximum(y, 0.0)), (-1.0, np.maximum(-y, 0.0))):
        size = np.linalg.norm(part)
        if size > beta:
            neurons.append((1 - beta / size) * (U_prime.T @ part))
            signs.append(sign)
            objective += beta * size - beta**2 / 2
        else:
            objective += size**2 / 2
    solution = ScalarSolution(np.array(neurons).reshape(-1, n), np.array(signs), objective, {"solver": "closed_form"})
    model = ConvexBNRegressor(beta=beta, patterns="exhaustive")
    model._set_fitted(whitening, [y], [solution], [(U_prime @ solution.neurons.T >= 0).T], [[objective]])
    return model


def select_whitening_rank(estimator: "_ConvexBNBase", X, y, X_val, y_val, ranks) -> tuple[int, dict[int, float]]:
    """Fit a clone of ``estimator`` with each ``whitening_rank`` in ``ranks`` on (X, y) and
    score it on (X_val, y_val) (``score``: R^2 or accuracy); returns the best rank and all
    scores (the first best on ties, so list ranks from small to large)."""
    scores = {}
    for k in ranks:
        model = clone(estimator).set_params(whitening_rank=int(k)).fit(X, y)
        scores[int(k)] = float(model.score(X_val, y_val))
    if not scores:
        raise ValueError("select_whitening_rank: ranks is empty")
    return max(scores, key=scores.get), scores
