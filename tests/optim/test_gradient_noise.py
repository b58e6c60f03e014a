"""Annealed gradient noise: schedule, Monte-Carlo moments, reproducibility, wrapper
transparency, ordering with clipping / GradScaler / accumulation, bad input, DDP."""

import copy
import itertools
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from optforge.optim import GradientNoise, NoisyOptimizer, add_gradient_noise_, annealed_noise_std
from optforge.testing import CHECKS, ConvergenceSettings, check_optimizer

# add_param_group goes to the torch base optimizer, which validates hyper-parameters only in
# __init__ (torch.optim.SGD accepts add_param_group({"lr": -1.0, ...})).
TORCH_BASE_CHECKS = [name for name in CHECKS if name != "add_param_group"]


def noisy_sgd(params, lr=0.1, eta=1e-4, gamma=0.55, seed=0, **kw):
    return NoisyOptimizer(torch.optim.SGD(params, lr=lr, **kw), eta=eta, gamma=gamma, seed=seed)


def noisy_adam(params, lr=0.05, eta=1e-6, gamma=0.55, seed=0, **kw):
    return NoisyOptimizer(torch.optim.Adam(params, lr=lr, **kw), eta=eta, gamma=gamma, seed=seed)


# ----------------------------------------------------------------------------- conformance
def test_noisy_sgd_passes_the_conformance_suite():
    check_optimizer(
        noisy_sgd,
        quadratic=ConvergenceSettings(steps=2000, tol=2e-2),
        rosenbrock=ConvergenceSettings(steps=20000, tol=5e-2, hyperparams={"lr": 2e-3}),
        bad_hyperparams={"lr": -1.0},
        deterministic_hyperparams={"eta": 0.0},
        strict_messages=False,  # lr is validated by torch.optim.SGD ("Invalid learning rate")
        checks=TORCH_BASE_CHECKS,
    )
    # Our own hyper-parameters name themselves.
    check_optimizer(
        noisy_sgd, checks=["bad_hyperparams"], bad_hyperparams={"eta": -0.1, "gamma": -1.0}
    )


def test_noisy_adam_passes_the_conformance_suite():
    check_optimizer(
        noisy_adam,
        quadratic=ConvergenceSettings(steps=1500, tol=1e-2),
        rosenbrock=ConvergenceSettings(steps=5000, tol=5e-2, hyperparams={"lr": 1e-2}),
        deterministic_hyperparams={"eta": 0.0},
        strict_messages=False,
        checks=TORCH_BASE_CHECKS,
    )


# ----------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("t", [0, 1, 10, 10**6])
def test_schedule_matches_the_formula(t):
    eta, gamma = 0.3, 0.55
    assert annealed_noise_std(t, eta, gamma) == pytest.approx(math.sqrt(eta / (1 + t) ** gamma))
    noise = GradientNoise([torch.zeros(1)], eta=eta, gamma=gamma)
    assert noise.std(t) == pytest.approx(math.sqrt(eta / (1 + t) ** gamma))


def test_first_step_std_is_sqrt_eta_not_eta():
    assert annealed_noise_std(0, 0.01) == pytest.approx(0.1)


def test_schedule_is_monotone_and_constant_for_zero_gamma():
    stds = [annealed_noise_std(t, 1.0, 0.55) for t in range(100)]
    assert all(a >= b for a, b in itertools.pairwise(stds))
    assert len({annealed_noise_std(t, 1.0, 0.0) for t in range(100)}) == 1


# ----------------------------------------------------------------------------- moments
def test_monte_carlo_mean_and_variance_at_t5():
    n, eta, gamma = 1_000_000, 0.3, 0.55
    p = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    p.grad = torch.zeros_like(p)
    noise = GradientNoise([p], eta=eta, gamma=gamma, seed=1, start_step=5)
    noise()
    sample = p.grad
    var = eta / 6**gamma
    # mean within 5 standard errors; variance within 1% (its relative s.e. is sqrt(2/n) = 0.14%)
    assert abs(float(sample.mean())) < 5 * math.sqrt(var / n)
    assert float(sample.var()) == pytest.approx(var, rel=0.01)


def test_noise_is_independent_across_tensors_and_steps():
    a = torch.zeros(200_000, requires_grad=True)
    b = torch.zeros(200_000, requires_grad=True)
    a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
    noise = GradientNoise([a, b], eta=1.0, gamma=0.0, seed=3)
    noise()
    first_a, first_b = a.grad.clone(), b.grad.clone()
    a.grad.zero_()
    noise()
    corr_tensors = torch.corrcoef(torch.stack([first_a, first_b]))[0, 1]
    corr_steps = torch.corrcoef(torch.stack([first_a, a.grad]))[0, 1]
    assert abs(float(corr_tensors)) < 0.01
    assert abs(float(corr_steps)) < 0.01


