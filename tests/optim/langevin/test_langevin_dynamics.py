"""Tests of the Langevin optimizer: noise scale, stationary laws, the sphere, checkpoints and RNG,
bad inputs and the conformance suite."""

import io
import math

import pytest
import torch

from optforge.optim import IterateAverager, Langevin, langevin_noise_std, langevin_recover
from optforge.problems import tensor_pca
from optforge.testing import ConvergenceSettings, check_optimizer


def _zero_grad_step(opt, params):
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()


def test_conformance_euclidean():
    def factory(params, lr=0.05, beta=1e9, **kw):
        return Langevin(params, lr=lr, beta=beta, seed=0, **kw)

    check_optimizer(
        factory,
        quadratic=ConvergenceSettings(steps=500, tol=1e-3, hyperparams={"lr": 0.05}),
        bad_hyperparams={
            "lr": 0.0,
            "beta": 0.0,
            "radius": -1.0,
            "sphere": "ball",
            "retraction": "qr",
        },
        nonfinite_raises=True,
        # the noise stream depends on the order of all params by design
        deterministic_hyperparams={"beta": math.inf},
    )


def test_noise_variance_matches_2h_over_beta():
    """With zero gradient one step adds N(0, 2h/β): the sample variance over 40k coordinates
    is within 5 standard errors (SE of a variance = var·sqrt(2/N))."""
    lr, beta, n = 0.03, 7.0, 40_000
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = Langevin([x], lr=lr, beta=beta, seed=1)
    _zero_grad_step(opt, [x])
    var = 2 * lr / beta
    assert langevin_noise_std(lr, beta) == pytest.approx(math.sqrt(var))
    sample = x.detach()
    assert abs(float(sample.mean())) < 5 * math.sqrt(var / n)
    assert abs(float(sample.var()) - var) < 5 * var * math.sqrt(2 / n)


def test_euclidean_quadratic_stationary_variance():
    """OU process: L = a/2 x², the Euler–Maruyama chain's stationary variance is
    (2h/β) / (1 − (1 − ha)²) = 1/(β a (1 − ha/2)) exactly; 4000 parallel chains (one parameter
    each), 400 steps from 0 (mixing ~ (1−ha)^800 ≈ 1e-35), tolerance from the SE."""
    a, lr, beta, chains = 2.0, 0.1, 3.0, 4000
    x = torch.zeros(chains, dtype=torch.float64, requires_grad=True)
    opt = Langevin([x], lr=lr, beta=beta, seed=2)
    for _ in range(400):
        x.grad = a * x.detach()
        opt.step()
    theory = 1.0 / (beta * a * (1 - lr * a / 2))
    var = float((x.detach() ** 2).mean())
    assert abs(var - theory) < 5 * theory * math.sqrt(2 / chains)
    # and it is not the continuous-time value 1/(βa) (the test can tell them apart)
    assert abs(var - 1 / (beta * a)) > 2 * theory * math.sqrt(2 / chains)


def test_pure_diffusion_on_sphere_overlap_decay():
    """Spherical Brownian motion: E<θ_t, θ_0> = exp(−(d−1) t h / β), 2000 chains (sphere='rows'),
    within 5%."""
    d, chains, lr, beta, steps = 10, 2000, 1e-3, 1.0, 100
    gen = torch.Generator().manual_seed(3)
    theta0 = torch.randn(chains, d, generator=gen, dtype=torch.float64)
    theta0 /= theta0.norm(dim=1, keepdim=True)
    theta = theta0.clone().requires_grad_(True)
    opt = Langevin([theta], lr=lr, beta=beta, sphere="rows", seed=4)
    for _ in range(steps):
        _zero_grad_step(opt, [theta])
    mean_cos = float((theta.detach() * theta0).sum(1).mean())
    expected = math.exp(-(d - 1) * steps * lr / beta)
    assert mean_cos == pytest.approx(expected, rel=0.05)


@pytest.mark.slow
def test_von_mises_fisher_stationary_mean():
    """d = 3, L = −κ<θ, μ>: the Gibbs measure is vMF with concentration βκ, whose mean resultant
    length is coth(βκ) − 1/(βκ). 4000 chains, h = 1e-3, 3000 steps, tolerance 0.02."""
    kappa, beta, lr, chains = 1.0, 3.0, 1e-3, 4000
    mu = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    theta = torch.randn(chains, 3, generator=gen, dtype=torch.float64)
    theta = (theta / theta.norm(dim=1, keepdim=True)).requires_grad_(True)
    opt = Langevin([theta], lr=lr, beta=beta, sphere="rows", seed=6)
    for _ in range(3000):
        theta.grad = (-kappa * mu).expand(chains, 3).clone()
        opt.step()
    c = beta * kappa
    expected = 1 / math.tanh(c) - 1 / c
    assert float((theta.detach() @ mu).mean()) == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("retraction", ["normalize", "expmap"])
