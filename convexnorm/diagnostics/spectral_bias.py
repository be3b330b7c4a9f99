"""Gradient descent's spectral bias on a BN-ReLU network (docs/math.md, section 7).

A BN neuron sees w only through q = S V^T w, and a GD step moves q by -lr S^2 dL/dq: GD
fits the data's high-singular-value directions first. ``spectral_bias`` measures it: it
trains the two-layer BN-ReLU network by full-batch GD and records, for every left singular
vector u_i of the centered data, the fraction of the target's component that the network
has fitted, fit_i(t) = (u_i^T f_t) / (u_i^T y).
"""

from __future__ import annotations

import numpy as np
import torch

from convexnorm._validation import check_count, check_matrix
from convexnorm.convex.network import train_nonconvex
from convexnorm.convex.whitening import whiten


def spectral_bias(X, y, beta: float = 1e-4, width: int = 50, lr: float = 1e-2, steps: int = 2000,
                  record_every: int = 10, seed: int = 0, min_component: float = 1e-8) -> dict:
    """Train ``train_nonconvex(..., optimizer="sgd")`` (full-batch GD, squared loss) and return
    {"steps", "singular_values" (r,), "fit" (T, r): fit_i at each recorded step, "directions"
    (indices i with |u_i^T y| > min_component ||y||, the others are NaN in "fit"),
    "objective" (the GD history)}."""
    X = check_matrix(X, "spectral_bias")
    check_count(record_every, "spectral_bias", "record_every")
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (X.shape[0],):
        raise ValueError(f"spectral_bias: y must be (n,) with n = {X.shape[0]}, got {y.shape}")
    whitening = whiten(X)
    components = whitening.U.T @ y
    directions = np.flatnonzero(np.abs(components) > min_component * np.linalg.norm(y))
    Xt = torch.from_numpy(X)
    U = torch.from_numpy(whitening.U)
    recorded_steps, fits = [], []

    def record(step: int, module: torch.nn.Module) -> None:
        if step % record_every:
            return
        with torch.no_grad():
            f = module(Xt).reshape(-1)
        fit = np.full(len(components), np.nan)
        fit[directions] = (U.T @ f).numpy()[directions] / components[directions]
        recorded_steps.append(step)
        fits.append(fit)

    _, history = train_nonconvex(X, y, beta, width, optimizer="sgd", lr=lr, steps=steps, seed=seed, callback=record)
    return {"steps": recorded_steps, "singular_values": whitening.S, "fit": np.array(fits),
            "directions": directions, "objective": history.objective}


def first_step_fitted(result: dict, fraction: float = 0.5) -> np.ndarray:
    """Per singular direction, the first recorded step at which fit_i >= fraction (inf if never)."""
    fit = np.nan_to_num(result["fit"], nan=-np.inf)
    reached = fit >= fraction
    steps = np.asarray(result["steps"], dtype=float)
    return np.where(reached.any(axis=0), steps[reached.argmax(axis=0)], np.inf)
