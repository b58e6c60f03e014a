"""The cheaper hot path of MECOLoss/NCELoss (sign 1 and ν = 1 ops skipped, the ESS reusing log ĝ)
gives bitwise the values, gradients and state of the textbook formulas; the meco reproduction's
functional MLP energy equals the module call bitwise."""

import math

import pytest
import torch
from torch import nn

from optforge.losses.meco import MECOLoss, NCELoss, fit_gaussian_noise
from optforge.repro.models import mlp
from optforge.repro.papers.meco import _mlp_energy


def _net_and_batches(steps=3):
    torch.manual_seed(0)
    net = mlp([2, 16, 16, 1], activation=nn.SiLU)
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(32, 2, generator=g) for _ in range(steps)]
    zs = [1.5 * torch.randn(32, 2, generator=g) for _ in range(steps)]
    return net, xs, zs


def _noise():
    zeros = torch.zeros(2)
    return torch.distributions.Independent(torch.distributions.Normal(zeros, zeros + 1.5), 1)


def _grads(net):
    return [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("sign", ["logdensity", "energy"])
def test_meco_matches_reference_formula_bitwise(sign):
    net, xs, zs = _net_and_batches()
    s = 1.0 if sign == "logdensity" else -1.0
    loss_fn = MECOLoss(_noise(), gamma=0.1, energy_sign=sign)
    noise = _noise()
    ref_log_u = None
    for x, z in zip(xs, zs, strict=True):

        def energy(t):
            return s * net(t)[:, 0]

        net.zero_grad()
        value = loss_fn(energy, x, z)
        value.backward()
        got = _grads(net)
        # the pre-optimisation computation, op for op
        net.zero_grad()
        f_x = s * energy(x)
        f_z = s * energy(z)
        log_w = f_z - noise.log_prob(z)
        log_omega = torch.full((32,), -math.log(32), dtype=f_z.dtype)
        log_g = torch.logsumexp(log_w + log_omega, 0)
        lw = log_w.detach() + log_omega
        ess = float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))
        lg64 = log_g.detach().to(torch.float64)
        if ref_log_u is None:
            ref_log_u = lg64
        else:
            ref_log_u = torch.logaddexp(math.log1p(-0.1) + ref_log_u, math.log(0.1) + lg64)
        ref = -f_x.mean() + torch.exp(log_g - ref_log_u.to(log_g.dtype))
        ref.backward()
        assert torch.equal(value, ref)
        assert all(torch.equal(a, b) for a, b in zip(got, _grads(net), strict=True))
        assert torch.equal(loss_fn.log_u, ref_log_u)
        assert loss_fn.last_ess == ess
    assert int(loss_fn.num_steps) == len(xs)


@pytest.mark.parametrize(("nu", "sign"), [(1.0, "logdensity"), (2.0, "energy")])
def test_nce_matches_reference_formula_bitwise(nu, sign):
    net, xs, _ = _net_and_batches(1)
    s = 1.0 if sign == "logdensity" else -1.0
    loss_fn = NCELoss(_noise(), nu=nu, init_log_normalizer=0.3, energy_sign=sign)
    g = torch.Generator().manual_seed(2)
    x, z = xs[0], 1.5 * torch.randn(round(nu * 32), 2, generator=g)

    def energy(t):
        return s * net(t)[:, 0]

    value = loss_fn(energy, x, z)
    value.backward()
    got = [*_grads(net), loss_fn.log_normalizer.grad.clone()]
    net.zero_grad()
    c = torch.tensor(0.3, requires_grad=True)
    noise = _noise()

    def logit(t):
        return s * energy(t) - c - noise.log_prob(t) - math.log(nu)

    sp = nn.functional.softplus
    ref = sp(-logit(x)).mean() + nu * sp(logit(z)).mean()
    ref.backward()
    assert torch.equal(value, ref)
    assert all(torch.equal(a, b) for a, b in zip(got, [*_grads(net), c.grad], strict=True))


def test_fit_gaussian_noise_validate_args():
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(3))
    checked, unchecked = fit_gaussian_noise(x), fit_gaussian_noise(x, validate_args=False)
    z = torch.randn(8, 2)
    assert torch.equal(checked.log_prob(z), unchecked.log_prob(z))
    bad = z.clone()
    bad[0, 0] = float("nan")
    # torch's default validation still applies unless switched off
    if torch.distributions.Distribution._validate_args:
        with pytest.raises(ValueError):
            checked.log_prob(bad)
    assert not bool(torch.isfinite(unchecked.log_prob(bad)).all())


def test_mlp_energy_equals_module_call_bitwise():
    net, xs, _ = _net_and_batches(1)
    f = _mlp_energy(net)
    a = f(xs[0])
    a.sum().backward()
    ga = _grads(net)
    net.zero_grad()
    b = net(xs[0])[:, 0]
    b.sum().backward()
    assert a.shape == (32,) and torch.equal(a, b)
    assert all(torch.equal(u, v) for u, v in zip(ga, _grads(net), strict=True))
    with pytest.raises(TypeError, match="Linear and SiLU"):
        _mlp_energy(mlp([2, 4, 1], activation=nn.ReLU))
