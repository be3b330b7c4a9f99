"""ConvexBNReLU(solver="cvxpylayers") gradients by diffcp mode against the polished solver="torch" ones.

For each n x d x P, beta and target scale: the gradient of a fixed weighted sum of the block's predictions
in H and y with solver="torch" (batched interior-point method, active-set polish and implicit backward),
checked against a central difference along one random direction (step 1e-6), and with solver="cvxpylayers"
in each of diffcp's modes "dense" and "lsmr": the relative difference ||g - g_torch|| / ||g_torch|| and
the seconds of forward + backward. ``--scales``: y (and beta with it, the same program in other units)
multiplied by each. The block's default mode is dense up to DENSE_GRADIENT_SIZE scalar variables and
constraints (the size column), lsmr beyond.
Run: python benchmarks/bench_block_accuracy.py [--sizes 24x4x12] [--betas 1e-3 0.05] [--loss squared]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import cvxpylayers
import diffcp
import torch

from convexnorm.nn import ConvexBNReLU
from convexnorm.nn.convex_bn_relu import DENSE_GRADIENT_SIZE, _program, _program_size


def gradients(block: ConvexBNReLU, H: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
              ) -> tuple[torch.Tensor, float]:
    """The gradient (H, y flattened together) of sum(weights * block(H, y)) and its seconds."""
    H_var, y_var = H.clone().requires_grad_(True), y.clone().requires_grad_(True)
    start = time.perf_counter()
    grad_H, grad_y = torch.autograd.grad((block(H_var, y_var) * weights).sum(), [H_var, y_var])
    return torch.cat([grad_H.flatten(), grad_y]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["12x3x6", "24x4x12", "32x6x24", "32x6x32"], help="n x d x P")
    parser.add_argument("--betas", nargs="+", type=float, default=[1e-3, 0.05])
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0])
    parser.add_argument("--loss", choices=["squared", "logistic", "hinge"], default="squared")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cvxpylayers {cvxpylayers.__version__}, diffcp {diffcp.__version__}, "
          f"{platform.machine()}, {torch.get_num_threads()} threads, {args.loss} loss; "
          f"default mode dense up to size {DENSE_GRADIENT_SIZE}")
    print(f"{'n x d x P':<10} {'size':>5} {'beta':>7} {'scale':>6} {'torch s':>7} {'vs cd':>8} "
          f"{'dense s':>7} {'dense err':>9} {'lsmr s':>7} {'lsmr err':>9}")
    for size in args.sizes:
        n, d, P = (int(v) for v in size.split("x"))
        generator = torch.Generator().manual_seed(args.seed)
        H = torch.randn(n, d, generator=generator, dtype=torch.float64)
        target = torch.sin(2 * H[:, 0]) + H[:, 1] * H[:, 2 % d]
        weights, direction = torch.randn(n, generator=generator, dtype=torch.float64), torch.randn(
            n * d + n, generator=generator, dtype=torch.float64)
        program_size = _program_size(_program(n, d + 1, P, args.loss))
        for beta in args.betas:
            for scale in args.scales:
                y = torch.where(target > 0, 1.0, -1.0).double() if args.loss != "squared" else scale * target
                scaled_beta = beta * (scale if args.loss == "squared" else 1.0)

                def block(solver: str, options: dict | None = None) -> ConvexBNReLU:
                    return ConvexBNReLU(d, beta=scaled_beta, n_patterns=P, loss=args.loss, seed=1, solver=solver,
                                        solver_options=options)

                reference, torch_seconds = gradients(block("torch"), H, y, weights)
                native = block("torch")
                step, dH, dy = 1e-6, direction[: n * d].view(n, d), direction[n * d:] * scale
                if args.loss != "squared":
                    dy = torch.zeros_like(dy)
                with torch.no_grad():
                    up, down = native(H + step * dH, y + step * dy), native(H - step * dH, y - step * dy)
                difference = float(((up - down) * weights).sum()) / (2 * step)
                slope = float((reference * torch.cat([dH.flatten(), dy])).sum())
                cells = []
                for mode in ("dense", "lsmr"):
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            grad, seconds = gradients(block("cvxpylayers", {"mode": mode}), H, y, weights)
                        error = float(torch.linalg.norm(grad - reference) / torch.linalg.norm(reference))
                        cells.append(f"{seconds:7.2f} {error:9.1e}")
                    except Exception as failure:  # a solver failure is a result here
                        cells.append(f"{'-':>7} {type(failure).__name__:>9}")
                deviation = abs(slope - difference) / max(abs(difference), 1e-300)
                print(f"{size:<10} {program_size:5d} {scaled_beta:7.0e} {scale:6.0e} {torch_seconds:7.2f} "
                      f"{deviation:8.1e} {cells[0]} {cells[1]}", flush=True)


if __name__ == "__main__":
    main()
