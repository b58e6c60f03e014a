"""Quadratic models from cached evaluations, for the model search and poll ordering of cDSM.

The idea is NOMAD's quadratic-model search (Conn & Le Digabel, "Use of quadratic models with
mesh-adaptive direct search for constrained black box optimization", Optim. Methods Softw. 28,
2013): fit ``m(x + s) = c + gᵀs + ½ sᵀHs`` to the points already evaluated near the incumbent
``x``, minimise it in a box ``‖s‖∞ ≤ Δ`` and evaluate the minimiser as one trial point; the
same model ranks the poll directions so the most promising one is evaluated first.

Fitting, on steps scaled by ``scale`` (``ŝ = s/scale``):

* with at least ``p = (n+1)(n+2)/2`` points (a determined quadratic), least squares in the
  monomial basis;
* with fewer (``n+1 ≤ m < p``), the minimum-Frobenius-norm interpolant (Conn, Scheinberg,
  Vicente, *Introduction to Derivative-Free Optimization*, §5.3): ``H = Σ_j λ_j ŝ_j ŝ_jᵀ``
  with ``[A S; Sᵀ 0][λ; c; g] = [f; 0]``, ``A_ij = ½(ŝ_iᵀŝ_j)²``, ``S = [1, ŝ_i]``.

Minimisation in the box: from ``0`` and from the clipped Newton step, projected gradient steps
of length ``1/‖H‖₂``; the point of lowest model value wins.

Example::

    >>> import torch
    >>> s = torch.randn(30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> f = (s**2).sum(1) + s[:, 0]
    >>> g, h = fit_quadratic(s, f - 0.0, scale=1.0)
    >>> torch.allclose(h, 2 * torch.eye(3, dtype=torch.float64), atol=1e-8)
    True
"""

from __future__ import annotations

import torch

__all__ = ["fit_quadratic", "minimize_quadratic_in_box", "model_value"]


def fit_quadratic(
    steps: torch.Tensor, values: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Gradient and Hessian (in unscaled coordinates) of a quadratic model through the data.

    Args:
        steps: ``(m, n)`` displacements ``s_i = y_i - x`` from the centre.
        values: ``(m,)`` values ``F(y_i) - F(x)`` (the model's constant is fitted too).
        scale: Typical step length used to condition the fit.

    Returns:
        ``(g, H)`` or ``None`` when there are fewer than ``n + 1`` points or the system is
        singular.
    """
    m, n = steps.shape
    if m < n + 1:
        return None
    s = steps / scale
    f = values.to(s)
    p = (n + 1) * (n + 2) // 2
    iu = torch.triu_indices(n, n)
    try:
        if m >= p:
            quad = s[:, iu[0]] * s[:, iu[1]]
            quad = torch.where(iu[0] == iu[1], 0.5 * quad, quad)
            basis = torch.cat([torch.ones(m, 1, dtype=s.dtype), s, quad], dim=1)
            coef = torch.linalg.lstsq(basis, f.unsqueeze(1), driver="gelsd").solution.squeeze(1)
            g = coef[1 : n + 1]
            h = torch.zeros(n, n, dtype=s.dtype)
            h[iu[0], iu[1]] = coef[n + 1 :]
            h = h + h.T - torch.diag(h.diagonal())
        else:
            a = 0.5 * (s @ s.T) ** 2
            big_s = torch.cat([torch.ones(m, 1, dtype=s.dtype), s], dim=1)
            kkt = torch.zeros(m + n + 1, m + n + 1, dtype=s.dtype)
            kkt[:m, :m] = a
            kkt[:m, m:] = big_s
            kkt[m:, :m] = big_s.T
            rhs = torch.cat([f, torch.zeros(n + 1, dtype=s.dtype)])
            sol = torch.linalg.lstsq(kkt, rhs.unsqueeze(1), driver="gelsd").solution.squeeze(1)
            lam, g = sol[:m], sol[m + 1 :]
            h = (s.T * lam) @ s
    except RuntimeError:
        return None
    if not (torch.isfinite(g).all() and torch.isfinite(h).all()):
        return None
    return g / scale, h / scale**2


def model_value(g: torch.Tensor, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``gᵀs + ½ sᵀHs`` for one step ``(n,)`` or a batch ``(k, n)``."""
    return s @ g + 0.5 * ((s @ h) * s).sum(-1)


def minimize_quadratic_in_box(
    g: torch.Tensor,
    h: torch.Tensor,
    radius: float,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
    iters: int = 60,
) -> torch.Tensor:
    """An approximate minimiser of ``gᵀs + ½ sᵀHs`` over ``‖s‖∞ ≤ radius`` (and the box).

    Args:
        g: Model gradient ``(n,)``.
        h: Model Hessian ``(n, n)`` (symmetric).
        radius: ℓ∞ trust radius.
        lower: Optional lower bound on ``s`` (the problem's box shifted by the centre).
        upper: Optional upper bound on ``s``.
        iters: Projected-gradient iterations from each start.

    Returns:
        The step ``s`` of lowest model value found (``0`` if nothing decreases the model).
    """
    lo = torch.full_like(g, -radius)
    hi = torch.full_like(g, radius)
    if lower is not None:
        lo = torch.maximum(lo, lower.to(g))
    if upper is not None:
        hi = torch.minimum(hi, upper.to(g))
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    starts = [torch.zeros_like(g), (-radius * torch.sign(g)).clamp(lo, hi)]
    try:
        newton = torch.linalg.solve(h, -g)
        if torch.isfinite(newton).all():
            starts.append(newton.clamp(lo, hi))
    except RuntimeError:
        pass
    lip = float(torch.linalg.matrix_norm(h, ord=2)) if h.numel() else 0.0
    step = 1.0 / lip if lip > 0 else radius / max(float(g.abs().max()), 1e-300)
    best, best_val = torch.zeros_like(g), 0.0
    for s in starts:
        for _ in range(iters):
            s = (s - step * (g + h @ s)).clamp(lo, hi)
        val = float(model_value(g, h, s))
        if val < best_val:
            best, best_val = s, val
    return best
