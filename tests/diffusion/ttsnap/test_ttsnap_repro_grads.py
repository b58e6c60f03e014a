"""The ttsnap reproduction's DDPM trainer equals autograd + torch.optim.Adam bit for bit."""

import pytest
import torch

from optforge.repro.papers import ttsnap


def _autograd_grads(model, x, t, eps):
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        ((model(x, t) - eps) ** 2).mean().backward()


def test_hand_backprop_matches_autograd_bitwise():
    torch.manual_seed(0)
    model = ttsnap._Denoiser(64)
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    t = torch.randint(0, 1000, (64,), generator=g)
    _autograd_grads(model, x, t, eps)
    auto = {name: p.grad.clone() for name, p in model.named_parameters()}
    trainer = ttsnap._DDPMTrainer(model, 64)
    trainer._grads(x, t, eps)
    pairs = zip(trainer.gw, trainer.gb, strict=True)
    grads = dict(zip(auto, (g for pair in pairs for g in pair), strict=True))
    for name, p in model.named_parameters():
        assert grads[name].shape == p.shape, name
        assert torch.equal(grads[name], auto[name]), name


def _reference_train(config, seed):
    """The loop before #34's trainer: autograd, Adam(foreach=True), CosineAnnealingLR."""
    images = ttsnap.digits(pixels="symmetric", shuffle_seed=0)[0]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ttsnap._Denoiser(config["hidden"])
    abar = ttsnap._alphas_cumprod("cpu")
    opt = torch.optim.Adam(model.parameters(), lr=config["ddpm_lr"], foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config["ddpm_iters"])
    bs, n = config["ddpm_batch"], len(images)
    for _ in range(config["ddpm_iters"]):
        idx = torch.randint(0, n, (2, bs), generator=g)
        left, right = images[idx[0]].view(-1, 8, 8), images[idx[1]].view(-1, 8, 8)
        x0 = torch.cat([left, right], dim=2).reshape(-1, 128)
        t = torch.randint(0, 1000, (bs,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = abar[t][:, None]
        _autograd_grads(model, a.sqrt() * x0 + (1 - a).sqrt() * eps, t, eps)
        opt.step()
        sched.step()
    return model


# hidden 64: one flat Adam buffer; hidden 16 (bias of 16 floats): Adam per parameter
@pytest.mark.parametrize("hidden", [64, 16])
def test_ddpm_training_bitwise_equal_to_autograd_and_torch_adam(hidden):
    config = {**ttsnap.CONFIGS["smoke"], "hidden": hidden, "ddpm_iters": 6, "ddpm_batch": 32}
    fast = ttsnap._train_ddpm(config, 0, "cpu")
    slow = _reference_train(config, 0)
    assert not fast.training
    for (name, a), b in zip(fast.named_parameters(), slow.parameters(), strict=True):
        assert not a.requires_grad, name
        assert torch.equal(a, b), name
    torch.manual_seed(0)
    assert not torch.equal(fast.inp.weight, ttsnap._Denoiser(hidden).inp.weight)  # it trained
    # the flat path needs every parameter size to be a multiple of 64
    assert len(ttsnap._DDPMTrainer(ttsnap._Denoiser(hidden), 32).adam) == (
        1 if hidden == 64 else 12
    )


def test_cosine_lrs_follow_the_scheduler():
    lrs = ttsnap._cosine_lrs(1e-3, 7)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
    want = []
    for _ in range(7):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == want
    assert lrs[0] == 1e-3 and lrs[-1] < lrs[1]
