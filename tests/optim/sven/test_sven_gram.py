"""Sven's Gram path (B × B Gram matrix from ghost factors, no Jacobian) against the Jacobian path:
the same steps on every supported layer type and option it covers, the automatic choice of
path, and the refusal of sharded (DTensor) parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optforge.optim.sven import Sven

F64 = torch.float64


class _Tokens(nn.Module):
    """Embedding (padding) -> LayerNorm / RMSNorm -> Linear over positions -> one output."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.emb = nn.Embedding(9, 6, padding_idx=0)
        self.norm = nn.LayerNorm(6) if norm == "layer" else nn.RMSNorm(6, eps=1e-6)
        self.lin = nn.Linear(6, 5)
        self.head = nn.Linear(5, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin(self.norm(self.emb(ids))))).mean(dim=(1, 2))


def _mse(pred, y):
    return (pred.reshape(y.shape) - y).pow(2)


def _problem(name):
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(F64)
        x = torch.randn(12, 3, dtype=F64, generator=gen)
    elif name == "conv":
        model = nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(18, 1)
        ).to(F64)
        x = torch.randn(12, 1, 3, 3, dtype=F64, generator=gen)
    else:
        model = _Tokens("layer" if name == "layernorm_seq" else "rms").to(F64)
        x = torch.randint(0, 9, (12, 4), generator=gen)
    return model, x, torch.randn(12, dtype=F64, generator=gen)


def _run(name, path, steps=3, **kwargs):
    model, x, y = _problem(name)
    opt = Sven(model.parameters(), path=path, **kwargs)
    losses = [opt.step(model=model, loss_fn=_mse, inputs=x, targets=y) for _ in range(steps)]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return flat, torch.stack(losses), opt


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mlp", {"lr": 0.5}),
        ("mlp", {"lr": 0.3, "k": 4, "kappa": 1.0}),
        ("mlp", {"lr": 0.3, "microbatch_size": 3, "momentum": 0.5}),
        ("mlp", {"lr": 0.3, "rmsprop": "post"}),
        ("layernorm_seq", {"lr": 0.5, "k": 6}),
        ("rmsnorm_seq", {"lr": 0.5, "rtol": 1e-6}),
        ("conv", {"lr": 0.5, "k": 8}),
    ],
)
def test_gram_path_equals_the_jacobian_path(name, options):
    gram, gram_losses, opt_g = _run(name, "auto", **options)
    jac, jac_losses, opt_j = _run(name, "jacobian", **options)
    assert opt_g.last_path == "gram" and opt_j.last_path == "jacobian"
    assert opt_g.last_svd_info.rank == opt_j.last_svd_info.rank
    torch.testing.assert_close(
        opt_g.last_svd_info.singular_values, opt_j.last_svd_info.singular_values
    )
    torch.testing.assert_close(gram_losses, jac_losses, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gram, jac, rtol=1e-8, atol=1e-10)


def test_residual_mode_with_one_residual_per_example_uses_the_gram_path():
    def residual(pred, y):
        return pred.reshape(y.shape) - y

    runs = []
    for path in ("auto", "jacobian"):
        model, x, y = _problem("mlp")
        opt = Sven(model.parameters(), lr=1.0, residual_mode=True, path=path)
        opt.step(model=model, loss_fn=residual, inputs=x, targets=y)
        runs.append(
            (opt.last_path, torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        )
    assert [r[0] for r in runs] == ["gram", "jacobian"]
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"svd": "full"}, "svd="),
        ({"rmsprop": "pre"}, "rmsprop='pre'"),
        ({"param_fraction": 0.5, "seed": 0}, "param_fraction"),
    ],
)
def test_variants_that_need_the_jacobian_use_it(options, why):
    _, _, opt = _run("mlp", "auto", steps=1, **options)
    assert opt.last_path == "jacobian"
    with pytest.raises(ValueError, match=f"path='gram' cannot run this step: .*{why[:5]}"):
        _run("mlp", "gram", steps=1, **options)


def test_other_layers_closures_and_tall_systems_use_the_jacobian():
    torch.manual_seed(0)
    grouped = nn.Sequential(nn.Conv1d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(4, 1)).to(F64)
    x, y = torch.randn(6, 2, 4, dtype=F64), torch.randn(6, dtype=F64)
    opt = Sven(grouped.parameters(), lr=0.1)
    opt.step(model=grouped, loss_fn=_mse, inputs=x, targets=y)
    assert opt.last_path == "jacobian"
    model, xs, ys = _problem("mlp")
    opt = Sven(model.parameters(), lr=0.1)
    opt.step(lambda: _mse(model(xs), ys))
    assert opt.last_path == "jacobian"
    small = nn.Linear(2, 1).to(F64)  # 3 parameters < 12 conditions
    opt = Sven(small.parameters(), lr=0.1)
    opt.step(model=small, loss_fn=_mse, inputs=torch.randn(12, 2, dtype=F64), targets=ys)
    assert opt.last_path == "jacobian"


def test_non_finite_losses_raise_on_the_gram_path_and_change_nothing():
    model, x, y = _problem("mlp")
    opt = Sven(model.parameters(), lr=0.1, path="gram")
    before = [p.detach().clone() for p in model.parameters()]
    scale = torch.ones(12, dtype=F64)
    scale[0] = float("nan")
    with pytest.raises(FloatingPointError, match="Sven step 1"):
        opt.step(model=model, loss_fn=lambda p, t: _mse(p, t) * scale, inputs=x, targets=y)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert not opt.state


def test_path_is_validated():
    with pytest.raises(ValueError, match="path"):
        Sven(nn.Linear(2, 1).parameters(), path="fast")


def test_dtensor_parameters_are_refused_before_touching_anything(replicated_param):
    opt = Sven([replicated_param], lr=0.1, seed=0)
    before = replicated_param.detach().full_tensor().clone()
    generator_state = opt.generator.get_state()
    calls = []

    def closure():
        calls.append(1)
        return replicated_param.full_tensor().sum(1) ** 2

    with pytest.raises(TypeError, match=r"FSDP2 / DTensor.*Workaround: train with DDP"):
        opt.step(closure)
    assert not calls and not opt.state
    assert torch.equal(opt.generator.get_state(), generator_state)
    assert torch.equal(replicated_param.detach().full_tensor(), before)