# ----------------------------------------------------------------------------- reproducibility
def _noise_sample(seed, steps=3):
    p = torch.zeros(1000, requires_grad=True)
    noise = GradientNoise([p], eta=0.5, seed=seed)
    out = []
    for _ in range(steps):
        p.grad = torch.zeros_like(p)
        noise()
        out.append(p.grad.clone())
    return torch.stack(out)


def test_same_seed_gives_bitwise_identical_noise_and_other_seeds_differ():
    assert torch.equal(_noise_sample(7), _noise_sample(7))
    assert not torch.equal(_noise_sample(7), _noise_sample(8))


def test_global_rng_is_untouched():
    before = torch.random.get_rng_state()
    _noise_sample(0)
    assert torch.equal(before, torch.random.get_rng_state())


def test_state_dict_round_trip_continues_identically():
    p = torch.zeros(100, requires_grad=True)
    noise = GradientNoise([p], eta=0.5, seed=11)
    for _ in range(3):
        p.grad = torch.zeros_like(p)
        noise()
    state = noise.state_dict()
    q = torch.zeros(100, requires_grad=True)
    resumed = GradientNoise([q], eta=0.5, seed=999)
    resumed.load_state_dict(state)
    p.grad, q.grad = torch.zeros_like(p), torch.zeros_like(q)
    assert noise() == resumed()
    assert torch.equal(p.grad, q.grad)
    assert resumed.step_count == 4


def test_functional_form_adds_scaled_standard_normal():
    g = [torch.zeros(3, 4), torch.zeros(5)]
    add_gradient_noise_(g, 2.0, torch.Generator().manual_seed(0))
    expected = 2.0 * torch.randn(17, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([t.flatten() for t in g]), expected)


# ----------------------------------------------------------------------------- the wrapper
def _model_and_data(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    return model, x, y


def _train(model, opt, x, y, steps=5):
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def test_zero_eta_is_bit_identical_to_the_base_optimizer():
    m1, x, y = _model_and_data()
    m2, _, _ = _model_and_data()
    _train(m1, torch.optim.SGD(m1.parameters(), lr=0.1, momentum=0.9), x, y)
    _train(
        m2, NoisyOptimizer(torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9), eta=0.0), x, y
    )
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_wrapper_shares_param_groups_and_state_and_works_with_schedulers():
    model, x, y = _model_and_data()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = NoisyOptimizer(base, eta=0.01)
    assert opt.param_groups is base.param_groups
    assert opt.state is base.state
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 4
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _train(model, opt, x, y, steps=1)
    scheduler.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.05)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.3})
    assert len(base.param_groups) == 2


def test_wrapper_state_dict_is_the_bases_plus_noise_and_reloads_into_a_fresh_wrapper():
    m1, x, y = _model_and_data()
    m2, _, _ = _model_and_data()
    o1 = NoisyOptimizer(torch.optim.Adam(m1.parameters(), lr=1e-2), eta=0.1, seed=5)
    _train(m1, o1, x, y, steps=3)
    state = copy.deepcopy(o1.state_dict())  # torch's state_dict aliases live state tensors
    # top level = the base's own state dict (what the DCP helpers read) + the noise extras
    assert set(state) == {"state", "param_groups", "gradient_noise"}
    assert state["gradient_noise"]["step_count"] == 3
    m2.load_state_dict(m1.state_dict())
    o2 = NoisyOptimizer(torch.optim.Adam(m2.parameters(), lr=1e-2), eta=0.1, seed=0)
    o2.load_state_dict(state)
    _train(m1, o1, x, y, steps=3)
    _train(m2, o2, x, y, steps=3)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="state_dict"):
        o2.load_state_dict({"noise": state["gradient_noise"]})


def test_wrapper_loads_the_old_nested_format_and_a_base_only_state_dict():
    m1, x, y = _model_and_data()
    o1 = NoisyOptimizer(torch.optim.Adam(m1.parameters(), lr=1e-2), eta=0.1, seed=5)
    _train(m1, o1, x, y, steps=2)
    new = copy.deepcopy(o1.state_dict())
    base_part = {k: v for k, v in new.items() if k != "gradient_noise"}
    nested = {"base": base_part, "noise": new["gradient_noise"]}  # the earlier format
    snapshot = copy.deepcopy(m1.state_dict())
    _train(m1, o1, x, y, steps=2)
    # old nested format: identical continuation
    m2, _, _ = _model_and_data()
    m2.load_state_dict(snapshot)
    o2 = NoisyOptimizer(torch.optim.Adam(m2.parameters(), lr=1e-2), eta=0.1, seed=0)
    o2.load_state_dict(copy.deepcopy(nested))
    assert o2.noise.step_count == 2 and o2.noise.seed == 5
    _train(m2, o2, x, y, steps=2)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
    # base-only (what the DCP helpers hand back): the base is restored, the noise kept
    m3, _, _ = _model_and_data()
    o3 = NoisyOptimizer(torch.optim.Adam(m3.parameters(), lr=1e-2), eta=0.1, seed=7)
    o3.load_state_dict(copy.deepcopy(base_part))
    assert o3.noise.step_count == 0 and o3.noise.seed == 7
    assert int(o3.state[next(iter(m3.parameters()))]["step"]) == 2


