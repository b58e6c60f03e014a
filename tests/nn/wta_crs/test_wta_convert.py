"""convert_linear / convert_model / revert_linear on plain, HF, LoRA and checkpointed models."""

import pytest
import torch
from torch import nn

from optforge.nn import (
    ALL_TARGETS,
    MaskedReLU,
    WTACRSLinear,
    convert_linear,
    convert_model,
    revert_linear,
    saved_tensor_bytes,
)


def _llama(**extra):
    pytest.importorskip("transformers")
    from optforge.repro.llm import tiny_llama

    torch.manual_seed(0)  # the tests draw their inputs from the global generator after this
    return tiny_llama(
        seed=0,
        vocab_size=32,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        **extra,
    )


def _bytes(model, ids):
    return saved_tensor_bytes(
        lambda: model(input_ids=ids, labels=ids).loss, exclude=model.parameters()
    )


def test_convert_and_revert_plain_model():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.MultiheadAttention(4, 1))
    names = convert_linear(model, 0.3, include=None, exclude=("2",))
    assert names == ["0"] and isinstance(model[0], WTACRSLinear)
    assert type(model[3].out_proj) is not WTACRSLinear  # nn.Linear subclasses are left alone
    weight = model[0].weight
    assert revert_linear(model) == ["0"] and type(model[0]) is nn.Linear
    assert model[0].weight is weight
    with pytest.raises(ValueError, match="from_linear"):
        convert_linear(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ratio"):
        convert_linear(nn.Sequential(nn.Linear(2, 2)), ratio=-1)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        convert_linear("model")


def test_convert_model_one_call_masks_and_trainable_only():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    model[2].weight.requires_grad_(False)
    names = convert_model(model, 0.3, include=None)
    assert names == ["0", "1"]
    assert isinstance(model[0], WTACRSLinear) and isinstance(model[1], MaskedReLU)
    assert type(model[2]) is nn.Linear


def test_hf_llama_paper_set_and_every_linear():
    model = _llama()
    ids = torch.randint(32, (4, 16))
    before = model(input_ids=ids).logits
    full = _bytes(model, ids)
    names = convert_linear(model, 0.3, min_k=1)
    assert sorted({n.rsplit(".", 1)[-1] for n in names}) == [
        "down_proj",
        "gate_proj",
        "o_proj",
        "up_proj",
    ]
    revert_linear(model)
    names = convert_model(model, 0.3, min_k=1)
    assert len(names) == 14 and not any("lm_head" in n for n in names)
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)
    converted = _bytes(model, ids)
    assert converted < full
    share = model.model.layers[0].self_attn.q_proj.share
    hits = share.hits
    model(input_ids=ids, labels=ids).loss.backward()
    assert share.hits - hits == 2 * 3  # per layer: k, v reuse q's sample; up reuses gate's
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert len(revert_linear(model)) == 14


def test_shared_samples_save_more_than_independent_ones():
    model = _llama()
    ids = torch.randint(32, (4, 16))
    convert_model(model, 0.3, min_k=1)
    shared = _bytes(model, ids)
    revert_linear(model)
    convert_model(model, 0.3, min_k=1, share_inputs=False)
    assert shared < _bytes(model, ids)


def test_hf_bert_query_key_value_dense():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg)
    names = convert_model(model, 0.3, min_k=1)
    leaves = sorted({n.split("layer.0.")[-1] for n in names if "layer.0." in n})
    assert leaves == [
        "attention.output.dense",
        "attention.self.key",
        "attention.self.query",
        "attention.self.value",
        "intermediate.dense",
        "output.dense",
    ]
    assert not any("classifier" in n or "pooler" in n for n in names)
    ids = torch.randint(50, (4, 12))
    model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()


def test_lora_samples_the_input_of_lora_a():
    peft = pytest.importorskip("peft")
    model = _llama()
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"])
    model = peft.get_peft_model(model, config)
    ids = torch.randint(32, (4, 16))
    full = _bytes(model, ids)
    names = convert_model(model, 0.3, min_k=1)
    assert names and all(".lora_A." in n for n in names)
    assert len(names) == 2 * 3  # q, v, down per layer; frozen base layers untouched
    assert _bytes(model, ids) < full
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_hf_gradient_checkpointing_composes():
    model = _llama()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.x
        model.activation_checkpointing_enable({"use_reentrant": False})
        disable = model.activation_checkpointing_disable
    else:
        model.gradient_checkpointing_enable({"use_reentrant": False})
        disable = model.gradient_checkpointing_disable
    model.train()
    convert_model(model, 0.3, min_k=1)
    ids = torch.randint(32, (4, 16))
    grads = []
    for _ in range(2):
        model.zero_grad()
        torch.manual_seed(3)
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append(model.model.layers[0].mlp.up_proj.weight.grad.clone())
    assert torch.equal(grads[0], grads[1])
    checkpointed = _bytes(model, ids)
    disable()
    assert checkpointed < 0.5 * _bytes(model, ids)
    model.zero_grad()
    torch.manual_seed(3)
    model(input_ids=ids, labels=ids).loss.backward()
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight.grad, grads[0])


def test_all_targets_include_the_paper_set():
    from optforge.nn import DEFAULT_TARGETS

    assert set(DEFAULT_TARGETS) < set(ALL_TARGETS)
