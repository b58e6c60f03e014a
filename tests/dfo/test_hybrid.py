"""SurrogateProblem penalty reformulation and the hybrid's bookkeeping."""

import math

import pytest
import torch
from torch import nn

from optforge.dfo import (
    HybridConfig,
    SurrogateProblem,
    attacks_only,
    cdsm,
    hybrid_attack_cdsm,
    random_line_search,
)

F64 = torch.float64


def _problem(**kwargs):
    torch.manual_seed(0)
    phi = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double().eval()
    target = torch.tensor([0.5, -0.3, 0.2], dtype=F64)
    return SurrogateProblem(phi, lambda y: -((y - target) ** 2).sum(), **kwargs)


def test_penalty_reformulation_dimensions_value_and_direction():
    c_x = lambda x: x[:2] - 0.5  # noqa: E731
    c_y = lambda y: y[:1]  # noqa: E731
    p = _problem(c_x=c_x, c_y=c_y, penalty_scale=3.0)
    x = torch.tensor([1.0, 0.0, 0.2, 0.0, 0.0, 0.0], dtype=F64)
    out = p.attack_model()(x)
    assert out.numel() == 3 + 2 + 1
    y, z = p.outputs(x)
    torch.testing.assert_close(z, 3.0 * torch.relu(torch.cat([c_x(x), c_y(y)])))
    assert p.value(x) == pytest.approx(float((p.f(y) - (z**2).sum()).detach()))
    u = p.direction(x)
    torch.testing.assert_close(u[3:], -2.0 * z)
    torch.testing.assert_close(u[:3], -2.0 * (y - torch.tensor([0.5, -0.3, 0.2], dtype=F64)))
    xf = torch.full((6,), -5.0, dtype=F64)  # feasible for c_x; check value = f when z = 0
    if float(p.outputs(xf)[1].max()) == 0.0:
        assert p.value(xf) == pytest.approx(p.objective(xf))
        assert p.violation(xf) == 0.0


def test_inactive_outputs_and_extreme_barrier():
    p = _problem(inactive_outputs=[1], c_x=lambda x: x[:1] - 10.0)
    x = torch.zeros(6, dtype=F64)
    assert p.attack_model()(x).numel() == 2 + 1
    assert p.direction(x).numel() == 3
    eb = _problem(c_x=lambda x: x[:1] - 0.1, constraint_mode="extreme_barrier")
    assert eb.value(torch.ones(6, dtype=F64)) == -math.inf
    assert eb.attack_model()(x).numel() == 3
    res = hybrid_attack_cdsm(eb, x, budget=150, generator=0)
    assert res.x_best[0] <= 0.1 and math.isfinite(res.f_best)


def test_hybrid_bookkeeping():
    cfg = HybridConfig(r0=0.5, r_min=1e-3, r_max=2.0, r_atk_min=1e-3, r_atk_max=1.0, tau=1e-2)
    p = _problem()
    x0 = torch.zeros(6, dtype=F64)
    res = hybrid_attack_cdsm(p, x0, cfg, budget=400, generator=0)
    assert res.n_evals <= 400
    f_prev, n_prev = p.value(x0), 1
    statuses = set()
    for t in res.trace:
        assert cfg.r_atk_min <= t["r_atk"] <= cfg.r_atk_max
        assert cfg.r_min <= t["r_dsm"] <= cfg.r_max
        skipped = t["status"] == "attack+skipped"
        assert skipped == (t["atk_gain"] / (abs(f_prev) + 1e-10) >= cfg.tau)
        if skipped:
            assert t["n_evals"] - n_prev <= 1  # only the attack point was evaluated
        assert t["f"] >= f_prev  # never accepts a worse point
        if t["status"].endswith(("covering", "search", "poll")):
            assert t["f"] > f_prev or t["status"].startswith("attack+")
        statuses.add(t["status"].split("+")[0])
        f_prev, n_prev = t["f"], t["n_evals"]
    assert {"attack", "failure"} <= statuses
    assert res.f_best == max(res.values)


def test_first_hybrid_step_is_the_attack_and_ascends():
    p = _problem()
    x0 = torch.zeros(6, dtype=F64)
    hyb = hybrid_attack_cdsm(p, x0, HybridConfig(r0=0.05), budget=40, generator=0)
    u = p.direction(x0)
    expected = 0.05 * torch.sign(torch.func.jacrev(p.phi)(x0).T @ (u - u.mean()))
    assert hyb.values[1] > hyb.values[0]  # the first evaluation after x0 is the FGSM step
    assert hyb.trace[0]["status"].startswith("attack+")
    assert hyb.values[1] == pytest.approx(p.value(x0 + expected))


