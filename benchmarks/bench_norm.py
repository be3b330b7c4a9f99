"""Forward + backward time of BatchNorm2d: torch vs convexnorm native vs convexnorm cvxpylayers.

Ratios are to torch's BatchNorm2d measured in the same run (machines are noisy).
Run: python benchmarks/bench_norm.py [--sizes 8x16x8x8 32x64x16x16] [--dtype float64]
"""

from __future__ import annotations

import argparse
import platform

import cvxpy
import cvxpylayers
import diffcp
import torch

from _timing import median_seconds, synchronized  # benchmarks/ is on the path when run as a script
from convexnorm.nn import BatchNorm2d


def time_step(module: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one train-mode forward + backward (after one warm-up)."""

    def step() -> None:
        module(x.clone().requires_grad_(True)).square().sum().backward()
        synchronized(x.device)

    step()
    return median_seconds(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["8x16x8x8", "32x64x16x16"])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, cvxpy {cvxpy.__version__}, cvxpylayers {cvxpylayers.__version__}, "
          f"diffcp {diffcp.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, {args.dtype}, {args.device}")
    print(f"{'N x C x H x W':<14} {'torch ms':>10} {'native ms':>10} {'native/torch':>13} "
          f"{'cvxpylayers ms':>15} {'cvxpylayers/torch':>18}")
    for size in args.sizes:
        n, c, h, w = (int(v) for v in size.split("x"))
        x = torch.randn(n, c, h, w, dtype=dtype, device=args.device, generator=None)
        modules = {
            "torch": torch.nn.BatchNorm2d(c, dtype=dtype, device=args.device),
            "native": BatchNorm2d(c, dtype=dtype, device=args.device, solver="torch"),
            "cvxpylayers": BatchNorm2d(c, dtype=dtype, device=args.device),
        }
        repeats = {"torch": 50 * args.repeats, "native": 50 * args.repeats, "cvxpylayers": args.repeats}
        seconds = {name: time_step(m, x, repeats[name]) for name, m in modules.items()}
        base = seconds["torch"]
        print(f"{size:<14} {base * 1e3:10.3f} {seconds['native'] * 1e3:10.3f} {seconds['native'] / base:13.1f} "
              f"{seconds['cvxpylayers'] * 1e3:15.1f} {seconds['cvxpylayers'] / base:18.0f}")


if __name__ == "__main__":
    main()
