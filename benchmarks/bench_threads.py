"""The native solver's speed under load: torch's default intra-op threads, one thread and "auto"
(the estimators' default since session 24: chosen per iteration, convexnorm/solvers/threads.py),
with and without other processes busy on the cores (issue 12). Ratios are against Clarabel on the
same program in the same run (--no-clarabel: native seconds only).

    python benchmarks/bench_threads.py [--n 200] [--gates 100] [--busy 1 2] [--no-clarabel]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import torch

import convexnorm as cn
from _data import regression_problem


def _spin(stop) -> None:
    x = 0.0
    while not stop.is_set():
        x = (x + 1.0) % 7.0


def timed(fit) -> float:
    start = time.perf_counter()
    fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--gates", type=int, default=100)
    parser.add_argument("--busy", type=int, nargs="+", default=[2], help="busy processes during the loaded runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-clarabel", action="store_true", help="skip Clarabel (16 minutes at 1000 patterns)")
    args = parser.parse_args()
    X, y = regression_problem(args.n, args.d)
    settings = dict(beta=0.1, patterns=args.gates, random_state=0)
    default_threads = torch.get_num_threads()
    print(f"n={args.n}, d={args.d}, {args.gates} patterns; {os.cpu_count()} cores, torch default threads "
          f"{default_threads}; best of {args.repeats}")
    print(f"{'load':<12} {'threads':>7} {'native s':>9} {'clarabel s':>10} {'clarabel/native':>15}")
    for busy in (0, *args.busy):
        stop = multiprocessing.Event()
        workers = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(busy)]
        for worker in workers:
            worker.start()
        try:
            clarabel = float("nan") if args.no_clarabel else min(
                timed(lambda: cn.ConvexBNRegressor(**settings).fit(X, y)) for _ in range(args.repeats))
            for threads in (default_threads, 1, "auto"):
                options = {"threads": threads}
                native = min(timed(lambda: cn.ConvexBNRegressor(**settings, solver="torch",
                                                                solver_options=options).fit(X, y))
                             for _ in range(args.repeats))
                print(f"{f'{busy} busy':<12} {threads:>7} {native:9.2f} {clarabel:10.2f} {clarabel / native:15.1f}",
                      flush=True)
        finally:
            stop.set()
            for worker in workers:
                worker.join()


if __name__ == "__main__":
    main()
