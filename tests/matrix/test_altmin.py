"""Tests of robust alternating minimization (spec robust_altmin_completion.md §7)."""

import math

import numpy as np
import pytest
import torch

from optforge.matrix.altmin import (
    ColumnLayout,
    ExactNormalEquations,
    RobustAltMinCompletion,
    SketchPreconditionedCG,
    make_incoherent_lowrank,
    relative_error,
    robust_altmin_complete,
    sketch_columns,
    split_samples,
)

DT = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _random_problem(seed, n_cols=50, k=5, d_lo=None, d_hi=40, m=60):
    """Random per-column regressions with |Ω_j| in [d_lo, d_hi]."""
    g = _gen(seed)
    d_lo = k if d_lo is None else d_lo
    counts = torch.randint(d_lo, d_hi + 1, (n_cols,), generator=g)
    rows = torch.cat([torch.randperm(m, generator=g)[: int(c)] for c in counts])
    cols = torch.repeat_interleave(torch.arange(n_cols), counts)
    perm = torch.randperm(rows.numel(), generator=g)  # entries in arbitrary order
    rows, cols = rows[perm], cols[perm]
    U = torch.randn(m, k, generator=g, dtype=DT)
    vals = torch.randn(rows.numel(), generator=g, dtype=DT)
    return U, rows, cols, vals, n_cols


def _lstsq_loop(U, rows, cols, vals, n_cols, ridge=0.0):
    k = U.shape[1]
    out = torch.zeros(n_cols, k, dtype=DT)
    for j in range(n_cols):
        sel = cols == j
        a, b = U[rows[sel]], vals[sel]
        if ridge > 0:
            a = torch.cat([a, math.sqrt(ridge) * torch.eye(k, dtype=DT)])
            b = torch.cat([b, torch.zeros(k, dtype=DT)])
        out[j] = torch.linalg.pinv(a) @ b  # minimum-norm least squares
    return out


