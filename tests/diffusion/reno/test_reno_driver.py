"""The ReNO driver: the Nesterov update, clipping, batch independence, best-of tracking, frozen
models, determinism, resume, early stop and bad inputs."""

import math

import pytest
import torch
from _reno_helpers import _identity, _linear_reward, _quadratic_reward
from torch import nn

from optforge.diffusion.reno import ReNO, best_of_n, reno


def test_two_steps_match_hand_computed_nesterov():
    z0 = torch.randn(2, 6, dtype=torch.float64)
    a = torch.randn(2, 6, dtype=torch.float64)
    lr, mu = 0.3, 0.9
    driver = ReNO(
        _identity, _linear_reward(a), n_iters=3, lr=lr, momentum=mu, grad_clip=None, reg_weight=0.0
    )
    driver.reset(z0)
    driver.step()
    driver.step()
    g = -a  # gradient of the minimised loss -a·z
    b = g.clone()
    z1 = z0 - lr * (g + mu * b)
    b = mu * b + g
    z2 = z1 - lr * (g + mu * b)
    torch.testing.assert_close(driver.z.detach(), z2)


def test_regulariser_gradient_enters_the_update():
    z0 = torch.randn(1, 10, dtype=torch.float64) * 3
    a = torch.zeros(1, 10, dtype=torch.float64)
    driver = ReNO(
        _identity,
        _linear_reward(a),
        n_iters=2,
        lr=0.1,
        momentum=0.0,
        nesterov=False,
        grad_clip=None,
        reg_weight=0.5,
    )
    driver.reset(z0)
    driver.step()
    r2 = z0.norm() ** 2
    torch.testing.assert_close(driver.z.detach(), z0 - 0.1 * 0.5 * z0 * (1 - 9 / r2))


def test_per_sample_clipping_bounds_every_step():
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(5, 8, generator=g, dtype=torch.float64)
    a = torch.randn(5, 8, generator=g, dtype=torch.float64) * torch.tensor(
        [0.01, 1, 10, 100, 0.05], dtype=torch.float64
    ).view(-1, 1)
    clip = 0.1
    driver = ReNO(
        _identity,
        _linear_reward(a),
        n_iters=6,
        lr=1.0,
        momentum=0.0,
        nesterov=False,
        grad_clip=clip,
        reg_weight=0.01,
    )
    driver.reset(z0)
    prev = z0.clone()
    for _ in range(5):
        info = driver.step()
        step = (driver.z.detach() - prev).norm(dim=1)
        assert (step <= clip + 1e-6).all()
        big = info["grad_norm"] > clip
        torch.testing.assert_close(step[big], torch.full_like(step[big], clip), atol=1e-5, rtol=0)
        prev = driver.z.detach().clone()
    assert not big.all()  # the tiny-gradient rows were not clipped


