"""BEO, projected gradient ascent on the estimate (optforge.data.bayes_error.perturbation), and
the bad inputs of the whole package."""

import pytest
import torch
from _bayes_data import _data, _digits_subset
from torch import nn

from optforge.data.bayes_error import (
    BayesErrorPerturbation,
    bayes_error_estimate,
    error_minimizing_noise,
    mix_protected,
    project_perturbation,
    random_noise,
)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pga_stays_in_budget_and_raises_estimate(norm):
    x, y = _digits_subset(300)
    eps = 0.2 if norm == "linf" else 1.0
    beo = BayesErrorPerturbation(
        eps, steps=15, norm=norm, sigma="median_nn", sigma_scale=0.5, normalize="none"
    )
    delta = beo.fit(x, y)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float((x + delta).min()) >= 0 and float((x + delta).max()) <= 1
    assert all(h["max_abs_delta"] <= eps + 1e-6 for h in beo.history)
    sig = beo.sigma_
    before = float(bayes_error_estimate(x, y, 10, sig, normalize="none"))
    after = float(bayes_error_estimate(x + delta, y, 10, sig, normalize="none"))
    assert beo.history[0]["ber"] == pytest.approx(before, abs=1e-6)
    assert after > before + 0.1


def test_feature_space_gradient_matches_end_to_end_autograd():
    x, y = _data(n=24, d=5, dtype=torch.float64)
    x = (x - x.min()) / (x.max() - x.min())
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def feature_fn(t):
        return torch.tanh(t @ w)

    beo = BayesErrorPerturbation(0.05, steps=1, feature_fn=feature_fn, batch_size=5)
    delta = beo.fit(x, y)
    xr = x.clone().requires_grad_(True)
    bayes_error_estimate(feature_fn(xr), y, 3, 0.3).backward()
    expected = project_perturbation(0.005 * xr.grad.sign(), x, 0.05)
    torch.testing.assert_close(delta, expected)


def test_refresh_features_called_on_schedule():
    x, y = _data(n=20, d=4, dtype=torch.float32)
    x = (x - x.min()) / (x.max() - x.min())
    calls = []

    def refresh(xp, yy):
        calls.append(xp.clone())
        return lambda t: 2 * t

    BayesErrorPerturbation(0.1, steps=5, refresh_features=refresh, refresh_every=2).fit(x, y)
    assert len(calls) == 3  # steps 0, 2, 4
    torch.testing.assert_close(calls[0], x)
    assert not torch.equal(calls[1], x)  # retrained on the perturbed data


def test_deterministic_random_start():
    x, y = _digits_subset(100)
    a = BayesErrorPerturbation(
        0.1, steps=3, random_start=True, generator=torch.Generator().manual_seed(5)
    ).fit(x, y)
    b = BayesErrorPerturbation(
        0.1, steps=3, random_start=True, generator=torch.Generator().manual_seed(5)
    ).fit(x, y)
    torch.testing.assert_close(a, b)


def test_bad_inputs_name_the_argument():
    x, y = _digits_subset(50)
    for eps in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            BayesErrorPerturbation(eps)
        with pytest.raises(ValueError, match="eps"):
            random_noise(x, eps)
    with pytest.raises(ValueError, match="x must lie"):
        BayesErrorPerturbation(0.1, steps=1).fit(x * 2, y)
    with pytest.raises(ValueError, match="x must lie"):
        random_noise(x - 0.5, 0.1)
    with pytest.raises(ValueError, match="single-class"):
        BayesErrorPerturbation(0.1, steps=1).fit(x, torch.zeros_like(y))
    model = nn.Linear(64, 10)
    with pytest.raises(ValueError, match="single-class"):
        error_minimizing_noise(
            model, torch.optim.SGD(model.parameters(), lr=0.1), x, torch.zeros_like(y), 0.1
        )
    with pytest.raises(ValueError, match="sigma"):
        bayes_error_estimate(x, y, 10, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        BayesErrorPerturbation(0.1, sigma="auto")
    with pytest.raises(ValueError, match="labels"):
        bayes_error_estimate(x, y, 5, 0.3)
    with pytest.raises(ValueError, match="labels"):
        bayes_error_estimate(x, y[:10], 10, 0.3)
    with pytest.raises(TypeError, match="labels"):
        bayes_error_estimate(x, y.float(), 10, 0.3)
    with pytest.raises(ValueError, match="features"):
        bayes_error_estimate(torch.full_like(x, float("nan")), y, 10, 0.3)
    with pytest.raises(ValueError, match="norm"):
        BayesErrorPerturbation(0.1, norm="l1")
    with pytest.raises(ValueError, match="ratio"):
        mix_protected(x, x, 1.5)
    with pytest.raises(ValueError, match="shape"):
        project_perturbation(torch.zeros(3, 64), x, 0.1)
    with pytest.raises(ValueError, match="steps"):
        BayesErrorPerturbation(0.1, steps=0)


def test_singleton_class_warns():
    x, y = _digits_subset(40)
    y = y.clone()
    y[0] = 9
    y[y == 9] = 8
    y[0] = 9
    with pytest.warns(UserWarning, match="single example"):
        BayesErrorPerturbation(0.1, steps=1).fit(x, y)


def test_non_finite_features_during_ascent_are_reported():
    x, y = _digits_subset(40)

    def bad(t):
        return t / 0.0 * 0.0  # NaN features

    with pytest.raises((FloatingPointError, ValueError), match="non-finite"):
        BayesErrorPerturbation(0.1, steps=2, feature_fn=bad).fit(x, y)
