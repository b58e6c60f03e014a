"""The sensing operators (``gamp_rie.sensing``)."""

import math

import pytest
import torch

from optforge.matrix.gamp_rie import sensing_adjoint, sensing_forward


def test_operators_adjoint_and_reference():
    """Spec §7.5: ⟨𝒜(S), g⟩ = ⟨S, 𝒜*(g)⟩, and both match the explicit n×d×d tensor."""
    gen = torch.Generator().manual_seed(0)
    n, d = 25, 7
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    s = torch.randn(d, d, generator=gen, dtype=torch.float64)
    s = s + s.T
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    z = (torch.einsum("ni,nj->nij", x, x) - torch.eye(d, dtype=x.dtype)) / math.sqrt(d)
    torch.testing.assert_close(sensing_forward(x, s), torch.einsum("nij,ij->n", z, s))
    torch.testing.assert_close(sensing_adjoint(x, g), torch.einsum("n,nij->ij", g, z))
    lhs = float(sensing_forward(x, s) @ g)
    rhs = float((s * sensing_adjoint(x, g)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)