def test_global_clipping_equals_clip_grad_norm_and_b1_modes_agree():
    z0 = torch.randn(3, 7, dtype=torch.float64)
    a = torch.randn(3, 7, dtype=torch.float64) * 5
    res = reno(
        _identity,
        _linear_reward(a),
        None,
        z0,
        n_iters=2,
        lr=1.0,
        momentum=0.0,
        nesterov=False,
        clip_mode="global",
        reg_weight=0.0,
    )
    grad = (-a).clone()
    p = nn.Parameter(z0.clone())
    p.grad = grad
    nn.utils.clip_grad_norm_([p], 0.1)
    torch.testing.assert_close(res.history["noise_norm"][1], (z0 - p.grad).norm(dim=1))
    z1 = torch.randn(1, 7, dtype=torch.float64)
    target = torch.randn(1, 7, dtype=torch.float64)
    kw = dict(n_iters=10, lr=5.0)
    r1 = reno(_identity, _quadratic_reward(target), None, z1, clip_mode="global", **kw)
    r2 = reno(_identity, _quadratic_reward(target), None, z1, clip_mode="per_sample", **kw)
    torch.testing.assert_close(r1.history["reward"], r2.history["reward"], rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batch_matches_one_by_one(optimizer):
    g = torch.Generator().manual_seed(2)
    z0 = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    target = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    lr = 0.5 if optimizer == "sgd" else 0.05

    def gen(z):
        return torch.tanh(z) * 2

    kw = dict(n_iters=12, lr=lr, optimizer=optimizer)
    batch = reno(gen, _quadratic_reward(target), [1.0], z0, **kw)
    for i in range(4):
        one = reno(gen, _quadratic_reward(target[i : i + 1]), [1.0], z0[i : i + 1], **kw)
        torch.testing.assert_close(one.best_noise[0], batch.best_noise[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            one.history["reward"][:, 0], batch.history["reward"][:, i], atol=1e-5, rtol=0
        )


def test_best_of_tracking_returns_the_argmax_of_history():
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(6, 4, generator=g)
    target = torch.randn(6, 4, generator=g)

    def gen(z):
        return torch.sin(3 * z)  # non-monotone: the reward goes up and down

    res = reno(gen, _quadratic_reward(target), [1.0], z0, n_iters=30, lr=20.0, momentum=0.9)
    hist = res.history["reward"]
    torch.testing.assert_close(res.best_reward, hist.max(0).values)
    first_argmax = (hist == hist.max(0).values).float().argmax(0)
    assert torch.equal(res.best_iteration, first_argmax)
    torch.testing.assert_close(res.best_images, gen(res.best_noise))
    assert (res.best_reward >= res.initial_reward).all()
    assert not torch.equal(hist.argmax(0), torch.zeros(6, dtype=torch.long))
    one = reno(gen, _quadratic_reward(target), [1.0], z0, n_iters=1)
    assert torch.equal(one.best_noise, z0) and (one.best_iteration == 0).all()
    assert one.history["grad_norm"].isnan().all()


def test_initial_noise_is_returned_when_every_step_is_worse():
    z0 = torch.zeros(2, 3) + 0.5
    target = z0.clone()  # already optimal; lr huge makes every step worse
    res = reno(_identity, _quadratic_reward(target), None, z0, n_iters=5, lr=100.0)
    assert (res.best_iteration == 0).all()
    assert torch.equal(res.best_noise, z0)


def test_quadratic_toy_converges():
    d = 64
    g = torch.Generator().manual_seed(4)
    target = torch.randn(8, d, generator=g)
    target = target / target.norm(dim=1, keepdim=True) * math.sqrt(d - 1)
    z0 = torch.randn(8, d, generator=g)
    res = reno(_identity, _quadratic_reward(target), None, z0, n_iters=50)
    curve = res.history["reward"].mean(1)
    assert (res.best_reward > res.initial_reward).all()
    assert (curve[1:6] > curve[:5]).all()  # steady ascent while far from the optimum
    assert curve[-1] > 0.99 * curve[0]  # closes > 99% of the gap to the maximum 0


def test_weighted_rewards_and_terms():
    z0 = torch.randn(3, 4)
    t1, t2 = torch.randn(3, 4), torch.randn(3, 4)
    rewards = {"a": _quadratic_reward(t1), "b": _quadratic_reward(t2)}
    res = reno(_identity, rewards, {"a": 2.0, "b": 0.5}, z0, n_iters=4, lr=1.0)
    torch.testing.assert_close(
        res.history["reward"], 2.0 * res.history_terms["a"] + 0.5 * res.history_terms["b"]
    )
    torch.testing.assert_close(
        res.best_reward, 2.0 * res.best_terms["a"] + 0.5 * res.best_terms["b"]
    )


def test_no_gradient_reaches_generator_or_reward_parameters():
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 12)).eval()  # trainable params
    clf = nn.Linear(12, 3)
    prompts = torch.tensor([0, 1, 2, 1])

    def reward(x):
        return clf(x).log_softmax(1).gather(1, prompts[:, None]).squeeze(1)

    res = reno(gen, reward, None, torch.randn(4, 8), n_iters=10)
    assert all(p.grad is None for p in [*gen.parameters(), *clf.parameters()])
    assert (res.best_reward >= res.initial_reward).all()


