"""The ``loku`` reproduction trains, unlearns and evaluates through a lean copy of the tiny
Llama's forward, also for its ``peft`` LoRA/FILA models, and takes the base training's loss
without the library's input checks (issue #34); all must equal ``transformers``', ``peft``'s and
the library's results bit for bit."""

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


def _lora_model(param: str):
    """A LoRA (``param="lora"``) or FILA-initialised model as the reproduction's arms build it,
    with nonzero adapters."""
    from optforge.unlearning import FilaConfig, initialize_fila

    config = {**loku.CONFIGS["quick"], "hidden": 32, "mlp": 48, "heads": 4}
    model = loku._lora(loku._new_model(config, vocab_size=40, seed=3, device="cpu"), config)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    if param == "fila":
        ids = torch.randint(40, (4, 9), generator=gen)
        batch = {"input_ids": ids, "labels": ids.clone()}
        initialize_fila(model, [batch], [batch], FilaConfig())
    return model


@pytest.mark.parametrize("param", ["lora", "fila"])
def test_lean_forward_of_lora_models_equals_peft_bit_for_bit(param):
    pytest.importorskip("peft")
    model = _lora_model(param).train()
    lean = loku._lean(model)
    assert isinstance(lean, loku._LeanLM)
    ids = torch.randint(40, (5, 9), generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters() if p.requires_grad]
    ours, theirs = lean(input_ids=ids), model(input_ids=ids).logits
    assert torch.equal(ours, theirs)
    weights = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(1))
    g_ours = torch.autograd.grad((ours * weights).sum(), params)
    g_theirs = torch.autograd.grad((theirs * weights).sum(), params)
    assert all(torch.equal(a, b) for a, b in zip(g_ours, g_theirs, strict=True))
    with torch.no_grad():
        assert torch.equal(lean(input_ids=ids), model(input_ids=ids).logits)


def test_lora_layers_the_lean_forward_does_not_cover_use_peft():
    pytest.importorskip("peft")
    model = _lora_model("lora")
    assert loku._lean_ok(model)
    model.base_model.model.model.layers[0].mlp.up_proj.merge()
    assert not loku._lean_ok(model)
    assert loku._lean(model) is model


def test_lean_nll_equals_gradient_ascent_loss_bit_for_bit():
    from optforge.unlearning import gradient_ascent_loss

    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 9, 40, generator=gen, requires_grad=True)
    labels = torch.randint(40, (6, 9), generator=gen)
    labels[:, :5] = -100
    ours, theirs = loku._nll(logits, labels), -gradient_ascent_loss(logits, labels)
    assert torch.equal(ours, theirs)
    assert torch.equal(*(torch.autograd.grad(x, logits)[0] for x in (ours, theirs)))
