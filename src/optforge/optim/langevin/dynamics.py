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
  parameters, in float32 (float64 when a parameter of the group is float64), on the device of the
  group's first parameter. Under FSDP2 (DTensor parameters) that vector has the *global* sizes
  and each rank adds the slice its shard holds (same result for every world size).
* The step is vectorised: ``_foreach_`` updates in Euclidean mode, one batched computation per
  distinct vector length on the sphere, at most one host sync (``check_finite``). It compiles
  with ``torch.compile(fullgraph=True)`` (the draw is the custom op ``optforge::normal`` reading
  the same generator); ``lr`` may be a 0-dim tensor.
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
    DTensorNotSupportedError,
    check_choice,
    check_nonnegative,
    check_positive,
    check_seed,
    make_generator,
)
from optforge.optim.gradient_noise import (
    draw_normal,
    is_sharded,
    local,
    local_part,
    register_generator,
    sum_over_shards,
)

__all__ = ["Langevin", "Retraction", "Sphere", "langevin_noise_std"]

Sphere = Literal["group", "tensor", "rows"] | None
Retraction = Literal["normalize", "expmap"]


def langevin_noise_std(lr: float | Tensor, beta: float) -> float | Tensor:
    """The standard deviation ``sqrt(2 * lr / beta)`` of the injected noise (0 when β = ∞).

    A tensor ``lr`` gives a 0-dim tensor.
    """
    _check_beta(beta)
    if isinstance(lr, Tensor):
        return torch.zeros_like(lr) if math.isinf(beta) else (2.0 * lr / beta).sqrt()
    check_nonnegative("lr", lr)
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
        seed: seed of the dedicated noise generator(s) (``None``: ``torch.initial_seed()`` when
            the optimizer is built). Use the same seed on every DDP rank.
        generator: an explicit generator to use for the parameters on its device (its state is
            saved and restored by ``state_dict``; ``seed`` is then only used for other devices).
        check_finite: check, before changing anything, that every gradient is finite and every
            spherical vector has a finite non-zero norm (one host sync per step; default).
            ``False`` (or inside ``torch.compile``, where a step cannot raise on data) skips the
            check: a NaN gradient then reaches the parameters, as in ``torch.optim``.

    ``lr`` may be a 0-dim tensor (a scheduler then changes it without recompiling a compiled
    step). :meth:`noise_std` gives each group's noise std ``sqrt(2·lr/β)`` for logging.

    Raises:
        ValueError: a bad ``lr``, ``beta``, ``radius``, ``sphere`` or ``retraction`` (in the
            constructor or in a group given to ``add_param_group``, which then adds nothing), or a
            spherical group whose initial vector has zero (or non-finite) norm.
        TypeError: a ``seed`` that is not an integer.
        NotImplementedError: complex parameters.

    With ``check_finite`` (default) ``step`` checks every group before it changes anything: a
    non-finite gradient (or a spherical parameter with zero or non-finite norm) raises
    ``ValueError`` and leaves the parameters, ``state['step']`` and the noise generators as they
    were.
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
        check_finite: bool = True,
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
        self.check_finite = bool(check_finite)
        self._generators: dict[str, torch.Generator] = {}
        self._keys: dict[str, int] = {}
        if generator is not None:
            self._generators[str(generator.device)] = generator
            self._keys[str(generator.device)] = register_generator(generator)
        # Generators exist before the first step: a compiled step cannot create one.
        for group in self.param_groups:
            for p in group["params"]:
                self._generator(p.device)

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
        if "_generators" in self.__dict__:  # (the constructor creates them after its groups)
            for p in group["params"]:
                self._generator(p.device)

    def _generator(self, device: torch.device) -> tuple[torch.Generator, int]:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = make_generator(self.seed, device)
            self._keys[key] = register_generator(self._generators[key])
        return self._generators[key], self._keys[key]

    def noise_std(self) -> list[float | Tensor]:
        """Each group's noise std ``sqrt(2·lr/β)`` at its current ``lr`` (for logging).

        This is the std the next ``step()`` uses (0 for ``β = ∞``; a 0-dim tensor for a tensor
        ``lr``), the counterpart of a scheduler's ``get_last_lr()``.
        """
        return [langevin_noise_std(g["lr"], g["beta"]) for g in self.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One Langevin step for every param group; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plan = []
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p.grad is not None]
            if not with_grad:
                continue
            for p in with_grad:
                if p.grad.is_sparse:
                    raise NotImplementedError("Langevin does not support sparse gradients")
            params = with_grad if group["sphere"] is None else list(group["params"])
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            plan.append((group, params, grads))
        if not plan:
            return loss
        check = self.check_finite and not torch.compiler.is_compiling()
        sharded = next((p for _, params, _ in plan for p in params if is_sharded(p)), None)
        all_grads = [local(g) for _, _, grads in plan for g in grads]
        spherical = any(group["sphere"] is not None for group, _, _ in plan)
        if check and not spherical:  # Euclidean only: check before drawing anything
            if not _all_ok(all_grads, [], sharded):
                _raise_bad_step(plan)
            check = False
        if check:  # the sphere flags need the update: the generators are restored on failure
            saved = {k: g.get_state() for k, g in self._generators.items()}
        # Compute every group's update first (the noise in one flat draw per group), check once,
        # then write.
        token: Tensor | None = None
        euclidean, sphere_params, sphere_new, flags = [], [], [], []
        for group, params, grads in plan:
            lr, beta = group["lr"], group["beta"]
            std = _noise_std(lr, beta)
            noise = None
            if not math.isinf(beta) and (isinstance(lr, Tensor) or lr > 0):
                noise, token = self._draw_noise(params, token)
            if sharded is not None:  # FSDP2: work on the local shards
                update = _sphere_update_sharded if group["sphere"] is not None else None
                local_params = [local(p) for p in params]
                local_grads = [local(g) for g in grads]
            else:
                update, local_params, local_grads = _sphere_update, params, grads
            if group["sphere"] is None:
                euclidean.append((local_params, local_grads, noise, lr, std))
            else:
                new, ok = update(  # type: ignore[misc]
                    params if sharded is not None else local_params,
                    grads if sharded is not None else local_grads,
                    noise,
                    lr,
                    std,
                    group["radius"],
                    group["retraction"],
                    group["sphere"],
                )
                sphere_params.extend(local_params)
                sphere_new.extend(new)
                flags.extend(ok)
        if check and not _all_ok(all_grads, flags, sharded):
            for key in list(self._generators):
                if key in saved:
                    self._generators[key].set_state(saved[key])
                else:  # created by this step: forget it (a later step re-creates it)
                    del self._generators[key], self._keys[key]
            _raise_bad_step(plan)
        steps = []
        for _, params, _ in plan:
            for p in params:
                state = self.state[p]
                if not isinstance(state.get("step"), Tensor):
                    state["step"] = torch.tensor(float(state.get("step", 0)))
                steps.append(state["step"])
        torch._foreach_add_(steps, 1.0)
        for params, grads, noise, lr, std in euclidean:
            _euclidean_update(params, grads, noise, lr, std)
        if sphere_params:
            torch._foreach_copy_(sphere_params, sphere_new)
        return loss

    def _draw_noise(
        self, params: Sequence[Tensor], after: Tensor | None
    ) -> tuple[list[Tensor], Tensor]:
        """One standard normal vector of the params' total size, split into their shapes."""
        device = params[0].device
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        generator, key = self._generator(device)
        flat = draw_normal(generator, key, sum(p.numel() for p in params), dtype, device, after)
        pieces = flat.split([p.numel() for p in params])
        if any(is_sharded(p) for p in params):  # FSDP2: the part of the draw a shard covers
            views = [local_part(x.view(p.shape), p) for x, p in zip(pieces, params, strict=True)]
        else:
            views = [x.view_as(p) for x, p in zip(pieces, params, strict=True)]
        if any(p.device != device for p in params):
            views = [x.to(p.device) for x, p in zip(views, params, strict=True)]
        return views, flat

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
            self._generator(torch.device(key))[0].set_state(gen_state)
        for group in self.param_groups:  # steps saved as ints by earlier versions
            for p in group["params"]:
                step = self.state.get(p, {}).get("step")
                if step is not None and not isinstance(step, Tensor):
                    self.state[p]["step"] = torch.tensor(float(step))


