r"""BEO: projected gradient ascent on the kernel Bayes-error estimate.

Paper: Ruihan Zhang, Jun Sun, Ee-Peng Lim, Peixin Zhang, *Towards Provably Unlearnable Examples
via Bayes Error Optimisation*, arXiv:2511.08191 (AAAI 2026).

:class:`BayesErrorPerturbation` maximises the estimate of
:mod:`optforge.data.bayes_error.estimate` over a perturbation δ of the training inputs,

.. math::

    \delta \leftarrow \Pi_{\lVert\delta\rVert\le\varepsilon,\ x+\delta\in[lo,hi]}
    \big(\delta + \alpha\,\mathrm{sign}\,
    \nabla_\delta \widehat{\mathrm{BER}}(\varphi(x+\delta), y)\big)

(L∞; with ``norm="l2"`` the step is :math:`\alpha\, g_i/\lVert g_i\rVert` per example and the
projection is onto the per-example L2 ball). :math:`\varphi` is the identity (raw inputs), a fixed
feature map, or a network retrained on the current perturbed data every ``refresh_every`` steps
(the authors' pipeline). A higher Bayes error of the *training* distribution does not by itself
lower the clean-test accuracy of a learner (see the method's docs page).

Example::

    >>> import torch
    >>> from optforge.data import BayesErrorPerturbation
    >>> x = torch.rand(200, 8); y = torch.randint(0, 3, (200,))
    >>> beo = BayesErrorPerturbation(eps=0.1, steps=10, sigma="median_nn", sigma_scale=0.5)
    >>> delta = beo.fit(x, y)
    >>> bool(delta.abs().max() <= 0.1 + 1e-6)
    True

Choices: step size α = ε/10 and 50 steps by default; the budget must be > 0; gradients use
autograd on the **mean** estimate (the authors' custom backward returns the sum; the scale is
irrelevant for sign steps).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from optforge._core import check_nonnegative, check_positive, check_positive_int
from optforge.data.bayes_error.baselines import random_noise
from optforge.data.bayes_error.budget import (
    Norm,
    _check_clamp,
    _check_norm,
    _check_x_range,
    _per_example_norm,
    project_perturbation,
)
from optforge.data.bayes_error.estimate import (
    Kernel,
    Normalize,
    _check_labels,
    _flatten,
    bayes_error_estimate,
    median_nn_distance,
)

__all__ = ["BayesErrorPerturbation"]


class BayesErrorPerturbation:
    """Projected gradient ascent on the kernel Bayes-error estimate (BEO).

    Args:
        eps: perturbation budget (> 0), per example, in the chosen norm.
        step_size: ascent step α; default ``eps / 10``.
        steps: number of PGA steps.
        norm: ``"linf"`` (sign steps) or ``"l2"`` (normalised-gradient steps).
        sigma: estimator bandwidth (> 0) or ``"median_nn"``. With ``"median_nn"`` σ is fixed
            once from the clean representations and reused for every step.
        sigma_scale: multiplier for ``sigma="median_nn"``.
        kernel: estimator kernel, ``"rbf"`` or ``"sigmoid"``.
        normalize: feature normalisation of the estimator (``"maxabs"`` or ``"none"``).
        feature_fn: map from inputs ``(B, ...)`` to features ``(B, d)``; ``None`` = raw inputs.
            Gradients flow through it (put a network in ``eval()`` mode; its parameters are not
            updated).
        refresh_features: ``refresh_features(x_perturbed, y) -> feature_fn``, e.g. retrain a
            network on the current perturbed data (the authors' pipeline); called before step 0
            and then every ``refresh_every`` steps.
        refresh_every: refresh period in steps (0 = only before step 0).
        clamp: valid input range ``(low, high)`` or ``None``; inputs must lie in it.
        random_start: start from uniform noise in the budget instead of δ = 0.
        batch_size: batch size for the forward/backward passes through ``feature_fn``.
        chunk_size: rows per block of the estimator's kernel matrix.
        generator: random generator for the random start.

    Attributes:
        history: one dict per step: ``step``, ``ber`` (estimate before the step, in the current
            feature space), ``max_abs_delta``, ``time_s``.
        sigma_: the bandwidth actually used in the last ``fit``.
    """

    def __init__(
        self,
        eps: float,
        step_size: float | None = None,
        steps: int = 50,
        *,
        norm: Norm = "linf",
        sigma: float | str = 0.3,
        sigma_scale: float = 1.0,
        kernel: Kernel = "rbf",
        normalize: Normalize = "maxabs",
        feature_fn: Callable[[Tensor], Tensor] | None = None,
        refresh_features: Callable[[Tensor, Tensor], Callable[[Tensor], Tensor]] | None = None,
        refresh_every: int = 0,
        clamp: tuple[float, float] | None = (0.0, 1.0),
        random_start: bool = False,
        batch_size: int = 512,
        chunk_size: int = 512,
        generator: torch.Generator | None = None,
    ) -> None:
        self.eps = check_positive("eps", eps)
        self.step_size = eps / 10 if step_size is None else check_positive("step_size", step_size)
        self.steps = check_positive_int("steps", steps)
        _check_norm(norm)
        self.norm = norm
        if isinstance(sigma, str):
            if sigma != "median_nn":
                raise ValueError(f"sigma must be a positive number or 'median_nn', got {sigma!r}")
        else:
            check_positive("sigma", sigma)
        self.sigma = sigma
        self.sigma_scale = check_positive("sigma_scale", sigma_scale)
        if kernel not in ("rbf", "sigmoid"):
            raise ValueError(f"kernel must be 'rbf' or 'sigmoid', got {kernel!r}")
        if normalize not in ("maxabs", "none"):
            raise ValueError(f"normalize must be 'maxabs' or 'none', got {normalize!r}")
        self.kernel, self.normalize = kernel, normalize
        self.feature_fn = feature_fn
        self.refresh_features = refresh_features
        self.refresh_every = int(check_nonnegative("refresh_every", refresh_every))
        _check_clamp(clamp)
        self.clamp = clamp
        self.random_start = bool(random_start)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.generator = generator
        self.history: list[dict[str, float]] = []
        self.sigma_: float | None = None

    def _ber(self, z: Tensor, y: Tensor, num_classes: int, sigma: float) -> Tensor:
        return bayes_error_estimate(
            z,
            y,
            num_classes,
            sigma,
            kernel=self.kernel,
            normalize=self.normalize,
            chunk_size=self.chunk_size,
        )

    def _features(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        return torch.cat([fn(b) for b in x.split(self.batch_size)])

    def _ber_and_grad(
        self, fn: Callable[[Tensor], Tensor] | None, xp: Tensor, y: Tensor, c: int, sigma: float
    ) -> tuple[float, Tensor]:
        if fn is None:
            xr = xp.detach().requires_grad_(True)
            ber = self._ber(xr, y, c, sigma)
            (g,) = torch.autograd.grad(ber, xr)
            return float(ber.detach()), g
        # Two passes (authors' pipeline): features without a graph, gradient w.r.t. the
        # features, then back-propagate it through feature_fn batch by batch.
        with torch.no_grad():
            z = self._features(fn, xp)
        z.requires_grad_(True)
        ber = self._ber(z, y, c, sigma)
        (gz,) = torch.autograd.grad(ber, z)
        grads = []
        for xb, gb in zip(xp.split(self.batch_size), gz.split(self.batch_size), strict=True):
            xb = xb.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(fn(xb), xb, grad_outputs=gb.reshape(-1, *z.shape[1:]))
            grads.append(gx)
        return float(ber.detach()), torch.cat(grads)

    def fit(self, x: Tensor, y: Tensor) -> Tensor:
        """Compute the BEO perturbation of ``(x, y)``.

        Args:
            x: clean inputs of shape ``(N, ...)`` inside ``clamp``.
            y: int64 labels of shape ``(N,)`` with at least two classes.

        Returns:
            The perturbation δ (same shape as ``x``, detached) with ``‖δ_i‖ ≤ eps`` and
            ``x + δ`` inside ``clamp``.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating-point tensor of shape (N, ...)")
        num_classes = _check_labels(y, x.shape[0], None)
        y = y.long()
        counts = torch.bincount(y)
        if int(counts.gt(0).sum()) < 2:
            raise ValueError("y must contain at least 2 classes (got a single-class dataset)")
        if bool(counts.eq(1).any()):
            warnings.warn(
                "y has a class with a single example: its leave-one-out posterior never favours "
                "its own class",
                stacklevel=2,
            )
        _check_x_range(x, self.clamp)
        x = x.detach()
        if self.random_start:
            delta = random_noise(
                x, self.eps, norm=self.norm, clamp=self.clamp, generator=self.generator
            )
        else:
            delta = torch.zeros_like(x)
        fn = self.feature_fn
        self.history = []
        sigma: float | None = None
        for step in range(self.steps):
            t0 = time.perf_counter()
            refresh_now = self.refresh_features is not None and (
                step == 0 or (self.refresh_every > 0 and step % self.refresh_every == 0)
            )
            if refresh_now:
                fn = self.refresh_features((x + delta).detach(), y)
            if sigma is None or (refresh_now and self.sigma == "median_nn"):
                sigma = self._resolve_sigma(fn, x + delta)
            ber, g = self._ber_and_grad(fn, x + delta, y, num_classes, sigma)
            if not math.isfinite(ber) or not torch.isfinite(g).all():
                raise FloatingPointError(
                    f"non-finite Bayes-error estimate or gradient at step {step} (ber={ber})"
                )
            if self.norm == "linf":
                direction = g.sign()
            else:
                direction = g / _per_example_norm(g).clamp_min(1e-12)
            delta = project_perturbation(
                delta + self.step_size * direction, x, self.eps, self.norm, self.clamp
            )
            self.history.append(
                {
                    "step": float(step),
                    "ber": ber,
                    "max_abs_delta": float(delta.abs().max()),
                    "time_s": time.perf_counter() - t0,
                }
            )
        self.sigma_ = sigma
        return delta.detach()

    def _resolve_sigma(self, fn: Callable[[Tensor], Tensor] | None, xp: Tensor) -> float:
        if self.sigma != "median_nn":
            return float(self.sigma)
        with torch.no_grad():
            z = _flatten(xp if fn is None else self._features(fn, xp))
            if self.normalize == "maxabs":
                z = z / z.abs().max().clamp_min(1e-12)
            sigma = self.sigma_scale * median_nn_distance(z, self.chunk_size)
        if sigma <= 0:
            raise ValueError("sigma='median_nn' gave 0 (duplicate rows); pass a number")
        return sigma