def _rel(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


# ---------------------------------------------------------------- solvers


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_exact_matches_per_column_lstsq(ridge):
    U, rows, cols, vals, n = _random_problem(0)
    ref = _lstsq_loop(U, rows, cols, vals, n, ridge)
    got = ExactNormalEquations()(U, rows, cols, vals, n, ridge=ridge)
    assert _rel(got, ref) < 1e-10


def test_exact_min_norm_for_underdetermined_columns():
    U, rows, cols, vals, n = _random_problem(1, d_lo=1, d_hi=8)  # many columns with d_j < k
    ref = _lstsq_loop(U, rows, cols, vals, n)
    assert _rel(ExactNormalEquations()(U, rows, cols, vals, n), ref) < 1e-9
    sk = SketchPreconditionedCG(max_iter=5, generator=_gen(0))(U, rows, cols, vals, n)
    assert _rel(sk, ref) < 1e-8


@pytest.mark.parametrize("sketch", ["countsketch", "srht", "gaussian"])
def test_sketch_pcg_with_k_iterations_equals_exact(sketch):
    U, rows, cols, vals, n = _random_problem(2)
    k = U.shape[1]
    exact = ExactNormalEquations()(U, rows, cols, vals, n)
    solver = SketchPreconditionedCG(sketch=sketch, max_iter=k, generator=_gen(3))
    assert _rel(solver(U, rows, cols, vals, n), exact) < 1e-10


def test_sketch_pcg_ridge_equals_exact_ridge():
    U, rows, cols, vals, n = _random_problem(4)
    exact = ExactNormalEquations()(U, rows, cols, vals, n, ridge=0.5)
    got = SketchPreconditionedCG(max_iter=5, generator=_gen(1))(U, rows, cols, vals, n, ridge=0.5)
    assert _rel(got, exact) < 1e-10


def test_gaussian_sketch_and_solve_equals_explicit_reference():
    U, rows, cols, vals, n = _random_problem(5, d_lo=25, d_hi=40)  # every d_j > s: all sketched
    k = U.shape[1]
    s = 2 * k + 10
    solver = SketchPreconditionedCG(sketch="gaussian", sketch_size=s, max_iter=0, generator=_gen(7))
    got = solver(U, rows, cols, vals, n)
    layout = ColumnLayout.build(rows, cols, vals, n, U.shape[0])
    sa, sb = sketch_columns(layout.design(U), layout.target, s, "gaussian", _gen(7))
    ref = torch.stack([torch.linalg.lstsq(sa[j], sb[j]).solution for j in range(n)])
    assert _rel(got, ref) < 1e-10
    # and it is NOT the exact solution (the sketch matters at q = 0)
    assert _rel(got, ExactNormalEquations()(U, rows, cols, vals, n)) > 1e-3


def test_pcg_residual_is_monotone_per_column():
    U, rows, cols, vals, n = _random_problem(6)
    solver = SketchPreconditionedCG(max_iter=5, generator=_gen(2), track_residuals=True)
    solver(U, rows, cols, vals, n)
    res = solver.last_residuals
    assert res.shape == (6, n)
    assert bool((res[1:] <= res[:-1] * (1 + 1e-12) + 1e-12).all())


@pytest.mark.parametrize("kind,s", [("countsketch", 8), ("srht", 8)])
def test_sketch_is_unbiased(kind, s):
    d, draws = 32, 2000
    eye = torch.eye(d, dtype=DT).expand(draws, d, d).contiguous()
    sa, _ = sketch_columns(eye, torch.zeros(draws, d, dtype=DT), s, kind, _gen(11))
    mean = (sa.transpose(1, 2) @ sa).mean(0)  # each draw's S_jᵀS_j
    # off-diagonal entries have variance ≈ 1/s per draw: standard error sqrt(1/(s·draws)) ≈ 0.008,
    # so 0.05 is > 6 standard errors; diagonals are exactly 1 for both sketches.
    err = (mean - torch.eye(d, dtype=DT)).abs().max()
    assert float(err) < 0.05
    assert float((mean.diagonal() - 1).abs().max()) < 1e-12


def test_unscaled_sketch_would_fail_unbiasedness():
    """Guard for the test above: dropping SRHT's √(D/s) factor is detected."""
    d, draws, s = 32, 500, 8
    eye = torch.eye(d, dtype=DT).expand(draws, d, d).contiguous()
    sa, _ = sketch_columns(eye, torch.zeros(draws, d, dtype=DT), s, "srht", _gen(1))
    wrong = sa / math.sqrt(d / s)
    mean = (wrong.transpose(1, 2) @ wrong).mean(0)
    assert float((mean - torch.eye(d, dtype=DT)).abs().max()) > 0.05


@pytest.mark.parametrize("kind", ["countsketch", "srht", "gaussian"])
def test_embedding_quality(kind):
    U, rows, cols, vals, n = _random_problem(8, d_lo=30, d_hi=40)
    k = U.shape[1]
    layout = ColumnLayout.build(rows, cols, vals, n, U.shape[0])
    a = layout.design(U)
    sa, _ = sketch_columns(a, layout.target, 4 * k, kind, _gen(4))
    r = torch.linalg.qr(sa).R
    sv = torch.linalg.svdvals(torch.linalg.solve_triangular(r, a, upper=True, left=False))
    med = sv.median(dim=1).values
    assert 0.5 <= float(med.median()) <= 2.0


def test_flops_grow_like_k_not_k_squared():
    n, flops_s, flops_e = 300, [], []
    for k in (4, 8, 16):
        _, _, _, rows, cols, vals = make_incoherent_lowrank(n, n, k, p=1.0, generator=_gen(k))
        U = torch.linalg.qr(torch.randn(n, k, generator=_gen(0), dtype=DT)).Q
        sk, ex = SketchPreconditionedCG(max_iter=3, generator=_gen(1)), ExactNormalEquations()
        sk(U, rows, cols, vals, n)
        ex(U, rows, cols, vals, n)
        flops_s.append(sk.last_flops)
        flops_e.append(ex.last_flops)
    slope = lambda f: math.log(f[-1] / f[0]) / math.log(4)  # noqa: E731
    assert slope(flops_s) < 1.35
    assert slope(flops_e) > 1.9


# ---------------------------------------------------------------- algorithm


def test_relative_error_matches_dense():
    g = _gen(3)
    U = torch.randn(30, 3, generator=g, dtype=DT)
    V = torch.randn(20, 3, generator=g, dtype=DT)
    us, s, vs, *_ = make_incoherent_lowrank(30, 20, 3, p=0.5, generator=g)
    dense = torch.linalg.norm(U @ V.T - us @ torch.diag(s) @ vs.T) / torch.linalg.norm(s)
    assert abs(relative_error(U, V, us, s, vs) - float(dense)) < 1e-12
    assert relative_error(us * s, vs, us, s, vs) < 1e-14  # stable at zero error


@pytest.mark.parametrize("solver", ["sketch", "exact"])
def test_exact_recovery_well_sampled(solver):
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(150, 120, 3, p=0.35, generator=_gen(0))
    res = robust_altmin_complete(
        rows,
        cols,
        vals,
        (150, 120),
        3,
        n_iters=25,
        solver=solver,
        truth=(us, s, vs),
        generator=_gen(1),
    )
    assert res.history["rel_error"][-1] < 1e-8
    assert res.history["rel_error"][0] > 1e-6  # the first sweep is not already exact


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


# ---------------------------------------------------------------- estimator


def test_estimator_fit_transform_nan_matrix():
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(90, 60, 3, p=0.5, generator=_gen(9))
    full = (us * s @ vs.T).numpy()
    x = np.full_like(full, np.nan)
    x[rows.numpy(), cols.numpy()] = vals.numpy()
    est = RobustAltMinCompletion(rank=3, random_state=0)
    out = est.fit_transform(x)
    assert isinstance(out, np.ndarray) and out.shape == x.shape
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(out[observed], x[observed])  # observed entries kept
    assert np.abs(out - full).max() / np.abs(full).max() < 1e-7
    assert est.U_.shape == (90, 3) and est.V_.shape == (60, 3) and est.n_iter_ >= 1
    # triplet input gives the same factors under the same seed
    est2 = RobustAltMinCompletion(rank=3, random_state=0).fit((rows, cols, vals), shape=(90, 60))
    pred = est2.predict(rows[:5], cols[:5])
    assert torch.allclose(pred, vals[:5], atol=1e-7)
    assert est.get_params()["rank"] == 3
    assert est.set_params(rank=2).rank == 2


def test_estimator_torch_input_returns_tensor():
    _, _, _, rows, cols, vals = make_incoherent_lowrank(40, 30, 2, p=0.6, generator=_gen(1))
    x = torch.full((40, 30), float("nan"), dtype=DT)
    x[rows, cols] = vals
    out = RobustAltMinCompletion(rank=2, solver="exact", random_state=1).fit_transform(x)
    assert isinstance(out, torch.Tensor) and not torch.isnan(out).any()


# ---------------------------------------------------------------- bad input


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
    with pytest.raises(RuntimeError, match="fit"):
        RobustAltMinCompletion(rank=2).transform(np.zeros((20, 15)))


def test_few_observations_warns():
    rows, cols, vals = _small()
    keep = (cols != 2) | (rows == 0)  # column 2 keeps a single observation (< rank)
    with pytest.warns(RuntimeWarning, match="fewer than rank"):
        res = robust_altmin_complete(rows[keep], cols[keep], vals[keep], (20, 15), 2, n_iters=2)
    assert torch.isfinite(res.U).all() and torch.isfinite(res.V).all()
