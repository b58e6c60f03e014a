"""Reproduction ``loku``: inverted hinge loss + Fisher-initialised LoRA unlearning on "TinyTOFU".

Set-up (all synthetic, no download): fictitious authors, each with a two-syllable name and one
value token per attribute (birthplace, genre, birth year, award, parent's job, book); two question
phrasings per (author, attribute), ``Q: <question> A: <value> <eos>``, loss only on the answer
and ``<eos>``; plus "world facts" (``Q: capital of <country> ? A: <city>``) that must survive.
A tiny ``transformers`` ``LlamaForCausalLM`` built from a config (random init) is trained on
everything (the "base" model) and, separately, on everything but the forget authors (the
"retain-only" oracle, used for Forget Quality). One experiment per seed builds the data and trains
both models once; every arm of the seed starts from the same base model. The forget set is the
first phrasing of the forget authors' questions; retain batches are drawn from the other authors.

Arms (all ``optforge.unlearning.Unlearner``; LoRA from ``peft``): ``ga`` (gradient ascent, all
parameters), ``ga+lora`` (GA on LoRA adapters), ``ihl+lora`` (IHL + retain NLL, standard LoRA init)
and ``ihl+fila`` (IHL + retain NLL, adapters initialised with FILA). Unlearning runs ``epochs``
passes over the forget set with a constant learning rate; after every epoch the forget, retain
and world-fact answer accuracies (next-token argmax = the value token) are recorded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from optforge._core import seed_everything
from optforge.repro.llm import tiny_llama
from optforge.repro.registry import Claim, Reproduction, register
from optforge.unlearning import (
    FilaConfig,
    Unlearner,
    answer_accuracy,
    answer_logprob,
    answer_probability,
    forget_quality,
    initialize_fila,
    model_utility,
    truth_ratio,
)

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "run"]

_ATTRIBUTES = (  # name, number of values, phrasing-1 words, phrasing-2 words
    ("birthplace", 16, ("where", "was"), ("born", "in")),
    ("genre", 10, ("what", "genre"), ("writes",)),
    ("year", 20, ("when", "was"), ("born",)),
    ("award", 10, ("which", "award"), ("won",)),
    ("parent", 12, ("what", "job"), ("parent", "has")),
    ("book", 24, ("which", "book"), ("wrote",)),
)
_SEQ_LEN = 16

_BASE: dict[str, Any] = {
    "n_syllables": 30,
    "name_tokens": 2,
    "hidden": 64,
    "mlp": 128,
    "layers": 2,
    "heads": 4,
    "base_lr": 3e-3,
    "base_batch": 32,
    "lora_r": 8,
    "lora_alpha": 16,
    "batch_size": 8,  # forget batch (and retain batch) size during unlearning
    "dtype": "float32",
    "lr_full": 1e-3,
    "lr_lora": 1e-3,
    "forget_threshold": 0.1,
    "early_epoch": 5,  # the official TOFU scripts unlearn for 5 epochs
}

CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {
        **_BASE,
        "n_authors": 12,
        "n_attributes": 3,
        "n_forget": 2,
        "n_world": 12,
        "base_epochs": 80,
        "base_batch": 128,
        "epochs": 12,
        "oracle": False,
    },
    "quick": {
        **_BASE,
        "n_authors": 30,
        "n_attributes": 6,
        "n_forget": 3,
        "n_world": 30,
        "base_epochs": 80,
        "epochs": 20,
        "oracle": True,
    },
    "full": {
        **_BASE,
        "n_authors": 200,
        "n_attributes": 6,
        "n_forget": 20,
        "n_world": 100,
        "hidden": 256,
        "mlp": 512,
        "layers": 4,
        "base_epochs": 60,
        "epochs": 20,
        "oracle": True,
    },
}

# arm → (forget loss, retain NLL on?, parameterisation)
ARMS: dict[str, tuple[str, bool, str]] = {
    "ga": ("ga", False, "full"),
    "ga+lora": ("ga", False, "lora"),
    "ihl+lora": ("ihl", True, "lora"),
    "ihl+fila": ("ihl", True, "fila"),
}


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed: the data, the base model and the oracle are built once and shared,
    and so are their evaluations (the base model's metrics, the oracle's truth ratios)."""
    data = _data(config, seed)
    base = _trained_state(config, data, seed, "base", device)
    oracle = _trained_state(config, data, seed, "oracle", device) if config["oracle"] else None
    base_metrics = _evaluate(_load(config, data, base, seed, device), data, device)
    oracle_eval = None
    if oracle is not None:
        oracle_model = _load(config, data, oracle, seed, device)
        oracle_eval = (
            _truth_ratios(oracle_model, data, device),
            _evaluate(oracle_model, data, device)["forget_acc"],
        )
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        seed_everything(seed)
        forget_loss, retain, param = ARMS[arm]
        out[arm] = _unlearn(
            config, data, base, base_metrics, oracle_eval, seed, device,
            forget_loss=forget_loss, retain=retain, param=param,
        )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class _Vocab:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, word: str) -> int:
        return self.ids.setdefault(word, len(self.ids))


