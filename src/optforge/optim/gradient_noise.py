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

import itertools
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from optforge._core import (
    DTensorNotSupportedError,
    check_nonnegative,
    check_nonnegative_int,
    check_seed,
    make_generator,
)

__all__ = [
    "GradientNoise",
    "NoisyOptimizer",
    "VarianceSchedule",
    "add_gradient_noise_",
    "annealed_noise_std",
    "draw_normal",
]

VarianceSchedule = Callable[[int], float]
"""A custom noise schedule: update index ``t -> variance``."""

# ---------------------------------------------------------------- draws visible to torch.compile
# A ``torch.Generator`` cannot enter a dynamo graph ("opaque object"). Inside a compiled region
# the draw goes through the custom op ``optforge::normal``, which names its generator by an
# integer key of this registry; the op runs the very same ``torch.randn(..., generator=g)`` at
# run time, so compiled and eager steps draw identical numbers from the same stream. The op is
# tagged ``nondeterministic_seeded`` (never merged or reordered as a pure op) and every draw of a
# step takes the previous draw as an ordering token.
_GENERATORS: weakref.WeakValueDictionary[int, torch.Generator] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


def register_generator(generator: torch.Generator) -> int:
    """The key under which ``optforge::normal`` finds ``generator`` (held weakly)."""
    key = next(_KEYS)
    _GENERATORS[key] = generator
    return key


def _normal_eager(
    key: int, numel: int, dtype: torch.dtype, device: torch.device, after: Tensor | None = None
) -> Tensor:
    return torch.randn(numel, generator=_GENERATORS[key], dtype=dtype, device=device)


try:
    _normal_op = torch.library.custom_op(
        "optforge::normal", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,)
    )(_normal_eager)

    @_normal_op.register_fake
    def _normal_fake(
        key: int, numel: int, dtype: torch.dtype, device: torch.device, after: Tensor | None = None
    ) -> Tensor:
        return torch.empty(numel, dtype=dtype, device=device)

except RuntimeError:  # pragma: no cover - module re-imported: the op is already registered
    _normal_op = torch.ops.optforge.normal


# ------------------------------------------------------------------ FSDP2 / DTensor parameters
# Under FSDP2 (``fully_shard``) parameters and gradients are DTensors sharded along a dimension.
# The noise stays one global stream: every rank draws the flat vector of the *global* sizes with
# the same seed and adds the slice that its shard covers, so the result is the one of a single
# process whatever the world size (the draw is not split: each rank pays the full ``randn``).
# The updates run on the local shards (no DTensor dispatch); reductions (norms, sums) are
# all-reduced over the mesh dimensions the tensor is sharded on.


_DTENSOR: list[type] = []


def _dtensor_type() -> type | None:
    if not _DTENSOR:
        if not torch.distributed.is_available():  # pragma: no cover - builds without it
            return None
        from torch.distributed.tensor import DTensor

        _DTENSOR.append(DTensor)
    return _DTENSOR[0]


