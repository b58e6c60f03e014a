r"""SSO's target step :math:`\eta_t`: a schedule, a line search in target space, or AdaGrad-norm.

With ``target_lr`` = :math:`\eta_0`, :math:`w` the surrogate's batch weight and :math:`\hat G` the
target gradient of the batch loss:

* ``schedule="constant"``: :math:`\eta_0`; ``"sqrt"``: :math:`\eta_0/\sqrt t`; ``"exp"``:
  :math:`\eta_0\,T^{-t/T}` with ``T = total_steps`` (it keeps decaying after ``T``).
* ``target_line_search=True`` (official ``sls_fmdopt.py``): start from the previous step times
  ``ls_expand`` (the first from :math:`\eta_0`), shrink by ``ls_beta`` until the target-space
  Armijo condition :math:`\ell_S(z_t - \tfrac{\eta}{w}\hat G) \le \ell_S(z_t) - c\,\tfrac{\eta}{w}
  \lVert\hat G\rVert^2` holds (``c = ls_c``); the inverse step is clamped to [1e-4, 1e4]. These
  target-loss evaluations are counted in ``target_loss_evals``, not as oracle calls.
* ``adaptive="adagrad_norm"`` (official ``ada_fmdopt.py``): :math:`1/\eta_t =
  \sqrt{\sum_{s\le t} w\lVert G_s\rVert^2}/\eta_0 + 10^{-6}` with per-example gradients
  :math:`G_s = \hat G_s / w` (for ``"sum"`` this is the official sum of squared norms; for
  ``"mean"`` the mean per-example squared norm, so it does not grow with the batch size).

Example::

    opt = SSO(model.parameters(), target_lr=1.0, schedule="sqrt")
    opt.target_step(t=4)   # η_4 = 1 / √4 = 0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__: list[str] = []

_ETA_MIN, _ETA_MAX = 1e-4, 1e4  # the official clamp of the inverse target step to [1e-4, 1e4]


def _choose_eta(
    group: dict[str, Any],
    state: dict[str, Any],
    z_t: Tensor,
    grad: Tensor,
    loss_t: Tensor | None,
    target_loss: Callable[[Tensor], Tensor] | None,
    weight: float,
) -> float:
    """η_t of the current outer step (updates the line-search or AdaGrad state in ``state``)."""
    eta0 = float(group["target_lr"])
    if group["adaptive"] == "adagrad_norm":
        state["adagrad_sum"] += float((grad.double() ** 2).sum()) / weight
        return 1.0 / (math.sqrt(state["adagrad_sum"]) / eta0 + 1e-6)
    if group["target_line_search"]:
        if target_loss is None or loss_t is None:
            raise ValueError("target_line_search=True needs target_loss (not target_grad)")
        prev = state["ls_eta"]
        eta = eta0 if prev is None else prev * group["ls_expand"]
        eta = min(max(eta, _ETA_MIN), _ETA_MAX)
        grad_sq = float((grad.double() ** 2).sum())
        with torch.no_grad():
            for _ in range(group["max_backtracks"]):
                trial = float(target_loss(z_t - (eta / weight) * grad))
                state["target_loss_evals"] += 1
                if trial <= float(loss_t) - group["ls_c"] * (eta / weight) * grad_sq:
                    break
                if eta * group["ls_beta"] < _ETA_MIN:
                    break
                eta *= group["ls_beta"]
        eta = min(max(eta, _ETA_MIN), _ETA_MAX)
        state["ls_eta"] = eta
        return eta
    return _scheduled_eta(eta0, group["schedule"], group["total_steps"], state["step"])


def _scheduled_eta(eta0: float, schedule: str, total_steps: int | None, t: int) -> float:
    """η_t of a schedule (``t >= 1``)."""
    if t < 1:
        raise ValueError(f"t must be >= 1, got {t}")
    if schedule == "constant":
        return eta0
    if schedule == "sqrt":
        return eta0 / math.sqrt(t)
    assert total_steps is not None
    return eta0 * float(total_steps) ** (-t / total_steps)