# --------------------------------------------------------------------------- private helpers


def _noise_std(lr: float | Tensor, beta: float) -> float | Tensor:
    """:func:`langevin_noise_std` without re-validation (traceable for any ``lr``)."""
    if math.isinf(beta):
        return 0.0
    return (2.0 * lr / beta).sqrt() if isinstance(lr, Tensor) else math.sqrt(2.0 * lr / beta)


def _check_hyperparams(
    lr: float | Tensor, beta: float, sphere: Sphere, radius: float, retraction: Retraction
) -> None:
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise ValueError(f"lr must be a number or a 1-element float tensor, got {lr!r}")
        check_positive("lr", float(lr))
    else:
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
            if is_sharded(p) and p.dim() <= 1:  # one row split over the shards
                _checked_norm([p], "params")
                continue
            _check_rows_local(p)
            row_norms = torch.linalg.vector_norm(
                local(p).detach().double().reshape(-1, p.shape[-1] if p.dim() else 1), dim=-1
            )
            bad = (~(torch.isfinite(row_norms) & (row_norms > 0)).all()).double().reshape(1)
            if bool(sum_over_shards(bad, p)):
                raise ValueError(
                    "params: with sphere='rows' every row needs a finite, non-zero norm to be "
                    "projected onto the sphere"
                )


