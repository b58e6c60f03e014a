"""The elr reproduction's seed ensemble equals the per-seed training bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

from optforge.repro.papers import elr


def _same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def test_stacked_mlp_forward_backward_and_adam_equal_per_seed_models():
    cfg = elr.CONFIGS["quick"]
    seeds = (100, 101, 102)
    hidden, output = elr._stacked_mlp(cfg, 64, 10, seeds, "cpu")
    assert elr._exact_stacking(hidden)
    models = [elr._mlp(cfg, 64, 10, seed) for seed in seeds]
    params = [t for layer in [*hidden, *output] for t in layer]
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3, fused=True) for m in models]
    gen = torch.Generator().manual_seed(0)
    crit = torch.nn.CrossEntropyLoss()
    for _ in range(60):  # the all-stacked first design differed at step 39 here
        x = torch.randn(len(seeds), 64, 64, generator=gen)
        y = torch.randint(0, 10, (len(seeds), 64), generator=gen)
        logits = elr._stacked_forward(hidden, output, x)
        opt.zero_grad()
        torch.stack([crit(logits[i], y[i]) for i in range(len(seeds))]).sum().backward()
        opt.step()
        for i, (model, o) in enumerate(zip(models, opts, strict=True)):
            ref = model(x[i])
            assert torch.equal(ref, logits[i])
            o.zero_grad()
            crit(ref, y[i]).backward()
            o.step()
    for i, model in enumerate(models):
        lin = [m for m in model if isinstance(m, torch.nn.Linear)]
        for k, (w, b) in enumerate(hidden):
            assert torch.equal(w[i], lin[k].weight.t())
            assert torch.equal(b[i], lin[k].bias)
        assert torch.equal(output[i][0], lin[-1].weight)
        assert torch.equal(output[i][1], lin[-1].bias)


@pytest.mark.parametrize(("loss", "noise"), [("elr", "sym"), ("sce", "asym")])
def test_ensemble_metrics_equal_single_seed_training(loss, noise):
    cfg = {**elr.CONFIGS["quick"], "epochs": 6, "eval_every": 3}
    seeds = (100, 101)
    ens = elr._train_ensemble(cfg, seeds, "cpu", loss, noise)
    for seed in seeds:
        ref = elr._train(cfg, seed, "cpu", loss, noise)
        assert ens[seed].keys() == ref.keys()
        assert all(_same(ens[seed][k], ref[k]) for k in ref), seed
    if loss == "elr":
        assert "detect_precision" in ens[seeds[0]]


def test_elr_declares_batched_seeds():
    from optforge.repro.registry import get

    repro = get("elr")
    assert repro.batched is elr._train_seeds
    assert repro.seed_batch is None