@pytest.mark.parametrize("sphere", ["group", "tensor", "rows"])
def test_iterates_stay_on_sphere_and_noise_is_tangent(sphere, retraction):
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(4, 5, generator=gen).requires_grad_(True)
    b = torch.randn(5, generator=gen).requires_grad_(True)
    opt = Langevin([a, b], lr=0.1, beta=2.0, sphere=sphere, radius=2.0, retraction=retraction)
    for _ in range(20):
        a.grad = torch.randn(4, 5, generator=gen)
        b.grad = torch.randn(5, generator=gen)
        opt.step()
        if sphere == "group":
            norms = torch.cat([a.detach().flatten(), b.detach()]).norm().reshape(1)
        elif sphere == "tensor":
            norms = torch.stack([a.detach().norm(), b.detach().norm()])
        else:
            norms = torch.cat([a.detach().norm(dim=1), b.detach().norm().reshape(1)])
        torch.testing.assert_close(norms, torch.full_like(norms, 2.0), atol=1e-5, rtol=0)


def test_tangent_projection_of_noise_and_gradient():
    """A radial gradient and, with lr → step, radial noise do not move the point: the step only
    uses tangent components (checked by a gradient equal to θ itself, β = ∞)."""
    theta = torch.tensor([0.6, 0.8], dtype=torch.float64, requires_grad=True)
    opt = Langevin([theta], lr=0.3, beta=math.inf, sphere="group")
    theta.grad = 5.0 * theta.detach().clone()
    opt.step()
    torch.testing.assert_close(theta.detach(), torch.tensor([0.6, 0.8], dtype=torch.float64))


def _reference_riemannian_gd(theta, grad_fn, lr, steps):
    out = []
    for _ in range(steps):
        g = grad_fn(theta)
        g_t = g - (g @ theta) * theta
        theta = theta - lr * g_t
        theta = theta / theta.norm()
        out.append(theta)
    return out


def test_zero_temperature_is_projected_riemannian_gd():
    problem = tensor_pca(8, 3, 50.0, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(11)
    start = torch.randn(8, generator=gen, dtype=torch.float64)
    start /= start.norm()
    expected = _reference_riemannian_gd(start.clone(), problem.grad, 0.1, 5)
    theta = start.clone().requires_grad_(True)
    opt = Langevin([theta], lr=0.1, beta=math.inf, sphere="group")
    for ref in expected:
        theta.grad = problem.grad(theta.detach())
        opt.step()
        torch.testing.assert_close(theta.detach(), ref, atol=1e-12, rtol=0)


def test_group_mode_equals_single_concatenated_vector():
    """sphere='group' over two tensors = sphere='group' over their concatenation (same noise)."""
    gen = torch.Generator().manual_seed(12)
    a0, b0 = torch.randn(3, 2, generator=gen), torch.randn(4, generator=gen)
    ga, gb = torch.randn(3, 2, generator=gen), torch.randn(4, generator=gen)
    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    flat = torch.cat([a0.flatten(), b0]).requires_grad_(True)
    opt1 = Langevin([a, b], lr=0.1, beta=5.0, sphere="group", seed=3)
    opt2 = Langevin([flat], lr=0.1, beta=5.0, sphere="group", seed=3)
    a.grad, b.grad, flat.grad = ga, gb, torch.cat([ga.flatten(), gb])
    opt1.step()
    opt2.step()
    torch.testing.assert_close(torch.cat([a.detach().flatten(), b.detach()]), flat.detach())


def test_expmap_moves_by_the_step_length_along_a_great_circle():
    theta = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = Langevin([theta], lr=0.5, beta=math.inf, sphere="group", retraction="expmap")
    theta.grad = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)  # step = +0.5 e_2
    opt.step()
    expected = torch.tensor([math.cos(0.5), math.sin(0.5), 0.0], dtype=torch.float64)
    torch.testing.assert_close(theta.detach(), expected)


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_state_dict_resume_is_bitwise_on_sphere():
    problem = tensor_pca(10, 3, 100.0, seed=1)
    start = torch.nn.functional.normalize(torch.ones(10), dim=0)
    theta = start.clone().requires_grad_(True)
    opt = Langevin([theta], lr=0.05, beta=20.0, sphere="group", seed=9)
    avg = IterateAverager([theta], start_step=2)
    for _ in range(5):
        theta.grad = problem.grad(theta.detach())
        opt.step()
        avg.update()
    saved_opt, saved_avg = _roundtrip(opt.state_dict()), _roundtrip(avg.state_dict())
    theta2 = theta.detach().clone().requires_grad_(True)
    opt2 = Langevin([theta2], lr=0.05, beta=20.0, sphere="group", seed=123)
    opt2.load_state_dict(saved_opt)
    avg2 = IterateAverager([theta2], start_step=0)
    avg2.load_state_dict(saved_avg)
    for _ in range(5):
        for t, o, a in ((theta, opt, avg), (theta2, opt2, avg2)):
            t.grad = problem.grad(t.detach())
            o.step()
            a.update()
    assert torch.equal(theta, theta2)
    assert torch.equal(avg.average()[0], avg2.average()[0])
    assert opt2.state[theta2]["step"] == 10


