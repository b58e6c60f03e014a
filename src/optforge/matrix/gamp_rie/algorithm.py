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

**Why it stops** (``result.stop_reason``):

* ``"tol"``: the step ``‖Ŝ_{t+1} − Ŝ_t‖²_F/d`` fell below ``tol`` (the notebook's rule);
* ``"plateau"``: GAMP's own error estimate ``ê_t = Ĉ_t/2 = mmse°(Δ_eff)`` has not improved by
  the fraction ``plateau_rtol`` in the last ``patience`` iterations (checked from iteration
  ``2·patience`` on). At finite d the iterate does not settle but fluctuates around its fixed
  point: at d = 100, α = 0.2 the step stays between 1e-5 and 5e-4 for hundreds of iterations,
  so the step rule alone ends at the cap, although the error stopped improving after ~40;
* ``"max_iter"``: the cap was reached first;
* ``"diverged"``: the divergence guard fired on every attempt (see below).

``converged`` is true for ``"tol"`` and ``"plateau"``.

**Divergence guard** (``guard=True``). Iteration t is declared diverging when

* ``ê_t < ½·e_SE`` with ``e_SE`` = :func:`~optforge.matrix.gamp_rie.bayes_optimal_mse`
  (α, κ, Δ): GAMP claims an error below half the Bayes-optimal one, which no estimator reaches.
  This is how the instability shows: the residuals ``y − ω`` outgrow ``Δ + V``, so
  ``A = 2α·mean(g²)`` explodes and Δ_eff collapses; or
* ``q_t = ‖Ŝ_t − √κI‖²_F/d > 4``: with ``‖S° − √κI‖²_F/d ≈ 1`` (the prior's spread), the
  triangle inequality gives ``‖Ŝ_t − S°‖/√d > 2 − 1``, an error above the prior mean's 1; or
* after the first ``patience`` iterations, ``|q_t + ê_t − 1| > 0.5``. A posterior mean
  ``Ŝ = E[S°|y]`` satisfies the Nishimori identity
  ``E‖Ŝ − √κI‖² = E‖S° − √κI‖² − E‖Ŝ − S°‖²``, i.e. ``q = 1 − ê``, and state evolution
  predicts it at every iteration; the notebook's cautious start (``Ĉ = V = 10``) violates it
  by up to ~0.45 in the first few iterations, a diverging run by 1 or more.

The run then restarts from the same initial point with more damping, ``β ← (1 + β)/2``, at most
``max_restarts`` times. If the last attempt diverges too, a :class:`GampRieDivergenceWarning`
is issued and the best iterate is returned: among the prior mean (``ê = 1``) and the iterates
that pass the Nishimori check closely, ``|q_t + ê_t − 1| ≤ 0.1``, after the first
``patience`` iterations, the one with the lowest ``ê_t``. The measured behaviour
at small α is on the docs page.

Reference: A. Maillard, E. Troiani, S. Martin, F. Krzakala, L. Zdeborová, "Bayes-optimal
learning of an extensive-width neural network from quadratically many samples" (NeurIPS 2024,
arXiv 2408.03733); official code ``SPOC-group/ExtensiveWidthQuadraticSamples``.

Example:
    >>> import torch
    >>> from optforge.matrix import sample_quadratic_teacher, gamp_rie, bayes_optimal_mse
    >>> data = sample_quadratic_teacher(40, kappa=0.5, alpha=0.2,
    ...                                 generator=torch.Generator().manual_seed(0))
    >>> result = gamp_rie(data.X, data.y, kappa=0.5, S_true=data.S)
    >>> result.stop_reason in ("tol", "plateau", "max_iter", "diverged")
    True
    >>> round(float(bayes_optimal_mse(0.2, 0.5)), 3)
    0.392
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import (
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_tensor,
)
from optforge.matrix.gamp_rie.rie import RIEDenoiser
from optforge.matrix.gamp_rie.sensing import sensing_adjoint, sensing_forward
from optforge.matrix.gamp_rie.spectrum import denoising_mmse
from optforge.matrix.gamp_rie.state_evolution import bayes_optimal_mse
from optforge.matrix.quadratic_nets import teacher_width

__all__ = ["GampRieDivergenceWarning", "GampRieResult", "gamp_rie"]

StopReason = Literal["tol", "plateau", "max_iter", "diverged"]

_PRIOR_DISTANCE_MAX = 4.0  # q_t above this: error provably above the prior mean's (module doc)
_NISHIMORI_TOL = 0.1  # |q_t + ê_t − 1| of an iterate eligible as the fallback "best iterate"
_NISHIMORI_MAX = 0.5  # |q_t + ê_t − 1| above this after the burn-in: diverged (module doc)


class GampRieDivergenceWarning(RuntimeWarning):
    """GAMP-RIE diverged on every attempt; the best iterate (see :func:`gamp_rie`) is returned."""


@dataclass
class GampRieResult:
    """Output of :func:`gamp_rie`.

    Attributes:
        S_hat: Estimate of ``S°`` (paper units), ``(d, d)``.
        n_iter: Iterations of the returned attempt.
        converged: ``stop_reason`` is ``"tol"`` or ``"plateau"``.
        history: Per-iteration values of the returned attempt: ``"step"``, ``"delta_eff"``,
            ``"c_hat"`` (``Ĉ = 2ê``), ``"change"`` (``‖Ŝ_{t+1} − Ŝ_t‖²_F/d``),
            ``"prior_distance"`` (``q_t = ‖Ŝ_t − √κI‖²_F/d``) and, when ``S_true`` was given,
            ``"mse"`` (``history["mse"][0]`` is the initial error).
        stop_reason: ``"tol"``, ``"plateau"``, ``"max_iter"`` or ``"diverged"`` (module doc).
        error_estimate: GAMP's estimate of ``‖Ŝ − S°‖²_F/d`` for ``S_hat`` (``ê = Ĉ/2``; 1 when
            the fallback is the prior mean).
        damping: The damping of the returned attempt.
        restarts: How many times the divergence guard restarted the run.
        attempts: One entry per attempt: ``damping``, ``n_iter``, ``stop_reason``.
    """

    S_hat: Tensor
    n_iter: int
    converged: bool
    history: dict[str, list[float]] = field(default_factory=dict)
    stop_reason: StopReason = "max_iter"
    error_estimate: float = math.nan
    damping: float = 0.5
    restarts: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)