def test_dcp_get_optimizer_state_dict_accepts_the_wrapper():
    """torch.distributed.checkpoint's helpers read top-level 'state' / 'param_groups' (they
    raised KeyError: 'state' on the nested format)."""
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    m1, x, y = _model_and_data()
    o1 = NoisyOptimizer(torch.optim.Adam(m1.parameters(), lr=1e-2), eta=0.1, seed=5)
    _train(m1, o1, x, y, steps=2)
    osd = get_optimizer_state_dict(m1, o1)
    assert {"state", "param_groups"} <= set(osd) and len(osd["state"]) == 4
    m2, _, _ = _model_and_data()
    m2.load_state_dict(m1.state_dict())
    o2 = NoisyOptimizer(torch.optim.Adam(m2.parameters(), lr=1e-2), eta=0.1, seed=5)
    set_optimizer_state_dict(m2, o2, copy.deepcopy(osd))
    o2.noise.load_state_dict(o1.noise.state_dict())  # the helpers keep state/param_groups only
    _train(m1, o1, x, y, steps=2)
    _train(m2, o2, x, y, steps=2)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_noise_std_per_group_for_logging():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    opt = NoisyOptimizer(
        torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1), eta=0.04, seed=0
    )
    assert opt.noise_std() == [pytest.approx(0.2)] * 2
    a.grad, b.grad = torch.zeros(3), torch.zeros(2)
    opt.step()
    assert opt.noise_std() == [pytest.approx(math.sqrt(0.04 / 2**0.55))] * 2


def _expected_noise(params, std, seed):
    total = sum(p.numel() for p in params)
    flat = std * torch.randn(total, generator=torch.Generator().manual_seed(seed))
    return list(flat.split([p.numel() for p in params]))


def test_noise_is_added_after_user_clipping_via_the_pre_hook():
    p = torch.nn.Parameter(torch.zeros(1000))
    opt = torch.optim.SGD([p], lr=1.0)
    GradientNoise([p], eta=4.0, gamma=0.0, seed=2).attach(opt)
    p.grad = torch.full_like(p, 10.0)
    torch.nn.utils.clip_grad_norm_([p], 1.0)
    clipped = p.grad.clone()
    opt.step()
    (noise,) = _expected_noise([p], 2.0, 2)
    torch.testing.assert_close(-p.detach(), clipped + noise)
    assert float((-p.detach()).norm()) > 10  # the noise itself was not clipped


def test_clip_after_noise_clips_the_noisy_gradient():
    p = torch.nn.Parameter(torch.zeros(1000))
    opt = NoisyOptimizer(
        torch.optim.SGD([p], lr=1.0),
        eta=4.0,
        gamma=0.0,
        seed=2,
        max_grad_norm=1.0,
        clip="after_noise",
    )
    p.grad = torch.full_like(p, 10.0)
    opt.step()
    assert float(p.detach().norm()) == pytest.approx(1.0, rel=1e-5)
    q = torch.nn.Parameter(torch.zeros(1000))
    before = NoisyOptimizer(
        torch.optim.SGD([q], lr=1.0), eta=4.0, gamma=0.0, seed=2, max_grad_norm=1.0
    )
    q.grad = torch.full_like(q, 10.0)
    before.step()
    assert float(q.detach().norm()) > 10


def test_noise_is_added_once_per_update_with_gradient_accumulation():
    model, x, y = _model_and_data()
    opt = NoisyOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), eta=0.01, seed=0)
    opt.zero_grad()
    for chunk in range(4):
        sl = slice(8 * chunk, 8 * chunk + 8)
        (torch.nn.functional.mse_loss(model(x[sl]), y[sl]) / 4).backward()
    opt.step()
    assert opt.noise.step_count == 1


