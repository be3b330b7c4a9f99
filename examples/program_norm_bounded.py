"""A user-written normalization program inside a trained model.

``bounded_standardization`` adds one constraint to the standardization program of
``convexnorm.programs``: every normalized value stays in [-bound, bound]. The result
is no longer a closed form (it is a projection that redistributes the clipped mass
while keeping zero mean), yet ``ProgramNorm`` differentiates through it, so the MLP
below trains end to end. We compare it with the same MLP using BatchNorm1d.

Run: python examples/program_norm_bounded.py   (about a minute on 2 CPU cores)
"""

from __future__ import annotations

import math
import time

import cvxpy as cp
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from convexnorm.nn import BatchNorm1d, ProgramNorm

BOUND = 1.5


def bounded_standardization(n: int):
    """max x^T z  s.t.  1^T z = 0,  ||z||_2 <= sqrt(n),  |z_k| <= BOUND."""
    x = cp.Parameter(n)
    z = cp.Variable(n)
    constraints = [cp.sum(z) == 0, cp.norm(z, 2) <= math.sqrt(n), cp.abs(z) <= BOUND]
    return cp.Problem(cp.Maximize(x @ z), constraints), x, z


def train(norm: nn.Module, data, epochs: int = 4, batch_size: int = 128, seed: int = 0):
    x_train, x_test, y_train, y_test = data
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 16), norm, nn.ReLU(), nn.Linear(16, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x_train), generator=generator).split(batch_size):
            if len(batch) < 2:
                continue
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    elapsed = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).double().mean().item()
        hidden = model[1](model[0](x_test))
    return accuracy, elapsed, hidden


def main() -> None:
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    data = (torch.tensor(x_train), torch.tensor(x_test), torch.tensor(y_train), torch.tensor(y_test))
    data = (data[0].float(), data[1].float(), data[2], data[3])
    print(f"{'normalization':<34} {'test acc':>8} {'train s':>8} {'max |z|':>8}")
    for name, norm in (
        ("BatchNorm1d (convexnorm, native)", BatchNorm1d(16, affine=False, solver="torch", track_running_stats=False)),
        (f"ProgramNorm, |z| <= {BOUND}", ProgramNorm(bounded_standardization, 16, affine=False)),
    ):
        accuracy, elapsed, hidden = train(norm, data)
        print(f"{name:<34} {accuracy:8.3f} {elapsed:8.1f} {hidden.abs().max().item():8.3f}")


if __name__ == "__main__":
    main()
