r"""Per-example gradients with ``torch.func`` and their statistics, one chunk at a time.

:func:`per_sample_grads` returns the per-example gradients :math:`G_i = \nabla_x \ell(x; \xi_i)`
of a mean-reduced loss (``torch.func.vmap(grad)`` over the examples, at the current
parameters). :func:`batch_grad_stats` turns them into :class:`GradStats` without ever holding
more than one chunk of the ``(b, p)`` matrix: each chunk is centred in place and reduced with
matrix-vector products; chunks merge exactly. When the inner-product statistics are wanted
(:math:`a_i = \langle G_i, g\rangle` with :math:`g` the global batch mean), a second pass
recomputes the chunks after :math:`g` is known, unless the batch is one chunk on one process.

Under ``torch.distributed`` (initialised, more than one rank) the statistics are all-reduced
across ``process_group``: every rank gets those of the global batch.

``batch_grad_stats(method="auto")`` (what :class:`AdaptiveBatch` uses) computes the totals the
norm and inner-product tests need from one ordinary backward instead ("ghost norms",
:mod:`optforge.optim.adadagrad.ghost`) when every trainable parameter lives in an ``nn.Linear``,
``nn.Embedding``, ``nn.LayerNorm``, RMSNorm or ``nn.Conv1d``/``nn.Conv2d`` module, and falls
back to the per-example
gradients otherwise; ``method="per_example"`` (the default here) always uses them (the
coordinate-wise test needs them).

Example::

    stats, loss = batch_grad_stats(model, F.cross_entropy, x, y, inner_product=True,
                                   chunk_size=256)
    stats.mean          # the minibatch gradient, flattened in model.parameters() order
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from optforge._core import check_choice, check_positive_int
from optforge.func import UnsupportedModuleError
from optforge.optim.adadagrad.ghost import _ghost_grad_stats
from optforge.optim.adadagrad.grad_stats import GradStats

__all__ = ["METHODS", "LossFn", "batch_grad_stats", "per_sample_grads"]

METHODS: tuple[str, ...] = ("auto", "ghost", "per_example")

LossFn = Callable[[Tensor, Tensor], Tensor]


def per_sample_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Per-example gradients ``{name: (b, *param.shape)}`` via ``torch.func.vmap(grad)``.

    ``loss_fn(outputs, targets)`` must be a mean-reduced loss: it is called on one example at a
    time (unsqueezed to a batch of one). Buffers are passed through unchanged; BatchNorm in train
    mode raises ``ValueError``; dropout draws a different mask per example.
    """
    b = _check_batch(inputs, targets)
    _check_model(model)
    params = _trainable(model)
    fn = _per_example_fn(model, loss_fn)
    step = b if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    parts = [fn(params, inputs[i : i + step], targets[i : i + step])[0] for i in range(0, b, step)]
    return {k: torch.cat([p[k] for p in parts]) for k in params}


def batch_grad_stats(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    inner_product: bool = False,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    process_group: Any = None,
    distributed: bool | None = None,
    method: str = "per_example",
) -> tuple[GradStats, Tensor]:
    """Per-example gradient statistics of a batch, never holding more than one chunk of ``G``.

    Args:
        model: as for :func:`per_sample_grads`.
        loss_fn: as for :func:`per_sample_grads`.
        inputs: as for :func:`per_sample_grads`.
        targets: as for :func:`per_sample_grads`.
        inner_product: also take the inner-product statistics with ``ref`` = the (global) batch
            mean. With one chunk on one process ``G`` is formed once; otherwise a second pass
            over the chunks recomputes ``G`` after ``g`` is known.
        chunk_size: examples per ``vmap`` call (memory cap, ``max_test_micro_batch_size``).
        dtype: dtype of the statistics (default: float64 for float64 params, else float32).
        process_group: all-reduce across the ranks of this group (with ``distributed``).
        distributed: all-reduce across ranks (default: when ``torch.distributed`` is
            initialised with more than one rank).
        method: ``"per_example"`` (default; ``torch.func`` per-example gradients,
            per-coordinate statistics), ``"ghost"`` (one batched backward, total-only
            statistics, see :mod:`optforge.optim.adadagrad.ghost`; raises
            ``UnsupportedModuleError`` for other layers) or ``"auto"`` (ghost when the model
            allows it, else per-example).

    Returns:
        ``(stats, loss)``: the (global) statistics and the local mean loss (detached).
    """
    stats, loss, _ = _batch_grad_stats(
        model, loss_fn, inputs, targets, inner_product=inner_product, chunk_size=chunk_size,
        dtype=dtype, process_group=process_group, distributed=distributed, method=method,
    )  # fmt: skip
    return stats, loss


