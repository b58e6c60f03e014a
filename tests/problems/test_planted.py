"""Tests of optforge.problems.planted: generators' statistics, losses and gradients, overlap."""

import math

import pytest
import torch

from optforge.problems import hermite, overlap, single_index, tensor_pca


def test_tensor_pca_statistics_and_symmetrisation():
    d, k, n = 12, 3, 400.0
    p = tensor_pca(d, k, n, seed=0, dtype=torch.float64)
    assert p.tensor.shape == (d,) * k and p.sym.shape == (d, d**2)
    assert float(p.theta_star.norm()) == pytest.approx(1.0)
    spike = torch.einsum("i,j,k->ijk", p.theta_star, p.theta_star, p.theta_star)
    noise = (p.tensor - spike).flatten() * math.sqrt(n)
    m = noise.numel()
    assert abs(float(noise.mean())) < 5 / math.sqrt(m)
    assert abs(float(noise.var()) - 1.0) < 5 * math.sqrt(2 / m)
    sym = p.sym.reshape(d, d, d)
    for perm in [(1, 0, 2), (2, 1, 0), (0, 2, 1)]:
        torch.testing.assert_close(sym, sym.permute(perm))
    # θ* is drawn first from the generator, then Z: same seed, same problem
    again = tensor_pca(d, k, n, seed=0, dtype=torch.float64)
    assert torch.equal(again.tensor, p.tensor)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_tensor_pca_gradient_matches_autograd(k):
    p = tensor_pca(5, k, 30.0, seed=k, dtype=torch.float64)
    theta = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    loss = p.loss(theta)
    subs = "abcd"[:k]
    equation = subs + "," + ",".join(f"z{c}" for c in subs) + "->z"  # e.g. abc,za,zb,zc->z
    reference = -torch.einsum(equation, p.tensor, *([theta] * k))
    torch.testing.assert_close(loss, reference)
    (grad,) = torch.autograd.grad(loss.sum(), theta)
    torch.testing.assert_close(p.grad(theta.detach()), grad)
    assert torch.autograd.gradcheck(lambda t: p.loss(t).sum(), (theta,))


def test_tensor_pca_loss_at_theta_star_is_about_minus_one():
    p = tensor_pca(20, 3, 1e8, seed=1, dtype=torch.float64)
    assert float(p.loss(p.theta_star)) == pytest.approx(-1.0, abs=1e-3)


def test_hermite_polynomials_closed_forms_and_orthogonality():
    z = torch.linspace(-3, 3, 7, dtype=torch.float64)
    torch.testing.assert_close(hermite(z, 3), z**3 - 3 * z)
    torch.testing.assert_close(hermite(z, 4), z**4 - 6 * z**2 + 3)
    torch.testing.assert_close(hermite(z, 0), torch.ones_like(z))
    # E[He_j He_l] = j! δ_jl under N(0,1) (Gauss–Hermite quadrature, exact for degree ≤ 39)
    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(20)
    x, w = torch.tensor(nodes), torch.tensor(weights) / math.sqrt(2 * math.pi)
    for j in range(6):
        for m in range(6):
            val = float((w * hermite(x, j) * hermite(x, m)).sum())
            assert val == pytest.approx(math.factorial(j) if j == m else 0.0, abs=1e-9)


def test_single_index_statistics():
    """x ~ N(0, I), E σ(z)² = 1 for the normalised He₃ link, label noise of std τ, and the
    empirical correlation at θ* ≈ 1 within 5 standard errors."""
    d, n, tau = 8, 20_000, 0.5
    p = single_index(d, n, "he3", noise_std=tau, seed=2, dtype=torch.float64)
    assert p.information_exponent == 3
    assert abs(float(p.x.mean())) < 5 / math.sqrt(n * d)
    cov = p.x.T @ p.x / n
    assert float((cov - torch.eye(d, dtype=torch.float64)).abs().max()) < 5 * math.sqrt(2 / n)
    clean = p.link(p.x @ p.theta_star)
    resid = p.y - clean
    assert float(resid.std()) == pytest.approx(tau, abs=5 * tau / math.sqrt(2 * n))
    prod = p.y * clean
    se = float(prod.std()) / math.sqrt(n)
    assert float(prod.mean()) == pytest.approx(1.0, abs=5 * se)
    assert float(-p.loss(p.theta_star)) == pytest.approx(1.0, abs=5 * se)


def test_single_index_population_loss_is_minus_overlap_power():
    """For unit θ with <θ, θ*> = m and a pure He₄ link: E[-y σ(<θ,x>)] = -m⁴ (Monte Carlo)."""
    d, n = 6, 200_000
    p = single_index(d, n, "he4", seed=3, dtype=torch.float64)
    assert p.information_exponent == 4
    ortho = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ortho -= (ortho @ p.theta_star) * p.theta_star
    ortho /= ortho.norm()
    m = 0.8
    theta = m * p.theta_star + math.sqrt(1 - m**2) * ortho
    terms = -(p.y * p.link(p.x @ theta))
    se = float(terms.std()) / math.sqrt(n)
    assert float(terms.mean()) == pytest.approx(-(m**4), abs=5 * se)


@pytest.mark.parametrize("loss", ["correlation", "square"])
@pytest.mark.parametrize("link", ["he3", "he3+he4", {1: 0.5, 2: 0.5}])
def test_single_index_gradient_matches_autograd(loss, link):
    p = single_index(4, 50, link, noise_std=0.1, loss=loss, seed=4, dtype=torch.float64)
    theta = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(p.loss(theta).sum(), theta)
    torch.testing.assert_close(p.grad(theta.detach()), grad)
    assert torch.autograd.gradcheck(lambda t: p.loss(t).sum(), (theta,))


def test_overlap():
    star = torch.tensor([1.0, 0.0])
    assert overlap(torch.tensor([-3.0, 0.0]), star) == pytest.approx(1.0)
    assert overlap(torch.tensor([1.0, 1.0]), star) == pytest.approx(1 / math.sqrt(2))
    batch = overlap(torch.tensor([[0.0, 2.0], [5.0, 0.0]]), star)
    torch.testing.assert_close(batch, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="zero norm"):
        overlap(torch.zeros(2), star)
    with pytest.raises(ValueError, match="dimension"):
        overlap(torch.ones(3), star)


def test_bad_inputs():
    with pytest.raises(ValueError, match="k"):
        tensor_pca(5, 1, 10.0)
    with pytest.raises(ValueError, match="n"):
        tensor_pca(5, 3, 0.0)
    with pytest.raises(ValueError, match="d"):
        tensor_pca(0, 3, 10.0)
    with pytest.raises(ValueError, match="link"):
        single_index(5, 10, "relu")
    with pytest.raises(ValueError, match="noise_std"):
        single_index(5, 10, noise_std=-1.0)
    with pytest.raises(ValueError, match="loss"):
        single_index(5, 10, loss="hinge")
    p = tensor_pca(5, 3, 10.0, seed=0)
    with pytest.raises(ValueError, match="theta"):
        p.grad(torch.ones(4))
