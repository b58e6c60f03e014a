"""``prepare`` builds a solver's pattern ahead of a call (outside a timed region), and the call
then gives what it gives without it (issue #34)."""

from __future__ import annotations

import pytest
import torch

from optforge.matrix.altmin import ExactNormalEquations, SketchPreconditionedCG
from optforge.matrix.altmin import pattern as pattern_module
from optforge.problems import make_incoherent_lowrank


def _problem():
    g = torch.Generator().manual_seed(0)
    *_, rows, cols, vals = make_incoherent_lowrank(60, 50, 3, p=0.5, generator=g)
    u = torch.linalg.qr(torch.randn(60, 3, generator=g, dtype=torch.float64)).Q
    return rows, cols, vals, u


@pytest.mark.parametrize("kind", ["exact", "sketch"])
def test_prepare_builds_the_pattern_and_the_call_matches(kind, monkeypatch) -> None:
    rows, cols, vals, u = _problem()

    def make():
        if kind == "exact":
            return ExactNormalEquations()
        return SketchPreconditionedCG(max_iter=2, generator=torch.Generator().manual_seed(1))

    plain = make()(u, rows, cols, vals, 50)
    solver = make()
    solver.prepare(rows, cols, vals, 50, 60, 3)
    builds: list[int] = []
    original = pattern_module.ObservedPattern.build.__func__

    def counting(cls, *args, **kwargs):
        builds.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(pattern_module.ObservedPattern, "build", classmethod(counting))
    prepared = solver(u, rows, cols, vals, 50)
    assert builds == []  # the call found the pattern built
    assert torch.equal(prepared, plain)  # same generator draws in the same order
