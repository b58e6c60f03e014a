"""Tests of gns_minimize (Algorithm 1): convergence, acceptance, reference equivalence, statuses."""

import itertools
import math

import numpy as np
import pytest
import torch

from optforge.optim import gns_minimize
from optforge.optim.hessian_approx import FisherTerm, WeightedGaussNewtonLSE

DT = torch.float64


def test_quadratic_exact_converges_and_acceptance_holds(spd):
    d = 20
    Q = spd(d, 5, shift=0.5)
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


def test_reference_equivalence_lse_with_metric(lse_problem):
    A, _b, _mu, f = lse_problem()
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


def test_monotone_with_func_acceptance_and_grad_acceptance_converges(lse_problem):
    A, b, mu, f = lse_problem(seed=1)
    wgn = WeightedGaussNewtonLSE(A, b, mu)
    res = gns_minimize(f, torch.ones(20, dtype=DT), hessian=wgn, gtol=1e-10, maxiter=500)
    fs = res.history["f"]
    assert res.status == "gtol"
    assert all(b <= a for a, b in itertools.pairwise(fs))
    res_g = gns_minimize(f, torch.ones(20, dtype=DT), hessian=wgn, acceptance="grad", gtol=1e-10)
    assert res_g.status == "gtol"


def test_cg_matrix_free_matches_cholesky(lse_problem):
    _A, _b, _mu, f = lse_problem(seed=2)
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


@pytest.mark.parametrize(
    "metric", [-torch.eye(3, dtype=DT), torch.tensor([[1, 2, 0], [0, 1, 0], [0, 0, 1]], dtype=DT)]
)
def test_non_spd_metric_raises(metric):
    with pytest.raises(ValueError, match="metric"):
        gns_minimize(lambda x: (x**2).sum(), torch.ones(3, dtype=DT), metric=metric)


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
