"""The random-search baseline ``best_of_n``: it keeps the best of the seeded candidates."""

import torch
from _reno_helpers import _identity, _quadratic_reward

from optforge.diffusion.reno import best_of_n


def test_best_of_n_keeps_the_best_candidate():
    target = torch.randn(4, 6)
    res = best_of_n(_identity, _quadratic_reward(target), None, (4, 6), 20, seed=0)
    g = torch.Generator().manual_seed(0)
    cands = torch.stack([torch.randn(4, 6, generator=g) for _ in range(20)])
    scores = -(cands - target).square().sum(-1)  # [20, 4]
    best = scores.argmax(0)
    torch.testing.assert_close(res.best_noise, cands[best, torch.arange(4)])
    torch.testing.assert_close(res.history["reward"], scores)
    assert torch.equal(res.best_iteration, best)
