r"""Noise-contrastive estimation (NCE) and eNCE, the baselines of MECO.

NCE: Gutmann & Hyvärinen 2010; eNCE, its exponential-loss variant: Liu et al. 2022, "Analyzing and
improving the optimization landscape of noise-contrastive estimation". Both learn an unnormalized
model by classifying data against samples of a noise distribution ``q``, with the log-normaliser
``c`` as an extra parameter (baselines of Jiang et al., ICML 2023, arXiv:2306.07485).

Example::

    loss_fn = NCELoss(noise, nu=1.0, seed=0)
    opt = torch.optim.Adam(list(energy_net.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    for x in loader:
        opt.zero_grad()
        loss_fn(energy_net, x).backward()
        opt.step()
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from optforge._core import check_positive, check_seed, make_generator
from optforge.losses.meco.energy import (
    Energy,
    EnergySign,
    _check_batch,
    _check_pair,
    _check_weights,
    _energy_sign,
    _eval_energy,
    _signed,
    _weighted_mean,
)
from optforge.losses.meco.noise import _check_noise, _noise_log_prob, _sample_device, _sample_noise

__all__ = ["ENCELoss", "NCELoss"]


class NCELoss(nn.Module):
    r"""Noise-contrastive estimation (binary logistic loss between data and noise).

    With noise ratio ``ν`` and logit :math:`G(x) = f(x) - c - \log q(x) - \log\nu`:

    .. math::
        J(\theta, c) = \mathbb E_{data}\,\mathrm{softplus}(-G(x))
                       + \nu\,\mathbb E_q\,\mathrm{softplus}(G(z)).

    At the optimum :math:`f - c = \log p_{data}`. The log-normaliser ``c`` is the parameter
    :attr:`log_normalizer`: **add it to the optimizer** (``list(model.parameters()) +
    list(loss.parameters())``).

    Args:
        noise: the noise distribution ``q`` (``sample`` + ``log_prob``).
        nu: noise samples per data sample (``B' = round(ν B)``).
        learn_log_normalizer: learn ``c`` (set ``False`` if the energy normalises itself).
        init_log_normalizer: initial value of ``c``.
        energy_sign: ``"logdensity"`` (``energy`` returns ``f``) or ``"energy"`` (returns ``-f``).
        seed: seed of the loss's own noise generator.
    """

    def __init__(
        self,
        noise: Any,
        nu: float = 1.0,
        learn_log_normalizer: bool = True,
        init_log_normalizer: float = 0.0,
        energy_sign: EnergySign = "logdensity",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_noise(noise)
        check_positive("nu", nu)
        check_seed("seed", seed)
        if not isinstance(init_log_normalizer, int | float) or not math.isfinite(
            init_log_normalizer
        ):
            raise ValueError(
                f"init_log_normalizer must be a finite number, got {init_log_normalizer!r}"
            )
        self.noise = noise
        self.nu = float(nu)
        self._sign = _energy_sign(energy_sign)
        self.seed = seed
        c = torch.tensor(float(init_log_normalizer))
        if learn_log_normalizer:
            self.log_normalizer = nn.Parameter(c)
        else:
            self.register_buffer("log_normalizer", c)
        self._generator: torch.Generator | None = None

    def logits(self, energy: Energy, x: Tensor, name: str = "x") -> Tensor:
        """The classifier logit ``G(x) = f(x) - c - log q(x) - log ν``."""
        f = _signed(self._sign, _eval_energy(energy, x, name))
        log_q = _noise_log_prob(self.noise, x).to(f.dtype)
        g = f - self.log_normalizer.to(f.dtype) - log_q
        # x - 0.0 is x bitwise (and passes the gradient unchanged): skipped for nu = 1
        log_nu = math.log(self.nu)
        return g if log_nu == 0.0 else g - log_nu

    def forward(
        self,
        energy: Energy,
        x_data: Tensor,
        z_noise: Tensor | None = None,
        *,
        x_weights: Tensor | None = None,
        z_weights: Tensor | None = None,
    ) -> Tensor:
        """The NCE loss on a data batch and a noise batch of ``round(ν B)`` rows.

        Args:
            energy: callable mapping ``(n, *event)`` to ``f(x)`` of shape ``(n,)``.
            x_data: data batch ``(B, *event)``.
            z_noise: noise batch ``(round(ν B), *event)``; drawn here when ``None``.
            x_weights: optional probability weights of the data points (sum to 1).
            z_weights: optional probability weights of the noise points (sum to 1).

        Returns:
            The scalar loss.
        """
        if not callable(energy):
            raise TypeError(f"energy must be callable, got {type(energy).__name__}")
        _check_batch("x_data", x_data)
        n_noise = max(1, round(self.nu * x_data.shape[0]))
        if z_noise is not None:
            _check_pair(x_data, z_noise)
            if z_noise.shape[0] != n_noise:
                raise ValueError(
                    f"z_noise has {z_noise.shape[0]} rows but nu * len(x_data) = {self.nu} * "
                    f"{x_data.shape[0]} = {n_noise}: batch-size mismatch between data and noise"
                )
        _check_weights(x_weights, x_data.shape[0], "x_weights", x_data.device)
        _check_weights(z_weights, n_noise, "z_weights", x_data.device)
        generator = self._generator
        generator_state = None if generator is None else generator.get_state()
        try:
            if z_noise is None:
                z_noise = self._sample(n_noise, x_data)
                _check_pair(x_data, z_noise)
            g_x = self.logits(energy, x_data, "x_data")
            g_z = self.logits(energy, z_noise, "z_noise")
            return self._combine(g_x, g_z, x_weights, z_weights)
        except BaseException:  # a failed call leaves the noise stream where it was
            self._generator = generator
            if generator is not None and generator_state is not None:
                generator.set_state(generator_state)
            raise

    def _combine(
        self, g_x: Tensor, g_z: Tensor, x_weights: Tensor | None, z_weights: Tensor | None
    ) -> Tensor:
        data = _weighted_mean(nn.functional.softplus(-g_x), x_weights, "x_weights")
        noise = _weighted_mean(nn.functional.softplus(g_z), z_weights, "z_weights")
        # 1.0 * noise is noise bitwise: skipped for nu = 1
        return data + (noise if self.nu == 1.0 else self.nu * noise)

    def _sample(self, n: int, like: Tensor) -> Tensor:
        if self._generator is None:
            self._generator = make_generator(self.seed, _sample_device(self.noise, like))
        return _sample_noise(self.noise, n, self._generator).to(like.dtype)

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "generator": None if self._generator is None else self._generator.get_state(),
            "generator_device": None if self._generator is None else str(self._generator.device),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._generator = None
        if state.get("generator") is not None:
            self._generator = torch.Generator(device=state["generator_device"])
            self._generator.set_state(state["generator"])


class ENCELoss(NCELoss):
    r"""eNCE: NCE with the exponential loss (Liu et al. 2022), noise ratio ν = 1.

    .. math::
        J(\theta, c) = \mathbb E_{data}\,e^{-G(x)/2} + \mathbb E_q\,e^{G(z)/2}.

    Liu et al. pair it with normalised gradient descent (step along ``grad / ‖grad‖``); any
    optimizer works with the loss itself. Same arguments as :class:`NCELoss` without ``nu``.
    """

    def __init__(
        self,
        noise: Any,
        learn_log_normalizer: bool = True,
        init_log_normalizer: float = 0.0,
        energy_sign: EnergySign = "logdensity",
        seed: int | None = None,
    ) -> None:
        super().__init__(
            noise,
            nu=1.0,
            learn_log_normalizer=learn_log_normalizer,
            init_log_normalizer=init_log_normalizer,
            energy_sign=energy_sign,
            seed=seed,
        )

    def _combine(
        self, g_x: Tensor, g_z: Tensor, x_weights: Tensor | None, z_weights: Tensor | None
    ) -> Tensor:
        data = _weighted_mean(torch.exp(-0.5 * g_x), x_weights, "x_weights")
        noise = _weighted_mean(torch.exp(0.5 * g_z), z_weights, "z_weights")
        return data + noise
