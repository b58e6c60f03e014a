"""Sketch-and-precondition + PCG (``optforge.matrix.altmin.sketch_pcg``)."""

import math

import pytest
import torch
from _altmin_helpers import DT, _gen, _random_problem, _rel

from optforge.matrix.altmin import (
    ColumnLayout,
    ExactNormalEquations,
    SketchPreconditionedCG,
    sketch_columns,
)
from optforge.problems import make_incoherent_lowrank


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


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_countsketch_signs_are_redrawn_per_call_buckets_kept(backend):
    U, rows, cols, vals, n = _random_problem(9, d_lo=30, d_hi=40)
    fresh = SketchPreconditionedCG(max_iter=0, generator=_gen(3), backend=backend, sketch_size=8)
    first, second = fresh(U, rows, cols, vals, n), fresh(U, rows, cols, vals, n)
    assert _rel(first, second) > 1e-6  # sketch-and-solve with new signs differs
    fixed = SketchPreconditionedCG(
        max_iter=0, generator=_gen(3), backend=backend, sketch_size=8, refresh_signs=False
    )
    assert torch.equal(fixed(U, rows, cols, vals, n), fixed(U, rows, cols, vals, n))