def test_grad_scaler_unscales_before_the_noise_is_added():
    p = torch.nn.Parameter(torch.zeros(500))
    opt = NoisyOptimizer(torch.optim.SGD([p], lr=1.0), eta=1.0, gamma=0.0, seed=4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale((p * torch.ones(500)).sum()).backward()  # true gradient: ones
    scaler.step(opt)
    (noise,) = _expected_noise([p], 1.0, 4)
    torch.testing.assert_close(-p.detach(), torch.ones(500) + noise)


def test_params_without_grad_are_skipped_and_sparse_grads_raise():
    a = torch.nn.Parameter(torch.zeros(4))
    b = torch.nn.Parameter(torch.zeros(4))
    a.grad = torch.zeros(4)
    GradientNoise([a, b], eta=1.0, seed=0)()
    assert b.grad is None and not torch.equal(a.grad, torch.zeros(4))
    c = torch.nn.Parameter(torch.zeros(4))
    c.grad = torch.zeros(4).to_sparse()
    with pytest.raises(NotImplementedError, match="sparse"):
        GradientNoise([c], eta=1.0, seed=0)()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"eta": -1.0}, "eta"), ({"gamma": -0.1}, "gamma"), ({"eta": float("nan")}, "eta")],
)
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GradientNoise([torch.zeros(1)], **kwargs)
    with pytest.raises(ValueError, match=name):
        NoisyOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), **kwargs)


def test_bad_wrapper_arguments():
    with pytest.raises(TypeError, match="base"):
        NoisyOptimizer([torch.zeros(1)])
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="clip"):
        NoisyOptimizer(sgd, clip="sometimes")
    with pytest.raises(ValueError, match="max_grad_norm"):
        NoisyOptimizer(sgd, max_grad_norm=-1.0)


def test_negative_schedule_raises_at_call_time():
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.zeros(2)
    noise = GradientNoise([p], schedule=lambda t: -1.0)
    with pytest.raises(ValueError, match="negative"):
        noise()


def test_custom_schedule_sets_the_variance():
    noise = GradientNoise([torch.zeros(1)], schedule=lambda t: 0.25 / (t + 1))
    assert noise.std(0) == pytest.approx(0.5)
    assert noise.std(3) == pytest.approx(0.25)


# ----------------------------------------------------------------------------- DDP
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, out):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 3)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = NoisyOptimizer(torch.optim.SGD(ddp.parameters(), lr=0.1), eta=0.5, seed=123)
        torch.manual_seed(100 + rank)  # each rank sees different data
        x, y = torch.randn(8, 5), torch.randn(8, 3)
        opt.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y).backward()  # all-reduce happens here
        opt.noise()  # the noise, after the all-reduce
        out[rank] = torch.cat([p.grad.flatten() for p in model.parameters()]).clone()
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_with_the_same_seed_add_identical_noise():
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    assert torch.equal(out[0], out[1])
    assert float(out[0].abs().sum()) > 0


def test_nonfinite_gradient_raises_when_clipping():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = NoisyOptimizer(torch.optim.SGD([p], lr=0.1), eta=0.01, seed=0, max_grad_norm=1.0)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(3))


def test_noisy_optimizer_shares_base_containers_after_load_state_dict():
    model = torch.nn.Linear(3, 1)
    opt = NoisyOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), eta=0.01, seed=0)
    opt.load_state_dict(opt.state_dict())
    assert opt.param_groups is opt.base.param_groups
    assert opt.state is opt.base.state
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    scheduler.step()
    assert opt.base.param_groups[0]["lr"] == 0.05  # the scheduler drives the base optimizer


# ----------------------------------------------------------------------------- issue 24
def test_a_raising_clipped_step_leaves_the_noise_schedule_as_it_was():
    p = torch.ones(3, requires_grad=True)
    opt = NoisyOptimizer(
        torch.optim.SGD([p], lr=0.1), eta=0.1, seed=0, max_grad_norm=1.0, clip="after_noise"
    )
    p.grad = torch.ones(3)
    opt.step()
    noise_before = opt.noise.state_dict()
    p_before = p.detach().clone()
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        opt.step()
    assert torch.equal(p.detach(), p_before)
    after = opt.noise.state_dict()
    assert after["step_count"] == noise_before["step_count"] == 1
    assert torch.equal(after["generator_states"]["cpu"], noise_before["generator_states"]["cpu"])


def test_check_finite_is_opt_in():
    p = torch.ones(3, requires_grad=True)
    opt = NoisyOptimizer(torch.optim.SGD([p], lr=0.1), eta=0.1, seed=0, check_finite=True)
    p.grad = torch.tensor([1.0, float("inf"), 0.0])
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3)) and opt.noise.step_count == 0
    check_optimizer(
        lambda params, lr=0.1, **kw: NoisyOptimizer(
            torch.optim.SGD(params, lr=lr, **kw), eta=1e-4, seed=0, check_finite=True
        ),
        checks=["raising_step"],
        nonfinite_raises=True,
    )


def test_noise_seed_must_be_an_integer():
    with pytest.raises(TypeError, match="seed"):
        GradientNoise([torch.zeros(1)], seed="abc")
    with pytest.raises(TypeError, match="seed"):
        NoisyOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), seed="abc")
