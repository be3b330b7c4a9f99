"""A differentiable convex BN-ReLU block (docs/math.md, sections 3 and 9).

The forward pass fits a two-layer BN-ReLU network to (H, y) by solving its convex
program through cvxpylayers and returns that network's predictions; gradients flow
from the solution to H (through whitening, ``torch.linalg.svd``), to y and to beta.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from convexnorm._validation import check_count, check_float_tensor, check_options, check_positive
from convexnorm.convex.network import recover_network
from convexnorm.convex.patterns import arrangement_patterns
from convexnorm.convex.solve import solve_convex_program
from convexnorm.convex.whitening import (WHITENINGS, Whitening, check_whitening_rank, truncate_rank, u_prime_rows,
                                         whiten_tensor)
from convexnorm.errors import SolverError
from convexnorm.losses import MARGIN_LOSSES, check_loss, loss_terms
from convexnorm.solvers.cvxpylayers_backend import call_program, program_units
from convexnorm.programs import ConvexBNProgram, convex_bn_program
from convexnorm.solvers.implicit import InteriorPointSolve, duplicate_sets, first_of_set
from convexnorm.solvers.interior_point import InteriorPointSettings
from convexnorm.solvers.native import HINGE_DENSE_CURVATURE, THREADS, native_settings
from convexnorm.solvers.threads import AUTO, chunk_workers, intra_op_threads

#: Cone constraints (2D - I) U' s >= 0 may be violated by this fraction of the larger of max ||s|| and
#: ||y|| / ||U'||_2 (the size of a neuron that fits y; a solution near zero, beta above every group's dual
#: norm, is feasible only to the solver's absolute accuracy: measured 3.4e-1 of its own max ||s||).
FEASIBILITY_TOL = 1e-6
#: solver="cvxpylayers": diffcp's gradient mode. "dense" (a dense factorization of the derivative's system) up to
#: programs of DENSE_GRADIENT_SIZE scalar variables and constraints; beyond it, where that takes minutes, and for
#: batches with duplicate samples (``_solve``), "lsmr" with a warning. Against the polished solver="torch"
#: gradients (which agree with central differences to 1e-9), squared loss at beta = 1e-3 (the default), sizes
#: 192 .. 2496 (12x3x6 .. 32x6x32): lsmr 3.7e-6 .. 1.7e-3 off, dense 5e-8 .. 1.6e-7; forward + backward 0.08 ..
#: 15 s against 0.06 .. 6 s (at beta = 0.05: 15 against 1.2 s at 32x6x32; at 48x6x48, size 5280, 141 against
#: 29 s). ``python benchmarks/bench_block_accuracy.py``, docs/benchmarks.md, session 28.
DENSE_GRADIENT_SIZE = 2500
#: solver="cvxpylayers", logistic loss: below this beta the block warns that diffcp's derivative on the
#: exponential cone loses accuracy. Against solver="torch" on 30 batches (16x3x8 .. 32x6x24, dense mode): at beta
#: 1e-3 gradients 2.3e-6 .. 1.0e-3 off, at 3e-3 5.9e-7 .. 1.5e-5, at 1e-2 2.3e-7 .. 1.9e-6, at 3e-2 5e-9 .. 3.1e-7
#: (the largest margin y f did not predict it: 9.4e-4 at margins up to 12.5, 2.3e-6 at 43; docs/benchmarks.md,
#: session 28).
LOGISTIC_BETA_WARNING = 1e-2
#: solver="torch": certified relative gap of the interior-point solves. The polish and the
#: backward read the active sets off the solution: at 1e-7 the polish succeeded on the
#: benchmark's 32x6x32 and 64x8x64 batches, at 1e-6 it was refused at 64x8x64 (measured); 1e-8
#: is not always reachable (a 128x16x128 batch stalled at 7e-8).
BLOCK_TOL = 1e-7
#: The hinge loss: the interior-point method by Woodbury alone (no dense factorization: at 128x16x128
#: 0.4 s per forward instead of 13 s; it stalled at about 1e-6 before its refinement's mismatch), to this gap;
#: the polish then certified the same solution to ~1e-15 on 18 of 18 random batches from 64x8x64 to
#: 128x16x128, and an episode that stops short is finished with the dense factorization.
HINGE_BLOCK_TOL = 1e-5
#: solver="torch": the block's default intra-op threads. One, not the estimators' "auto": "auto" picks its
#: count by timing, so two forwards of the same batch could round differently (measured: a central
#: difference of two equal hinge-loss forwards gave 5e-9 instead of 0), while repeated passes are meant to
#: agree exactly; one thread was as fast at the block's sizes (32x6x24: 60.1 against 62.1 ms, median of
#: 40), "auto" faster on 32 episodes of 64x8x64 (1.18-1.29 against 1.40-1.92 s; docs/benchmarks.md,
#: session 24).
BLOCK_THREADS = 1
#: solver="torch": solver_options key of the number of threads the episodes are split over, forward
#: and backward (solvers/threads.py, ``over_chunks``), an integer or "auto" (the default: one per core
#: this process may use, on the CPU, at most two; ``chunk_workers``). Each runs on ``threads`` intra-op
#: threads ("auto": one): 32 episodes of 64x8x64 took 0.69 instead of 0.99-1.08 s on 2 workers of a 2-core machine, and
#: 1.01 instead of 1.08 s with another process busy on it (docs/benchmarks.md, session 18); 0.87-1.21
#: instead of 1.81-2.18 s in session 26, when "auto" became the default.
WORKERS = "workers"


@functools.lru_cache(maxsize=32)
def _program(n: int, r_prime: int, n_patterns: int, loss: str) -> ConvexBNProgram:
    """One program per (batch size, rank, patterns, loss); compiled once by call_program."""
    return convex_bn_program(n, r_prime, n_patterns, loss)


@functools.lru_cache(maxsize=32)
def _program_size(program: ConvexBNProgram) -> int:
    """Scalar variables and constraints of a program (DENSE_GRADIENT_SIZE)."""
    metrics = program.problem.size_metrics
    return metrics.num_scalar_variables + metrics.num_scalar_leq_constr + metrics.num_scalar_eq_constr


class ConvexBNReLU(nn.Module):
    """Fits the convex BN-ReLU program on each batch and predicts with the fitted network.

    ``forward(H, y, H_query=None)`` whitens H (batch x in_features), forms the patterns
    D_i = diag(1[U' g_i >= 0]) of the fixed gate vectors g_i (a buffer, seeded), solves

        min loss(sum_i D_i U' (s_i - t_i), y) + beta sum_i (||s_i|| + ||t_i||)
        s.t. (2 D_i - I) U' s_i >= 0, (2 D_i - I) U' t_i >= 0

    and returns sum_i (u' s_i)_+ - (u' t_i)_+ for the rows u' of H's whitened data, or of
    ``H_query`` under the test-time map. ``solver="torch"`` solves with the batched
    interior-point method of ``convexnorm.solvers`` (gradients from the KKT system of the
    solution's active set; ``solver_options``: those of the estimators' solver="torch", see
    ``convexnorm.solvers.native.native_settings``, with "threads" 1 by default so that repeated passes
    agree exactly ("auto" may be asked), and ``workers``: the episodes split over that many threads,
    default "auto", one per core on the CPU, at most two) and accepts episodes: H (B, n, d), y (B, n),
    H_query (B, m, d), one program per episode in one batched solve. ``solver="cvxpylayers"`` solves
    through cvxpylayers (``solver_options`` go to diffcp), one episode at a time, the squared loss in units of
    y (``program_units``), differentiated by diffcp's dense mode up to DENSE_GRADIENT_SIZE and by its lsmr
    beyond it or for a batch with duplicate samples (with a warning: its gradients were up to 1e-1 off; for the
    logistic loss a warning below LOGISTIC_BETA_WARNING too). ``return_objective=True`` also returns the optimal
    objective (one per episode) as a differentiable tensor. Each batch must
    have full rank min(n - 1, in_features). Margin losses take labels y in {-1, +1}.
    """

    def __init__(
        self,
        in_features: int,
        beta: float = 1e-3,
        n_patterns: int = 32,
        loss: str = "squared",
        seed: int = 0,
        learnable_beta: bool = False,
        solver_options: Mapping[str, Any] | None = None,
        solver: str = "cvxpylayers",
        whitening_rank: int | None = None,
        whitening: str = "full",
    ) -> None:
        super().__init__()
        check_loss(loss, "ConvexBNReLU")
        check_whitening_rank(whitening_rank, "ConvexBNReLU")
        if whitening not in WHITENINGS:
            raise ValueError(f"ConvexBNReLU: whitening must be one of {WHITENINGS}, got {whitening!r}")
        self.whitening_rank, self.whitening = whitening_rank, whitening
        if solver not in ("cvxpylayers", "torch"):
            raise ValueError(f"ConvexBNReLU: solver must be 'cvxpylayers' or 'torch', got {solver!r}")
        self.solver = solver
        beta = check_positive(beta, "ConvexBNReLU", "beta")
        check_count(in_features, "ConvexBNReLU", "in_features")
        check_count(n_patterns, "ConvexBNReLU", "n_patterns")
        check_options(solver_options, "ConvexBNReLU", "solver_options")
        check_count(seed, "ConvexBNReLU", "seed", minimum=0)
        self.in_features = in_features
        self.n_patterns = n_patterns
        self.loss = loss
        self.solver_options = dict(solver_options or {})
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("gates", torch.randn(in_features + 1, n_patterns, generator=generator, dtype=torch.float64))
        log_beta = torch.tensor(math.log(beta), dtype=torch.float64)
        if learnable_beta:
            self.log_beta = nn.Parameter(log_beta)
        else:
            self.register_buffer("log_beta", log_beta)

    @property
    def beta(self) -> Tensor:
        return self.log_beta.exp()

    def _check(self, H: Tensor, y: Tensor, H_query: Tensor | None) -> None:
        """Shapes (H (n, d) or (B, n, d), y and H_query to match), finiteness (naming the
        episode) and labels."""
        name = "ConvexBNReLU"
        for tensor, label in ((H, "H"), (y, "y"), (H_query, "H_query")):
            if tensor is not None and not isinstance(tensor, torch.Tensor):
                raise ValueError(f"{name}: {label} must be a torch.Tensor, got {type(tensor).__name__}")
        if H.dim() not in (2, 3) or H.shape[-1] != self.in_features:
            raise ValueError(f"{name}: H must be (batch, {self.in_features}) or (episodes, batch, {self.in_features}), "
                             f"got {tuple(H.shape)}")
        if H.dim() == 3 and self.solver != "torch":
            raise ValueError(f"{name}: episodes (H of shape (B, n, d)) need solver='torch'")
        if H.shape[-2] < 2:
            raise ValueError(f"{name}: need a batch of at least 2 samples, got {H.shape[-2]}")
        if y.shape != H.shape[:-1]:
            raise ValueError(f"{name}: y must have shape {tuple(H.shape[:-1])}, got {tuple(y.shape)}")
        if H_query is not None and (H_query.dim() != H.dim() or H_query.shape[-1] != self.in_features
                                    or H_query.shape[:-2] != H.shape[:-2]):
            raise ValueError(f"{name}: H_query must be {'(m, ' if H.dim() == 2 else f'({H.shape[0]}, m, '}"
                             f"{self.in_features}), got {tuple(H_query.shape)}")
        for tensor, label in ((H, "H"), (y, "y"), (H_query, "H_query")):
            if tensor is None:
                continue
            if tensor.dim() > 1 and H.dim() == 3:
                bad = ~torch.isfinite(tensor.detach()).flatten(1).all(1)
                if bool(bad.any()):
                    raise ValueError(f"{name}: {label} contains NaN or Inf in episode(s) "
                                     f"{torch.nonzero(bad).flatten().tolist()[:10]}")
            check_float_tensor(tensor, name, label)
        if self.loss in MARGIN_LOSSES and not torch.all((y == 1) | (y == -1)):
            raise ValueError(f"{name}: the {self.loss} loss needs labels y in {{-1, +1}}")

    def _whiten(self, H: Tensor, episode: int | None = None) -> tuple[Tensor, ...]:
        n, d = H.shape
        where = "" if episode is None else f" in episode {episode}"
        try:
            mean, U, S, V = whiten_tensor(H)
        except ValueError as error:
            raise ValueError(f"ConvexBNReLU: {error}{where}") from error
        if U.shape[1] < min(n - 1, d):
            raise ValueError(
                f"ConvexBNReLU: the batch is rank-deficient{where} (rank {U.shape[1]} < min(n - 1, d) = "
                f"{min(n - 1, d)}); use more distinct samples or fewer features"
            )
        return (mean, *truncate_rank(U, S, V, self.whitening_rank))

    def _rows(self, coords: Tensor, S_values: Tensor, n: int) -> Tensor:
        """[coords, 1/sqrt(n)], times diag(S, sqrt(n)) for whitening='spectral'."""
        rows = u_prime_rows(coords, n)
        if self.whitening == "spectral":
            rows = rows * torch.cat([S_values, S_values.new_tensor([n**0.5])])
        return rows

    def _patterns(self, U_prime: Tensor) -> Tensor:
        """(n, P) 0/1 patterns of the fixed gates on U' (gate rows: r coordinates, then bias)."""
        r = U_prime.shape[-1] - 1
        gates = torch.cat([self.gates[:r], self.gates[-1:]]).to(U_prime)
        return (U_prime.detach() @ gates >= 0).to(U_prime.dtype)

    def _native_settings(self) -> tuple[InteriorPointSettings, int | str | None, int | str]:
        """solver="torch": the interior-point settings, intra-op threads and episode workers of
        solver_options (WORKERS, the block's own option)."""
        options = dict(self.solver_options)
        workers = options.pop(WORKERS, AUTO)
        if workers != AUTO:
            try:
                check_count(workers, "ConvexBNReLU", f"solver_options[{WORKERS!r}]")
            except ValueError:
                raise ValueError(f"ConvexBNReLU: solver_options[{WORKERS!r}] must be an integer >= 1 or {AUTO!r}, "
                                 f"got {workers!r}") from None
        defaults = {"tol": BLOCK_TOL, THREADS: BLOCK_THREADS}
        if self.loss == "hinge":
            defaults.update(tol=HINGE_BLOCK_TOL, dense_curvature=HINGE_DENSE_CURVATURE)
        return (*native_settings(options, "ConvexBNReLU", (WORKERS,), **defaults), workers)

    def _solve_episodes(self, U_prime: Tensor, y: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """S and T (B, k, P) of the episodes' programs (patterns ``masks``), by the batched interior-point
        method, and for the hinge loss its multipliers alpha (B, n) (``InteriorPointSolve``)."""
        settings, threads, workers = self._native_settings()
        beta = self.beta.to(U_prime).expand(U_prime.shape[0])
        workers = chunk_workers(workers, U_prime.shape[0], U_prime.device)
        W, alpha = InteriorPointSolve.apply(U_prime, y, beta, masks, self.loss, settings, "ConvexBNReLU", threads,
                                            workers)
        P = self.n_patterns
        return W[:, :P].transpose(-1, -2), W[:, P:].transpose(-1, -2), alpha if self.loss == "hinge" else None

    def _solve(self, U_prime: Tensor, y: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        n, r_prime = U_prime.shape
        margin = self.loss in MARGIN_LOSSES
        # the program in units: U' in v (whitening="spectral", whose rows carry the data's size: ``program_units`` of
        # their root mean square norm; "full" whitening's rows are unitless, v = 1) and the squared loss's y in u (of
        # its root mean square). With U' = v U'', y = u y'' and W = (u / v) W'' the predictions are u U'' W'' and
        # the objective u^2 times the program's at U'', y'' and beta / (u v) (any loss where u = 1), exactly. In
        # their own units SCS's absolute tolerances failed at y of size 100 and diffcp's gradient was 32% off there
        # with beta 0.05, 64% off for spectral whitening of H of size 1e3 (docs/benchmarks.md, session 28)
        with torch.no_grad():
            row_unit = 1.0 if self.whitening != "spectral" else float(
                program_units(torch.linalg.matrix_norm(U_prime.detach()) / math.sqrt(n)))
            unit = 1.0 if margin else float(program_units(torch.linalg.norm(y.detach()) / math.sqrt(n)))
        U_program, y_program = U_prime / row_unit, (y if margin else y / unit)
        rows = y[:, None] * U_program if margin else U_program
        DU = [masks[:, i : i + 1] * rows for i in range(self.n_patterns)]
        SU = [(2 * masks[:, i : i + 1] - 1) * U_program for i in range(self.n_patterns)]
        targets = [] if margin else [y_program]
        program = _program(n, r_prime, self.n_patterns, self.loss)
        # duplicate samples make the derivative's system singular (a kink: only their multipliers' sum is determined),
        # where diffcp's dense mode, normal equations solved by LDL^T, returns an arbitrary solution (gradients as
        # large as the true ones off, the copies' unequal), and lsmr, from zero, the minimum-norm one, which shares
        # them evenly as solver="torch" does (``implicit.duplicate_sets``)
        duplicates = not bool(first_of_set(duplicate_sets(U_prime.detach())).all())
        dense = _program_size(program) <= DENSE_GRADIENT_SIZE and not duplicates
        if not dense and "mode" not in self.solver_options and torch.is_grad_enabled():
            reason = ("the batch holds duplicate samples" if duplicates else
                      f"a dense derivative of this {n}x{r_prime - 1}x{self.n_patterns} program takes minutes")
            warnings.warn(f"ConvexBNReLU: solver='cvxpylayers' differentiates with diffcp's lsmr ({reason}), whose "
                          f"gradients were up to 1e-1 off; solver='torch' gives them to float64's precision",
                          stacklevel=6)  # the caller's line: _solve, _predict, forward and two of Module.__call__
        beta = self.beta.to(torch.float64) / (unit * row_unit)
        S, T = call_program(program, [*DU, *SU, *targets, beta], owner="ConvexBNReLU",
                            solver_options=self.solver_options, gradient_mode="dense" if dense else "lsmr")
        beta_value = float(self.beta.detach())
        if self.loss == "logistic" and torch.is_grad_enabled() and beta_value < LOGISTIC_BETA_WARNING:
            warnings.warn(f"ConvexBNReLU: solver='cvxpylayers' with the logistic loss at beta {beta_value:.2g} < "
                          f"{LOGISTIC_BETA_WARNING:g}: diffcp's gradients on the exponential cone were up to 1e-3 off "
                          f"there; solver='torch' gives them to float64's precision", stacklevel=6)
        with torch.no_grad():  # in the program's units
            spectral_norm = torch.linalg.matrix_norm(U_program.detach(), ord=2).clamp_min(1e-300)
            fits_y = torch.linalg.norm(y_program) / spectral_norm
            scale = max(float(torch.linalg.norm(S, dim=0).max()), float(torch.linalg.norm(T, dim=0).max()),
                        float(fits_y), 1e-300)
            cones = torch.stack([SU[i].detach() @ torch.stack([S[:, i], T[:, i]], 1) for i in range(self.n_patterns)])
            violation = float((-cones).clamp_min(0).max()) / scale
        if violation > FEASIBILITY_TOL:
            raise SolverError(f"ConvexBNReLU: inaccurate solve, cone constraint violated by {violation:.2e} of max "
                              "||s|| (or of ||y|| / ||U'||_2 where larger)")
        return S * (unit / row_unit), T * (unit / row_unit)

    def forward(self, H: Tensor, y: Tensor, H_query: Tensor | None = None,
                return_objective: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        self._check(H, y, H_query)
        single = H.dim() == 2
        if single:
            H, y = H[None], y[None]
            H_query = None if H_query is None else H_query[None]
        device, dtype = H.device, H.dtype
        if self.solver == "torch":  # the block's own work on the solver's threads ("auto": one; solvers/threads.py)
            with intra_op_threads(self._native_settings()[1]):
                predictions, objective = self._predict(H, y, H_query, single, device, return_objective)
        else:
            predictions, objective = self._predict(H, y, H_query, single, torch.device("cpu"), return_objective)
        out = predictions.to(device=device, dtype=dtype)
        if not return_objective:
            return out[0] if single else out
        objective = objective.to(device=device, dtype=dtype)
        return (out[0], objective[0]) if single else (out, objective)

    def _predict(self, H: Tensor, y: Tensor, H_query: Tensor | None, single: bool, solve_on: torch.device,
                 return_objective: bool) -> tuple[Tensor, Tensor | None]:
        """Predictions (B, m) and (``return_objective``) objectives (B,) in float64 on ``solve_on``
        (diffcp runs on the CPU)."""
        H64, y64 = H.to(solve_on, torch.float64), y.to(solve_on, torch.float64)
        n = H.shape[1]
        whitened = [self._whiten(H64[b], None if single else b) for b in range(H.shape[0])]
        U_prime = torch.stack([self._rows(U, S_values, n) for _, U, S_values, _ in whitened])
        masks = self._patterns(U_prime)
        if self.solver == "torch":
            S, T, alpha = self._solve_episodes(U_prime, y64, masks)
        else:
            S, T = self._solve(U_prime[0], y64[0], masks[0])
            S, T, alpha = S[None], T[None], None

        def network(rows: Tensor, patterns: Tensor | None = None) -> Tensor:
            """sum_j (u' s_j)_+ - (u' t_j)_+ per row; with ``patterns`` (the batch's own rows) differentiated
            through them: (u'_i s_j)_+ has the derivative M_ij, the sign the program's constraints give it. The
            same as relu's at every row off a neuron's hyperplane; on it (an active constraint, u'_i s_j = 0
            to rounding) relu's derivative was 0 or 1 by the sign of the rounding, which split the gradient of
            duplicate samples unevenly."""
            Z_S, Z_T = rows @ S, rows @ T
            value = torch.relu(Z_S).sum(-1) - torch.relu(Z_T).sum(-1)
            if patterns is None:
                return value
            linear = (patterns * (Z_S - Z_T)).sum(-1)
            return value.detach() + (linear - linear.detach())

        if H_query is None:
            predictions = network(U_prime, masks)
        else:
            query = H_query.to(solve_on, torch.float64)
            predictions = network(torch.stack([
                self._rows((query[b] - mean) @ V / S_values, S_values, n)
                for b, (mean, _, S_values, V) in enumerate(whitened)]))
        if not return_objective:
            return predictions, None
        fitted = predictions if H_query is None else network(U_prime, masks)
        penalty = torch.linalg.norm(S, dim=-2).sum(-1) + torch.linalg.norm(T, dim=-2).sum(-1)
        terms = loss_terms(self.loss, fitted, y64)
        if alpha is not None:
            # the hinge loss relu(1 - y f) with the derivative -alpha in y f, the solution's multipliers: on the
            # margin (y f = 1 to rounding) relu's derivative followed the rounding, which split the gradient of
            # duplicate samples unevenly, outside the one-sided derivatives (docs/benchmarks.md, session 27)
            margin = y64 * fitted
            terms = terms.detach() - alpha * (margin - margin.detach())
        return predictions, terms.sum(-1) + self.beta.to(solve_on) * penalty

    @torch.no_grad()
    def freeze(self, H_train: Tensor, y_train: Tensor, solver: str = "clarabel") -> nn.Sequential:
        """The network fitted on (H_train, y_train) with this block's gates and beta, as a
        plain torch module (``Sequential(Linear, BatchNorm1d(eps=0), ReLU, Linear)``, eval
        mode: it predicts new data by the test-time map). Solved once with cvxpy directly
        (no cvxpylayers), so H_train may be much larger than a batch."""
        self._check(H_train, y_train, None)
        H64, y64 = H_train.to("cpu", torch.float64), y_train.to("cpu", torch.float64)
        mean, U, S, V = self._whiten(H64)
        U_prime = self._rows(U, S, H64.shape[0])
        # the distinct nonzero patterns, as an estimator given them solves: duplicates split a neuron between
        # identical groups in no particular way, which changes predictions away from the training data
        masks = arrangement_patterns(U_prime.numpy(), self._patterns(U_prime).numpy().T.astype(bool))
        solution = solve_convex_program(U_prime.numpy(), masks, y64.numpy(), float(self.beta), self.loss, solver,
                                        "ConvexBNReLU.freeze")
        whitening = Whitening(mean=mean.numpy(), U=U.numpy(), S=S.numpy(), V=V.numpy())
        if self.whitening == "spectral":
            whitening = whitening.spectral()
        return recover_network(whitening, solution.neurons, solution.signs).to(H_train.device)

    def extra_repr(self) -> str:
        learnable = isinstance(self.log_beta, nn.Parameter)
        return (f"{self.in_features}, beta={float(self.beta):.3g}, n_patterns={self.n_patterns}, "
                f"loss={self.loss!r}, learnable_beta={learnable}, solver={self.solver!r}, "
                f"whitening_rank={self.whitening_rank}, whitening={self.whitening!r}")
