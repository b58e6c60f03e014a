"""The alternating-minimization sweep and its input checks (``optforge.matrix.altmin.core``)."""

import itertools
import math

import numpy as np
import pytest
import torch
from _altmin_helpers import _gen, _rel
from sklearn.exceptions import NotFittedError

from optforge.matrix.altmin import (
    ExactNormalEquations,
    RobustAltMinCompletion,
    SketchPreconditionedCG,
    robust_altmin_complete,
    split_samples,
)
from optforge.problems import make_incoherent_lowrank


@pytest.mark.parametrize("solver", ["sketch", "exact", "auto"])
@pytest.mark.parametrize("backend", ["dense", "sparse", "padded"])
def test_exact_recovery_well_sampled(solver, backend):
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(150, 120, 3, p=0.35, generator=_gen(0))
    res = robust_altmin_complete(
        rows,
        cols,
        vals,
        (150, 120),
        3,
        n_iters=25,
        solver=solver,
        backend=backend,
        truth=(us, s, vs),
        generator=_gen(1),
    )
    err = res.history["rel_error"]
    assert err[-1] < 1e-8
    assert err[0] > 1e-6  # the first sweep is not already exact
    # every sweep improves until the error reaches the rounding floor
    assert all(b < a for a, b in itertools.pairwise(err) if a > 1e-12)


def test_full_observation_recovers_in_one_sweep():
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(60, 50, 4, p=1.0, generator=_gen(2))
    for solver in ("exact", "sketch"):
        res = robust_altmin_complete(
            rows,
            cols,
            vals,
            (60, 50),
            4,
            n_iters=1,
            solver=solver,
            truth=(us, s, vs),
            generator=_gen(3),
        )
        assert res.history["rel_error"][0] < 1e-10


def test_sketch_tracks_exact_per_sweep():
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(200, 200, 5, p=0.3, generator=_gen(4))
    hist = {}
    for name, solver in (
        ("exact", ExactNormalEquations()),
        ("sketch", SketchPreconditionedCG(max_iter=2, generator=_gen(5))),
    ):
        res = robust_altmin_complete(
            rows,
            cols,
            vals,
            (200, 200),
            5,
            n_iters=8,
            solver=solver,
            tol=0.0,
            truth=(us, s, vs),
            generator=_gen(6),
        )
        hist[name] = np.array(res.history["rel_error"])
    assert np.all(hist["sketch"] <= 3 * hist["exact"])
    assert hist["exact"][-1] < 1e-4 < hist["exact"][0]


def test_permutation_and_scaling_invariance():
    m, n, k = 80, 70, 3
    *_, rows, cols, vals = make_incoherent_lowrank(m, n, k, p=0.5, generator=_gen(5))
    kw = dict(n_iters=30, solver="exact", generator=None)
    base = robust_altmin_complete(rows, cols, vals, (m, n), k, **{**kw, "generator": _gen(1)})
    x = base.dense()
    pr, pc = torch.randperm(m, generator=_gen(8)), torch.randperm(n, generator=_gen(9))
    inv_r, inv_c = torch.argsort(pr), torch.argsort(pc)
    perm = robust_altmin_complete(
        inv_r[rows], inv_c[cols], vals, (m, n), k, **{**kw, "generator": _gen(1)}
    )
    assert _rel(perm.dense()[inv_r][:, inv_c], x) < 1e-8
    scaled = robust_altmin_complete(
        rows, cols, 3.5 * vals, (m, n), k, **{**kw, "generator": _gen(1)}
    )
    assert _rel(scaled.dense(), 3.5 * x) < 1e-10


def test_noise_error_finite_and_decreasing():
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(
        150, 150, 3, p=0.3, noise=0.1, generator=_gen(6)
    )
    res = robust_altmin_complete(
        rows,
        cols,
        vals,
        (150, 150),
        3,
        n_iters=6,
        truth=(us, s, vs),
        generator=_gen(1),
        tol=0.0,
        init="random",
    )
    err = res.history["rel_error"]
    assert all(math.isfinite(e) for e in err)
    assert err[0] > err[1] > err[2]
    assert err[-1] < 0.1


def test_sample_splitting_partitions_and_recovers():
    part = split_samples(10_000, 7, _gen(0))
    counts = torch.bincount(part, minlength=7)
    assert int(counts.sum()) == 10_000 and part.min() >= 0 and part.max() < 7
    # multinomial balance: each count ~ N(10000/7, 10000·(1/7)(6/7)); 5 standard deviations
    assert float((counts - 10_000 / 7).abs().max()) < 5 * math.sqrt(10_000 / 7 * 6 / 7)
    # theory mode: 7 fresh subsets of p ≈ 0.95/7 each; the error still contracts every sweep
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(300, 300, 2, p=0.95, generator=_gen(1))
    res = robust_altmin_complete(
        rows,
        cols,
        vals,
        (300, 300),
        2,
        n_iters=3,
        sample_splitting=True,
        truth=(us, s, vs),
        generator=_gen(2),
    )
    err = res.history["rel_error"]
    assert res.n_iters == 3
    assert err[0] > 5 * err[1] > 25 * err[2]
    assert err[-1] < 1e-2


