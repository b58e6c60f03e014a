"""Random noise, error-minimising noise, partial protection (bayes_error.baselines)."""

import math

import pytest
import torch
from _bayes_data import _digits_subset
from torch import nn

from optforge.data.bayes_error import error_minimizing_noise, mix_protected, random_noise


def test_random_noise_in_budget_and_deterministic():
    x, _ = _digits_subset(300)
    gen = torch.Generator().manual_seed(0)
    r = random_noise(x, 0.2, generator=gen)
    assert float(r.abs().max()) <= 0.2 + 1e-6 and float((x + r).max()) <= 1
    r2 = random_noise(x, 0.2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r, r2)
    l2 = random_noise(x, 0.5, norm="l2", generator=gen)
    assert float(l2.norm(dim=1).max()) <= 0.5 + 1e-6


def test_concavity_of_bayes_error_under_mixing():
    """Spec §6.3.4: closed-form 1-D densities, BER(ρD' + (1-ρ)D) ≥ ρBER(D') + (1-ρ)BER(D)."""
    from scipy import integrate, stats

    def joint(mu0, mu1, s):
        return lambda t: (0.5 * stats.norm.pdf(t, mu0, s), 0.5 * stats.norm.pdf(t, mu1, s))

    def ber(j):
        return 1 - integrate.quad(lambda t: max(j(t)), -30, 30, limit=200)[0]

    clean, prot = joint(-2.0, 2.0, 1.0), joint(-0.3, 0.5, 1.5)
    b_clean, b_prot = ber(clean), ber(prot)
    assert b_prot > b_clean + 0.2
    for rho in (0.25, 0.5, 0.75):

        def mix(t, rho=rho):
            a, b = clean(t), prot(t)
            return (rho * b[0] + (1 - rho) * a[0], rho * b[1] + (1 - rho) * a[1])

        assert ber(mix) >= rho * b_prot + (1 - rho) * b_clean - 1e-7


@pytest.mark.parametrize("samplewise", [True, False])
def test_error_min_noise_drives_training_error_down(samplewise):
    x, y = _digits_subset(400)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stop = 0.01 if samplewise else 0.1
    delta = error_minimizing_noise(
        model,
        opt,
        x,
        y,
        0.2,
        pgd_steps=10 if samplewise else 1,
        train_steps=10,
        stop_error=stop,
        max_rounds=30,
        samplewise=samplewise,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(delta.abs().max()) <= 0.2 + 1e-6
    assert float((x + delta).min()) >= 0 and float((x + delta).max()) <= 1
    with torch.no_grad():
        err = float((model(x + delta).argmax(1) != y).float().mean())
        clean_err = float((model(x).argmax(1) != y).float().mean())
    assert err < stop
    assert clean_err > err  # the noise, not the model, carries the fit
    if not samplewise:  # one pattern per class (before the box clip)
        inner = (x > 0.2) & (x < 0.8)
        for c in range(10):
            rows = delta[(y == c)]
            ref = rows[0]
            both = inner[y == c] & inner[y == c][0]
            assert torch.allclose(rows[both], ref.expand_as(rows)[both])


@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9])
def test_mix_fraction_and_reproducibility(rho):
    n = 2000
    clean = torch.zeros(n, 3)
    prot = torch.ones(n, 3)
    mixed, mask = mix_protected(clean, prot, rho, generator=torch.Generator().manual_seed(0))
    assert abs(float(mask.float().mean()) - rho) <= 2 / math.sqrt(n)
    torch.testing.assert_close(mixed[mask], prot[mask])
    torch.testing.assert_close(mixed[~mask], clean[~mask])
    _, mask2 = mix_protected(clean, prot, rho, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, mask2)
