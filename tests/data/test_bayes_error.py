"""Tests of the kernel Bayes-error estimate, BEO perturbation, baselines and mixing helper
(spec ``bayes_error_unlearnable.md`` §7)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from optforge.data.bayes_error import (
    BayesErrorPerturbation,
    bayes_error_estimate,
    error_minimizing_noise,
    kernel_posterior,
    median_nn_distance,
    mix_protected,
    project_perturbation,
    random_noise,
)


def _data(n=30, d=4, c=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, d, generator=g, dtype=dtype) + 0.8 * y[:, None].to(dtype)
    return x, y


def _slow_ber(z, y, c, sigma, kernel="rbf", normalize="maxabs"):
    z = np.asarray(z, dtype=np.float64)
    if normalize == "maxabs":
        z = z / np.abs(z).max()
    n = len(z)
    per = np.zeros(n)
    for i in range(n):
        w = np.zeros(n)
        for j in range(n):
            if i == j:
                continue
            if kernel == "rbf":
                w[j] = math.exp(-np.sum((z[i] - z[j]) ** 2) / (2 * sigma**2))
            else:
                w[j] = 1 / (1 + math.exp(-np.dot(z[i], z[j])))
        if kernel == "rbf":  # documented stabilisation: Z_i = sum_j w_ij + 1e-8 max_j w_ij
            w = w / w.max()
        post = np.array([w[np.asarray(y) == k].sum() for k in range(c)]) / (w.sum() + 1e-8)
        per[i] = 1 - post.max()
    return per


# ----------------------------------------------------------------------------- estimator


@pytest.mark.parametrize("kernel", ["rbf", "sigmoid"])
@pytest.mark.parametrize("normalize", ["maxabs", "none"])
@pytest.mark.parametrize("chunk", [1, 7, 512])
def test_estimate_matches_slow_reference(kernel, normalize, chunk):
    x, y = _data()
    sigma = 0.3 if normalize == "maxabs" else 1.5
    ref = _slow_ber(x.numpy(), y.numpy(), 3, sigma, kernel, normalize)
    got = bayes_error_estimate(
        x, y, 3, sigma, kernel=kernel, normalize=normalize, chunk_size=chunk, reduction="none"
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-10)
    mean = bayes_error_estimate(x, y, 3, sigma, kernel=kernel, normalize=normalize)
    assert float(mean) == pytest.approx(ref.mean(), abs=1e-10)


def test_posterior_rows_sum_to_one():
    x, y = _data()
    post = kernel_posterior(x, y, 3, 0.5)
    assert post.shape == (30, 3)
    torch.testing.assert_close(post.sum(1), torch.ones(30, dtype=torch.float64), atol=1e-6, rtol=0)


def _margin_ok(z, y, sigma):
    post = kernel_posterior(z, y, 3, sigma, normalize="none")
    top2 = post.topk(2, dim=1).values
    return bool((top2[:, 0] - top2[:, 1] > 1e-3).all())


@pytest.mark.parametrize("chunk", [4, 512])
def test_gradcheck_float64(chunk):
    x, y = _data(n=12, d=3)
    assert _margin_ok(x, y, 1.0)
    z = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: bayes_error_estimate(t, y, 3, 1.0, normalize="none", chunk_size=chunk), (z,)
    )
    # max-abs normalisation path is differentiable too
    assert torch.autograd.gradcheck(lambda t: bayes_error_estimate(t, y, 3, 0.3), (z,))


def test_gradient_matches_closed_form_pairwise():
    x, y = _data(n=20, d=3)
    sigma = 1.0
    z = x.clone().requires_grad_(True)
    bayes_error_estimate(z, y, 3, sigma, normalize="none").backward()
    # spec §3.2 closed form (gradient of the mean)
    zn = x.numpy()
    n = len(zn)
    grad = np.zeros_like(zn)
    w = np.exp(-((zn[:, None] - zn[None]) ** 2).sum(-1) / (2 * sigma**2))
    np.fill_diagonal(w, 0)
    w = w / w.max(1, keepdims=True)  # the stabilised weights (the shift cancels in the ratio)
    onehot = np.eye(3)[y.numpy()]
    zsum = w.sum(1) + 1e-8
    chat = (w @ onehot).argmax(1)
    for i in range(n):
        ind = (y.numpy() == chat[i]).astype(float)
        ni = (w[i] * ind).sum()
        a = (ind * zsum[i] - ni) / zsum[i] ** 2
        contrib = (a * w[i])[:, None] * (zn[i] - zn) / sigma**2
        grad[i] += contrib.sum(0) / n
        grad -= contrib / n
    np.testing.assert_allclose(z.grad.numpy(), grad, atol=1e-9)


def test_limits_small_and_large_sigma():
    x, y = _data(n=40, d=5, c=3, seed=3)
    # sigma -> 0: the posterior is one-hot on the nearest other point's class, so the estimate
    # -> 0 and its plug-in classifier is the leave-one-out 1-NN rule (spec §7.3 says the
    # estimate tends to the 1-NN error; it does not: 1 - max_c of a one-hot vector is 0).
    d = torch.cdist(x, x)
    d.fill_diagonal_(math.inf)
    post = kernel_posterior(x, y, 3, 0.02, normalize="none")
    assert torch.equal(post.argmax(1), y[d.argmin(1)])
    assert float(1 - post.max(1).values.min()) < 1e-6
    assert float(bayes_error_estimate(x, y, 3, 0.02, normalize="none")) < 1e-6
    assert float((y[d.argmin(1)] != y).double().mean()) > 0.1  # the 1-NN error is not 0
    # sigma -> inf: 1 - max_c (N_c - 1[y_i = c]) / (N - 1)
    counts = torch.bincount(y, minlength=3).double()
    share = (counts[None, :] - nn.functional.one_hot(y, 3)) / (len(y) - 1)
    expected = float((1 - share.max(1).values).mean())
    big = bayes_error_estimate(x, y, 3, 1e4, normalize="none")
    assert float(big) == pytest.approx(expected, abs=1e-6)


def test_invariances():
    x, y = _data(n=30)
    base = float(bayes_error_estimate(x, y, 3, 0.3))
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    assert float(bayes_error_estimate(x[perm], y[perm], 3, 0.3)) == pytest.approx(base, abs=1e-12)
    relabel = torch.tensor([2, 0, 1])[y]
    assert float(bayes_error_estimate(x, relabel, 3, 0.3)) == pytest.approx(base, abs=1e-12)
    assert float(bayes_error_estimate(7.5 * x, y, 3, 0.3)) == pytest.approx(base, abs=1e-12)
    # without normalisation the scale matters (the invariance above is not vacuous)
    a = float(bayes_error_estimate(x, y, 3, 0.5, normalize="none"))
    b = float(bayes_error_estimate(7.5 * x, y, 3, 0.5, normalize="none"))
    assert abs(a - b) > 1e-3


def test_separated_clusters_zero_error_and_gradient():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = (
        0.05 * torch.randn(60, 2, generator=g, dtype=torch.float64)
        + 10.0 * nn.functional.one_hot(y, 3)[:, :2].double()
    )
    z = x.clone().requires_grad_(True)
    ber = bayes_error_estimate(z, y, 3, 0.5, normalize="none")
    ber.backward()
    assert float(ber.detach()) < 1e-8
    assert float(z.grad.abs().max()) < 1e-8


def test_median_nn_sigma_rule():
    x, y = _data(n=25)
    z = x / x.abs().max()
    s = median_nn_distance(z)
    d = torch.cdist(z, z)
    d.fill_diagonal_(math.inf)
    assert s == pytest.approx(float(d.min(1).values.median()), rel=1e-12)
    a = bayes_error_estimate(x, y, 3, "median_nn", sigma_scale=0.5)
    b = bayes_error_estimate(x, y, 3, 0.5 * s)
    assert float(a) == pytest.approx(float(b), abs=1e-12)


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


# ----------------------------------------------------------------------------- perturbation


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_keeps_budget_and_box(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 6, generator=g)
    delta = 3 * torch.randn(50, 6, generator=g)
    p = project_perturbation(delta, x, 0.2, norm)
    size = p.abs().amax(1) if norm == "linf" else p.norm(dim=1)
    assert float(size.max()) <= 0.2 + 1e-6
    assert float((x + p).min()) >= 0 and float((x + p).max()) <= 1
    if norm == "linf":  # exact projection: idempotent and = clip of the box-and-ball interval
        torch.testing.assert_close(project_perturbation(p, x, 0.2, norm), p)
        lo = torch.maximum(-x, torch.full_like(x, -0.2))
        hi = torch.minimum(1 - x, torch.full_like(x, 0.2))
        torch.testing.assert_close(p, torch.minimum(torch.maximum(delta, lo), hi))


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


def test_random_noise_in_budget_and_deterministic():
    x, _ = _digits_subset(300)
    gen = torch.Generator().manual_seed(0)
    r = random_noise(x, 0.2, generator=gen)
    assert float(r.abs().max()) <= 0.2 + 1e-6 and float((x + r).max()) <= 1
    r2 = random_noise(x, 0.2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r, r2)
    l2 = random_noise(x, 0.5, norm="l2", generator=gen)
    assert float(l2.norm(dim=1).max()) <= 0.5 + 1e-6


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


# ----------------------------------------------------------------------------- baselines, mixing


def _digits_subset(n):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.data[:n].astype(np.float32) / 16)
    return x, torch.from_numpy(d.target[:n].astype(np.int64))


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


# ----------------------------------------------------------------------------- bad inputs


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
