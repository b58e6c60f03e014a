"""The tiny random-init Llama builder shared by the LLM reproductions."""

import pytest
import torch

from optforge.repro.llm import tiny_llama

pytest.importorskip("transformers")

_SMALL = {
    "vocab_size": 12,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8,
}


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_same_seed_same_weights_and_config_applied():
    a, b = tiny_llama(seed=3, **_SMALL), tiny_llama(seed=3, **_SMALL)
    c = tiny_llama(seed=4, **_SMALL)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(c), strict=True))
    assert a.config.vocab_size == 12 and a.config.num_hidden_layers == 1
    assert a.lm_head.weight.shape == (12, 16)


def test_matches_a_seeded_build_and_leaves_the_global_generator_alone():
    import transformers

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    model = tiny_llama(seed=5, **_SMALL)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(5)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_SMALL))
    assert all(torch.equal(x, y) for x, y in zip(_weights(model), _weights(reference), strict=True))


def test_extra_config_fields_pass_through():
    model = tiny_llama(seed=0, tie_word_embeddings=False, attn_implementation="eager", **_SMALL)
    assert model.config.tie_word_embeddings is False
    assert model.config._attn_implementation == "eager"
