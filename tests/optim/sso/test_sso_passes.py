"""SSO at (1 + m) passes (issue #29 item 3): parity with the reference inner loop, the number of
forward/backward passes and of host reads per step (contention-insensitive counts)."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optforge.optim import SSO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sso_reference import ReferenceSSO

D64 = torch.float64


def _data(n=48, seed=3, dtype=D64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=gen)
    return x, y


def _model(seed=0, dtype=D64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _run(cls, options, steps=5, dtype=D64, batch=16):
    x, y = _data(dtype=dtype)
    model = _model(dtype=dtype)
    groups = [
        {"params": list(model[0].parameters())},
        {"params": list(model[2].parameters()), "lr": options.get("lr", 1.0) * 0.5},
    ]
    opt = cls(groups, **options)
    losses = []
    for t in range(steps):
        xb, yb = x[t * 8 : t * 8 + batch], y[t * 8 : t * 8 + batch]
        losses.append(
            opt.step(
                forward=lambda xb=xb: model(xb), target_loss=lambda z, yb=yb: F.cross_entropy(z, yb)
            )
        )
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return params, torch.stack(losses), opt.state[next(model.parameters())]


@pytest.mark.parametrize(
    "options",
    [
        {"lr": 2.0, "target_lr": 1.0, "inner_steps": 4},  # Armijo, with backtracks
        {"lr": 0.5, "target_lr": 0.5, "inner_steps": 3, "expand": 1.5, "schedule": "sqrt"},
        {"lr": 1.0, "inner_steps": 3, "target_line_search": True},
        {"lr": 0.3, "target_lr": 1.0, "inner_steps": 4, "inner": "sgd"},
        {"lr": 0.3, "inner_steps": 2, "inner": "sgd", "adaptive": "adagrad_norm"},
        {"lr": 2.0, "target_lr": 1.0, "inner_steps": 3, "dtype": torch.float32},
        {"lr": 0.3, "target_lr": 1.0, "inner_steps": 3, "inner": "sgd", "dtype": torch.float32},
    ],
)
def test_parity_with_the_reference_inner_loop(options):
    options = dict(options)
    dtype = options.pop("dtype", D64)
    new = _run(SSO, options, dtype=dtype)
    ref = _run(ReferenceSSO, options, dtype=dtype)
    assert torch.equal(new[0], ref[0])  # bit-identical parameters
    assert torch.equal(new[1], ref[1])
    for key in ("step", "inner_steps", "backtracks", "forward_evals", "surrogate_increases"):
        assert new[2][key] == ref[2][key], key
    assert new[2]["kappa"] == ref[2]["kappa"]
    assert new[2]["surrogate_trace"] == ref[2]["surrogate_trace"]
    if options.get("lr") == 2.0:
        assert new[2]["backtracks"] > 0  # the searches did backtrack


def test_inner_tol_freezes_the_fixed_step_loop_like_the_reference_stops_it():
    # A zero target gradient (the model already fits): the reference leaves the loop at once,
    # the fixed-step loop takes steps of zero; parameters, steps taken and trace agree.
    model_a, model_b = _model(), _model()
    x, _ = _data()
    outs = [m(x).detach() for m in (model_a, model_b)]
    for cls, model, target in ((SSO, model_a, outs[0]), (ReferenceSSO, model_b, outs[1])):
        opt = cls(model.parameters(), lr=0.3, inner_steps=3, inner="sgd")
        opt.step(
            forward=lambda model=model: model(x),
            target_loss=lambda z, t=target: (z - t).pow(2).mean(),
        )
    assert torch.equal(
        torch.cat([p.reshape(-1) for p in model_a.parameters()]),
        torch.cat([p.reshape(-1) for p in model_b.parameters()]),
    )
    assert next(iter(opt.state.values()))["inner_steps"] == 0  # the reference's state


class _Counter:
    """Forward and backward passes of a model, and host reads of tensors (float/bool/item/
    tolist), counted by hooks and by patching ``torch.Tensor``."""

    def __init__(self, model, monkeypatch):
        self.forwards = self.backwards = self.reads = 0
        model.register_forward_hook(lambda *_: self._fwd())
        next(model.parameters()).register_hook(lambda _: self._bwd())
        for name in ("__float__", "__bool__", "item", "tolist"):
            original = getattr(torch.Tensor, name)

            def patched(t, *a, _original=original, **k):
                self.reads += 1
                return _original(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, patched)

    def _fwd(self):
        self.forwards += 1

    def _bwd(self):
        self.backwards += 1


def _count(options, monkeypatch, m):
    x, y = _data()
    model = _model()
    opt = SSO(model.parameters(), inner_steps=m, inner_tol=0.0, **options)
    counter = _Counter(model, monkeypatch)
    opt.step(forward=lambda: model(x), target_loss=lambda z: F.cross_entropy(z, y))
    monkeypatch.undo()
    return counter, opt.counters


@pytest.mark.parametrize("m", [1, 3, 6])
def test_fixed_step_loop_costs_m_passes_and_no_host_read_per_inner_step(monkeypatch, m):
    counter, c = _count({"lr": 0.1, "inner": "sgd"}, monkeypatch, m)
    assert c["inner_steps"] == m
    # m backwards; m model forwards (the first one also gives the oracle its targets)
    assert (counter.forwards, counter.backwards) == (m, m)
    assert c["forward_evals"] == m
    # reads per step independent of m: the oracle checks, the first forward's check, one read
    # after the loop (nothing inside it)
    assert counter.reads == _count({"lr": 0.1, "inner": "sgd"}, monkeypatch, 1)[0].reads


@pytest.mark.parametrize("m", [1, 3, 6])
def test_armijo_loop_reads_the_host_once_per_trial_point(monkeypatch, m):
    counter, c = _count({"lr": 0.05, "inner": "armijo"}, monkeypatch, m)
    trials = c["inner_steps"] + c["backtracks"]
    assert c["backtracks"] == 0 and c["inner_steps"] == m  # a small lr: every first trial accepted
    # 1 + m forwards (the accepted trial's forward serves the next backward), m backwards
    assert (counter.forwards, counter.backwards) == (1 + m, m)
    base = _count({"lr": 0.05, "inner": "armijo"}, monkeypatch, 1)[0].reads - 1
    assert counter.reads == base + trials


def _validations(monkeypatch, inner, m):
    """Argument checks run by the surrogate during one SSO step of ``m`` inner steps."""
    import optforge.optim.sso.surrogate as surrogate_module

    calls = {"device": 0, "meta": 0}
    for name, key in (("check_device", "device"), ("check_not_meta", "meta")):
        original = getattr(surrogate_module, name)

        def counted(*a, _original=original, _key=key, **k):
            calls[_key] += 1
            return _original(*a, **k)

        monkeypatch.setattr(surrogate_module, name, counted)
    x, y = _data()
    model = _model()
    opt = SSO(model.parameters(), lr=0.05, inner=inner, inner_steps=m, inner_tol=0.0)
    opt.step(forward=lambda: model(x), target_loss=lambda z: F.cross_entropy(z, y))
    monkeypatch.undo()
    assert opt.counters["inner_steps"] == m
    return calls


@pytest.mark.parametrize("inner", ["armijo", "sgd"])
def test_surrogate_is_validated_once_per_step_not_per_inner_step(monkeypatch, inner):
    # issue #34: the checks of the surrogate's argument ran on every trial point (~358k calls per
    # seed of the sso reproduction); the inner loop's forwards are checked by the optimizer
    once = _validations(monkeypatch, inner, 1)
    assert once == {"device": 1, "meta": 1}
    assert _validations(monkeypatch, inner, 8) == once


@pytest.mark.parametrize("inner", ["armijo", "sgd"])
def test_a_trial_forward_on_another_device_is_still_refused(inner):
    x, y = _data()
    model = _model()
    opt = SSO(model.parameters(), lr=0.05, inner=inner, inner_steps=3)
    calls = []

    def forward():
        calls.append(1)
        out = model(x)
        return out if len(calls) == 1 else out.to("meta")

    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="meta"):
        opt.step(forward=forward, target_loss=lambda z: F.cross_entropy(z, y))
    for p, p0 in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, p0)


def test_unchecked_surrogate_equals_the_module_bit_for_bit():
    from optforge.optim.sso import TargetSurrogateLoss

    gen = torch.Generator().manual_seed(0)
    z_t, g, z = (torch.randn(7, 3, generator=gen, dtype=D64) for _ in range(3))
    for reduction in ("mean", "sum"):
        s = TargetSurrogateLoss(z_t, g, eta=0.3, reduction=reduction, loss_t=0.7)
        assert torch.equal(s._unchecked()(z), s(z))
