"""cDSM: poll geometry, step rules, convergence, determinism, constraints, bad inputs."""

import math

import pytest
import torch

from optforge.dfo import CDSM, CDSMConfig, minimize, poll_directions

F64 = torch.float64


@pytest.mark.parametrize("kind", ["2n", "n+1"])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_poll_sets_positively_span_with_exact_inf_norm(kind, n):
    gen = torch.Generator().manual_seed(n)
    for _ in range(5):
        dirs = poll_directions(n, 0.3, kind, gen)
        assert dirs.shape == ((2 * n if kind == "2n" else n + 1), n)
        torch.testing.assert_close(dirs.abs().amax(1), torch.full((len(dirs),), 0.3, dtype=F64))
        g = torch.randn(2000, n, generator=gen, dtype=F64)
        assert ((g @ dirs.T).amax(1) > 0).all()  # a descent direction for every gradient
        # positive spanning <=> 0 strictly inside the convex hull: the LP has no separating g
        assert torch.linalg.matrix_rank(dirs) == n


def test_householder_2n_cosine_measure_is_one_over_sqrt_n():
    n = 6
    dirs = poll_directions(n, 1.0, "2n", torch.Generator().manual_seed(0))
    unit = dirs / dirs.norm(dim=1, keepdim=True)
    g = torch.randn(20000, n, generator=torch.Generator().manual_seed(1), dtype=F64)
    g = g / g.norm(dim=1, keepdim=True)
    cm = (g @ unit.T).amax(1).min()
    assert cm >= 1 / math.sqrt(n) - 1e-12
    assert cm < 1 / math.sqrt(n) + 0.1  # the bound is attained up to sampling
    # the Householder columns are orthonormal before the ℓ∞ scaling
    h = unit[:n]
    torch.testing.assert_close(h @ h.T, torch.eye(n, dtype=F64))


def test_step_rules_as_written_on_a_flat_function():
    """Covering in B∞(x, r_c), search radius r0·√(s+1), 2n polls at r, halving on failure."""
    cfg = CDSMConfig.official(r0=0.5, r_min=0.1, r_max=4.0, covering="cube", search=True)
    opt = CDSM(torch.zeros(3, dtype=F64), cfg, budget=10_000, generator=0)
    x0 = opt.ask()
    opt.tell(x0, 1.0)
    radii = []
    while (x := opt.ask()) is not None:
        radii.append(float((x - x0).abs().max()))
        opt.tell(x, 1.0)  # never an improvement
    # per iteration: 1 covering + 1 search + 6 poll points
    per_it = 8
    assert len(radii) % per_it == 0
    expected_r = [0.5, 0.25, 0.125, 0.1]  # halved, clamped at r_min, stops after failing at r_min
    assert len(radii) // per_it == len(expected_r)
    for k, r in enumerate(expected_r):
        block = radii[k * per_it : (k + 1) * per_it]
        assert block[0] <= 0.5 + 1e-12  # covering ball radius r0
        assert block[1] == pytest.approx(min(4.0, 0.5 * math.sqrt(k + 1)))
        assert block[2:] == pytest.approx([r] * 6)
    assert opt.stop_reason == "r_min"
    assert opt.n_evals == 1 + len(radii)


def test_poll_success_doubles_radius_and_trace_records_it():
    # improvement everywhere except x0: first covering succeeds; disable covering and search
    cfg = CDSMConfig.official(r0=0.5, r_max=1.5, covering="none")
    res = minimize(lambda x: -float(x.abs().sum()), torch.zeros(2, dtype=F64), budget=8, config=cfg)
    polls = [t for t in res.trace if t["status"] == "poll"]
    assert [t["r_dsm"] for t in polls][:3] == [1.0, 1.5, 1.5]


def test_converges_on_smooth_quadratic_with_r_min_stop():
    x_star = torch.tensor([0.3, -1.2, 2.0, 0.7, -0.4], dtype=F64)
    scales = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=F64)

    def fn(x):
        return float((scales * (x - x_star) ** 2).sum())

    res = minimize(fn, torch.zeros(5, dtype=F64), budget=2000, generator=0)
    assert (res.x_best - x_star).norm() < 1e-3
    assert res.stop_reason == "r_min"
    assert res.n_evals <= 2000
    rs = [t["r_dsm"] for t in res.trace]
    last = max(i for i, t in enumerate(res.trace) if t["status"] != "failure")
    assert all(a >= b for a, b in zip(rs[last + 1 :], rs[last + 2 :], strict=False))


def test_converges_on_nonsmooth_l1_and_max():
    res = minimize(lambda x: float((x - 1).abs().sum()), torch.zeros(3, dtype=F64), budget=3000)
    assert res.f_best < 1e-3
    res = minimize(lambda x: float((x + 2).abs().max()), torch.zeros(2, dtype=F64), budget=3000)
    assert res.f_best < 1e-3


def test_determinism_same_seed_same_trace_different_seed_differs():
    fn = lambda x: float(((x - 0.7) ** 2).sum() + x.abs().sum())  # noqa: E731
    a = minimize(fn, torch.zeros(4, dtype=F64), budget=200, generator=3)
    b = minimize(fn, torch.zeros(4, dtype=F64), budget=200, generator=3)
    c = minimize(fn, torch.zeros(4, dtype=F64), budget=200, generator=4)
    assert a.values == b.values and a.trace == [{**t, "time": t["time"]} for t in a.trace]
    assert [t["f"] for t in a.trace] == [t["f"] for t in b.trace]
    assert a.values != c.values