def test_deterministic_and_seeded():
    gen = nn.Sequential(nn.Linear(8, 8), nn.Tanh()).eval()
    target = torch.randn(3, 8)
    z0 = torch.randn(3, 8)
    r1 = reno(gen, _quadratic_reward(target), None, z0, n_iters=10)
    r2 = reno(gen, _quadratic_reward(target), None, z0, n_iters=10)
    assert torch.equal(r1.best_noise, r2.best_noise)
    b1 = best_of_n(gen, _quadratic_reward(target), None, (3, 8), 7, seed=5)
    b2 = best_of_n(gen, _quadratic_reward(target), None, (3, 8), 7, seed=5)
    assert torch.equal(b1.best_noise, b2.best_noise)


def test_state_dict_resume_is_exact():
    gen = nn.Sequential(nn.Linear(6, 6), nn.Tanh()).eval()
    target = torch.randn(2, 6)
    z0 = torch.randn(2, 6)
    full = reno(gen, _quadratic_reward(target), None, z0, n_iters=12)
    first = ReNO(gen, _quadratic_reward(target), n_iters=12)
    first.reset(z0)
    for _ in range(5):
        first.step()
    state = first.state_dict()
    second = ReNO(gen, _quadratic_reward(target), n_iters=12)
    second.load_state_dict(state)
    while not second.done:
        second.step()
    res = second.result()
    assert torch.equal(res.best_noise, full.best_noise)
    torch.testing.assert_close(res.history["reward"], full.history["reward"], rtol=0, atol=0)


def test_callback_stops_early():
    seen = []
    res = reno(
        _identity,
        _quadratic_reward(torch.zeros(1, 3)),
        None,
        torch.randn(1, 3),
        n_iters=50,
        callback=lambda k, info: seen.append(k) or k == 4,
    )
    assert seen == [0, 1, 2, 3, 4] and res.history["reward"].shape == (5, 1)


def test_generator_that_ignores_z_is_rejected():
    const = torch.ones(2, 3)
    with pytest.raises(ValueError, match="depend on z"):
        reno(lambda z: const, _quadratic_reward(torch.zeros(2, 3)), None, torch.randn(2, 3))
    lin = nn.Linear(3, 3)  # parameters require grad, output still independent of z
    with pytest.raises(ValueError, match="depend on z"):
        reno(lambda z: lin(const), _quadratic_reward(torch.zeros(2, 3)), None, torch.randn(2, 3))


def test_reward_with_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"rewards\['reward_0'\].*shape \(2,\)"):
        reno(_identity, lambda x: x.sum(), None, torch.randn(2, 3))  # a batch mean/sum
    with pytest.raises(ValueError, match="one score per sample"):
        reno(_identity, lambda x: x, None, torch.randn(2, 3))
    with pytest.raises(ValueError, match="non-finite"):
        reno(_identity, lambda x: x.sum(1) * float("nan"), None, torch.randn(2, 3))


def test_weights_and_rewards_of_different_lengths_are_rejected():
    r = _quadratic_reward(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="weights has 1 entries but rewards has 2"):
        reno(_identity, [r, r], [1.0], torch.randn(2, 3))
    with pytest.raises(ValueError, match="weights keys"):
        reno(_identity, {"a": r}, {"b": 1.0}, torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        reno(_identity, [r], [-1.0], torch.randn(2, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_iters": 0}, "n_iters"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"reg_weight": -0.1}, "reg_weight"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"clip_mode": "rows"}, "clip_mode"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"momentum": -1.0}, "momentum"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReNO(_identity, _quadratic_reward(torch.zeros(1, 2)), **kwargs)


def test_bad_noise_and_callables():
    r = _quadratic_reward(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="z0 must be a floating-point"):
        reno(_identity, r, None, torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="zero norm"):
        reno(_identity, r, None, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="z0 must have shape"):
        reno(_identity, r, None, torch.randn(3))
    with pytest.raises(ValueError, match="z0 contains non-finite"):
        reno(_identity, r, None, torch.tensor([[1.0, float("inf"), 0.0]]))
    with pytest.raises(TypeError, match="generator must be callable"):
        reno("G", r, None, torch.randn(2, 3))
    with pytest.raises(TypeError, match="must be callable"):
        reno(_identity, [r, 3], None, torch.randn(2, 3))
    with pytest.warns(UserWarning, match="training mode"):
        ReNO(nn.Sequential(nn.Linear(3, 3)), r)
