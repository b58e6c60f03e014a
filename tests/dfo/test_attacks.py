"""Directional attack operator: closed forms on linear Φ, finite differences, first-order ascent."""

import pytest
import torch
from torch import nn

from optforge.dfo import DirectionalAttack, directional_attack

F64 = torch.float64


def _linear(n=6, m=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n, generator=gen, dtype=F64)
    phi = nn.Linear(n, m, bias=True).double().eval()
    with torch.no_grad():
        phi.weight.copy_(a)
        phi.bias.copy_(torch.randn(m, generator=gen, dtype=F64))
    return phi, a, gen


def test_fgsm_closed_forms_on_linear_phi():
    phi, a, gen = _linear()
    x = torch.randn(6, generator=gen, dtype=F64)
    u = torch.randn(4, generator=gen, dtype=F64)
    r = 0.37
    d = directional_attack(phi, x, u, r)  # soft_ce: blind to the mean of u
    torch.testing.assert_close(d, r * torch.sign(a.T @ (u - u.mean())), rtol=0, atol=0)
    d_lin = directional_attack(phi, x, u, r, loss="linear")
    torch.testing.assert_close(d_lin, r * torch.sign(a.T @ u), rtol=0, atol=0)
    assert set(d.abs().unique().tolist()) <= {0.0, r}
    # shifting u by a constant changes nothing for soft_ce
    torch.testing.assert_close(directional_attack(phi, x, u + 5.0, r), d, rtol=0, atol=0)


def test_attack_direction_matches_finite_differences():
    phi, _, gen = _linear(n=5, m=3, seed=1)
    x = torch.randn(5, generator=gen, dtype=F64)
    u = torch.randn(3, generator=gen, dtype=F64)
    h = 1e-6
    eye = torch.eye(5, dtype=F64)
    with torch.no_grad():
        jac = torch.stack([(phi(x + h * e) - phi(x - h * e)) / (2 * h) for e in eye], dim=1)
    d = directional_attack(phi, x, u, 0.1, loss="linear")
    torch.testing.assert_close(d, 0.1 * torch.sign(jac.T @ u), rtol=0, atol=0)


def test_first_order_ascent_of_the_linear_attack():
    torch.manual_seed(0)
    phi = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double().eval()
    f = lambda y: -((y - 0.5) ** 2).sum()  # noqa: E731
    x = torch.randn(8, dtype=F64)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(phi(xr)), xr)
    yr = phi(x).detach().requires_grad_(True)
    (u,) = torch.autograd.grad(f(yr), yr)
    r = 1e-4
    d = directional_attack(phi, x, u, r, loss="linear")
    with torch.no_grad():
        gain = float(f(phi(x + d)) - f(phi(x)))
    predicted = r * float(grad.abs().sum())
    assert abs(gain - predicted) / predicted < 0.1


def test_pgd_stays_in_ball_and_box_and_official_step_never_reaches_boundary():
    torch.manual_seed(1)
    phi = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4)).double().eval()
    x, u = torch.randn(5, dtype=F64), torch.randn(4, dtype=F64)
    for loss in ("soft_ce", "linear", "cosine"):
        d = directional_attack(phi, x, u, 0.2, method="pgd", loss=loss)
        assert float(d.abs().max()) <= 0.2 + 1e-15
    lo, hi = x - 0.05, x + 1.0
    d = directional_attack(phi, x, u, 0.2, method="pgd", bounds=(lo, hi))
    assert ((x + d >= lo - 1e-15) & (x + d <= hi + 1e-15)).all()
    d = directional_attack(phi, x, u, 0.2, method="pgd", step_frac=4 / 255)  # torchattacks default
    assert float(d.abs().max()) <= 0.2 * 40 / 255 + 1e-12


def test_pgd_linear_on_linear_phi_equals_fgsm():
    phi, _, gen = _linear(seed=2)
    x, u = torch.randn(6, generator=gen, dtype=F64), torch.randn(4, generator=gen, dtype=F64)
    fgsm = DirectionalAttack(loss="linear")(phi, x, u, 0.3)
    pgd = DirectionalAttack(method="pgd", loss="linear", steps=4, step_frac=0.25)(phi, x, u, 0.3)
    torch.testing.assert_close(pgd, fgsm)


def test_parameters_untouched_and_training_mode_switched():
    phi = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    x, u = torch.randn(3, dtype=F64), torch.randn(2, dtype=F64)
    with pytest.warns(UserWarning, match="eval"):
        directional_attack(phi, x, u, 0.1)
    assert not phi.training
    assert all(p.grad is None for p in phi.parameters())


def test_active_outputs():
    phi, a, gen = _linear()
    x, u = torch.randn(6, generator=gen, dtype=F64), torch.randn(2, generator=gen, dtype=F64)
    active = torch.tensor([0, 2])
    d = directional_attack(phi, x, u, 0.5, loss="linear", active=active)
    torch.testing.assert_close(d, 0.5 * torch.sign(a[active].T @ u), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius": 0.0}, "radius"),
        ({"radius": float("nan")}, "radius"),
        ({"direction": torch.zeros(3, dtype=F64)}, "direction has 3"),
        ({"direction": torch.tensor([float("nan")] * 4, dtype=F64)}, "direction"),
        ({"method": "cw"}, "method"),
        ({"loss": "hinge"}, "loss"),
        ({"steps": 0}, "steps"),
        ({"x": torch.zeros(2, 6, dtype=F64)}, "x must be"),
    ],
)
def test_bad_inputs(kwargs, match):
    phi, _, _ = _linear()
    args = {
        "phi": phi,
        "x": torch.zeros(6, dtype=F64),
        "direction": torch.ones(4, dtype=F64),
        "radius": 0.1,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        directional_attack(**args)


def test_nonfinite_phi_output_is_reported():
    class Bad(nn.Module):
        def forward(self, x):
            return x / 0.0 * 0.0

    with pytest.raises(ValueError, match="non-finite"):
        directional_attack(Bad().eval(), torch.zeros(2), torch.ones(2), 0.1)
