"""FSDP2 (``fully_shard``) for the elementwise optimizers: NoisyOptimizer / GradientNoise,
Langevin (Euclidean and the three spherical modes), AdaGradNorm (global and per-layer
accumulators) and OptimisticSGD give the one-process result whatever the world size (1, 2, 4
gloo processes on CPU; one spawn per world size), and examples/fsdp2_langevin.py runs.

Each rank adds the slice of one global noise stream that its shard covers, so the noise is the
one of one process; the reductions (sphere norms, AdaGrad-Norm's ‖g‖²) are all-reduced, hence
"equal to float64 rounding" (1e-12) rather than bit-identical for those.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _fsdp2_elementwise_jobs as jobs  # noqa: E402
from _spawn import run_ranks  # noqa: E402

TOL = 1e-12


def _spawn(world: int, out: Path) -> list[dict]:
    return run_ranks(HERE / "_fsdp2_elementwise_jobs.py", out, world=world)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """world size -> every rank's results (one spawn per world size)."""
    return {w: _spawn(w, tmp_path_factory.mktemp(f"fsdp2_w{w}")) for w in (1, 2, 4)}


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)
    return jobs.reference()


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("name", sorted(jobs.CASES))
def test_fsdp2_equals_one_process_at_every_world_size(runs, reference, world, name):
    results = [r[name] for r in runs[world]]
    assert not isinstance(results[0], str), results[0]
    for other in results[1:]:
        assert torch.equal(other, results[0])  # every rank gathers the same parameters
    assert torch.allclose(results[0], reference[name], rtol=0.0, atol=TOL)
    # the noise is not trivial: without it the result differs by far more than the tolerance
    if "langevin" in name or "nois" in name:
        assert not torch.allclose(reference[name], jobs.run_case("optimistic_sgd", fsdp=False))


def test_row_accumulators_refuse_fsdp2_by_name(runs):
    for world in (1, 2, 4):
        message = runs[world][0]["adagrad_norm_row"]
        assert isinstance(message, str) and message.startswith("DTensorNotSupportedError")
        assert "FSDP2" in message and "granularity='global'" in message


def _one_process_example() -> torch.Tensor:
    """examples/fsdp2_langevin.py without FSDP (the same seeds)."""
    from torch import nn

    from optforge.optim import Langevin

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    opt = Langevin(model.parameters(), lr=1e-2, beta=1e4, seed=0)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_the_example_script_gives_the_one_process_result(runs):
    expected = _one_process_example()
    for world in (1, 2, 4):
        assert torch.allclose(runs[world][0]["example"], expected, rtol=0.0, atol=TOL)
