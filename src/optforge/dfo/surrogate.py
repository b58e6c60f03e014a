"""``max_x f(Φ(x))  s.t.  c_x(x) ≤ 0, c_y(Φ(x)) ≤ 0`` with a trained network ``Φ``.

Paper: P.-Y. Bouchet, T. Vidal, "Optimization by Directional Attacks: Solving Problems with
Neural Network Surrogates", arXiv 2510.01461 (2025). Constraints follow the official code's
reformulation ("tilde"), folding an exterior quadratic penalty into the network:

.. math::

    \\tilde Φ(x) = \\big[Φ(x),\\ s\\,\\mathrm{ReLU}(c_x(x)),\\ s\\,\\mathrm{ReLU}(c_y(Φ(x)))\\big],
    \\qquad \\tilde f(y, z) = f(y) - \\|z\\|_2^2,\\qquad
    ∇\\tilde f(y, z) = [∇f(y), -2z],

where ``s = penalty_scale`` is the hand pre-scaling of the constraints in the official problems
(×1000 for bio-diesel). ``constraint_mode="extreme_barrier"`` (suggested, not in the paper)
instead gives infeasible points the value ``-inf`` and attacks ``Φ`` alone.

Outputs of ``Φ`` that ``f`` does not depend on (``inactive_outputs``) are dropped from both the
attack's model and its target direction.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from optforge._core import check_positive

__all__ = ["SurrogateProblem"]


class SurrogateProblem:
    """A maximisation problem through a trained network (the object the hybrid solves).

    Args:
        phi: The network ``Φ`` (an ``nn.Module`` mapping a 1-D ``x`` to a 1-D output). It is
            put in ``eval()`` mode (with a warning if it was training).
        f: Smooth objective on the outputs, ``y -> 0-d tensor`` (differentiable in torch).
        grad_f: Optional ``∇f`` (default: autograd of ``f``).
        c_x: Optional input constraints ``x -> tensor`` (feasible where ``<= 0``).
        c_y: Optional output constraints ``y -> tensor`` (feasible where ``<= 0``).
        inactive_outputs: Indices of ``Φ``'s outputs that ``f`` ignores.
        constraint_mode: ``"penalty"`` (the paper's) or ``"extreme_barrier"``.
        penalty_scale: Constraint scaling ``s`` inside the penalty.
        bounds: Optional box ``(lower, upper)`` enforced as an extreme barrier by the solvers.
    """

    sense = "max"

    def __init__(
        self,
        phi: nn.Module,
        f: Callable[[torch.Tensor], torch.Tensor],
        grad_f: Callable[[torch.Tensor], torch.Tensor] | None = None,
        c_x: Callable[[torch.Tensor], torch.Tensor] | None = None,
        c_y: Callable[[torch.Tensor], torch.Tensor] | None = None,
        inactive_outputs: Sequence[int] = (),
        constraint_mode: Literal["penalty", "extreme_barrier"] = "penalty",
        penalty_scale: float = 1.0,
        bounds: tuple[torch.Tensor | float, torch.Tensor | float] | None = None,
    ) -> None:
        if not isinstance(phi, nn.Module):
            raise TypeError(f"phi must be an nn.Module, got {type(phi).__name__}")
        if not callable(f):
            raise TypeError("f must be callable")
        if constraint_mode not in ("penalty", "extreme_barrier"):
            raise ValueError(
                f"constraint_mode must be 'penalty' or 'extreme_barrier', got {constraint_mode!r}"
            )
        check_positive("penalty_scale", penalty_scale)
        if phi.training:
            warnings.warn("phi was in training mode; switched to eval()", UserWarning, stacklevel=2)
        self.phi = phi.eval()
        self.f, self.grad_f, self.c_x, self.c_y = f, grad_f, c_x, c_y
        self.inactive_outputs = tuple(int(i) for i in inactive_outputs)
        self.constraint_mode = constraint_mode
        self.penalty_scale = float(penalty_scale)
        self.bounds = bounds
        param = next(iter(phi.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None else torch.get_default_dtype()
        self._m: int | None = None

    # ------------------------------------------------------------------ evaluation
    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, z)``: the network output and the scaled constraint violations (differentiable)."""
        x = x.to(self.device, self.dtype)
        y = self.phi(x).reshape(-1)
        parts = []
        if self.c_x is not None:
            parts.append(torch.as_tensor(self.c_x(x)).reshape(-1).to(y))
        if self.c_y is not None:
            parts.append(torch.as_tensor(self.c_y(y)).reshape(-1).to(y))
        z = self.penalty_scale * torch.relu(torch.cat(parts)) if parts else y.new_zeros(0)
        return y, z

    def value(self, x: torch.Tensor) -> float:
        """The objective the solvers maximise: ``f̃(Φ̃(x))``, or ``f(Φ(x))``/``-inf`` (barrier)."""
        with torch.no_grad():
            return self._value(*self.outputs(x))

    def value_and_violation(self, x: torch.Tensor) -> tuple[float, float]:
        """``(value(x), violation(x))`` from one evaluation of ``Φ`` (the same numbers)."""
        with torch.no_grad():
            y, z = self.outputs(x)
            return self._value(y, z), self._violation(z)

    def _value(self, y: torch.Tensor, z: torch.Tensor) -> float:
        if self.constraint_mode == "extreme_barrier":
            return -math.inf if bool((z > 0).any()) else float(self.f(y))
        return float(self.f(y) - (z**2).sum())

    def objective(self, x: torch.Tensor) -> float:
        """The unpenalised ``f(Φ(x))``."""
        with torch.no_grad():
            return float(self.f(self.outputs(x)[0]))

    def violation(self, x: torch.Tensor) -> float:
        """Largest constraint violation ``max(0, c)`` (unscaled); 0 at feasible points."""
        with torch.no_grad():
            z = self.outputs(x)[1]
        return self._violation(z)

    def _violation(self, z: torch.Tensor) -> float:
        return float(z.max()) / self.penalty_scale if z.numel() else 0.0

    # ------------------------------------------------------------------ attack interface
    def check(self, x0: torch.Tensor) -> None:
        """Validate the problem at ``x0`` (finite outputs, inactive indices in range)."""
        with torch.no_grad():
            y, z = self.outputs(x0)
        if not (torch.isfinite(y).all() and torch.isfinite(z).all()):
            raise ValueError("phi (or a constraint) returned non-finite values at x0")
        self._m = y.numel()
        bad = [i for i in self.inactive_outputs if not -self._m <= i < self._m]
        if bad:
            raise ValueError(f"inactive_outputs {bad} out of range for {self._m} outputs of phi")

    def attack_model(self) -> nn.Module:
        """``Φ̃`` restricted to the active outputs, as an ``nn.Module`` (what is attacked)."""
        return _ActivePhi(self)

    def active_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the active entries of ``Φ̃(x)`` (penalty block always active)."""
        with torch.no_grad():
            y, z = self.outputs(x)
        return self._active_mask(y, z)

    def _active_mask(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mask_y = torch.ones(y.numel(), dtype=torch.bool, device=y.device)
        if self.inactive_outputs:
            mask_y[list(self.inactive_outputs)] = False
        if self.constraint_mode == "extreme_barrier":
            z = z[:0]
        return torch.cat([mask_y, torch.ones(z.numel(), dtype=torch.bool, device=y.device)])

    def direction(self, x: torch.Tensor) -> torch.Tensor:
        """``u = ∇f̃(Φ̃(x)) = [∇f(y), -2z]`` restricted to the active outputs."""
        with torch.no_grad():
            y, z = self.outputs(x)
        if self.grad_f is not None:
            gy = torch.as_tensor(self.grad_f(y)).reshape(-1).to(y)
        else:
            y_req = y.detach().requires_grad_(True)
            with torch.enable_grad():
                (gy,) = torch.autograd.grad(self.f(y_req), y_req)
        if self.constraint_mode == "extreme_barrier":
            z = z[:0]
        u = torch.cat([gy, -2.0 * z])
        return u[self._active_mask(y, z)]  # the mask from this evaluation: Φ once per call


class _ActivePhi(nn.Module):
    """``x ↦ Φ̃(x)[active]`` (the penalty block dropped in extreme-barrier mode)."""

    def __init__(self, problem: SurrogateProblem) -> None:
        super().__init__()
        self.problem = problem
        self.phi = problem.phi
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, z = self.problem.outputs(x)
        if self.problem.constraint_mode == "extreme_barrier":
            z = z[:0]
        out = torch.cat([y, z])
        if self.problem.inactive_outputs:
            mask = torch.ones(out.numel(), dtype=torch.bool, device=out.device)
            mask[list(self.problem.inactive_outputs)] = False
            out = out[mask]
        return out
