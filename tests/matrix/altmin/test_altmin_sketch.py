"""CountSketch, SRHT and Gaussian sketches (``optforge.matrix.altmin.sketch``)."""

import math

import pytest
import torch
from _altmin_helpers import DT, _gen, _random_problem

from optforge.matrix.altmin import ColumnLayout, sketch_columns


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
