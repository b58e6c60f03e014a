"""``relative_error`` (``optforge.matrix.altmin.metrics``)."""

import torch
from _altmin_helpers import DT, _gen

from optforge.matrix.altmin import relative_error
from optforge.problems import make_incoherent_lowrank


def test_relative_error_matches_dense():
    g = _gen(3)
    U = torch.randn(30, 3, generator=g, dtype=DT)
    V = torch.randn(20, 3, generator=g, dtype=DT)
    us, s, vs, *_ = make_incoherent_lowrank(30, 20, 3, p=0.5, generator=g)
    dense = torch.linalg.norm(U @ V.T - us @ torch.diag(s) @ vs.T) / torch.linalg.norm(s)
    assert abs(relative_error(U, V, us, s, vs) - float(dense)) < 1e-12
    assert relative_error(us * s, vs, us, s, vs) < 1e-14  # stable at zero error
