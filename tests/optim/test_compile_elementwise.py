"""torch.compile of the elementwise optimizers: NoisyOptimizer, Langevin, OptimisticSGD and
AdaGradNorm step inside one graph (``fullgraph=True``; a NoisyOptimizer adds no graph break to its
base), match eager, and take tensor learning rates that a scheduler changes without a recompile.

torch's own optimizers break the graph twice in ``step`` (``_use_grad_for_differentiable``), so
``torch.compile(torch.optim.Adam(...).step, fullgraph=True)`` fails; the comparison for the
wrapper is "no break beyond the base's own".
"""

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from optforge.optim import AdaGradNorm, Langevin, NoisyOptimizer, OptimisticSGD

FACTORIES = {
    "langevin": lambda ps, lr: Langevin(ps, lr=lr, beta=100.0, seed=0),
    "langevin_tensor_sphere": lambda ps, lr: Langevin(
        ps, lr=lr, beta=100.0, sphere="tensor", seed=0
    ),
    "langevin_rows_expmap": lambda ps, lr: Langevin(
        ps, lr=lr, beta=100.0, sphere="rows", retraction="expmap", seed=0
    ),
    "noisy_optimistic": lambda ps, lr: NoisyOptimizer(OptimisticSGD(ps, lr=lr), eta=0.01, seed=0),
    "optimistic_sgd": lambda ps, lr: OptimisticSGD(ps, lr=lr),
    "adagrad_norm": lambda ps, lr: AdaGradNorm(ps, lr=lr),
    "adagrad_norm_row": lambda ps, lr: AdaGradNorm(ps, lr=lr, granularity="row"),
}


def _pair():
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(3, 4, generator=gen).requires_grad_(True), torch.randn(5, generator=gen)]
    ps[1].requires_grad_(True)
    return ps, [p.detach().clone().requires_grad_(True) for p in ps], gen


def _run(make, *, tensor_lr, backend="eager", steps=4, fullgraph=True):
    torch._dynamo.reset()
    ps, qs, gen = _pair()
    lr = (lambda: torch.tensor(0.01)) if tensor_lr else (lambda: 0.01)
    eager, compiled = make(ps, lr()), make(qs, lr())
    counter = CompileCounter() if backend == "eager" else backend
    step = torch.compile(compiled.step, fullgraph=fullgraph, backend=counter)
    sched_e = torch.optim.lr_scheduler.ExponentialLR(eager, gamma=0.7)
    sched_c = torch.optim.lr_scheduler.ExponentialLR(compiled, gamma=0.7)
    frames = []
    for _ in range(steps):
        for p, q in zip(ps, qs, strict=True):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        eager.step()
        step()
        sched_e.step()
        sched_c.step()
        frames.append(getattr(counter, "frame_count", 0))
    for p, q in zip(ps, qs, strict=True):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-5, atol=1e-6)
    return frames


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_fullgraph_matches_eager_and_tensor_lr_does_not_recompile(name):
    frames = _run(FACTORIES[name], tensor_lr=True)
    # one graph for the first step (state initialisation), one for the steady state; the
    # scheduler's new lr values (a tensor updated in place) recompile nothing
    assert frames[1] == frames[-1] <= 2


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
@pytest.mark.parametrize("name", ["langevin", "noisy_optimistic", "optimistic_sgd"])
def test_fullgraph_with_float_lr(name):
    _run(FACTORIES[name], tensor_lr=False, steps=2)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_langevin_through_aot_autograd_draws_the_same_noise():
    """aot_eager functionalises the graph: the custom draw op keeps its order and stream."""
    _run(FACTORIES["langevin_tensor_sphere"], tensor_lr=True, backend="aot_eager", steps=3)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_noisy_adam_adds_only_the_noise_graph_to_adams_own():
    def count(make):
        torch._dynamo.reset()
        ps, _, _ = _pair()
        opt = make(ps)
        counter = CompileCounter()
        step = torch.compile(opt.step, backend=counter)
        for _ in range(3):
            for p in ps:
                p.grad = torch.ones_like(p)
            step()
        return counter.frame_count

    base = count(lambda ps: torch.optim.Adam(ps, lr=torch.tensor(0.01)))
    noisy = count(
        lambda ps: NoisyOptimizer(torch.optim.Adam(ps, lr=torch.tensor(0.01)), eta=0.01, seed=0)
    )
    # torch's base breaks the graph around its body; the noise is one graph before it (with a
    # base that does not break, e.g. OptimisticSGD above, the whole step is one graph)
    assert base >= 1 and noisy == base + 1
    # and the compiled wrapper matches eager
    _run(
        lambda ps, lr: NoisyOptimizer(torch.optim.Adam(ps, lr=lr), eta=0.01, seed=0),
        tensor_lr=True,
        fullgraph=False,
        steps=3,
    )


def test_compiled_langevin_resumes_the_stream_after_load_state_dict():
    """load_state_dict restores the generators in place: the compiled step keeps drawing from
    them (no recompile, same numbers as the uninterrupted run)."""
    torch._dynamo.reset()
    x = torch.zeros(6, requires_grad=True)
    opt = Langevin([x], lr=torch.tensor(0.1), beta=10.0, seed=0)
    counter = CompileCounter()
    step = torch.compile(opt.step, fullgraph=True, backend=counter)
    for _ in range(2):
        x.grad = torch.ones(6)
        step()
    saved = {k: v for k, v in opt.state_dict().items()}
    saved = torch.utils._pytree.tree_map(lambda t: t.clone() if torch.is_tensor(t) else t, saved)
    x_saved = x.detach().clone()
    straight = []
    for _ in range(2):
        x.grad = torch.ones(6)
        step()
        straight.append(x.detach().clone())
    opt.load_state_dict(saved)
    with torch.no_grad():
        x.copy_(x_saved)
    for expected in straight:
        x.grad = torch.ones(6)
        step()
        assert torch.equal(x.detach(), expected)
    assert counter.frame_count <= 2


def test_noise_schedule_index_survives_mixing_eager_and_compiled_calls():
    """The schedule index lives in a Python int (eager) and a tensor (compiled): interleaving
    both keeps one count, and the compiled std follows it."""
    torch._dynamo.reset()
    p = torch.nn.Parameter(torch.zeros(4))
    opt = NoisyOptimizer(OptimisticSGD([p], lr=0.1), eta=0.04, seed=0)
    step = torch.compile(opt.step, fullgraph=True, backend="eager")
    q = torch.nn.Parameter(torch.zeros(4))
    eager = NoisyOptimizer(OptimisticSGD([q], lr=0.1), eta=0.04, seed=0)
    for call in (opt.step, step, step, opt.step, step, opt.step):
        p.grad, q.grad = torch.zeros(4), torch.zeros(4)
        call()
        eager.step()
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)
    assert opt.noise.step_count == 6
    assert opt.noise_std()[0] == pytest.approx((0.04 / 7**0.55) ** 0.5)
    assert opt.state_dict()["gradient_noise"]["step_count"] == 6
