r"""GAMP-RIE: generalized approximate message passing with a rotation-invariant denoiser.

Learns ``S°`` from ``y = 𝒜(S°) + √Δ ξ`` (paper units; ``𝒜``, ``𝒜*`` are
:func:`~optforge.matrix.gamp_rie.sensing_forward` and its adjoint; ``α = n/d²``). Per iteration::

    V_new = Ĉ;  ω_new = 𝒜(Ŝ) − V_new·g_prev              # Onsager term
    (V, ω) ← (1−β)(V_new, ω_new) + β(V, ω)              # damping β
    g = (y − ω)/(Δ + V);  A = 2α·mean(g²)
    R = Ŝ + 𝒜*(g)/(A d);  Δ_eff = 1/(2A)
    Ŝ ← f°_RIE(R; Δ_eff);  Ĉ = 2·mmse°(Δ_eff)

Its state evolution is :func:`~optforge.matrix.gamp_rie.state_evolution`, whose fixed point is
the Bayes-optimal error.

Choices: the initial values follow the official notebook (``Ĉ = V = v_init = 10``,
``ω = 10·1``, damping from the first step); the initial ``Ŝ`` is the prior mean ``√κ I``
(``init="prior_sample"`` draws it from the prior, as the notebook does). In the noiseless case
Δ is floored at ``delta_floor = 1e-10`` inside the output channel and V is clamped at 1e-12.

Reference: A. Maillard, E. Troiani, S. Martin, F. Krzakala, L. Zdeborová, "Bayes-optimal
learning of an extensive-width neural network from quadratically many samples" (NeurIPS 2024,
arXiv 2408.03733); official code ``SPOC-group/ExtensiveWidthQuadraticSamples``.

Example:
    >>> import torch
    >>> from optforge.matrix import sample_quadratic_teacher, gamp_rie, bayes_optimal_mse
    >>> data = sample_quadratic_teacher(40, kappa=0.5, alpha=0.2,
    ...                                 generator=torch.Generator().manual_seed(0))
    >>> result = gamp_rie(data.X, data.y, kappa=0.5, S_true=data.S)
    >>> round(float(bayes_optimal_mse(0.2, 0.5)), 3)
    0.392
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from optforge._core import (
    check_finite,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from optforge.matrix.gamp_rie.rie import RIEDenoiser
from optforge.matrix.gamp_rie.sensing import sensing_adjoint, sensing_forward
from optforge.matrix.gamp_rie.spectrum import denoising_mmse
from optforge.matrix.quadratic_nets import teacher_width

__all__ = ["GampRieResult", "gamp_rie"]


@dataclass
class GampRieResult:
    """Output of :func:`gamp_rie`.

    Attributes:
        S_hat: Estimate of ``S°`` (paper units), ``(d, d)``.
        n_iter: Iterations run.
        converged: Whether the step ``‖Ŝ_{t+1} − Ŝ_t‖²_F/d`` fell below ``tol``.
        history: Per-iteration ``"step"``, ``"delta_eff"``, ``"c_hat"``, ``"change"`` and, when
            ``S_true`` was given, ``"mse"`` (``history["mse"][0]`` is the initial error).
    """

    S_hat: Tensor
    n_iter: int
    converged: bool
    history: dict[str, list[float]] = field(default_factory=dict)


def gamp_rie(
    X: Tensor,
    y: Tensor,
    kappa: float,
    delta: float = 0.0,
    *,
    max_iter: int = 100,
    damping: float = 0.5,
    tol: float = 1e-5,
    init: Literal["prior_mean", "prior_sample"] = "prior_mean",
    S_true: Tensor | None = None,
    generator: torch.Generator | None = None,
    delta_floor: float = 1e-10,
    v_init: float = 10.0,
) -> GampRieResult:
    """GAMP with the RIE denoiser for ``y = ⟨(xxᵀ − I)/√d, S°⟩ + √Δ ξ`` (paper units).

    Args:
        X: Inputs ``(n, d)`` (float64 recommended).
        y: Labels ``(n,)`` (centred: see :class:`~optforge.matrix.QuadTeacherData`).
        kappa: Width ratio κ of the Wishart prior.
        delta: Label-noise variance Δ ≥ 0 (paper units).
        max_iter: Maximum number of iterations.
        damping: β ∈ [0, 1) applied to (V, ω).
        tol: Stop when ``‖Ŝ_{t+1} − Ŝ_t‖²_F/d < tol``.
        init: ``"prior_mean"`` (``√κ I``) or ``"prior_sample"`` (a draw ``WᵀW/√(md)``).
        S_true: If given, the per-iteration ``mse`` is recorded.
        generator: Randomness for ``init="prior_sample"``.
        delta_floor: Lower bound on Δ inside the output channel (noiseless case).
        v_init: Initial ``Ĉ``, ``V`` and ``ω`` entries (the notebook's 10).

    Returns:
        A :class:`GampRieResult`.

    Raises:
        ValueError: Bad shapes, non-finite inputs, bad hyper-parameters, or NaN during the run.
    """
    if not isinstance(X, Tensor) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D tensor (n, d), got {getattr(X, 'shape', type(X))}")
    if not isinstance(y, Tensor) or y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be a 1-D tensor with X.shape[0]={X.shape[0]} entries")
    if X.is_complex() or y.is_complex():
        raise ValueError("X and y must be real")
    check_finite("X", X)
    check_finite("y", y)
    n, d = X.shape
    teacher_width(d, kappa)  # validates kappa and d
    check_nonnegative("delta", delta)
    check_positive_int("max_iter", max_iter)
    check_in_range("damping", damping, 0.0, 1.0, high_inclusive=False)
    check_positive("tol", tol)
    check_positive("delta_floor", delta_floor)
    check_positive("v_init", v_init)
    y = y.to(X.dtype)
    alpha = n / d**2
    denoiser = RIEDenoiser(kappa, units="paper")
    if init == "prior_mean":
        S_hat = math.sqrt(kappa) * torch.eye(d, dtype=X.dtype, device=X.device)
    elif init == "prior_sample":
        m = teacher_width(d, kappa)
        W0 = torch.randn(m, d, generator=generator, dtype=torch.float64).to(X)
        S_hat = W0.T @ W0 / math.sqrt(m * d)
    else:
        raise ValueError(f"init must be 'prior_mean' or 'prior_sample', got {init!r}")
    if S_true is not None and S_true.shape != (d, d):
        raise ValueError(f"S_true must have shape ({d}, {d}), got {tuple(S_true.shape)}")
    delta_out = max(float(delta), delta_floor)
    hist: dict[str, list[float]] = {"step": [], "delta_eff": [], "c_hat": [], "change": []}
    if S_true is not None:
        hist["mse"] = [float(((S_hat - S_true) ** 2).sum() / d)]
    c_hat = V = float(v_init)
    omega = torch.full((n,), float(v_init), dtype=X.dtype, device=X.device)
    g_prev = (y - omega) / (delta_out + V)
    converged = False
    t = 0
    for t in range(1, max_iter + 1):
        V_new = c_hat
        omega_new = sensing_forward(X, S_hat) - V_new * g_prev
        V = max((1 - damping) * V_new + damping * V, 1e-12)
        omega = (1 - damping) * omega_new + damping * omega
        g = (y - omega) / (delta_out + V)
        A = 2 * alpha * float((g * g).mean())
        if not math.isfinite(A) or A <= 0:
            raise ValueError(f"GAMP-RIE produced a non-finite/zero precision at iteration {t}")
        R = S_hat + sensing_adjoint(X, g) / (A * d)
        delta_eff = 1.0 / (2 * A)
        S_new = denoiser(R, delta_eff)
        if not torch.isfinite(S_new).all():
            raise ValueError(f"GAMP-RIE produced NaN/inf at iteration {t}")
        c_hat = 2 * denoising_mmse(delta_eff, kappa, "paper")
        change = float(((S_new - S_hat) ** 2).sum() / d)
        S_hat, g_prev = S_new, g
        hist["step"].append(float(t))
        hist["delta_eff"].append(delta_eff)
        hist["c_hat"].append(c_hat)
        hist["change"].append(change)
        if S_true is not None:
            hist["mse"].append(float(((S_hat - S_true) ** 2).sum() / d))
        if change < tol:
            converged = True
            break
    return GampRieResult(S_hat=S_hat, n_iter=t, converged=converged, history=hist)
