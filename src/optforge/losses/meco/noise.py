"""Noise distributions for MECO and NCE: sampling from a dedicated generator, a Gaussian fit.

Noise distributions are ``torch.distributions`` objects (anything with ``sample`` and
``log_prob``). ``Normal``, ``MultivariateNormal``, ``Independent(Normal)`` and ``Uniform`` are
sampled from the loss's own ``torch.Generator``; other distributions are sampled inside
``torch.random.fork_rng`` seeded from that generator, so the global random stream is untouched.
The noise must cover the data support (``log_prob`` finite where the samples lie).

Example::

    noise = fit_gaussian_noise(x_train, scale=2.0)    # a MultivariateNormal, 2x the covariance
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optforge._core import check_positive
from optforge.losses.meco.energy import _check_batch

__all__ = ["fit_gaussian_noise"]


def fit_gaussian_noise(
    x: Tensor, scale: float = 1.0, jitter: float = 1e-6, *, validate_args: bool | None = None
) -> torch.distributions.MultivariateNormal:
    """A Gaussian noise distribution fitted to data (mean and covariance, inflated by ``scale``).

    Args:
        x: data ``(n, d)``.
        scale: multiplies the covariance (``> 1`` widens the noise).
        jitter: added to the diagonal for numerical safety.
        validate_args: passed to ``MultivariateNormal`` (``None``: torch's default). ``False``
            skips torch's argument check on every ``log_prob`` call (the same values; the
            losses check their samples for NaN/inf themselves).

    Returns:
        ``torch.distributions.MultivariateNormal`` on ``x``'s device and dtype.
    """
    _check_batch("x", x)
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (n >= 2, d), got {tuple(x.shape)}")
    check_positive("scale", scale)
    mean = x.mean(0)
    cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1]) * scale
    cov = cov + jitter * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.distributions.MultivariateNormal(
        mean, covariance_matrix=cov, validate_args=validate_args
    )


def _check_noise(noise: Any) -> None:
    if not callable(getattr(noise, "log_prob", None)):
        raise TypeError(
            f"noise must have a log_prob(z) method (e.g. a torch.distributions.Distribution), "
            f"got {type(noise).__name__}"
        )


def _noise_log_prob(noise: Any, z: Tensor) -> Tensor:
    log_q = noise.log_prob(z)
    if not isinstance(log_q, Tensor) or log_q.shape != (z.shape[0],):
        shape = tuple(log_q.shape) if isinstance(log_q, Tensor) else type(log_q).__name__
        raise ValueError(
            f"noise.log_prob must return one value per sample, shape ({z.shape[0]},), got "
            f"{shape} (for per-coordinate distributions use torch.distributions.Independent)"
        )
    if not torch.isfinite(log_q).all():
        bad = int((~torch.isfinite(log_q)).sum())
        raise ValueError(
            f"noise.log_prob returned {bad} non-finite value(s): the noise must have full "
            "support where the samples lie"
        )
    return log_q


def _sample_device(noise: Any, like: Tensor) -> torch.device:
    for attr in ("loc", "low", "mean"):
        value = getattr(getattr(noise, "base_dist", noise), attr, None)
        if isinstance(value, Tensor):
            return value.device
    return like.device


def _sample_noise(noise: Any, n: int, generator: torch.Generator) -> Tensor:
    """Draw ``n`` samples of ``noise`` from ``generator`` (never from the global stream)."""
    dist = torch.distributions
    base = noise
    if isinstance(noise, dist.Independent):
        base = noise.base_dist
    shape = (n, *noise.batch_shape, *noise.event_shape)
    if isinstance(base, dist.Normal):
        eps = torch.randn(shape, generator=generator, device=base.loc.device, dtype=base.loc.dtype)
        return base.loc + base.scale * eps
    if isinstance(base, dist.Uniform):
        r = torch.rand(shape, generator=generator, device=base.low.device, dtype=base.low.dtype)
        return base.low + (base.high - base.low) * r
    if isinstance(noise, dist.MultivariateNormal):
        loc = noise.loc
        eps = torch.randn(shape, generator=generator, device=loc.device, dtype=loc.dtype)
        return noise.loc + (noise._unbroadcasted_scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    if not callable(getattr(noise, "sample", None)):
        raise TypeError(
            f"noise of type {type(noise).__name__} has no sample(); pass z_noise explicitly"
        )
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    devices = [generator.device] if generator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return noise.sample((n,))