def _check_rows_local(p: Tensor) -> None:
    """``sphere='rows'`` on a DTensor needs whole rows on every rank (last dim not sharded)."""
    if is_sharded(p) and p.dim() >= 2:
        from torch.distributed.tensor import Shard

        if any(isinstance(pl, Shard) and pl.dim % p.dim() == p.dim() - 1 for pl in p.placements):
            raise DTensorNotSupportedError(
                "Langevin(sphere='rows') with a DTensor sharded along its last dimension: the "
                "rows are split over ranks; shard another dimension (FSDP2 shards dim 0) or use "
                "sphere='tensor'"
            )


def _checked_norm(vector: Sequence[Tensor], name: str) -> Tensor:
    """The Euclidean norm of the concatenated tensors; ``ValueError`` if zero or non-finite.

    DTensor (FSDP2) shards contribute their part, all-reduced over the mesh.
    """
    squares = [
        sum_over_shards(local(p).detach().double().pow(2).sum().reshape(1), p) for p in vector
    ]
    norm = torch.cat(squares).sum().sqrt()
    value = float(norm)
    if not math.isfinite(value) or value == 0.0:
        raise ValueError(
            f"{name}: a spherical vector needs a finite, non-zero norm to be projected onto the "
            f"sphere, got norm {value}"
        )
    return norm


def _all_ok(grads: Sequence[Tensor], flags: Sequence[Tensor], sharded: Tensor | None) -> bool:
    """One host sync: every gradient finite (via its norm) and every sphere flag true.

    With a DTensor parameter (``sharded``) the verdict is agreed over its mesh, so every rank
    raises or none does.
    """

    def verdict(exact: bool) -> bool:
        device = grads[0].device
        if exact:
            ok = torch.stack([torch.isfinite(g).all().to(device) for g in grads]).all()
        else:
            norms = torch._foreach_norm(list(grads))
            if any(n.device != device for n in norms):
                norms = [n.to(device) for n in norms]
            ok = torch.stack(norms).isfinite().all()
        if flags:
            ok = ok & torch.stack([f.to(device) for f in flags]).all()
        if sharded is not None:
            bad = (~ok).to(torch.float32)
            for dim in range(sharded.device_mesh.ndim):
                torch.distributed.all_reduce(bad, group=sharded.device_mesh.get_group(dim))
            ok = bad == 0
        return bool(ok)

    # a finite gradient can have an overflowing norm: then decide element-wise
    return verdict(exact=False) or verdict(exact=True)