def test_bounds_are_an_extreme_barrier_and_constraints_modes():
    fn = lambda x: float(((x - 2.0) ** 2).sum())  # noqa: E731
    res = minimize(fn, torch.zeros(2, dtype=F64), bounds=(-1.0, 1.0), budget=800, generator=0)
    assert (res.x_best.abs() <= 1.0).all() and res.f_best == pytest.approx(2.0, abs=1e-3)
    cons = lambda x: x - 1.0  # noqa: E731
    eb = minimize(
        fn,
        torch.zeros(2, dtype=F64),
        budget=800,
        constraints=cons,
        constraint_mode="extreme_barrier",
        generator=0,
    )
    assert (eb.x_best <= 1.0).all() and eb.f_best == pytest.approx(2.0, abs=1e-3)
    pen = minimize(
        fn,
        torch.zeros(2, dtype=F64),
        budget=1500,
        constraints=cons,
        penalty_scale=10.0,
        generator=0,
    )
    # exterior penalty (x-2)^2 + 100 (x-1)_+^2 -> x = 1 + 1/101
    torch.testing.assert_close(
        pen.x_best, torch.full((2,), 1 + 1 / 101, dtype=F64), atol=2e-3, rtol=0
    )


def test_forcing_function_mode_still_converges():
    cfg = CDSMConfig(forcing_c=1e-4)
    res = minimize(lambda x: float((x**2).sum()), torch.ones(3, dtype=F64), budget=2000, config=cfg)
    assert res.f_best < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x0": torch.tensor([2.0, 0.0]), "bounds": (-1.0, 1.0)}, "x0 lies outside bounds"),
        ({"budget": 0}, "budget"),
        ({"budget": 2.5}, "budget"),
        ({"x0": torch.zeros(2, 2)}, "x0 must be a non-empty 1-D"),
        ({"x0": torch.tensor([float("nan")])}, "x0 contains non-finite"),
        ({"bounds": (1.0, -1.0)}, "bounds"),
        ({"constraint_mode": "progressive"}, "constraint_mode"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, match):
    args = {"x0": torch.zeros(2), "budget": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        minimize(lambda x: 0.0, **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"r0": 0.0}, "r0"),
        ({"r_min": 1.0, "r_max": 0.5}, "r_min"),
        ({"poll": "3n"}, "poll"),
        ({"covering": "grid"}, "covering"),
        ({"forcing_c": -1.0}, "forcing_c"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CDSMConfig(**kwargs)


def _covering_radii(config, n, k=4000):
    opt = CDSM(torch.zeros(n, dtype=F64), config, budget=10, generator=0)
    steps = torch.stack([opt._covering_point() - opt.x for _ in range(k)])
    return steps.abs().amax(1), steps


def test_default_covering_is_the_official_volume_law():
    """ρ = r_c U^{1/n}: P(‖step‖∞ ≤ t r_c) = tⁿ, so (ρ/r_c)ⁿ is uniform on [0, 1]."""
    assert CDSMConfig().covering == "official"
    n, rc, k = 5, 0.5, 4000
    rho, steps = _covering_radii(CDSMConfig(r0=rc), n, k)
    u = (rho / rc) ** n
    se = (1 / 12 / k) ** 0.5
    assert abs(float(u.mean()) - 0.5) < 4 * se
    assert abs(float((u < 0.25).double().mean()) - 0.25) < 4 * (0.25 * 0.75 / k) ** 0.5
    # the direction is uniform on the sphere: no preferred axis, symmetric signs
    unit = steps / steps.norm(dim=1, keepdim=True)
    assert unit.mean(0).abs().max() < 4 / k**0.5
    # the cube option: every coordinate uniform on [-r_c, r_c]
    _, cube = _covering_radii(CDSMConfig(r0=rc, covering="cube"), n, k)
    assert abs(float(cube.abs().mean()) - rc / 2) < 4 * rc * (1 / 12 / (n * k)) ** 0.5


def test_official_preset_is_the_papers_cdsm():
    cfg = CDSMConfig.official(r0=2.0)
    assert (cfg.covering, cfg.covering_last, cfg.search, cfg.model_search, cfg.poll_order) == (
        "official", False, False, False, "given",
    )  # fmt: skip
    opt = CDSM(torch.zeros(3, dtype=F64), cfg, budget=100, generator=0)
    x0 = opt.ask()
    opt.tell(x0, 1.0)
    trials = [opt.ask()]
    opt.tell(trials[0], 1.0)
    for _ in range(6):
        trials.append(opt.ask())
        opt.tell(trials[-1], 1.0)
    # covering first (radius <= r_c), then the 2n = 6 poll points at r = 2
    assert float(trials[0].abs().max()) <= 2.0
    assert [float(t.abs().max()) for t in trials[1:]] == pytest.approx([2.0] * 6)


def test_model_search_and_ordered_poll_beat_the_official_cdsm_on_smooth_problems():
    scales = torch.logspace(0, 3, 6, dtype=F64)
    centre = torch.linspace(-0.8, 0.9, 6, dtype=F64)

    def fn(x):
        return float((scales * (x - centre) ** 2).sum())

    ours = minimize(fn, torch.zeros(6, dtype=F64), budget=400, generator=0)
    official = minimize(
        fn, torch.zeros(6, dtype=F64), budget=400, generator=0, config=CDSMConfig.official()
    )
    assert ours.f_best < 1e-8 < official.f_best
    hit = next(i for i, v in enumerate(ours.best_curve()) if v < 1e-8)
    assert hit < 150
