"""Tests for optforge.func.GhostGradients: per-example squared norms, inner products, the Gram
matrix and weighted gradient sums from one backward equal the per-example Jacobian's, per
supported layer type (Linear with and without positions, Embedding, LayerNorm, RMSNorm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optforge.func.ghost_norms as ghost_norms
from optforge.func import GhostGradients, GhostNormRecorder, UnsupportedModuleError

F64 = torch.float64


class _Seq(nn.Module):
    """Embedding -> norm -> Linear over T positions -> tanh -> head, reused head (twice)."""

    def __init__(self, norm: str, d: int = 6, vocab: int = 7) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.norm = nn.LayerNorm(d) if norm == "layer" else nn.RMSNorm(d, eps=1e-6)
        self.lin = nn.Linear(d, 5)
        self.head = nn.Linear(5, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.lin(self.norm(self.emb(ids))))
        return (self.head(h) + self.head(h.flip(1))).sum(dim=(1, 2))


class _Conv(nn.Module):
    """Conv1d (dilated, padded) and Conv2d (strided, padded) into a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3, dilation=2, padding=2)
        self.c2 = nn.Conv2d(3, 4, (2, 3), stride=2, padding=1, bias=False)
        self.head = nn.Linear(4 * 3 * 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.c1(x))  # [N, 3, 6]
        h = torch.tanh(self.c2(h.unsqueeze(2).expand(-1, -1, 4, -1)))  # [N, 4, 3, 3]
        return self.head(h.flatten(1))


def _models():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).to(F64)
    wide_seq = nn.Sequential(nn.Linear(3, 40), nn.Tanh(), nn.Linear(40, 30)).to(F64)
    # one-position Linear layers done together: no bias, a frozen bias, a trainable bias
    mixed = nn.Sequential(
        nn.Linear(4, 6, bias=False), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)
    ).to(F64)
    mixed[2].bias.requires_grad_(False)
    return {
        "linear": (nn.Linear(4, 3).to(F64), torch.randn(5, 4, dtype=F64)),
        "mlp": (mlp, torch.randn(5, 4, dtype=F64)),
        "mlp_mixed_bias": (mixed, torch.randn(5, 4, dtype=F64)),
        # long T, narrow layers: per-example layer gradients; short T, wide layers: T×T Grams
        "linear_seq_long": (
            nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)).to(F64),
            torch.randn(5, 9, 3, dtype=F64),
        ),
        "linear_seq_wide": (wide_seq, torch.randn(5, 2, 3, dtype=F64)),
        "embedding_layernorm": (_Seq("layer").to(F64), torch.randint(0, 7, (5, 4))),
        "embedding_rmsnorm": (_Seq("rms").to(F64), torch.randint(0, 7, (5, 4))),
        "conv1d_conv2d": (_Conv().to(F64), torch.randn(5, 2, 6, dtype=F64)),
    }


def _losses(model, x):
    out = model(x)
    return out.reshape(out.shape[0], -1).pow(2).sum(1)


def _jacobian(model, x):
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        grads = torch.autograd.grad(_losses(model, x[i : i + 1]).sum(), params, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for p, g in zip(params, grads, strict=True)
                ]
            )
        )
    return torch.stack(rows), params


def _capture(model, x):
    params = [p for p in model.parameters() if p.requires_grad]
    recorder = GhostNormRecorder.for_model(model)
    with recorder:
        losses = _losses(model, x)
    return GhostGradients.capture(recorder, losses, params)