def _raise_bad_step(plan: Sequence[tuple[dict[str, Any], list[Tensor], list[Tensor]]]) -> None:
    """Name the cause of a failed check (a gradient first, then a spherical norm)."""
    grads = [g for _, _, gs in plan for g in gs]
    if not bool(torch.stack([torch.isfinite(g).all().to(grads[0].device) for g in grads]).all()):
        raise ValueError(
            "Langevin.step: non-finite gradient (NaN or inf); no parameter or state was changed"
        )
    for group, _, _ in plan:
        _check_initial_norms(group)  # raises the spherical-norm error
    raise ValueError(  # pragma: no cover - the norms differ between dtypes at the edge
        "Langevin.step: a spherical vector has a zero or non-finite norm in the update's dtype; "
        "no parameter or state was changed"
    )


def _euclidean_update(
    params: list[Tensor],
    grads: list[Tensor],
    noise: list[Tensor] | None,
    lr: float | Tensor,
    std: float | Tensor,
) -> None:
    if isinstance(lr, Tensor):
        torch._foreach_sub_(params, torch._foreach_mul(grads, lr))
        if noise is not None:
            torch._foreach_add_(params, torch._foreach_mul(noise, std))
        return
    torch._foreach_add_(params, grads, alpha=-lr)
    if noise is not None:
        torch._foreach_add_(params, noise, alpha=std)


