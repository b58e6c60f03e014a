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