def test_hybrid_determinism_and_budget_respected():
    p = _problem()
    x0 = torch.zeros(6, dtype=F64)
    a = hybrid_attack_cdsm(p, x0, budget=120, generator=5)
    b = hybrid_attack_cdsm(p, x0, budget=120, generator=5)
    c = hybrid_attack_cdsm(p, x0, budget=120, generator=6)
    assert a.values == b.values and a.n_evals == 120 == len(a.values)
    assert a.values != c.values
    assert len({v for v in a.values}) > 1


def test_baselines_run_and_improve():
    p = _problem()
    x0 = torch.zeros(6, dtype=F64)
    f0 = p.value(x0)
    assert attacks_only(p, x0, budget=60).f_best > f0
    assert random_line_search(p, x0, r0=0.5, budget=60, generator=0).f_best > f0


def test_bad_inputs():
    p = _problem()
    with pytest.raises(ValueError, match="inactive_outputs"):
        hybrid_attack_cdsm(_problem(inactive_outputs=[7]), torch.zeros(6, dtype=F64), budget=5)
    with pytest.raises(ValueError, match="x0 lies outside bounds"):
        hybrid_attack_cdsm(_problem(bounds=(-1.0, 1.0)), torch.full((6,), 2.0, dtype=F64))
    with pytest.raises(ValueError, match="budget"):
        hybrid_attack_cdsm(p, torch.zeros(6, dtype=F64), budget=0)
    with pytest.raises(ValueError, match="r_atk_min"):
        HybridConfig(r_atk_min=2.0, r_atk_max=1.0)
    with pytest.raises(ValueError, match="tau"):
        HybridConfig(tau=-1.0)
    with pytest.raises(ValueError, match="penalty_scale"):
        _problem(penalty_scale=0.0)
    with pytest.raises(TypeError, match="phi"):
        SurrogateProblem(lambda x: x, lambda y: y.sum())
    with pytest.warns(UserWarning, match="eval"):
        SurrogateProblem(nn.Linear(2, 2), lambda y: y.sum())


def test_nonfinite_surrogate_is_reported():
    class Nan(nn.Module):
        def forward(self, x):
            return x * float("nan")

    p = SurrogateProblem(Nan().eval(), lambda y: y.sum())
    with pytest.raises(ValueError, match="non-finite"):
        hybrid_attack_cdsm(p, torch.zeros(2), budget=10)

    class NanAway(nn.Module):  # finite at x0, NaN far away: failed, counted trials
        def forward(self, x):
            return torch.where(x.abs().max() > 0.4, x * float("nan"), -(x**2))

    q = SurrogateProblem(NanAway().eval(), lambda y: y.sum())
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = cdsm(q, torch.zeros(2, dtype=F64), budget=50, generator=0)
    assert res.n_evals == 50 and math.isfinite(res.f_best)


class _Counting(nn.Module):
    """A network that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


@pytest.mark.parametrize("mode", ["penalty", "extreme_barrier"])
def test_value_and_violation_and_direction_evaluate_phi_once(mode):
    """Issue #34: ``value_and_violation`` and ``direction`` run Φ once per call and give what
    ``value``/``violation``/``active_mask`` give (the reproduction's P3 records feasibility
    with every evaluation)."""
    phi = _Counting().eval()
    c_x = lambda x: x[:2] - 0.5  # noqa: E731
    p = SurrogateProblem(
        phi, lambda y: -(y**2).sum(), c_x=c_x, inactive_outputs=[2], constraint_mode=mode
    )
    for x in (torch.zeros(6, dtype=F64), torch.full((6,), 0.9, dtype=F64)):
        phi.calls = 0
        value, violation = p.value_and_violation(x)
        assert phi.calls == 1
        assert (value, violation) == (p.value(x), p.violation(x))
        phi.calls = 0
        u = p.direction(x)
        assert phi.calls == 1
        y, z = p.outputs(x)
        keep = p.active_mask(x)
        gy = -2.0 * y
        full = torch.cat([gy, -2.0 * z]) if mode == "penalty" else gy
        assert torch.equal(u, full[keep])


def test_recording_problem_evaluates_phi_once_per_value():
    from optforge.repro.dfo_problems import RecordingProblem

    phi = _Counting().eval()
    p = RecordingProblem(phi, lambda y: -(y**2).sum(), c_x=lambda x: x[:1] - 0.5)
    p.feasible = []
    values = [p.value(torch.full((6,), v, dtype=F64)) for v in (0.0, 0.9)]
    assert phi.calls == 2
    assert p.feasible == [True, False]
    assert values == [SurrogateProblem.value(p, torch.full((6,), v, dtype=F64)) for v in (0.0, 0.9)]
