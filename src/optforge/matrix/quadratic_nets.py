"""Extensive-width quadratic networks: the teacher model and gradient-descent baselines.

Companion of :mod:`optforge.matrix.gamp_rie` for the paper "Bayes-optimal learning of an
extensive-width neural network from quadratically many samples" (A. Maillard, E. Troiani,
S. Martin, F. Krzakala, L. Zdeborová, NeurIPS 2024, arXiv 2408.03733; official code
``SPOC-group/ExtensiveWidthQuadraticSamples``).

Teacher (paper units). ``W* ∈ R^{m×d}`` with i.i.d. N(0, 1) entries, ``m = κ d`` hidden units,
``n = α d²`` Gaussian inputs ``x ~ N(0, I_d)`` and labels

.. math::

    y = \\frac{1}{\\sqrt m}\\sum_{k=1}^m\\Big[\\frac{(w_k\\cdot x)^2}{d}
        - \\frac{\\lVert w_k\\rVert^2}{d}\\Big] + \\sqrt\\Delta\\,\\xi
      = \\langle Z(x), S^\\circ\\rangle + \\sqrt\\Delta\\,\\xi,\\qquad
    Z(x) = \\frac{x x^\\top - I_d}{\\sqrt d},\\quad
    S^\\circ = \\frac{W^{*\\top} W^*}{\\sqrt{m d}},

so learning the network is matrix sensing of the PSD matrix ``S°`` (spectrum √κ × Marchenko–Pastur,
mean eigenvalue √κ, ``‖S° − √κ I‖²_F / d → 1``). Errors are reported as
``mse = ‖Ŝ − S°‖²_F / d`` (1 at α = 0); the clean-label test error is ``2·mse`` (plus Δ on noisy
labels).

Gradient-descent baselines follow the official ``GD_averaged.py``: a student of the same
architecture (width ``m_s``, second layer fixed at ``1/√m_s``, output
``(1/√m_s) Σ_k (w_k·x/√d)²``, not centred, trained on the uncentred labels
``y + Tr S°/√d``), full-batch ``torch.optim.SGD`` on ``Σ_μ (ŷ_μ − y_μ)² / 4``, lr 0.1, 1000 steps,
several independent initialisations trained at once as one ``(B, m_s, d)`` weight tensor (their
losses add, so their gradients do not interact). The averaged estimator is the mean over the
initialisations of the matrix each student implements, ``W_bᵀW_b / √(m_s d)``.

Example:
    >>> import torch
    >>> from optforge.matrix import sample_quadratic_teacher, train_gd_ensemble
    >>> data = sample_quadratic_teacher(20, kappa=0.5, alpha=0.3,
    ...                                 generator=torch.Generator().manual_seed(0))
    >>> grams = train_gd_ensemble(data.X, data.uncentered_labels(), width=10, n_inits=4,
    ...                           steps=50, generator=torch.Generator().manual_seed(1))
    >>> grams.shape
    torch.Size([4, 20, 20])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from optforge._core import (
    check_choice,
    check_finite,
    check_nonnegative,
    check_positive,
    check_positive_int,
    make_generator,
)

__all__ = [
    "QuadTeacherData",
    "QuadraticNet",
    "sample_quadratic_teacher",
    "teacher_width",
    "train_gd_ensemble",
]


@dataclass
class QuadTeacherData:
    """A draw of the quadratic teacher model (paper units).

    Attributes:
        X: Inputs, shape ``(n, d)``.
        y: Centred labels ``⟨Z(x), S°⟩ + √Δ ξ``, shape ``(n,)``.
        S: Target matrix ``S° = WᵀW / √(m d)``, shape ``(d, d)``.
        W: Teacher first-layer weights, shape ``(m, d)``.
        kappa: Width ratio ``m / d`` requested.
        alpha: Sample ratio ``n / d²`` requested.
        delta: Label-noise variance Δ (paper units).
    """

    X: Tensor
    y: Tensor
    S: Tensor
    W: Tensor
    kappa: float
    alpha: float
    delta: float

    def uncentered_labels(self) -> Tensor:
        """Labels of the uncentred network ``(1/√m) Σ_k (w_k·x/√d)²`` (+ the same noise)."""
        d = self.X.shape[1]
        return self.y + torch.trace(self.S) / math.sqrt(d)

    def mse(self, S_hat: Tensor) -> float:
        """``‖Ŝ − S°‖²_F / d`` (Ŝ of shape ``(d, d)``)."""
        return float(((S_hat - self.S) ** 2).sum() / self.S.shape[0])


def teacher_width(d: int, kappa: float) -> int:
    """The hidden width ``m = round(κ d)``; ``ValueError`` if κ ≤ 0 or ``d`` is too small.

    Args:
        d: Input dimension.
        kappa: Width ratio κ = m / d.

    Returns:
        The integer width ``m ≥ 1``.
    """
    check_positive_int("d", d)
    check_positive("kappa", kappa)
    m = round(kappa * d)
    if m < 1:
        raise ValueError(
            f"d={d} is too small for kappa={kappa}: the width m = round(kappa*d) = {m} < 1"
        )
    return m


def sample_quadratic_teacher(
    d: int,
    kappa: float,
    alpha: float,
    delta: float = 0.0,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> QuadTeacherData:
    """Draw a teacher of width ``m = round(κd)`` and ``n = round(αd²)`` noisy samples.

    Args:
        d: Input dimension (≥ 2).
        kappa: Width ratio κ > 0.
        alpha: Sample ratio α > 0 (``n = round(α d²) ≥ 1``).
        delta: Label-noise variance Δ ≥ 0 (paper units).
        generator: Source of randomness (a fresh one from ``torch.initial_seed()`` if None).
        dtype: Floating dtype of the tensors (float64 by default).
        device: Device of the tensors.

    Returns:
        The :class:`QuadTeacherData`.
    """
    check_positive_int("d", d)
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    m = teacher_width(d, kappa)
    check_positive("alpha", alpha)
    check_nonnegative("delta", delta)
    n = round(alpha * d * d)
    if n < 1:
        raise ValueError(f"alpha={alpha} gives n = round(alpha*d^2) = {n} < 1 samples for d={d}")
    gen = make_generator(None) if generator is None else generator
    W = torch.randn(m, d, generator=gen, dtype=torch.float64)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    xi = torch.randn(n, generator=gen, dtype=torch.float64)
    S = W.T @ W / math.sqrt(m * d)
    y = (((X @ S) * X).sum(1) - torch.trace(S)) / math.sqrt(d) + math.sqrt(delta) * xi
    to = {"dtype": dtype, "device": device}
    return QuadTeacherData(
        X=X.to(**to),
        y=y.to(**to),
        S=S.to(**to),
        W=W.to(**to),
        kappa=float(kappa),
        alpha=float(alpha),
        delta=float(delta),
    )


class QuadraticNet(nn.Module):
    """``B`` independent one-hidden-layer networks with quadratic activation, evaluated at once.

    ``f_b(x) = (1/√m) Σ_k (w_{bk}·x/√d)²`` (minus ``‖w_{bk}‖²/d`` inside the sum when
    ``centered``); the second layer is fixed at ``1/√m``. The weight is one parameter of shape
    ``(B, m, d)`` drawn N(0, 1).

    Args:
        d: Input dimension.
        width: Hidden width ``m``.
        n_models: Number ``B`` of independent networks.
        centered: Subtract ``‖w_k‖²/d`` in each unit (matches the centred labels).
        generator: Source of randomness for the initialisation.
        dtype: Parameter dtype.
    """

    def __init__(
        self,
        d: int,
        width: int,
        n_models: int = 1,
        *,
        centered: bool = False,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.d = check_positive_int("d", d)
        self.width = check_positive_int("width", width)
        check_positive_int("n_models", n_models)
        self.centered = bool(centered)
        gen = make_generator(None) if generator is None else generator
        self.weight = nn.Parameter(torch.randn(n_models, width, d, generator=gen, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Outputs of shape ``(B, n)`` for inputs ``x`` of shape ``(n, d)``."""
        pre = torch.einsum("bkd,nd->bnk", self.weight, x) / math.sqrt(self.d)
        out = (pre**2).sum(-1)
        if self.centered:
            out = out - (self.weight**2).sum((-1, -2))[:, None] / self.d
        return out / math.sqrt(self.width)

    def gram(self, units: Literal["paper", "standard"] = "paper") -> Tensor:
        """The matrix each network implements, ``(B, d, d)``.

        ``"paper"``: ``WᵀW / √(m d)`` (the network is ``x ↦ xᵀ S x / √d``); ``"standard"``:
        ``WᵀW / m`` (mean eigenvalue 1, the official code's unit).
        """
        w = self.weight.detach()
        g = w.transpose(-1, -2) @ w
        if units == "paper":
            return g / math.sqrt(self.width * self.d)
        if units == "standard":
            return g / self.width
        raise ValueError(f"units must be 'paper' or 'standard', got {units!r}")


