"""Every optimizer under torch.distributed: 2 gloo processes on CPU, launched ONCE for the module
(all scenarios of ``_ddp_jobs.py`` run inside that one job); the single-process references on
the union batch are computed here. Policy and FSDP2 statements: ``docs/distributed.md``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _ddp_jobs as jobs  # noqa: E402
from _spawn import run_ranks  # noqa: E402

EXACT = 1e-12  # float64: "the same as one process" up to summation order


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Launch the 2-rank job once; ``{"ranks": [rank0_results, rank1_results], "out": dir}``."""
    out = tmp_path_factory.mktemp("ddp")
    return {"ranks": run_ranks(HERE / "_ddp_jobs.py", out, world=2, timeout=240), "out": out}


@pytest.fixture(scope="module")
def ranks(job):
    return job["ranks"]


@pytest.fixture(scope="module")
def reference():
    """The same scenarios in this process on the union batch (world size 1)."""
    torch.set_num_threads(1)
    return {name: job() for name, job in jobs.JOBS.items()}


def _same(a, b, tol=EXACT):
    return torch.allclose(a, b, rtol=0.0, atol=tol)


@pytest.mark.parametrize("name", ["sgd", "optimistic_sgd", "adagrad_norm"])
def test_deterministic_optimizers_match_one_process_on_the_union_batch(ranks, reference, name):
    p0, p1 = (r["first_order"][name]["params"] for r in ranks)
    assert torch.equal(p0, p1)
    assert _same(p0, reference["first_order"][name]["params"])


@pytest.mark.parametrize("name", ["noisy_sgd", "langevin"])
def test_stochastic_optimizers_draw_identical_noise_on_every_rank(ranks, reference, name):
    n0, n1 = (r["noise"][name] for r in ranks)
    assert n0.abs().max() > 1e-3  # the step really was noise
    assert torch.equal(n0, n1)
    assert torch.equal(n0, reference["noise"][name])  # same seed → same noise as one process
    p0, p1 = (r["first_order"][name]["params"] for r in ranks)
    assert torch.equal(p0, p1)  # replicas never drift
    assert _same(p0, reference["first_order"][name]["params"])


def test_adadagrad_all_reduces_statistics_and_every_rank_picks_the_same_batch_size(
    ranks, reference
):
    s0, s1 = (r["adadagrad"]["batch_sizes"] for r in ranks)
    assert torch.equal(s0, s1)
    # The global statistics equal those of one process on the union batch: same schedule.
    assert torch.equal(s0, reference["adadagrad"]["batch_sizes"])
    assert len(set(s0.tolist())) > 1  # the test did change the batch size
    p0, p1 = (r["adadagrad"]["params"] for r in ranks)
    assert torch.equal(p0, p1)
    assert _same(p0, reference["adadagrad"]["params"], 1e-10)


def test_sven_per_rank_jacobian_policy(ranks, reference):
    # Policy: all-gather the batch, every rank builds the Jacobian of the union batch.
    g0, g1 = (r["sven_gathered"]["params"] for r in ranks)
    assert torch.equal(g0, g1)
    assert _same(g0, reference["sven_gathered"]["params"], 1e-10)
    # Without gathering each rank solves its own shard's system: replicas drift apart.
    l0, l1 = (r["sven_local"]["params"] for r in ranks)
    assert (l0 - l1).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["sso", "gns"])
def test_grad_free_methods_on_the_gathered_batch_match_one_process(ranks, reference, name):
    p0, p1 = (r[name]["params"] for r in ranks)
    assert torch.equal(p0, p1)
    assert _same(p0, reference[name]["params"], 1e-10)


# --------------------------------------------------------------------------------------------
# DCP through optforge.distributed.OptimizerState: every optimizer, no hand-written recipe.
# --------------------------------------------------------------------------------------------

DCP_NAMES = list(jobs._dcp_cases())


