r"""Sven's Gram path: the step from the ``B × B`` Gram matrix, without the ``B × P`` Jacobian.

With the ``"gram"`` solver Sven needs only :math:`G = MM^\top` and the product :math:`M^\top c`.
For a model whose trainable parameters all live in ``nn.Linear``, ``nn.Embedding``,
``nn.LayerNorm``, RMSNorm or ``nn.Conv1d``/``nn.Conv2d`` (``groups=1``) modules (batch-first,
examples independent), one forward of the
batch and one backward of :math:`\sum_i v_i` (:math:`v_i` the per-example loss or residual)
give every layer's inputs :math:`A` and output gradients :math:`\Delta`, and

.. math::

    (JJ^\top)_{ij} = \langle\nabla v_i, \nabla v_j\rangle
        = \sum_{\text{layers}} \bigl[(AA^\top)\circ(\Delta\Delta^\top)\bigr]_{ij}

(summed over the positions of a sequence, :class:`~optforge.func.GhostGradients`). The
conditions are :math:`R = f(Wv)` with :math:`W` the micro-batch averaging matrix and
:math:`f` the residual map (:math:`\ell^{\kappa/2}`), so :math:`M = \mathrm{diag}(f')WJ`,
:math:`G = \mathrm{diag}(f')\,W\,JJ^\top W^\top\mathrm{diag}(f')`, and the direction
:math:`M_k^+R = M^\top c` with :math:`c = (G)_k^+ R` (a ``B × B`` ``eigh``,
:func:`~optforge.optim.sven.direction.gram_direction_weights`) is
:math:`J^\top w = \sum_i w_i\nabla v_i`, :math:`w = W^\top\mathrm{diag}(f')c`: the gradient of
:math:`\sum_i w_i v_i`, assembled from the same factors (no second backward).

Cost: one forward, one backward (to the layer outputs only), the per-layer Grams and one
weighted gradient. Memory: :math:`O(B^2)` plus the activations (for a sequence layer where
it costs fewer operations, its per-example gradients :math:`\Delta_i^\top A_i`, one layer at
a time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from optforge.func import GhostGradients, GhostNormRecorder, UnsupportedModuleError
from optforge.optim.sven.direction import _shape

__all__: list[str] = []


def _gram_blocked(model: nn.Module, params: list[Tensor], group: dict[str, Any]) -> str | None:
    """Why the Gram path cannot run (``None``: it can, as far as is known before the forward)."""
    if group["svd"] != "gram":
        return f"svd={group['svd']!r} needs the Jacobian itself"
    if group["rmsprop"] == "pre":
        return "rmsprop='pre' rescales the Jacobian's columns"
    if group["param_fraction"] < 1.0:
        return "param_fraction < 1 subsamples the Jacobian's columns"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if trainable != {id(p) for p in params}:
        return "the model's trainable parameters are not exactly the optimizer's"
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            return "a BatchNorm module in train mode mixes the examples"
    return None


def _gram_system(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    inputs: Tensor,
    targets: Tensor | None,
    group: dict[str, Any],
    solver_dtype: torch.dtype,
    process_group: Any = None,
) -> tuple[Tensor, Tensor, Tensor, GhostGradients]:
    """``(values, W, JJᵀ, ghost)``: the per-condition values ``W v``, the averaging matrix
    ``W`` (conditions × B; a ``B × 1`` column of ones standing for the identity when
    ``microbatch_size`` is 1), the per-example Gram ``JJᵀ`` (``solver_dtype``) and the factors.

    Raises:
        UnsupportedModuleError: the model (or a residual per example that is not a scalar)
            does not allow the Gram path; the caller falls back to the Jacobian.
    """
    if not isinstance(inputs, Tensor) or inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch, got {_shape(inputs)}")
    batch, m = inputs.shape[0], group["microbatch_size"]
    if targets is not None and (not isinstance(targets, Tensor) or targets.shape[:1] != (batch,)):
        raise ValueError(
            f"targets must have the batch size {batch} as first dimension, got {_shape(targets)}"
        )
    if batch % m:
        raise ValueError(f"microbatch_size={m} must divide the batch size, got B={batch}")
    recorder = GhostNormRecorder.for_model(model)
    with torch.enable_grad(), recorder:
        pred = model(inputs)
        out = loss_fn(pred) if targets is None else loss_fn(pred, targets)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != batch:
            raise ValueError(
                f"loss_fn must return per-example losses of shape (B,) or (B, ...) "
                f"(use reduction='none'), got shape {_shape(out)} for a batch of {batch}"
            )
        if group["residual_mode"]:
            if out[0].numel() != 1:
                raise UnsupportedModuleError("several residuals per example")
            per_example = out.reshape(batch)
        else:
            per_example = out.reshape(batch, -1).sum(1)
    ghost, _ = GhostGradients.capture(recorder, per_example)
    per_example = per_example.detach()
    if process_group is not None:  # data-parallel: the union batch's factors, rank order
        ghost, per_example = _all_gather(ghost, per_example, process_group)
        batch = per_example.shape[0]
    jjt = ghost.gram(solver_dtype)
    if m == 1:  # W = I, kept as a column (the residual map's factors multiply it)
        W = torch.ones(batch, 1, dtype=solver_dtype, device=jjt.device)
        return per_example, W, jjt, ghost
    eye = torch.eye(batch // m, dtype=solver_dtype, device=jjt.device)
    W = eye.repeat_interleave(m, dim=1) / m  # conditions × B
    values = (W @ per_example.to(solver_dtype)).to(per_example.dtype)
    return values, W, jjt, ghost


def _all_gather(ghost: GhostGradients, values: Tensor, group: Any) -> tuple[GhostGradients, Tensor]:
    """Every rank's factors and per-example values, concatenated in rank order, on every rank.

    One ``all_gather_into_tensor`` of a float64 buffer ``[n_local, width]`` per rank (values,
    then each layer's inputs — ids are exact in float64 up to 2⁵³ — and output gradients),
    after a tiny one checking that every rank holds the same shapes.
    """
    import torch.distributed as dist

    n = values.shape[0]
    pieces = [values.reshape(n, 1)]
    for _, _, x, d in ghost.layers:
        pieces += [x.reshape(n, -1), d.reshape(n, -1)]
    local = torch.cat([t.to(torch.float64) for t in pieces], dim=1)
    world = dist.get_world_size(group)
    shapes = torch.tensor([[n, local.shape[1]]], device=local.device)
    all_shapes = torch.empty(world, 2, dtype=shapes.dtype, device=local.device)
    dist.all_gather_into_tensor(all_shapes, shapes, group=group)
    if not bool((all_shapes == shapes).all()):
        raise ValueError(
            "data-parallel Sven needs the same local batch size and input shapes on every rank, "
            f"got (examples, factor width) per rank {all_shapes.tolist()}"
        )
    full = torch.empty(world * n, local.shape[1], dtype=local.dtype, device=local.device)
    dist.all_gather_into_tensor(full, local, group=group)
    widths = [t.shape[1] for t in pieces]
    columns = full.split(widths, dim=1)
    gathered_values = columns[0].reshape(-1).to(values.dtype)
    layers = []
    for i, (kind, module, x, d) in enumerate(ghost.layers):
        gx, gd = columns[1 + 2 * i], columns[2 + 2 * i]
        layers.append(
            (
                kind,
                module,
                gx.reshape(world * n, *x.shape[1:]).to(x.dtype),
                gd.reshape(world * n, *d.shape[1:]).to(d.dtype),
            )
        )
    return GhostGradients(layers, world * n), gathered_values


def _flat_weighted(
    ghost: GhostGradients, weights: Tensor, params: list[Tensor], dtype: torch.dtype
) -> Tensor:
    """``Σ_i w_i ∇v_i`` flattened in ``params`` order, in ``dtype``."""
    by_id = {id(p): g for p, g in ghost.weighted_grads(weights)}
    return torch.cat(
        [
            by_id[id(p)].reshape(-1).to(dtype)
            if id(p) in by_id
            else torch.zeros(p.numel(), dtype=dtype, device=p.device)
            for p in params
        ]
    )
