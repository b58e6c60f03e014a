r"""Langevin dynamics (Euclidean or on the sphere) with iterate averaging.

Paper: "Improved high-dimensional estimation with Langevin dynamics and stochastic weight
averaging", ICLR 2026 (OpenReview ``GYXUD3hGTh``), arXiv:2603.06028. Authors not listed on the
pages we could read (anonymous submission); no official code.

The paper shows that for planted-direction problems (tensor PCA, single-index models with
information exponent :math:`k^*`) the **time average** of Langevin iterates recovers the hidden
direction with :math:`n \gtrsim d^{k^*/2}` samples, where the last iterate (and online SGD) needs
:math:`d^{k^*-1}`: the injected noise spreads the iterates over a cap, and averaging over that
cloud does what explicit landscape smoothing (Damian et al., 2023) would do.

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

**Averaging** (the estimator): :class:`IterateAverager` keeps the equal-weight running mean of the
iterates from ``start_step`` on, :math:`\bar\theta = \frac{1}{T-T_0}\sum_{t\ge T_0}\theta_t`,
updated in place with ``torch.optim.swa_utils.get_swa_multi_avg_fn()`` (the function
``AveragedModel`` uses); for an ``nn.Module`` it delegates to ``torch.optim.swa_utils.
AveragedModel`` itself. :func:`langevin_recover` runs the whole recipe on a planted problem.

Example::

    theta = torch.randn(50); theta /= theta.norm()
    theta.requires_grad_(True)
    opt = Langevin([theta], lr=0.05, beta=60.0, sphere="group", seed=0)
    avg = IterateAverager([theta], start_step=1000)
    for _ in range(2000):
        theta.grad = problem.grad(theta.detach())
        opt.step()
        avg.update()
    theta_bar = avg.average(normalize=True)[0]

Choices where the spec marks the paper NOT FOUND:

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
* Default hyper-parameters of :func:`langevin_recover` (h = 0.05, β = 60, T = 2000, burn-in T/2)
  are the spec's, validated on tensor PCA k = 3, d = 50, n = 700; the paper's are unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from numbers import Integral, Real
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_swa_multi_avg_fn

from optforge._core import check_positive, check_positive_int, make_generator

Sphere = Literal["group", "tensor", "rows"] | None
Retraction = Literal["normalize", "expmap"]

__all__ = ["IterateAverager", "Langevin", "langevin_noise_std", "langevin_recover"]


def langevin_noise_std(lr: float, beta: float) -> float:
    """The standard deviation ``sqrt(2 * lr / beta)`` of the injected noise (0 when β = ∞)."""
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
        ValueError: a bad ``lr``, ``beta``, ``radius``, ``sphere`` or ``retraction``, or a
            spherical group whose initial vector has zero (or non-finite) norm.
        NotImplementedError: complex parameters.
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
        for group in self.param_groups:
            _check_hyperparams(
                group["lr"], group["beta"], group["sphere"], group["radius"], group["retraction"]
            )
            for p in group["params"]:
                if p.is_complex():
                    raise NotImplementedError("Langevin does not support complex parameters")
            _check_initial_norms(group)

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
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["sphere"] is not None:
                params = list(group["params"])
            for p in params:
                if p.grad is not None and p.grad.is_sparse:
                    raise NotImplementedError("Langevin does not support sparse gradients")
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            _check_grads_finite(grads)
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


class IterateAverager:
    """Equal-weight running mean of iterates after a burn-in (SWA averaging).

    With a list of tensors, the average is kept in ``dtype`` (float64 by default: long runs) and
    updated with ``torch.optim.swa_utils.get_swa_multi_avg_fn()``. With an ``nn.Module``, the
    averager wraps ``torch.optim.swa_utils.AveragedModel`` (equal weights, parameters only) and
    :attr:`module` is the averaged copy.

    Args:
        params_or_module: the tensors being optimised (read at every :meth:`update`) or a module.
        start_step: number of :meth:`update` calls skipped before averaging starts (burn-in).
        dtype: accumulation dtype for tensors (``None``: each tensor's own dtype).

    Example::

        avg = IterateAverager([theta], start_step=1000)
        for t in range(2000):
            opt.step(); avg.update()
        theta_bar, = avg.average(normalize=True)
    """

    def __init__(
        self,
        params_or_module: Iterable[Tensor] | nn.Module,
        *,
        start_step: int = 0,
        dtype: torch.dtype | None = torch.float64,
    ) -> None:
        if not isinstance(start_step, Integral) or isinstance(start_step, bool) or start_step < 0:
            raise ValueError(f"start_step must be an integer >= 0, got {start_step!r}")
        self.start_step = int(start_step)
        self.dtype = dtype
        self._avg_fn = get_swa_multi_avg_fn()
        self.module: AveragedModel | None = None
        if isinstance(params_or_module, nn.Module):
            self._source: nn.Module | list[Tensor] = params_or_module
            self.module = AveragedModel(params_or_module, multi_avg_fn=self._avg_fn)
            self._average: list[Tensor] = []
        else:
            self._source = list(params_or_module)
            if not self._source:
                raise ValueError("params_or_module is empty")
            for p in self._source:
                if not isinstance(p, Tensor):
                    raise TypeError(f"params_or_module must hold tensors, got {type(p).__name__}")
            self._average = [
                torch.zeros_like(p, dtype=dtype or p.dtype, memory_format=torch.preserve_format)
                for p in self._source
            ]
        self.steps_seen = 0
        self.n_averaged = 0

    @torch.no_grad()
    def update(self) -> None:
        """Count one iterate; from the ``start_step``-th call on, add it to the mean."""
        self.steps_seen += 1
        if self.steps_seen <= self.start_step:
            return
        if self.module is not None:
            self.module.update_parameters(self._source)
        else:
            current = [
                p.detach().to(a.dtype) for p, a in zip(self._source, self._average, strict=True)
            ]
            if self.n_averaged == 0:
                torch._foreach_copy_(self._average, current)
            else:
                self._avg_fn(self._average, current, self.n_averaged)
        self.n_averaged += 1

    def average(self, *, normalize: bool = False) -> list[Tensor]:
        """The averaged tensors (copies; ``normalize=True`` divides the whole list by its norm).

        Raises:
            RuntimeError: nothing has been averaged yet.
        """
        if self.n_averaged == 0:
            raise RuntimeError("no iterate averaged yet: call update() past start_step")
        if self.module is not None:
            out = [p.detach().clone() for p in self.module.module.parameters()]
        else:
            out = [a.clone() for a in self._average]
        if normalize:
            norm = torch.sqrt(sum((a.double() ** 2).sum() for a in out))
            if not bool(norm > 0):
                raise RuntimeError("the averaged iterate has zero norm; cannot normalize")
            out = [(a / norm.to(a.dtype)) for a in out]
        return out

    def reset(self) -> None:
        """Forget the average and the burn-in count (for cyclic restarts)."""
        self.steps_seen = 0
        self.n_averaged = 0
        if self.module is not None:
            self.module.n_averaged.zero_()
        else:
            for a in self._average:
                a.zero_()

    def state_dict(self) -> dict[str, Any]:
        """Counters and averaged tensors (or the ``AveragedModel``'s state dict)."""
        state: dict[str, Any] = {
            "start_step": self.start_step,
            "steps_seen": self.steps_seen,
            "n_averaged": self.n_averaged,
        }
        if self.module is not None:
            state["module"] = self.module.state_dict()
        else:
            state["average"] = [a.clone() for a in self._average]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.start_step = int(state["start_step"])
        self.steps_seen = int(state["steps_seen"])
        self.n_averaged = int(state["n_averaged"])
        if self.module is not None:
            self.module.load_state_dict(state["module"])
        else:
            if len(state["average"]) != len(self._average):
                raise ValueError(
                    f"state has {len(state['average'])} averaged tensors, expected "
                    f"{len(self._average)}"
                )
            with torch.no_grad():
                for a, s in zip(self._average, state["average"], strict=True):
                    a.copy_(s)


class PlantedProblem(Protocol):
    """What :func:`langevin_recover` needs: a gradient, a dimension and (for the overlap) θ*."""

    theta_star: Tensor

    def grad(self, theta: Tensor) -> Tensor: ...


def langevin_recover(
    problem: PlantedProblem,
    *,
    beta: float = 60.0,
    lr: float = 0.05,
    steps: int = 2000,
    burn_in: float | int = 0.5,
    cycles: int = 1,
    seed: int | None = 0,
    init: Tensor | None = None,
    retraction: Retraction = "normalize",
    trace_every: int = 0,
) -> dict[str, Any]:
    """Spherical Langevin on ``problem`` with the averaged iterate as the estimator.

    ``steps`` are split into ``cycles`` equal cycles; in each, the iterates after the burn-in are
    averaged, and the next cycle restarts from the normalised average (cyclic SWA, our extension
    for even ``k``; ``cycles=1`` is the paper's plain averaging).

    Args:
        problem: has ``grad(theta) -> Tensor`` and ``theta_star`` (a unit vector).
        beta: inverse temperature (``inf`` gives Riemannian gradient descent).
        lr: step size ``h``.
        steps: total number of steps.
        burn_in: fraction of each cycle in ``[0, 1)`` or a number of steps ``< steps // cycles``.
        cycles: number of averaging cycles.
        seed: seed of the generator used for the uniform initialisation and the noise.
        init: initial vector (default: uniform on the sphere from the seeded generator).
        retraction: ``"normalize"`` or ``"expmap"``.
        trace_every: record the overlaps every that many steps (0: no trace).

    Returns:
        ``dict(last, avg, overlap_last, overlap_avg, trace)``; ``trace`` has ``step``,
        ``overlap_last`` and ``overlap_avg`` lists (``overlap_avg`` is NaN before averaging).
    """
    steps = check_positive_int("steps", steps)
    cycles = check_positive_int("cycles", cycles)
    if steps // cycles < 1:
        raise ValueError(f"steps ({steps}) must be >= cycles ({cycles})")
    cycle_len = steps // cycles
    start = _burn_in_steps(burn_in, cycle_len)
    if trace_every < 0:
        raise ValueError(f"trace_every must be >= 0, got {trace_every}")
    theta_star = problem.theta_star
    generator = make_generator(seed, theta_star.device)
    if init is None:
        init = torch.randn(
            theta_star.shape, generator=generator, device=theta_star.device, dtype=theta_star.dtype
        )
    theta = init.detach().clone().to(theta_star)
    theta /= _checked_norm([theta], "init")
    theta.requires_grad_(True)
    opt = Langevin(
        [theta], lr=lr, beta=beta, sphere="group", retraction=retraction, generator=generator
    )
    averager = IterateAverager([theta], start_step=start)
    trace: dict[str, list[float]] = {"step": [], "overlap_last": [], "overlap_avg": []}
    avg = theta.detach().clone()
    t = 0
    for cycle in range(cycles):
        averager.reset()
        for _ in range(cycle_len):
            theta.grad = problem.grad(theta.detach())
            opt.step()
            averager.update()
            t += 1
            if trace_every and t % trace_every == 0:
                trace["step"].append(float(t))
                trace["overlap_last"].append(_overlap(theta.detach(), theta_star))
                trace["overlap_avg"].append(
                    _overlap(averager.average()[0], theta_star)
                    if averager.n_averaged
                    else float("nan")
                )
        avg = averager.average(normalize=True)[0].to(theta_star.dtype)
        if cycle + 1 < cycles:
            with torch.no_grad():
                theta.copy_(avg)
    last = theta.detach().clone()
    return {
        "last": last,
        "avg": avg,
        "overlap_last": _overlap(last, theta_star),
        "overlap_avg": _overlap(avg, theta_star),
        "trace": trace,
    }


# --------------------------------------------------------------------------- private helpers


def _check_hyperparams(
    lr: float, beta: float, sphere: Sphere, radius: float, retraction: Retraction
) -> None:
    check_positive("lr", lr)
    if not isinstance(beta, Real) or isinstance(beta, bool) or math.isnan(beta) or beta <= 0:
        raise ValueError(f"beta must be > 0 (float('inf') for no noise), got {beta!r}")
    if sphere not in (None, "group", "tensor", "rows"):
        raise ValueError(f"sphere must be None, 'group', 'tensor' or 'rows', got {sphere!r}")
    check_positive("radius", radius)
    if retraction not in ("normalize", "expmap"):
        raise ValueError(f"retraction must be 'normalize' or 'expmap', got {retraction!r}")


def _burn_in_steps(burn_in: float | int, cycle_len: int) -> int:
    if isinstance(burn_in, bool) or not isinstance(burn_in, Real):
        raise ValueError(f"burn_in must be a fraction in [0, 1) or an int, got {burn_in!r}")
    if isinstance(burn_in, Integral):
        if not 0 <= burn_in < cycle_len:
            raise ValueError(f"burn_in must be in [0, {cycle_len}) steps, got {burn_in}")
        return int(burn_in)
    if not 0.0 <= burn_in < 1.0:
        raise ValueError(f"burn_in as a fraction must be in [0, 1), got {burn_in}")
    return int(burn_in * cycle_len)


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
    finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
    if not bool(finite):
        raise ValueError("Langevin.step: a gradient contains NaN or inf")


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
    norm = torch.linalg.vector_norm(theta, dim=-1, keepdim=True)
    if not bool((torch.isfinite(norm) & (norm > 0)).all()):
        raise ValueError("Langevin.step: a spherical parameter has zero or non-finite norm")
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


def _overlap(theta: Tensor, theta_star: Tensor) -> float:
    theta = theta.detach().double()
    return float((theta @ theta_star.double()).abs() / torch.linalg.vector_norm(theta))