@pytest.mark.parametrize("name", list(_models()))
def test_ghost_quantities_equal_the_per_example_jacobian(name):
    model, x = _models()[name]
    J, params = _jacobian(model, x)
    ghost, grads = _capture(model, x)
    tol = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(
        torch.cat([g.reshape(-1) for g in grads]), J.sum(0), **tol
    )  # the ordinary gradient of Σℓ_i, same backward
    torch.testing.assert_close(ghost.sqnorms(), J.pow(2).sum(1), **tol)
    torch.testing.assert_close(ghost.sqnorm_sum(), J.pow(2).sum(), **tol)
    torch.testing.assert_close(ghost.gram(), J @ J.T, **tol)
    v = torch.randn(J.shape[1], dtype=F64, generator=torch.Generator().manual_seed(3))
    parts = dict(zip(params, torch.split(v, [p.numel() for p in params]), strict=True))
    parts = {p: t.view(p.shape) for p, t in parts.items()}
    torch.testing.assert_close(ghost.inner(parts), J @ v, **tol)
    c = torch.randn(x.shape[0], dtype=F64, generator=torch.Generator().manual_seed(4))
    weighted = {id(p): g for p, g in ghost.weighted_grads(c)}
    flat = torch.cat([weighted[id(p)].reshape(-1) for p in params])
    torch.testing.assert_close(flat, c @ J, **tol)


@pytest.mark.parametrize("layers", [1, 3])
def test_float32_sqnorm_sum_and_the_loss_sum(layers):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    if layers == 3:  # one-position Linear layers: biases added in float32 inside the addmm
        model = nn.Sequential(
            nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6, bias=False), nn.Tanh(), nn.Linear(6, 1)
        )
    x = torch.randn(7, 4)
    ghost, _ = _capture(model, x)
    total = ghost.sqnorm_sum()
    assert total.dtype == F64 and total.dim() == 0
    torch.testing.assert_close(total, ghost.sqnorms().sum(), rtol=1e-6, atol=0)
    assert torch.equal(ghost.loss_sum, _losses(model, x).detach().sum())


def test_both_sequence_gram_forms_run(monkeypatch):
    calls = []
    original = ghost_norms._seq_gram
    monkeypatch.setattr(
        ghost_norms,
        "_seq_gram",
        lambda x, d, same_ids: calls.append(same_ids) or original(x, d, same_ids=same_ids),
    )
    for name, expected in (("linear_seq_long", []), ("linear_seq_wide", [False])):
        calls.clear()
        _capture(*_models()[name])[0].gram()
        assert calls == expected, name


def test_sequence_gram_in_small_blocks_is_unchanged(monkeypatch):
    model, x = _models()["embedding_layernorm"]
    J, _ = _jacobian(model, x)
    monkeypatch.setattr(ghost_norms, "_BLOCK_ELEMENTS", 1)  # one example per block
    ghost, _ = _capture(model, x)
    torch.testing.assert_close(ghost.gram(), J @ J.T, rtol=1e-10, atol=1e-12)


def test_inner_with_a_subset_of_parameters_counts_the_rest_as_zero():
    model, x = _models()["mlp"]
    J, params = _jacobian(model, x)
    ghost, _ = _capture(model, x)
    first = params[0]
    v = torch.ones_like(first)
    torch.testing.assert_close(ghost.inner({first: v}), J[:, : first.numel()].sum(1))


def test_unsupported_layers_and_layouts_are_refused():
    emb = nn.Embedding(5, 3, scale_grad_by_freq=True)
    with pytest.raises(UnsupportedModuleError):
        GhostNormRecorder.for_model(emb)
    for unsupported in (
        nn.LayerNorm((2, 3)),
        nn.Conv2d(2, 2, 3, groups=2),
        nn.Conv1d(2, 2, 3, padding="same"),
        nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
    ):
        with pytest.raises(UnsupportedModuleError):
            GhostNormRecorder.for_model(unsupported)
    lin = nn.Linear(3, 1)
    recorder = GhostNormRecorder.for_model(lin)
    with recorder:
        out = lin(torch.randn(4, 3).T.reshape(3, 4)[:, :3])  # a batch of 3, not 4
    with pytest.raises(UnsupportedModuleError, match="batch-first"):
        GhostGradients.capture(recorder, torch.ones(4) * out.sum())
    with pytest.raises(ValueError, match="weights must have shape"):
        ghost, _ = _capture(*_models()["mlp"])
        ghost.weighted_grads(torch.ones(3, dtype=F64))
