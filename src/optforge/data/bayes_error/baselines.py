"""Baselines of unlearnable examples: random noise, error-minimising noise, partial protection.

:func:`random_noise` draws uniform noise within the same budget as the protection.
:func:`error_minimizing_noise` is the min-min "unlearnable examples" noise of Huang, Ma,
Erfani, Bailey, Wang, ICLR 2021 (sample-wise or class-wise). :func:`mix_protected` protects each
example independently with probability ρ (the authors' ``mix.py`` in Zhang et al.,
arXiv:2511.08191): by concavity of the Bayes error in the data distribution, protecting a
fraction ρ raises it by at least ρ times the full-protection increase.

Example::

    >>> import torch
    >>> x = torch.rand(100, 8)
    >>> delta = random_noise(x, 0.1, generator=torch.Generator().manual_seed(0))
    >>> mixed, mask = mix_protected(x, x + delta, 0.5, generator=torch.Generator().manual_seed(0))
    >>> mixed.shape == x.shape
    True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from optforge._core import check_in_range, check_positive, check_positive_int, make_generator
from optforge.data.bayes_error.budget import (
    Norm,
    _check_clamp,
    _check_norm,
    _check_x_range,
    _per_example_norm,
    project_perturbation,
)
from optforge.data.bayes_error.estimate import _check_labels

__all__ = ["error_minimizing_noise", "mix_protected", "random_noise"]


def random_noise(
    x: Tensor,
    eps: float,
    *,
    norm: Norm = "linf",
    clamp: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random-noise baseline: ``δ ~ U[-eps, eps]`` per entry (L∞) or uniform in the L2 ball.

    Args:
        x: clean inputs of shape ``(N, ...)``.
        eps: budget (> 0).
        norm: ``"linf"`` or ``"l2"``.
        clamp: valid input range or ``None``; ``x + δ`` is clipped into it.
        generator: random generator (default: seeded from ``torch.initial_seed()``).

    Returns:
        The perturbation δ, same shape as ``x``.
    """
    check_positive("eps", eps)
    _check_norm(norm)
    _check_clamp(clamp)
    _check_x_range(x, clamp)
    gen = generator if generator is not None else make_generator(None, x.device)
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    else:
        d = x[0].numel()
        direction = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        direction = direction / _per_example_norm(direction).clamp_min(1e-12)
        radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) ** (1 / d)
        delta = direction * (eps * radius).reshape(-1, *([1] * (x.dim() - 1)))
    return project_perturbation(delta, x, eps, norm, clamp)


