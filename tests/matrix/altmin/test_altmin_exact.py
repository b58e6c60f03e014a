"""Exact normal equations (``optforge.matrix.altmin.exact``)."""

import pytest
from _altmin_helpers import _gen, _lstsq_loop, _random_problem, _rel

from optforge.matrix.altmin import ExactNormalEquations, SketchPreconditionedCG


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
