"""The vectorised Langevin step against a slow reference (the per-tensor implementation it
replaced): same random stream (one flat draw per group and step, in parameter order), same
values; tensor learning rates; the per-group noise scale."""

import math

import pytest
import torch

from optforge.optim import Langevin


def _reference_sphere(params, grads, noise, lr, std, radius, retraction, rows):
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32

    def as_matrix(tensors):
        if rows:
            (t,) = tensors
            return t.detach().reshape(-1, t.shape[-1] if t.dim() else 1).to(dtype)
        return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors]).unsqueeze(0)

    theta, grad = as_matrix(params), as_matrix(grads)
    u = theta / torch.linalg.vector_norm(theta, dim=-1, keepdim=True)
    step = -lr * (grad - (grad * u).sum(-1, keepdim=True) * u)
    if noise is not None:
        xi = as_matrix(noise)
        step = step + std * (xi - (xi * u).sum(-1, keepdim=True) * u)
    if retraction == "normalize":
        new = radius * u + step
        new = radius * new / torch.linalg.vector_norm(new, dim=-1, keepdim=True)
    else:
        size = torch.linalg.vector_norm(step, dim=-1, keepdim=True)
        direction = step / size.clamp_min(torch.finfo(dtype).tiny)
        angle = size / radius
        new = radius * (torch.cos(angle) * u + torch.sin(angle) * direction)
    if rows:
        params[0].copy_(new.view(params[0].shape))
        return
    for p, x in zip(params, new.reshape(-1).split([p.numel() for p in params]), strict=True):
        p.copy_(x.view(p.shape))


@torch.no_grad()
def _reference_step(groups, generator):
    """The previous implementation: a Python loop over groups, vectors and tensors."""
    for g in groups:
        params = [p for p in g["params"] if p.grad is not None]
        if not params:
            continue
        if g["sphere"] is not None:
            params = list(g["params"])
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        lr, beta = g["lr"], g["beta"]
        std = 0.0 if math.isinf(beta) else math.sqrt(2 * lr / beta)
        noise = None
        if std > 0:
            dtype = (
                torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
            )
            flat = torch.randn(sum(p.numel() for p in params), generator=generator, dtype=dtype)
            noise = [
                x.view(p.shape)
                for x, p in zip(flat.split([p.numel() for p in params]), params, strict=True)
            ]
        if g["sphere"] is None:
            for i, p in enumerate(params):
                p.add_(grads[i], alpha=-lr)
                if noise is not None:
                    p.add_(noise[i], alpha=std)
            continue
        vectors = (
            [list(range(len(params)))]
            if g["sphere"] == "group"
            else [[i] for i in range(len(params))]
        )
        for vec in vectors:
            _reference_sphere(
                [params[i] for i in vec],
                [grads[i] for i in vec],
                None if noise is None else [noise[i] for i in vec],
                lr,
                std,
                g["radius"],
                g["retraction"],
                g["sphere"] == "rows",
            )


def _params(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (3,), (5, 3), (2, 7), (6,)]
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_(True) for s in shapes]


def _groups(sphere, retraction):
    return [
        {"params": slice(0, 3), "lr": 0.02, "beta": 50.0, "sphere": sphere, "radius": 1.0},
        {"params": slice(3, 5), "lr": 0.05, "beta": 20.0, "sphere": sphere, "radius": 2.0},
    ], retraction


