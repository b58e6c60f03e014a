"""The ``loku`` reproduction trains its base and oracle models through a lean copy of the tiny
Llama's forward (issue #34); it must equal ``transformers``' forward bit for bit."""

import pytest
import torch

pytest.importorskip("transformers")

from optforge.repro.papers import loku


def test_lean_forward_equals_transformers_bit_for_bit():
    config = {**loku.CONFIGS["quick"], "hidden": 32, "mlp": 48, "heads": 4}
    model = loku._new_model(config, vocab_size=40, seed=3, device="cpu").train()
    assert loku._plain_llama(model)
    ids = torch.randint(40, (5, 9), generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters() if p.requires_grad]
    ours = loku._llama_logits(model, ids)
    theirs = model(input_ids=ids).logits
    assert torch.equal(ours, theirs)
    weights = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(1))
    g_ours = torch.autograd.grad((ours * weights).sum(), params)
    g_theirs = torch.autograd.grad((theirs * weights).sum(), params)
    assert all(torch.equal(a, b) for a, b in zip(g_ours, g_theirs, strict=True))


def test_other_configurations_use_transformers():
    config = {**loku.CONFIGS["quick"], "hidden": 32, "mlp": 48, "heads": 4}
    model = loku._new_model(config, vocab_size=40, seed=3, device="cpu")
    model.config.mlp_bias = True  # a configuration the lean forward does not cover
    assert not loku._plain_llama(model)
