"""Fixtures shared by the optimizer tests: DTensor parameters on a one-rank CPU mesh.

A one-rank gloo group (in process, ``HashStore``) is enough to build DTensor parameters, which
is what FSDP2 hands an optimizer; the optimizers that need whole parameters must refuse them
(issue #32). The multi-rank runs are in ``tests/distributed``.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn


@contextmanager
def _one_rank_mesh() -> Iterator[object]:
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch built without torch.distributed / gloo")
    from torch.distributed.device_mesh import init_device_mesh

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        if owned:
            dist.destroy_process_group()


@pytest.fixture
def dtensor_linear() -> Iterator[nn.Linear]:
    """``nn.Linear(4, 2)`` in float64 whose parameters are DTensors sharded on dim 0."""
    from torch.distributed.tensor import Shard, distribute_tensor

    with _one_rank_mesh() as mesh:
        torch.manual_seed(0)
        layer = nn.Linear(4, 2).double()
        for name, p in list(layer.named_parameters()):
            setattr(layer, name, nn.Parameter(distribute_tensor(p.detach(), mesh, [Shard(0)])))
        yield layer


@pytest.fixture
def replicated_param() -> Iterator[nn.Parameter]:
    """A ``(1, 3)`` DTensor parameter, replicated."""
    from torch.distributed.tensor import Replicate, distribute_tensor

    with _one_rank_mesh() as mesh:
        yield nn.Parameter(distribute_tensor(torch.randn(1, 3), mesh, [Replicate()]))