def test_same_seed_same_noise_like_ddp_ranks():
    xs = [torch.zeros(7, requires_grad=True) for _ in range(2)]
    opts = [Langevin([x], lr=0.1, beta=1.0, seed=42) for x in xs]
    for _ in range(3):
        for x, o in zip(xs, opts, strict=True):
            _zero_grad_step(o, [x])
    assert torch.equal(xs[0], xs[1])
    other = torch.zeros(7, requires_grad=True)
    _zero_grad_step(Langevin([other], lr=0.1, beta=1.0, seed=43), [other])
    assert not torch.equal(other, xs[0])


def test_global_rng_untouched():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    x = torch.zeros(5, requires_grad=True)
    _zero_grad_step(Langevin([x], lr=0.1, beta=1.0, seed=1), [x])
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"beta": 0.0}, "beta"),
        ({"beta": -2.0}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"retraction": "qr"}, "retraction"),
    ],
)
def test_bad_hyperparameters(kwargs, name):
    theta = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match=name):
        Langevin([theta], **{"lr": 0.1, "beta": 1.0, "sphere": "group", **kwargs})


@pytest.mark.parametrize("sphere", ["group", "tensor", "rows"])
def test_zero_initial_vector_on_sphere_is_rejected(sphere):
    theta = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="params"):
        Langevin([theta], lr=0.1, beta=1.0, sphere=sphere)
    problem = tensor_pca(3, 3, 10.0, seed=0)
    with pytest.raises(ValueError, match="init"):
        langevin_recover(problem, steps=10, init=torch.zeros(3))


# -- issue 24: add_param_group validates first; a raising step changes nothing ---------------
@pytest.mark.parametrize(
    ("name", "value"),
    [("lr", float("nan")), ("lr", -1.0), ("beta", 0.0), ("sphere", "nope"), ("radius", 0.0)],
)
def test_add_param_group_validates_before_appending(name, value):
    x = torch.randn(4, requires_grad=True)
    y = torch.randn(4, requires_grad=True)
    opt = Langevin([x], lr=0.1, seed=0)
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": [y], name: value})
    assert len(opt.param_groups) == 1


def test_add_param_group_checks_the_sphere_norm():
    opt = Langevin([torch.randn(3, requires_grad=True)], lr=0.1, seed=0)
    with pytest.raises(ValueError, match="norm"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "sphere": "group"})
    assert len(opt.param_groups) == 1


def test_nan_gradient_in_a_later_group_changes_nothing():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = Langevin([{"params": [a]}, {"params": [b]}], lr=0.1, beta=10.0, seed=0)
    _zero_grad_step(opt, [a, b])
    before = [a.detach().clone(), b.detach().clone()]
    state_before = opt.state_dict()
    a.grad = torch.ones(3)
    b.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(ValueError, match="non-finite gradient"):
        opt.step()
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])
    assert opt.state[a]["step"] == 1 and opt.state[b]["step"] == 1
    after = opt.state_dict()
    assert torch.equal(after["generator_states"]["cpu"], state_before["generator_states"]["cpu"])


def test_seed_must_be_an_integer():
    with pytest.raises(TypeError, match="seed"):
        Langevin([torch.zeros(2, requires_grad=True)], seed="abc")
    with pytest.raises(TypeError, match="seed"):
        Langevin([torch.zeros(2, requires_grad=True)], seed=1.5)