@pytest.fixture(scope="module")
def one_process_resume(job):
    """The 2-rank checkpoints loaded by this process (world size 1), then 2 more steps."""
    torch.set_num_threads(1)
    directory = str(job["out"] / "checkpoints")
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
        warnings.simplefilter("ignore", UserWarning)
        return {
            "ddp": jobs.resume_one_process(directory),
            "fsdp2": jobs.resume_one_process(directory, fsdp=True),
        }


@pytest.mark.parametrize("name", DCP_NAMES)
def test_dcp_round_trip_on_2_ranks_is_bit_identical_to_a_straight_run(ranks, name):
    # Saved after 2 steps; loaded into another init and an optimizer that never stepped
    # (closure-only ones included); 2 more steps. Extras (generators, the batch-size
    # controller, the Hessian cache, the noise schedule) travel without a recipe.
    for r in ranks:
        result = r["checkpoint"][name]
        assert result["error"] == ""
        assert torch.equal(result["expected"], result["resumed"])
    assert torch.equal(
        ranks[0]["checkpoint"][name]["resumed"], ranks[1]["checkpoint"][name]["resumed"]
    )


@pytest.mark.parametrize("name", DCP_NAMES)
def test_dcp_checkpoint_of_2_ranks_resumes_in_one_process(ranks, one_process_resume, name):
    tol = 1e-10 if name.startswith("adadagrad") else EXACT
    assert _same(one_process_resume["ddp"][name], ranks[0]["checkpoint"][name]["expected"], tol)


def test_torch_helpers_alone_drop_the_extras_the_hazard(ranks):
    # The control: the same Langevin round trip with torch's helpers only restarts the noise
    # stream (the generator state is not in "state"), so the resumed run differs.
    result = ranks[0]["checkpoint"]["langevin_torch_helpers_only"]
    assert (result["expected"] - result["resumed"]).abs().max() > 1e-6


@pytest.mark.parametrize("name", jobs.DCP_FSDP2)
def test_dcp_under_fsdp2_round_trip_and_reshard_to_one_process(ranks, one_process_resume, name):
    for r in ranks:
        result = r["checkpoint_fsdp2"][name]
        assert result["error"] == ""
        assert torch.equal(result["expected"], result["resumed"])
    # FSDP2 shards (DTensor state) -> one process with plain tensors: DCP re-shards.
    assert _same(one_process_resume["fsdp2"][name], ranks[0]["checkpoint_fsdp2"][name]["expected"])


# --------------------------------------------------------------------------------------------
# FSDP2 (fully_shard)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "optimistic_sgd"])
def test_fsdp2_works_for_elementwise_methods(ranks, reference, name):
    p0, p1 = (r["fsdp2"][name]["params"] for r in ranks)
    assert ranks[0]["fsdp2"][name]["error"] == ""
    assert torch.equal(p0, p1)
    assert _same(p0, reference["first_order"][name]["params"], 1e-10)


def test_fsdp2_sso_refuses_instead_of_a_silent_wrong_result(ranks):
    # SSO used to run on DTensor shards and return a result different from one process (its
    # inner loop's autograd.grad bypasses FSDP2's reduce-scatter); it now refuses before
    # touching anything.
    for r in ranks:
        result = r["fsdp2"]["sso"]
        assert result["params"] is None
        assert result["error"].startswith("DTensorNotSupportedError: SSO does not support DTensor")
        assert "FSDP2" in result["error"] and "DDP" in result["error"]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("gns", "DTensorNotSupportedError: GradNormSmoothNewton does not support DTensor"),
        ("sven", "DTensorNotSupportedError: Sven does not support FSDP2 / DTensor"),
        (
            "adadagrad",
            "DTensorNotSupportedError: AdaptiveBatch.backward: the batch-size test does not",
        ),
    ],
)
def test_fsdp2_refusals_are_named_errors(ranks, name, error):
    # Methods that need whole parameters refuse DTensor shards with a message naming FSDP2 /
    # DTensor and the workaround (the full messages: docs/distributed.md).
    for r in ranks:
        assert r["fsdp2"][name]["error"].startswith(error)
        assert "FSDP2" in r["fsdp2"][name]["error"]