def mix_protected(
    clean_x: Tensor,
    protected_x: Tensor,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Protect each example independently with probability ``ratio`` (authors' ``mix.py``).

    Args:
        clean_x: clean inputs of shape ``(N, ...)``.
        protected_x: protected inputs, same shape.
        ratio: protected fraction ρ in ``[0, 1]``.
        generator: random generator for the per-index choice.

    Returns:
        ``(mixed_x, mask)`` where ``mask[i]`` is True when example ``i`` is the protected one.
        The "clean-only" baseline trains on ``clean_x[~mask]``.
    """
    check_in_range("ratio", ratio, 0.0, 1.0)
    if clean_x.shape != protected_x.shape:
        raise ValueError(
            f"protected_x shape {tuple(protected_x.shape)} != clean_x shape {tuple(clean_x.shape)}"
        )
    gen = generator if generator is not None else make_generator(None, "cpu")
    mask = (torch.rand(clean_x.shape[0], generator=gen) < ratio).to(clean_x.device)
    expand = mask.reshape(-1, *([1] * (clean_x.dim() - 1)))
    return torch.where(expand, protected_x, clean_x), mask


def error_minimizing_noise(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    step_size: float | None = None,
    pgd_steps: int = 20,
    train_steps: int = 10,
    stop_error: float = 0.01,
    max_rounds: int = 50,
    batch_size: int = 128,
    samplewise: bool = True,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Error-minimising ("unlearnable examples", Huang et al. ICLR 2021) noise, min-min.

    Each round trains ``model`` for ``train_steps`` batches on ``x + δ``, then, for every batch
    of the whole set, takes ``pgd_steps`` sign steps of size ``step_size`` that *minimise* the
    cross-entropy w.r.t. δ (projected on the L∞ ball and the box); stops once the training
    error on ``x + δ`` is below ``stop_error`` or after ``max_rounds`` rounds. The class-wise
    variant (``samplewise=False``) keeps one δ per class (use ``pgd_steps=1``,
    ``stop_error=0.1`` for the original defaults).

    Args:
        model: classifier returning logits; trained in place.
        optimizer: optimizer over ``model``'s parameters.
        x: clean inputs of shape ``(N, ...)`` within ``clamp``.
        y: int64 labels of shape ``(N,)``.
        eps: L∞ budget (> 0).
        step_size: PGD step; default ``eps / 10``.
        pgd_steps: sign-PGD steps per batch and round.
        train_steps: model training batches per round.
        stop_error: stop when the training error on ``x + δ`` falls below it.
        max_rounds: maximum number of rounds.
        batch_size: batch size for training and PGD.
        samplewise: one δ per example (True) or per class (False).
        clamp: valid input range or ``None``.
        generator: random generator for batch order.

    Returns:
        Per-example perturbation δ (same shape as ``x``) with ``x + δ`` in range.
    """
    check_positive("eps", eps)
    step = eps / 10 if step_size is None else check_positive("step_size", step_size)
    pgd_steps = check_positive_int("pgd_steps", pgd_steps)
    train_steps = check_positive_int("train_steps", train_steps)
    max_rounds = check_positive_int("max_rounds", max_rounds)
    batch_size = check_positive_int("batch_size", batch_size)
    check_in_range("stop_error", stop_error, 0.0, 1.0)
    _check_clamp(clamp)
    _check_x_range(x, clamp)
    num_classes = _check_labels(y, x.shape[0], None)
    if int(torch.bincount(y).gt(0).sum()) < 2:
        raise ValueError("y must contain at least 2 classes (got a single-class dataset)")
    gen = generator if generator is not None else make_generator(None, "cpu")
    n = x.shape[0]
    base = torch.zeros_like(x) if samplewise else x.new_zeros((num_classes, *x.shape[1:]))

    def full_delta(idx: Tensor, d: Tensor) -> Tensor:
        raw = d[idx] if samplewise else d[y[idx]]
        return raw if clamp is None else (x[idx] + raw).clamp(*clamp) - x[idx]

    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    cursor, order = 0, torch.randperm(n, generator=gen).to(x.device)
    for _ in range(max_rounds):
        model.train()
        for _ in range(train_steps):
            if cursor >= n:
                cursor, order = 0, torch.randperm(n, generator=gen).to(x.device)
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            optimizer.zero_grad()
            loss_fn(model(x[idx] + full_delta(idx, base)), y[idx]).backward()
            optimizer.step()
        model.eval()
        for p in params:
            p.requires_grad_(False)
        try:
            for start in range(0, n, batch_size):
                idx = torch.arange(start, min(start + batch_size, n), device=x.device)
                for _ in range(pgd_steps):
                    d = base.clone().requires_grad_(True)
                    loss = loss_fn(model(x[idx] + full_delta(idx, d)), y[idx])
                    (g,) = torch.autograd.grad(loss, d)
                    with torch.no_grad():
                        base = (base - step * g.sign()).clamp(-eps, eps)
            with torch.no_grad():
                all_idx = torch.arange(n, device=x.device)
                pred = torch.cat(
                    [model(x[b] + full_delta(b, base)).argmax(1) for b in all_idx.split(batch_size)]
                )
                err = float((pred != y).float().mean())
        finally:
            for p in params:
                p.requires_grad_(True)
        if err < stop_error:
            break
    with torch.no_grad():
        return full_delta(torch.arange(n, device=x.device), base)
