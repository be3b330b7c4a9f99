"""ConvexBNReLU: forward and backward time per batch vs a direct cvxpy solve of the same program.

For each (batch n, features d, patterns P): the block's forward (cvxpylayers + diffcp)
and backward (implicit differentiation: diffcp's dense mode up to the block's DENSE_GRADIENT_SIZE, lsmr
beyond it, since session 28) with the default SCS and with Clarabel,
the native solver (solver="torch", KKT implicit differentiation), and the direct solve (cvxpy + Clarabel on constants, polished) of the same patterns;
ratios are to the direct solve in the same run. The first call (canonicalization) is
reported separately. Run: python benchmarks/bench_block.py
"""

from __future__ import annotations

import argparse
import platform
import time

import cvxpy
import cvxpylayers
import diffcp
import torch

from _timing import median_seconds  # benchmarks/ is on the path when run as a script
from convexnorm.convex.solve import solve_convex_program
from convexnorm.convex.whitening import u_prime_rows, whiten_tensor
from convexnorm.nn import ConvexBNReLU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["16x4x16", "32x6x32", "64x8x64"], help="n x d x P")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cvxpy {cvxpy.__version__}, cvxpylayers {cvxpylayers.__version__}, "
          f"diffcp {diffcp.__version__}, {platform.machine()}, {torch.get_num_threads()} threads")
    print(f"{'n x d x P':<10} {'solver':<9} {'compile s':>9} {'forward s':>9} {'backward s':>10} "
          f"{'direct s':>8} {'fwd/direct':>10} {'fwd+bwd/direct':>14}")
    for size in args.sizes:
        n, d, P = (int(v) for v in size.split("x"))
        generator = torch.Generator().manual_seed(0)
        H = torch.randn(n, d, generator=generator, dtype=torch.float64)
        y = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2 % d]
        block = ConvexBNReLU(d, beta=0.05, n_patterns=P)
        U_prime = u_prime_rows(whiten_tensor(H)[1], n)
        masks = block._patterns(U_prime).numpy().T.astype(bool)
        direct = median_seconds(lambda: solve_convex_program(U_prime.numpy(), masks, y.numpy(), 0.05, "squared",
                                                             "clarabel", "bench"), args.repeats)
        for label, solver, solver_options in (("SCS", "cvxpylayers", {}),
                                           ("Clarabel", "cvxpylayers", {"solve_method": "Clarabel"}),
                                           ("native", "torch", {})):
            block = ConvexBNReLU(d, beta=0.05, n_patterns=P, solver=solver, solver_options=solver_options)
            H_var = H.clone().requires_grad_(True)
            start = time.perf_counter()
            block(H_var, y)
            first = time.perf_counter() - start
            forward = median_seconds(lambda: block(H_var, y), args.repeats)
            backward = median_seconds(lambda: block(H_var, y).sum().backward(), args.repeats) - forward
            print(f"{size:<10} {label:<9} {first - forward:9.2f} {forward:9.3f} {backward:10.3f} {direct:8.3f} "
                  f"{forward / direct:10.2f} {(forward + backward) / direct:14.2f}", flush=True)


if __name__ == "__main__":
    main()
