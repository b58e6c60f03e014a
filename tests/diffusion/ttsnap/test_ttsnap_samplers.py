"""The diffusers sampler adapter: Tweedie estimate and pruning between steps."""

from __future__ import annotations

import pytest
import torch

from optforge.diffusion.ttsnap import PruningSchedule, ttsnap_search


@pytest.mark.slow
def test_diffusers_sampler_tweedie_and_pruning():
    diffusers = pytest.importorskip("diffusers")
    from optforge.diffusion.ttsnap import DiffusersSampler

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    sampler = DiffusersSampler(unet, sched, (1, 8, 8), num_inference_steps=6)
    assert sampler.num_steps == 6
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        state = sampler.init(4, None, None, noise)
        t = sched.timesteps[0]
        eps = unet(state.x, t).sample
        a = sched.alphas_cumprod[t]
        new, x0 = sampler.step(state, 0)
        torch.testing.assert_close(x0, (state.x - (1 - a).sqrt() * eps) / a.sqrt())
        # Pruning rows between steps leaves the kept rows' trajectories unchanged.
        full, pruned = new, sampler.select(new, torch.tensor([2, 0]))
        for s in range(1, 6):
            full, x_full = sampler.step(full, s)
            pruned, x_pruned = sampler.step(pruned, s)
        torch.testing.assert_close(x_pruned, x_full[[2, 0]], atol=1e-5, rtol=1e-5)
        assert pruned.index.tolist() == [2, 0]
        res = ttsnap_search(
            sampler,
            lambda x, c: x.mean((1, 2, 3)),
            lambda x, c, s: x.mean((1, 2, 3)),
            PruningSchedule((1,), (0.5,)),
            noise=noise,
        )
    assert res.pool_sizes == [4, 2]
