"""The hybrid solver: directional attacks for fast ascent, cDSM steps for the guarantee.

Paper: P.-Y. Bouchet, T. Vidal, "Optimization by Directional Attacks: Solving Problems with
Neural Network Surrogates", arXiv 2510.01461 (2025); loop and constants from the official code.
It maximises ``f̃(Φ̃(x))`` of a :class:`~optforge.dfo.surrogate.SurrogateProblem`. Each
iteration from the incumbent ``x``:

.. code-block:: text

    u  = ∇f̃(Φ̃(x)) on the active outputs;  d = Attack(Φ̃, x, u, r_atk)   # 1 evaluation
    gain = f̃(x+d) - f̃(x)
    if gain / (|f̃(x)| + 1e-10) ≥ τ:   x ← x+d;  r_atk ← clip(1.3 r_atk)
                                       if r_dsm ≤ r_dsm_min: r_dsm ← 2 r_dsm   (skip cDSM)
    else:
        if gain > 0: x ← x+d; r_atk ← clip(1.1 r_atk)   else: r_atk ← max(r_atk_min, r_atk/1.3)
        one cDSM iteration (covering; search and "n+1" poll skipped while r_dsm ≤ r_dsm_min;
        r_dsm doubles after a search or poll success and halves after a poll failure)
    stop when r_dsm ≤ r_dsm_min and r_atk ≤ r_atk_min, or the budget is spent.

Every tried point costs one evaluation (cached by the bytes of ``x``; a zero attack step re-visits
``x`` and is a free failure); the backward passes inside the attack are not counted as
evaluations but are included in the wall time, as in the official code.

The baselines of the official code are here too: :func:`cdsm` (pure cDSM, ``"2n"`` poll),
:func:`attacks_only` (radii ``r·[1.1, 1]``; on success ``r ← ‖d‖∞``, on failure ``r ← r/1.5``)
and :func:`random_line_search` (2 random ℓ∞-unit directions × ``[1.1, 1, 1/1.1]·r``; on success
``r ← ‖d‖∞``; after more than ``n+1`` consecutive failures ``r ← r/1.3``, counter reset).

Example::

    >>> import torch
    >>> phi = torch.nn.Linear(4, 3).double()
    >>> problem = SurrogateProblem(phi, lambda y: -((y - 1.0) ** 2).sum())
    >>> res = hybrid_attack_cdsm(problem, torch.zeros(4, dtype=torch.float64), budget=300)
    >>> res.n_evals <= 300
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from optforge._core import check_nonnegative, check_positive
from optforge.dfo.attacks import DirectionalAttack
from optforge.dfo.cdsm import CDSM, CDSMConfig, _unit_inf
from optforge.dfo.direct_search import Budget, DirectSearchBase, OptimResult
from optforge.dfo.surrogate import SurrogateProblem

__all__ = [
    "HybridAttackCDSM",
    "HybridConfig",
    "attacks_only",
    "cdsm",
    "hybrid_attack_cdsm",
    "random_line_search",
]


@dataclass(frozen=True)
class HybridConfig(CDSMConfig):
    """Hyper-parameters of the hybrid (``r_min``/``r_max`` bound ``r_dsm``; radii in ℓ∞).

    The cDSM part defaults to the official one (:meth:`CDSMConfig.official`: covering first,
    search off as in every official run, no model, ``"n+1"`` poll in the drawn order).

    Attributes:
        r_atk_min: Smallest attack radius.
        r_atk_max: Largest attack radius.
        tau: Relative sufficient increase that makes an attack skip the cDSM steps.
        atk_grow_skip: Attack radius growth after a sufficient increase.
        atk_grow: Attack radius growth after a plain increase.
        atk_shrink: Attack radius divisor after a failure.
    """

    poll: Literal["2n", "n+1"] = "n+1"
    covering_last: bool = False
    search: bool = False
    search_expands: bool = True
    model_search: bool = False
    poll_order: Literal["given", "model"] = "given"
    r_atk_min: float = 1e-5
    r_atk_max: float = 1.0
    tau: float = 1e-3
    atk_grow_skip: float = 1.3
    atk_grow: float = 1.1
    atk_shrink: float = 1.3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("r_atk_min", self.r_atk_min)
        check_positive("r_atk_max", self.r_atk_max)
        if self.r_atk_min > self.r_atk_max:
            raise ValueError(
                f"r_atk_min ({self.r_atk_min}) must be <= r_atk_max ({self.r_atk_max})"
            )
        check_nonnegative("tau", self.tau)
        for name in ("atk_grow_skip", "atk_grow", "atk_shrink"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


class HybridAttackCDSM(CDSM):
    """The hybrid as an ask/tell minimiser of ``F(x) = -problem.value(x)``.

    ``state_dict()`` leaves out the problem, its network and the attack (rebuild the solver
    with them, then ``load_state_dict``); pickling needs a picklable problem.

    Use :func:`hybrid_attack_cdsm` for the maximisation result; with ask/tell, tell
    ``-problem.value(x)``.

    Args:
        problem: The :class:`SurrogateProblem` (its network is attacked).
        x0: Starting point (1-D floating tensor).
        config: :class:`HybridConfig`.
        attack: The attack operator (default: FGSM with the soft cross-entropy).
        budget: Evaluations (int) or a :class:`Budget`.
        generator: ``torch.Generator``, seed or ``None`` (used by the cDSM steps).
        nonfinite: ``"reject"`` or ``"raise"`` for NaN/inf values.
    """

    def __init__(
        self,
        problem: SurrogateProblem,
        x0: torch.Tensor,
        config: HybridConfig | None = None,
        attack: DirectionalAttack | None = None,
        *,
        budget: int | Budget = 1000,
        generator: torch.Generator | int | None = None,
        nonfinite: Literal["reject", "raise"] = "reject",
    ) -> None:
        config = config if config is not None else HybridConfig()
        if not isinstance(config, HybridConfig):
            raise TypeError(f"config must be a HybridConfig, got {type(config).__name__}")
        _check_problem(problem, x0)
        self.problem = problem
        self.attack = attack if attack is not None else DirectionalAttack()
        self.model = problem.attack_model()
        self.r_atk = min(max(config.r0, config.r_atk_min), config.r_atk_max)
        self._gain = 0.0
        self._phase = "attack"
        self._prefix = ""
        super().__init__(
            x0,
            config,
            bounds=problem.bounds,
            budget=budget,
            generator=generator,
            nonfinite=nonfinite,
        )

    _NOT_STATE = ("config", "problem", "model", "attack")

    def _radii(self) -> dict[str, float]:
        return {"r_dsm": self.r, "r_atk": self.r_atk, "atk_gain": self._gain}

    def _converged(self) -> bool:
        return self.r <= self.config.r_min and self.r_atk <= self.config.r_atk_min

    def _attack_step(self) -> torch.Tensor:
        p = self.problem
        x_dev = self.x.to(p.device, p.dtype)
        bounds = None
        if self.bounds is not None:
            bounds = (self.bounds[0].to(x_dev), self.bounds[1].to(x_dev))
        d = self.attack(self.model, x_dev, p.direction(x_dev), self.r_atk, bounds=bounds)
        return self.x + d.to(self.x)

    def _next_batch(self) -> list[torch.Tensor]:
        if self._phase == "attack":
            return [self._attack_step()]
        active = self.r > self.config.r_min
        points, self._labels = self._dsm_points(search=active, poll=active)
        return points

    def _resolve(self, points, values, winner) -> str | None:
        cfg = self.config
        if self._phase == "dsm":
            self._phase = "attack"
            return self._prefix + self._dsm_resolve(points, values, winner)
        y, fy = points[0], values[0]
        gain = self.fx - fy  # increase of f̃ = decrease of F
        self._gain = gain
        if gain / (abs(self.fx) + 1e-10) >= cfg.tau:
            self._move(y, fy)
            self.r_atk = min(cfg.r_atk_max, max(cfg.r_atk_min, cfg.atk_grow_skip * self.r_atk))
            if self.r <= cfg.r_min:
                self.r = min(cfg.r_max, 2.0 * self.r)
            return "attack+skipped"
        if gain > 0:
            self._move(y, fy)
            self.r_atk = min(cfg.r_atk_max, max(cfg.r_atk_min, cfg.atk_grow * self.r_atk))
            self._prefix = "attack+"
        else:
            self.r_atk = max(cfg.r_atk_min, self.r_atk / cfg.atk_shrink)
            self._prefix = "failure+"
        self._phase = "dsm"
        return None

    def _accept(self, value: float) -> bool:
        if self._phase == "attack":
            return True  # the attack step is one point, judged by _resolve
        return super()._accept(value)


class _AttacksOnly(DirectSearchBase):
    """Official "attacks only" baseline (minimising ``-problem.value``)."""

    _NOT_STATE = ("problem", "model", "attack")

    def __init__(self, problem, x0, attack, r0, r_min, r_max, **kwargs) -> None:
        _check_problem(problem, x0)
        self.problem, self.attack, self.model = problem, attack, problem.attack_model()
        self.r, self.r_min, self.r_max = r0, r_min, r_max
        self._halt = False
        self._try = 0
        super().__init__(x0, bounds=problem.bounds, **kwargs)

    def _radii(self) -> dict[str, float]:
        return {"r_atk": self.r}

    def _converged(self) -> bool:
        return self._halt

    def _next_batch(self) -> list[torch.Tensor]:
        p = self.problem
        x_dev = self.x.to(p.device, p.dtype)
        mult = (1.1, 1.0)[self._try]
        d = self.attack(self.model, x_dev, p.direction(x_dev), mult * self.r)
        return [self.x + d.to(self.x)]

    def _resolve(self, points, values, winner) -> str | None:
        if winner is not None:
            d = points[0] - self.x
            self._move(points[0], values[0])
            self.r = min(self.r_max, max(self.r_min, float(d.abs().max())))
            self._try = 0
            return "attack+"
        if self._try == 0:
            self._try = 1
            return None
        self._try = 0
        self._halt = self.r < self.r_min
        self.r = self.r / 1.5
        return "failure"


class _RandomLineSearch(DirectSearchBase):
    """Official "random line searches" baseline (minimising ``-problem.value``)."""

    def __init__(self, problem, x0, r0, r_min, r_max, **kwargs) -> None:
        _check_problem(problem, x0)
        self.r, self.r_min, self.r_max = r0, r_min, r_max
        self.fails = 0
        self._try = 0
        super().__init__(x0, bounds=problem.bounds, **kwargs)

    def _radii(self) -> dict[str, float]:
        return {"r": self.r}

    def _converged(self) -> bool:
        return self.r <= self.r_min

    def _next_batch(self) -> list[torch.Tensor]:
        w = _unit_inf(self.n, self.generator, self.x.dtype).to(self.x)
        return [self.x + mult * self.r * w for mult in (1.1, 1.0, 1.0 / 1.1)]

    def _resolve(self, points, values, winner) -> str | None:
        if winner is not None:
            self._move(points[winner], values[winner])
            self.r = min(self.r_max, (1.1, 1.0, 1.0 / 1.1)[winner] * self.r)
            self.fails, self._try = 0, 0
            return "success"
        if self._try == 0:  # a second random direction
            self._try = 1
            return None
        self._try = 0
        self.fails += 1
        if self.fails > self.n + 1:
            self.r, self.fails = self.r / 1.3, 0
        return "failure"


def hybrid_attack_cdsm(
    problem: SurrogateProblem,
    x0: torch.Tensor,
    config: HybridConfig | None = None,
    attack: DirectionalAttack | None = None,
    budget: int | Budget = 1000,
    generator: torch.Generator | int | None = None,
) -> OptimResult:
    """Maximise ``problem.value`` with the attack + cDSM hybrid.

    Args:
        problem: The :class:`SurrogateProblem`.
        x0: Starting point (1-D floating tensor).
        config: :class:`HybridConfig` (defaults: FGSM steps, ``"n+1"`` poll, τ = 1e-3).
        attack: The attack operator.
        budget: Evaluations (int) or a :class:`Budget`.
        generator: ``torch.Generator``, seed or ``None``.

    Returns:
        The :class:`OptimResult` in the maximisation sense.
    """
    opt = HybridAttackCDSM(problem, x0, config, attack, budget=budget, generator=generator)
    return _drive(opt, problem)


def cdsm(
    problem: SurrogateProblem,
    x0: torch.Tensor,
    config: CDSMConfig | None = None,
    budget: int | Budget = 1000,
    generator: torch.Generator | int | None = None,
) -> OptimResult:
    """Maximise ``problem.value`` with pure cDSM (the network is used as a black box).

    Args:
        problem: The :class:`SurrogateProblem`.
        x0: Starting point.
        config: :class:`CDSMConfig` (default ``"2n"`` poll).
        budget: Evaluations (int) or a :class:`Budget`.
        generator: ``torch.Generator``, seed or ``None``.

    Returns:
        The :class:`OptimResult` in the maximisation sense.
    """
    _check_problem(problem, x0)
    opt = CDSM(x0, config, bounds=problem.bounds, budget=budget, generator=generator)
    return _drive(opt, problem)


def attacks_only(
    problem: SurrogateProblem,
    x0: torch.Tensor,
    attack: DirectionalAttack | None = None,
    r0: float = 1.0,
    r_min: float = 1e-5,
    r_max: float = math.inf,
    budget: int | Budget = 1000,
    generator: torch.Generator | int | None = None,
) -> OptimResult:
    """Maximise ``problem.value`` with attacks alone (official baseline).

    Args:
        problem: The :class:`SurrogateProblem`.
        x0: Starting point.
        attack: The attack operator (default FGSM, soft cross-entropy).
        r0: Initial radius.
        r_min: Stop after a failure below this radius.
        r_max: Largest radius.
        budget: Evaluations (int) or a :class:`Budget`.
        generator: Unused by the attacks (kept for a uniform signature).

    Returns:
        The :class:`OptimResult` in the maximisation sense.
    """
    _check_radii(r0, r_min, r_max)
    opt = _AttacksOnly(
        problem,
        x0,
        attack if attack is not None else DirectionalAttack(),
        r0,
        r_min,
        r_max,
        budget=budget,
        generator=generator,
    )
    return _drive(opt, problem)


def random_line_search(
    problem: SurrogateProblem,
    x0: torch.Tensor,
    r0: float = 1.0,
    r_min: float = 1e-5,
    r_max: float = math.inf,
    budget: int | Budget = 1000,
    generator: torch.Generator | int | None = None,
) -> OptimResult:
    """Maximise ``problem.value`` with random line searches (official baseline).

    Args:
        problem: The :class:`SurrogateProblem`.
        x0: Starting point.
        r0: Initial radius.
        r_min: Stop when the radius falls to this value.
        r_max: Largest radius.
        budget: Evaluations (int) or a :class:`Budget`.
        generator: ``torch.Generator``, seed or ``None``.

    Returns:
        The :class:`OptimResult` in the maximisation sense.
    """
    _check_radii(r0, r_min, r_max)
    opt = _RandomLineSearch(problem, x0, r0, r_min, r_max, budget=budget, generator=generator)
    return _drive(opt, problem)


def _check_radii(r0: float, r_min: float, r_max: float) -> None:
    check_positive("r0", r0)
    check_positive("r_min", r_min)
    if not r_max > 0:
        raise ValueError(f"r_max must be > 0, got {r_max!r}")
    if r_min > r_max:
        raise ValueError(f"r_min ({r_min}) must be <= r_max ({r_max})")


def _check_problem(problem: SurrogateProblem, x0: torch.Tensor) -> None:
    if not isinstance(problem, SurrogateProblem):
        raise TypeError(f"problem must be a SurrogateProblem, got {type(problem).__name__}")
    if isinstance(x0, torch.Tensor) and x0.dim() == 1:
        problem.check(x0)


def _drive(opt: DirectSearchBase, problem: SurrogateProblem) -> OptimResult:
    opt.minimize(lambda x: -problem.value(x))
    return opt.result(sense="max")
