r"""Annealed Gaussian gradient noise.

Paper: Arvind Neelakantan, Luke Vilnis, Quoc V. Le, Ilya Sutskever, Lukasz Kaiser, Karol Kurach,
James Martens, "Adding Gradient Noise Improves Learning for Very Deep Networks",
arXiv:1511.06807 (2015).

At every optimizer update ``t = 0, 1, 2, ...`` the gradient of every parameter receives
independent Gaussian noise before the base optimizer uses it:

.. math::

    \hat g_t = g_t + \sigma_t\,\varepsilon_t,\qquad \varepsilon_t \sim \mathcal N(0, I),\qquad
    \sigma_t^2 = \frac{\eta}{(1 + t)^{\gamma}}.

``eta`` is a **variance** scale: the standard deviation is ``sqrt(eta) / (1 + t) ** (gamma / 2)``,
so the first step has std ``sqrt(eta)``, not ``eta``. (ESPnet/FunASR's ``add_gradient_noise`` uses
``eta / (1 + t // duration) ** gamma`` directly as the std, in blocks of ``duration`` iterations:
to port their hyper-parameters, take ``eta_optforge = eta_espnet ** 2`` and ``duration = 1``.)
The paper's defaults are ``gamma = 0.55`` and ``eta`` in {0.01, 0.3, 1.0}; optax's
``add_noise(eta, gamma, seed)`` and Chainer's ``GradientNoise`` hook use the same schedule.

Two forms, neither hides the base optimizer:

* :class:`NoisyOptimizer` wraps any ``torch.optim`` optimizer. Its ``param_groups`` and ``state``
  are the base optimizer's own objects, so LR schedulers, ``GradScaler`` and checkpoints work.
* :class:`GradientNoise` adds the noise to ``.grad`` of given parameters when called, or from an
  optimizer step pre-hook after :meth:`GradientNoise.attach`.

Order of operations: noise is added **once per optimizer update** — to the accumulated gradient
when gradients are accumulated over micro-batches — **after** gradient clipping and, with a
``torch.amp.GradScaler``, after ``scaler.unscale_`` (``scaler.step(optimizer)`` unscales before it
calls ``optimizer.step()``, so both forms see unscaled gradients). ``NoisyOptimizer`` can clip for
you in either order (``max_grad_norm``, ``clip="before_noise" | "after_noise"``).

Noise comes from a dedicated ``torch.Generator`` per device seeded with ``seed`` (the global RNG is
never touched). Under DDP, call it after the gradient all-reduce with the same ``seed`` on every
rank: all replicas add the same noise and stay identical. With an adaptive base optimizer (Adam)
the noise also enters the second-moment estimate, which inflates ``v`` and shrinks early steps —
this is the paper's setting for several tasks, but it means the same ``eta`` is not comparable
between SGD and Adam.

Example::

    model = torch.nn.Linear(10, 1)
    opt = NoisyOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), eta=0.01, seed=0)
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()          # noise with std sqrt(0.01 / (1 + t) ** 0.55), then SGD
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from optforge._core import check_nonnegative, check_nonnegative_int, check_seed, make_generator

__all__ = [
    "GradientNoise",
    "NoisyOptimizer",
    "VarianceSchedule",
    "add_gradient_noise_",
    "annealed_noise_std",
]

VarianceSchedule = Callable[[int], float]
"""A custom noise schedule: update index ``t -> variance``."""


def annealed_noise_std(t: int, eta: float, gamma: float = 0.55) -> float:
    """The noise standard deviation ``sqrt(eta / (1 + t) ** gamma)`` at update ``t``."""
    check_nonnegative_int("t", t)
    check_nonnegative("eta", eta)
    check_nonnegative("gamma", gamma)
    return (eta / (1.0 + t) ** gamma) ** 0.5


@torch.no_grad()
def add_gradient_noise_(
    grads: Iterable[Tensor], std: float, generator: torch.Generator | None = None
) -> None:
    """Add ``std * N(0, I)`` in place to every tensor of ``grads`` (the functional form).

    One ``randn`` call per (device, dtype) draws all the noise as a flat buffer, which is then
    added with ``torch._foreach_add_``. The tensors are visited in the given order, so the same
    generator state gives the same noise. ``generator`` must live on the tensors' device
    (``None`` uses the global generator).
    """
    check_nonnegative("std", std)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(grads, Tensor):
        raise TypeError("grads must be an iterable of tensors, not a single tensor")
    grads = list(grads)
    for g in grads:
        if not isinstance(g, Tensor):
            raise TypeError(f"grads must contain tensors, got {type(g).__name__}")
        if not g.is_floating_point():
            raise TypeError(f"grads must be floating-point tensors, got dtype {g.dtype}")
        if generator is not None and g.device.type != generator.device.type:
            raise ValueError(
                f"generator is on {generator.device} but a gradient is on {g.device}; use a "
                "generator on the gradients' device"
            )
    if std == 0.0 or not grads:
        return
    buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
    for g in grads:
        if g.is_sparse:
            raise NotImplementedError("gradient noise does not support sparse gradients")
        buckets[(g.device, g.dtype)].append(g)
    for (device, dtype), tensors in buckets.items():
        flat = torch.randn(
            sum(t.numel() for t in tensors), generator=generator, device=device, dtype=dtype
        )
        noise = [
            chunk.view_as(t)
            for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)
        ]
        torch._foreach_add_(tensors, noise, alpha=std)


class GradientNoise:
    """Adds annealed Gaussian noise to the ``.grad`` of ``params`` each time it is called.

    Args:
        params: the parameters (or param-group dicts) whose gradients receive noise.
        eta: variance scale η ≥ 0 (the first call has std ``sqrt(eta)``).
        gamma: annealing exponent γ ≥ 0 (0 gives constant noise).
        seed: seed of the dedicated generator (``None``: derived from ``torch.initial_seed()``).
        schedule: optional ``t -> variance``; replaces ``eta / (1 + t) ** gamma``.
        start_step: the value of ``t`` at the first call.

    Call it between ``backward()`` (and clipping) and ``optimizer.step()``, or
    :meth:`attach` it to an optimizer so it runs as a step pre-hook. Parameters whose ``.grad``
    is ``None`` are skipped.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        eta: float = 0.01,
        gamma: float = 0.55,
        *,
        seed: int | None = None,
        schedule: VarianceSchedule | None = None,
        start_step: int = 0,
    ) -> None:
        check_nonnegative("eta", eta)
        check_nonnegative("gamma", gamma)
        start_step = check_nonnegative_int("start_step", start_step)
        check_seed("seed", seed)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must be callable, got {type(schedule).__name__}")
        self.params = _flatten_params(params)
        self.eta = float(eta)
        self.gamma = float(gamma)
        self.schedule = schedule
        self.seed = int(torch.initial_seed() if seed is None else seed)
        self.step_count = start_step
        self._generators: dict[str, torch.Generator] = {}

    def variance(self, t: int | None = None) -> float:
        """The noise variance at update ``t`` (default: the next call's)."""
        t = self.step_count if t is None else t
        if self.schedule is not None:
            value = float(self.schedule(t))
            if not value >= 0:
                raise ValueError(f"schedule returned a negative or NaN variance {value} at t={t}")
            return value
        return annealed_noise_std(t, self.eta, self.gamma) ** 2

    def std(self, t: int | None = None) -> float:
        """The noise standard deviation at update ``t`` (default: the next call's)."""
        return self.variance(t) ** 0.5

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = make_generator(self.seed, device)
        return self._generators[key]

    @torch.no_grad()
    def __call__(self) -> float:
        """Add noise to the current gradients, advance ``t``; returns the std that was used."""
        std = self.std()
        grads = [p.grad for p in self.params if p.grad is not None]
        by_device: dict[torch.device, list[Tensor]] = defaultdict(list)
        for g in grads:
            by_device[g.device].append(g)
        for device, tensors in by_device.items():
            add_gradient_noise_(tensors, std, self._generator(device))
        self.step_count += 1
        return std

    def attach(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Run this object as a step pre-hook of ``optimizer`` (after user clipping)."""

        def hook(_optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
            self()

        return optimizer.register_step_pre_hook(hook)

    def state_dict(self) -> dict[str, Any]:
        """The step count, seed and each device generator's state."""
        return {
            "step_count": self.step_count,
            "seed": self.seed,
            "eta": self.eta,
            "gamma": self.gamma,
            "generator_states": {k: g.get_state() for k, g in self._generators.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the noise continues identically)."""
        self.step_count = int(state["step_count"])
        self.seed = int(state["seed"])
        self.eta = float(state["eta"])
        self.gamma = float(state["gamma"])
        self._generators = {}
        for key, gen_state in state["generator_states"].items():
            generator = make_generator(self.seed, key)
            generator.set_state(gen_state)
            self._generators[key] = generator


class NoisyOptimizer(torch.optim.Optimizer):
    """Wrap ``base`` so that each ``step()`` adds annealed Gaussian noise to the gradients first.

    Args:
        base: any ``torch.optim`` optimizer; its ``param_groups`` and ``state`` are shared, not
            copied.
        eta: variance scale η ≥ 0.
        gamma: annealing exponent γ ≥ 0.
        seed: seed of the dedicated noise generator (same seed on every DDP rank).
        schedule: optional ``t -> variance`` replacing the paper's schedule.
        max_grad_norm: if given, clip the global gradient norm to it inside ``step``; a NaN or
            inf gradient norm then raises ``RuntimeError`` instead of reaching the parameters.
        clip: ``"before_noise"`` (default: the noise itself is never clipped) or
            ``"after_noise"``.
        check_finite: without clipping, raise ``FloatingPointError`` when a gradient is NaN or
            inf (one host sync per step). Off by default: like ``torch.optim``, a non-finite
            gradient then reaches the base optimizer (the clipping path always checks).

    A step that raises (a non-finite gradient with ``max_grad_norm`` or ``check_finite``, or an
    error of the base optimizer) leaves the noise schedule and generators as they were: the
    retried step draws the same noise.

    ``state_dict()`` nests ``{"base": base.state_dict(), "noise": ...}`` and
    ``load_state_dict`` restores both, so a resumed run draws the same noise.
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        eta: float = 0.01,
        gamma: float = 0.55,
        *,
        seed: int | None = None,
        schedule: VarianceSchedule | None = None,
        max_grad_norm: float | None = None,
        clip: Literal["before_noise", "after_noise"] = "before_noise",
        check_finite: bool = False,
    ) -> None:
        if not isinstance(base, torch.optim.Optimizer):
            raise TypeError(f"base must be a torch.optim.Optimizer, got {type(base).__name__}")
        if max_grad_norm is not None:
            check_nonnegative("max_grad_norm", max_grad_norm)
        if clip not in ("before_noise", "after_noise"):
            raise ValueError(f"clip must be 'before_noise' or 'after_noise', got {clip!r}")
        # Initialise the Optimizer machinery (hooks, step patching) on a placeholder group, then
        # share the base's containers so schedulers, GradScaler and users see one set of groups
        # and one state.
        super().__init__([{"params": [torch.zeros(1)]}], dict(base.defaults))
        self.base = base
        self.noise = GradientNoise(
            [p for group in base.param_groups for p in group["params"]],
            eta,
            gamma,
            seed=seed,
            schedule=schedule,
        )
        self.max_grad_norm = max_grad_norm
        self.clip = clip
        self.check_finite = bool(check_finite)
        self.param_groups = base.param_groups
        self.state = base.state
        self.defaults = base.defaults

    def __repr__(self) -> str:
        return (
            f"NoisyOptimizer(eta={self.noise.eta}, gamma={self.noise.gamma}, "
            f"seed={self.noise.seed}, base={self.base!r})"
        )

    def _clip(self) -> None:
        if self.max_grad_norm is not None:
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            # error_if_nonfinite: a NaN/inf gradient is reported here instead of being
            # propagated into the parameters (the norm is computed for clipping anyway).
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm, error_if_nonfinite=True)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """Evaluate ``closure`` (if any), clip, add noise once, then step the base optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.check_finite and self.max_grad_norm is None:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
                raise FloatingPointError(
                    "NoisyOptimizer.step: non-finite gradient (NaN or inf); no noise was drawn "
                    "and the base optimizer did not step"
                )
        if self.clip == "before_noise":
            self._clip()
        saved_noise = self.noise.state_dict()
        try:
            self.noise.params = [p for g in self.param_groups for p in g["params"]]
            self.noise()
            if self.clip == "after_noise":
                self._clip()
            self.base.step()
        except BaseException:
            self.noise.load_state_dict(saved_noise)  # the retried step draws the same noise
            raise
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Called once by Optimizer.__init__ with a placeholder before ``base`` is shared.
        if "base" not in self.__dict__:
            super().add_param_group(param_group)
            return
        self.base.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base.state_dict(), "noise": self.noise.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"base", "noise"}:
            raise ValueError(
                "state_dict must be a NoisyOptimizer state_dict with keys 'base' and 'noise', "
                f"got keys {sorted(state_dict)}"
            )
        self.base.load_state_dict(state_dict["base"])
        self.noise.load_state_dict(state_dict["noise"])
        # torch's load_state_dict replaces the base's containers: share the new ones again.
        self.param_groups = self.base.param_groups
        self.state = self.base.state


def _flatten_params(params: Iterable[Tensor] | Iterable[dict[str, Any]]) -> list[Tensor]:
    if isinstance(params, Tensor):
        raise TypeError("params must be an iterable of tensors or dicts, not a single tensor")
    flat: list[Tensor] = []
    for item in params:
        if isinstance(item, dict):
            flat.extend(item["params"])
        elif isinstance(item, Tensor):
            flat.append(item)
        else:
            raise TypeError(f"params must contain tensors or dicts, got {type(item).__name__}")
    return flat
