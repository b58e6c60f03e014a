"""GradNormSmoothNewton refuses DTensor (FSDP2) parameters with a named error (issue #32 item 2)
instead of failing inside DTensor dispatch ("would remove or reshape sharded dimension")."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from optforge.optim import GradNormSmoothNewton

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"
)


def test_gns_refuses_dtensor_parameters_naming_fsdp2_and_the_workaround(dtensor_linear):
    with pytest.raises(NotImplementedError, match=r"(?s)DTensor.*FSDP2.*DDP"):
        GradNormSmoothNewton(dtensor_linear.parameters(), hessian="exact")
    layer = nn.Linear(4, 2).double()
    opt = GradNormSmoothNewton(layer.parameters(), hessian="exact")
    opt.param_groups[0]["params"] = list(dtensor_linear.parameters())
    opt._params = list(dtensor_linear.parameters())
    before = [p.full_tensor().clone() for p in dtensor_linear.parameters()]
    calls = []

    def closure():
        calls.append(1)
        return dtensor_linear(torch.ones(3, 4, dtype=torch.float64)).full_tensor().pow(2).sum()

    with pytest.raises(NotImplementedError, match="FSDP2"):
        opt.step(closure)
    assert calls == [] and not opt.state
    for p, p0 in zip(dtensor_linear.parameters(), before, strict=True):
        assert torch.equal(p.full_tensor(), p0)
