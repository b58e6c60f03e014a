r"""Planted-direction problems: spiked tensor PCA and single-index models, and the overlap metric.

These are the test beds of "Improved high-dimensional estimation with Langevin dynamics and
stochastic weight averaging" (ICLR 2026, arXiv:2603.06028). Both hide a unit vector
:math:`\theta^\star \in S^{d-1}` whose recovery is governed by the **information exponent**
:math:`k^*`. Normalisations (chosen here; the paper's could not be read):

**Tensor PCA of order k** ("n samples" normalisation):

.. math:: T = \theta^{\star\otimes k} + Z/\sqrt n,\quad Z_{i_1\dots i_k}\sim\mathcal N(0,1)
          \ \text{i.i.d. (not symmetrised)},\quad L(\theta) = -\langle T,\theta^{\otimes k}\rangle,

:math:`\nabla L(\theta) = -k\,\mathrm{Sym}(T)(\cdot,\theta,\dots,\theta)`, computed as
``Sym(T).reshape(d, d**(k-1)) @ (θ ⊗ … ⊗ θ)`` (cost and memory :math:`d^k`); :math:`k^* = k`.
:math:`T` is the mean of n i.i.d. noisy copies, so ``n`` may be any positive real.
:math:`\theta^\star` is drawn first, then :math:`Z`, from the given generator.

**Single-index model**: :math:`x_i\sim\mathcal N(0, I_d)`, :math:`y_i = \sigma(\langle\theta^\star,
x_i\rangle) + \varepsilon_i`, :math:`\varepsilon_i\sim\mathcal N(0,\tau^2)`, with the link
:math:`\sigma = \sum_j c_j\,\mathrm{He}_j/\sqrt{j!}` (normalised probabilists' Hermite polynomials;
``"he3"`` is :math:`\mathrm{He}_3/\sqrt 6`, :math:`k^*` = the lowest order present). The loss is the
correlation loss :math:`L(\theta) = -\frac1n\sum_i y_i\,\sigma(\langle\theta,x_i\rangle)` (or
the square loss :math:`\frac1{2n}\sum_i(y_i-\sigma(\langle\theta,x_i\rangle))^2`) on a fixed
sample set (full batch, multi-pass). For a unit θ and a pure :math:`\mathrm{He}_k` link the
population correlation loss is :math:`-\langle\theta,\theta^\star\rangle^k`.

Losses and gradients accept a batch of vectors ``(..., d)`` (several chains at once: the matvec
becomes a matmul).

Example::

    problem = tensor_pca(d=50, k=3, n=700, seed=0)
    g = problem.grad(theta)                        # -3 Sym(T)(., θ, θ)
    overlap(theta, problem.theta_star)             # |<θ/‖θ‖, θ*>|
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from optforge._core import check_nonnegative, check_positive, check_positive_int, make_generator

__all__ = [
    "SingleIndexProblem",
    "TensorPCAProblem",
    "hermite",
    "overlap",
    "single_index",
    "tensor_pca",
]


@dataclass
class TensorPCAProblem:
    """Spiked order-k tensor PCA; see the module docstring for the model.

    Attributes:
        tensor: the observation ``T`` (shape ``(d,)*k``, not symmetrised).
        sym: ``Sym(T)`` reshaped to ``(d, d**(k-1))``.
        theta_star: the planted unit vector.
        k: tensor order (= information exponent).
        n: the number of samples the noise level corresponds to.
    """

    tensor: Tensor
    sym: Tensor
    theta_star: Tensor
    k: int
    n: float

    @property
    def d(self) -> int:
        return self.theta_star.shape[0]

    @property
    def information_exponent(self) -> int:
        return self.k

    def loss(self, theta: Tensor) -> Tensor:
        """``-<T, θ^{⊗k}>`` for ``theta`` of shape ``(..., d)`` (differentiable)."""
        _check_theta(theta, self.d)
        flat = self.tensor.reshape(self.d, -1)
        return -((_kron_power(theta, self.k - 1) @ flat.T) * theta).sum(-1)

    def grad(self, theta: Tensor) -> Tensor:
        """``-k Sym(T)(·, θ, …, θ)`` for ``theta`` of shape ``(..., d)``."""
        _check_theta(theta, self.d)
        return -self.k * (_kron_power(theta, self.k - 1) @ self.sym.T)


@dataclass
class SingleIndexProblem:
    """Single-index model with a Hermite link; see the module docstring.

    Attributes:
        x: inputs, shape ``(n, d)``.
        y: labels, shape ``(n,)``.
        theta_star: the planted unit vector.
        coefficients: link coefficients ``{order j: c_j}`` of ``σ = Σ c_j He_j / sqrt(j!)``.
        noise_std: label-noise standard deviation ``τ``.
        loss_type: ``"correlation"`` or ``"square"``.
    """

    x: Tensor
    y: Tensor
    theta_star: Tensor
    coefficients: dict[int, float]
    noise_std: float
    loss_type: Literal["correlation", "square"] = "correlation"

    @property
    def d(self) -> int:
        return self.theta_star.shape[0]

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def information_exponent(self) -> int:
        return min(j for j, c in self.coefficients.items() if c != 0 and j >= 1)

    def link(self, z: Tensor) -> Tensor:
        """``σ(z) = Σ c_j He_j(z) / sqrt(j!)``."""
        return _hermite_series(z, self.coefficients)

    def link_derivative(self, z: Tensor) -> Tensor:
        """``σ'(z) = Σ c_j j He_{j-1}(z) / sqrt(j!)``."""
        return _hermite_series(z, self.coefficients, derivative=True)

    def loss(self, theta: Tensor) -> Tensor:
        """The empirical loss for ``theta`` of shape ``(..., d)`` (differentiable)."""
        _check_theta(theta, self.d)
        pred = self.link(theta @ self.x.T)
        if self.loss_type == "correlation":
            return -(self.y * pred).mean(-1)
        return 0.5 * ((self.y - pred) ** 2).mean(-1)

    def grad(self, theta: Tensor) -> Tensor:
        """The closed-form gradient of :meth:`loss`, cost O(nd) per vector."""
        _check_theta(theta, self.d)
        z = theta @ self.x.T
        if self.loss_type == "correlation":
            weight = self.y * self.link_derivative(z)
        else:
            weight = (self.y - self.link(z)) * self.link_derivative(z)
        return -(weight @ self.x) / self.n


