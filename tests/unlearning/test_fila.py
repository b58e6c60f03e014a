"""FILA: the weighted low-rank factors and the initialisation of real peft LoRA models."""

import copy

import pytest
import torch

from optforge.unlearning import FilaConfig, Unlearner, fila_factors, fila_init_, initialize_fila

pytest.importorskip("transformers")
pytest.importorskip("peft")

from _unlearning_models import VOCAB, batch, lora_model, peft, tiny_llama


def test_fila_weighted_approximation_is_eckart_young_optimal():
    torch.manual_seed(4)
    w_mat = torch.randn(12, 9, dtype=torch.float64)
    imp = torch.rand(12, 9, dtype=torch.float64) * 10
    r, s = 3, 2.0
    a, b = fila_factors(w_mat, imp, r, s, eps=0.0)
    assert a.shape == (r, 9) and b.shape == (12, r)
    row = imp.sum(1).sqrt()
    err = torch.linalg.norm(row[:, None] * (w_mat - s * b @ a))
    sig = torch.linalg.svdvals(row[:, None] * w_mat)
    assert err.item() == pytest.approx(sig[r:].square().sum().sqrt().item(), rel=1e-10)
    assert torch.linalg.matrix_rank(b @ a).item() <= r


def test_fila_uniform_importance_gives_truncated_svd():
    torch.manual_seed(5)
    w_mat = torch.randn(10, 7, dtype=torch.float64)
    a, b = fila_factors(w_mat, torch.ones_like(w_mat), 2, 4.0, eps=0.0)
    u, sig, vh = torch.linalg.svd(w_mat, full_matrices=False)
    truncated = u[:, :2] @ torch.diag(sig[:2]) @ vh[:2]
    torch.testing.assert_close(b @ a, truncated / 4.0)


def test_fila_lowrank_svd_close_to_exact():
    torch.manual_seed(6)
    w_mat = torch.randn(40, 30) @ torch.diag(torch.logspace(0, -3, 30))
    imp = torch.rand(40, 30)
    a1, b1 = fila_factors(w_mat, imp, 4, 1.0, svd="exact")
    a2, b2 = fila_factors(w_mat, imp, 4, 1.0, svd="lowrank")
    torch.testing.assert_close(b2 @ a2, b1 @ a1, rtol=1e-3, atol=1e-4)


def test_fila_factors_bad_inputs():
    w_mat = torch.randn(6, 4)
    with pytest.raises(ValueError, match="rank"):
        fila_factors(w_mat, torch.ones(6, 4), 5, 1.0)
    with pytest.raises(ValueError, match="importance"):
        fila_factors(w_mat, torch.ones(4, 6), 2, 1.0)
    with pytest.raises(ValueError, match="importance"):
        fila_factors(w_mat, -torch.ones(6, 4), 2, 1.0)
    with pytest.raises(ValueError, match="scaling"):
        fila_factors(w_mat, torch.ones(6, 4), 2, 0.0)
    with pytest.raises(ValueError, match="svd"):
        FilaConfig(svd="random")
    with pytest.raises(ValueError, match="eps"):
        FilaConfig(eps=0.0)


# ------------------------------------------------------------------ FILA on peft models


def test_initialize_fila_keeps_outputs_and_writes_low_rank_adapters():
    base = tiny_llama()
    reference = copy.deepcopy(base)
    model = lora_model(base)
    forget = [batch(10), batch(11)]
    retain = [batch(20)]
    importance = initialize_fila(model, forget, retain)
    assert len(importance) == 3  # q_proj, v_proj, up_proj of one layer
    x = torch.randint(0, VOCAB, (4, 8))
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=x).logits, reference(input_ids=x).logits, rtol=0, atol=1e-5
        )
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert b.abs().max() > 0  # not the zero init
    assert torch.linalg.matrix_rank(b @ a).item() <= 4
    # the base keeps the residual W - s B A
    w0 = reference.model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(layer.base_layer.weight + layer.scaling["default"] * b @ a, w0,
                               rtol=0, atol=1e-5)  # fmt: skip


