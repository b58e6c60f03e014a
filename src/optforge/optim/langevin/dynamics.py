r"""Langevin dynamics, Euclidean or on the sphere: the :class:`Langevin` optimizer.

Update (step size :math:`h` = ``lr``, inverse temperature :math:`\beta` = ``beta``):

* Euclidean (``sphere=None``; unadjusted Langevin / SGLD when the gradient is stochastic)

  .. math:: \theta_{t+1} = \theta_t - h\,\nabla L(\theta_t) + \sqrt{2h/\beta}\;\xi_t,
            \qquad \xi_t \sim \mathcal N(0, I).

  ``noise_std = sqrt(2 * lr / beta)``. torch-sgld's ``SGLD`` and pysgmcmc use other temperature
  conventions (some scale the noise by ``sqrt(lr)`` only, some by a dataset size): convert before
  porting hyper-parameters.

* Spherical, on the sphere of radius ``r``: ``sphere="group"`` makes the whole param group one
  vector, ``sphere="tensor"`` each parameter, ``sphere="rows"`` each slice along the last dimension
  (a ``(chains, d)`` matrix of independent chains). Projected Euler–Maruyama with
  :math:`u = \theta_t/\|\theta_t\|` and :math:`P = I - u u^\top`:

  .. math:: v = -h\,P\nabla L(\theta_t) + \sqrt{2h/\beta}\;P\xi_t,\qquad
            \theta_{t+1} = r\,\frac{r u + v}{\|r u + v\|}\quad(\text{``normalize''})

  or the exponential map :math:`\theta_{t+1} = r\cos(\|v\|/r)\,u + r\sin(\|v\|/r)\,v/\|v\|`
  (``retraction="expmap"``).

Choices:

* Discretisation: projected Euler–Maruyama with renormalisation (``retraction="normalize"``,
  default), the exponential map as the alternative. A parameter not on the sphere is first
  projected radially (``r u``), so the first step also puts it on the sphere.
* ``beta=float("inf")`` is allowed and gives (Riemannian) gradient descent; no noise is drawn.
* Noise comes from a dedicated ``torch.Generator`` per device seeded with ``seed`` (never the
  global RNG) and is saved in ``state_dict``: resuming continues bit-identically, and the same
  ``seed`` on every DDP rank gives identical noise (call ``step`` after the gradient all-reduce).
  One Gaussian vector of the group's total size is drawn per group and step, in the order of the
  parameters, in float32 (float64 when a parameter of the group is float64).
* ``sphere`` modes: a parameter without ``.grad`` is skipped in Euclidean mode, as torch.optim
  does; in a spherical group it counts as zero gradient (it is part of the vector), and a group in
  which no parameter has a gradient is skipped.

Example::

    theta = torch.randn(50); theta /= theta.norm()
    theta.requires_grad_(True)
    opt = Langevin([theta], lr=0.05, beta=60.0, sphere="group", seed=0)
    for _ in range(2000):
        theta.grad = problem.grad(theta.detach())
        opt.step()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_seed,
    make_generator,
)

__all__ = ["Langevin", "Retraction", "Sphere", "langevin_noise_std"]

Sphere = Literal["group", "tensor", "rows"] | None
Retraction = Literal["normalize", "expmap"]


def langevin_noise_std(lr: float, beta: float) -> float:
    """The standard deviation ``sqrt(2 * lr / beta)`` of the injected noise (0 when β = ∞)."""
    check_nonnegative("lr", lr)
    _check_beta(beta)
    return 0.0 if math.isinf(beta) else math.sqrt(2.0 * lr / beta)


class Langevin(torch.optim.Optimizer):
    """Langevin dynamics ``θ ← θ − lr·∇L + sqrt(2·lr/β)·ξ``, optionally on a sphere.

    Args:
        params: parameters or param-group dicts, as for any ``torch.optim`` optimizer.
        lr: step size ``h`` (> 0).
        beta: inverse temperature ``β`` (> 0; ``float("inf")`` means no noise).
        sphere: ``None`` (Euclidean), ``"group"`` (each param group is one vector on the sphere)
            ``"tensor"`` (each parameter on its own sphere) or ``"rows"`` (each slice along the
            last dimension on its own sphere: a ``(chains, d)`` parameter runs independent
            chains whose gradients come from one batched matmul).
        radius: radius ``r`` of the sphere (> 0).
        retraction: ``"normalize"`` (projected Euler–Maruyama) or ``"expmap"``.
        seed: seed of the dedicated noise generator(s) (``None``: derived from
            ``torch.initial_seed()``). Use the same seed on every DDP rank.
        generator: an explicit generator to use for the parameters on its device (its state is
            saved and restored by ``state_dict``; ``seed`` is then only used for other devices).

    Raises:
        ValueError: a bad ``lr``, ``beta``, ``radius``, ``sphere`` or ``retraction`` (in the
            constructor or in a group given to ``add_param_group``, which then adds nothing), or a
            spherical group whose initial vector has zero (or non-finite) norm.
        TypeError: a ``seed`` that is not an integer.
        NotImplementedError: complex parameters.

    ``step`` checks every group before it changes anything: a non-finite gradient (or a
    spherical parameter with zero or non-finite norm) raises ``ValueError`` and leaves the
    parameters, ``state['step']`` and the noise generators as they were.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        beta: float = 1.0,
        *,
        sphere: Sphere = None,
        radius: float = 1.0,
        retraction: Retraction = "normalize",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_hyperparams(lr, beta, sphere, radius, retraction)
        check_seed("seed", seed)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        defaults = {
            "lr": lr,
            "beta": beta,
            "sphere": sphere,
            "radius": radius,
            "retraction": retraction,
        }
        super().__init__(params, defaults)
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}
        if generator is not None:
            self._generators[str(generator.device)] = generator

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group (hyper-parameters, complex params, sphere norms), then add it."""
        group = _listed(param_group)
        merged = {**self.defaults, **group}
        _check_hyperparams(
            merged["lr"], merged["beta"], merged["sphere"], merged["radius"], merged["retraction"]
        )
        for p in group["params"]:
            if isinstance(p, Tensor) and p.is_complex():
                raise NotImplementedError("Langevin does not support complex parameters")
        _check_initial_norms(merged)
        super().add_param_group(group)

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = make_generator(self.seed, device)
        return self._generators[key]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One Langevin step for every param group; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Check every group first: a step that raises changes nothing (no parameter, no
        # state['step'], no noise drawn).
        plan = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["sphere"] is not None:
                params = list(group["params"])
            for p in params:
                if p.grad is not None and p.grad.is_sparse:
                    raise NotImplementedError("Langevin does not support sparse gradients")
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            plan.append((group, params, grads))
        _check_grads_finite([g for _, _, grads in plan for g in grads])
        for group, _, _ in plan:
            _check_initial_norms(group)  # a spherical vector needs a finite, non-zero norm
        for group, params, grads in plan:
            for p in params:
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
            lr, beta = float(group["lr"]), float(group["beta"])
            std = langevin_noise_std(lr, beta)
            noise = self._draw_noise(params) if std > 0 else None
            if group["sphere"] is None:
                _euclidean_update(params, grads, noise, lr, std)
            else:
                vectors = [params] if group["sphere"] == "group" else [[p] for p in params]
                offsets = _offsets(vectors)
                for vec, (start, stop) in zip(vectors, offsets, strict=True):
                    vec_grads = grads[start:stop]
                    vec_noise = None if noise is None else noise[start:stop]
                    _sphere_update(
                        vec,
                        vec_grads,
                        vec_noise,
                        lr,
                        std,
                        group["radius"],
                        group["retraction"],
                        rows=group["sphere"] == "rows",
                    )
        return loss

    def _draw_noise(self, params: Sequence[Tensor]) -> list[Tensor]:
        """One standard normal vector of the params' total size, split into their shapes."""
        device = params[0].device
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        flat = torch.randn(
            sum(p.numel() for p in params),
            generator=self._generator(device),
            device=device,
            dtype=dtype,
        )
        pieces = flat.split([p.numel() for p in params])
        return [x.view(p.shape).to(p.device) for x, p in zip(pieces, params, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state dict plus the seed and every device generator's state."""
        state = super().state_dict()
        state["langevin_seed"] = self.seed
        state["generator_states"] = {k: g.get_state() for k, g in self._generators.items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the optimizer state and the noise generators (bit-identical continuation)."""
        state_dict = dict(state_dict)
        gen_states = state_dict.pop("generator_states", {})
        self.seed = state_dict.pop("langevin_seed", self.seed)
        super().load_state_dict(state_dict)
        for key, gen_state in gen_states.items():
            generator = self._generators.get(key) or make_generator(self.seed, key)
            generator.set_state(gen_state)
            self._generators[key] = generator


# --------------------------------------------------------------------------- private helpers


def _check_hyperparams(
    lr: float, beta: float, sphere: Sphere, radius: float, retraction: Retraction
) -> None:
    check_positive("lr", lr)
    _check_beta(beta)
    check_choice("sphere", sphere, (None, "group", "tensor", "rows"))
    check_positive("radius", radius)
    check_choice("retraction", retraction, ("normalize", "expmap"))


def _listed(param_group: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``param_group`` whose ``params`` is a list (as torch stores it)."""
    if not isinstance(param_group, dict):
        raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
    params = param_group.get("params")
    if isinstance(params, Tensor):
        params = [params]
    elif isinstance(params, set):
        raise TypeError("params: parameters must be an ordered collection, not a set")
    elif params is not None:
        params = list(params)
    return {**param_group, "params": params if params is not None else []}


def _check_beta(beta: float) -> None:
    if not isinstance(beta, Real) or isinstance(beta, bool) or math.isnan(beta) or beta <= 0:
        raise ValueError(f"beta must be > 0 (float('inf') for no noise), got {beta!r}")


def _check_initial_norms(group: dict[str, Any]) -> None:
    """``ValueError`` if a vector of a spherical group cannot be projected onto the sphere."""
    mode, params = group["sphere"], list(group["params"])
    if mode == "group":
        _checked_norm(params, "params")
    elif mode == "tensor":
        for p in params:
            _checked_norm([p], "params")
    elif mode == "rows":
        for p in params:
            row_norms = torch.linalg.vector_norm(
                p.detach().double().reshape(-1, p.shape[-1] if p.dim() else 1), dim=-1
            )
            if not bool((torch.isfinite(row_norms) & (row_norms > 0)).all()):
                raise ValueError(
                    "params: with sphere='rows' every row needs a finite, non-zero norm to be "
                    "projected onto the sphere"
                )


def _offsets(vectors: Sequence[Sequence[Tensor]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for vec in vectors:
        out.append((start, start + len(vec)))
        start += len(vec)
    return out


def _checked_norm(vector: Sequence[Tensor], name: str) -> Tensor:
    """The Euclidean norm of the concatenated tensors; ``ValueError`` if zero or non-finite."""
    norms = torch.stack([torch.linalg.vector_norm(p.detach().double()) for p in vector])
    norm = torch.linalg.vector_norm(norms)
    value = float(norm)
    if not math.isfinite(value) or value == 0.0:
        raise ValueError(
            f"{name}: a spherical vector needs a finite, non-zero norm to be projected onto the "
            f"sphere, got norm {value}"
        )
    return norm


def _check_grads_finite(grads: Sequence[Tensor]) -> None:
    """One host sync for all groups: ``ValueError`` naming the cause if a gradient is not finite."""
    if not grads:
        return
    finite = torch.stack([torch.isfinite(g).all().to(grads[0].device) for g in grads]).all()
    if not bool(finite):
        raise ValueError(
            "Langevin.step: non-finite gradient (NaN or inf); no parameter or state was changed"
        )


def _euclidean_update(
    params: list[Tensor], grads: list[Tensor], noise: list[Tensor] | None, lr: float, std: float
) -> None:
    torch._foreach_add_(params, grads, alpha=-lr)
    if noise is not None:
        torch._foreach_add_(params, noise, alpha=std)


def _sphere_update(
    params: list[Tensor],
    grads: list[Tensor],
    noise: list[Tensor] | None,
    lr: float,
    std: float,
    radius: float,
    retraction: Retraction,
    *,
    rows: bool = False,
) -> None:
    """Projected Langevin step on the sphere, in place.

    The vectors are the rows of ``theta``: one row (the concatenated ``params``) or, with
    ``rows=True``, every slice along the last dimension of the single parameter.
    """
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32

    def as_matrix(tensors: Sequence[Tensor]) -> Tensor:
        if rows:
            (t,) = tensors
            return t.detach().reshape(-1, t.shape[-1] if t.dim() else 1).to(dtype)
        return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors]).unsqueeze(0)

    theta = as_matrix(params)
    grad = as_matrix(grads)
    norm = torch.linalg.vector_norm(theta, dim=-1, keepdim=True)  # > 0: checked by step
    u = theta / norm
    step = -lr * (grad - (grad * u).sum(-1, keepdim=True) * u)
    if noise is not None:
        xi = as_matrix(noise)
        step = step + std * (xi - (xi * u).sum(-1, keepdim=True) * u)
    if retraction == "normalize":
        new = radius * u + step
        new = radius * new / torch.linalg.vector_norm(new, dim=-1, keepdim=True)
    else:
        size = torch.linalg.vector_norm(step, dim=-1, keepdim=True)
        direction = step / size.clamp_min(torch.finfo(dtype).tiny)
        angle = size / radius
        new = radius * (torch.cos(angle) * u + torch.sin(angle) * direction)
    if rows:
        params[0].copy_(new.view(params[0].shape))
        return
    pieces = new.reshape(-1).split([p.numel() for p in params])
    torch._foreach_copy_(params, [x.view(p.shape) for x, p in zip(pieces, params, strict=True)])
