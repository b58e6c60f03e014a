r"""Random-search baseline of ReNO: the best of ``n`` fresh Gaussian noises per sample.

For each sample, draw :math:`z^{(1)}, \dots, z^{(n)} \sim \mathcal N(0, I)`, generate
:math:`G(z^{(k)})` and keep the noise with the highest weighted reward
:math:`\sum_i \lambda_i R_i(G(z^{(k)}))` (ties: the earlier draw). One forward per candidate
and no backward, so 150 candidates cost about as much as ReNO's 50 forwards and 49 backwards;
the reference code calls it "imageselect" (L. Eyring et al., "ReNO: Enhancing One-step
Text-to-Image Models through Reward-based Noise Optimization", NeurIPS 2024, arXiv:2406.04312).

Not to be confused with :func:`optforge.diffusion.ttsnap.sampler_best_of_n`, best-of-N over the
seeds of a multi-step sampler.

Example::

    import torch
    from optforge.diffusion import best_of_n

    generator = lambda z: torch.tanh(z)
    reward = lambda x: -((x - 0.5) ** 2).flatten(1).sum(1)
    result = best_of_n(generator, [reward], [1.0], (4, 16), n=150, seed=0)
    result.best_noise.shape                                # (4, 16)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from optforge._core import check_positive_int, make_generator
from optforge.diffusion.reno.driver import GeneratorFn, ReNO, ReNOResult
from optforge.diffusion.reno.regularizer import _acc, chi_norm_nll
from optforge.diffusion.rewards import ImageRewardFn

__all__ = ["best_of_n"]


@torch.no_grad()
def best_of_n(
    generator: GeneratorFn,
    rewards: ImageRewardFn | Sequence[ImageRewardFn] | Mapping[str, ImageRewardFn],
    weights: Sequence[float] | Mapping[str, float] | None,
    shape: Sequence[int],
    n: int,
    *,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ReNOResult:
    """Random-search baseline ("imageselect"): best of ``n`` fresh Gaussian noises per sample.

    Draws ``n`` noises of ``shape = [B, ...]`` (one generator+reward forward each, no backward)
    and keeps, per sample, the one with the highest weighted reward (ties: the earlier draw).

    Args:
        generator: ``z [B, ...] -> x``.
        rewards: callable(s) ``x -> [B]`` scores.
        weights: one non-negative weight per reward (``None``: all 1).
        shape: noise shape ``[B, ...]``.
        n: number of candidates per sample.
        seed: seed of the dedicated ``torch.Generator`` (``None``: from ``torch.initial_seed``).
        device: device of the noise.
        dtype: dtype of the noise.

    Returns:
        A :class:`ReNOResult` whose history rows are the candidates' rewards (``grad_norm`` NaN).
    """
    check_positive_int("n", n)
    rng = make_generator(seed, device)
    shape = tuple(int(s) for s in shape)
    driver = ReNO(generator, rewards, weights, n_iters=n, reg_weight=0.0)
    z = torch.randn(shape, generator=rng, device=device, dtype=dtype)
    driver.reset(z)
    for k in range(n):
        if k > 0:
            z = torch.randn(shape, generator=rng, device=device, dtype=dtype)
        x = generator(z)
        terms = driver._evaluate(x, shape[0], k)
        total = sum(w * t for w, t in zip(driver.weights, terms.values(), strict=True))
        assert isinstance(total, Tensor)
        driver._track(k, z, x, total, terms)
        driver._hist["reward"].append(_acc(total))
        driver._hist["regularizer"].append(chi_norm_nll(z))
        driver._hist["noise_norm"].append(torch.linalg.vector_norm(_acc(z).flatten(1), dim=1))
        driver._hist["grad_norm"].append(torch.full((shape[0],), float("nan"), device=device))
        for name, value in terms.items():
            driver._hist_terms[name].append(_acc(value))
        driver.k += 1
    return driver.result()
