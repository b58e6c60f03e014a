"""SoftImpute baseline (``optforge.repro.baselines.soft_impute``)."""

import itertools
import math

import numpy as np
import pytest
import torch

from optforge.matrix.altmin import relative_error
from optforge.problems import make_incoherent_lowrank
from optforge.repro.baselines import SoftImpute, dense_observations, lambda_path, soft_impute_path


def _svt(x, lam):
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return (u * np.maximum(s - lam, 0.0)) @ vt


def _masked(seed, m=30, n=20, p=0.6):
    rng = np.random.default_rng(seed)
    full = rng.normal(size=(m, n))
    mask = rng.random((m, n)) < p
    return np.where(mask, full, 0.0), mask


def test_first_steps_match_a_direct_numpy_reference():
    """With a full-rank randomized SVD, step 1 is SVT_λ(P_Ω(M)) and step 2 refills Ω^⊥ from it."""
    observed, mask = _masked(0)
    lam = 0.3 * float(np.linalg.norm(observed, 2))
    out = []
    soft_impute_path(observed, mask, [lam], 20, 1, 0.0, 0, lambda us, v: out.append(us @ v.T))
    z1 = _svt(observed, lam)
    np.testing.assert_allclose(out[0], z1, atol=1e-10)
    us, v = soft_impute_path(observed, mask, [lam], 20, 2, 0.0, 0)
    z2 = _svt(np.where(mask, observed, z1), lam)
    np.testing.assert_allclose(us @ v.T, z2, atol=1e-10)


def test_warm_start_carries_over_between_lambdas():
    observed, mask = _masked(1)
    lams = [0.4 * float(np.linalg.norm(observed, 2)), 0.2 * float(np.linalg.norm(observed, 2))]
    out = []
    soft_impute_path(observed, mask, lams, 20, 1, 0.0, 0, lambda us, v: out.append(us @ v.T))
    assert len(out) == 2
    z1 = _svt(observed, lams[0])
    np.testing.assert_allclose(out[0], z1, atol=1e-10)
    np.testing.assert_allclose(out[1], _svt(np.where(mask, observed, z1), lams[1]), atol=1e-10)


def test_recovers_a_low_rank_matrix():
    us_, s_, vs_, rows, cols, vals = make_incoherent_lowrank(
        80, 60, 2, p=0.5, generator=torch.Generator().manual_seed(0)
    )
    observed, mask = dense_observations(rows, cols, vals, (80, 60))
    assert mask.sum() == rows.numel() and np.all(observed[~mask] == 0.0)
    errors = []

    def record(us, v):
        errors.append(relative_error(torch.from_numpy(us), torch.from_numpy(v), us_, s_, vs_))

    soft_impute_path(observed, mask, lambda_path(observed, 20), 4, 100, 1e-7, 0, record)
    assert len(errors) == 20
    assert errors[0] > 0.5  # strong shrinkage at the start of the path
    assert all(b < a for a, b in itertools.pairwise(errors))  # monotone along the path
    assert errors[-1] < 5e-3


def test_lambda_path_values():
    observed, _ = _masked(2)
    top = float(np.linalg.norm(observed, 2))
    assert lambda_path(observed, 3) == [0.5 * top * 0.5**i for i in range(3)]
    assert lambda_path(observed, 2, start=1.0, ratio=0.1) == [top, top * 0.1]


def test_estimator_fills_nan_entries_and_matches_the_path():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(60, 2)) @ rng.normal(size=(2, 40))
    x = np.where(rng.random(m.shape) < 0.6, m, np.nan)
    est = SoftImpute(max_rank=4, n_lambdas=12, random_state=0)
    filled = est.fit_transform(x)
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(filled[observed], x[observed])
    assert not np.isnan(filled).any()
    assert np.linalg.norm(filled - m) / np.linalg.norm(m) < 0.05
    assert len(est.path_) == len(est.lambdas_) == 12
    us, v = soft_impute_path(np.where(observed, x, 0.0), observed, est.lambdas_, 4, 50, 1e-5, 0)
    np.testing.assert_array_equal(est.U_, us)
    np.testing.assert_array_equal(est.V_, v)
    again = SoftImpute(max_rank=4, n_lambdas=12, random_state=0).fit(x)
    np.testing.assert_array_equal(again.U_, est.U_)


def test_bad_inputs():
    observed, mask = _masked(3)
    with pytest.raises(ValueError, match="lambdas"):
        soft_impute_path(observed, mask, [], 4, 10, 1e-5, 0)
    with pytest.raises(ValueError, match="max_rank"):
        soft_impute_path(observed, mask, [1.0], 0, 10, 1e-5, 0)
    with pytest.raises(ValueError, match="max_iters"):
        SoftImpute(max_rank=2, max_iters=0)
    with pytest.raises(RuntimeError, match="fit"):
        SoftImpute(max_rank=2).transform(observed)
    with pytest.raises(ValueError, match="observed"):
        SoftImpute(max_rank=2).fit(np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="2-D"):
        SoftImpute(max_rank=2).fit(np.zeros(5))


def test_bench_row_times_robust_altmin_and_softimpute_to_the_same_target(monkeypatch):
    """``altmin/robust-vs-softimpute`` once compared robust AltMin's time to 1e-6 with
    SoftImpute's time to 1e-4; both arms must aim at one target."""
    from optforge.repro.bench import altmin_time

    targets = {"robust": [], "soft": []}
    robust, soft = altmin_time.altmin_time_to_target, altmin_time.soft_impute_time_to_target

    def robust_spy(problem, solver, target, *args, **kwargs):
        targets["robust"].append(target)
        return robust(problem, solver, target, *args, **kwargs)

    def soft_spy(problem, target):
        targets["soft"].append(target)
        return soft(problem, target)

    monkeypatch.setattr(altmin_time, "altmin_time_to_target", robust_spy)
    monkeypatch.setattr(altmin_time, "soft_impute_time_to_target", soft_spy)
    rows = altmin_time.altmin("cpu", 60, 2)
    assert targets["soft"] == [altmin_time.SOFT_TARGET]
    assert targets["robust"][-1] == altmin_time.SOFT_TARGET  # the row's robust arm
    row = rows["altmin/robust-vs-softimpute"]
    assert row["seconds"] > 0 and math.isfinite(row["baseline_seconds"])  # both reach 1e-2
