"""Re-applying a recorded WTA-CRS conversion: spec round trip, HF save/reload, clear errors."""

import json

import pytest
import torch
from torch import nn

from optforge.nn import (
    ALL_TARGETS,
    ConversionSpec,
    GradNormCache,
    MaskedReLU,
    WTACRSLinear,
    apply_conversion,
    conversion_spec,
    convert_linear,
    convert_model,
    revert_linear,
)
from optforge.repro.llm import tiny_llama

transformers = pytest.importorskip("transformers")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Linear(16, 2))


def _kinds(model):
    return {
        n: (type(m).__name__, getattr(m, "ratio", None), getattr(m, "min_k", None))
        for n, m in model.named_modules()
        if n
    }


def test_spec_records_steps_and_round_trips_through_json():
    model = _mlp()
    assert conversion_spec(model) is None
    convert_linear(model, 0.5, include=("0",), min_k=2, method="crs")
    convert_model(model, 0.25, include=("2",), generator=7)
    spec = conversion_spec(model)
    assert [s.layers for s in spec.steps] == [("0",), ("2",)]
    assert spec.steps[1].relus == ("1",)
    assert spec.steps[0].options == {"min_k": 2, "method": "crs"}
    assert spec.steps[1].options == {"generator": 7}
    again = ConversionSpec.from_json(json.dumps(json.loads(spec.to_json())))
    assert again == spec
    fresh = _mlp()
    assert apply_conversion(fresh, again) == ["0", "2", "1"]
    assert _kinds(fresh) == _kinds(model)
    assert fresh[0].method == "crs" and isinstance(fresh[1], MaskedReLU)
    assert conversion_spec(fresh) == spec
    other = _mlp()
    assert convert_linear(other, spec=spec.to_dict()) == ["0", "2", "1"]  # the same, one call
    assert _kinds(other) == _kinds(model)


def _llama():
    torch.manual_seed(0)  # the tests draw their inputs from the global generator after this
    return tiny_llama(
        seed=0,
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )


def _bert():
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg)


def _train_step(model, ids, kind):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the samples come from the global RNG: same seed, same rows
    if kind == "llama":
        loss = model(input_ids=ids, labels=ids).loss
    else:
        loss = model(input_ids=ids, labels=torch.tensor([0, 1, 1, 0])).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_hf_save_pretrained_from_pretrained_reapply(kind, tmp_path):
    build = _llama if kind == "llama" else _bert
    model = build()
    names = convert_model(model, 0.3, min_k=4)
    assert names and set(names) <= {n for n, _ in model.named_modules()}
    assert model.config.wta_crs["steps"][0]["layers"] == names
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["wta_crs"]["steps"][0]["ratio"] == 0.3
    cls = type(model)
    loaded = cls.from_pretrained(tmp_path)
    assert not any(isinstance(m, WTACRSLinear) for m in loaded.modules())  # weights only
    assert apply_conversion(loaded) == names  # reads loaded.config.wta_crs
    assert _kinds(loaded) == _kinds(model)
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    loss_a, grads_a = _train_step(model, ids, kind)
    loss_b, grads_b = _train_step(loaded, ids, kind)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)  # the same sampled rows
    with pytest.raises(ValueError, match="already converted"):
        apply_conversion(loaded)


def test_reapply_checks_every_layer_before_changing_anything():
    model = _llama()
    convert_model(model, 0.3)
    spec = conversion_spec(model)
    bert = _bert()
    with pytest.raises(ValueError, match="does not have"):
        apply_conversion(bert, spec)
    assert not any(isinstance(m, WTACRSLinear) for m in bert.modules())
    with pytest.raises(ValueError, match="already converted"):
        apply_conversion(model, spec)
    with pytest.raises(ValueError, match="no recorded"):
        apply_conversion(_mlp())
    with pytest.raises(TypeError, match="spec"):
        apply_conversion(_mlp(), 42)
    with pytest.raises(ValueError, match="format"):
        apply_conversion(_mlp(), {"steps": []})
    with pytest.raises(TypeError, match="ratio"):
        convert_linear(_llama(), 0.5, spec=spec)
    with pytest.raises(TypeError, match="min_k"):
        apply_conversion(_llama(), spec, min_k=3)
    bad = spec.to_dict()
    bad["steps"][0]["ratio"] = 2.0
    with pytest.raises(ValueError, match="ratio"):
        apply_conversion(_llama(), bad)


def test_runtime_objects_are_named_and_given_again():
    model = _mlp()
    cache = GradNormCache()
    convert_linear(model, 0.5, include=None, grad_norm_cache=cache)
    spec = conversion_spec(model)
    assert spec.steps[0].runtime == ("grad_norm_cache",)
    with pytest.warns(UserWarning, match="grad_norm_cache"):
        apply_conversion(_mlp(), spec)
    fresh = _mlp()
    apply_conversion(fresh, spec, grad_norm_cache=cache)
    assert fresh[0].grad_norm_cache is cache


def test_revert_clears_the_record():
    model = _llama()
    convert_model(model, 0.3, include=ALL_TARGETS)
    assert hasattr(model.config, "wta_crs")
    revert_linear(model)
    assert conversion_spec(model) is None and not hasattr(model.config, "wta_crs")
