"""LoKU: inverted hinge loss, Fisher diagonals, FILA on real peft LoRA models, the Unlearner."""

import copy

import pytest
import torch
from torch import nn

from optforge.unlearning import (
    FilaConfig,
    GradientAscentLoss,
    InvertedHingeLoss,
    Unlearner,
    fila_factors,
    fila_init_,
    fisher_diagonal,
    gradient_ascent_loss,
    initialize_fila,
    inverted_hinge_loss,
    relative_importance,
)

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

VOCAB = 24


def tiny_llama(seed: int = 0, hidden: int = 16):
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def lora_model(model, r: int = 4, alpha: int = 8):
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"]
    )
    return peft.get_peft_model(model, config)


def batch(seed: int, b: int = 3, t: int = 8) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    labels = ids.clone()
    labels[:, : t // 2] = -100
    return {"input_ids": ids, "labels": labels}


# ------------------------------------------------------------------ inverted hinge loss


def test_ihl_extreme_values():
    big = 60.0
    logits = torch.tensor([[[big, 0.0, 0.0], [0.0, big, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1]])
    # p_y = 1 -> 1 + 1 - 0 = 2
    assert inverted_hinge_loss(logits, labels, shift=False).item() == pytest.approx(2.0)
    # p_y = 0 with another token at 1 -> 1 + 0 - 1 = 0
    assert inverted_hinge_loss(logits, torch.tensor([[2, 0]]), shift=False).item() == (
        pytest.approx(0.0, abs=1e-12)
    )


def test_ihl_hand_computed_three_classes():
    z = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    p = torch.exp(z) / torch.exp(z).sum()
    # target 0: runner-up among {1, 2} is class 1
    expected = 1 + p[0] - p[1]
    got = inverted_hinge_loss(z.view(1, 1, 3), torch.tensor([[0]]), shift=False)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    # target 1 (the argmax): runner-up is class 0
    got = inverted_hinge_loss(z.view(1, 1, 3), torch.tensor([[1]]), shift=False)
    assert got.item() == pytest.approx((1 + p[1] - p[0]).item(), rel=1e-12)


def test_ihl_masking_reductions_and_shift():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7) * 3
    labels = torch.randint(0, 7, (2, 5))
    labels[0, :3] = -100
    per = inverted_hinge_loss(logits, labels, reduction="none")
    assert per.shape == (2, 4)
    mask = labels[:, 1:] != -100
    assert torch.all(per[~mask] == 0)
    assert torch.all((per[mask] >= 0) & (per[mask] <= 2))
    mean = inverted_hinge_loss(logits, labels)
    assert mean.item() == pytest.approx((per.sum() / mask.sum()).item(), rel=1e-6)
    total = InvertedHingeLoss(reduction="sum")(logits, labels)
    assert total.item() == pytest.approx(per.sum().item(), rel=1e-6)
    # shift=True equals the explicitly shifted, unshifted call
    unshifted = inverted_hinge_loss(logits[:, :-1], labels[:, 1:], shift=False, reduction="none")
    torch.testing.assert_close(per, unshifted)
    # reference per-token loop
    p = logits.softmax(-1)
    for b in range(2):
        for t in range(4):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            other = torch.cat([p[b, t, :y], p[b, t, y + 1 :]]).max()
            assert per[b, t].item() == pytest.approx((1 + p[b, t, y] - other).item(), rel=1e-5)


def test_ihl_gradient_matches_closed_form():
    torch.manual_seed(1)
    z = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (6,))
    loss = inverted_hinge_loss(z, y, shift=False, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    p = z.detach().softmax(-1)
    eye = torch.eye(5, dtype=torch.float64)
    masked = p.clone()
    masked[torch.arange(6), y] = -1.0
    v_star = masked.argmax(-1)
    p_y = p[torch.arange(6), y][:, None]
    p_v = p[torch.arange(6), v_star][:, None]
    expected = p_y * (eye[y] - p) - p_v * (eye[v_star] - p)
    torch.testing.assert_close(grad, expected)


def test_ihl_gradcheck_and_vanishing_gradient():
    torch.manual_seed(2)
    z = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (2, 4))
    assert torch.autograd.gradcheck(lambda x: inverted_hinge_loss(x, labels), (z,))
    # self-limiting: as p_y -> 0 the IHL gradient vanishes; the GA gradient does not
    zz = torch.tensor([[-30.0, 5.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0])
    (g_ihl,) = torch.autograd.grad(inverted_hinge_loss(zz, y, shift=False), zz)
    (g_ga,) = torch.autograd.grad(gradient_ascent_loss(zz, y, shift=False), zz)
    assert g_ihl[0, 0].abs() < 1e-10  # no push on the (already improbable) target
    assert g_ga[0, 0].abs() > 0.99  # GA keeps pushing with the same force


def test_ga_equals_minus_hf_loss():
    model = tiny_llama()
    b = batch(0)
    out = model(**b)
    ga = GradientAscentLoss()(out.logits, b["labels"])
    assert ga.item() == pytest.approx(-out.loss.item(), rel=1e-5)


def test_loss_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        inverted_hinge_loss(torch.randn(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="ignore_index"):
        inverted_hinge_loss(torch.randn(1, 4, 7), torch.full((1, 4), -100))
    assert inverted_hinge_loss(torch.randn(1, 4, 7), torch.full((1, 4), -100), reduction="sum") == 0
    with pytest.raises(ValueError, match="reduction"):
        InvertedHingeLoss(reduction="avg")
    with pytest.raises(TypeError, match="integer"):
        inverted_hinge_loss(torch.randn(1, 4, 7), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="target ids"):
        inverted_hinge_loss(torch.randn(1, 4, 7), torch.full((1, 4), 9))


# ------------------------------------------------------------------ Fisher


class LinearSoftmaxLM(nn.Module):
    """logits_t = W[:, x_t] (one-hot input, one linear layer)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab, vocab, dtype=torch.float64))

    def forward(self, input_ids, attention_mask=None):
        return self.weight.T[input_ids]


def test_fisher_batch_size_one_matches_analytic_per_example_gradients():
    torch.manual_seed(3)
    v = 5
    model = LinearSoftmaxLM(v)
    seqs = [torch.randint(0, v, (1, 6)) for _ in range(4)]
    batches = [{"input_ids": s, "labels": s} for s in seqs]
    fisher = fisher_diagonal(model, batches)["weight"]
    w = model.weight.detach()
    expected = torch.zeros_like(w)
    for s in seqs:
        x, y = s[0, :-1], s[0, 1:]
        p = w.T[x].softmax(-1)  # (n, V)
        resid = p - torch.eye(v, dtype=w.dtype)[y]  # dCE_t/dlogits
        grad = torch.zeros_like(w)
        for t in range(len(x)):  # logits_t = W[:, x_t]  =>  dW[:, x_t] += resid_t
            grad[:, x[t]] += resid[t]
        grad /= len(x)
        expected += len(x) * grad.square()
    expected /= sum(s.shape[1] - 1 for s in seqs)
    torch.testing.assert_close(fisher, expected.float())


def test_fisher_token_count_weighting_with_unequal_batches():
    model = tiny_llama()
    b1, b2 = batch(1, b=2), batch(2, b=3)
    b2["labels"][:, -2:] = -100  # fewer target tokens
    name = "model.layers.0.self_attn.q_proj.weight"
    fisher = fisher_diagonal(model, [b1, b2], param_filter=lambda n, p: n == name)
    assert set(fisher) == {name}
    ref = torch.zeros_like(fisher[name])
    total = 0
    for b in (b1, b2):
        model.zero_grad()
        model(**b).loss.backward()
        n_b = int((b["labels"][:, 1:] != -100).sum())
        ref += n_b * dict(model.named_parameters())[name].grad.square()
        total += n_b
    torch.testing.assert_close(fisher[name], ref / total, rtol=1e-4, atol=1e-10)
    # the model is left as it was (no grads kept, flags restored)
    assert all(p.requires_grad for p in model.parameters())


def test_fisher_and_importance_bad_inputs():
    model = tiny_llama()
    with pytest.raises(ValueError, match="forget_loader is empty"):
        fisher_diagonal(model, [], name="forget_loader")
    with pytest.raises(ValueError, match="no target token"):
        fisher_diagonal(model, [{"input_ids": torch.zeros(1, 4, dtype=torch.long),
                                 "labels": torch.full((1, 4), -100)}])  # fmt: skip
    with pytest.raises(ValueError, match="param_filter"):
        fisher_diagonal(model, [batch(0)], param_filter=lambda n, p: False)
    with pytest.raises(ValueError, match="same keys"):
        relative_importance({"a": torch.ones(1)}, {"b": torch.ones(1)})
    imp = relative_importance({"a": torch.tensor([2.0])}, {"a": torch.tensor([1.0])}, eps=1.0)
    assert imp["a"].item() == pytest.approx(1.0)


# ------------------------------------------------------------------ FILA factors


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


# ------------------------------------------------------------------ Unlearner


def test_unlearner_ihl_lowers_forget_probability_and_keeps_base_frozen():
    forget, retain = batch(10), batch(20)
    base = tiny_llama()
    opt = torch.optim.Adam(base.parameters(), lr=3e-2)
    for _ in range(40):  # memorise forget and retain batches first
        opt.zero_grad()
        (base(**forget).loss + base(**retain).loss).backward()
        opt.step()
    model = lora_model(base)
    frozen_before = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    with torch.no_grad():
        before = -gradient_ascent_loss(model(**forget).logits, forget["labels"])
    history = Unlearner(model, forget_loss="ihl", lr=2e-2).fit([forget], [retain], epochs=15)
    assert len(history) == 15 and {"loss", "forget_loss", "retain_loss"} <= set(history[0])
    with torch.no_grad():
        after = -gradient_ascent_loss(model(**forget).logits, forget["labels"])
    assert before < 0.5 and after > before + 1.0  # forget NLL went up
    for n, p in model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n])


def test_unlearner_kl_callback_and_errors():
    base = tiny_llama()
    ref = copy.deepcopy(base)
    unlearner = Unlearner(base, forget_loss="ga", retain_loss="kl", ref_model=ref, lr=1e-3)
    terms = unlearner.step(batch(1), batch(2))
    assert terms["retain_loss"] == pytest.approx(0.0, abs=1e-6)  # identical models at step 0
    hist = unlearner.fit([batch(1)], [batch(2)], epochs=5, callback=lambda e, u: {"stop": e == 2})
    assert len(hist) == 2
    with pytest.raises(ValueError, match="ref_model"):
        Unlearner(tiny_llama(), retain_loss="kl")
    with pytest.raises(ValueError, match="forget_loss"):
        Unlearner(tiny_llama(), forget_loss="npo")
    with pytest.raises(ValueError, match="lr"):
        Unlearner(tiny_llama(), lr=-1.0)
    with pytest.raises(ValueError, match="retain_batch"):
        Unlearner(tiny_llama()).step(batch(1))
    with pytest.raises(ValueError, match="forget_loader is empty"):
        Unlearner(tiny_llama(), retain_loss="none").fit([], epochs=1)
    broken = tiny_llama()
    with torch.no_grad():
        broken.lm_head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="nan"):
        Unlearner(broken, retain_loss="none").step(batch(1))
