r"""Energies of unnormalized models: the sign convention, input checks, and log Z on a grid.

An energy is a callable mapping a batch ``(n, *event)`` to :math:`f(x)` of shape ``(n,)``, the
log unnormalised density (higher = more likely); ``energy_sign="energy"`` accepts networks that
return :math:`E = -f` instead. :func:`grid_log_partition` computes
:math:`\log Z = \log \int e^{f}` by the midpoint rule in 1-D or 2-D, for evaluating learned
models (Jiang et al., ICML 2023, arXiv:2306.07485).

Example::

    log_z = grid_log_partition(lambda x: -0.5 * (x**2).sum(1), (-10.0, 10.0), m=2000)
    # ≈ 0.5 * log(2π)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from optforge._core import (
    check_device,
    check_finite,
    check_floating,
    check_is_tensor,
    check_not_meta,
    check_positive_int,
)

__all__ = ["grid_log_partition"]

Energy = Callable[[Tensor], Tensor]
EnergySign = Literal["logdensity", "energy"]


def grid_log_partition(
    energy: Energy,
    lims: tuple[float, float] | list[tuple[float, float]],
    m: int = 300,
    *,
    dim: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    energy_sign: EnergySign = "logdensity",
    chunk_size: int | None = 8192,
) -> Tensor:
    """Exact-up-to-quadrature ``log Z = log ∫ exp f`` on a regular grid in 1-D or 2-D.

    Midpoint rule on ``m`` cells per axis (``logsumexp`` + log cell volume); use limits that hold
    essentially all the mass.

    Args:
        energy: callable mapping ``(n, d)`` points to ``f`` of shape ``(n,)``.
        lims: ``(low, high)`` used for every axis, or one pair per axis.
        m: cells per axis.
        dim: 1 or 2 (default: the number of pairs in ``lims``, or 1 for a single pair).
        device: device of the grid.
        dtype: dtype of the grid points (default ``torch.get_default_dtype()``, to match the
            energy's parameters); the log-sum-exp is accumulated in float64.
        energy_sign: ``"logdensity"`` or ``"energy"``.
        chunk_size: grid points per call of ``energy`` (``None``: all ``m^d`` in one call). The
            energy must act row by row (no batch statistics); chunks keep the activations of
            an MLP energy in cache (a 300 × 300 grid ~2.7× faster on CPU than one call) and
            bound its memory.

    Returns:
        The scalar ``log Z`` (no gradient).
    """
    check_positive_int("m", m)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    pairs = [tuple(lims)] if isinstance(lims[0], (int, float)) else [tuple(p) for p in lims]
    d = dim if dim is not None else len(pairs)
    if d not in (1, 2):
        raise ValueError(f"dim must be 1 or 2, got {d}")
    if len(pairs) == 1:
        pairs = pairs * d
    dtype = dtype or torch.get_default_dtype()
    axes, log_vol = [], 0.0
    for lo, hi in pairs:
        if not hi > lo:
            raise ValueError(f"lims must be (low, high) with high > low, got {(lo, hi)}")
        h = (hi - lo) / m
        axes.append(torch.linspace(lo + h / 2, hi - h / 2, m, device=device, dtype=dtype))
        log_vol += math.log(h)
    pts = torch.cartesian_prod(*axes).reshape(-1, d)
    chunks = [pts] if chunk_size is None else pts.split(chunk_size)
    with torch.no_grad():
        f = torch.cat([_eval_energy(energy, c, "grid") for c in chunks])
        f = _signed(_energy_sign(energy_sign), f)
    return torch.logsumexp(f.to(torch.float64), 0) + log_vol


def _energy_sign(energy_sign: str) -> float:
    if energy_sign not in ("logdensity", "energy"):
        raise ValueError(f"energy_sign must be 'logdensity' or 'energy', got {energy_sign!r}")
    return 1.0 if energy_sign == "logdensity" else -1.0


def _signed(sign: float, f: Tensor) -> Tensor:
    """``sign * f``; ``f`` itself for ``sign == 1`` (the same values bitwise, one op fewer)."""
    return f if sign == 1.0 else sign * f


def _check_batch(name: str, x: Tensor) -> None:
    check_is_tensor(name, x)
    check_not_meta(name, x)
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (n, *event), got {tuple(x.shape)}")
    check_floating(name, x)
    check_finite(name, x)


def _check_pair(x: Tensor, z: Tensor) -> None:
    _check_batch("z_noise", z)
    check_device("z_noise", z, x.device, owner="x_data")
    if x.shape[1:] != z.shape[1:]:
        raise ValueError(
            f"x_data and z_noise must have the same event shape, got {tuple(x.shape[1:])} "
            f"and {tuple(z.shape[1:])}"
        )


def _eval_energy(energy: Energy, x: Tensor, name: str) -> Tensor:
    f = energy(x)
    if not isinstance(f, Tensor):
        raise TypeError(f"energy must return a tensor, got {type(f).__name__}")
    if f.dim() == 2 and f.shape[1] == 1:
        f = f[:, 0]
    if f.shape != (x.shape[0],):
        raise ValueError(f"energy({name}) must return shape ({x.shape[0]},), got {tuple(f.shape)}")
    return check_finite(f"energy({name})", f)


def _log_weights(weights: Tensor | None, n: int, like: Tensor, name: str) -> Tensor:
    if weights is None:
        return torch.full((n,), -math.log(n), dtype=like.dtype, device=like.device)
    _check_weights(weights, n, name)
    return torch.log(weights.to(like.dtype))


def _weighted_mean(values: Tensor, weights: Tensor | None, name: str) -> Tensor:
    if weights is None:
        return values.mean()
    _check_weights(weights, values.shape[0], name)
    return (weights.to(values.dtype) * values).sum()


def _check_weights(
    weights: Tensor | None, n: int, name: str, device: torch.device | None = None
) -> None:
    """Probability weights: ``(n,)``, finite, non-negative and summing to 1."""
    if weights is None:
        return
    check_is_tensor(name, weights)
    check_not_meta(name, weights)
    if device is not None:
        check_device(name, weights, device, owner="the samples")
    check_floating(name, weights)
    if weights.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(weights.shape)}")
    if not torch.isfinite(weights).all() or bool((weights < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative")
    total = float(weights.double().sum())
    tol = math.sqrt(torch.finfo(weights.dtype).eps)
    if abs(total - 1.0) > tol:
        raise ValueError(
            f"{name} must sum to 1 (probability weights), got a sum of {total:.6g}; "
            "divide them by their sum"
        )
