r"""A learning rate from the gradient signal-to-noise ratio: lr = lr_max · SNR/(1 + SNR).

For an L-smooth objective and an unbiased gradient estimate with noise :math:`\sigma_N^2`,

.. math::

    \mathbb E[-J(\theta')] \le -J - \eta\lVert\nabla J\rVert^2
        + \tfrac{L\eta^2}{2}(\lVert\nabla J\rVert^2 + \sigma_N^2),

which is minimised by

.. math::

    \eta^* = \frac1L\,\frac{\mathrm{SNR}}{1+\mathrm{SNR}}
    = \frac1L\,\frac{\lVert\mathbb E\hat g\rVert^2}{\mathbb E\lVert\hat g\rVert^2},
    \qquad \mathrm{SNR} = \lVert\nabla J\rVert^2/\sigma_N^2 .

:class:`SNRLearningRate` estimates the signal :math:`\max(\lVert\bar g\rVert^2 - S/N, 0)` and the
noise :math:`S/N` from per-sample (or per-micro-batch) squared norms,
:math:`S = (\sum_i\lVert g_i\rVert^2 - N\lVert\bar g\rVert^2)/(N-1)`, EMA-smooths both and writes
:math:`\mathrm{lr} = \mathrm{lr_{max}}\cdot\rho`,
:math:`\rho = \mathrm{clip}(m_{sig}/m_{tot}, \rho_{min}, \rho_{max})` into every param group. It
composes with any ``torch.optim`` optimizer (with Adam it scales Adam's lr).

The estimate is unbiased only when the units are independent draws. With G responses per prompt
the N samples are not: responses of one prompt share it, and the per-sample estimate misses the
between-prompt part of the noise (it divides the prompt-level variance by N instead of B) and so
over-estimates ρ. Pass the B per-prompt gradients (``update_from_microbatches`` with one unit per
prompt, as :class:`~optforge.rl.OBLRPOTrainer` does by default); ``update_from_per_sample`` is
for i.i.d. samples (one response per prompt).
``update_from_gradient`` is a third estimator for when no per-sample information exists (TRL):
EMAs over steps of :math:`\hat g` and :math:`\lVert\hat g\rVert^2` with an exact small-sample
correction.

Paper: Zixun Huang, Jiayi Sheng, Zeyu Zheng, "OBLR-PO: A Theoretical Framework for Stable
Reinforcement Learning", arXiv:2511.23310 (2025).

Choices: ``beta=0.9``, ``rho_min=0.05``, the first ρ is ``rho_max``; an update whose batch
gradient is exactly zero (all groups with equal rewards) is skipped and keeps ρ.

Example::

    snr = SNRLearningRate(opt)                       # lr_max = each group's lr now
    loss.backward()
    snr.update_from_per_sample(sum_sq_per_sample, n)  # or update_from_microbatches / _gradient
    snr.step()                                        # lr = lr_max · ρ
    opt.step()
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

from optforge._core import (
    NonFiniteError,
    check_in_range,
    check_nonnegative,
    check_not_meta,
    check_positive,
    check_tensor,
)

__all__ = ["SNRLearningRate"]


class SNRLearningRate:
    """Scale every param group's lr by ρ = SNR/(1+SNR) estimated from the current batch.

    Use it like an LR scheduler: after ``loss.backward()`` call one ``update_*`` method (it reads
    the batch gradient ``ḡ`` from ``.grad``), then :meth:`step` (writes ``lr_max·ρ``), then
    ``optimizer.step()``.

    Args:
        optimizer: Any ``torch.optim`` optimizer.
        lr_max: The lr at ρ = 1 (the ``1/L`` of the theory). ``None``: each group's lr at
            construction.
        beta: EMA factor for the signal and total estimates (0 = no smoothing).
        rho_min: Floor on ρ, in (0, 1] (keeps the lr from freezing once rewards saturate).
        rho_max: Cap on ρ, in [rho_min, 1].
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_max: float | None = None,
        *,
        beta: float = 0.9,
        rho_min: float = 0.05,
        rho_max: float = 1.0,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if lr_max is not None:
            check_positive("lr_max", lr_max)
        check_in_range("beta", beta, 0.0, 1.0, high_inclusive=False)
        check_in_range("rho_min", rho_min, 0.0, 1.0, low_inclusive=False)
        check_in_range("rho_max", rho_max, rho_min, 1.0)
        self.optimizer = optimizer
        self.beta, self.rho_min, self.rho_max = float(beta), float(rho_min), float(rho_max)
        self.base_lrs = [
            float(lr_max if lr_max is not None else g["lr"]) for g in optimizer.param_groups
        ]
        if lr_max is None:
            for i, lr in enumerate(self.base_lrs):
                check_positive(f"lr of param group {i} (the default lr_max)", lr)
        self.m_signal = 0.0
        self.m_total = 0.0
        self.num_updates = 0
        self.num_skipped = 0
        self.last_rho = self.rho_max
        self.last_signal = math.nan
        self.last_noise = math.nan
        self._grad_ema: list[Tensor] | None = None
        self._sq_ema = 0.0
        self._grad_updates = 0

    # -- estimators -----------------------------------------------------------------------------
    def update_from_per_sample(
        self, sum_sq_per_sample: float | Tensor, n: int, *, mean_grad_sqnorm: float | None = None
    ) -> float:
        """Update from ``Σ_i ||g_i||²`` of the N per-sample terms whose mean is ``ḡ`` (= ``.grad``).

        The N terms must be independent draws (one response per prompt); with several responses
        per prompt use :meth:`update_from_microbatches` over per-prompt gradients.

        For the loss ``-(1/N) Σ c_i A_i log π_i`` the per-sample terms are ``g_i = -c_i A_i s_i``,
        so ``Σ_i ||g_i||² = Σ_i c_i² A_i² ||s_i||²`` — free once ``||s_i||²`` is known exactly.

        Args:
            sum_sq_per_sample: ``Σ_i ||g_i||²``.
            n: Number of per-sample terms (≥ 2).
            mean_grad_sqnorm: ``||ḡ||²``; default: read from the optimizer's ``.grad``.

        Returns:
            The new ρ.
        """
        total = _nonnegative_number("sum_sq_per_sample", sum_sq_per_sample)
        return self._update_from_sum(total, _count("n", n), mean_grad_sqnorm)

    def update_from_microbatches(
        self, microbatch_grad_sqnorms: Sequence[float], mean_grad_sqnorm: float | None = None
    ) -> float:
        """Update from ``||g_k||²`` of K ≥ 2 micro-batch gradients whose mean is ``ḡ``.

        The micro-batches must be independent (e.g. one per prompt, or groups of whole prompts).

        Args:
            microbatch_grad_sqnorms: ``[||g_1||², ..., ||g_K||²]``.
            mean_grad_sqnorm: ``||ḡ||²``; default: read from ``.grad``.

        Returns:
            The new ρ.
        """
        name = "microbatch_grad_sqnorms"
        if isinstance(microbatch_grad_sqnorms, Tensor):
            t = check_tensor(name, microbatch_grad_sqnorms, dtype=None, ndim=1, nonempty=False)
            if bool((t < 0).any()):
                raise ValueError(
                    f"{name} must be >= 0 everywhere, got a minimum of {float(t.min())}"
                )
            values = [float(v) for v in t.detach().double().cpu()]
        else:
            try:
                items = list(microbatch_grad_sqnorms)
            except TypeError:
                raise TypeError(
                    f"{name} must be a sequence of numbers, got "
                    f"{type(microbatch_grad_sqnorms).__name__}"
                ) from None
            values = [_nonnegative_number(f"{name}[{i}]", v) for i, v in enumerate(items)]
        if len(values) < 2:
            raise ValueError(f"{name} needs at least 2 micro-batch terms, got {len(values)}")
        return self._update_from_sum(sum(values), len(values), mean_grad_sqnorm)

    def update_from_microbatches_sum(
        self, sum_sq: float, k: int, mean_grad_sqnorm: float | None = None
    ) -> float:
        """Core estimator: ``S = (Σ_k ||g_k||² − K ||ḡ||²)/(K − 1)``, noise ``S/K``.

        The signal is ``||ḡ||² − S/K`` (clamped at 0); ``sum_sq`` is ``Σ_k ||g_k||²``.
        """
        return self._update_from_sum(
            _nonnegative_number("sum_sq", sum_sq), _count("k", k), mean_grad_sqnorm
        )

    def _update_from_sum(self, sum_sq: float, k: int, mean_grad_sqnorm: float | None) -> float:
        if mean_grad_sqnorm is None:
            gbar2 = self.grad_sqnorm()
            if not math.isfinite(gbar2):
                raise NonFiniteError(
                    f"non-finite gradient in the SNR estimate (||grad||² = {gbar2})"
                )
        else:
            gbar2 = _nonnegative_number("mean_grad_sqnorm", mean_grad_sqnorm)
        noise = max((sum_sq - k * gbar2) / (k - 1), 0.0) / k
        signal = max(gbar2 - noise, 0.0)
        return self._update(signal, noise, skip=gbar2 == 0.0)

    def update_from_gradient(self) -> float:
        """Update from the current ``.grad`` alone, with EMAs over steps (no per-sample data).

        Keeps ``m = EMA(ḡ)`` and ``v = EMA(||ḡ||²)`` (bias-corrected). For i.i.d. batch
        gradients with mean μ and noise σ², ``E||m||² = ||μ||² + σ² Σw²`` and ``E v = ||μ||² + σ²``
        (``Σw²`` the sum of the squared EMA weights), so ``σ² ≈ (v − ||m||²)/(1 − Σw²)``. Lagged
        by ~1/(1−β) steps; costs one parameter-sized buffer.

        Returns:
            The new ρ (unchanged on the first call, which has no spread to measure).
        """
        grads = [
            p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in self._params()
        ]
        for g in grads:
            check_not_meta("a parameter's .grad", g)
        b = self.beta if self.beta > 0 else 0.5
        sq = sum(float(g.double().pow(2).sum()) for g in grads)
        if not math.isfinite(sq):
            raise NonFiniteError("non-finite gradient in the SNR estimate (update_from_gradient)")
        if self._grad_ema is None:
            self._grad_ema = [torch.zeros_like(g, dtype=torch.float32) for g in grads]
        for m, g in zip(self._grad_ema, grads, strict=True):
            m.mul_(b).add_(g.float(), alpha=1 - b)
        self._sq_ema = b * self._sq_ema + (1 - b) * sq
        self._grad_updates += 1
        t = self._grad_updates
        corr = 1 - b**t
        v = self._sq_ema / corr
        m2 = sum(float(m.double().pow(2).sum()) for m in self._grad_ema) / corr**2
        sum_w2 = (1 - b) * (1 + b**t) / ((1 + b) * corr)
        if t < 2 or v <= 0:
            return self.last_rho
        noise = max(v - m2, 0.0) / (1 - sum_w2)
        signal = max(v - noise, 0.0)
        rho = min(max(signal / v, self.rho_min), self.rho_max)
        self.last_rho, self.last_signal, self.last_noise = rho, signal, noise
        self.num_updates += 1
        return rho

    def _update(self, signal: float, noise: float, *, skip: bool) -> float:
        if skip or signal + noise <= 0.0:
            self.num_skipped += 1
            return self.last_rho
        b = self.beta
        self.m_signal = b * self.m_signal + (1 - b) * signal
        self.m_total = b * self.m_total + (1 - b) * (signal + noise)
        self.num_updates += 1
        self.last_signal, self.last_noise = signal, noise
        self.last_rho = min(max(self.m_signal / self.m_total, self.rho_min), self.rho_max)
        return self.last_rho

    # -- scheduler interface --------------------------------------------------------------------
    def step(self) -> None:
        """Write ``lr_max·ρ`` into every param group."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.last_rho

    def get_last_lr(self) -> list[float]:
        """The lr of every param group after the last :meth:`step`."""
        return [base * self.last_rho for base in self.base_lrs]

    def grad_sqnorm(self) -> float:
        """``||ḡ||²`` over the optimizer's parameters (from ``.grad``), in float64."""
        grads = [p.grad for p in self._params() if p.grad is not None]
        for g in grads:
            check_not_meta("a parameter's .grad", g)
        return float(sum(g.double().pow(2).sum() for g in grads))

    def _params(self) -> Iterable[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (EMA state, ρ, counters, base lrs)."""
        return {
            "base_lrs": list(self.base_lrs),
            "beta": self.beta,
            "rho_min": self.rho_min,
            "rho_max": self.rho_max,
            "m_signal": self.m_signal,
            "m_total": self.m_total,
            "num_updates": self.num_updates,
            "num_skipped": self.num_skipped,
            "last_rho": self.last_rho,
            "last_signal": self.last_signal,
            "last_noise": self.last_noise,
            "grad_ema": None if self._grad_ema is None else [m.clone() for m in self._grad_ema],
            "sq_ema": self._sq_ema,
            "grad_updates": self._grad_updates,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (checked before anything changes)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        missing = sorted(set(_STATE_KEYS) - set(state_dict))
        if missing:
            raise ValueError(f"state_dict is missing the SNRLearningRate keys {missing}")
        sd = dict(state_dict)
        n_groups = len(self.optimizer.param_groups)
        if len(sd["base_lrs"]) != n_groups:
            raise ValueError(
                f"state_dict['base_lrs'] has {len(sd['base_lrs'])} entries but the optimizer has "
                f"{n_groups} param groups"
            )
        for i, lr in enumerate(sd["base_lrs"]):
            check_positive(f"state_dict['base_lrs'][{i}]", lr)
        check_in_range("state_dict['beta']", sd["beta"], 0.0, 1.0, high_inclusive=False)
        check_in_range("state_dict['rho_min']", sd["rho_min"], 0.0, 1.0, low_inclusive=False)
        check_in_range("state_dict['rho_max']", sd["rho_max"], sd["rho_min"], 1.0)
        params = list(self._params())
        ema = sd["grad_ema"]
        if ema is not None and (
            len(ema) != len(params)
            or any(tuple(m.shape) != tuple(p.shape) for m, p in zip(ema, params, strict=True))
        ):
            raise ValueError(
                "state_dict['grad_ema'] does not match the optimizer's parameters (count or shapes)"
            )
        self.base_lrs = [float(v) for v in sd["base_lrs"]]
        self.beta, self.rho_min, self.rho_max = sd["beta"], sd["rho_min"], sd["rho_max"]
        self.m_signal, self.m_total = sd["m_signal"], sd["m_total"]
        self.num_updates, self.num_skipped = sd["num_updates"], sd["num_skipped"]
        self.last_rho, self.last_signal, self.last_noise = (
            sd["last_rho"],
            sd["last_signal"],
            sd["last_noise"],
        )
        self._grad_ema = (
            None
            if ema is None
            else [
                m.detach().to(p.device, torch.float32, copy=True)
                for m, p in zip(ema, params, strict=True)
            ]
        )
        self._sq_ema, self._grad_updates = sd["sq_ema"], sd["grad_updates"]


_STATE_KEYS = (
    "base_lrs", "beta", "rho_min", "rho_max", "m_signal", "m_total", "num_updates",
    "num_skipped", "last_rho", "last_signal", "last_noise", "grad_ema", "sq_ema", "grad_updates",
)  # fmt: skip


def _count(name: str, value: object) -> int:
    """An int >= 2 (a count of per-sample or micro-batch terms), else a clear error."""
    if isinstance(value, Tensor) and value.dim() == 0 and not value.dtype.is_floating_point:
        value = int(value)
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer >= 2 (a count of terms), got {value!r}")
    if value < 2:
        raise ValueError(f"{name} must be an integer >= 2 (a count of terms), got {value!r}")
    return int(value)


def _nonnegative_number(name: str, value: object) -> float:
    """A finite float >= 0 from a number or a one-element tensor, else an error naming ``name``."""
    if isinstance(value, Tensor):
        check_not_meta(name, value)
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a number or a one-element tensor, got shape {tuple(value.shape)}"
            )
        value = value.item()
    if not isinstance(value, Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(check_nonnegative(name, value))