def _sphere_update(
    params: list[Tensor],
    grads: list[Tensor],
    noise: list[Tensor] | None,
    lr: float | Tensor,
    std: float | Tensor,
    radius: float,
    retraction: Retraction,
    mode: str,
) -> tuple[list[Tensor], list[Tensor]]:
    """Projected Langevin step on the sphere; returns the new values and validity flags.

    The vectors on the sphere are the rows of matrices: the concatenated group
    (``mode="group"``, one row), each parameter flattened (``"tensor"``) or each slice along a
    parameter's last dimension (``"rows"``). Vectors of equal length are stacked into one
    matrix, so the work is one batched computation per distinct length, not per tensor. The
    flags (one 0-dim bool per matrix) say whether every row norm is finite and non-zero.
    """
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    if mode == "group":
        buckets = {sum(p.numel() for p in params): list(range(len(params)))}
    else:
        buckets: dict[int, list[int]] = {}
        for i, p in enumerate(params):
            d = p.numel() if mode == "tensor" else (p.shape[-1] if p.dim() else 1)
            buckets.setdefault(d, []).append(i)
    new: list[Tensor | None] = [None] * len(params)
    flags = []
    for d, index in buckets.items():

        def as_matrix(tensors: Sequence[Tensor], index: list[int] = index, d: int = d) -> Tensor:
            if mode == "group":
                return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors]).unsqueeze(0)
            rows = [tensors[i].detach().reshape(-1, d).to(dtype) for i in index]
            return rows[0] if len(rows) == 1 else torch.cat(rows)

        theta = as_matrix(params)
        grad = as_matrix(grads)
        norm = torch.linalg.vector_norm(theta, dim=-1, keepdim=True)
        flags.append(((norm > 0) & torch.isfinite(norm)).all())
        u = theta / norm
        step = -lr * (grad - (grad * u).sum(-1, keepdim=True) * u)
        if noise is not None:
            xi = as_matrix(noise)
            step = step + std * (xi - (xi * u).sum(-1, keepdim=True) * u)
        if retraction == "normalize":
            out = radius * u + step
            out = radius * out / torch.linalg.vector_norm(out, dim=-1, keepdim=True)
        else:
            size = torch.linalg.vector_norm(step, dim=-1, keepdim=True)
            direction = step / size.clamp_min(torch.finfo(dtype).tiny)
            angle = size / radius
            out = radius * (torch.cos(angle) * u + torch.sin(angle) * direction)
        if mode == "group":
            pieces = out.reshape(-1).split([p.numel() for p in params])
        else:
            pieces = out.split([params[i].numel() // d for i in index])
        for i, piece in zip(index if mode != "group" else range(len(params)), pieces, strict=True):
            new[i] = piece.reshape(params[i].shape)
    return new, flags  # type: ignore[return-value]


def _sphere_update_sharded(
    params: list[Tensor],
    grads: list[Tensor],
    noise: list[Tensor] | None,
    lr: float | Tensor,
    std: float | Tensor,
    radius: float,
    retraction: Retraction,
    mode: str,
) -> tuple[list[Tensor], list[Tensor]]:
    """:func:`_sphere_update` on DTensor (FSDP2) shards: the inner products of each vector are
    summed over the local shards and all-reduced over the mesh (two all-reduces per group).

    ``params``/``grads`` are the DTensors, ``noise`` the local parts of the global draw; the new
    local shards are returned. A ``"rows"`` parameter of dim >= 2 (rows whole on every rank) is
    updated locally by :func:`_sphere_update`; a 1-D one is a single vector.
    """
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    new: list[Tensor | None] = [None] * len(params)
    flags: list[Tensor] = []
    index = list(range(len(params)))
    if mode == "rows":
        whole = [i for i in index if params[i].dim() >= 2]
        for i in whole:
            _check_rows_local(params[i])
        if whole:
            out, ok = _sphere_update(
                [local(params[i]) for i in whole],
                [local(grads[i]) for i in whole],
                None if noise is None else [noise[i] for i in whole],
                lr,
                std,
                radius,
                retraction,
                "rows",
            )
            for i, x in zip(whole, out, strict=True):
                new[i] = x
            flags.extend(ok)
        index = [i for i in index if params[i].dim() < 2]
        if not index:
            return new, flags  # type: ignore[return-value]
    # vector id of each parameter: one vector for the group, else one per parameter
    vec = [0] * len(index) if mode == "group" else list(range(len(index)))
    n_vec = max(vec) + 1
    theta = [local(params[i]).detach().reshape(-1).to(dtype) for i in index]
    grad = [local(grads[i]).reshape(-1).to(dtype) for i in index]
    xi = None if noise is None else [noise[i].reshape(-1).to(dtype) for i in index]

    def vector_sums(rows: list[Tensor]) -> Tensor:
        """(n_vec, k): per-vector sums of the per-parameter partial sums ``rows`` (k each)."""
        partial = torch.stack(rows)  # (n_params, k), local
        for j, i in enumerate(index):
            if not is_sharded(params[i]):
                continue
            same = all(
                is_sharded(params[m])
                and params[m].device_mesh == params[i].device_mesh
                and params[m].placements == params[i].placements
                for m in index
            )
            if same:  # one collective for the whole group
                sum_over_shards(partial, params[i])
                break
            partial[j] = sum_over_shards(partial[j].clone(), params[i])
        out = torch.zeros(n_vec, partial.shape[1], dtype=dtype, device=partial.device)
        return out.index_add_(0, torch.tensor(vec, device=partial.device), partial)

    def dots(t: Tensor, g: Tensor, x: Tensor | None) -> Tensor:
        cols = [t.dot(t), g.dot(t)] + ([x.dot(t)] if x is not None else [])
        return torch.stack(cols)

    sums = vector_sums(
        [
            dots(t, g, None if xi is None else xi[j])
            for j, (t, g) in enumerate(zip(theta, grad, strict=True))
        ]
    )
    norm = sums[:, 0].sqrt()
    flags.append(((norm > 0) & torch.isfinite(norm)).all())
    steps, units = [], []
    for j, (t, g) in enumerate(zip(theta, grad, strict=True)):
        nv = norm[vec[j]]
        u = t / nv
        step = -lr * (g - (sums[vec[j], 1] / nv) * u)
        if xi is not None:
            step = step + std * (xi[j] - (sums[vec[j], 2] / nv) * u)
        units.append(u)
        steps.append(step)
    if retraction == "normalize":
        outs = [radius * u + st for u, st in zip(units, steps, strict=True)]
        size = vector_sums([o.dot(o).reshape(1) for o in outs])[:, 0].sqrt()
        outs = [radius * o / size[vec[j]] for j, o in enumerate(outs)]
    else:
        size = vector_sums([st.dot(st).reshape(1) for st in steps])[:, 0].sqrt()
        outs = []
        for j, (u, st) in enumerate(zip(units, steps, strict=True)):
            sz = size[vec[j]]
            direction = st / sz.clamp_min(torch.finfo(dtype).tiny)
            angle = sz / radius
            outs.append(radius * (torch.cos(angle) * u + torch.sin(angle) * direction))
    for j, i in enumerate(index):
        new[i] = outs[j].reshape(local(params[i]).shape)
    return new, flags  # type: ignore[return-value]
