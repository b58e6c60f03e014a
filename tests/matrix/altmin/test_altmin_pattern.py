"""The observed-entry operators (``optforge.matrix.altmin.pattern``), checked per column against
explicit design matrices ``A_j = U[Ω_j]``."""

import pytest
import torch
from _altmin_helpers import DT, _gen, _random_problem, _rel

from optforge.matrix.altmin import CountSketch, ObservedPattern
from optforge.matrix.altmin.exact import exact_min_density
from optforge.matrix.altmin.pattern import DENSE_MAX_ELEMENTS, resolve_backend


def _columns(U, rows, cols, vals, n):
    """Explicit (A_j, b_j) of every column."""
    return [(U[rows[cols == j]], vals[cols == j]) for j in range(n)]


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_products_match_explicit_columns(backend):
    U, rows, cols, vals, n = _random_problem(0, d_lo=1, d_hi=40)
    k = U.shape[1]
    P = torch.randn(n, k, generator=_gen(1), dtype=DT)
    pat = ObservedPattern.build(rows, cols, vals, n, U.shape[0], backend)
    assert pat.backend == backend and pat.n_obs == rows.numel()
    cols_ab = _columns(U, rows, cols, vals, n)
    rhs = torch.stack([a.T @ b for a, b in cols_ab])
    normal = torch.stack([a.T @ (a @ p) for (a, _), p in zip(cols_ab, P, strict=True)])
    resid = torch.stack([a.T @ (b - a @ p) for (a, b), p in zip(cols_ab, P, strict=True)])
    norms = torch.stack(
        [torch.linalg.norm(a @ p - b) for (a, b), p in zip(cols_ab, P, strict=True)]
    )
    gram = torch.stack([a.T @ a for a, _ in cols_ab])
    assert _rel(pat.rhs(U), rhs) < 1e-13
    assert _rel(pat.normal(U, P), normal) < 1e-13
    assert _rel(pat.residual_normal(U, P), resid) < 1e-13
    assert _rel(pat.residual_norms(U, P), norms) < 1e-13
    assert _rel(pat.gram(U), gram) < 1e-13
    subset = torch.tensor([7, 2, 30])
    assert _rel(pat.gram(U, subset), gram[subset]) < 1e-13
    assert _rel(pat.rhs(U, subset), rhs[subset]) < 1e-13


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_sketch_gram_matches_an_explicit_countsketch(backend):
    U, rows, cols, vals, n = _random_problem(1, d_lo=20, d_hi=40)
    m, k, s = U.shape[0], U.shape[1], 12
    sketch = CountSketch.draw(m, s, _gen(2))
    pat = ObservedPattern.build(rows, cols, vals, n, m, backend, sketch)
    gram, cross = pat.sketch_gram(U)
    for j in range(n):
        sel = rows[cols == j]
        S = torch.zeros(s, m, dtype=DT)  # the CountSketch of column j: one ±1 per row in Ω_j
        S[sketch.bucket[sel], sel] = sketch.sign[sel]
        sa, sb = S @ U, S[:, rows[cols == j]] @ vals[cols == j]
        assert _rel(gram[j], sa.T @ sa) < 1e-13
        assert _rel(cross[j], sa.T @ sb) < 1e-13
    assert gram.shape == (n, k, k)


def test_shared_hash_sketch_is_unbiased_per_column():
    """E[S_jᵀS_j] = I for the CountSketch restricted to a column's rows (over the hash)."""
    m, s, draws = 40, 8, 2000
    rows_j = torch.tensor([1, 4, 5, 9, 17, 20, 33, 38])  # the observed rows of one column
    acc = torch.zeros(rows_j.numel(), rows_j.numel(), dtype=DT)
    g = _gen(5)
    for _ in range(draws):
        sk = CountSketch.draw(m, s, g)
        S = torch.zeros(s, rows_j.numel(), dtype=DT)
        S[sk.bucket[rows_j], torch.arange(rows_j.numel())] = sk.sign[rows_j]
        acc += S.T @ S
    mean = acc / draws
    # diagonal exactly 1; off-diagonal mean of ±1·[same bucket]: sd 1/sqrt(s·draws) ≈ 0.008
    assert float((mean.diagonal() - 1).abs().max()) < 1e-12
    assert float((mean - torch.eye(rows_j.numel(), dtype=DT)).abs().max()) < 0.05


def test_auto_backend_rule():
    assert resolve_backend("auto", 1000, 100, 100) == "dense"  # p = 0.1
    assert resolve_backend("auto", 999, 100, 100) == "sparse"
    assert resolve_backend("auto", 2500, 100, 100, min_density=0.3) == "sparse"
    assert exact_min_density(4) == 0.3 and exact_min_density(32) == 0.1
    side = int(DENSE_MAX_ELEMENTS**0.5) + 1
    assert resolve_backend("auto", side * side, side, side) == "sparse"  # too large to densify
    assert resolve_backend("sparse", 10_000, 100, 100) == "sparse"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("gpu", 1, 1, 1)


def test_pattern_without_sketch_refuses_sketch_gram():
    U, rows, cols, vals, n = _random_problem(2)
    pat = ObservedPattern.build(rows, cols, vals, n, U.shape[0], "sparse")
    with pytest.raises(ValueError, match="sketch"):
        pat.sketch_gram(U)


def _grouping_sorts(monkeypatch):
    """Counts the unstable argsorts (the one sort of Ω by column; the sketch's are stable)."""
    calls = []
    original = torch.argsort

    def counting(*args, **kwargs):
        if not kwargs.get("stable", False):
            calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "argsort", counting)
    return calls


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_omega_is_sorted_once_for_every_sketch_size_and_solver(monkeypatch, backend):
    # issue #34: the pattern key held the sketch size, so each rank k re-sorted the same Ω
    from optforge.matrix.altmin import ExactNormalEquations, SketchPreconditionedCG
    from optforge.matrix.altmin import pattern as pattern_module

    U, rows, cols, vals, n = _random_problem(3)
    m = U.shape[0]

    def solve_all():
        out = [ExactNormalEquations(backend=backend)(U, rows, cols, vals, n)]
        for size in (6, 9, 12):
            solver = SketchPreconditionedCG(sketch_size=size, generator=_gen(size), backend=backend)
            out.append(solver(U, rows, cols, vals, n))
            V = out[-1]
            out.append(solver(V, cols, rows, vals, m))  # the other orientation (U-step)
        return out

    getattr(pattern_module, "_grouped", []).clear()
    sorts = _grouping_sorts(monkeypatch)
    warm = solve_all()
    assert len(sorts) == 2  # one per orientation, for 1 exact and 3 sketch solvers
    monkeypatch.undo()
    pattern_module._grouped.clear()  # the same bits as patterns built from scratch
    for a, b in zip(solve_all(), warm, strict=True):
        assert torch.equal(a, b)


def test_grouped_entries_follow_in_place_changes_and_are_freed():
    from optforge.matrix.altmin import pattern as pattern_module

    _, rows, cols, vals, n = _random_problem(4)
    pattern_module._grouped.clear()
    first = ObservedPattern.build(rows, cols, vals, n, 60, "sparse")
    assert ObservedPattern.build(rows, cols, vals, n, 60, "sparse").values is first.values
    vals.mul_(2.0)  # a new version of vals: grouped again
    again = ObservedPattern.build(rows, cols, vals, n, 60, "sparse")
    assert torch.equal(again.values, 2.0 * first.values)
    del rows, cols, vals
    assert pattern_module._grouped == []  # dropped with the tensors
