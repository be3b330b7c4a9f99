"""The block's forward + backward from two source trees, in alternating processes (issue 13).

On a machine whose speed drifts by tens of percent within a minute, one run of each version
says little; this alternates fresh processes of the two trees (say a commit checked out with
``git worktree add /tmp/before REV`` and the working tree) for ``--rounds`` rounds and prints
each round's best time per batch and the ratio of the medians. The batches are those of
bench_block_head.py (``data``, ``block_step``): ConvexBNReLU(d, beta=0.05, n_patterns=P,
solver="torch") on one episode of each size and on 32 episodes of 64x8x64 (``SIZES``).
Run: python benchmarks/bench_ab.py BEFORE_TREE AFTER_TREE [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = [("32x6x32", 1, 5), ("64x8x64", 1, 5), ("128x16x128", 1, 3), ("64x8x64", 32, 2)]


def child(tree: str) -> None:
    """One round in this process, convexnorm imported from ``tree``: one line of best times."""
    sys.path[:0] = [tree, str(Path(__file__).resolve().parent)]
    import convexnorm
    from bench_block_head import block_step, data
    from convexnorm.nn import ConvexBNReLU

    if not Path(convexnorm.__file__).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"convexnorm came from {convexnorm.__file__}, not from {tree}")
    best = []
    for size, B, repeats in SIZES:
        n, d, P = (int(v) for v in size.split("x"))
        H, y = data(B, n, d)
        block = ConvexBNReLU(d, beta=0.05, n_patterns=P, solver="torch")
        args = (H[0], y[0]) if B == 1 else (H, y)
        block_step(block, *args)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            block_step(block, *args)
            times.append(time.perf_counter() - start)
        best.append(min(times))
    print(" ".join(f"{t:.4f}" for t in best))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trees", nargs="*", help="BEFORE_TREE AFTER_TREE")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    if len(args.trees) != 2:
        parser.error("give two source trees: BEFORE_TREE AFTER_TREE")
    before, after = [], []
    for _ in range(args.rounds):
        for tree, rounds in zip(args.trees, (before, after)):
            out = subprocess.run([sys.executable, __file__, "--child", tree], check=True, capture_output=True,
                                 text=True).stdout.split()
            rounds.append([float(v) for v in out])
    print(f"{'batch':<24} {'before s (rounds)':<26} {'after s (rounds)':<26} after/before (medians)")
    for index, (size, B, _) in enumerate(SIZES):
        old, new = [r[index] for r in before], [r[index] for r in after]
        label = size if B == 1 else f"{B} episodes of {size}"
        print(f"{label:<24} {', '.join(f'{t:.3f}' for t in old):<26} {', '.join(f'{t:.3f}' for t in new):<26} "
              f"{statistics.median(new) / statistics.median(old):.2f}")


if __name__ == "__main__":
    main()