def is_sharded(t: Tensor) -> bool:
    """Whether ``t`` is a DTensor (an FSDP2 / tensor-parallel parameter or gradient)."""
    return type(t) is not Tensor and isinstance(t, _dtensor_type() or ())


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (the same storage), or ``t`` itself."""
    return t.to_local() if is_sharded(t) else t


def local_part(piece: Tensor, like: Tensor) -> Tensor:
    """The part of ``piece`` (a tensor of ``like``'s global shape) that ``like``'s shard holds."""
    if not is_sharded(like):
        return piece
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(
        like.shape, like.device_mesh, like.placements
    )
    return piece[tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))]


def sum_over_shards(x: Tensor, like: Tensor) -> Tensor:
    """All-reduce (sum, in place) ``x`` over the mesh dimensions ``like`` is sharded on.

    ``x`` holds per-shard partial sums; a plain ``like`` leaves it as it is.
    """
    if not is_sharded(like):
        return x
    from torch.distributed.tensor import Replicate, Shard

    for dim, placement in enumerate(like.placements):
        if isinstance(placement, Shard):
            torch.distributed.all_reduce(x, group=like.device_mesh.get_group(dim))
        elif not isinstance(placement, Replicate):
            raise DTensorNotSupportedError(
                f"parameters with a {placement} placement are not supported (FSDP2 shards "
                "and replicas are)"
            )
    return x


def draw_normal(
    generator: torch.Generator,
    key: int,
    numel: int,
    dtype: torch.dtype,
    device: torch.device,
    after: Tensor | None = None,
) -> Tensor:
    """``torch.randn(numel, generator=generator)``, also inside ``torch.compile(fullgraph=True)``.

    ``key`` is :func:`register_generator`'s key of ``generator``; ``after`` (the previous draw of
    the same step) orders the draws in a compiled graph.
    """
    if torch.compiler.is_compiling():
        return _normal_op(key, numel, dtype, torch.device(device), after)
    return torch.randn(numel, generator=generator, dtype=dtype, device=device)


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
    added with ``torch._foreach_add_``. DTensor (FSDP2) gradients receive the slice of the global
    draw that their shard covers, so every world size adds the noise of one process. The tensors
    are visited in the given order, so the same generator state gives the same noise.
    ``generator`` must live on the tensors' device (``None`` uses the global generator).
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
        chunks = flat.split([t.numel() for t in tensors])
        if any(is_sharded(t) for t in tensors):  # FSDP2: this shard's part of the global draw
            noise = [local_part(x.view(t.shape), t) for x, t in zip(chunks, tensors, strict=True)]
            tensors = [local(t) for t in tensors]
        else:
            noise = [x.view_as(t) for x, t in zip(chunks, tensors, strict=True)]
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
        # The update index: a Python int for eager calls (no tensor op on the hot path) and a
        # 0-dim tensor that a compiled call reads and advances inside the graph (an int would be
        # baked into the graph and recompile every step). The flags say which one is current.
        self._count = start_step
        self._t = torch.tensor(start_step, dtype=torch.int64)
        self._t_current = True  # _t == _count
        self._count_current = True  # _count == _t
        self._generators: dict[str, torch.Generator] = {}
        self._keys: dict[str, int] = {}
        for p in self.params:  # before the first call: a compiled step cannot create one
            self._generator(p.device)

    @property
    def step_count(self) -> int:
        """The update index ``t`` of the next call."""
        if not self._count_current:  # compiled calls advanced the tensor
            self._count, self._count_current = int(self._t), True
        return self._count

    @step_count.setter
    def step_count(self, value: int) -> None:
        self._count = check_nonnegative_int("step_count", value)
        self._t.fill_(self._count)
        self._t_current = self._count_current = True

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
            self._keys[key] = register_generator(self._generators[key])
        return self._generators[key]

    @torch.no_grad()
    def __call__(self) -> float | Tensor:
        """Add noise to the current gradients, advance ``t``; returns the std that was used.

        Inside ``torch.compile`` the std is computed from the tensor ``t`` (a 0-dim tensor is
        returned) so the graph does not depend on the step; a custom ``schedule`` there is
        called with the Python ``t`` and breaks the graph.
        """
        grads = [p.grad for p in self.params if p.grad is not None]
        if torch.compiler.is_compiling() and self.schedule is None:
            if not self._t_current:  # eager calls advanced the int (one extra graph, once)
                self._t.fill_(self._count)
                self._t_current = True
            std_t = (self.eta / (1.0 + self._t.double()) ** self.gamma).sqrt()
            if self.eta > 0:
                self._add_compiled(grads, std_t)
            self._t.add_(1)
            self._count_current = False
            return std_t
        std = self.std()
        by_device: dict[torch.device, list[Tensor]] = defaultdict(list)
        for g in grads:
            by_device[g.device].append(g)
        for device, tensors in by_device.items():
            add_gradient_noise_(tensors, std, self._generator(device))
        self._count += 1
        self._t_current = False
        return std

    def _add_compiled(self, grads: list[Tensor], std: Tensor) -> None:
        """The draws of :func:`add_gradient_noise_` (same layout, same stream), traceable."""
        buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
        for g in grads:
            buckets[(g.device, g.dtype)].append(g)
        by_device: dict[torch.device, list[tuple[torch.dtype, list[Tensor]]]] = defaultdict(list)
        for (device, dtype), tensors in buckets.items():
            by_device[device].append((dtype, tensors))
        for device, items in by_device.items():
            generator = self._generator(device)
            key = self._keys[str(device)]
            token = None
            for dtype, tensors in items:
                flat = draw_normal(
                    generator, key, sum(t.numel() for t in tensors), dtype, device, token
                )
                token = flat
                scaled = flat.mul(std.to(device))
                noise = [
                    chunk.view_as(t)
                    for chunk, t in zip(
                        scaled.split([t.numel() for t in tensors]), tensors, strict=True
                    )
                ]
                torch._foreach_add_(tensors, noise)

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
        """Restore what :meth:`state_dict` returned (the noise continues identically).

        Existing generators are restored in place (a compiled step keeps using them).
        """
        self.step_count = int(state["step_count"])
        self.seed = int(state["seed"])
        self.eta = float(state["eta"])
        self.gamma = float(state["gamma"])
        for key in list(self._generators):
            if key not in state["generator_states"]:
                self._generators[key].manual_seed(self.seed)
        for key, gen_state in state["generator_states"].items():
            self._generator(torch.device(key)).set_state(gen_state)


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

    ``state_dict()`` is the base's state dict plus ``"gradient_noise"`` (schedule step, seed,
    generator states); ``load_state_dict`` restores both, so a resumed run draws the same noise,
    and also accepts the older nested ``{"base": ..., "noise": ...}`` format.
    :meth:`noise_std` gives the per-group noise std of the next step for logging.
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
        """Evaluate ``closure`` (if any), clip, add noise once, then step the base optimizer.

        Inside ``torch.compile`` the ``check_finite`` test (a host sync) and the restore-on-error
        snapshot of the generators are skipped; clipping with ``max_grad_norm`` still runs.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.compiler.is_compiling():
            if self.clip == "before_noise":
                self._clip()
            self.noise.params = [p for g in self.param_groups for p in g["params"]]
            self.noise()
            if self.clip == "after_noise":
                self._clip()
            self.base.step()
            return loss
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

    def noise_std(self) -> list[float]:
        """The noise std the next ``step()`` adds, one entry per param group (for logging).

        The schedule is global, so every group has the same value ``sqrt(variance(t))``.
        """
        std = self.noise.std()
        return [std] * len(self.param_groups)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Called once by Optimizer.__init__ with a placeholder before ``base`` is shared.
        if "base" not in self.__dict__:
            super().add_param_group(param_group)
            return
        self.base.add_param_group(param_group)
        for p in self.base.param_groups[-1]["params"]:
            self.noise._generator(p.device)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (``"state"``, ``"param_groups"``, ...) plus the noise
        schedule and generators under ``"gradient_noise"``.

        The top level is the base's own, so ``torch.distributed.checkpoint``'s
        ``get_optimizer_state_dict(model, noisy_opt)`` accepts the wrapper directly (it keeps
        ``state`` and ``param_groups`` only: save ``opt.noise.state_dict()`` beside it to resume
        the noise stream).
        """
        state = dict(self.base.state_dict())
        if "gradient_noise" in state:
            raise RuntimeError("the base optimizer's state_dict already has a 'gradient_noise' key")
        state["gradient_noise"] = self.noise.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output, or the older nested ``{"base", "noise"}`` format.

        Without a ``"gradient_noise"`` entry (a plain base-optimizer state dict, e.g. from the DCP
        helpers) only the base is restored and the noise schedule and generators are kept.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        if set(state_dict) == {"base", "noise"}:  # the earlier nested format
            base_state, noise_state = state_dict["base"], state_dict["noise"]
        else:
            base_state = dict(state_dict)
            noise_state = base_state.pop("gradient_noise", None)
            if "state" not in base_state or "param_groups" not in base_state:
                raise ValueError(
                    "state_dict must be a NoisyOptimizer state_dict (the base's 'state' and "
                    "'param_groups' plus 'gradient_noise', or the nested {'base', 'noise'}), got "
                    f"keys {sorted(state_dict)}"
                )
        self.base.load_state_dict(base_state)
        if noise_state is not None:
            self.noise.load_state_dict(noise_state)
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
