"""``solver="auto"`` (``optforge.matrix.altmin.auto``)."""

import torch
from _altmin_helpers import _gen

from optforge.matrix.altmin import choose_solver, robust_altmin_complete
from optforge.matrix.altmin.auto import SKETCH_MIN_COMPRESSION, SKETCH_MIN_RANK
from optforge.problems import make_incoherent_lowrank


def _counts(d, n=100):
    return torch.full((n,), d)


def test_small_rank_is_exact_whatever_the_sampling():
    assert choose_solver(SKETCH_MIN_RANK - 1, _counts(10**6), _counts(10**6)) == "exact"


def test_large_rank_uses_the_sketch_only_when_columns_are_long():
    k = SKETCH_MIN_RANK
    enough = int(SKETCH_MIN_COMPRESSION * 4 * k)
    assert choose_solver(k, _counts(enough), _counts(enough)) == "sketch"
    assert choose_solver(k, _counts(enough - 1), _counts(enough)) == "exact"
    assert choose_solver(k, _counts(enough), _counts(enough - 1)) == "exact"  # rows count too


def test_auto_in_the_sweep_runs_the_chosen_solver():
    *_, rows, cols, vals = make_incoherent_lowrank(60, 50, 2, p=0.5, generator=_gen(0))
    auto = robust_altmin_complete(rows, cols, vals, (60, 50), 2, n_iters=3, generator=_gen(1))
    exact = robust_altmin_complete(
        rows, cols, vals, (60, 50), 2, n_iters=3, solver="exact", generator=_gen(1)
    )
    assert torch.equal(auto.U, exact.U) and torch.equal(auto.V, exact.V)
