"""The diffusers one-step generator adapter: deterministic, unit range, gradients reach z only."""

import pytest
import torch
from _reno_helpers import _quadratic_reward

from optforge.diffusion.reno import reno


def test_one_step_diffusers_generator():
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler, UNet2DModel

    from optforge.diffusion.reno import OneStepDiffusersGenerator

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    sched = DDPMScheduler(num_train_timesteps=100)  # clip_sample=True by default
    gen = OneStepDiffusersGenerator(unet, sched)
    assert gen.scheduler.config.clip_sample is False
    z0 = torch.randn(2, 1, 8, 8)
    x1, x2 = gen(z0), gen(z0)
    assert x1.shape == (2, 1, 8, 8) and torch.equal(x1, x2)  # deterministic across calls
    assert float(x1.min()) >= 0.0 and float(x1.max()) <= 1.0
    target = torch.full((2, 1, 8, 8), 0.5)
    res = reno(gen, _quadratic_reward(target), None, z0, n_iters=4, lr=5.0)
    assert (res.best_reward >= res.initial_reward).all()
    assert all(p.grad is None for p in unet.parameters())
    assert torch.isfinite(res.history["grad_norm"][:-1]).all()
