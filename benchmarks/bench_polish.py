"""How often the block's polish holds (docs/math.md, section 9): ConvexBNReLU(solver="torch")
forward on random batches (H standard normal, y = sin(2 h_0) + h_1 h_2, signs of it for the
logistic and hinge losses), counting the batches whose active-set polish was kept (the block logs a
warning where it is refused: their gradients then rest on the interior-point solution). Run:
python benchmarks/bench_polish.py [--sizes 64x8x64 128x16x128] [--loss squared|logistic|hinge] [--batches 12] [--seed 100]
[--tol T] (the interior-point method's tolerance, solver_options["tol"]; default the block's). Also counts the
batches polished only after the interior-point method resumed.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from convexnorm.nn import ConvexBNReLU
from convexnorm.solvers import implicit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["64x8x64", "128x16x128"], help="n x d x P")
    parser.add_argument("--loss", default="squared", choices=["squared", "logistic", "hinge"])
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--seed", type=int, default=100, help="batch b uses seed + b")
    parser.add_argument("--tol", type=float, default=None, help="solver_options['tol'] (default: the block's)")
    args = parser.parse_args()
    refusals, resumed = [], []
    resume = implicit._resumed_polish

    def counted(problem, result, episodes, settings):
        resumed.append(len(episodes))
        return resume(problem, result, episodes, settings)

    implicit._resumed_polish = counted

    class Refusals(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "polish was refused" in record.getMessage():
                refusals.append(record)

    logging.getLogger("convexnorm").addHandler(Refusals())
    for size in args.sizes:
        n, d, P = (int(v) for v in size.split("x"))
        options = {} if args.tol is None else {"tol": args.tol}
        block = ConvexBNReLU(d, beta=0.05, n_patterns=P, loss=args.loss, solver="torch", solver_options=options)
        kept = []
        resumed.clear()
        start = time.perf_counter()
        for b in range(args.batches):
            generator = torch.Generator().manual_seed(args.seed + b)
            H = torch.randn(n, d, generator=generator, dtype=torch.float64)
            y = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2 % d]
            refusals.clear()
            with torch.no_grad():
                block(H, y if args.loss == "squared" else torch.where(y > 0, 1.0, -1.0).double())
            kept.append(not refusals)
        print(f"{size} {args.loss}: polish kept in {sum(kept)} of {len(kept)} batches "
              f"({sum(resumed)} after resuming; {time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
