"""The energy sign convention and log Z on a grid (optforge.losses.meco.energy)."""

import math

import torch
from _meco_models import D, Quadratic, std_normal

from optforge.losses.meco import (
    MECOLoss,
    grid_log_partition,
)


def test_energy_sign_energy_equals_logdensity():
    g = torch.Generator().manual_seed(10)
    x, z = torch.randn(5, 1, generator=g, dtype=D), torch.randn(5, 1, generator=g, dtype=D)
    model = Quadratic(0.3)
    a = MECOLoss(std_normal(), energy_sign="logdensity")(model, x, z)
    b = MECOLoss(std_normal(), energy_sign="energy")(lambda t: -model(t), x, z)
    torch.testing.assert_close(a, b)


# -- 10. grid log Z -----------------------------------------------------------------------------
def test_grid_log_partition_of_standard_gaussian():
    log_z = grid_log_partition(lambda x: -0.5 * (x**2).sum(1), (-8.0, 8.0), 300, dim=2, dtype=D)
    assert abs(float(log_z) - math.log(2 * math.pi)) < 1e-3
    log_z1 = grid_log_partition(lambda x: -0.5 * (x**2).sum(1), (-8.0, 8.0), 300)
    assert abs(float(log_z1) - 0.5 * math.log(2 * math.pi)) < 1e-3


def test_grid_log_partition_in_chunks_equals_one_call():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1), torch.nn.Flatten(0)
    )
    rows: list[int] = []

    def energy(x):
        rows.append(x.shape[0])
        return net(x)

    whole = grid_log_partition(energy, (-5.0, 5.0), 60, dim=2, chunk_size=None)
    assert rows == [3600]
    rows.clear()
    chunked = grid_log_partition(energy, (-5.0, 5.0), 60, dim=2, chunk_size=1000)
    assert rows == [1000, 1000, 1000, 600]
    assert torch.equal(whole, chunked)
    try:
        grid_log_partition(energy, (-5.0, 5.0), 60, chunk_size=0)
    except ValueError as err:
        assert "chunk_size" in str(err)
    else:
        raise AssertionError("chunk_size=0 accepted")