def test_clipping_keeps_recovery():
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(100, 100, 2, p=0.4, generator=_gen(3))
    res = robust_altmin_complete(
        rows,
        cols,
        vals,
        (100, 100),
        2,
        n_iters=20,
        clip_mu=3.0,
        truth=(us, s, vs),
        generator=_gen(2),
    )
    assert res.history["rel_error"][-1] < 1e-8


def test_deterministic_under_seed():
    _, _, _, rows, cols, vals = make_incoherent_lowrank(60, 60, 2, p=0.5, generator=_gen(7))
    a = robust_altmin_complete(rows, cols, vals, (60, 60), 2, n_iters=3, generator=_gen(1))
    b = robust_altmin_complete(rows, cols, vals, (60, 60), 2, n_iters=3, generator=_gen(1))
    assert torch.equal(a.U, b.U) and torch.equal(a.V, b.V)


def _small():
    return make_incoherent_lowrank(20, 15, 2, p=0.8, generator=_gen(0))[3:]


def test_rank_too_large_or_invalid():
    rows, cols, vals = _small()
    with pytest.raises(ValueError, match="rank"):
        robust_altmin_complete(rows, cols, vals, (20, 15), 15)
    with pytest.raises(ValueError, match="rank"):
        robust_altmin_complete(rows, cols, vals, (20, 15), 0)
    with pytest.raises(ValueError, match="rank"):
        RobustAltMinCompletion(rank=20).fit((rows, cols, vals), shape=(20, 15))


def test_empty_row_or_column_rejected():
    rows, cols, vals = _small()
    keep = cols != 4
    with pytest.raises(ValueError, match="column"):
        robust_altmin_complete(rows[keep], cols[keep], vals[keep], (20, 15), 2)
    keep = rows != 7
    with pytest.raises(ValueError, match="row"):
        robust_altmin_complete(rows[keep], cols[keep], vals[keep], (20, 15), 2)
    x = np.random.default_rng(0).normal(size=(20, 15))
    x[:, 3] = np.nan
    with pytest.raises(ValueError, match="column"):
        RobustAltMinCompletion(rank=2).fit(x)


def test_non_finite_values_rejected():
    rows, cols, vals = _small()
    bad = vals.clone()
    bad[3] = float("inf")
    with pytest.raises(ValueError, match="vals"):
        robust_altmin_complete(rows, cols, bad, (20, 15), 2)
    x = np.random.default_rng(0).normal(size=(20, 15))
    x[0, 0] = np.inf
    with pytest.raises(ValueError, match="X"):
        RobustAltMinCompletion(rank=2).fit(x)


def test_out_of_range_duplicates_and_types():
    rows, cols, vals = _small()
    with pytest.raises(ValueError, match="rows"):
        robust_altmin_complete(rows + 1, cols, vals, (20, 15), 2)
    with pytest.raises(ValueError, match="cols"):
        robust_altmin_complete(rows, cols + 1, vals, (20, 15), 2)
    dup_r, dup_c = torch.cat([rows, rows[:1]]), torch.cat([cols, cols[:1]])
    with pytest.raises(ValueError, match="duplicate"):
        robust_altmin_complete(dup_r, dup_c, torch.cat([vals, vals[:1]]), (20, 15), 2)
    with pytest.raises(TypeError, match="vals"):
        robust_altmin_complete(rows, cols, vals.long(), (20, 15), 2)
    with pytest.raises(ValueError, match="sketch"):
        SketchPreconditionedCG(sketch="fourier")
    with pytest.raises(ValueError, match="max_iter"):
        SketchPreconditionedCG(max_iter=-1)
    with pytest.raises(NotFittedError, match="fit"):
        RobustAltMinCompletion(rank=2).transform(np.zeros((20, 15)))


def test_few_observations_warns():
    rows, cols, vals = _small()
    keep = (cols != 2) | (rows == 0)  # column 2 keeps a single observation (< rank)
    with pytest.warns(RuntimeWarning, match="fewer than rank"):
        res = robust_altmin_complete(rows[keep], cols[keep], vals[keep], (20, 15), 2, n_iters=2)
    assert torch.isfinite(res.U).all() and torch.isfinite(res.V).all()
