"""How often the block's polish holds (docs/math.md, section 9): ConvexBNReLU(solver="torch")
forward on random batches (H standard normal, y = sin(2 h_0) + h_1 h_2, signs of it for the
logistic and hinge losses), counting the batches whose active-set polish was kept (the block logs a
warning where it is refused: their gradients then rest on the interior-point solution). Run:
python benchmarks/bench_polish.py [--sizes 64x8x64 128x16x128] [--loss squared|logistic|hinge] [--batches 12]
[--seed 100] [--tol T] [--beta 0.05] [--duplicates K] [--gradients] [--reference-tol T] (--tol: the interior-point
method's tolerance, solver_options["tol"]; default the block's; --duplicates K: the last K samples are copies of
the first K). Also counts the batches polished only after the interior-point method resumed, and names those
whose kept point had zero groups marginally above beta and was polished again with them joined
(implicit.ZERO_GROUP_DUAL_ROUNDING; the gradient checks' own forwards not counted), and per batch the guesses at
the active sets that the polish refused and the polish's time (``implicit.polish_episode``, resumptions included).
``--gradients``: on each batch also the directional derivatives of (query predictions . weights
+ 0.3 objective) in H, y (squared loss) and log beta against numerical derivatives (the closest of the
central differences at steps 1e-6, 1e-7 and 1e-8 and the one-sided Richardson extrapolations from steps 1e-4
and 1e-5: ``gradient_difference``), as tests/test_solvers.py checks them on a few batches: the largest
relative difference and the batches beyond 1e-5 (the issue's tolerance); H is left out where the sampled
patterns change within 1e-6 (the forward jumps there).
``--reference-tol T``: on each batch also the gradient of (query predictions . weights + 0.3 objective) in H, y
and log beta against that of the same block solved at solver_options["tol"] = T (100x tighter than the block's
default is a good reference): the largest difference relative to the reference's largest entry and the
batches beyond 1e-5. Unlike central differences of the forward, this sees a forward that is wrong in the same
way as its gradient around the batch (an active group left out: docs/benchmarks.md, session 26).
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from convexnorm.errors import SolverError
from convexnorm.nn import ConvexBNReLU
from convexnorm.solvers import implicit

#: The query rows, weights and directions of ``--gradients`` come from seed QUERY_SEED + seed + b: drawn from the
#: batch's own seed, the query rows would be its first rows, where the fitted network has kinks (rows on a
#: neuron's hyperplane).
QUERY_SEED = 10 ** 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["64x8x64", "128x16x128"], help="n x d x P")
    parser.add_argument("--loss", default="squared", choices=["squared", "logistic", "hinge"])
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--seed", type=int, default=100, help="batch b uses seed + b")
    parser.add_argument("--tol", type=float, default=None, help="solver_options['tol'] (default: the block's)")
    parser.add_argument("--beta", type=float, default=0.05, help="the block's regularization")
    parser.add_argument("--gradients", action="store_true", help="check gradients against numerical derivatives")
    parser.add_argument("--duplicates", type=int, default=0,
                        help="the last this many samples replaced by copies of the first (duplicate samples)")
    parser.add_argument("--reference-tol", type=float, default=None,
                        help="check gradients against those of solves at this solver_options['tol']")
    args = parser.parse_args()
    refusals, resumed = [], []
    resume = implicit._resumed_polish

    def counted(problem, result, episodes, settings):
        resumed.append(len(episodes))
        return resume(problem, result, episodes, settings)

    implicit._resumed_polish = counted
    guesses: list[bool] = []  # whether each guess at the active sets held (``implicit._polish``)
    polish_seconds = [0.0]  # in ``implicit.polish_episode``
    polish, polish_episode = implicit._polish, implicit.polish_episode

    def guessed(*args, **kwargs):
        found = polish(*args, **kwargs)
        guesses.append(found is not None)
        return found

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return polish_episode(*args, **kwargs)
        finally:
            polish_seconds[0] += time.perf_counter() - start

    implicit._polish, implicit.polish_episode = guessed, timed

    retried: list[logging.LogRecord] = []  # a kept point's zero groups marginally above beta, polished again

    class Refusals(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if "polish was refused" in message:
                refusals.append(record)
            elif message.startswith("polish: zero groups"):
                retried.append(record)

    logger = logging.getLogger("convexnorm")
    logger.addHandler(Refusals())
    logger.setLevel(logging.INFO)  # the second try's record is an info one
    for size in args.sizes:
        n, d, P = (int(v) for v in size.split("x"))
        options = {} if args.tol is None else {"tol": args.tol}
        block = ConvexBNReLU(d, beta=args.beta, n_patterns=P, loss=args.loss, solver="torch", solver_options=options,
                             learnable_beta=args.gradients or args.reference_tol is not None)
        if args.reference_tol is not None:
            reference = ConvexBNReLU(d, beta=args.beta, n_patterns=P, loss=args.loss, solver="torch",
                                     solver_options={"tol": args.reference_tol}, learnable_beta=True)
            reference.load_state_dict(block.state_dict())
        kept, differences, against_reference, second_tries, refused_guesses = [], [], [], [], []
        polish_time = 0.0
        resumed.clear()
        start = time.perf_counter()
        for b in range(args.batches):
            generator = torch.Generator().manual_seed(args.seed + b)
            H = torch.randn(n, d, generator=generator, dtype=torch.float64)
            y = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2 % d]
            if args.duplicates:
                H[n - args.duplicates:], y[n - args.duplicates:] = H[: args.duplicates], y[: args.duplicates]
            y = y if args.loss == "squared" else torch.where(y > 0, 1.0, -1.0).double()
            refusals.clear()
            retried.clear()
            guesses.clear()
            polish_seconds[0] = 0.0
            with torch.no_grad():
                block(H, y)
            kept.append(not refusals)
            refused_guesses.append(guesses.count(False))
            polish_time += polish_seconds[0]
            if retried:
                second_tries.append((args.seed + b, retried[0].getMessage().removeprefix("polish: ")))
            if args.gradients:  # its forwards' resumptions not counted
                count = len(resumed)
                generator = torch.Generator().manual_seed(QUERY_SEED + args.seed + b)
                differences.append(gradient_difference(block, H, y, generator))
                del resumed[count:]
            if args.reference_tol is not None:
                count = len(resumed)
                generator = torch.Generator().manual_seed(QUERY_SEED + args.seed + b)
                against_reference.append(reference_difference(block, reference, H, y, generator))
                del resumed[count:]
        refused = [args.seed + b for b, held in enumerate(kept) if not held]
        print(f"{size} {args.loss}: polish kept in {sum(kept)} of {len(kept)} batches "
              f"({sum(resumed)} after resuming; {time.perf_counter() - start:.1f} s; guesses refused "
              f"{sum(refused_guesses) / len(kept):.2f} per batch, the polish {1e3 * polish_time / len(kept):.1f} ms "
              f"per batch)"
              + (f"; refused at seed(s) {refused}" if refused else ""), flush=True)
        for seed, message in second_tries:
            print(f"  seed {seed}: the kept point's {message}", flush=True)
        if differences:
            largest = [difference for difference, _, _ in differences]
            print(f"  gradients against numerical derivatives: largest relative difference {max(largest):.1e}, "
                  f"{sum(difference > 1e-5 for difference in largest)} of {len(largest)} batches beyond 1e-5; "
                  f"against the sum of the terms' sizes {max(scaled for _, scaled, _ in differences):.1e} "
                  f"(H left out on {sum(jumps for _, _, jumps in differences)}, whose patterns change within the step)"
                  + "".join(f"; seed {args.seed + b}: {difference:.1e} ({scaled:.1e})"
                            for b, (difference, scaled, _) in enumerate(differences) if difference > 1e-5), flush=True)
        if against_reference:
            solved = [difference for difference in against_reference if difference == difference]
            print(f"  gradients against solves at tol {args.reference_tol:g}: largest relative difference "
                  f"{max(solved, default=float('nan')):.1e}, {sum(difference > 1e-5 for difference in solved)} of "
                  f"{len(solved)} batches beyond 1e-5 ({len(against_reference) - len(solved)} without a reference)"
                  + "".join(f"; seed {args.seed + b}: {difference:.1e}"
                            for b, difference in enumerate(against_reference) if difference > 1e-5), flush=True)


def reference_difference(block: ConvexBNReLU, reference: ConvexBNReLU, H: torch.Tensor, y: torch.Tensor,
                         generator: torch.Generator) -> float:
    """The largest difference between the gradients in H, log beta and y (squared loss: the margin losses'
    labels are not differentiable) of (query predictions . weights + 0.3 objective) under ``block`` and under
    ``reference`` (the same block, solved tighter: at 3x or 10x its tol where the interior-point method stops
    short of it), relative to the largest entry of the reference's; nan where no reference solve met its
    tolerance."""
    H_query = torch.randn(5, H.shape[1], generator=generator, dtype=H.dtype)
    weights = torch.randn(5, generator=generator, dtype=H.dtype)

    def gradient(module: ConvexBNReLU) -> torch.Tensor:
        H_var, y_var = H.clone().requires_grad_(True), y.clone().requires_grad_(module.loss == "squared")
        predictions, objective = module(H_var, y_var, H_query=H_query, return_objective=True)
        value = (predictions * weights).sum() + 0.3 * objective
        parts = torch.autograd.grad(value, [H_var, module.log_beta] + ([y_var] if y_var.requires_grad else []))
        return torch.cat([part.flatten() for part in parts])

    tol, expected = reference.solver_options["tol"], None
    try:
        for factor in (1, 3, 10):  # where float64's limit stops the method short of tol: the same solve looser
            reference.solver_options["tol"] = factor * tol
            try:
                expected = gradient(reference)
                break
            except SolverError:
                continue
    finally:
        reference.solver_options["tol"] = tol
    if expected is None:
        return float("nan")
    return float((gradient(block) - expected).abs().max() / expected.abs().max())


def gradient_difference(block: ConvexBNReLU, H: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                        ) -> tuple[float, float, bool]:
    """The largest relative difference (against max(|central difference|, 1e-3)) between the block's
    directional derivatives of (query predictions . weights + 0.3 objective) in H, y (squared loss:
    the margin losses' labels are not differentiable) and log beta and numerical derivatives, each the
    closest of the central differences at steps 1e-6, 1e-7 and 1e-8 (a kink of the solution map, an active set
    changing, within 1e-6 of the batch spoils the larger steps: on a 96x12x48 batch at beta 0.003, seed 205, one
    within 1e-7 on one side, where the central difference at 1e-8 agreed to 1.4e-7 and those at 1e-6 and 1e-7
    were 20% and 4% off; a polished forward is accurate to about 1e-15 relative, an unpolished one only to its
    gap, which the step 1e-8 amplifies most) and the Richardson extrapolations
    (10 D(1e-5) - D(1e-4)) / 9 of the forward and of the backward differences D (the forward is accurate
    to about 3e-11, which the small steps amplify, and beside a kink the side away from it is smooth but
    strongly curved: measured on an 80x10x80 batch, a second derivative of about 400 along H, where the
    central difference at 1e-7 was 1.7e-5 off and the backward extrapolation 1.8e-6), and whether the
    patterns change within 1e-6 along H (the forward jumps there: H then left out). Second, the largest
    difference against the sum of the terms' sizes, sum_i |g_i a_i| for the derivative g . a along a: where
    the terms cancel, the first measure divides the solves' rounding by a small number (measured on a 96x12x48
    logistic batch: a derivative of 0.0232 along H with terms of total size 337, off by 1.0e-6, 4.3e-5 of it
    and 3e-9 of the terms, where the central differences at 1e-6 and 1e-7 agreed to 4e-8)."""
    n, d = H.shape
    H_query = torch.randn(5, d, generator=generator, dtype=H.dtype)
    weights = torch.randn(5, generator=generator, dtype=H.dtype)
    along_H, along_y = torch.randn(n, d, generator=generator, dtype=H.dtype), torch.randn(n, generator=generator,
                                                                                          dtype=H.dtype)

    def value(H_: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
        predictions, objective = block(H_, y_, H_query=H_query, return_objective=True)
        return (predictions * weights).sum() + 0.3 * objective

    def with_log_beta(step: float) -> torch.Tensor:
        block.log_beta += step
        try:
            return value(H, y)
        finally:
            block.log_beta -= step

    def patterns(H_: torch.Tensor) -> torch.Tensor:
        _, U, S_values, _ = block._whiten(H_)
        return block._patterns(block._rows(U, S_values, n))

    H_var, y_var = H.clone().requires_grad_(True), y.clone().requires_grad_(True)
    base = value(H_var, y_var)
    grad_H, grad_y, grad_beta = torch.autograd.grad(base, [H_var, y_var, block.log_beta])
    center = base.detach()  # every move's value at step 0
    with torch.no_grad():
        jumps = not all(torch.equal(patterns(H + sign * 1e-6 * along_H), patterns(H)) for sign in (1, -1))
        moves = [] if jumps else [(grad_H * along_H, lambda h: value(H + h * along_H, y))]
        if block.loss == "squared":
            moves.append((grad_y * along_y, lambda h: value(H, y + h * along_y)))
        moves.append((grad_beta, with_log_beta))
        differences, scaled = [], []
        for terms, moved in moves:
            analytic = terms.sum()
            at = {h: moved(h) for h in (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, -1e-4, -1e-5, -1e-6, -1e-7, -1e-8)}
            numeric = [(at[h] - at[-h]) / (2 * h) for h in (1e-6, 1e-7, 1e-8)]
            for side in (1, -1):  # one-sided D(h) = g + c h + O(h^2): g = (10 D(h / 10) - D(h)) / 9
                one_sided = {h: (at[side * h] - center) / (side * h) for h in (1e-4, 1e-5)}
                numeric.append((10 * one_sided[1e-5] - one_sided[1e-4]) / 9)
            closest = min(abs(float(analytic - estimate)) for estimate in numeric)
            differences.append(closest / max(abs(float(numeric[0])), 1e-3))
            scaled.append(closest / max(float(terms.abs().sum()), 1e-3))
    return max(differences), max(scaled), jumps


if __name__ == "__main__":
    main()
