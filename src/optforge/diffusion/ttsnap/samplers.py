r"""Lock-step samplers for TTSnap: a pool of candidates advanced one step at a time.

A :class:`SteppableSampler` runs all candidates through an :math:`S`-step sampler together and
returns, at every step, the clean-image estimate (Tweedie)

.. math::

    \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon}{\sqrt{\bar\alpha_t}},

so the search can score it, and can drop rows between steps (``select``) without changing the
trajectories of the rows it keeps. :class:`DDIMSampler` is deterministic DDIM over any
ε-prediction callable in plain torch; :class:`DiffusersSampler` wraps a diffusers model and
scheduler (Q. Yu et al., "TTSnap: Test-Time Scaling of Diffusion Models via Noise-Aware
Pruning", 2025, arXiv:2511.22242; the online sampler is not in the reference code).

Example::

    import torch
    from optforge.diffusion.ttsnap import DDIMSampler

    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    sampler = DDIMSampler(lambda x, t, cond: 0.1 * x, abar,
                          torch.linspace(999, 0, 20).round().long(), (16,))
    state = sampler.init(8, None, torch.Generator().manual_seed(0))
    state, x0_hat = sampler.step(state, 0)                 # x0_hat: [8, 16]
    state = sampler.select(state, torch.tensor([3, 5]))    # keep two candidates
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from optforge._core import check_positive, check_positive_int, require

__all__ = ["DDIMSampler", "DiffusersSampler", "SamplerState", "SteppableSampler"]


@dataclass
class SamplerState:
    """Lock-step state of a pool: current latents, per-row conditioning, seed indices."""

    x: Tensor
    cond: Any = None
    index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


class SteppableSampler(Protocol):
    """One lock-step step for a batch of candidates (what the search needs of a sampler)."""

    num_steps: int

    def init(
        self, n: int, cond: Any, generator: torch.Generator | None, noise: Tensor | None = None
    ) -> Any: ...

    def step(self, state: Any, step_index: int) -> tuple[Any, Tensor]: ...

    def select(self, state: Any, index: Tensor) -> Any: ...

    def decode(self, x0_hat: Tensor) -> Tensor: ...


class _BaseSampler:
    """Shared init/select/decode of the built-in samplers."""

    sample_shape: tuple[int, ...]
    num_steps: int
    _decode: Callable[[Tensor], Tensor] | None
    init_scale: float = 1.0
    device: torch.device | str | None = None
    dtype: torch.dtype = torch.float32

    def init(
        self,
        n: int,
        cond: Any = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> SamplerState:
        """Fresh pool of ``n`` seeds (``noise`` overrides the draw; its rows are the seeds)."""
        if noise is None:
            n = check_positive_int("n", n)
            device = generator.device if generator is not None else self.device
            noise = torch.randn(
                n, *self.sample_shape, generator=generator, device=device, dtype=self.dtype
            )
        elif tuple(noise.shape[1:]) != tuple(self.sample_shape) or noise.shape[0] != n:
            raise ValueError(
                f"noise must have shape [{n}, *{tuple(self.sample_shape)}], got "
                f"{tuple(noise.shape)}"
            )
        index = torch.arange(n, device=noise.device)
        return SamplerState(noise * self.init_scale, _rows(cond, n), index)

    def select(self, state: SamplerState, index: Tensor) -> SamplerState:
        """Keep the rows ``index`` of every per-candidate tensor of the state."""
        n = state.x.shape[0]
        index = index.to(state.x.device)
        return SamplerState(
            state.x.index_select(0, index),
            _select_rows(state.cond, index, n),
            state.index.index_select(0, index),
        )

    def decode(self, x0_hat: Tensor) -> Tensor:
        """Latents to images (identity unless a ``decode`` callable was given)."""
        return x0_hat if self._decode is None else self._decode(x0_hat)


class DDIMSampler(_BaseSampler):
    r"""Deterministic DDIM (:math:`\eta = 0`) over an ε-prediction callable, plain torch.

    Per step with :math:`t = t_s`, :math:`t' = t_{s+1}`:
    :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\hat\varepsilon)/\sqrt{\bar\alpha_t}`
    (optionally clipped), :math:`x_{t'} = \sqrt{\bar\alpha_{t'}}\hat x_0 +
    \sqrt{1-\bar\alpha_{t'}}\hat\varepsilon`; after the last step the state is :math:`\hat x_0`
    (``set_alpha_to_one`` in diffusers' ``DDIMScheduler``).

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> eps`` with ``t`` a ``[B]`` long tensor.
        alphas_cumprod: ``[T]`` cumulative products :math:`\bar\alpha_t`.
        timesteps: ``[S]`` decreasing integer timesteps, e.g. ``linspace(999, 0, 20).round()``.
        sample_shape: Shape of one sample (without the batch dimension).
        clip_x0: Clamp :math:`\hat x_0` to ``[-clip_x0, clip_x0]`` (``None``: no clipping).
        decode: Optional latents → images callable applied before rewards.
    """

    def __init__(
        self,
        denoiser: Callable[[Tensor, Tensor, Any], Tensor],
        alphas_cumprod: Tensor,
        timesteps: Sequence[int] | Tensor,
        sample_shape: Sequence[int],
        *,
        clip_x0: float | None = None,
        decode: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not callable(denoiser):
            raise TypeError("denoiser must be callable: denoiser(x_t, t, cond) -> eps")
        self.denoiser = denoiser
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod)
        self.timesteps = torch.as_tensor(timesteps, dtype=torch.long)
        if self.timesteps.dim() != 1 or len(self.timesteps) < 1:
            raise ValueError("timesteps must be a non-empty 1-D sequence")
        if (self.timesteps[1:] >= self.timesteps[:-1]).any():
            raise ValueError("timesteps must be strictly decreasing")
        if int(self.timesteps.max()) >= len(self.alphas_cumprod) or int(self.timesteps.min()) < 0:
            raise ValueError("timesteps must index into alphas_cumprod")
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.num_steps = len(self.timesteps)
        self.clip_x0 = None if clip_x0 is None else check_positive("clip_x0", clip_x0)
        self._decode = decode
        self.dtype = (
            self.alphas_cumprod.dtype
            if self.alphas_cumprod.is_floating_point()
            else (torch.float32)
        )
        self.device = self.alphas_cumprod.device

    def step(self, state: SamplerState, step_index: int) -> tuple[SamplerState, Tensor]:
        """Advance every row one step; return the new state and :math:`\\hat x_0`."""
        x = state.x
        t = int(self.timesteps[step_index])
        abar = self.alphas_cumprod.to(x)
        a_t = abar[t]
        eps = self.denoiser(x, torch.full((x.shape[0],), t, device=x.device), state.cond)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        if step_index + 1 < self.num_steps:
            a_prev = abar[int(self.timesteps[step_index + 1])]
            x_next = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        else:
            x_next = x0
        return SamplerState(x_next, state.cond, state.index), x0


class DiffusersSampler(_BaseSampler):
    """Adapter for a diffusers model and scheduler (``pip install 'optforge[diffusion]'``).

    Each step calls ``model(scheduler.scale_model_input(x, t), t, **model_kwargs)`` and
    ``scheduler.step(out, t, x)``; the estimate is ``pred_original_sample`` (DDPM, DDIM, Euler)
    or ``x0_fn(x_t, model_output, t, scheduler)`` for schedulers that do not return it (e.g.
    flow matching: ``x_t - sigma_t * v``). The scheduler must not be shared between concurrent
    searches; ``set_timesteps`` is called at every :meth:`init`.

    Args:
        model: ``UNet2DModel``-like module (output with ``.sample`` or a tensor).
        scheduler: A diffusers scheduler instance.
        sample_shape: Shape of one sample (``(C, H, W)``).
        num_inference_steps: Number of sampler steps ``S``.
        model_kwargs: Extra keyword arguments for every model call (broadcast to all rows).
        cond_key: If given, the per-row ``cond`` tensor is passed as ``model(..., cond_key=cond)``
            and pruned with the rows.
        x0_fn: Fallback ``x0_fn(x_t, model_output, t, scheduler) -> x0_hat``.
        decode: Latents → images (e.g. a VAE decode) applied before rewards.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        scheduler: Any,
        sample_shape: Sequence[int],
        *,
        num_inference_steps: int = 20,
        model_kwargs: Mapping[str, Any] | None = None,
        cond_key: str | None = None,
        x0_fn: Callable[[Tensor, Tensor, Tensor, Any], Tensor] | None = None,
        decode: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        require("diffusers", "diffusion")
        self.model = model
        self.scheduler = scheduler
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.num_inference_steps = check_positive_int("num_inference_steps", num_inference_steps)
        self.model_kwargs = dict(model_kwargs or {})
        self.cond_key = cond_key
        self.x0_fn = x0_fn
        self._decode = decode
        scheduler.set_timesteps(self.num_inference_steps)
        self.num_steps = len(scheduler.timesteps)
        self.init_scale = float(getattr(scheduler, "init_noise_sigma", 1.0))
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        if first is not None:
            self.device, self.dtype = first.device, first.dtype

    def init(
        self,
        n: int,
        cond: Any = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> SamplerState:
        """Reset the scheduler's timesteps and draw a fresh pool (see :class:`DDIMSampler`)."""
        self.scheduler.set_timesteps(self.num_inference_steps)
        if hasattr(self.scheduler, "_step_index"):
            self.scheduler._step_index = None
        return super().init(n, cond, generator, noise)

    def step(self, state: SamplerState, step_index: int) -> tuple[SamplerState, Tensor]:
        """One scheduler step for every row; returns the new state and ``pred_original_sample``."""
        x = state.x
        t = self.scheduler.timesteps[step_index]
        kwargs = dict(self.model_kwargs)
        if self.cond_key is not None:
            kwargs[self.cond_key] = state.cond
        out = self.model(self.scheduler.scale_model_input(x, t), t, **kwargs)
        out = getattr(out, "sample", out)
        if isinstance(out, tuple):
            out = out[0]
        res = self.scheduler.step(out, t, x, return_dict=True)
        x0 = getattr(res, "pred_original_sample", None)
        if x0 is None:
            if self.x0_fn is None:
                raise ValueError(
                    f"{type(self.scheduler).__name__}.step returns no pred_original_sample; "
                    "pass x0_fn(x_t, model_output, t, scheduler) -> x0_hat"
                )
            x0 = self.x0_fn(x, out, t, self.scheduler)
        return SamplerState(res.prev_sample, state.cond, state.index), x0


def _rows(cond: Any, n: int) -> Any:
    if isinstance(cond, Tensor) and cond.dim() > 0 and cond.shape[0] == 1 and n != 1:
        return cond.expand(n, *cond.shape[1:])
    return cond


def _select_rows(cond: Any, index: Tensor, n: int) -> Any:
    if isinstance(cond, Tensor) and cond.dim() > 0 and cond.shape[0] == n:
        return cond.index_select(0, index.to(cond.device))
    return cond


def _cond_of(state: Any, default: Any) -> Any:
    """The per-row conditioning of a :class:`SamplerState`, else ``default``."""
    return state.cond if isinstance(state, SamplerState) else default
