"""Tests of the Hessian approximations against their dense definitions."""

import pytest
import torch

from optforge.optim.hessian_approx import (
    EmpiricalFisher,
    ExactHessian,
    FisherTerm,
    FixedHessian,
    GaussNewton,
    LazyHessian,
    SoftmaxGaussNewton,
    SubsampledHessian,
    WeightedGaussNewtonLSE,
)
from optforge.optim.regularized_newton.minimize import _FunctionalOracle

DT = torch.float64


def test_exact_hessian_matches_finite_differences(lse_problem):
    _A, _b, _mu, f = lse_problem(seed=3)
    x = torch.full((20,), 0.1, dtype=DT)
    H = ExactHessian()(x, _FunctionalOracle(f, x))
    grad = torch.func.grad(f)
    eps = 1e-6
    fd = torch.stack(
        [(grad(x + eps * e) - grad(x - eps * e)) / (2 * eps) for e in torch.eye(20, dtype=DT)]
    )
    assert float((H - fd).norm() / H.norm()) < 1e-6


def test_weighted_gauss_newton_upper_bounds_lse_hessian(lse_problem):
    A, b, mu, f = lse_problem(seed=5)
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
