"""The unlearning loop (optforge.unlearning.trainer.Unlearner)."""

import copy

import pytest
import torch

from optforge.unlearning import Unlearner, gradient_ascent_loss

pytest.importorskip("transformers")
pytest.importorskip("peft")

from _unlearning_models import batch, lora_model, tiny_llama


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
