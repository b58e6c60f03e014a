r"""Metrics of TTSnap: area gain of a reward-vs-budget curve and ranking alignment.

Relative area gain (in %, the reference code's budget metric) of a method's curve
:math:`r_M(B)` over a baseline's :math:`r_0(B)`, with :math:`r_0 = r_0(B_\min)`:

.. math::

    \mathrm{Gain} = 100\,\frac{\int (r_M - r_0)\,dB - \int (r_0(B) - r_0)\,dB}
    {\int (r_0(B) - r_0)\,dB},

integrals by Simpson's rule on the budget grid. Alignment metrics measure how well
intermediate (noise-aware) scores rank the final rewards: Kendall's :math:`\tau_b`, top-α
selection accuracy and gap, and the MSE (Q. Yu et al., "TTSnap: Test-Time Scaling of
Diffusion Models via Noise-Aware Pruning", 2025, arXiv:2511.22242).

Example::

    import torch
    from optforge.diffusion.ttsnap import alignment_metrics, relative_area_gain

    b = torch.linspace(200.0, 1000.0, 9)
    r = (b - 200.0) / 800.0
    relative_area_gain(b, 2 * r, r)                   # 100.0
    final = torch.randn(5, 60)
    alignment_metrics(final, final)["kendall"]        # 1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from optforge._core import check_finite
from optforge.diffusion.ttsnap.ranking import _rank_order

__all__ = ["alignment_metrics", "relative_area_gain"]


def relative_area_gain(
    budgets: Sequence[float] | Tensor,
    rewards_method: Sequence[float] | Tensor,
    rewards_baseline: Sequence[float] | Tensor,
) -> float:
    r"""Relative area gain in % of a reward-vs-budget curve over the baseline's.

    :math:`\mathrm{Gain} = 100\,[\int (r_M - r_0)\,dB - \int (r_0(B) - r_0)\,dB]
    / \int (r_0(B) - r_0)\,dB` with :math:`r_0 = r_\text{baseline}(B_\min)`, integrals by
    Simpson's rule (``scipy.integrate.simpson``) on the budget grid.

    Raises:
        ValueError: if the baseline's area above its first value is not positive.
    """
    from scipy.integrate import simpson

    b = torch.as_tensor(budgets, dtype=torch.float64).cpu().numpy()
    rm = torch.as_tensor(rewards_method, dtype=torch.float64).cpu().numpy()
    rb = torch.as_tensor(rewards_baseline, dtype=torch.float64).cpu().numpy()
    if not (b.ndim == rm.ndim == rb.ndim == 1 and len(b) == len(rm) == len(rb) >= 2):
        raise ValueError("budgets and both reward curves must be 1-D of the same length >= 2")
    for name, arr in (("budgets", b), ("rewards_method", rm), ("rewards_baseline", rb)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if not (np.diff(b) > 0).all():
        raise ValueError("budgets must be strictly increasing")
    r0 = rb[0]
    area_b = float(simpson(rb - r0, x=b))
    if not area_b > 0:
        raise ValueError(f"the baseline's area above r(B_min) is not positive ({area_b})")
    area_m = float(simpson(rm - r0, x=b))
    return 100.0 * (area_m - area_b) / area_b


def alignment_metrics(
    pred: Tensor, final: Tensor, alphas: Sequence[float] | None = None
) -> dict[str, float]:
    """How well intermediate scores rank the final rewards, per prompt then averaged.

    Args:
        pred: ``[P, M]`` predicted (intermediate) scores.
        final: ``[P, M]`` teacher rewards of the final images.
        alphas: Top fractions for selection accuracy and gap (default 0.05, 0.10, …, 0.95).

    Returns:
        ``kendall`` (τ-b, ``scipy.stats.kendalltau``), ``top_acc``/``top_gap`` averaged over
        ``alphas``, ``top_acc@0.25``/``top_gap@0.25``, and ``mse``.
    """
    from scipy.stats import kendalltau

    if pred.shape != final.shape or pred.dim() != 2:
        raise ValueError(
            f"pred and final must both be [P, M], got {tuple(pred.shape)}, {tuple(final.shape)}"
        )
    check_finite("pred", pred)
    check_finite("final", final)
    alphas = [0.05 * i for i in range(1, 20)] if alphas is None else list(alphas)
    pred64, fin64 = pred.double().cpu(), final.double().cpu()
    P, M = pred64.shape
    taus = [float(kendalltau(pred64[p].numpy(), fin64[p].numpy()).statistic) for p in range(P)]
    order = _rank_order(pred64, False)
    best_all = fin64.max(dim=1).values

    def top(alpha: float) -> tuple[float, float]:
        k = max(1, round(alpha * M))
        chosen = fin64.gather(1, order[:, :k])
        best_top = chosen.max(dim=1).values
        acc = (best_top >= best_all).double().mean()
        return float(acc), float((best_all - best_top).mean())

    grid = [top(a) for a in alphas]
    acc25, gap25 = top(0.25)
    return {
        "kendall": float(torch.tensor(taus).nanmean()),
        "top_acc": sum(g[0] for g in grid) / len(grid),
        "top_gap": sum(g[1] for g in grid) / len(grid),
        "top_acc@0.25": acc25,
        "top_gap@0.25": gap25,
        "mse": float(((pred64 - fin64) ** 2).mean()),
    }
