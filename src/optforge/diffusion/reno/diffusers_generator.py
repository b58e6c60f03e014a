r"""A diffusers denoiser and scheduler as a differentiable one-step generator ``z -> x``.

ReNO (L. Eyring et al., NeurIPS 2024, arXiv:2406.04312) optimises the initial noise of a
one-step (distilled) text-to-image model such as SD-Turbo, which needs
:math:`z \mapsto G(z)` with gradients. diffusers pipelines run under ``torch.no_grad()``, so
this adapter calls the model and the scheduler directly: one step from pure noise,

.. math::

    \hat x_0 = \mathtt{scheduler.step}\bigl(\epsilon_\theta(z \sigma_{\mathrm{init}}, t),
    t, z \sigma_{\mathrm{init}}\bigr).\mathtt{pred\_original\_sample},

then an optional VAE decode of :math:`\hat x_0 / s` and the map :math:`[-1, 1] \to [0, 1]`.
diffusers is duck-typed: nothing is imported from it at module import
(``pip install 'optforge[diffusion]'``).

Choices: the scheduler's ``clip_sample`` is turned off by default (clamping zeroes the gradient
of saturated pixels); ancestral schedulers get a ``torch.Generator`` seeded afresh on every call,
so the map is deterministic in ``z``.

Example::

    from optforge.diffusion import OneStepDiffusersGenerator, reno

    G = OneStepDiffusersGenerator(pipe.unet, pipe.scheduler, vae=pipe.vae,
                                  model_kwargs={"encoder_hidden_states": prompt_embeds})
    result = reno(G, {"pick": pickscore, "hps": hps}, {"pick": 0.05, "hps": 5.0}, z0)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from optforge._core import check_positive, make_generator, require

__all__ = ["OneStepDiffusersGenerator"]


class OneStepDiffusersGenerator(nn.Module):
    """A diffusers denoiser + scheduler used as a differentiable one-step generator ``z -> x``.

    Diffusers pipelines run under ``torch.no_grad()``, so this adapter calls the model and
    ``scheduler.step(...).pred_original_sample`` directly: one step from pure noise at the first
    timestep of ``scheduler.set_timesteps(1)`` (or ``timestep``), then optionally VAE decoding
    ``x0 / scaling_factor`` and mapping ``[-1, 1] -> [0, 1]`` (clamped, as the reference does).
    Parameters are frozen and the module is put in ``eval()`` mode.

    Args:
        model: a ``UNet2DModel``/``UNet2DConditionModel``/transformer; called as
            ``model(sample, t, **model_kwargs)`` and returning ``.sample`` or a tuple.
        scheduler: a diffusers scheduler (``set_timesteps``, ``step``, ``config``).
        timestep: the fixed timestep of a distilled model (default: the scheduler's first).
        vae: optional ``AutoencoderKL``-like with ``decode(latents).sample``.
        scaling_factor: latent scaling (default ``vae.config.scaling_factor`` or 1).
        model_kwargs: extra keyword arguments for the model (e.g. ``encoder_hidden_states``).
        clip_sample: keep the scheduler's x0 clamping; default False, because clamping zeroes
            the gradient of saturated pixels.
        seed: seed of the ``torch.Generator`` passed to ``scheduler.step`` on every call
            (ancestral schedulers), so the map is deterministic in ``z``.
        to_unit_range: map the output from ``[-1, 1]`` to ``[0, 1]`` and clamp.
    """

    def __init__(
        self,
        model: nn.Module,
        scheduler: Any,
        *,
        timestep: int | Tensor | None = None,
        vae: nn.Module | None = None,
        scaling_factor: float | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        clip_sample: bool = False,
        seed: int = 0,
        to_unit_range: bool = True,
    ) -> None:
        super().__init__()
        require("diffusers", "diffusion")
        for attr in ("set_timesteps", "step"):
            if not hasattr(scheduler, attr):
                raise TypeError(f"scheduler must be a diffusers scheduler (missing {attr!r})")
        config = getattr(scheduler, "config", {})
        if not clip_sample and config.get("clip_sample", False):
            scheduler = type(scheduler).from_config(config, clip_sample=False)
        self.model = model.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.scheduler = scheduler
        self.timestep = timestep
        if scaling_factor is None:
            vae_cfg = getattr(vae, "config", {}) if vae is not None else {}
            scaling_factor = float(vae_cfg.get("scaling_factor", 1.0) or 1.0)
        self.scaling_factor = check_positive("scaling_factor", scaling_factor)
        self.model_kwargs = dict(model_kwargs or {})
        self.seed = int(seed)
        self.to_unit_range = to_unit_range
        params = inspect.signature(scheduler.step).parameters
        self._step_takes_generator = "generator" in params
        self.eval()

    def forward(self, z: Tensor) -> Tensor:
        """One denoising step from noise ``z`` (``[B, C, H, W]``), returning the image."""
        sched = self.scheduler
        sched.set_timesteps(1, device=z.device)  # resets the scheduler's step index every call
        t = sched.timesteps[0] if self.timestep is None else self.timestep
        sample = z * sched.init_noise_sigma if hasattr(sched, "init_noise_sigma") else z
        model_in = (
            sched.scale_model_input(sample, t) if hasattr(sched, "scale_model_input") else sample
        )
        out = self.model(model_in, t, **self.model_kwargs)
        pred = out.sample if hasattr(out, "sample") else out[0]
        kwargs: dict[str, Any] = {}
        if self._step_takes_generator:
            kwargs["generator"] = make_generator(self.seed, z.device)
        x0 = sched.step(pred, t, sample, **kwargs).pred_original_sample
        if self.vae is not None:
            x0 = self.vae.decode(x0 / self.scaling_factor).sample
        if self.to_unit_range:
            x0 = ((x0 + 1.0) / 2.0).clamp(0.0, 1.0)
        return x0