def test_fila_init_from_explicit_importance_and_errors():
    model = lora_model(tiny_llama())
    names = [n for n, _ in model.named_parameters() if n.endswith("base_layer.weight")]
    importance = {n: torch.ones_like(p) for n, p in model.named_parameters() if n in names}
    fila_init_(model, importance)
    with pytest.raises(ValueError, match="importance has no entry"):
        fila_init_(model, dict(list(importance.items())[:1]))
    with pytest.raises(ValueError, match="adapter_name"):
        fila_init_(model, importance, adapter_name="other")
    with pytest.raises(ValueError, match="no peft LoRA modules"):
        initialize_fila(tiny_llama(), [batch(0)], [batch(1)])
    with pytest.raises(ValueError, match="forget_loader is empty"):
        initialize_fila(model, [], [batch(1)])
    with pytest.raises(ValueError, match="retain_loader is empty"):
        initialize_fila(model, [batch(0)], [])
    # rank larger than the layer (hidden 16, r 32): peft accepts it, FILA refuses
    big = lora_model(tiny_llama(), r=32, alpha=32)
    with pytest.raises(ValueError, match="rank"):
        initialize_fila(big, [batch(0)], [batch(1)])


def test_fila_train_merge_and_reload_reproduce_logits(tmp_path):
    model = lora_model(tiny_llama())
    initialize_fila(model, [batch(10)], [batch(20)])
    unlearner = Unlearner(model, forget_loss="ihl", retain_loss="nll", lr=1e-2)
    for _ in range(3):
        unlearner.step(batch(10), batch(20))
    x = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        trained = model(input_ids=x).logits
    # residual base + adapters travel together in the state dict
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = lora_model(tiny_llama(seed=9))
    fresh.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=x).logits, trained, rtol=0, atol=1e-5)
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=x).logits, trained, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rslora", [False, True])
def test_fila_saved_the_peft_way_reloads_onto_the_original_base(tmp_path, rslora):
    """PEFT's PiSSA/OLoRA conversion: a rank-2r LoRA that applies to the unmodified base."""
    config = peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=rslora,
        target_modules=["q_proj", "v_proj", "up_proj"],
    )  # fmt: skip
    model = peft.get_peft_model(tiny_llama(), config)
    init_dir = tmp_path / "fila_init"
    initialize_fila(model, [batch(10)], [batch(20)], initial_adapter_dir=init_dir)
    assert (init_dir / "adapter_config.json").exists()
    unlearner = Unlearner(model, forget_loss="ihl", retain_loss="nll", lr=1e-2)
    for _ in range(3):
        unlearner.step(batch(10), batch(20))
    model.eval()
    x = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        trained = model(input_ids=x).logits
    model.save_pretrained(tmp_path / "plain")
    model.save_pretrained(tmp_path / "lora", path_initial_model_for_weight_conversion=init_dir)
    with torch.no_grad():  # the model in memory is untouched by the conversion
        torch.testing.assert_close(model(input_ids=x).logits, trained, rtol=0, atol=0)
    assert list(model.peft_config) == ["default"]

    def reload(name):
        out = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path / name).eval()
        with torch.no_grad():
            return out, (out(input_ids=x).logits - trained).abs().max().item()

    _, plain_err = reload("plain")
    assert plain_err > 1e-3  # the plain adapter on the original base is another model
    converted, err = reload("lora")
    assert err <= 1e-5
    cfg = converted.peft_config["default"]
    assert cfg.r == 8 and cfg.init_lora_weights is True  # rank doubled, a standard LoRA
    assert cfg.lora_alpha == pytest.approx(8 * (2**0.5 if rslora else 2))
    layer = converted.base_model.model.model.layers[0].self_attn.q_proj
    trained_layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(trained_layer.scaling["default"])
    original = tiny_llama().model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(layer.base_layer.weight, original, rtol=0, atol=0)


def test_fila_initial_adapter_dir_errors(tmp_path):
    model = lora_model(tiny_llama())
    model.add_adapter("other", peft.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="initial_adapter_dir supports adapter_name='default'"):
        initialize_fila(model, [batch(0)], [batch(1)], adapter_name="other",
                        initial_adapter_dir=tmp_path)  # fmt: skip
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"initial_adapter_dir .* is a file"):
        initialize_fila(model, [batch(0)], [batch(1)], initial_adapter_dir=tmp_path / "f")
    with pytest.raises(TypeError, match="initial_adapter_dir"):
        initialize_fila(model, [batch(0)], [batch(1)], initial_adapter_dir=3)
