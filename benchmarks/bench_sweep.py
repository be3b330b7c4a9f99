"""The interior-point method's iterations and objectives on the block's 18-program sweep (issue 13).

The programs ConvexBNReLU(d, beta=0.05, n_patterns=P, solver="torch") solves on the batches of
bench_block_head.py (``data``): sizes 32x6x32, 64x8x64 and 128x16x128, seeds 0 and 1, the squared,
logistic and hinge losses (labels sign(y) for the margin losses), each solved alone with the
block's settings. Prints one line per program (iterations, objective, converged) and the total
iterations per loss; a change that should leave the method's path alone must leave them equal, one
that cuts iterations shows it here first. ``--save FILE`` writes the results as JSON, ``--compare
FILE`` prints each program's change of iterations and relative change of objective against such a
file (from another commit, say). Run: python benchmarks/bench_sweep.py [--save F | --compare F]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench_block_head import data  # noqa: E402 (benchmarks/ is on the path when run as a script)
from convexnorm.nn import ConvexBNReLU
from convexnorm.solvers.interior_point import interior_point
from convexnorm.solvers.problem import ConvexBNProblem

SIZES = ("32x6x32", "64x8x64", "128x16x128")
SEEDS = (0, 1)
LOSSES = ("squared", "logistic", "hinge")
BETA = 0.05


def sweep_programs():
    """(name, problem, settings) of each program, as the block builds them."""
    for size in SIZES:
        n, d, P = (int(v) for v in size.split("x"))
        for seed in SEEDS:
            H, y = data(1, n, d, seed)
            for loss in LOSSES:
                targets = torch.where(y > 0, 1.0, -1.0).double() if loss != "squared" else y
                block = ConvexBNReLU(d, beta=BETA, n_patterns=P, loss=loss, solver="torch")
                _, U, S, _ = block._whiten(H[0])
                U_prime = block._rows(U, S, n)[None]
                settings = block._native_settings()[0]
                problem = ConvexBNProblem(U_prime, block._patterns(U_prime), targets,
                                          torch.full((1,), BETA, dtype=torch.float64), loss)
                yield f"{size}/{seed}/{loss}", problem, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--save", type=Path, help="write the results to this JSON file")
    parser.add_argument("--compare", type=Path, help="compare with the results in this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    reference = json.loads(args.compare.read_text()) if args.compare else None
    results: dict[str, list] = {}
    start = time.perf_counter()
    print(f"{'program':<26} {'iters':>5} {'objective':>20} {'converged':>9}"
          + (f"  {'d iters':>7}  {'rel d objective':>16}" if reference else ""))
    for name, problem, settings in sweep_programs():
        result = interior_point(problem, settings)
        row = [int(result.iterations[0]), float(result.criteria.objective[0]), bool(result.converged[0])]
        results[name] = row
        line = f"{name:<26} {row[0]:5d} {row[1]:20.14f} {str(row[2]):>9}"
        if reference and name in reference:
            before = reference[name]
            line += f"  {row[0] - before[0]:+7d}  {abs(row[1] - before[1]) / abs(before[1]):16.1e}"
        print(line, flush=True)
    totals = {loss: sum(row[0] for name, row in results.items() if name.endswith(loss)) for loss in LOSSES}
    print("total iterations: " + ", ".join(f"{loss} {count}" for loss, count in totals.items())
          + f", all {sum(totals.values())} ({time.perf_counter() - start:.1f} s)")
    if args.save:
        args.save.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
