"""SSO refuses DTensor (FSDP2) parameters before touching anything (issue #32 item 2).

Under FSDP2 SSO used to run and return a result different from one process (its inner loop
differentiates the model's targets with ``torch.autograd.grad``, which bypasses FSDP2's gradient
reduce-scatter): the 2-rank reproduction is ``tests/distributed/test_ddp.py``. Here a one-rank
gloo group is enough to build DTensor parameters.
"""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from optforge.optim import SSO

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"
)


def test_sso_refuses_dtensor_parameters_naming_fsdp2_and_the_workaround(dtensor_linear):
    before = [p.full_tensor().clone() for p in dtensor_linear.parameters()]
    x = torch.randn(6, 4, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match=r"(?s)DTensor.*FSDP2.*DDP"):
        SSO(dtensor_linear.parameters(), lr=1.0, inner_steps=2)
    # Also when the parameters become DTensors after construction: refused at the step, unchanged.
    layer = nn.Linear(4, 2).double()
    opt = SSO(layer.parameters(), lr=1.0, inner_steps=2)
    opt.param_groups[0]["params"] = list(dtensor_linear.parameters())
    calls = []

    def forward():
        calls.append(1)
        return dtensor_linear(x).full_tensor()

    with pytest.raises(NotImplementedError, match="FSDP2"):
        opt.step(forward=forward, target_loss=lambda z: z.pow(2).mean())
    assert calls == []  # refused before any forward
    assert not opt.state
    for p, p0 in zip(dtensor_linear.parameters(), before, strict=True):
        assert torch.equal(p.full_tensor(), p0)
