"""The interior-point method's achieved flop rate against the machine's matrix-multiply rate (issue 13).

Per iteration the method's dense linear algebra is (n samples, P patterns, k = r + 1, batch B):
the rows' weights into the group blocks A^T diag(w_j) A (2 * 2P n k^2), the Cholesky factors and
inverses of the 2P blocks of size k + 1 and of the P pattern blocks ((2P (k+1)^3 + P k^3) / 3 * 3),
F = M_i * (A R_i) (2 n P k^2), the n x n capacitance F F^T (2 n^2 P k, of which its lower block
triangle is computed: (b + 1) / 2b of it in b row blocks) and its Cholesky factor (n^3 / 3).
That count per iteration over the measured seconds per iteration is the achieved rate; the
reference is a torch matmul of the capacitance's shape, (n x P k) times its transpose, timed in
the same run with the same threads (1, the solver's default). The ratio says how far the method
is from its flop limit; the rest of the time is elementwise work and Python.

The second limit is the count of torch operations: each costs a fixed few microseconds of
dispatch and Python whatever its size. A first, untimed solve of each program counts its (aten)
operations per iteration (a TorchDispatchMode); the fixed cost of one is measured on a tiny
program (``--tiny``, 16 samples, 8 patterns: tensors of at most a few hundred entries) as its
seconds per iteration (best of five solves) over its operations per iteration. The operation floor of a program is its
count times that cost, its flop floor its flop count at the matmul rate; the last column is the
measured time per iteration over their sum (1: nothing but those two limits).

Run: python benchmarks/bench_flops.py [--sizes 128x16x128 1000x10x1000] [--batch 1]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import convexnorm as cn
from _data import regression_problem
from convexnorm.solvers.interior_point import InteriorPointSettings, interior_point
from convexnorm.solvers.newton import gram_row_blocks
from convexnorm.solvers.problem import ConvexBNProblem


def flops_per_iteration(B: int, n: int, k: int, P: int) -> float:
    groups = 2 * P
    blocks = groups * (k + 1) ** 3  # Cholesky, triangular inverse, products: about 3 x (size^3 / 3)
    row_blocks = gram_row_blocks(B, n, P * k)  # the capacitance's lower block triangle
    capacitance = 2 * n * n * P * k * (row_blocks + 1) / (2 * row_blocks)
    return B * (2 * groups * n * k * k + blocks + 2 * n * P * k * k + capacitance + n**3 / 3)


def matmul_rate(B: int, n: int, k: int, P: int, repeats: int = 5) -> float:
    F = torch.randn(B, n, P * k, dtype=torch.float64)
    torch.bmm(F, F.transpose(1, 2))
    start = time.perf_counter()
    for _ in range(repeats):
        torch.bmm(F, F.transpose(1, 2))
    seconds = (time.perf_counter() - start) / repeats
    return 2 * B * n * n * P * k / seconds


class _OperationCount(TorchDispatchMode):
    """Counts the torch operations run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def operations_per_iteration(problem: ConvexBNProblem) -> float:
    counter = _OperationCount()
    with counter:
        result = interior_point(problem, InteriorPointSettings(tol=1e-7))
    return counter.count / int(result.iterations.max())


def regression_program(size: str, batch: int) -> ConvexBNProblem:
    """The squared-loss program of ``regression_problem`` at n x r x patterns, ``batch`` copies."""
    n, r, gates = (int(v) for v in size.split("x"))
    X, y = regression_problem(n, r)
    U_prime = cn.whiten(X).U_prime
    patterns = cn.arrangement_patterns(U_prime, gates, seed=0)
    return ConvexBNProblem.from_arrays([(U_prime, patterns, y)] * batch, 0.1, "squared")


def seconds_per_iteration(problem: ConvexBNProblem, runs: int) -> tuple[float, int]:
    """The best of ``runs`` timed solves, per iteration, and the iterations."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        result = interior_point(problem, InteriorPointSettings(tol=1e-7))
        best = min(best, time.perf_counter() - start)
    iterations = int(result.iterations.max())
    return best / iterations, iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["64x8x64", "128x16x128", "1000x10x1000"],
                        help="n x r x patterns")
    parser.add_argument("--tiny", default="16x3x8", help="the program that measures an operation's fixed cost")
    parser.add_argument("--batch", type=int, default=1, help="programs solved together (same data)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.machine()}, 1 thread, batch {args.batch}")
    tiny = regression_program(args.tiny, args.batch)
    operations = operations_per_iteration(tiny)  # also the untimed first solve
    seconds, iterations = seconds_per_iteration(tiny, runs=5)
    per_operation = seconds / operations
    print(f"{args.tiny} (--tiny): {iterations} iterations of {operations:.0f} operations at {seconds:.4f} s "
          f"(best of 5): {per_operation * 1e6:.2f} us per operation")
    print(f"{'n x r x P':<14} {'iters':>5} {'s/iter':>8} {'GFlop/iter':>10} {'GFlop/s':>8} {'matmul GFlop/s':>14} "
          f"{'fraction':>8} {'ops/iter':>8} {'op floor s':>10} {'flop floor s':>12} {'s/iter / floors':>15}")
    for size in args.sizes:
        problem = regression_program(size, args.batch)
        operations = operations_per_iteration(problem)  # also the untimed first solve
        seconds, iterations = seconds_per_iteration(problem, runs=1)
        B, n, k = problem.A.shape
        work = flops_per_iteration(B, n, k, problem.patterns)
        reference = matmul_rate(B, n, k, problem.patterns)
        op_floor, flop_floor = operations * per_operation, work / reference
        print(f"{size:<14} {iterations:5d} {seconds:8.4f} {work / 1e9:10.3f} {work / seconds / 1e9:8.2f} "
              f"{reference / 1e9:14.2f} {work / seconds / reference:8.2f} {operations:8.0f} {op_floor:10.4f} "
              f"{flop_floor:12.4f} {seconds / (op_floor + flop_floor):15.2f}", flush=True)

if __name__ == "__main__":
    main()
