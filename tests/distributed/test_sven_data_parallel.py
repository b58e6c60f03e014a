"""Data-parallel Sven: 2 gloo processes on CPU (spawned once for the module), each passing its
half of every global batch with ``data_parallel=True``, take the step of one process on the union
batch — to float64 rounding — on every supported layer type."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _sven_dp_jobs as jobs  # noqa: E402
from _spawn import run_ranks  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return run_ranks(HERE / "_sven_dp_jobs.py", tmp_path_factory.mktemp("sven_dp"), timeout=240)


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)
    return {name: job() for name, job in jobs.JOBS.items()}


@pytest.mark.parametrize("name", list(jobs.JOBS))
def test_two_ranks_take_the_step_of_one_process_on_the_union_batch(ranks, reference, name):
    ref = reference[name]
    assert ref["path"] == "gram"
    for rank in ranks:
        assert rank[name]["path"] == "gram"
        torch.testing.assert_close(rank[name]["losses"], ref["losses"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(rank[name]["params"], ref["params"], rtol=1e-9, atol=1e-11)
    # the steps moved the parameters (not a trivially equal zero step)
    model = jobs.make_model("mlp" if name.startswith("mlp") else "tokens")
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert (ref["params"] - start).abs().max() > 1e-3


def test_a_step_without_the_gram_path_is_refused_on_every_rank(ranks):
    for rank in ranks:
        assert "data-parallel Sven needs the Gram path" in rank["refused"]
