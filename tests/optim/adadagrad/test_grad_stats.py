"""GradStats: exact statistics, merging of micro-batches and ranks, unbiased variance."""

from __future__ import annotations

import math
import os
import socket
import tempfile

import pytest
import torch
import torch.nn.functional as F
from _adadagrad_helpers import _data, _mlp, _slow_per_example
from torch import nn

from optforge.optim import (
    GradStats,
    batch_grad_stats,
)


def test_inner_product_uses_the_full_parameter_vector() -> None:
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(6, 3, generator=gen, dtype=torch.float64) + 0.5
    B = 0.8 * A[:, :2] + 0.3 * torch.randn(6, 2, generator=gen, dtype=torch.float64)
    whole = torch.cat([A, B], dim=1)
    stats = GradStats.from_samples(whole, ref=whole.mean(0))
    a = whole @ whole.mean(0)
    assert stats.ip_variance == pytest.approx(float(a.var()), rel=1e-12)
    # the repo's shortcut: per-tensor variances summed — differs (cross-tensor covariance)
    per_tensor = float((A @ A.mean(0)).var() + (B @ B.mean(0)).var())
    assert abs(per_tensor - stats.ip_variance) > 1e-3 * stats.ip_variance
    # and through a model with two parameter tensors
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    stats, _ = batch_grad_stats(model, F.mse_loss, x, y, inner_product=True)
    G = _slow_per_example(model, F.mse_loss, x, y)
    assert stats.ip_variance == pytest.approx(float((G @ G.mean(0)).var()), rel=1e-9)


def test_orthogonality_identities_without_forming_r() -> None:
    gen = torch.Generator().manual_seed(5)
    G = torch.randn(7, 5, generator=gen, dtype=torch.float64) + 1.0
    g = G.mean(0)
    stats = GradStats.from_samples(G, ref=g)
    b, g2 = 7, float(g @ g)
    a = G @ g
    # spec §8 identities when g is the mean of the same samples
    assert float(a.mean()) == pytest.approx(g2, rel=1e-12)
    assert stats.ip_variance == pytest.approx(float((a.pow(2).sum() - b * g2**2) / (b - 1)))
    direct = (G.pow(2).sum() - a.pow(2).sum() / g2) / (b - 1)
    assert stats.orth_trace_variance == pytest.approx(float(direct), rel=1e-10)
    # general centred formula with a stale direction
    d = g + 0.3 * torch.randn(5, generator=gen, dtype=torch.float64)
    stale = GradStats.from_samples(G, ref=d)
    r = G - torch.outer(G @ d / (d @ d), d)
    assert stale.orth_trace_variance == pytest.approx(float(r.var(0).sum()), rel=1e-10)


def test_merge_of_unequal_micro_batches_equals_the_whole() -> None:
    gen = torch.Generator().manual_seed(2)
    G = torch.randn(23, 6, generator=gen, dtype=torch.float64) * 2 + 3
    for ref in (None, G.mean(0)):
        whole = GradStats.from_samples(G, ref)
        parts = [G[:3], G[3:4], G[4:15], G[15:]]
        merged = GradStats.empty(6, ref=ref)
        for part in parts:
            merged = merged.merge(GradStats.from_samples(part, ref))
        assert merged.count == whole.count
        torch.testing.assert_close(merged.sum, whole.sum)
        torch.testing.assert_close(merged.sumsq, whole.sumsq)
        torch.testing.assert_close(merged.variance, whole.variance)
        torch.testing.assert_close(merged.variance, G.var(0))
        if ref is not None:
            assert merged.ip_variance == pytest.approx(whole.ip_variance, rel=1e-12)
    with pytest.raises(ValueError, match="ref"):
        GradStats.from_samples(G[:3], G.mean(0)).merge(GradStats.from_samples(G[3:]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = _mlp()
        x, y = _data(13)
        shard = slice(0, 5) if rank == 0 else slice(5, 13)  # unequal shards
        stats, _ = batch_grad_stats(model, F.cross_entropy, x[shard], y[shard], inner_product=True)
        torch.save(
            {
                "count": stats.count,
                "mean": stats.mean,
                "var": stats.variance,
                "ip": stats.ip_variance,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_across_two_gloo_ranks_equals_the_whole_batch() -> None:
    import torch.multiprocessing as mp

    model = _mlp()
    x, y = _data(13)
    whole, _ = batch_grad_stats(model, F.cross_entropy, x, y, inner_product=True)
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_gloo_worker, args=(_free_port(), out), nprocs=2, join=True)
        for rank in (0, 1):
            got = torch.load(os.path.join(out, f"rank{rank}.pt"))
            assert got["count"] == 13
            torch.testing.assert_close(got["mean"], whole.mean)
            torch.testing.assert_close(got["var"], whole.variance)
            assert got["ip"] == pytest.approx(whole.ip_variance, rel=1e-9)


def test_variance_estimate_is_unbiased() -> None:
    # G_i ~ N(mu, sigma^2 I) with b = 3: E[S] = p sigma^2 exactly (the divisor b-1 matters:
    # the biased divisor b would give 2/3 of it, far outside the tolerance).
    gen = torch.Generator().manual_seed(11)
    p, sigma, b, reps = 4, 1.5, 3, 20000
    G = 0.7 + sigma * torch.randn(reps, b, p, generator=gen, dtype=torch.float64)
    S = torch.tensor([GradStats.from_samples(G[r]).trace_variance for r in range(0, reps, 4)])
    target, se = p * sigma**2, float(S.std()) / math.sqrt(S.numel())
    assert abs(float(S.mean()) - target) < 4 * se
    assert abs(float(S.mean()) * (b - 1) / b - target) > 4 * se
