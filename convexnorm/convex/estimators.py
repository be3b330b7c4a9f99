"""Exact convex training of two-layer BN-ReLU networks (docs/math.md, sections 3-6).

``ConvexBNRegressor`` and ``ConvexBNClassifier`` solve the convex program of
``convexnorm.programs.convex_bn_program`` and hand back the ordinary network through
``to_module``. ``certify`` checks global optimality (section 4, ``certificate.py``) and
``grow=True`` adds violating patterns until none is left (column generation, exact
certification whenever every pattern can be enumerated). ``closed_form`` solves the
overparameterized case (section 5) by formula. The estimators follow scikit-learn
(``check_estimator`` passes; see ``tests/test_sklearn_checks.py``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from convexnorm._validation import (check_beta, check_count, check_matrix, check_options, check_targets,
                                    random_state_of, validated)
from convexnorm.convex.certificate import GROW_RTOL, REFINED_PATTERNS, Certificate, can_certify_exactly
from convexnorm.convex.network import recover_network
from convexnorm.convex.patterns import arrangement_patterns
from convexnorm.convex.solve import ScalarSolution, certify_solution, solve_convex_program
from convexnorm.convex.whitening import WHITENINGS, Whitening, check_whitening_rank, whiten
from convexnorm.losses import check_loss
from convexnorm.solvers.backends import check_solver

logger = logging.getLogger("convexnorm")


@contextlib.contextmanager
def unchanged_on_failure(estimator: BaseEstimator) -> Iterator[None]:
    """Restore every attribute of ``estimator`` if the block raises (a failed fit leaves the
    previous fit, or no fit, in place)."""
    saved = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise


def check_growth_parameters(estimator: BaseEstimator, owner: str) -> None:
    """solver_options, grow, max_rounds, n_probes, max_new_patterns and progress of an estimator
    that fits through ``_fit_scalar``."""
    check_options(estimator.solver_options, owner, "solver_options")
    check_count(estimator.max_rounds, owner, "max_rounds", minimum=0)
    check_count(estimator.n_probes, owner, "n_probes")
    check_count(estimator.max_new_patterns, owner, "max_new_patterns")
    for name in ("grow", "progress"):
        if not isinstance(getattr(estimator, name), (bool, np.bool_)):
            raise ValueError(f"{owner}: {name} must be True or False, got {getattr(estimator, name)!r}")


def _fit_scalar(
    estimator: "_ConvexBNBase",
    U_prime: np.ndarray,
    patterns: np.ndarray,
    y: np.ndarray,
    rng: np.random.RandomState,
    pool: np.ndarray | None = None,
) -> tuple[ScalarSolution, np.ndarray, list[float]]:
    """Solve, then (estimator.grow) add violating patterns and re-solve until none is left:
    certified exactly (every pattern enumerated once) when that is affordable, else by probes."""
    owner = type(estimator).__name__
    args = (estimator.beta, estimator.loss, estimator.solver, owner, estimator.solver_options)
    solution = solve_convex_program(U_prime, patterns, y, *args, pool=pool)
    history = [solution.objective]
    if not estimator.grow:
        return solution, patterns, history
    every = arrangement_patterns(U_prime, "exhaustive") if can_certify_exactly(U_prime) else None
    method = "probe" if every is None else "exact"
    logger.info("%s: grow from %d patterns, objective %.8g (%s certification)", owner, len(patterns),
                solution.objective, method)
    retried = False
    for round_index in tqdm(range(estimator.max_rounds), desc=f"{owner} grow", disable=not estimator.progress,
                            leave=False):
        known = {bytes(np.packbits(p)) for p in patterns}
        # probes: the ascent alone first (a round needs violators, not the largest ones); the exact
        # refinement only when that finds no new pattern, so a round stops on the full probe's word
        for refined in ((0, REFINED_PATTERNS) if method == "probe" else (REFINED_PATTERNS,)):
            cert = certify_solution(U_prime, y, solution, estimator.beta, estimator.loss, method, estimator.n_probes,
                                    rng, pool, every, violation_rtol=GROW_RTOL, refined_patterns=refined)
            new = [p for p in cert.violating_patterns
                   if bytes(np.packbits(p)) not in known][: estimator.max_new_patterns]
            if new:
                break
        if not new and cert.violated and not retried:  # violators already in the set: the solve was not accurate
            logger.info("%s: the violating patterns are already in the set; solving again at tight tolerances", owner)
            solution = solve_convex_program(U_prime, patterns, y, *args, pool=pool, tight_first=True)
            history.append(solution.objective)
            retried = True
            continue
        if not new:
            logger.info("%s: grow stopped after %d rounds: %s", owner, round_index,
                        "no violation left (certified)" if cert.optimal else
                        "no violation found by the probe" if not cert.violated else
                        f"the violating patterns (max dual value {cert.max_dual_value:.6g}) are already in the set")
            break
        patterns = np.concatenate([patterns, np.array(new)])
        solution = solve_convex_program(U_prime, patterns, y, *args, pool=pool)
        history.append(solution.objective)
        logger.info("%s: grow round %d, %d patterns, objective %.8g", owner, round_index + 1,
                    len(patterns), solution.objective)
    return solution, patterns, history


class _ConvexBNBase(BaseEstimator):
    """Shared fitting of one or more scalar programs on the same whitened data.

    Parameters: ``beta`` (weight decay, > 0), ``patterns`` ("auto", "exhaustive" or a number
    of sampled gates), ``solver`` ("clarabel", "scs", "torch"), ``loss``, ``random_state``
    (the sampled gates and probes), ``solver_options`` (passed to the solver; for "torch" the
    interior-point settings, "threads" (default "auto": one or all cores per iteration,
    convexnorm/solvers/threads.py), "device" and "accept_inaccurate"), ``whitening_rank`` and ``whitening``
    (docs/math.md section 7), ``grow`` (column generation) with ``max_rounds``,
    ``n_probes`` and ``max_new_patterns``, ``progress`` (a tqdm bar for the grow rounds;
    each round is also logged at INFO level on the "convexnorm" logger).
    """

    def __init__(
        self,
        beta: float = 1e-3,
        patterns: str | int = "auto",
        solver: str = "clarabel",
        loss: str = "squared",
        random_state: int | np.random.RandomState | None = 0,
        solver_options: dict | None = None,
        whitening_rank: int | None = None,
        whitening: str = "full",
        grow: bool = False,
        max_rounds: int = 10,
        n_probes: int = 2000,
        max_new_patterns: int = 50,
        progress: bool = False,
    ) -> None:
        self.beta = beta
        self.patterns = patterns
        self.solver = solver
        self.loss = loss
        self.random_state = random_state
        self.solver_options = solver_options
        self.whitening_rank = whitening_rank
        self.whitening = whitening
        self.grow = grow
        self.max_rounds = max_rounds
        self.n_probes = n_probes
        self.max_new_patterns = max_new_patterns
        self.progress = progress

    def _check_params(self) -> None:
        owner = type(self).__name__
        check_beta(self.beta, owner)
        check_loss(self.loss, owner)
        check_whitening_rank(self.whitening_rank, owner)
        if self.whitening not in WHITENINGS:
            raise ValueError(f"{owner}: whitening must be one of {WHITENINGS}, got {self.whitening!r}")
        check_solver(self.solver, owner)
        check_growth_parameters(self, owner)

    def _whitening(self, X: np.ndarray) -> Whitening:
        """The full whitening scales the features first (the fit does not depend on their units);
        the spectral variant and a truncation below the rank keep the data's own spectrum
        (docs/math.md section 7: gradient descent's spectral bias is that of the raw data)."""
        if self.whitening == "spectral":
            return whiten(X).truncated(self.whitening_rank).spectral()
        if self.whitening_rank is not None:
            raw = whiten(X)
            if self.whitening_rank < raw.rank:
                return raw.truncated(self.whitening_rank)
        return whiten(X, scale_features=True)

    def _fit_targets(self, X: np.ndarray, targets: list[np.ndarray]) -> None:
        """Fit one scalar program per target column; set fitted attributes only on success."""
        owner = type(self).__name__
        rng = random_state_of(self.random_state, type(self).__name__)
        try:
            whitening = self._whitening(X)
            U_prime = whitening.U_prime
            patterns = arrangement_patterns(U_prime, self.patterns, rng)
        except ValueError as error:
            raise ValueError(f"{owner}: {error}") from error
        solutions, all_patterns, histories = [], [], []
        for target in tqdm(targets, desc=owner, disable=not self.progress or len(targets) == 1, leave=False):
            solution, grown, history = _fit_scalar(self, U_prime, patterns, target, rng)
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

    def _decision(self, X) -> np.ndarray:
        """(m, len(solutions_)) outputs of the fitted model on new data (test-time map)."""
        check_is_fitted(self)
        X = validated(self, X, reset=False, dtype=np.float64)
        rows = self.whitening_.transform(X)
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
        """The fitted network as Sequential(Linear, BatchNorm1d(eps=0), ReLU, Linear), float64,
        of width ``n_neurons_`` (0 when the optimum is the zero network).

        Train mode on the training X gives the convex model's fitted values; eval mode
        (the returned mode, running statistics from the training data, biased variance)
        gives ``decision_function`` / ``predict`` on new data. A train-mode forward
        updates the running statistics as torch does (unbiased variance, momentum),
        after which eval mode no longer reproduces ``predict`` exactly.
        """
        check_is_fitted(self)
        neurons, signs = self._output_signs()
        return recover_network(self.whitening_, neurons, signs[:, 0] if signs.shape[1] == 1 else signs)

    def certify(self, method: str = "auto", n_probes: int | None = None,
                random_state: int | np.random.RandomState | None = 0) -> list[Certificate]:
        """One Certificate per scalar program: exact over all patterns when they can be
        enumerated (method "auto" or "exact"), else by ``n_probes`` probes (default: the
        estimator's n_probes), which can find a violation but not prove its absence."""
        check_is_fitted(self)
        n_probes = self.n_probes if n_probes is None else check_count(n_probes, "certify", "n_probes")
        U_prime = self.whitening_.U_prime
        rng = random_state_of(random_state, f"{type(self).__name__}.certify")
        return [certify_solution(U_prime, t, s, self.beta, self.loss, method, n_probes, rng)
                for t, s in zip(self._targets, self.solutions_)]


class ConvexBNRegressor(RegressorMixin, _ConvexBNBase):
    """Exact convex training of a scalar-output two-layer BN-ReLU network (squared loss).

    ``objective_`` = (1/2)||f - y||^2 + beta * sum_i (||s_i|| + ||t_i||), the optimum of
    the program over ``patterns_``; equal to the paper's non-convex objective of
    ``to_module()`` (docs/math.md section 3).
    """

    def fit(self, X, y) -> "ConvexBNRegressor":
        owner = "ConvexBNRegressor"
        with unchanged_on_failure(self):
            self._check_params()
            if self.loss != "squared":
                raise ValueError(f"{owner}: loss must be 'squared', got {self.loss!r}; "
                                 "use ConvexBNClassifier for logistic or hinge")
            X, y = validated(self, X, y, dtype=np.float64, y_numeric=True, ensure_min_samples=2)
            self._fit_targets(X, [np.asarray(y, dtype=np.float64)])
        return self

    def predict(self, X) -> np.ndarray:
        return self._decision(X)[:, 0]

    def certify(self, method: str = "auto", n_probes: int | None = None,
                random_state: int | np.random.RandomState | None = 0) -> Certificate:
        return super().certify(method, n_probes, random_state)[0]


class ConvexBNClassifier(ClassifierMixin, _ConvexBNBase):
    """Exact convex training for classification on +-1 labels: binary, or one exact
    scalar program per class (one-vs-rest) for C > 2 classes."""

    def __init__(
        self,
        beta: float = 1e-3,
        patterns: str | int = "auto",
        solver: str = "clarabel",
        loss: str = "logistic",
        random_state: int | np.random.RandomState | None = 0,
        solver_options: dict | None = None,
        whitening_rank: int | None = None,
        whitening: str = "full",
        grow: bool = False,
        max_rounds: int = 10,
        n_probes: int = 2000,
        max_new_patterns: int = 50,
        progress: bool = False,
    ) -> None:
        super().__init__(beta, patterns, solver, loss, random_state, solver_options, whitening_rank, whitening,
                         grow, max_rounds, n_probes, max_new_patterns, progress)

    def fit(self, X, y) -> "ConvexBNClassifier":
        owner = "ConvexBNClassifier"
        with unchanged_on_failure(self):
            self._check_params()
            X, y = validated(self, X, y, dtype=np.float64, ensure_min_samples=2)
            check_classification_targets(y)
            classes = np.unique(y)
            if len(classes) < 2:
                raise ValueError(f"{owner}: y needs at least 2 classes, got 1 class ({classes[0]!r})")
            columns = [classes[1:]] if len(classes) == 2 else [[c] for c in classes]
            targets = [np.where(np.isin(y, c), 1.0, -1.0) for c in columns]
            self._fit_targets(X, targets)
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
        check_is_fitted(self)
        stacked = np.stack(self._targets, axis=1)
        return stacked[:, 0] if stacked.shape[1] == 1 else stacked


def closed_form(X, y, beta: float) -> ConvexBNRegressor:
    """The optimum when n <= d and the centered data has rank n - 1 (docs/math.md section 5).

    f* = (||y+|| - beta)_+ y+/||y+|| - (||y-|| - beta)_+ y-/||y-||, with at most two
    neurons s = (1 - beta/||y+||)_+ U'^T y+ and t likewise for y-. Returns a fitted
    ConvexBNRegressor (predict, to_module and certify work as after fit).
    """
    X = check_matrix(X, "closed_form")
    y = check_targets(y, X.shape[0], "closed_form").astype(np.float64)
    beta = check_beta(beta, "closed_form")
    n, d = X.shape
    whitening = whiten(X, scale_features=True)
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
