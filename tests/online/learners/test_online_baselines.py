"""OGD, FTRL and optimistic FTRL (online.learners.baselines)."""

import torch
from _online_helpers import _grads, _play, _zeros

from optforge.online import (
    FTRL,
    OGD,
    Ball,
    Box,
    OptimisticFTRL,
    OptimisticOGD,
)


def test_mirror_steps_stay_in_domain():
    grads = _grads(n=40, d=3, scale=5.0)
    for domain in (Ball(0.5), Box(-0.2, 0.3)):
        for cls in (OptimisticOGD, OGD, FTRL, OptimisticFTRL):
            kw = {"smoothness": 1.0} if cls in (OptimisticOGD, OptimisticFTRL) else {}
            xs = _play(cls(_zeros(3), domain, **kw), grads)
            assert domain.contains(xs, atol=1e-12), cls.__name__


def test_ftrl_closed_form():
    grads = _grads(n=10, d=3)
    learner = FTRL(_zeros(3), Ball(1.0), step="fixed", lr=0.05)
    xs = _play(learner, grads)
    for t in range(1, 10):
        y = -0.05 * grads[:t].sum(0)
        torch.testing.assert_close(xs[t], Ball(1.0).project(y), rtol=0, atol=1e-14)
    # optimistic: Π(−η(S_{t−1} + g_{t−1}))
    opt = OptimisticFTRL(_zeros(3), Ball(1.0), step="fixed", lr=0.05)
    xs = _play(opt, grads)
    for t in range(1, 10):
        y = -0.05 * (grads[:t].sum(0) + grads[t - 1])
        torch.testing.assert_close(xs[t], Ball(1.0).project(y), rtol=0, atol=1e-14)
