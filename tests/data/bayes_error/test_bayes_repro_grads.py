"""The bayes-unlearnable reproduction's hand-written MLP backward equals autograd bit for bit."""

import torch
from torch import nn

from optforge.repro.papers import bayes_unlearnable as bu


def test_hand_backprop_matches_autograd_bitwise():
    model = bu._mlp(5, "cpu", hidden=32, features=16)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(48, 64, generator=g), torch.randint(0, 10, (48,), generator=g)
    nn.CrossEntropyLoss()(model(x), y).backward()
    auto = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    bu._set_cross_entropy_grads(model, x, y)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.equal(p.grad, auto[name]), name


def test_foreach_adam_matches_torch_adam_bitwise():
    """The retrainer's bare Adam loop (issue #34) gives torch.optim.Adam(foreach=True)'s
    parameters bit for bit over many steps (bias corrections included)."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(96, 64, generator=g), torch.randint(0, 10, (96,), generator=g)
    models = [bu._mlp(7, "cpu", hidden=32, features=16) for _ in range(2)]
    opts = [
        torch.optim.Adam(models[0].parameters(), lr=1e-3, foreach=True),
        bu._ForeachAdam(models[1].parameters(), lr=1e-3),
    ]
    for step in range(60):
        idx = torch.arange(step % 3 * 32, step % 3 * 32 + 32)
        for model, opt in zip(models, opts, strict=True):
            bu._set_cross_entropy_grads(model, x[idx], y[idx])
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(models[1][0].weight, bu._mlp(7, "cpu", 32, 16)[0].weight)  # trained
