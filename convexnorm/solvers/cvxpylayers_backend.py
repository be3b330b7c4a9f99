"""The cvxpylayers backend: a batch of DPP programs solved through cvxpylayers (diffcp), with checks.

The program is canonicalized once (``compile_program`` is cached on the program
object) and every call only sets parameter values. Solves run on the CPU in
float64 (DIFFCP is a CPU solver); the result returns to the input's device and
dtype, and autograd follows the moves.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from typing import Any, Mapping, Sequence

import diffcp
import numpy as np
import torch
from cvxpylayers.torch import CvxpyLayer

from convexnorm.errors import SolverError
from convexnorm.programs import NormalizationProgram

logger = logging.getLogger("convexnorm")

#: SCS reports failures as errors (Clarabel inside diffcp does not, so its
#: solutions rely on the optimality check below); tolerances per solve method.
SOLVE_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "SCS": {"eps_abs": 1e-10, "eps_rel": 1e-10, "max_iters": 100_000},
    "Clarabel": {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12},
}
#: lsmr gives adjoint gradients accurate to ~1e-8 where diffcp's default lsqr is off by ~1e-6 (the normalization
#: programs); diffcp's other modes: "dense" (a dense factorization of the derivative's system, exact to rounding).
DEFAULT_GRADIENT_MODE = "lsmr"
#: Programs are solved in units of a power of this (``program_units``): powers of two are exact in floating point,
#: and a base of 16 keeps the groups of one batch of normalization programs in few calls ...
PROGRAM_UNIT_BASE = 16.0
#: ... and powers of it at most this far from 1 (16^250 is about 1e301: the unit stays a normal float).
PROGRAM_UNIT_POWERS = 250
#: Largest accepted optimality error: relative duality gap / infeasibility for
#: programs with a certificate, scaled constraint violation otherwise.
CHECK_TOL = 1e-8
_BACKWARD_ONLY_KEYS = ("mode", "n_jobs_backward")
# cvxpylayers 1.2.0 calls np.array on torch tensors in its diffcp glue (forward and
# backward), which numpy 2 answers with this DeprecationWarning on every solve.
_NUMPY_COPY_NOISE = "__array__ implementation doesn't accept a copy keyword"
warnings.filterwarnings("ignore", message=_NUMPY_COPY_NOISE, category=DeprecationWarning)


@functools.lru_cache(maxsize=256)
def compile_program(program: Any) -> CvxpyLayer:
    """Canonicalize a program (anything with ``problem``, ``parameters`` and ``variables``)
    once; later calls with the same program object return the same CvxpyLayer."""
    logger.debug("canonicalizing %s", type(program).__name__)
    return CvxpyLayer(program.problem, parameters=list(program.parameters), variables=list(program.variables))


def program_units(size: torch.Tensor) -> torch.Tensor:
    """The power of PROGRAM_UNIT_BASE nearest each entry of ``size``, at most PROGRAM_UNIT_POWERS away from 1 (1
    where size is 0, inf or NaN): the unit in which to solve a program whose data and solution have that size.
    diffcp's tolerances are absolute (SCS's eps_abs, lsmr's atol): in the data's own units its solutions and
    adjoint gradients lost accuracy with their size (docs/benchmarks.md, sessions 27 and 28); division by a power
    of two is exact."""
    powers = (torch.log(size) / math.log(PROGRAM_UNIT_BASE)).round().nan_to_num(0.0, posinf=0.0, neginf=0.0)
    return PROGRAM_UNIT_BASE ** powers.clamp(-PROGRAM_UNIT_POWERS, PROGRAM_UNIT_POWERS)


def solver_arguments(solver_options: Mapping[str, Any] | None, gradient_mode: str = DEFAULT_GRADIENT_MODE
                     ) -> dict[str, Any]:
    """diffcp arguments: the user's, on top of tight defaults for the chosen solve method and ``gradient_mode``."""
    user = dict(solver_options or {})
    method = user.get("solve_method", "SCS")
    return {"solve_method": method, "mode": gradient_mode, **SOLVE_METHOD_DEFAULTS.get(method, {}), **user}


def call_program(
    program: Any,
    parameters: Sequence[torch.Tensor],
    *,
    owner: str,
    solver_options: Mapping[str, Any] | None = None,
    gradient_mode: str = DEFAULT_GRADIENT_MODE,
) -> tuple[torch.Tensor, ...]:
    """Solve a (batch of) program(s) through its compiled CvxpyLayer: float64 CPU tensors
    in and out, differentiable (diffcp's ``gradient_mode`` unless solver_options name a "mode"). Raises
    SolverError (naming ``owner``) when the solver fails, reports an inaccurate status or returns non-finite
    values."""
    layer = compile_program(program)
    args = solver_arguments(solver_options, gradient_mode)
    if not (torch.is_grad_enabled() and any(p.requires_grad for p in parameters)):
        for key in _BACKWARD_ONLY_KEYS:
            args.pop(key, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=_NUMPY_COPY_NOISE, category=DeprecationWarning)
        try:
            values = layer(*parameters, solver_args=args)
        except diffcp.SolverError as error:
            raise SolverError(f"{owner}: the program was not solved ({error})") from error
    for warning in caught:
        if "Inaccurate" in str(warning.message):
            raise SolverError(
                f"{owner}: solver status 'solved/inaccurate' "
                "(raise max_iters or loosen eps_abs/eps_rel in solver_options)"
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not all(torch.isfinite(v).all() for v in values):
        raise SolverError(f"{owner}: the solver returned non-finite values")
    return values


def _constraint_violation(program: NormalizationProgram, x: np.ndarray, values: list[np.ndarray]) -> np.ndarray:
    """Per-group largest constraint violation, scaled by 1 + max|x|, evaluated by cvxpy."""
    errors = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        program.x.value = x[i]
        for variable, value in zip(program.variables, values):
            variable.value = value[i]
        worst = max((float(np.max(c.violation(), initial=0.0)) for c in program.problem.constraints), default=0.0)
        errors[i] = worst / (1.0 + float(np.abs(x[i]).max()))
    return errors


def solve_program(
    program: NormalizationProgram,
    groups: torch.Tensor,
    *,
    owner: str,
    solver_options: Mapping[str, Any] | None = None,
    tol: float = CHECK_TOL,
) -> torch.Tensor:
    """z*(x) for every row x of ``groups`` (shape (G, n)), in one batched cvxpylayers call.

    Besides the failures of ``call_program``, raises SolverError when the solution's
    optimality error (certificate or constraint violation) exceeds ``tol``.
    """
    x = groups.to(device="cpu", dtype=torch.float64)
    values = call_program(program, [x], owner=owner, solver_options=solver_options)
    detached = [v.detach() for v in values]
    if program.certificate is not None:
        errors = program.certificate(x.detach(), *detached).numpy()
    else:
        errors = _constraint_violation(program, x.detach().numpy(), [v.numpy() for v in detached])
    worst = int(np.argmax(errors))
    if errors[worst] > tol:
        raise SolverError(
            f"{owner}: inaccurate solve, optimality error {errors[worst]:.2e} > {tol:.0e} "
            f"in group {worst}, although the solver reported no failure; tighten solver_options"
        )
    return values[0].to(device=groups.device, dtype=groups.dtype)
