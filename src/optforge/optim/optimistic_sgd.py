r"""Optimistic gradient descent (OGDA) for training loops, games and min–max problems.

Paper: Sijia Chen, Yu-Jie Zhang, Wei-Wei Tu, Peng Zhao, Lijun Zhang, "Optimistic Online Mirror
Descent for Bridging Stochastic and Adversarial Online Convex Optimization", ICML 2023,
arXiv:2302.04552 (the online learners live in :mod:`optforge.online`). This is the one-gradient,
unconstrained, constant-step form of optimistic OMD with the last gradient as the hint
(Rakhlin & Sridharan 2013; Daskalakis et al. 2018, "optimistic gradient descent ascent"):

.. math::

    x_{t+1} = x_t - \eta\,\big((1+\beta)\,g_t - \beta\,g_{t-1}\big), \qquad g_0 = 0,

with ``β = optimism = 1`` giving the classic ``2g_t − g_{t−1}``. With ``M_1 = 0`` the two-step
OMD ``x̂_{t+1} = x̂_t − ηg_t``, ``x_{t+1} = x̂_{t+1} − ηg_t`` unrolls to exactly this recursion,
so the first step is ``−(1+β)ηg_1`` (as optax's ``optimistic_gradient_descent`` with
``alpha = η``, ``beta = βη``). When the learning rate changes (a scheduler), the current ``lr``
multiplies both terms (optax's convention). ``maximize=True`` in a param group makes that group
ascend, so one optimizer drives both players of ``min_x max_y f(x, y)``.

No momentum: optimistic Adam and friends are different algorithms. The two-gradient
extragradient method (cooper's ``ExtraSGD``) evaluates a second gradient per step and is also a
different algorithm.

Example::

    x, y = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = OptimisticSGD([{"params": [x]}, {"params": [y], "maximize": True}], lr=0.1)
    for _ in range(1000):                 # min_x max_y x·y: plain GDA spirals out, OGDA converges
        opt.zero_grad()
        (x * y).sum().backward()
        opt.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from optforge._core import check_nonnegative

__all__ = ["OptimisticSGD"]


class OptimisticSGD(torch.optim.Optimizer):
    """Optimistic SGD: ``p ← p − lr·((1+optimism)·g_t − optimism·g_{t−1})``.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate ``>= 0`` (``0`` freezes the parameters but still records the gradient
            for the next step's correction, e.g. during a scheduler's warm-up); a 0-dim tensor
            lets a scheduler change it without recompiling a ``torch.compile``-d step.
        optimism: ``β ≥ 0``; ``0`` is plain SGD, ``1`` (default) is OGDA's ``2g_t − g_{t−1}``.
        maximize: ascend instead of descend (per group).
        check_finite: raise ``FloatingPointError`` before changing anything when a gradient is
            NaN or inf (one host sync per step; skipped inside ``torch.compile``). Off by default:
            like ``torch.optim.SGD``, a non-finite gradient then flows into the parameters and
            the stored gradient.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        *,
        optimism: float = 1.0,
        maximize: bool = False,
        check_finite: bool = False,
    ) -> None:
        _check_lr(lr)
        check_nonnegative("optimism", optimism)
        self.check_finite = bool(check_finite)
        super().__init__(params, {"lr": lr, "optimism": optimism, "maximize": bool(maximize)})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate ``lr`` and ``optimism`` of the group first, then add it."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "lr" in param_group:
            _check_lr(param_group["lr"])
        if "optimism" in param_group:
            check_nonnegative("optimism", param_group["optimism"])
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One optimistic step; ``closure`` (optional) re-evaluates the loss with gradients."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.check_finite and not torch.compiler.is_compiling():
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
                raise FloatingPointError(
                    "OptimisticSGD.step: non-finite gradient (NaN or inf); no parameter or state "
                    "was changed"
                )
        for group in self.param_groups:
            lr, beta = group["lr"], group["optimism"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("OptimisticSGD does not support sparse gradients")
                grad = -p.grad if group["maximize"] else p.grad
                state = self.state[p]
                if not state:
                    state["prev_grad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                prev = state["prev_grad"]
                direction = grad.mul(1.0 + beta).sub_(prev, alpha=beta)
                if isinstance(lr, Tensor):
                    p.sub_(direction.mul_(lr))
                else:
                    p.add_(direction, alpha=-lr)
                prev.copy_(grad)
        return loss


def _check_lr(lr: float | Tensor) -> None:
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise ValueError(f"lr must be a number or a 1-element float tensor, got {lr!r}")
        lr = float(lr)
    check_nonnegative("lr", lr)
