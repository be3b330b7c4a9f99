"""ConvexBNReLU(solver="torch") forward + backward against the ordinary head it replaces (issue 13).

For each n x d x P: the block (batched interior-point forward, active-set implicit backward)
on a new batch, against Sequential(Linear(d, P), BatchNorm1d(P), ReLU, Linear(P, 1)) forward +
backward on the same batch, timed in the same run; then B episodes of one size in one call
against one episode. Medians of --repeats rounds, the two sides of each ratio alternating within a
round (``alternating_medians``: the block once, the head's median of 50 steps; the batch once, one
episode once). ``--head-threads 1`` times the ordinary head on
one thread, like the block's solver by default (``--threads auto``: the solver's threads chosen per
iteration, one or all cores; under load torch's default threads collapse and the ratio then measures
that). ``--workers 1 2 auto``: the episodes row once per number of episode workers
(solver_options["workers"]: the episodes split over that many threads; default auto, the block's own
default, one per core). ``--loss logistic|hinge``:
both on the labels sign(y), the head with the same loss. ``--device cuda``: block and head on a GPU
(each step synchronized before its time is read).
Run: python benchmarks/bench_block_head.py [--head-threads 1] [--workers 1 auto] [--threads auto] [--loss squared]
[--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import torch
from torch import nn

from _timing import alternating_medians, synchronized  # benchmarks/ is on the path when run as a script
from convexnorm.nn import ConvexBNReLU
from convexnorm.solvers.threads import intra_op_threads


def data(B: int, n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    H = torch.randn(B, n, d, generator=generator, dtype=torch.float64)
    return H, torch.sin(2 * H[..., 0]) + H[..., 1] * H[..., 2 % d]


def block_step(block: ConvexBNReLU, H: torch.Tensor, y: torch.Tensor) -> None:
    H = H.clone().requires_grad_(True)
    block(H, y).sum().backward()
    synchronized(H.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["32x6x32", "64x8x64", "128x16x128"], help="n x d x P")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--episode-size", default="64x8x64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--head-threads", type=int, default=None, help="torch threads of the ordinary head")
    parser.add_argument("--loss", choices=["squared", "logistic", "hinge"], default="squared")
    parser.add_argument("--workers", type=lambda v: v if v == "auto" else int(v), nargs="+", default=["auto"],
                        help="episode workers of the episodes row, integers or auto (the block's default)")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"), help="cpu or cuda")
    parser.add_argument("--threads", default=None,
                        help="the block's solver_options['threads'], an integer or auto (default: the block's, 1)")
    args = parser.parse_args()
    from convexnorm.solvers.threads import chunk_workers  # here: bench_ab.py imports this module against older trees
    device = args.device
    margin = args.loss != "squared"

    def targets(y: torch.Tensor) -> torch.Tensor:
        return torch.where(y > 0, 1.0, -1.0).double() if margin else y

    def head_loss(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if args.loss == "hinge":
            return torch.relu(1 - y * f).sum()
        if args.loss == "logistic":
            return nn.functional.softplus(-y * f).sum()
        return ((f - y) ** 2).sum()

    head_threads = args.head_threads or torch.get_num_threads()
    options = {} if args.threads is None else {"threads": args.threads if args.threads == "auto" else int(args.threads)}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"torch {torch.__version__}, {where}, head on {head_threads} thread(s) "
          f"(the block's solver: threads {args.threads or 'default, 1'}), {args.loss} loss")
    print(f"{'n x d x P':<11} {'block s':>8} {'head ms':>8} {'block/head':>11}")
    for size in args.sizes:
        n, d, P = (int(v) for v in size.split("x"))
        H, y = (part.to(device) for part in data(1, n, d))
        y = targets(y)
        block = ConvexBNReLU(d, beta=0.05, n_patterns=P, loss=args.loss, solver="torch", solver_options=options
                             ).to(device)
        head = nn.Sequential(nn.Linear(d, P), nn.BatchNorm1d(P), nn.ReLU(), nn.Linear(P, 1)).double().to(device)

        def head_step() -> None:
            head.zero_grad()
            head_loss(head(H[0]).squeeze(1), y[0]).backward()
            synchronized(device)

        def timed_head() -> None:
            with intra_op_threads(args.head_threads):
                head_step()

        timed_head()
        seconds, base = alternating_medians([(lambda: block_step(block, H[0], y[0]), 1), (timed_head, 50)],
                                            args.repeats)
        print(f"{size:<11} {seconds:8.3f} {base * 1e3:8.3f} {seconds / base:11.0f}", flush=True)
    n, d, P = (int(v) for v in args.episode_size.split("x"))
    H, y = (part.to(device) for part in data(args.episodes, n, d))
    y = targets(y)
    block = ConvexBNReLU(d, beta=0.05, n_patterns=P, loss=args.loss, solver="torch", solver_options=options).to(device)
    for workers in args.workers:
        many_block = ConvexBNReLU(d, beta=0.05, n_patterns=P, loss=args.loss, solver="torch",
                                  solver_options={**options, "workers": workers}).to(device)
        many, one = alternating_medians([(lambda: block_step(many_block, H, y), 1),
                                         (lambda: block_step(block, H[:1], y[:1]), 1)], args.repeats)
        count = chunk_workers(workers, args.episodes, device)
        label = f"{count} worker(s)" + (" (auto)" if workers == "auto" else "")
        print(f"{args.episodes} episodes of {args.episode_size} in one call, {label}: {many:.3f} s, "
              f"one episode {one:.3f} s, ratio {many / one:.1f}x", flush=True)


if __name__ == "__main__":
    main()
