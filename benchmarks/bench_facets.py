"""How many of a pattern's n orthant rows are facets of its cell, and how near the inner point they lie (issue 13).

For the benchmarks' data (n x r, the estimators' sampled patterns), each of --patterns patterns:
its facets by scipy's NNLS (row a is implied by the others where E_a a_a is a nonnegative combination
of theirs), and the largest rank among the facets when the rows are ordered by the angle to their
hyperplane from ``inner_points`` (solvers/candidate_rows.py), against the ROWS_PER_WIDTH k candidates
kept. Prints the counts and ranks: every facet must rank below the candidates' count.
Run: python benchmarks/bench_facets.py [--sizes 200x10 1000x10 300x5] [--patterns 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.optimize import nnls

from _data import regression_problem  # benchmarks/ is on the path when run as a script
from convexnorm.convex.patterns import arrangement_patterns
from convexnorm.convex.whitening import whiten
from convexnorm.solvers.candidate_rows import ROWS_PER_WIDTH, inner_points


def facets(A: np.ndarray, mask: np.ndarray) -> list[int]:
    G = np.where(mask, 1.0, -1.0)[:, None] * A
    return [a for a in range(len(A))
            if nnls(np.delete(G, a, 0).T, G[a], maxiter=5000)[1] > 1e-9 * np.linalg.norm(G[a])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["200x10", "1000x10", "300x5"], help="n x r")
    parser.add_argument("--patterns", type=int, default=20, help="patterns measured per size")
    parser.add_argument("--gates", type=int, default=1000, help="gates sampled (the estimators' patterns=)")
    args = parser.parse_args()
    print(f"{'n x r':>8} {'k':>3} {'kept':>5} {'facets min/mean/max':>20} {'largest facet rank':>19} {'s':>6}")
    for size in args.sizes:
        n, r = (int(v) for v in size.split("x"))
        X, _ = regression_problem(n, r)
        U = whiten(X).U_prime
        patterns = arrangement_patterns(U, args.gates, seed=0)[: args.patterns]
        start = time.perf_counter()
        points = inner_points(torch.tensor(U)[None], torch.tensor(patterns.T, dtype=torch.float64)[None])[0].numpy()
        unit = U / np.linalg.norm(U, axis=1, keepdims=True)
        counts, ranks = [], []
        for i, mask in enumerate(patterns):
            found = facets(U, mask)
            rank = np.argsort(np.argsort(np.abs(unit @ points[i])))
            counts.append(len(found))
            ranks.append(int(rank[found].max()))
        k = U.shape[1]
        kept = min(n, ROWS_PER_WIDTH * k)
        print(f"{size:>8} {k:3d} {kept:5d} {min(counts):6d} {np.mean(counts):6.1f} {max(counts):6d} "
              f"{max(ranks):19d} {time.perf_counter() - start:6.1f}", flush=True)


if __name__ == "__main__":
    main()