def train_gd_ensemble(
    X: Tensor,
    y: Tensor,
    width: int,
    n_inits: int = 64,
    *,
    steps: int = 1000,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    optimizer: Literal["sgd", "adam"] = "sgd",
    reduction: Literal["sum", "mean"] = "sum",
    centered: bool = False,
    generator: torch.Generator | None = None,
    return_losses: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Train ``n_inits`` quadratic students from independent inits on the same data.

    Full-batch ``torch.optim.SGD`` (or ``torch.optim.Adam``, the official "vanilla" run) on
    ``Σ_μ (ŷ_μ − y_μ)² / 4`` per student (``reduction="mean"`` divides by n, so
    ``lr_mean = lr_sum · n`` gives the same trajectory).

    Args:
        X: Inputs ``(n, d)``.
        y: Labels ``(n,)`` (uncentred unless ``centered=True``).
        width: Student width ``m_s``.
        n_inits: Number of independent initialisations.
        steps: Number of full-batch steps.
        lr: Learning rate.
        weight_decay: ``weight_decay`` of the torch optimizer.
        optimizer: ``"sgd"`` (the averaged-GD runs) or ``"adam"``.
        reduction: ``"sum"`` (official) or ``"mean"`` over samples.
        centered: Use the centred student (then ``y`` must be the centred labels).
        generator: Source of randomness for the initialisations.
        return_losses: Also return the per-step loss curve of shape ``(steps + 1, n_inits)``.

    Returns:
        The students' matrices ``W_bᵀW_b/√(m_s d)`` (paper units), shape ``(n_inits, d, d)``, and
        the loss curves if requested.

    Raises:
        ValueError: On bad shapes, non-finite data or a diverging run (non-finite loss).
    """
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d), got shape {tuple(X.shape)}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")
    check_finite("X", X)
    check_finite("y", y)
    check_positive_int("steps", steps)
    check_positive("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    check_choice("reduction", reduction, ("sum", "mean"))
    net = QuadraticNet(
        X.shape[1],
        width,
        n_inits,
        centered=centered,
        generator=generator,
        dtype=X.dtype,
    ).to(X.device)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            net.parameters(), lr=lr, weight_decay=weight_decay
        )
    elif optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    scale = 0.25 if reduction == "sum" else 0.25 / X.shape[0]
    losses = []
    for step in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        per_model = ((net(X) - y) ** 2).sum(1) * scale
        if not torch.isfinite(per_model).all():
            raise ValueError(
                f"gradient descent diverged at step {step} (non-finite loss); lower lr={lr}"
            )
        losses.append(per_model.detach())
        if step == steps:
            break
        per_model.sum().backward()
        opt.step()
    grams = net.gram("paper")
    if return_losses:
        return grams, torch.stack(losses)
    return grams
