"""Noise sampling from a dedicated generator, the Gaussian fit (optforge.losses.meco.noise)."""

import torch
from _meco_models import D, std_normal

from optforge.losses.meco import (
    MECOLoss,
    fit_gaussian_noise,
)


# -- determinism, generator use ----------------------------------------------------------------
def test_seeded_sampling_is_deterministic_and_leaves_global_rng_alone():
    for noise in (std_normal(), torch.distributions.Laplace(torch.zeros(1), torch.ones(1))):
        if isinstance(noise, torch.distributions.Laplace):
            noise = torch.distributions.Independent(noise, 1)  # generic (fork_rng) path
        state = torch.get_rng_state()
        a = MECOLoss(noise, seed=1)._sample(5, torch.zeros(1, 1))
        b = MECOLoss(noise, seed=1)._sample(5, torch.zeros(1, 1))
        assert torch.equal(a, b) and a.shape == (5, 1)
        assert torch.equal(state, torch.get_rng_state())


def test_fit_gaussian_noise_matches_moments():
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(12), dtype=D) * 2 + 1
    q = fit_gaussian_noise(x)
    torch.testing.assert_close(q.loc, x.mean(0))
    assert torch.allclose(q.covariance_matrix, 4 * torch.eye(2, dtype=D), atol=0.3)