def _data(config: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Token tensors of TinyTOFU for one seed (authors' names and attributes drawn from it)."""
    rng = np.random.default_rng(seed)
    vocab = _Vocab()
    pad, eos = vocab("<pad>"), vocab("<eos>")
    q_tok, a_tok, qm = vocab("Q:"), vocab("A:"), vocab("?")
    attrs = _ATTRIBUTES[: config["n_attributes"]]
    n_auth = config["n_authors"]
    pairs = rng.permutation(config["n_syllables"] ** 2)[:n_auth]
    n_syl = config["n_syllables"]
    if config["name_tokens"] == 2:
        names = [(vocab(f"syl{p // n_syl}"), vocab(f"syl{p % n_syl}")) for p in pairs]
    else:
        names = [(vocab(f"author{p}"),) for p in pairs]
    values = np.stack([rng.integers(0, k, size=n_auth) for _, k, _, _ in attrs], axis=1)

    def encode(words: list[int], answer: int) -> tuple[list[int], list[int]]:
        ids = [*words, answer, eos]
        labels = [-100] * len(words) + [answer, eos]
        ids += [pad] * (_SEQ_LEN - len(ids))
        labels += [-100] * (_SEQ_LEN - len(labels))
        return ids, labels

    def question(author: int, a: int, phrasing: int) -> list[int]:
        name, p1, p2 = list(names[author]), attrs[a][2], attrs[a][3]
        if phrasing == 0:
            body = [vocab(w) for w in p1] + name + [vocab(f"{attrs[a][0]}?")]
        else:
            body = name + [vocab(w) for w in p2] + [vocab(f"of:{attrs[a][0]}")]
        return [q_tok, *body, qm, a_tok]

    value_tok = [[vocab(f"{name}={v}") for v in range(k)] for name, k, _, _ in attrs]
    rows: dict[str, list] = {"forget": [], "forget_para": [], "retain": [], "retain_p1": []}
    perturbed: list[list[list[int]]] = []
    for author in range(n_auth):
        for a in range(len(attrs)):
            true = value_tok[a][values[author, a]]
            for phrasing in (0, 1):
                item = encode(question(author, a, phrasing), true)
                if author < config["n_forget"]:
                    rows["forget" if phrasing == 0 else "forget_para"].append(item)
                else:
                    rows["retain"].append(item)
                    if phrasing == 0:
                        rows["retain_p1"].append(item)
            if author < config["n_forget"]:
                wrong = [v for v in range(len(value_tok[a])) if v != values[author, a]]
                picks = rng.choice(wrong, size=3, replace=False)
                perturbed.append(
                    [encode(question(author, a, 1), value_tok[a][v])[0] for v in picks]
                )
    world = [
        encode(
            [q_tok, vocab("capital"), vocab("of"), vocab(f"cty{j}"), qm, a_tok], vocab(f"cap{j}")
        )
        for j in range(config["n_world"])
    ]

    def tensors(items: list) -> dict[str, torch.Tensor]:
        ids = torch.tensor([i for i, _ in items])
        labels = torch.tensor([lab for _, lab in items])
        return {"input_ids": ids, "labels": labels}

    out = {k: tensors(v) for k, v in rows.items()}
    out["world"] = tensors(world)
    # perturbed forget answers for the truth ratio: (N, 3, T) with the same label positions
    out["perturbed_ids"] = torch.tensor(perturbed)
    out["vocab_size"] = len(vocab.ids)
    return out


def _answer_only(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Labels on the value token only (drop the trivially predictable ``<eos>``)."""
    labels = batch["labels"].clone()
    first = (labels != -100).int().argmax(-1)
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[torch.arange(len(labels)), first] = True
    return {"input_ids": batch["input_ids"], "labels": labels.masked_fill(~keep, -100)}


def _batches(
    data: Mapping[str, torch.Tensor], batch_size: int, generator: torch.Generator, device: str
) -> list[dict[str, torch.Tensor]]:
    order = torch.randperm(len(data["input_ids"]), generator=generator)
    return [
        {k: v[order[i : i + batch_size]].to(device) for k, v in data.items()}
        for i in range(0, len(order), batch_size)
    ]


def _concat(*parts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in ("input_ids", "labels")}


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _new_model(config: Mapping[str, Any], vocab_size: int, seed: int, device: str):
    return tiny_llama(
        seed=seed,
        device=device,
        vocab_size=vocab_size,
        hidden_size=config["hidden"],
        intermediate_size=config["mlp"],
        num_hidden_layers=config["layers"],
        num_attention_heads=config["heads"],
        num_key_value_heads=config["heads"],
        max_position_embeddings=32,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=1,
    )


def _llama_logits(
    model, input_ids: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """``model(input_ids=input_ids).logits`` of the tiny ``LlamaForCausalLM`` or of a ``peft``
    LoRA model around it (no attention mask, no cache), with the same operations in the same
    order as ``transformers``' and ``peft``'s own forwards (equal bit for bit, forward and
    backward: ``tests/unlearning/test_loku_repro_forward.py``) but without their per-call
    machinery (output capture, mask and cache objects, adapter dispatch), which costs about as
    much as the tiny model itself. Only for models :func:`_lean_ok` accepts. ``rope``: the
    rotary ``(cos, sin)`` of :func:`_rope` for this sequence length (computed here if ``None``;
    the same values either way)."""
    import torch.nn.functional as F

    def rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * h.to(x.dtype)

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    lm = _llama_of(model)
    inner = lm.model
    b, t = input_ids.shape
    h = inner.embed_tokens(input_ids)
    cos, sin = _rope(lm, t) if rope is None else rope
    for layer in inner.layers:
        att, mlp = layer.self_attn, layer.mlp
        x = rms_norm(h, layer.input_layernorm)
        heads = (b, t, -1, att.head_dim)
        q = _linear(x, att.q_proj).view(heads).transpose(1, 2)
        k = _linear(x, att.k_proj).view(heads).transpose(1, 2)
        v = _linear(x, att.v_proj).view(heads).transpose(1, 2)
        q = (q * cos) + (rotate_half(q) * sin)
        k = (k * cos) + (rotate_half(k) * sin)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, dropout_p=0.0, scale=att.scaling, is_causal=True
        )
        o = o.reshape(b, -1, t, v.shape[-1]).transpose(1, 2).contiguous()
        h = h + _linear(o.reshape(b, t, -1).contiguous(), att.o_proj)
        x = rms_norm(h, layer.post_attention_layernorm)
        gate = F.silu(_linear(x, mlp.gate_proj))
        h = h + _linear(gate * _linear(x, mlp.up_proj), mlp.down_proj)
    return F.linear(rms_norm(h, inner.norm), lm.lm_head.weight)


def _rope(lm, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary ``(cos, sin)`` of positions ``0 … t-1``, shaped for the heads, as the Llama
    forward computes them (constants: no gradient, the same for every call)."""
    inner = lm.model
    weight = inner.embed_tokens.weight
    cos, sin = inner.rotary_emb(
        weight.new_empty(0), position_ids=torch.arange(t, device=weight.device).unsqueeze(0)
    )
    return cos.unsqueeze(1), sin.unsqueeze(1)


def _linear(x: torch.Tensor, module) -> torch.Tensor:
    """A bias-free ``nn.Linear``, or a vanilla ``peft`` LoRA layer around one with its forward's
    operations: ``W x + B(A x) · scaling`` (dropout 0, one active adapter)."""
    import torch.nn.functional as F

    base = getattr(module, "base_layer", None)
    if base is None:
        return F.linear(x, module.weight)
    (name,) = module.active_adapters
    result = F.linear(x, base.weight)
    lora = F.linear(F.linear(x, module.lora_A[name].weight), module.lora_B[name].weight)
    return result + lora * module.scaling[name]


def _llama_of(model):
    """The ``LlamaForCausalLM`` of ``model`` (itself, or the one inside a ``peft`` model)."""
    if hasattr(model, "peft_config") and hasattr(model, "base_model"):
        return model.base_model.model
    return model


def _plain_llama(model) -> bool:
    """Whether :func:`_llama_logits` computes ``model``'s forward: the configuration
    :func:`_new_model` builds (no biases, SiLU, default RoPE, one KV head per head, SDPA)."""
    c = model.config
    return (
        type(model).__name__ == "LlamaForCausalLM"
        and not c.attention_bias
        and not c.mlp_bias
        and c.hidden_act == "silu"
        and c.num_key_value_heads == c.num_attention_heads
        and c.rope_parameters.get("rope_type", "default") == "default"
        and c._attn_implementation == "sdpa"
        and c.attention_dropout == 0.0
    )


_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _lean_ok(model) -> bool:
    """Whether :func:`_llama_logits` computes ``model``'s forward: a :func:`_plain_llama` model,
    or a ``peft`` LoRA model around one whose wrapped projections are vanilla LoRA layers (one
    active adapter, not merged, no dropout, no DoRA or other variant, no LoRA bias, float32) and
    whose embedding and head are not wrapped."""
    from torch import nn

    lm = _llama_of(model)
    if not _plain_llama(lm):
        return False
    if lm is model:
        return all(
            type(getattr(layer.self_attn if n in _PROJECTIONS[:4] else layer.mlp, n)) is nn.Linear
            for layer in lm.model.layers
            for n in _PROJECTIONS
        )
    if type(lm.lm_head) is not nn.Linear or type(lm.model.embed_tokens) is not nn.Embedding:
        return False
    for layer in lm.model.layers:
        for n in _PROJECTIONS:
            module = getattr(layer.self_attn if n in _PROJECTIONS[:4] else layer.mlp, n)
            if type(module) is nn.Linear:
                continue
            base = getattr(module, "base_layer", None)
            adapters = list(getattr(module, "active_adapters", ()))
            if (
                type(module).__module__ != "peft.tuners.lora.layer"
                or type(module).__name__ != "Linear"
                or type(base) is not nn.Linear
                or base.bias is not None
                or module.disable_adapters
                or module.merged
                or len(adapters) != 1
                or adapters[0] not in module.lora_A
                or adapters[0] in getattr(module, "lora_variant", {})
                or module.use_dora.get(adapters[0], False)
                or type(module.lora_dropout[adapters[0]]) is not nn.Identity
                or module.lora_A[adapters[0]].bias is not None
                or module.lora_B[adapters[0]].bias is not None
                or module.lora_A[adapters[0]].weight.dtype != torch.float32
                or module.lora_B[adapters[0]].weight.dtype != torch.float32
                or base.weight.dtype != torch.float32
            ):
                return False
    return True


class _LeanLM(torch.nn.Module):
    """``model`` called through :func:`_llama_logits` (returns the logits tensor); with an
    ``attention_mask`` it falls back to the model's own forward."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is not None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return _llama_logits(self.model, input_ids)


def _lean(model):
    """``model`` with the lean forward where :func:`_lean_ok` (same outputs), else itself."""
    return _LeanLM(model) if _lean_ok(model) else model


def _nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-gradient_ascent_loss(logits, labels)`` (the mean next-token cross-entropy over the
    labelled positions) with the same operations, without its input validation (the batches
    are built here; a non-finite loss is caught once per epoch by :func:`_train_lm`)."""
    import torch.nn.functional as F

    logits, labels = logits[..., :-1, :], labels[..., 1:]
    mask = labels != -100
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1).long(),
        ignore_index=-100,
        reduction="none",
    ).reshape(labels.shape)
    return -((-ce).sum() / mask.sum())


def _train_lm(
    config: Mapping[str, Any], train: Mapping[str, torch.Tensor], vocab_size: int, seed: int,
    device: str,
):  # fmt: skip
    """Fine-tune a fresh tiny Llama on ``train`` (AdamW, one-cycle lr, wd 0.01)."""
    from optforge.unlearning import gradient_ascent_loss
    from optforge.unlearning.loku import causal_lm_logits

    model = _new_model(config, vocab_size, seed, device)
    gen = torch.Generator().manual_seed(10_000 + seed)
    steps_per_epoch = -(-len(train["input_ids"]) // config["base_batch"])
    # foreach: one kernel per op for all tensors (same update as the per-tensor loop, bit for bit)
    opt = torch.optim.AdamW(
        model.parameters(), lr=config["base_lr"], weight_decay=0.01, foreach=True
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=config["base_lr"],
        total_steps=config["base_epochs"] * steps_per_epoch,
        pct_start=0.1,
    )
    model.train()
    lean = _lean_ok(model)
    rope = _rope(model, train["input_ids"].shape[1]) if lean else None
    for epoch in range(config["base_epochs"]):
        for batch in _batches(train, config["base_batch"], gen, device):
            if lean:
                logits = _llama_logits(model, batch["input_ids"], rope)
                loss = _nll(logits, batch["labels"])
            else:
                logits = causal_lm_logits(model, batch)
                loss = -gradient_ascent_loss(logits, batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        # a NaN or inf spreads to the weights and every later loss: one check per epoch
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"base training loss became {float(loss)} in epoch {epoch}")
    model.eval()
    return model


def _trained_state(
    config: Mapping[str, Any], data: Mapping[str, Any], seed: int, which: str, device: str
) -> dict[str, torch.Tensor]:
    """State dict of the base (``which="base"``) or retain-only (``"oracle"``) model."""
    parts = [data["retain"], data["world"]]
    if which == "base":
        parts += [data["forget"], data["forget_para"]]
    model = _train_lm(config, _concat(*parts), data["vocab_size"], seed + (which == "oracle"),
                      device)  # fmt: skip
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load(
    config: Mapping[str, Any], data: Mapping[str, Any], state: Mapping[str, torch.Tensor],
    seed: int, device: str,
):  # fmt: skip
    """A fresh model holding ``state`` (the shared state dict is copied, never modified)."""
    model = _new_model(config, data["vocab_size"], seed, device)
    model.load_state_dict(state)
    return model.eval()


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _truth_ratios(model, data: Mapping[str, torch.Tensor], device: str) -> torch.Tensor:
    model = _lean(model)
    para = _answer_only({k: v.to(device) for k, v in data["forget_para"].items()})
    para_lp = answer_logprob(model, para)
    pert = data["perturbed_ids"].to(device)
    n, k, t = pert.shape
    pert_batch = {
        "input_ids": pert.reshape(n * k, t),
        "labels": para["labels"].repeat_interleave(k, 0),
    }
    pert_batch["labels"] = torch.where(
        pert_batch["labels"] != -100, pert_batch["input_ids"], pert_batch["labels"]
    )
    pert_lp = answer_logprob(model, pert_batch).reshape(n, k)
    return truth_ratio(para_lp, pert_lp).cpu()


class _OneForwardPerBatch:
    """Calls ``model`` once per batch: the accuracy and the probability of one batch are read
    from the same logits (the model's own forward, so the metrics are unchanged)."""

    def __init__(self, model) -> None:
        self.model = model
        self._last: tuple[dict[str, torch.Tensor], Any] | None = None

    def __call__(self, **kwargs: torch.Tensor) -> Any:
        last = self._last
        if (
            last is not None
            and last[0].keys() == kwargs.keys()
            and all(last[0][k] is v for k, v in kwargs.items())
        ):
            return last[1]
        out = self.model(**kwargs)
        self._last = (kwargs, out)
        return out


def _evaluate(model, data: Mapping[str, torch.Tensor], device: str) -> dict[str, float]:
    model.eval()
    forward = _OneForwardPerBatch(_lean(model))
    out = {}
    for name, key in (("forget", "forget"), ("retain", "retain"), ("world", "world")):
        batch = _answer_only({k: v.to(device) for k, v in data[key].items()})
        out[f"{name}_acc"] = float(answer_accuracy(forward, batch).mean())
        out[f"{name}_prob"] = float(answer_probability(forward, batch).mean())
    return out


# --------------------------------------------------------------------------------------------
# Arms
# --------------------------------------------------------------------------------------------


def _lora(model, config: Mapping[str, Any]):
    from optforge._core import require

    peft = require("peft", "llm")
    lora_config = peft.LoraConfig(
        r=config["lora_r"],
        lora_alpha=config["lora_alpha"],
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    )
    with torch.random.fork_rng(devices=[]):  # peft draws lora_A with the global RNG
        torch.manual_seed(0)
        return peft.get_peft_model(model, lora_config)


def _unlearn(
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    base: Mapping[str, torch.Tensor],
    base_metrics: Mapping[str, float],
    oracle_eval: tuple[torch.Tensor, float] | None,
    seed: int,
    device: str,
    *,
    forget_loss: str,
    retain: bool,
    param: str,
) -> dict[str, Any]:
    """Unlearn the forget set from the base model with one arm; curves and final metrics.

    ``base_metrics`` are the base model's (:func:`_evaluate`), ``oracle_eval`` the oracle's
    truth ratios and forget accuracy (``None``: no oracle), computed once per seed by :func:`run`.
    """
    model = _load(config, data, base, seed, device)
    gen = torch.Generator().manual_seed(20_000 + seed)
    bs = config["batch_size"]
    forget_batches = _batches(data["forget"], bs, gen, device)
    retain_pool = data["retain"]
    if param == "full":
        lr = config["lr_full"]
    else:
        model = _lora(model, config)
        lr = config["lr_lora"]
        if param == "fila":
            fisher_retain = _batches(retain_pool, bs, gen, device)[: len(forget_batches)]
            initialize_fila(model, forget_batches, fisher_retain, FilaConfig())
    # Unlearner's default optimizer (AdamW, weight decay 0) with foreach kernels (bit-identical)
    params = [p for p in model.parameters() if p.requires_grad]
    unlearner = Unlearner(
        _lean(model),  # the same forward, bit for bit, without transformers' per-call overhead
        forget_loss=forget_loss,
        retain_loss="nll" if retain else "none",
        optimizer=torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=True),
    )
    curves: dict[str, list[float]] = {"epoch": [0.0]}
    for key, val in base_metrics.items():
        curves[key] = [val]
    for _epoch in range(1, config["epochs"] + 1):
        retain_batches = _batches(retain_pool, bs, gen, device) if retain else None
        for i, fb in enumerate(_batches(data["forget"], bs, gen, device)):
            unlearner.step(fb, retain_batches[i % len(retain_batches)] if retain else None)
        metrics = _evaluate(model, data, device)
        curves["epoch"].append(float(_epoch))
        for key, val in metrics.items():
            curves[key].append(val)
    forget = np.array(curves["forget_acc"][1:])
    early = min(config["early_epoch"], config["epochs"])
    hit = np.nonzero(forget <= config["forget_threshold"])[0]
    epochs_to_forget = float(hit[0] + 1) if hit.size else float(config["epochs"] + 1)
    at = int(hit[0] + 1) if hit.size else config["epochs"]
    out: dict[str, Any] = {
        "base_forget_acc": base_metrics["forget_acc"],
        "base_retain_acc": base_metrics["retain_acc"],
        "base_world_acc": base_metrics["world_acc"],
        "final_forget_acc": curves["forget_acc"][-1],
        "final_retain_acc": curves["retain_acc"][-1],
        "final_world_acc": curves["world_acc"][-1],
        "epochs_to_forget": epochs_to_forget,
        "forget_acc_mean": float(forget.mean()),
        f"forget_acc_epoch{config['early_epoch']}": float(forget[early - 1]),
        "retain_acc_at_forget": curves["retain_acc"][at],
        "world_acc_at_forget": curves["world_acc"][at],
        "model_utility": model_utility(
            [curves[k][-1] for k in ("retain_acc", "retain_prob", "world_acc", "world_prob")]
        ),
        "batch_size": float(bs),
        "seed": float(seed),
        **curves,
    }
    if oracle_eval is not None:
        tr_oracle, oracle_forget_acc = oracle_eval
        out["oracle_forget_acc"] = oracle_forget_acc
        out["forget_quality"] = forget_quality(_truth_ratios(model, data, device), tr_oracle)
    return out


CLAIMS = [
    Claim(
        name="base-model-knows-everything",
        statement="(protocol) the model is first fine-tuned until it knows every fictitious fact.",
        metric=lambda r: min(
            r.min("ihl+lora", "base_forget_acc"), r.min("ihl+lora", "base_retain_acc")
        ),
        op=">=",
        threshold=0.98,
        description="worst seed of min(forget, retain) answer accuracy of the base model",
    ),
    Claim(
        name="ga-destroys-retained-knowledge",
        statement="GA is unstable and causes catastrophic forgetting of retained knowledge; "
        "GA+LoRA gives a poor trade-off.",
        metric=lambda r: max(r.max("ga", "final_retain_acc"), r.max("ga+lora", "final_retain_acc")),
        op="<=",
        threshold=0.5,
        scales=("quick", "full"),
        description="worst seed of the final retain accuracy of GA and GA+LoRA",
    ),
    Claim(
        name="ihl-lora-keeps-retained-knowledge",
        statement="IHL yields stable unlearning that keeps retained knowledge.",
        metric=lambda r: r.min("ihl+lora", "final_retain_acc"),
        op=">=",
        threshold=0.9,
        description="worst seed of IHL+LoRA's final retain accuracy",
    ),
    Claim(
        name="fila-forgets-faster",
        statement="FILA makes LoRA unlearning faster: on every seed IHL+FILA's forget accuracy, "
        "averaged over the unlearning epochs, is lower than IHL+LoRA's from the same base model.",
        metric=lambda r: float(r.paired("ihl+fila", "ihl+lora", "forget_acc_mean").max()),
        op="<",
        threshold=0.0,
        description="max over seeds of mean-over-epochs forget acc, IHL+FILA minus IHL+LoRA "
        "(paired per seed; < 0: FILA lower on every seed)",
    ),
    Claim(
        name="fila-keeps-retained-knowledge",
        statement="IHL+FILA forgets at a retain accuracy similar to the original model's.",
        metric=lambda r: r.min("ihl+fila", "retain_acc_at_forget"),
        op=">=",
        threshold={"smoke": 0.75, "quick": 0.8, "full": 0.8},
        description="worst seed of the retain accuracy at the epoch the forget threshold is "
        "reached (the last epoch if never)",
    ),
    Claim(
        name="oracle-does-not-know-forget-set",
        statement="(protocol) the retain-only model answers the forget questions at about chance.",
        metric=lambda r: r.max("ihl+lora", "oracle_forget_acc"),
        op="<=",
        threshold=0.3,
        scales=("quick", "full"),
        description="worst-seed forget-set answer accuracy of the retain-only model",
    ),
]

register(
    Reproduction(
        name="loku",
        title="Towards Robust and Parameter-Efficient Knowledge Unlearning for LLMs (LoKU: "
        "inverted hinge loss + Fisher-initialised LoRA)",
        arxiv="2408.06621",
        spec="loku.md",
        configs=CONFIGS,
        methods=list(ARMS),
        experiment=run,
        claims=CLAIMS,
        seeds={"smoke": 1, "quick": 5, "full": 5},
        seed_base=100,
        methods_by_scale={"smoke": ("ihl+lora", "ihl+fila")},
        extras=("llm",),
        modules=("transformers", "peft"),
        plot_x="epoch",
        plot_y=("forget_acc", "retain_acc", "world_acc"),
        summary="TinyTOFU: a tiny Llama fine-tuned on fictitious authors unlearns 10% of them; "
        "GA vs IHL, LoRA vs FILA-initialised LoRA.",
    )
)
