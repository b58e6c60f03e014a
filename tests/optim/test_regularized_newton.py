"""Tests of the gradient-regularized Newton method with approximate Hessians (spec §7)."""

import itertools
import math

import numpy as np
import pytest
import torch

from optforge.optim import GradNormSmoothNewton, gns_minimize, regularized_newton_step
from optforge.optim.hessian_approx import (
    EmpiricalFisher,
    ExactHessian,
    FisherTerm,
    FixedHessian,
    GaussNewton,
    LazyHessian,
    RankOne,
    SoftmaxGaussNewton,
    SubsampledHessian,
    WeightedGaussNewtonLSE,
)
from optforge.optim.regularized_newton import _ClosureOracle, _FunctionalOracle, _Metric
from optforge.testing import ConvergenceSettings, check_optimizer

DT = torch.float64


def _spd(d, seed, shift=0.1):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=gen, dtype=DT)
    return m @ m.T / d + shift * torch.eye(d, dtype=DT)


def _lse_problem(m=40, n=20, mu=0.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = 2 * torch.rand(m, n, generator=gen, dtype=DT) - 1
    b = 2 * torch.rand(m, generator=gen, dtype=DT) - 1
    g0 = torch.func.grad(lambda x: mu * torch.logsumexp((A @ x - b) / mu, 0))(
        torch.zeros(n, dtype=DT)
    )
    A = A - g0[None, :]
    return A, b, mu, (lambda x: mu * torch.logsumexp((A @ x - b) / mu, 0))


# --- 1. step formula --------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["cholesky", "cg", "auto"])
@pytest.mark.parametrize("with_metric", [False, True])
def test_step_formula_dense(solver, with_metric):
    d = 12
    H, B = _spd(d, 0, shift=0.0), _spd(d, 1)
    g = torch.randn(d, generator=torch.Generator().manual_seed(2), dtype=DT)
    lam = 0.37
    metric = B if with_metric else None
    expected = -torch.linalg.solve(H + lam * (B if with_metric else torch.eye(d, dtype=DT)), g)
    step = regularized_newton_step(H, g, lam, metric=metric, solver=solver)
    torch.testing.assert_close(step, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", ["sherman_morrison", "cholesky", "cg"])
def test_step_formula_rank_one(solver):
    d = 9
    gen = torch.Generator().manual_seed(3)
    u, g = torch.randn(d, generator=gen, dtype=DT), torch.randn(d, generator=gen, dtype=DT)
    alpha, lam, B = torch.tensor(2.5, dtype=DT), 0.2, _spd(d, 4)
    expected = -torch.linalg.solve(alpha * torch.outer(u, u) + lam * B, g)
    step = regularized_newton_step(RankOne(u, alpha), g, lam, metric=B, solver=solver)
    torch.testing.assert_close(step, expected, rtol=1e-8, atol=1e-10)


def test_step_indefinite_raises():
    with pytest.raises(RuntimeError, match="positive definite"):
        regularized_newton_step(-torch.eye(3, dtype=DT), torch.ones(3, dtype=DT), 0.5)


def test_newton_limit_when_lambda_small():
    """With the exact Hessian and λ → 0 the step is Newton's step."""
    _A, _b, _mu, f = _lse_problem()
    x = torch.full((20,), 0.3, dtype=DT)
    H, g = torch.func.hessian(f)(x), torch.func.grad(f)(x)
    H = H + 1e-3 * torch.eye(20, dtype=DT)  # LSE's Hessian is singular along 1-directions
    newton = -torch.linalg.solve(H, g)
    torch.testing.assert_close(regularized_newton_step(H, g, 1e-12), newton, rtol=1e-8, atol=1e-9)
    far = regularized_newton_step(H, g, 1e3)
    assert torch.linalg.vector_norm(far - newton) > 0.5 * torch.linalg.vector_norm(newton)


# --- 2./3. quadratics ----------------------------------------------------------------------


def test_quadratic_exact_converges_and_acceptance_holds():
    d = 20
    Q = _spd(d, 5, shift=0.5)
    c = torch.randn(d, generator=torch.Generator().manual_seed(6), dtype=DT)

    def f(x):
        return 0.5 * x @ Q @ x - c @ x

    seen = []

    def callback(info):
        seen.append(info)
        if info["accepted"]:
            assert info["f_prev"] - info["f"] >= info["grad_norm"] ** 2 / (8 * info["lam"])

    res = gns_minimize(f, torch.zeros(d, dtype=DT), gtol=1e-10, callback=callback)
    assert res.status == "gtol" and res.nit <= 15
    assert all(i["accepted"] for i in seen)
    gammas = res.history["gamma"]
    assert gammas[1] == 2 * gammas[0] and gammas[2] == 2 * gammas[1]  # doubles after acceptance
    torch.testing.assert_close(res.x, torch.linalg.solve(Q, c), rtol=1e-8, atol=1e-9)


def test_zero_hessian_is_gradient_method():
    d = 10
    curv = torch.linspace(1.0, 10.0, d, dtype=DT)

    def f(x):
        return 0.5 * (curv * x * x).sum()

    x0 = torch.ones(d, dtype=DT)
    first = []
    res = gns_minimize(
        f, x0, hessian="zero", gtol=1e-6, maxiter=2000,
        callback=lambda i: first.append(i) if not first else None,
    )  # fmt: skip
    info = first[0]
    g0 = curv * x0
    # δ = −g/λ with λ = ‖g‖/(γ + eps): a gradient step of length γ.
    torch.testing.assert_close(info["step"], -g0 / info["lam"])
    assert math.isclose(info["lam"], float(g0.norm()) / (2.0 ** -(info["trials"] - 1) + 1e-8))
    # linear convergence, within 4x the iterations of GD with step 1/L to the same tolerance
    x, gd_iters = x0.clone(), 0
    while float((curv * x).norm()) > 1e-6:
        x, gd_iters = x - curv * x / 10.0, gd_iters + 1
    assert res.status == "gtol" and res.nit <= 4 * gd_iters
    # λ = ‖g‖/(γ + lambda_eps) ≤ ‖g‖/lambda_eps: below ‖g‖ ≈ L·lambda_eps the default guard caps
    # the regularisation; lambda_eps = 0 removes the cap.
    capped = gns_minimize(f, x0, hessian="zero", gtol=1e-10, maxiter=300)
    exact = gns_minimize(f, x0, hessian="zero", gtol=1e-10, maxiter=300, lambda_eps=0.0)
    assert capped.status == "maxiter" and exact.status == "gtol"


def test_lambda_scaling_on_cubic():
    """f = ‖x‖³/3 has a Lipschitz Hessian: accepted λ_k ≍ ‖g_k‖^{1/2} (spec §3.2, §7.5)."""

    def f(x):
        return torch.linalg.vector_norm(x) ** 3 / 3

    ratios = []

    def cb(info):
        if info["accepted"]:
            ratios.append(info["lam"] / info["grad_norm_prev"] ** 0.5)

    x0 = torch.linspace(0.5, 2.0, 8, dtype=DT)
    gns_minimize(f, x0, maxiter=40, gtol=1e-12, callback=cb)
    assert len(ratios) >= 10
    # measured band 0.029 … 3.8 (exact Newton halves ‖x‖ here, so λ may sit below the scale)
    assert min(ratios) >= 0.01 and max(ratios) <= 50


# --- 4. monotonicity, 8. reference equivalence --------------------------------------------------


def _numpy_reference(f, grad, hess, x0, B, iters, gamma0=1.0, eps=1e-8, gamma_min=1e-9, ms=40):
    """Algorithm 1 of spec §3.3 written directly in NumPy."""
    binv = np.linalg.inv(B)
    x, fx, g, gamma = x0.copy(), f(x0), grad(x0), gamma0
    xs = [x.copy()]
    for _ in range(iters):
        H = hess(x)
        for _ in range(ms):
            lam = math.sqrt(g @ binv @ g) / (gamma + eps)
            xn = x - np.linalg.solve(H + lam * B, g)
            fn, gn = f(xn), grad(xn)
            if fx - fn >= (gn @ binv @ gn) / (8 * lam):
                gamma = max(2 * gamma, gamma_min)
                break
            gamma /= 2
        x, fx, g = xn, fn, gn
        xs.append(x.copy())
    return xs


def _np_funcs(f):
    def to_np(fn):
        return lambda z: fn(torch.from_numpy(z)).numpy()

    return to_np(f), to_np(torch.func.grad(f)), to_np(torch.func.hessian(f))


def test_reference_equivalence_lse_with_metric():
    A, _b, _mu, f = _lse_problem()
    B = (A.T @ A / 40 + 1e-3 * torch.eye(20, dtype=DT)).numpy()
    x0 = torch.ones(20, dtype=DT)
    ref = _numpy_reference(*_np_funcs(f), x0.numpy(), B, 20)
    xs = []
    gns_minimize(
        f, x0, metric=torch.from_numpy(B), maxiter=20, callback=lambda i: xs.append(i["x"])
    )
    assert len(xs) == 20
    for ours, theirs in zip(xs, ref[1:], strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-8, atol=1e-8)


def test_reference_equivalence_nonlinear_equations():
    gen = torch.Generator().manual_seed(7)
    A = torch.randn(15, 10, generator=gen, dtype=DT)
    b = torch.randn(15, generator=gen, dtype=DT)

    def f(x):
        return torch.linalg.vector_norm(A @ x - b) ** 4 / 4

    x0 = torch.ones(10, dtype=DT)
    ref = _numpy_reference(*_np_funcs(f), x0.numpy(), np.eye(10), 20)
    xs = []
    gns_minimize(f, x0, maxiter=20, callback=lambda i: xs.append(i["x"]))
    for ours, theirs in zip(xs, ref[1:], strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-8, atol=1e-8)


def test_monotone_with_func_acceptance_and_grad_acceptance_converges():
    A, b, mu, f = _lse_problem(seed=1)
    wgn = WeightedGaussNewtonLSE(A, b, mu)
    res = gns_minimize(f, torch.ones(20, dtype=DT), hessian=wgn, gtol=1e-10, maxiter=500)
    fs = res.history["f"]
    assert res.status == "gtol"
    assert all(b <= a for a, b in itertools.pairwise(fs))
    res_g = gns_minimize(f, torch.ones(20, dtype=DT), hessian=wgn, acceptance="grad", gtol=1e-10)
    assert res_g.status == "gtol"


def test_cg_matrix_free_matches_cholesky():
    _A, _b, _mu, f = _lse_problem(seed=2)
    x0 = torch.ones(20, dtype=DT)
    dense = gns_minimize(f, x0, maxiter=8)
    free = gns_minimize(f, x0, hessian="exact-hvp", solver="cg", cg_tol=1e-12, maxiter=8)
    torch.testing.assert_close(free.x, dense.x, rtol=1e-7, atol=1e-9)


def test_fisher_term_sherman_morrison_matches_cholesky():
    gen = torch.Generator().manual_seed(8)
    A, b = torch.randn(30, 12, generator=gen, dtype=DT), torch.randn(30, generator=gen, dtype=DT)

    def u(x):
        return A @ x - b

    def f(x):
        return torch.linalg.vector_norm(u(x)) ** 4 / 4

    B = A.T @ A + 1e-8 * torch.eye(12, dtype=DT)
    x0 = torch.ones(12, dtype=DT)
    sm = gns_minimize(f, x0, hessian=FisherTerm(u, 4), metric=B, maxiter=15)
    ch = gns_minimize(f, x0, hessian=FisherTerm(u, 4), metric=B, maxiter=15, solver="cholesky")
    torch.testing.assert_close(sm.x, ch.x, rtol=1e-8, atol=1e-10)
    f_star = float(f(torch.linalg.lstsq(A, b).solution))
    fast = gns_minimize(f, x0, hessian=FisherTerm(u, 4), metric=B, ftol=1e-10, f_star=f_star)
    assert fast.status == "ftol" and fast.nit <= 30  # measured 14


# --- 6. Hessian approximations against their dense definitions -------------------------------


def test_exact_hessian_matches_finite_differences():
    _A, _b, _mu, f = _lse_problem(seed=3)
    x = torch.full((20,), 0.1, dtype=DT)
    H = ExactHessian()(x, _FunctionalOracle(f, x))
    grad = torch.func.grad(f)
    eps = 1e-6
    fd = torch.stack(
        [(grad(x + eps * e) - grad(x - eps * e)) / (2 * eps) for e in torch.eye(20, dtype=DT)]
    )
    assert float((H - fd).norm() / H.norm()) < 1e-6


def test_closure_oracle_hessian_matches_torch_func():
    _A, _b, _mu, f = _lse_problem(seed=4)
    w = torch.full((20,), 0.2, dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(f(w), [w], create_graph=True)
    oracle = _ClosureOracle(g, [w], DT)
    exact = torch.func.hessian(f)(w.detach())
    torch.testing.assert_close(oracle.hessian(), exact)
    v = torch.randn(20, dtype=DT)
    torch.testing.assert_close(oracle.hvp(v), exact @ v)


def test_weighted_gauss_newton_upper_bounds_lse_hessian():
    A, b, mu, f = _lse_problem(seed=5)
    x = torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=DT)
    wgn = WeightedGaussNewtonLSE(A, b, mu)(x, None)
    exact = torch.func.hessian(f)(x)
    prob = torch.softmax((A @ x - b) / mu, 0)
    torch.testing.assert_close(wgn, (A.T @ torch.diag(prob) @ A) / mu)
    assert float(torch.linalg.eigvalsh(wgn - exact).min()) >= -1e-10


@pytest.mark.parametrize("p", [2.0, 4.0])
def test_gauss_newton_exact_for_linear_residuals(p):
    gen = torch.Generator().manual_seed(9)
    A, b = torch.randn(8, 5, generator=gen, dtype=DT), torch.randn(8, generator=gen, dtype=DT)

    def u(x):
        return A @ x - b

    x = torch.randn(5, generator=gen, dtype=DT)
    gn = GaussNewton(u, p)(x, None)
    exact = torch.func.hessian(lambda z: torch.linalg.vector_norm(u(z)) ** p / p)(x)
    torch.testing.assert_close(gn, exact)


def test_gauss_newton_drops_second_order_term_for_nonlinear_residuals():
    def u(x):
        return torch.stack([1 - x[0], 10 * (x[1] - x[0] ** 2)])

    x = torch.tensor([-1.2, 1.0], dtype=DT)
    J = torch.func.jacrev(u)(x)
    torch.testing.assert_close(GaussNewton(u, 2.0)(x, None), J.T @ J)
    exact = torch.func.hessian(lambda z: 0.5 * (u(z) ** 2).sum())(x)
    r = u(x)
    torch.testing.assert_close(exact - J.T @ J, r[1] * torch.tensor([[-20.0, 0], [0, 0]], dtype=DT))


def test_fisher_term_equals_scaled_gradient_outer_product():
    gen = torch.Generator().manual_seed(10)
    A, b = torch.randn(7, 4, generator=gen, dtype=DT), torch.randn(7, generator=gen, dtype=DT)
    p = 4.0

    def u(x):
        return torch.tanh(A @ x) - b

    def f(x):
        return torch.linalg.vector_norm(u(x)) ** p / p

    x = torch.randn(4, generator=gen, dtype=DT)
    g = torch.func.grad(f)(x)
    expected = (p - 2) / torch.linalg.vector_norm(u(x)) ** p * torch.outer(g, g)
    torch.testing.assert_close(FisherTerm(u, p)(x, None).dense(), expected)


def test_softmax_gauss_newton_equals_softmax_regression_hessian():
    gen = torch.Generator().manual_seed(11)
    X, y = torch.randn(25, 4, generator=gen, dtype=DT), torch.randint(0, 3, (25,), generator=gen)

    def logits(w):
        return X @ w.view(4, 3)

    def f(w):
        return torch.nn.functional.cross_entropy(logits(w), y) + 0.05 * (w @ w)

    w = 0.3 * torch.randn(12, generator=gen, dtype=DT)
    ggn = SoftmaxGaussNewton(logits, ridge=0.1)(w, None)
    torch.testing.assert_close(ggn, torch.func.hessian(f)(w))


def test_empirical_fisher_and_subsampled_match_loops():
    gen = torch.Generator().manual_seed(12)
    X = torch.randn(30, 5, generator=gen, dtype=DT)
    y = torch.where(torch.rand(30, generator=gen, dtype=DT) < 0.5, 1.0, -1.0).to(DT)

    def per_example(w, idx=None):
        Xi, yi = (X, y) if idx is None else (X[idx], y[idx])
        return torch.nn.functional.softplus(-yi * (Xi @ w))

    w = torch.randn(5, generator=gen, dtype=DT)
    grads = [torch.func.grad(lambda z, i=i: per_example(z)[i])(w) for i in range(30)]
    expected = sum(torch.outer(q, q) for q in grads) / 30
    torch.testing.assert_close(EmpiricalFisher(per_example)(w, None), expected)
    sub = SubsampledHessian(per_example, 30, fraction=0.2, seed=3, is_psd=True)
    assert sub.index.numel() == 6 and len(set(sub.index.tolist())) == 6
    loop = sum(torch.func.hessian(lambda z, i=i: per_example(z)[i])(w) for i in sub.index) / 6
    torch.testing.assert_close(sub(w, None), loop)
    again = SubsampledHessian(per_example, 30, fraction=0.2, seed=3)
    assert torch.equal(again.index, sub.index)


def test_lazy_hessian_recomputes_every_m_calls():
    calls = []

    def base(x):
        calls.append(1)
        return torch.eye(2, dtype=DT) * len(calls)

    lazy = LazyHessian(base, every=3)
    outs = [float(lazy(torch.zeros(2, dtype=DT), None)[0, 0]) for _ in range(7)]
    assert outs == [1, 1, 1, 2, 2, 2, 3]
    state = lazy.state_dict()
    other = LazyHessian(base, every=3)
    other.load_state_dict(state)
    assert float(other(torch.zeros(2, dtype=DT), None)[0, 0]) == 3


def test_fixed_hessian_psd_flag():
    assert FixedHessian(torch.eye(3, dtype=DT)).is_psd
    assert not FixedHessian(-torch.eye(3, dtype=DT)).is_psd
    with pytest.raises(ValueError, match="symmetric"):
        FixedHessian(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=DT))


# --- 7. metric -------------------------------------------------------------------------------


def test_dual_norm_uses_metric_inverse():
    B = _spd(6, 13)
    g = torch.randn(6, dtype=DT)
    expected = float(torch.sqrt(g @ torch.linalg.inv(B) @ g))
    assert math.isclose(
        _Metric(B, 6, DT, torch.device("cpu")).dual_norm(g), expected, rel_tol=1e-12
    )


@pytest.mark.parametrize(
    "metric", [-torch.eye(3, dtype=DT), torch.tensor([[1, 2, 0], [0, 1, 0], [0, 0, 1]], dtype=DT)]
)
def test_non_spd_metric_raises(metric):
    with pytest.raises(ValueError, match="metric"):
        gns_minimize(lambda x: (x**2).sum(), torch.ones(3, dtype=DT), metric=metric)


# --- 9. statuses and counters ----------------------------------------------------------------


def test_statuses_and_counters():
    def f(x):
        return ((x - 1) ** 4).sum() + (x**2).sum()

    x0 = torch.zeros(4, dtype=DT)
    assert gns_minimize(f, x0, maxiter=2).status == "maxiter"
    res = gns_minimize(f, x0, gtol=1e-9)
    assert res.status == "gtol" and res.grad_norm <= 1e-9
    assert res.nfev == res.ngev == 1 + sum(res.history["trials"])
    assert res.nhev == res.nit
    fstar = res.fun
    assert gns_minimize(f, x0, ftol=1e-6, f_star=fstar).status == "ftol"
    stopped = gns_minimize(f, x0, gamma0=1e6, gamma_min=1e6, max_search=1, on_exhausted="stop")
    assert stopped.status == "search_exhausted" and stopped.n_exhausted == 1 and stopped.nit == 1
    kept = gns_minimize(f, x0, gamma0=1e6, max_search=1, maxiter=3)
    assert kept.n_exhausted >= 1 and kept.status == "maxiter"


# --- 10. bad inputs --------------------------------------------------------------------------


def test_bad_inputs_functional():
    f = lambda x: (x**2).sum()  # noqa: E731
    x0 = torch.ones(3, dtype=DT)
    with pytest.raises(ValueError, match="scalar"):
        gns_minimize(lambda x: x**2, x0)
    with pytest.raises(ValueError, match="x0"):
        gns_minimize(f, torch.tensor([1.0, float("nan")], dtype=DT))
    with pytest.raises(ValueError, match=r"hessian must be a \(3, 3\)"):
        gns_minimize(f, x0, hessian=lambda x: torch.eye(2, dtype=DT))
    with pytest.raises(ValueError, match="hessian contains non-finite"):
        gns_minimize(f, x0, hessian=lambda x: torch.full((3, 3), float("nan"), dtype=DT))
    with pytest.raises(ValueError, match="max_dense_dim"):
        gns_minimize(f, x0, max_dense_dim=2)
    with pytest.raises(ValueError, match="not finite"):
        gns_minimize(lambda x: (x**2).sum() / 0.0, x0)
    with pytest.raises(ValueError, match="gamma0"):
        gns_minimize(f, x0, gamma0=0.0)
    with pytest.raises(ValueError, match="solver"):
        gns_minimize(f, x0, solver="lu")


def test_singular_approximation_without_regularization_raises():
    """An indefinite approximation λB cannot make PD within max_search → RuntimeError naming it."""
    x0 = torch.ones(3, dtype=DT)
    with pytest.raises(RuntimeError, match=r"hessian.*lambda_min"):
        gns_minimize(
            lambda x: (x**2).sum(), x0, hessian=-1e6 * torch.eye(3, dtype=DT), max_search=3
        )
    ok = gns_minimize(
        lambda x: (x**2).sum(), x0, hessian=-1e6 * torch.eye(3, dtype=DT), lambda_min=2e6,
        maxiter=5,
    )  # fmt: skip
    assert ok.fun < 3.0


def test_nonfinite_trials_are_rejected_then_reported():
    def f(x):  # finite only in the unit ball around 0: big steps give inf
        r = (x**2).sum()
        return torch.where(r < 1.5, r, torch.full_like(r, float("inf")))

    x0 = torch.full((3,), 0.5, dtype=DT)
    res = gns_minimize(f, x0, hessian="zero", gamma0=100.0, maxiter=5)
    assert math.isfinite(res.fun) and res.fun < 0.75
    with pytest.raises(FloatingPointError, match="non-finite"):
        gns_minimize(f, x0, hessian="zero", gamma0=100.0, max_search=2)


# --- 11. optimizer wrapper -------------------------------------------------------------------


def _closure_step(opt, problem):
    return opt.step(problem.loss)


def test_check_optimizer_exact():
    check_optimizer(
        lambda params, **kw: GradNormSmoothNewton(params, hessian="exact", **kw),
        quadratic=ConvergenceSettings(steps=30, tol=1e-4),
        rosenbrock=ConvergenceSettings(steps=100, tol=1e-4),
        bad_hyperparams={
            "gamma0": 0.0,
            "max_search": 0,
            "lambda_eps": -1.0,
            "lambda_min": -1.0,
            "acceptance": "x",
            "solver": "qr",
            "lr": 0.1,
            "max_dense_dim": 0,
        },
        has_lr=False,
        step_fn=_closure_step,
        checks=["downhill", "quadratic", "rosenbrock", "state_dict", "dtypes", "bad_hyperparams"],
    )


def test_check_optimizer_backward_closure_with_first_order_member():
    """An LBFGS-style closure (zero_grad + backward) works with H ≡ 0 (gradient read from .grad)."""
    check_optimizer(
        lambda params, **kw: GradNormSmoothNewton(params, hessian="zero", **kw),
        quadratic=ConvergenceSettings(steps=300, tol=1e-4),
        has_lr=False,
        bad_hyperparams={"gamma0": -1.0},
        checks=["downhill", "quadratic", "state_dict", "dtypes", "bad_hyperparams"],
    )


def test_optimizer_matches_functional_over_param_groups():
    _A, _b, _mu, f = _lse_problem(seed=6)
    w1 = torch.nn.Parameter(torch.ones(12, dtype=DT))
    w2 = torch.nn.Parameter(torch.ones(2, 4, dtype=DT))
    opt = GradNormSmoothNewton([{"params": [w1]}, {"params": [w2]}], hessian="exact")

    def closure():
        return f(torch.cat([w1, w2.reshape(-1)]))

    for _ in range(6):
        opt.step(closure)
    res = gns_minimize(f, torch.ones(20, dtype=DT), maxiter=6)
    torch.testing.assert_close(torch.cat([w1.detach(), w2.detach().reshape(-1)]), res.x)
    state = opt.state[w1]
    # the optimizer re-evaluates the closure at the start of every step (one extra call each)
    assert state["step"] == 6 and state["nfev"] == res.nfev + 5
    assert math.isclose(state["gamma"], res.gamma)


def test_optimizer_lazy_hessian_state_round_trip():
    _A, _b, _mu, f = _lse_problem(seed=7)

    def run(n_first):
        w = torch.nn.Parameter(torch.ones(20, dtype=DT))
        opt = GradNormSmoothNewton([w], hessian=LazyHessian("exact", every=3))
        for _ in range(n_first):
            opt.step(lambda: f(w))
        return w, opt

    w_ref, opt_ref = run(4)
    saved = opt_ref.state_dict()
    for _ in range(4):
        opt_ref.step(lambda: f(w_ref))
    w_new = torch.nn.Parameter(torch.ones(20, dtype=DT))
    with torch.no_grad():
        w_new.copy_(run(4)[0])
    resumed = GradNormSmoothNewton([w_new], hessian=LazyHessian("exact", every=3))
    resumed.load_state_dict(saved)
    for _ in range(4):
        resumed.step(lambda: f(w_new))
    assert torch.equal(w_new, w_ref)


def test_optimizer_bad_inputs():
    w = torch.nn.Parameter(torch.ones(3, dtype=DT))
    opt = GradNormSmoothNewton([w])
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    with pytest.raises(ValueError, match="non-finite loss"):
        opt.step(lambda: (w**2).sum() * float("nan"))
    with pytest.raises(ValueError, match="scalar"):
        opt.step(lambda: w**2)
    with pytest.raises(ValueError, match="lr"):
        GradNormSmoothNewton([w], lr=0.1)
    with pytest.raises(ValueError, match="gamma0"):
        GradNormSmoothNewton(
            [{"params": [w]}, {"params": [torch.nn.Parameter(torch.ones(1))], "gamma0": 2.0}]
        )

    def backward_closure():
        opt.zero_grad()
        loss = (w**4).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=r"without calling loss\.backward"):
        opt.step(backward_closure)
    bad = GradNormSmoothNewton([w], hessian=-1e6 * torch.eye(3, dtype=DT), max_search=2)
    before = w.detach().clone()
    with pytest.raises(RuntimeError, match="hessian"):
        bad.step(lambda: (w**2).sum())
    assert torch.equal(w.detach(), before)  # parameters restored


def test_optimizer_gauss_newton_on_flat_params():
    """Approximations receive the flat parameter vector: Gauss–Newton on a small regression."""
    gen = torch.Generator().manual_seed(14)
    X, y = torch.randn(40, 3, generator=gen, dtype=DT), torch.randn(40, generator=gen, dtype=DT)
    w = torch.nn.Parameter(torch.zeros(3, dtype=DT))

    def residuals(x):
        return torch.tanh(X @ x) - 0.5 * torch.tanh(y)

    opt = GradNormSmoothNewton([w], hessian=GaussNewton(residuals))
    for _ in range(30):
        opt.step(lambda: 0.5 * (residuals(w) ** 2).sum())
    g = torch.func.grad(lambda x: 0.5 * (residuals(x) ** 2).sum())(w.detach())
    assert float(g.norm()) < 1e-8
