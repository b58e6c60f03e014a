"""The ttsnap reproduction's hand-written DDPM backward equals autograd bit for bit."""

import torch

from optforge.repro.papers import ttsnap


def test_hand_backprop_matches_autograd_bitwise():
    torch.manual_seed(0)
    model = ttsnap._Denoiser(32)
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    t = torch.randint(0, 1000, (64,), generator=g)
    ((model(x, t) - eps) ** 2).mean().backward()
    auto = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    ttsnap._set_ddpm_grads(model, x, t, eps)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.equal(p.grad, auto[name]), name


def test_ddpm_training_unchanged_by_hand_backprop(monkeypatch):
    config = {**ttsnap.CONFIGS["smoke"], "hidden": 16, "ddpm_iters": 5, "ddpm_batch": 32}
    fast = ttsnap._train_ddpm(config, 0, "cpu")

    def autograd_grads(model, x, t, eps):
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            ((model(x, t) - eps) ** 2).mean().backward()

    monkeypatch.setattr(ttsnap, "_set_ddpm_grads", autograd_grads)
    slow = ttsnap._train_ddpm(config, 0, "cpu")
    for (name, a), b in zip(fast.named_parameters(), slow.parameters(), strict=True):
        assert torch.equal(a, b), name
