"""MECOLoss and the MECO momentum step (optforge.losses.meco.loss)."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from _meco_models import LOG_SQRT_2PI, D, Quadratic, std_normal
from torch import nn

from optforge.losses.meco import (
    MECOLoss,
    NCELoss,
    fit_gaussian_noise,
    meco_momentum_sgd,
)
from optforge.testing import CHECKS, ConvergenceSettings, check_optimizer


# -- 1. gradient identity --------------------------------------------------------------------
def test_gradient_identity_matches_hand_formula():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 3, generator=g, dtype=D)
    theta = torch.randn(5, generator=g, dtype=D, requires_grad=True)

    def feats(x):
        return torch.tanh(x @ W.T)

    def energy(x):
        return feats(x) @ theta

    x = torch.randn(7, 3, generator=g, dtype=D)
    z = torch.randn(11, 3, generator=g, dtype=D)
    q = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(3, dtype=D), torch.ones(3, dtype=D)), 1
    )
    loss_fn = MECOLoss(q, gamma=0.3)
    loss_fn(energy, x, z)  # first step sets u
    z2 = torch.randn(11, 3, generator=g, dtype=D)
    log_u_prev = loss_fn.log_u.clone()
    loss = loss_fn(energy, x, z2)
    (grad,) = torch.autograd.grad(loss, theta)
    with torch.no_grad():
        w = torch.exp(energy(z2) - q.log_prob(z2))
        u = 0.7 * torch.exp(log_u_prev) + 0.3 * w.mean()
        expected = -feats(x).mean(0) + (w[:, None] * feats(z2)).sum(0) / (11 * u)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss_fn.log_u, torch.log(u))


def test_surrogate_gradient_is_derivative_of_plugin_nll_when_gamma_is_one():
    """With γ = 1 the surrogate's gradient is ∇(−mean f(x) + log ĝ): compare with central
    differences of :meth:`MECOLoss.nll_estimate` (which is exactly that objective)."""
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(6, 1, generator=g, dtype=D), torch.randn(9, 1, generator=g, dtype=D)
    loss_fn = MECOLoss(std_normal(), gamma=1.0)

    def nll(theta):
        loss_fn.reset()
        loss_fn(Quadratic(theta), x, z)
        return float(loss_fn.nll_estimate())

    model = Quadratic(0.4)
    loss_fn.reset()
    (grad,) = torch.autograd.grad(loss_fn(model, x, z), model.theta)
    h = 1e-6
    numeric = (nll(0.4 + h) - nll(0.4 - h)) / (2 * h)
    assert abs(float(grad) - numeric) < 1e-7


# -- 2. exact limit: q = the model, gamma = 1, huge batch ------------------------------------
def test_exact_limit_equals_mle_gradient():
    theta0 = 0.7
    model = Quadratic(theta0)
    q = torch.distributions.Independent(
        torch.distributions.Normal(torch.tensor([theta0], dtype=D), torch.ones(1, dtype=D)), 1
    )
    g = torch.Generator().manual_seed(2)
    x = 1.5 + torch.randn(4096, 1, generator=g, dtype=D)
    n = 200_000
    z = q.base_dist.loc + torch.randn(n, 1, generator=g, dtype=D)
    loss = MECOLoss(q, gamma=1.0)(model, x, z)
    (grad,) = torch.autograd.grad(loss, model.theta)
    # exact MLE gradient: -E_data[x - θ] + E_model[x - θ] = -(mean(x) - θ) + 0
    exact = -(x[:, 0].mean() - theta0)
    # the noise term is exactly Σ w (z-θ)/Σ w with w ≡ √(2π) constant -> mean(z - θ): SE 1/√n
    assert abs(float(grad) - float(exact)) < 4.0 / math.sqrt(n)


# -- 3. moving-average recursion --------------------------------------------------------------
@pytest.mark.parametrize("gamma", [1.0, 0.25])
def test_moving_average_recursion(gamma):
    g = torch.Generator().manual_seed(3)
    model = Quadratic(0.5)
    loss_fn = MECOLoss(std_normal(), gamma=gamma)
    ghats = []
    for _ in range(6):
        z = torch.randn(5, 1, generator=g, dtype=D)
        loss_fn(model, torch.randn(4, 1, generator=g, dtype=D), z)
        with torch.no_grad():
            ghats.append(float(torch.exp(model(z) - std_normal().log_prob(z)).mean()))
    k = len(ghats)
    explicit = (1 - gamma) ** (k - 1) * ghats[0] + sum(
        gamma * (1 - gamma) ** (k - i) * ghats[i - 1] for i in range(2, k + 1)
    )
    assert math.isclose(float(loss_fn.log_u), math.log(explicit), rel_tol=0, abs_tol=1e-12)
    assert int(loss_fn.num_steps) == k


def test_log_domain_stability_with_huge_energies():
    loss_fn = MECOLoss(std_normal(), gamma=0.1)
    g = torch.Generator().manual_seed(4)
    for shift in (1000.0, 1003.0, 998.0):
        x, z = torch.randn(8, 1, generator=g, dtype=D), torch.randn(8, 1, generator=g, dtype=D)
        loss = loss_fn(lambda t, s=shift: s - 0.5 * t[:, 0] ** 2, x, z)
        assert torch.isfinite(loss) and torch.isfinite(loss_fn.log_u)
    assert 990 < float(loss_fn.log_u) < 1010


# -- 5. unbiasedness of the inner estimate; bias of log u shrinks with gamma ---------------------
def test_inner_estimate_unbiased_and_log_bias_shrinks_with_gamma():
    """E ĝ = Z exactly (z-test at 4σ); log ĝ is biased low (Jensen) by ≈ relvar/2, and the
    moving average shrinks that bias by the factor γ/(2 − γ) (delta method)."""
    theta, n_noise, steps = 1.0, 8, 4000
    model = Quadratic(theta)
    z_true = LOG_SQRT_2PI  # log Z = log √(2π) for every θ
    relvar = (math.exp(theta**2) - 1) / n_noise  # Var(ĝ)/Z² for q = N(0, 1)
    logs = {}
    for gamma in (1.0, 0.1):
        loss_fn = MECOLoss(std_normal(), gamma=gamma, num_noise=n_noise, seed=5)
        x = torch.zeros(1, 1, dtype=D)
        vals = []
        with torch.no_grad():
            for _ in range(steps):
                loss_fn(model, x)
                vals.append(float(loss_fn.log_u))
        logs[gamma] = np.array(vals[200:])
    ghat = np.exp(logs[1.0])  # γ = 1: log u is log ĝ of each batch
    se = ghat.std() / math.sqrt(len(ghat))
    assert abs(ghat.mean() - math.exp(z_true)) < 4 * se
    bias_plugin = logs[1.0].mean() - z_true
    bias_ma = logs[0.1].mean() - z_true
    assert bias_plugin < -0.5 * relvar / 2  # predicted ≈ −relvar/2 ≈ −0.107
    assert abs(bias_ma) < 0.035  # predicted −relvar/2 · γ/(2−γ) ≈ −0.006
    assert abs(bias_ma) < abs(bias_plugin) / 3


def test_meco_momentum_converges_on_gaussian_mean():
    model = Quadratic(0.0, dtype=torch.float32)
    loss_fn = MECOLoss(std_normal(dtype=torch.float32), gamma=0.1, seed=0)
    opt = meco_momentum_sgd(model.parameters(), lr=0.05, beta=0.1)
    g = torch.Generator().manual_seed(8)
    for _ in range(300):
        opt.zero_grad()
        loss_fn(model, 1.0 + torch.randn(256, 1, generator=g)).backward()
        opt.step()
    assert abs(float(model.theta.detach()) - 1.0) < 0.1
    assert abs(float(loss_fn.nll_estimate()) - (0.5 + LOG_SQRT_2PI)) < 0.15


def test_momentum_sgd_is_the_v_recursion():
    p = torch.zeros(2, requires_grad=True)
    opt = meco_momentum_sgd([p], lr=0.1, beta=0.25)
    grads = [torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5]), torch.tensor([-1.0, 1.0])]
    v, ref = None, torch.zeros(2)
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
        v = gr.clone() if v is None else 0.75 * v + 0.25 * gr
        ref = ref - 0.1 * v
    torch.testing.assert_close(p.detach(), ref)


def test_momentum_sgd_conformance():
    check_optimizer(
        lambda params, lr=0.05, beta=0.5: meco_momentum_sgd(params, lr=lr, beta=beta),
        quadratic=ConvergenceSettings(steps=500, tol=1e-3),
        bad_hyperparams={"lr": -1.0, "beta": 1.5},
        # meco_momentum_sgd returns a plain torch.optim.SGD, whose add_param_group does not
        # validate the added group's hyper-parameters
        checks=[name for name in CHECKS if name != "add_param_group"],
    )


# -- 8. state_dict / resume ---------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["ma", "storm"])
def test_checkpoint_resume_is_bit_identical(estimator):
    def make():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
        loss_fn = MECOLoss(fit_gaussian_noise(torch.randn(50, 2)), estimator=estimator, seed=3)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        return net, loss_fn, opt

    def step(net, loss_fn, opt, i):
        x = torch.randn(16, 2, generator=torch.Generator().manual_seed(100 + i)) + 1.0
        opt.zero_grad()
        loss_fn(net, x).backward()
        opt.step()

    net, loss_fn, opt = make()
    for i in range(5):
        step(net, loss_fn, opt, i)
    ckpt = copy.deepcopy(
        {"net": net.state_dict(), "loss": loss_fn.state_dict(), "opt": opt.state_dict()}
    )
    for i in range(5, 10):
        step(net, loss_fn, opt, i)
    net2, loss2, opt2 = make()
    net2.load_state_dict(ckpt["net"])
    loss2.load_state_dict(ckpt["loss"])
    opt2.load_state_dict(ckpt["opt"])
    assert "_extra_state" in ckpt["loss"] and "log_u" in ckpt["loss"]
    for i in range(5, 10):
        step(net2, loss2, opt2, i)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(loss_fn.log_u, loss2.log_u)


def test_storm_recursion_matches_explicit_formula():
    torch.manual_seed(0)
    model = Quadratic(0.2)
    q = std_normal()
    loss_fn = MECOLoss(q, gamma=0.3, estimator="storm")
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, 1, generator=g, dtype=D)
    z1 = torch.randn(64, 1, generator=g, dtype=D)
    loss_fn(model, x, z1)
    u1 = float(torch.exp(loss_fn.log_u))
    with torch.no_grad():
        model.theta.add_(0.1)
    z2 = torch.randn(64, 1, generator=g, dtype=D)
    loss_fn(model, x, z2)

    def ghat(theta):
        return float(torch.exp(-0.5 * (z2[:, 0] - theta) ** 2 - q.log_prob(z2)).mean())

    expected = 0.7 * (u1 - ghat(0.2)) + ghat(0.3)
    assert math.isclose(float(torch.exp(loss_fn.log_u)), expected, rel_tol=1e-10)
    assert loss_fn.storm_fallbacks == 0


def test_ess_warning_when_noise_is_badly_matched():
    loss_fn = MECOLoss(std_normal(), gamma=0.1, num_noise=256, seed=0)
    with pytest.warns(RuntimeWarning, match="effective sample size"):
        loss_fn(Quadratic(6.0), torch.randn(8, 1, dtype=D))
    assert loss_fn.last_ess < 2.56


# -- 9. bad inputs ------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    model = Quadratic(0.0)
    x = torch.randn(4, 1, dtype=D)
    with pytest.raises(TypeError, match="noise must have a log_prob"):
        MECOLoss(object())
    with pytest.raises(TypeError, match="noise must have a log_prob"):
        NCELoss(object())
    with pytest.raises(ValueError, match="gamma"):
        MECOLoss(std_normal(), gamma=0.0)
    with pytest.raises(ValueError, match="gamma"):
        MECOLoss(std_normal(), gamma=1.5)
    with pytest.raises(ValueError, match="estimator"):
        MECOLoss(std_normal(), estimator="adam")
    with pytest.raises(ValueError, match="nu"):
        NCELoss(std_normal(), nu=0.0)
    with pytest.raises(ValueError, match=r"energy\(x_data\) contains 4 non-finite"):
        MECOLoss(std_normal())(lambda t: torch.where(t[:, 0] > 100, 0.0, t[:, 0] / 0.0), x)
    bad = x.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="x_data contains 1 non-finite"):
        MECOLoss(std_normal())(model, bad)
    with pytest.raises(ValueError, match="batch-size mismatch"):
        NCELoss(std_normal(), nu=1.0)(model, x, torch.randn(5, 1, dtype=D))
    with pytest.raises(ValueError, match="batch-size mismatch"):
        MECOLoss(std_normal(), num_noise=8)(model, x, torch.randn(5, 1, dtype=D))
    with pytest.raises(ValueError, match="event shape"):
        MECOLoss(std_normal())(model, x, torch.randn(4, 2, dtype=D))
    per_coord = torch.distributions.Normal(torch.zeros(1, dtype=D), torch.ones(1, dtype=D))
    with pytest.raises(ValueError, match=r"noise.log_prob must return one value per sample"):
        MECOLoss(per_coord)(model, x, torch.randn(4, 1, dtype=D))
    with pytest.raises(ValueError, match=r"energy\(x_data\) must return shape"):
        MECOLoss(std_normal())(lambda t: t.sum(), x)
    with pytest.raises(TypeError, match="storm"):
        MECOLoss(std_normal(), estimator="storm")(lambda t: -(t[:, 0] ** 2), x)
    with pytest.raises(ValueError, match="x_data must be a non-empty"):
        NCELoss(std_normal())(model, torch.zeros(0, 1, dtype=D))
    with pytest.raises(RuntimeError, match="forward"):
        MECOLoss(std_normal()).nll_estimate()


def test_unused_warning_filter_is_not_needed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MECOLoss(std_normal(), seed=0)(Quadratic(0.0), torch.randn(64, 1, dtype=D))


# -- issue 24: weights must be probabilities; a failing call leaves the loss's state ----------
@pytest.mark.parametrize("cls", [MECOLoss, NCELoss])
@pytest.mark.parametrize(
    ("name", "weights", "match"),
    [
        ("x_weights", torch.full((8,), 0.25, dtype=D), "sum to 1"),  # sums to 2: the loss changed
        ("x_weights", torch.tensor([1.5, -0.5] + [0.0] * 6, dtype=D), "non-negative"),
        ("z_weights", torch.full((8,), float("nan"), dtype=D), "finite"),
        ("z_weights", torch.full((4,), 0.25, dtype=D), "shape"),
    ],
)
def test_bad_weights_are_rejected_before_any_state_changes(cls, name, weights, match):
    loss = cls(std_normal(), seed=0)
    model = Quadratic(0.3)
    x = torch.randn(8, 1, dtype=D, generator=torch.Generator().manual_seed(0))
    loss(model, x)
    state = copy.deepcopy(loss.state_dict())
    with pytest.raises(ValueError, match=name):
        loss(model, x, **{name: weights})
    with pytest.raises(ValueError, match=match):
        loss(model, x, **{name: weights})
    after = loss.state_dict()
    assert after.keys() == state.keys()
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(after[key], value), key
    gen = after["_extra_state"]["generator"]
    assert torch.equal(gen, state["_extra_state"]["generator"])


def test_nan_energy_does_not_consume_noise_or_update_u():
    loss = MECOLoss(std_normal(), seed=0)
    x = torch.randn(8, 1, dtype=D)
    loss(Quadratic(0.3), x)
    log_u, steps = loss.log_u.clone(), int(loss.num_steps)
    gen = loss.get_extra_state()["generator"]
    with pytest.raises(ValueError, match="energy"):
        loss(lambda t: t[:, 0] * float("nan"), x)
    assert torch.equal(loss.log_u, log_u) and int(loss.num_steps) == steps
    assert torch.equal(loss.get_extra_state()["generator"], gen)


@pytest.mark.parametrize("cls", [MECOLoss, NCELoss])
def test_seed_and_data_dtype_are_checked(cls):
    with pytest.raises(TypeError, match="seed"):
        cls(std_normal(), seed="abc")
    with pytest.raises(TypeError, match="x_data"):
        cls(std_normal(), seed=0)(Quadratic(), torch.ones(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="x_data"):
        cls(std_normal(), seed=0)(Quadratic(), torch.ones(4, 1, dtype=D, device="meta"))
