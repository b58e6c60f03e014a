r"""MECO: maximum-likelihood learning of unnormalized models by compositional optimization.

Paper: *Learning Unnormalized Statistical Models via Compositional Optimization*, Wei Jiang,
Jiayu Qin, Lingyu Wu, Changyou Chen, Tianbao Yang, Lijun Zhang (ICML 2023, arXiv:2306.07485).

An unnormalized model has log-density :math:`f_\theta(x) - \log Z(\theta)`. Writing the
partition function as an expectation over a noise distribution :math:`q` turns the negative
log-likelihood into a two-level (compositional) objective

.. math::

    F(\theta) = -\mathbb E_{x\sim p_{data}} f_\theta(x) + \log g(\theta),\qquad
    g(\theta) = \mathbb E_{z\sim q}\,w_\theta(z),\quad w_\theta(z) = e^{f_\theta(z) - \log q(z)}.

A mini-batch estimate :math:`\hat g_t` plugged into the log is biased (Jensen), so MECO tracks
the inner expectation across iterations with a moving average and uses it in the gradient:

.. math::

    u_t = (1-\gamma)\,u_{t-1} + \gamma\,\hat g_t(\theta_t),\qquad u_1 = \hat g_1,\qquad
    G_t = -\tfrac1B\sum_i \nabla f_{\theta_t}(x_i)
          + \frac{1}{u_t}\,\tfrac1{B'}\sum_j w_{\theta_t}(z_j)\nabla f_{\theta_t}(z_j).

:class:`MECOLoss` returns the surrogate :math:`-\text{mean} f(x) + \hat g_t/\text{sg}(u_t)`
(computed in log space), whose autograd gradient is exactly :math:`G_t`, so any
``torch.optim`` optimizer consumes it. The paper's momentum step
:math:`v_t = (1-\beta)v_{t-1} + \beta G_t,\ \theta_{t+1} = \theta_t - \eta v_t` is
``torch.optim.SGD(params, lr=η, momentum=1-β, dampening=1-β)`` (see :func:`meco_momentum_sgd`);
Adam works too. ``estimator="storm"`` replaces the moving average by the STORM recursion
:math:`u_t = (1-\gamma)(u_{t-1} - \hat g_t(\theta_{t-1})) + \hat g_t(\theta_t)`
(same noise batch evaluated at the previous parameters through ``torch.func.functional_call``).

Example::

    noise = torch.distributions.MultivariateNormal(torch.zeros(2), 4 * torch.eye(2))
    loss_fn = MECOLoss(noise, gamma=0.1, seed=0)
    opt = torch.optim.Adam(energy_net.parameters(), lr=1e-3)
    for x in loader:
        opt.zero_grad()
        loss_fn(energy_net, x).backward()   # energy_net(x) -> f(x), shape (B,)
        opt.step()
    loss_fn.nll_estimate()                  # -mean f(x) + log u  (training estimate)

Choices (no official code was found):

* the moving average is over the **inner value** g only (SCGD style) and starts at the first
  batch estimate; γ = 0.1 by default;
* the STORM recursion can make :math:`u_t \le 0` (it subtracts a noisy term); then that step
  falls back to the moving-average update and :attr:`MECOLoss.storm_fallbacks` counts it;
* the STORM *gradient* estimator for :math:`v_t` is not provided (needs a second backward pass
  at the previous parameters); momentum is the moving-average form above;
* samples may carry probability weights (``x_weights``/``z_weights``), used for quadrature
  evaluation of the population landscape; the default is the uniform mean;
* ``reduction`` is not offered: the MECO estimator is defined at the batch level.

Energy convention: ``energy(x)`` returns :math:`f_\theta(x)`, the log unnormalised density
(higher = more likely); pass ``energy_sign="energy"`` if your network returns :math:`E = -f`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from optforge._core import (
    check_in_range,
    check_positive,
    check_positive_int,
    check_seed,
    make_generator,
)
from optforge.losses.meco.energy import (
    Energy,
    EnergySign,
    _check_batch,
    _check_pair,
    _check_weights,
    _energy_sign,
    _eval_energy,
    _log_weights,
    _signed,
    _weighted_mean,
)
from optforge.losses.meco.noise import _check_noise, _noise_log_prob, _sample_device, _sample_noise

__all__ = ["ESS_WARN_FRACTION", "MECOLoss", "meco_momentum_sgd"]

#: relative effective sample size below which :class:`MECOLoss` warns.
ESS_WARN_FRACTION = 0.01


class MECOLoss(nn.Module):
    """Surrogate loss whose gradient is the MECO compositional gradient estimate.

    Args:
        noise: the noise distribution ``q`` (a ``torch.distributions.Distribution`` or any object
            with ``sample(sample_shape)`` and ``log_prob(z)``). It must cover the data support.
        gamma: moving-average weight γ in (0, 1]; ``gamma=1`` is the biased plug-in estimator
            (no averaging).
        estimator: ``"ma"`` (moving average) or ``"storm"`` (variance-reduced recursion; needs
            ``energy`` to be an ``nn.Module``).
        num_noise: noise samples per call when ``z_noise`` is not given; ``None`` uses the data
            batch size. If given, an explicit ``z_noise`` must have this many rows.
        energy_sign: ``"logdensity"`` if ``energy(x)`` returns ``f(x)`` (default), ``"energy"``
            if it returns ``E(x) = -f(x)``.
        seed: seed of the loss's own noise generator (``None``: derived from
            ``torch.initial_seed()``).

    Attributes:
        log_u: buffer, the log of the moving-average partition estimate ``u_t``.
        num_steps: buffer, number of updates of ``log_u`` so far.
        last_ess: effective sample size of the last noise batch.
        storm_fallbacks: number of STORM steps that fell back to the moving average.
    """

    def __init__(
        self,
        noise: Any,
        gamma: float = 0.1,
        estimator: Literal["ma", "storm"] = "ma",
        num_noise: int | None = None,
        energy_sign: EnergySign = "logdensity",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_noise(noise)
        check_in_range("gamma", gamma, 0.0, 1.0, low_inclusive=False)
        check_seed("seed", seed)
        if estimator not in ("ma", "storm"):
            raise ValueError(f"estimator must be 'ma' or 'storm', got {estimator!r}")
        if num_noise is not None:
            check_positive_int("num_noise", num_noise)
        self.noise = noise
        self.gamma = float(gamma)
        self.estimator = estimator
        self.num_noise = num_noise
        self._sign = _energy_sign(energy_sign)
        self.seed = seed
        self.register_buffer("log_u", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("num_steps", torch.tensor(0, dtype=torch.long))
        self._generator: torch.Generator | None = None
        self._prev_params: dict[str, Tensor] | None = None
        self.last_ess = float("nan")
        self.storm_fallbacks = 0
        self._warned_ess = False
        self._last_data_term: Tensor | None = None

    def forward(
        self,
        energy: Energy,
        x_data: Tensor,
        z_noise: Tensor | None = None,
        *,
        x_weights: Tensor | None = None,
        z_weights: Tensor | None = None,
    ) -> Tensor:
        """Update ``u`` with this batch and return the surrogate loss.

        Args:
            energy: callable mapping a batch ``(n, *event)`` to ``f(x)`` of shape ``(n,)``.
            x_data: data batch, shape ``(B, *event)``.
            z_noise: noise batch ``(B', *event)`` drawn from ``noise``; drawn here when ``None``.
            x_weights: optional probability weights of the data points (sum to 1).
            z_weights: optional probability weights of the noise points (sum to 1).

        Returns:
            A scalar whose gradient is the MECO estimate ``G_t`` (its value is not the NLL; see
            :meth:`nll_estimate`).
        """
        if not callable(energy):
            raise TypeError(f"energy must be callable, got {type(energy).__name__}")
        _check_batch("x_data", x_data)
        if self.estimator == "storm" and not isinstance(energy, nn.Module):
            raise TypeError("estimator='storm' needs energy to be an nn.Module")
        n_noise = self.num_noise if self.num_noise is not None else x_data.shape[0]
        if z_noise is not None:
            _check_pair(x_data, z_noise)
            if self.num_noise is not None and z_noise.shape[0] != self.num_noise:
                raise ValueError(
                    f"z_noise has {z_noise.shape[0]} rows but num_noise={self.num_noise}: "
                    "batch-size mismatch between the noise batch and the loss configuration"
                )
            n_noise = z_noise.shape[0]
        _check_weights(x_weights, x_data.shape[0], "x_weights", x_data.device)
        _check_weights(z_weights, n_noise, "z_weights", x_data.device)
        # Every input is valid; from here a failure (the energy returning NaN, a noise without
        # support) puts the generator back, and u is updated last.
        generator_before = self._generator_snapshot()
        try:
            if z_noise is None:
                z_noise = self._sample(n_noise, x_data)
                _check_pair(x_data, z_noise)
            return self._surrogate(energy, x_data, z_noise, x_weights, z_weights)
        except BaseException:
            self._restore_generator(generator_before)
            raise

    def _surrogate(
        self,
        energy: Energy,
        x_data: Tensor,
        z_noise: Tensor,
        x_weights: Tensor | None,
        z_weights: Tensor | None,
    ) -> Tensor:
        f_x = _signed(self._sign, _eval_energy(energy, x_data, "x_data"))
        f_z = _signed(self._sign, _eval_energy(energy, z_noise, "z_noise"))
        log_q = _noise_log_prob(self.noise, z_noise)
        log_w = f_z - log_q.to(f_z.dtype)
        log_omega_z = _log_weights(z_weights, z_noise.shape[0], f_z, "z_weights")
        log_w_omega = log_w + log_omega_z
        log_g = torch.logsumexp(log_w_omega, dim=0)
        data_term = _weighted_mean(f_x, x_weights, "x_weights")

        # log_w.detach() + log_omega_z and its logsumexp are these same ops on the same values
        self._record_ess(log_w_omega.detach(), log_g.detach())
        self._update_log_u(energy, z_noise, log_q, log_omega_z, log_g.detach())
        self._last_data_term = data_term.detach()
        log_u = self.log_u.to(device=log_g.device, dtype=log_g.dtype)
        return -data_term + torch.exp(log_g - log_u)

    def nll_estimate(self) -> Tensor:
        """``-mean f(x) + log u`` from the last call (detached): the training NLL estimate."""
        if self._last_data_term is None:
            raise RuntimeError("nll_estimate() needs a forward call first")
        log_u = self.log_u.to(device=self._last_data_term.device, dtype=self._last_data_term.dtype)
        return -self._last_data_term + log_u

    def reset(self) -> None:
        """Forget ``u`` (and the STORM parameter copy); the next call starts afresh."""
        self.log_u = torch.full_like(self.log_u, float("nan"))
        self.num_steps = torch.zeros_like(self.num_steps)
        self._prev_params = None
        self._last_data_term = None
        self.storm_fallbacks = 0

    # -- checkpointing: the generator state and STORM's previous parameters -------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "generator": None if self._generator is None else self._generator.get_state(),
            "generator_device": None if self._generator is None else str(self._generator.device),
            "prev_params": self._prev_params,
            "storm_fallbacks": self.storm_fallbacks,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._generator = None
        if state.get("generator") is not None:
            self._generator = torch.Generator(device=state["generator_device"])
            self._generator.set_state(state["generator"])
        prev = state.get("prev_params")
        self._prev_params = None if prev is None else {k: v.clone() for k, v in prev.items()}
        self.storm_fallbacks = int(state.get("storm_fallbacks", 0))

    # -- internals -----------------------------------------------------------------------------
    def _generator_snapshot(self) -> tuple[torch.Generator | None, Tensor | None]:
        generator = self._generator
        return generator, None if generator is None else generator.get_state()

    def _restore_generator(self, saved: tuple[torch.Generator | None, Tensor | None]) -> None:
        generator, state = saved
        self._generator = generator
        if generator is not None and state is not None:
            generator.set_state(state)

    def _sample(self, n: int, like: Tensor) -> Tensor:
        if self._generator is None:
            self._generator = make_generator(self.seed, _sample_device(self.noise, like))
        return _sample_noise(self.noise, n, self._generator).to(like.dtype)

    def _update_log_u(
        self, energy: Energy, z: Tensor, log_q: Tensor, log_omega: Tensor, log_g: Tensor
    ) -> None:
        log_g = log_g.to(torch.float64)
        first = int(self.num_steps) == 0 or not math.isfinite(float(self.log_u))
        if first or self.gamma == 1.0:
            new = log_g
        else:
            new = _ma_update(self.log_u, log_g, self.gamma)
            if self.estimator == "storm" and self._prev_params is not None:
                storm = self._storm_update(energy, z, log_q, log_omega, log_g)
                if storm is None:
                    self.storm_fallbacks += 1
                else:
                    new = storm
        self.log_u = new.detach().to(self.log_u.device)
        self.num_steps.add_(1)
        if self.estimator == "storm":
            assert isinstance(energy, nn.Module)
            self._prev_params = {k: p.detach().clone() for k, p in energy.named_parameters()}

    def _storm_update(
        self, energy: Energy, z: Tensor, log_q: Tensor, log_omega: Tensor, log_g: Tensor
    ) -> Tensor | None:
        assert isinstance(energy, nn.Module) and self._prev_params is not None
        with torch.no_grad():
            f_prev = self._sign * _eval_energy(
                lambda t: functional_call(energy, self._prev_params, (t,)), z, "z_noise"
            )
            log_g_prev = torch.logsumexp(f_prev - log_q.to(f_prev.dtype) + log_omega, 0)
        log_g_prev = log_g_prev.to(torch.float64)
        log_u = self.log_u.to(device=log_g.device, dtype=torch.float64)
        m = torch.maximum(torch.maximum(log_u, log_g_prev), log_g)
        val = (1 - self.gamma) * (torch.exp(log_u - m) - torch.exp(log_g_prev - m)) + torch.exp(
            log_g - m
        )
        if not bool(val > 0):
            return None
        return torch.log(val) + m

    def _record_ess(self, log_w: Tensor, lse: Tensor | None = None) -> None:
        # lse: torch.logsumexp(log_w, 0) when the caller has it already (the same value)
        n = log_w.shape[0]
        if lse is None:
            lse = torch.logsumexp(log_w, 0)
        ess = float(torch.exp(2 * lse - torch.logsumexp(2 * log_w, 0)))
        self.last_ess = ess
        if ess < ESS_WARN_FRACTION * n and not self._warned_ess:
            self._warned_ess = True
            warnings.warn(
                f"MECOLoss: effective sample size of the noise batch is {ess:.1f} of {n} "
                "(< 1%): the noise distribution is badly matched to the model (warned once; "
                "see MECOLoss.last_ess)",
                RuntimeWarning,
                stacklevel=3,
            )


def meco_momentum_sgd(params: Any, lr: float, beta: float = 0.1) -> torch.optim.SGD:
    """The MECO momentum step ``v_t = (1-β) v_{t-1} + β G_t``, ``θ ← θ - lr v_t``.

    It is ``torch.optim.SGD(params, lr, momentum=1-β, dampening=1-β)`` (torch starts the buffer
    at ``v_1 = G_1``).

    Args:
        params: parameters (or param groups) of the energy.
        lr: step size η.
        beta: gradient-averaging weight β in (0, 1].

    Returns:
        The configured ``torch.optim.SGD``.
    """
    check_positive("lr", lr)
    check_in_range("beta", beta, 0.0, 1.0, low_inclusive=False)
    return torch.optim.SGD(params, lr=lr, momentum=1.0 - beta, dampening=1.0 - beta)


def _ma_update(log_u: Tensor, log_g: Tensor, gamma: float) -> Tensor:
    log_u = log_u.to(device=log_g.device, dtype=log_g.dtype)
    return torch.logaddexp(math.log1p(-gamma) + log_u, math.log(gamma) + log_g)
