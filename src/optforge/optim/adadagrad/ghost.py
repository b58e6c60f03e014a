r"""The batch-size tests' statistics from one ordinary backward ("ghost norms").

The norm, inner-product, orthogonality and augmented tests need only

.. math::

    \textstyle\sum_i G_i,\qquad
    \sum_j m_{2,j} = \sum_i \lVert G_i\rVert^2 - b\,\lVert\bar G\rVert^2,\qquad
    a_i = \langle G_i, \bar G\rangle,

never a per-example gradient :math:`G_i` itself. One forward of the whole batch and one
backward of :math:`\sum_i \ell_i` give :math:`\sum_i G_i` and, per ``nn.Linear``,
``nn.Embedding``, ``nn.LayerNorm``, RMSNorm and ``nn.Conv1d``/``nn.Conv2d`` (``groups=1``) layer,
its inputs and output gradients, from which
:math:`\lVert G_i\rVert^2` and :math:`\langle G_i, \bar G\rangle` follow exactly
(:class:`~optforge.func.GhostGradients`; sequences included). The per-example losses
:math:`\ell_i` = ``loss_fn(out_i, y_i)`` (a batch of one, as in the ``torch.func`` path) come from
one ``reduction="none"`` call for the stock torch losses where that is exact
(:mod:`~optforge.optim.adadagrad.example_losses`), else from ``torch.func.vmap`` over
``loss_fn`` only — the model runs once, batched.

Requirements: every trainable parameter lives in one of the supported modules (not shared) and
the model treats the examples of a batch independently (batch-first, no BatchNorm in train
mode); otherwise :class:`~optforge.func.UnsupportedModuleError` is raised and
:func:`~optforge.optim.adadagrad.batch_grad_stats` (``method="auto"``) falls back to the
``torch.func`` per-example gradients. The coordinate-wise test needs every
:math:`\sum_i G_{ij}^2` and always uses the per-example path.

Precision: :math:`\sum_j m_{2,j}` is a difference of two float64 sums of (float32) squared norms;
its relative error is about :math:`\epsilon\,\lVert\bar G\rVert^2 / S` — large only when the norm
test's :math:`\hat b = S/(\eta^2\lVert\bar G\rVert^2)` is itself tiny (the batch size is then
kept anyway).

Example::

    stats, loss = ghost_grad_stats(model, F.cross_entropy, x, y, inner_product=True)
    norm_test(stats, eta=0.5), augmented_inner_product_test(stats, theta=0.5, nu=0.5)
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors

from optforge.func import GhostGradients, GhostNormRecorder, UnsupportedModuleError
from optforge.optim.adadagrad.example_losses import per_example_losses
from optforge.optim.adadagrad.grad_stats import GradStats

__all__ = ["ghost_grad_stats"]


def ghost_grad_stats(
    model: nn.Module,
    loss_fn: Any,
    inputs: Tensor,
    targets: Tensor,
    *,
    inner_product: bool = False,
    dtype: torch.dtype = torch.float32,
    process_group: Any = None,
    distributed: bool = False,
) -> tuple[GradStats, Tensor]:
    """Total-only :class:`GradStats` of a batch from one backward (module docstring).

    Arguments as in :func:`~optforge.optim.adadagrad.batch_grad_stats` (no chunking: the
    backward is an ordinary batched one). ``.grad`` is left untouched.

    Raises:
        UnsupportedModuleError: a trainable parameter outside the supported modules, a shared
            parameter, activations that are not batch-first, or a model output that is not a
            tensor.
    """
    stats, loss, _ = _ghost_grad_stats(
        model, loss_fn, inputs, targets, inner_product=inner_product, dtype=dtype,
        process_group=process_group, distributed=distributed,
    )  # fmt: skip
    return stats, loss


def _ghost_grad_stats(
    model: nn.Module,
    loss_fn: Any,
    inputs: Tensor,
    targets: Tensor,
    *,
    inner_product: bool = False,
    dtype: torch.dtype = torch.float32,
    process_group: Any = None,
    distributed: bool = False,
    params: list[Tensor] | None = None,
    modules: list[nn.Module] | None = None,
) -> tuple[GradStats, Tensor, list[Tensor]]:
    """:func:`ghost_grad_stats` plus the local ``Σ_i G_i`` per trainable parameter
    (``params``, ``modules``: the model's trainable parameters and ``list(model.modules())``,
    if the caller has them already)."""
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    if modules is None:
        modules = list(model.modules())
    recorder = GhostNormRecorder(modules, params=params)
    b = int(inputs.shape[0])
    with _grad_enabled(), recorder:
        out = model(inputs)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != b:
            raise UnsupportedModuleError(
                "ghost norms need the model to return one batch-first tensor, got "
                f"{getattr(out, 'shape', type(out).__name__)}"
            )
        losses = per_example_losses(out, targets, loss_fn)
        if losses is None:  # not a recognised stock loss: vmap over loss_fn
            losses = _PER_EXAMPLE_LOSSES(out, targets, loss_fn)
    if losses.dim() != 1:
        losses = losses.reshape(-1)
    ghost, grads = GhostGradients.capture(recorder, losses, params)
    sums = list(grads)
    for i, g in enumerate(sums):
        if g is None:
            sums[i] = torch.zeros_like(params[i])
    # torch.cat of the flattened sums (in C++); a copy, never a view of ``sums`` (divided later)
    total = _flatten_dense_tensors(sums) if len(sums) > 1 else sums[0].reshape(-1).clone()
    if total.dtype != dtype:
        total = total.to(dtype)
    # Σ‖G_i‖² − ‖Σ G_i‖²/b in float64, clamped at 0 against rounding
    total_sq = torch.dot(total, total)
    sq_sum = ghost.sqnorm_sum()
    host = not distributed and total.device.type == "cpu"
    if host:  # two CPU scalars read: the scalar arithmetic on the host, no kernels
        total_sq_value = float(total_sq)
        m2 = torch.scalar_tensor(max(float(sq_sum) - total_sq_value * (1.0 / b), 0.0), dtype=dtype)
    else:
        m2 = torch.sub(sq_sum, total_sq, alpha=1.0 / b).clamp_min_(0.0).to(dtype)
    if host and losses.dtype in (torch.float32, torch.float64):
        loss = ghost.loss_sum / b  # == losses.mean() bitwise on CPU (a sum, then a division)
    else:
        loss = losses.detach().mean()
    # ‖g‖² as GradStats.grad_sq_norm computes it (the same dot of the same tensor) and m2's
    # value, kept so the test does not redo them; on CPU, one process (the sums are local)
    g2 = total_sq_value / b**2 if host else None
    m2_sum = float(m2) if host else None
    stats = GradStats(b, total, m2)
    stats._g2, stats._m2_sum = g2, m2_sum
    if distributed:
        stats = stats.all_reduce(process_group)
    if inner_product:  # a_i = ⟨G_i, ref⟩ = ⟨G_i, Σ_j G_j⟩ / b (local), global sum / count
        ref = stats.mean
        if distributed:
            pieces = stats.sum.split([p.numel() for p in params])
            parts = {p: t.view(p.shape) for p, t in zip(params, pieces, strict=True)}
            scale = stats.count
        else:
            parts, scale = dict(zip(params, sums, strict=True)), b
        a = ghost.inner(parts, dtype).double() / scale
        ip_sum = a.sum().to(dtype)
        ip_m2 = (a - a.mean()).pow(2).sum().to(dtype)
        local = GradStats(b, total, m2, ref, ip_sum, ip_m2)
        local._g2, local._m2_sum = g2, m2_sum
        stats = local.all_reduce(process_group) if distributed else local
    return stats, loss, sums


def _grad_enabled() -> Any:
    """``torch.enable_grad()``, or nothing to do when grad mode is on already."""
    return nullcontext() if torch.is_grad_enabled() else torch.enable_grad()


def _one_loss(out: Tensor, y: Tensor, loss_fn: Any) -> Tensor:
    loss = loss_fn(out.unsqueeze(0), y.unsqueeze(0))
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = getattr(loss, "shape", None)
        raise ValueError(f"loss_fn must return a scalar (mean) loss, got shape {shape}")
    return loss


# built once: ``vmap``'s wrapper costs as much as the loss of a small batch
_PER_EXAMPLE_LOSSES = torch.func.vmap(_one_loss, in_dims=(0, 0, None), randomness="different")