@pytest.mark.parametrize(
    ("sphere", "retraction"),
    [
        (None, "normalize"),
        ("group", "normalize"),
        ("tensor", "normalize"),
        ("rows", "normalize"),
        ("tensor", "expmap"),
        ("rows", "expmap"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_the_per_tensor_reference_bit_for_bit(sphere, retraction, dtype):
    ps_new, ps_ref = _params(dtype), _params(dtype)
    spec, retraction = _groups(sphere, retraction)
    groups_new = [{**s, "params": ps_new[s["params"]], "retraction": retraction} for s in spec]
    groups_ref = [{**s, "params": ps_ref[s["params"]], "retraction": retraction} for s in spec]
    opt = Langevin(groups_new, seed=3)
    gen = torch.Generator().manual_seed(3)
    ggen = torch.Generator().manual_seed(9)
    for step in range(4):
        for i, (a, b) in enumerate(zip(ps_new, ps_ref, strict=True)):
            g = torch.randn(a.shape, generator=ggen, dtype=dtype)
            if sphere is not None and step == 1 and i == 1:  # no grad: zero in a spherical group
                a.grad = b.grad = None
                continue
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        _reference_step(groups_ref, gen)
        for a, b in zip(ps_new, ps_ref, strict=True):
            assert torch.equal(a.detach(), b.detach())
    assert torch.equal(opt._generators["cpu"].get_state(), gen.get_state())


@pytest.mark.parametrize("sphere", [None, "tensor"])
def test_tensor_lr_matches_float_lr_and_follows_a_scheduler(sphere):
    pa, pb = _params(), _params()
    oa = Langevin(pa, lr=0.05, beta=30.0, sphere=sphere, seed=1)
    ob = Langevin(pb, lr=torch.tensor(0.05), beta=30.0, sphere=sphere, seed=1)
    sa = torch.optim.lr_scheduler.StepLR(oa, step_size=1, gamma=0.5)
    sb = torch.optim.lr_scheduler.StepLR(ob, step_size=1, gamma=0.5)
    for _ in range(3):
        for a, b in zip(pa, pb, strict=True):
            a.grad = torch.ones_like(a)
            b.grad = torch.ones_like(b)
        oa.step(), ob.step(), sa.step(), sb.step()
    assert isinstance(ob.param_groups[0]["lr"], torch.Tensor)
    assert float(ob.param_groups[0]["lr"]) == pytest.approx(0.05 / 8)
    for a, b in zip(pa, pb, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-6)


def test_noise_std_per_group_for_logging():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = Langevin(
        [{"params": [a]}, {"params": [b], "lr": 0.08, "beta": math.inf}], lr=0.02, beta=4.0
    )
    assert opt.noise_std() == [pytest.approx(0.1), 0.0]
    opt.param_groups[0]["lr"] = torch.tensor(0.5)
    (std, _) = opt.noise_std()
    assert isinstance(std, torch.Tensor) and float(std) == pytest.approx(0.5)


def test_check_finite_off_skips_the_check_and_on_restores_the_generator():
    x = torch.ones(4, requires_grad=True)
    opt = Langevin([x], lr=0.1, beta=1.0, seed=0, check_finite=False)
    x.grad = torch.tensor([1.0, float("nan"), 0.0, 0.0])
    opt.step()  # no check: NaN reaches the parameter, as in torch.optim
    assert torch.isnan(x.detach()).any()
    y = torch.ones(4, requires_grad=True)
    opt = Langevin([y], lr=0.1, beta=1.0, seed=0)
    y.grad = torch.zeros(4)
    opt.step()
    before = opt._generators["cpu"].get_state().clone()
    y.grad = torch.tensor([1.0, float("inf"), 0.0, 0.0])
    with pytest.raises(ValueError, match="non-finite"):
        opt.step()
    assert torch.equal(opt._generators["cpu"].get_state(), before)
    # a huge but finite gradient whose norm overflows is not a false alarm
    y.grad = torch.full((4,), 3e38)
    opt.step()


def test_loads_a_checkpoint_with_integer_steps():
    """Earlier versions stored ``state['step']`` as a Python int; it is now a tensor (as in
    torch.optim, so a compiled step does not recompile every step). Old checkpoints load."""
    x = torch.ones(4, requires_grad=True)
    opt = Langevin([x], lr=0.1, beta=10.0, seed=0)
    x.grad = torch.ones(4)
    opt.step()
    state = opt.state_dict()
    state["state"][0]["step"] = 1  # the old format
    y = torch.ones(4, requires_grad=True)
    fresh = Langevin([y], lr=0.1, beta=10.0, seed=5)
    fresh.load_state_dict(state)
    assert isinstance(fresh.state[y]["step"], torch.Tensor) and fresh.state[y]["step"] == 1
    y.grad = torch.ones(4)
    fresh.step()
    assert fresh.state[y]["step"] == 2