def gamp_rie(
    X: Tensor,
    y: Tensor,
    kappa: float,
    delta: float = 0.0,
    *,
    max_iter: int = 300,
    damping: float = 0.5,
    tol: float = 1e-5,
    patience: int = 10,
    plateau_rtol: float = 1e-2,
    guard: bool = True,
    max_restarts: int = 2,
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
        max_iter: Maximum number of iterations per attempt.
        damping: β ∈ [0, 1) applied to (V, ω).
        tol: Stop (``"tol"``) when ``‖Ŝ_{t+1} − Ŝ_t‖²_F/d < tol``.
        patience: Stop (``"plateau"``) when the error estimate has not improved by the
            fraction ``plateau_rtol`` in this many iterations.
        plateau_rtol: See ``patience``; 0 disables the plateau rule.
        guard: Detect divergence, restart with more damping, and fall back to the best iterate
            with a :class:`GampRieDivergenceWarning` (module doc).
        max_restarts: Restarts allowed to the guard.
        init: ``"prior_mean"`` (``√κ I``) or ``"prior_sample"`` (a draw ``WᵀW/√(md)``).
        S_true: If given, the per-iteration ``mse`` is recorded.
        generator: Randomness for ``init="prior_sample"``.
        delta_floor: Lower bound on Δ inside the output channel (noiseless case).
        v_init: Initial ``Ĉ``, ``V`` and ``ω`` entries (the notebook's 10).

    Returns:
        A :class:`GampRieResult`; ``result.stop_reason`` says why it stopped.

    Raises:
        ValueError: Bad shapes, non-finite inputs, bad hyper-parameters, or NaN during the run.
    """
    # float32/float64 only: the RIE denoiser's eigh has no float16 kernel. Integer labels are
    # accepted (cast to X's dtype).
    if any(isinstance(t, Tensor) and t.is_complex() for t in (X, y)):
        raise ValueError("X and y must be real")
    check_tensor("X", X, ndim=2, allow_half=False)
    check_tensor("y", y, ndim=1, dtype=None, device=X.device, owner="X")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be a 1-D tensor with X.shape[0]={X.shape[0]} entries")
    n, d = X.shape
    teacher_width(d, kappa)  # validates kappa and d
    check_nonnegative("delta", delta)
    check_positive_int("max_iter", max_iter)
    check_in_range("damping", damping, 0.0, 1.0, high_inclusive=False)
    check_positive("tol", tol)
    check_positive_int("patience", patience)
    check_in_range("plateau_rtol", plateau_rtol, 0.0, 1.0, high_inclusive=False)
    if max_restarts < 0 or int(max_restarts) != max_restarts:
        raise ValueError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
    check_positive("delta_floor", delta_floor)
    check_positive("v_init", v_init)
    y = y.to(X.dtype)
    prior_mean = math.sqrt(kappa) * torch.eye(d, dtype=X.dtype, device=X.device)
    if init == "prior_mean":
        S0 = prior_mean
    elif init == "prior_sample":
        m = teacher_width(d, kappa)
        W0 = torch.randn(m, d, generator=generator, dtype=torch.float64).to(X)
        S0 = W0.T @ W0 / math.sqrt(m * d)
    else:
        raise ValueError(f"init must be 'prior_mean' or 'prior_sample', got {init!r}")
    if S_true is not None and S_true.shape != (d, d):
        raise ValueError(f"S_true must have shape ({d}, {d}), got {tuple(S_true.shape)}")
    run = _Run(
        X,
        y,
        kappa,
        float(delta),
        S_true=S_true,
        prior_mean=prior_mean,
        max_iter=max_iter,
        tol=tol,
        patience=patience,
        plateau_rtol=plateau_rtol,
        e_floor=float(bayes_optimal_mse(n / d**2, kappa, delta, shortcut=True)) if guard else 0.0,
        guard=guard,
        delta_floor=delta_floor,
        v_init=v_init,
    )
    attempts: list[dict[str, Any]] = []
    best: tuple[float, Tensor] = (1.0, prior_mean)  # (ê, iterate): the prior mean has ê = 1
    beta = float(damping)
    while True:
        out = run(S0, beta)
        attempts.append({"damping": beta, "n_iter": out.n_iter, "stop_reason": out.stop_reason})
        if out.best[0] < best[0]:
            best = out.best
        if out.stop_reason != "diverged" or len(attempts) > max_restarts:
            break
        beta = 0.5 * (1.0 + beta)
    S_hat, estimate = out.S_hat, out.estimate
    if out.stop_reason == "diverged":
        estimate, S_hat = best
        warnings.warn(
            f"GAMP-RIE diverged at iteration {out.n_iter} with damping {beta:g} after "
            f"{len(attempts) - 1} restart(s) (α = {n / d**2:.3g}, d = {d}); returning the best "
            f"iterate (estimated error {estimate:.3g}). Small α at small d is unstable: use "
            "more samples or a larger d",
            GampRieDivergenceWarning,
            stacklevel=2,
        )
    return GampRieResult(
        S_hat=S_hat,
        n_iter=out.n_iter,
        converged=out.stop_reason in ("tol", "plateau"),
        history=out.history,
        stop_reason=out.stop_reason,
        error_estimate=float(estimate),
        damping=beta,
        restarts=len(attempts) - 1,
        attempts=attempts,
    )


@dataclass
class _Attempt:
    S_hat: Tensor
    n_iter: int
    stop_reason: StopReason
    estimate: float
    best: tuple[float, Tensor]
    history: dict[str, list[float]]


@dataclass
class _Run:
    """One GAMP-RIE run from ``S0`` at a given damping (the settings shared by all attempts)."""

    X: Tensor
    y: Tensor
    kappa: float
    delta: float
    S_true: Tensor | None
    prior_mean: Tensor
    max_iter: int
    tol: float
    patience: int
    plateau_rtol: float
    e_floor: float
    guard: bool
    delta_floor: float
    v_init: float

    def __call__(self, S0: Tensor, damping: float) -> _Attempt:
        X, y, kappa, S_true = self.X, self.y, self.kappa, self.S_true
        n, d = X.shape
        alpha = n / d**2
        denoiser = RIEDenoiser(kappa, units="paper")
        delta_out = max(self.delta, self.delta_floor)
        S_hat = S0
        hist: dict[str, list[float]] = {
            "step": [],
            "delta_eff": [],
            "c_hat": [],
            "change": [],
            "prior_distance": [],
        }
        if S_true is not None:
            hist["mse"] = [float(((S_hat - S_true) ** 2).sum() / d)]
        c_hat = V = float(self.v_init)
        omega = torch.full((n,), float(self.v_init), dtype=X.dtype, device=X.device)
        g_prev = (y - omega) / (delta_out + V)
        best: tuple[float, Tensor] = (math.inf, S_hat)
        p = self.patience
        reason: StopReason = "max_iter"
        t = 0
        for t in range(1, self.max_iter + 1):
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
            estimate = 0.5 * c_hat
            change = float(((S_new - S_hat) ** 2).sum() / d)
            q = float(((S_new - self.prior_mean) ** 2).sum() / d)
            S_hat, g_prev = S_new, g
            hist["step"].append(float(t))
            hist["delta_eff"].append(delta_eff)
            hist["c_hat"].append(c_hat)
            hist["change"].append(change)
            hist["prior_distance"].append(q)
            if S_true is not None:
                hist["mse"].append(float(((S_hat - S_true) ** 2).sum() / d))
            gap = abs(q + estimate - 1.0)  # Nishimori: 0 for a posterior mean
            if self.guard and (
                estimate < 0.5 * self.e_floor
                or q > _PRIOR_DISTANCE_MAX
                or (t > p and gap > _NISHIMORI_MAX)
            ):
                reason = "diverged"
                break
            if t > p and gap <= _NISHIMORI_TOL and estimate < best[0]:
                best = (estimate, S_hat)
            if change < self.tol:
                reason = "tol"
                break
            est = hist["c_hat"]
            if (
                self.plateau_rtol > 0
                and t >= 2 * p
                and sum(est[-p:]) >= (1.0 - self.plateau_rtol) * sum(est[-2 * p : -p])
            ):
                reason = "plateau"
                break
        return _Attempt(S_hat, t, reason, estimate, best, hist)
