"""AdAdaGrad's ghost-norm statistics: one batched backward gives the same test statistics as the
``torch.func`` per-example gradients, per supported layer type; other layers fall back; the
coordinate-wise test keeps the per-example path; sharded (DTensor) parameters are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optforge.func import UnsupportedModuleError
from optforge.optim import AdAdaGrad, AdAdaGradNorm
from optforge.optim.adadagrad import GradStats, batch_grad_stats

F64 = torch.float64


class _Tokens(nn.Module):
    """Embedding (padding) -> LayerNorm / RMSNorm -> Linear per position -> class logits."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.emb = nn.Embedding(9, 6, padding_idx=0)
        self.norm = nn.LayerNorm(6) if norm == "layer" else nn.RMSNorm(6, eps=1e-6)
        self.lin = nn.Linear(6, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.tanh(self.norm(self.emb(ids))))  # (B, T, 4)


def _seq_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.flatten(0, 1), y.flatten())


def _cases():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(F64)
    x = torch.randn(12, 5, dtype=F64, generator=gen)
    y = torch.randint(0, 3, (12,), generator=gen)
    ids = torch.randint(0, 9, (10, 5), generator=gen)
    labels = torch.randint(0, 4, (10, 5), generator=gen)
    conv = nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)
    ).to(F64)
    images = torch.randn(8, 1, 4, 4, dtype=F64, generator=gen)
    return {
        "mlp": (mlp, F.cross_entropy, x, y),
        "conv2d": (conv, F.cross_entropy, images, y[:8]),
        "embedding_layernorm_seq": (_Tokens("layer").to(F64), _seq_ce, ids, labels),
        "embedding_rmsnorm_seq": (_Tokens("rms").to(F64), _seq_ce, ids, labels),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_ghost_statistics_equal_the_per_example_ones(name):
    model, loss_fn, x, y = _cases()[name]
    ghost, loss_g = batch_grad_stats(model, loss_fn, x, y, inner_product=True, method="ghost")
    exact, loss_e = batch_grad_stats(model, loss_fn, x, y, inner_product=True)
    assert not ghost.coordinatewise and exact.coordinatewise
    tol = {"rtol": 1e-9, "atol": 1e-12}
    torch.testing.assert_close(loss_g, loss_e, **tol)
    torch.testing.assert_close(ghost.mean, exact.mean, **tol)
    for key in ("trace_variance", "grad_sq_norm", "ip_variance", "orth_trace_variance"):
        torch.testing.assert_close(getattr(ghost, key), getattr(exact, key), **tol, msg=key)


@pytest.mark.parametrize("test", ["norm", "augmented_inner_product"])
def test_ghost_steps_equal_per_example_steps(test):
    model, loss_fn, x, y = _cases()["embedding_layernorm_seq"]
    twin = type(model)("layer").to(F64)
    twin.load_state_dict(model.state_dict())
    runs = []
    for net, method in ((model, "auto"), (twin, "per_example")):
        opt = AdAdaGrad(
            net.parameters(), lr=0.1, test=test, eta=0.5, theta=0.5, nu=0.5,
            initial_batch_size=4, max_batch_size=10, method=method,
        )  # fmt: skip
        sizes = [opt.batch_size]
        for step in range(3):
            opt.zero_grad()
            b = opt.batch_size
            opt.backward(net, loss_fn, x[step : step + b], y[step : step + b])
            opt.step()
            sizes.append(opt.batch_size)
        runs.append((sizes, [p.detach().clone() for p in net.parameters()], opt))
    assert runs[0][2].last_stats_method == "ghost"
    assert runs[1][2].last_stats_method == "per_example"
    assert runs[0][0] == runs[1][0] and len(set(runs[0][0])) > 1
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_other_layers_fall_back_and_ghost_only_refuses_them():
    torch.manual_seed(0)
    grouped = nn.Sequential(nn.Conv1d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(12, 2)).to(F64)
    x, y = torch.randn(6, 2, 5, dtype=F64), torch.randint(0, 2, (6,))
    opt = AdAdaGradNorm(grouped.parameters(), initial_batch_size=6)
    opt.backward(grouped, F.cross_entropy, x, y)
    assert opt.last_stats_method == "per_example"
    with pytest.raises(UnsupportedModuleError, match="outside"):
        batch_grad_stats(grouped, F.cross_entropy, x, y, method="ghost")


def test_coordinate_norm_test_keeps_per_example_statistics():
    model, loss_fn, x, y = _cases()["mlp"]
    opt = AdAdaGrad(model.parameters(), test="coordinate_norm", initial_batch_size=4)
    opt.backward(model, loss_fn, x[:4], y[:4])
    assert opt.last_stats_method == "per_example"
    opt.step()
    opt.zero_grad()
    with pytest.raises(ValueError, match="coordinate-wise"):
        opt.backward(model, loss_fn, x[:4], y[:4], method="ghost")


def test_total_only_statistics_merge_and_refuse_per_coordinate_values():
    G = torch.randn(9, 4, dtype=F64, generator=torch.Generator().manual_seed(2))

    def total_only(rows: torch.Tensor) -> GradStats:
        full = GradStats.from_samples(rows)
        return GradStats(full.count, full.sum, full.m2.sum())

    merged = total_only(G[:4]).merge(total_only(G[4:]))
    whole = GradStats.from_samples(G)
    torch.testing.assert_close(merged.trace_variance, whole.trace_variance)
    with pytest.raises(ValueError, match="per-coordinate"):
        _ = merged.variance
    with pytest.raises(ValueError, match="cannot merge"):
        whole.merge(total_only(G))


@pytest.mark.parametrize("cls", [AdAdaGrad, AdAdaGradNorm])
def test_test_steps_refuse_dtensor_parameters_before_touching_anything(cls, replicated_param):
    model = nn.Linear(3, 1)
    opt = cls([replicated_param], initial_batch_size=4)
    before = replicated_param.detach().full_tensor().clone()
    with pytest.raises(TypeError, match=r"FSDP2 / DTensor.*Workaround: train with DDP"):
        opt.backward(model, F.mse_loss, torch.randn(4, 3), torch.randn(4, 1))
    assert model.weight.grad is None and replicated_param.grad is None
    assert opt.controller.state_dict()["step"] == 0
    assert torch.equal(replicated_param.detach().full_tensor(), before)


def test_single_parameter_model_keeps_its_statistics_after_the_gradient_is_written():
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False).to(F64)
    x, y = torch.randn(6, 4, dtype=F64), torch.randn(6, 1, dtype=F64)
    exact, _ = batch_grad_stats(model, nn.MSELoss(), x, y)
    opt = AdAdaGrad(model.parameters(), initial_batch_size=6)
    opt.backward(model, nn.MSELoss(), x, y)
    assert opt.last_stats_method == "ghost"
    torch.testing.assert_close(opt._pending.mean, exact.mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.weight.grad.reshape(-1), exact.mean, rtol=1e-12, atol=1e-14)


def test_float32_statistics_kept_on_the_host_equal_the_tensors_and_the_per_example_ones():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)
    )
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    stats, loss = batch_grad_stats(model, nn.MSELoss(), x, y, inner_product=True, method="ghost")
    exact, _ = batch_grad_stats(model, nn.MSELoss(), x, y, inner_product=True)
    # the mean loss: bitwise the mean of the per-example losses
    assert torch.equal(loss, F.mse_loss(model(x), y, reduction="none").detach().reshape(-1).mean())
    assert stats.m2.dtype == torch.float32 and stats.m2.dim() == 0
    fresh = GradStats(stats.count, stats.sum, stats.m2, stats.ref, stats.ip_sum, stats.ip_m2)
    for key in ("trace_variance", "grad_sq_norm", "orth_trace_variance"):  # cached == recomputed
        assert getattr(stats, key) == getattr(fresh, key), key
    for key in ("trace_variance", "grad_sq_norm", "ip_variance", "orth_trace_variance"):
        torch.testing.assert_close(getattr(stats, key), getattr(exact, key), rtol=1e-4, atol=0)
