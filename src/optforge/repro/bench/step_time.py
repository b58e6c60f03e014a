"""Optimizer step time, as ratios against ``torch.optim.Adam(foreach=True)``.

Rows ``step[small]/<optimizer>`` and ``step[large]/<optimizer>``: the time of one training step
(forward, backward and the optimizer in its natural call form) of an MLP
``32 → width → width → 1`` (tanh) on one batch, at two widths, divided by the time of the same
step with ``torch.optim.Adam(foreach=True)`` (``loss.backward(); opt.step()``). All steps are
timed in interleaved rounds (:func:`optforge.repro.timing.time_interleaved`), medians.

Each optimizer's step is a *step case*, registered with :func:`register_step` in a module of
``optforge/repro/bench/steps/`` (one module per optimizer family), so adding an optimizer adds
a block there and edits no shared list::

    from optforge.repro.bench.step_time import StepProblem, first_order_step, register_step

    @register_step("my_sgd", order=80)
    def my_sgd(problem: StepProblem):
        return first_order_step(problem, lambda model: MySGD(model.parameters(), lr=1e-3))

A case receives the :class:`StepProblem` (the batch, a fresh seeded model per call, the losses)
and returns a callable doing one step. Row details: ``ms`` (the optimizer's step),
``baseline_ms`` (Adam's), ``params`` (of the MLP).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from optforge.repro.bench.registry import BenchEntry, register_bench
from optforge.repro.timing import time_interleaved

__all__ = [
    "BASELINE",
    "StepCase",
    "StepProblem",
    "first_order_step",
    "optimizer_steps",
    "register_step",
    "step_cases",
]

BASELINE = "adam"
StepFactory = Callable[["StepProblem"], Callable[[], Any]]


@dataclass(frozen=True)
class StepProblem:
    """The MLP and batch every optimizer steps on (the same for all cases of one width)."""

    width: int
    device: str
    x: Tensor  # (batch, 32)
    y: Tensor  # (batch,)

    @classmethod
    def make(cls, width: int, device: str, batch: int = 64) -> StepProblem:
        """The batch drawn from ``torch.Generator().manual_seed(0)``."""
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 32, generator=g).to(device)
        y = torch.randn(batch, generator=g).to(device)
        return cls(width, device, x, y)

    def model(self) -> nn.Module:
        """A fresh MLP ``32 → width → width → 1`` initialised from ``torch.manual_seed(0)``."""
        return _mlp(self.width, self.device)

    @staticmethod
    def mse(pred: Tensor, target: Tensor) -> Tensor:
        """Mean squared error of the ``(batch, 1)`` predictions."""
        return F.mse_loss(pred.squeeze(-1), target)

    @staticmethod
    def per_example(pred: Tensor, target: Tensor) -> Tensor:
        """Per-example squared errors ``(batch,)``."""
        return (pred.squeeze(-1) - target).pow(2)


@dataclass(frozen=True)
class StepCase:
    """One optimizer of the section: its row name, its step factory and its position."""

    name: str
    factory: StepFactory
    order: int = 100


_CASES: dict[str, StepCase] = {}


def register_step(name: str, *, order: int = 100) -> Callable[[StepFactory], StepFactory]:
    """Decorator registering ``factory(problem) -> step`` as the step case ``name``."""

    def decorate(factory: StepFactory) -> StepFactory:
        if name == BASELINE or (name in _CASES and _CASES[name].factory is not factory):
            raise ValueError(f"a step case named {name!r} is already registered")
        _CASES[name] = StepCase(name, factory, order)
        return factory

    return decorate


def step_cases() -> list[StepCase]:
    """Every registered step case, in row order (the ``steps/`` modules are imported first)."""
    from optforge.repro.bench.registry import _discover

    _discover()
    return sorted(_CASES.values(), key=lambda c: (c.order, c.name))


def first_order_step(
    problem: StepProblem, make: Callable[[nn.Module], torch.optim.Optimizer]
) -> Callable[[], None]:
    """The step ``zero_grad(); mse(model(x), y).backward(); opt.step()`` of ``make(model)``."""
    model = problem.model()
    opt = make(model)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        problem.mse(model(problem.x), problem.y).backward()
        opt.step()

    return step


def optimizer_steps(
    device: str, sizes: tuple[int, int], repeats: int, *, batch: int = 64
) -> dict[str, dict]:
    """Step time of every registered optimizer / Adam(foreach=True)'s, at two MLP widths."""
    cases = step_cases()
    rows: dict[str, dict] = {}
    for label, width in zip(("small", "large"), sizes, strict=True):
        n_params = sum(p.numel() for p in _mlp(width, "cpu").parameters())
        problem = StepProblem.make(width, device, batch)
        steps = {BASELINE: _adam(problem), **{c.name: c.factory(problem) for c in cases}}
        median = time_interleaved(steps, device, repeats)
        for name, seconds in median.items():
            if name == BASELINE:
                continue
            rows[f"step[{label}]/{name}"] = {
                "ratio": seconds / median[BASELINE],
                "ms": 1e3 * seconds,
                "baseline_ms": 1e3 * median[BASELINE],
                "params": float(n_params),
            }
    return rows


def _adam(problem: StepProblem) -> Callable[[], None]:
    return first_order_step(problem, lambda m: torch.optim.Adam(m.parameters(), 1e-3, foreach=True))


def _mlp(width: int, device: str) -> nn.Module:
    """The section's MLP ``32 → width → width → 1`` (tanh), seeded with ``manual_seed(0)``."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1)
    ).to(device)


def _run(config: Mapping[str, Any], device: str, scale: str, repeats: int) -> dict[str, dict]:
    return optimizer_steps(device, tuple(config["sizes"]), repeats, batch=config["batch"])


register_bench(
    BenchEntry(
        name="step",
        title="one training step of an MLP / the same step with Adam(foreach=True)",
        run=_run,
        configs={
            "quick": {"sizes": (64, 512), "batch": 64},
            "full": {"sizes": (256, 1024), "batch": 64},
        },
        device_configs={"cuda": {"sizes": (1024, 4096)}},
        order=10,
    )
)