def tensor_pca(
    d: int,
    k: int,
    n: float,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TensorPCAProblem:
    """Draw a spiked tensor PCA problem ``T = θ*^{⊗k} + Z/√n``.

    Args:
        d: dimension (>= 1).
        k: tensor order (>= 2).
        n: sample size setting the noise level ``1/√n`` (> 0, may be fractional).
        seed: seed of a fresh generator (ignored when ``generator`` is given).
        generator: generator to draw θ* (first) and Z (second) from.
        device: device of the tensors.
        dtype: floating dtype of the tensors.
    """
    d = check_positive_int("d", d)
    k = check_positive_int("k", k)
    if k < 2:
        raise ValueError(f"k must be >= 2 for tensor PCA, got {k}")
    check_positive("n", n)
    if d**k > 2**31:
        raise ValueError(f"d**k = {d**k} entries is too large for tensor_pca (d={d}, k={k})")
    gen = generator if generator is not None else make_generator(seed, device)
    theta_star = _uniform_sphere(d, gen, device, dtype)
    noise = torch.randn((d,) * k, generator=gen, device=device, dtype=dtype)
    tensor = noise / math.sqrt(n) + _outer_power(theta_star, k)
    sym = torch.zeros_like(tensor)
    perms = list(itertools.permutations(range(k)))
    for perm in perms:
        sym += tensor.permute(perm)
    sym /= len(perms)
    return TensorPCAProblem(tensor, sym.reshape(d, -1), theta_star, k, float(n))


def single_index(
    d: int,
    n: int,
    link: str | Mapping[int, float] = "he3",
    noise_std: float = 0.0,
    *,
    loss: Literal["correlation", "square"] = "correlation",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SingleIndexProblem:
    """Draw a single-index problem ``y = σ(<θ*, x>) + ε`` with a Hermite link.

    Args:
        d: dimension.
        n: number of samples.
        link: ``"heK"`` (e.g. ``"he3"``), a sum such as ``"he3+he4"`` (coefficients
            ``1/sqrt(#terms)``, so ``E σ(z)² = 1``), or a mapping ``{order: coefficient}``.
        noise_std: label-noise standard deviation ``τ`` (>= 0).
        loss: ``"correlation"`` (default) or ``"square"``.
        seed: as in :func:`tensor_pca`; θ* is drawn first, then ``x``, then ``ε``.
        generator: as in :func:`tensor_pca`.
        device: as in :func:`tensor_pca`.
        dtype: as in :func:`tensor_pca`.
    """
    d = check_positive_int("d", d)
    n = check_positive_int("n", n)
    check_nonnegative("noise_std", noise_std)
    if loss not in ("correlation", "square"):
        raise ValueError(f"loss must be 'correlation' or 'square', got {loss!r}")
    coefficients = _parse_link(link)
    gen = generator if generator is not None else make_generator(seed, device)
    theta_star = _uniform_sphere(d, gen, device, dtype)
    x = torch.randn(n, d, generator=gen, device=device, dtype=dtype)
    y = _hermite_series(x @ theta_star, coefficients)
    if noise_std > 0:
        y = y + noise_std * torch.randn(n, generator=gen, device=device, dtype=dtype)
    return SingleIndexProblem(x, y, theta_star, coefficients, float(noise_std), loss)


def overlap(theta: Tensor, theta_star: Tensor) -> float | Tensor:
    """``|<θ/‖θ‖, θ*>|``: a float for a vector, a tensor of shape ``(...)`` for ``(..., d)``."""
    if theta.shape[-1] != theta_star.shape[-1]:
        raise ValueError(
            f"theta has last dimension {theta.shape[-1]}, theta_star has {theta_star.shape[-1]}"
        )
    theta = theta.detach()
    norm = torch.linalg.vector_norm(theta, dim=-1)
    if bool((norm == 0).any()):
        raise ValueError("theta has zero norm; the overlap is undefined")
    value = (theta @ theta_star.to(theta.dtype)).abs() / norm
    return float(value) if theta.dim() == 1 else value


def hermite(z: Tensor, order: int) -> Tensor:
    """The probabilists' Hermite polynomial ``He_order(z)`` (recurrence ``He_{j+1} = z He_j −
    j He_{j−1}``; e.g. ``He_3 = z³ − 3z``, ``He_4 = z⁴ − 6z² + 3``)."""
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    prev, cur = torch.ones_like(z), z
    if order == 0:
        return prev
    for j in range(1, order):
        prev, cur = cur, z * cur - j * prev
    return cur


# --------------------------------------------------------------------------- private helpers


def _check_theta(theta: Tensor, d: int) -> None:
    if not isinstance(theta, Tensor):
        raise TypeError(f"theta must be a tensor, got {type(theta).__name__}")
    if theta.dim() == 0 or theta.shape[-1] != d:
        raise ValueError(f"theta must have shape (..., {d}), got {tuple(theta.shape)}")


def _uniform_sphere(
    d: int, gen: torch.Generator, device: torch.device | str, dtype: torch.dtype
) -> Tensor:
    v = torch.randn(d, generator=gen, device=device, dtype=dtype)
    return v / torch.linalg.vector_norm(v)


def _outer_power(v: Tensor, k: int) -> Tensor:
    out = v
    for _ in range(k - 1):
        out = out.unsqueeze(-1) * v
    return out


def _kron_power(theta: Tensor, m: int) -> Tensor:
    """``θ ⊗ … ⊗ θ`` (m factors) flattened to ``(..., d**m)``; batched over leading dims."""
    out = theta
    for _ in range(m - 1):
        out = (out.unsqueeze(-1) * theta.unsqueeze(-2)).flatten(-2)
    return out


def _parse_link(link: str | Mapping[int, float]) -> dict[int, float]:
    if isinstance(link, Mapping):
        coefficients = {int(j): float(c) for j, c in link.items()}
    elif isinstance(link, str) and re.fullmatch(r"he\d+(\+he\d+)*", link.replace(" ", "")):
        orders = [int(t[2:]) for t in link.replace(" ", "").split("+")]
        coefficients = {j: 1.0 / math.sqrt(len(orders)) for j in orders}
    else:
        raise ValueError(f"link must be like 'he3', 'he3+he4' or {{order: coef}}, got {link!r}")
    if not any(c != 0 and j >= 1 for j, c in coefficients.items()) or min(coefficients) < 0:
        raise ValueError(f"link needs a non-zero coefficient of order >= 1, got {link!r}")
    return coefficients


def _hermite_series(
    z: Tensor, coefficients: Mapping[int, float], *, derivative: bool = False
) -> Tensor:
    out = torch.zeros_like(z)
    for j, c in coefficients.items():
        scale = c / math.sqrt(math.factorial(j))
        if derivative:
            if j >= 1:
                out = out + scale * j * hermite(z, j - 1)
        else:
            out = out + scale * hermite(z, j)
    return out