def _batch_grad_stats(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    inner_product: bool = False,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    process_group: Any = None,
    distributed: bool | None = None,
    method: str = "per_example",
    checked: bool = False,
) -> tuple[GradStats, Tensor, tuple[list[Tensor], list[Tensor]] | None]:
    """:func:`batch_grad_stats`, plus ``(params, Σ_i G_i per parameter)`` when the ghost path
    ran on one process (``None`` otherwise). ``checked``: the caller has checked the batch
    and ``method`` already."""
    if checked:
        b = int(inputs.shape[0])
    else:
        b = _check_batch(inputs, targets)
        check_choice("method", method, METHODS)
    modules = list(model.modules())  # one walk: the BatchNorm check, the parameters, the hooks
    _check_model(model, modules)
    trainable = _trainable_params(modules)
    if not trainable:
        raise ValueError("model: has no parameters that require grad")
    if dtype is None:
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in trainable) else torch.float32
    step = b if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    sync = _distributed(process_group) if distributed is None else distributed
    if method != "per_example":
        try:
            stats, loss, sums = _ghost_grad_stats(
                model, loss_fn, inputs, targets, inner_product=inner_product, dtype=dtype,
                process_group=process_group, distributed=sync, params=trainable,
                modules=modules,
            )  # fmt: skip
            return stats, loss, None if sync else (trainable, sums)
        except UnsupportedModuleError:
            if method == "ghost":
                raise
    params = _trainable(model)
    fn = _per_example_fn(model, loss_fn)
    numel = sum(p.numel() for p in params.values())
    device = next(iter(params.values())).device
    chunks = [(inputs[i : i + step], targets[i : i + step]) for i in range(0, b, step)]

    loss_sum: Tensor | float = 0.0
    if inner_product and len(chunks) == 1 and not sync:
        mats, losses = _chunk_grads(fn, params, inputs, targets, dtype)
        return _consume(mats, "self"), losses.detach().mean(), None
    stats = GradStats.empty(numel, dtype, device)
    for x, y in chunks:
        mats, losses = _chunk_grads(fn, params, x, y, dtype)
        loss_sum = loss_sum + losses.detach().sum()
        stats = stats.merge(_consume(mats, None))
    if sync:
        stats = stats.all_reduce(process_group)
    if inner_product:  # second pass: inner products with the (global) mean
        ref = stats.mean
        ip_stats = GradStats.empty(numel, dtype, device, ref)
        for x, y in chunks:
            mats, _ = _chunk_grads(fn, params, x, y, dtype)
            ip_stats = ip_stats.merge(_consume(mats, ref))
        stats = ip_stats.all_reduce(process_group) if sync else ip_stats
    return stats, loss_sum / b, None  # type: ignore[return-value]


# -- private helpers ----------------------------------------------------------------------


def _trainable_params(modules: list[nn.Module]) -> list[Tensor]:
    """``[p for p in model.parameters() if p.requires_grad]`` from ``list(model.modules())``
    (the same order: modules in turn, each parameter once)."""
    seen: set[int] = set()
    out: list[Tensor] = []
    for module in modules:
        for p in module._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                if p.requires_grad:
                    out.append(p)
    return out


def _check_model(model: nn.Module, modules: list[nn.Module] | None = None) -> None:
    batchnorm = nn.modules.batchnorm._BatchNorm
    if modules is not None and not any(
        isinstance(m, batchnorm) and m.training for m in modules
    ):  # the common case without named_modules' names
        return
    for name, module in model.named_modules():
        if isinstance(module, batchnorm) and module.training:
            raise ValueError(
                f"model: BatchNorm module {name or type(module).__name__!r} is in train mode, "
                "which mixes the examples of a batch, so per-example gradients are ill-defined; "
                "call model.eval() for the test, or use GroupNorm / "
                "torch.func.replace_all_batch_norm_modules_"
            )


def _check_batch(inputs: Tensor, targets: Tensor) -> int:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a Tensor, got {type(inputs).__name__}")
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a Tensor, got {type(targets).__name__}")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch, got shape {tuple(inputs.shape)}")
    if targets.dim() == 0 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"targets must have the batch size {inputs.shape[0]} of inputs as first dimension, "
            f"got shape {tuple(targets.shape)}"
        )
    return int(inputs.shape[0])


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}


def _per_example_fn(model: nn.Module, loss_fn: LossFn) -> Callable[..., Any]:
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = torch.func.functional_call(model, (params, buffers), (x.unsqueeze(0),))
        loss = loss_fn(out, y.unsqueeze(0))
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar (mean) loss, got shape {loss.shape}")
        return loss

    grad_fn = torch.func.grad_and_value(loss_one)
    return torch.func.vmap(grad_fn, in_dims=(None, 0, 0), randomness="different")


def _chunk_grads(
    fn: Callable[..., Any], params: dict[str, Tensor], x: Tensor, y: Tensor, dtype: torch.dtype
) -> tuple[list[Tensor], Tensor]:
    """Per-example gradients of a chunk as ``(b, p_t)`` matrices we own (safe to overwrite)."""
    grads, losses = fn(params, x, y)
    mats = []
    for g in (grads[k] for k in params):  # the order of params (and of .grad write-back)
        mat = g.reshape(g.shape[0], -1)
        if mat.dtype != dtype:
            mat = mat.to(dtype)
        elif not mat.is_contiguous():
            mat = mat.contiguous()
        mats.append(mat)
    return mats, losses


def _consume(mats: list[Tensor], ref: Tensor | str | None) -> GradStats:
    """:meth:`GradStats.from_samples` of the concatenated ``mats`` without concatenating them,
    centring **in place** (no ``(b, p)`` temporaries; column sums as matrix-vector products).

    ``ref="self"`` takes the inner products with this chunk's own mean.
    """
    n = mats[0].shape[0]
    ones = torch.ones(1, n, dtype=mats[0].dtype, device=mats[0].device)
    sums = [(ones @ m).squeeze(0) for m in mats]
    total = torch.cat(sums)
    direction = total / n if isinstance(ref, str) else ref
    a = None
    offset = 0
    m2s = []
    for m, col_sum in zip(mats, sums, strict=True):
        width = m.shape[1]
        if direction is not None:
            part = m @ direction[offset : offset + width].to(m.dtype)
            a = part if a is None else a + part
        m.sub_(col_sum / n)
        m.mul_(m)
        m2s.append((ones @ m).squeeze(0))
        offset += width
    if direction is None:
        return GradStats(n, total, torch.cat(m2s))
    assert a is not None
    return GradStats(n, total, torch.cat(m2s), direction, a.sum(), (a - a.mean()).pow(2).sum())


def _distributed(process_group: Any) -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size(process_group) > 1
