"""The autograd function of a WTA-CRS linear layer: exact forward, sampled weight gradient.

``y = x Wᵀ + b`` is computed exactly. For the backward pass the function keeps ``k`` sampled
input rows ``H_S`` (drawn by the caller, :func:`~optforge.nn.wta_crs.sample_rows`), their indices
``S`` and importance weights ``w``, instead of the whole input:

$$ \\nabla x = \\nabla Z\\, W, \\qquad \\nabla b = \\textstyle\\sum_i \\nabla Z_i, \\qquad
   \\widehat{\\nabla W} = (\\nabla Z_S)^\\top \\operatorname{diag}(w)\\, H_S . $$

``∇x`` and ``∇b`` are exact; ``∇W`` is the unbiased WTA-CRS estimate. The sample is an input of
the function (not drawn inside it), so several layers reading the same input can share one sample
(one stored copy of ``H_S``), and an optional callback receives ``∇Z`` to cache its row norms.
Under ``torch.compile``, pass the bias through :func:`tie_sample` (as the layer does): otherwise
the compiler may draw the sample again in the backward pass (see there).

Example:
    >>> import torch
    >>> from optforge.nn.wta_crs import WTACRSLinearFunction, sample_rows, tie_sample
    >>> x, w = torch.randn(32, 8), torch.randn(4, 8, requires_grad=True)
    >>> idx, weights = sample_rows(x, 8)
    >>> bias = tie_sample(None, w, idx, weights)  # None in eager mode
    >>> y = WTACRSLinearFunction.apply(x, w, bias, idx, weights, x[idx], None)
    >>> y.sum().backward()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = [
    "ROW_SOURCE_ATTR",
    "RowSource",
    "WTACRSLinearFunction",
    "sampled_weight_grad",
    "tie_sample",
]

_HALF = (torch.float16, torch.bfloat16)

#: Attribute of an activation tensor holding a :class:`RowSource` for it (set by its producer).
ROW_SOURCE_ATTR = "_optforge_row_source"


class RowSource:
    """How to recompute rows of an activation from tensors its producer keeps anyway.

    ``rows(*tensors, idx)`` must return ``activation.reshape(-1, d)[idx]``. A producer that
    saves ``tensors`` for its own backward pass (e.g. an RMSNorm keeping its input) attaches one
    to its output (attribute :data:`ROW_SOURCE_ATTR`); a WTA-CRS layer reading that output then
    saves a reference to those tensors instead of a copy of its ``k`` sampled rows.
    ``version`` is the activation's ``_version`` when it was made: a layer uses the source only
    while the activation is unchanged (an in-place edit makes it store its rows again).
    """

    def __init__(
        self, tensors: tuple[Tensor, ...], rows: Callable[..., Tensor], version: int
    ) -> None:
        self.tensors = tensors
        self.rows = rows
        self.version = version


class WTACRSLinearFunction(torch.autograd.Function):
    """``apply(x, weight, bias, idx, weights, rows, record)``; differentiable once.

    Args (of ``apply``):
        x: Input ``(..., d_in)``.
        weight: ``(d_out, d_in)``.
        bias: ``(d_out,)`` or ``None``.
        idx: int64 ``(k,)`` indices into the flattened rows of ``x``.
        weights: fp32 ``(k,)`` importance weights.
        rows: ``(k, d_in)`` the sampled rows ``x.reshape(-1, d_in)[idx]`` (unweighted), or a
            :class:`RowSource` that recomputes them in the backward pass.
        record: ``None`` or a callable receiving ``∇Z`` as ``(N, d_out)`` in the backward.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        idx: Tensor,
        weights: Tensor,
        rows: Tensor | RowSource,
        record: Callable[[Tensor], None] | None,
    ) -> Tensor:
        if isinstance(rows, RowSource):
            ctx.save_for_backward(idx, weights, weight, *rows.tensors)
            ctx.row_fn = rows.rows
        else:
            ctx.save_for_backward(idx, weights, weight, rows)
            ctx.row_fn = None
        ctx.has_bias = bias is not None
        ctx.record = record
        return F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        idx, weights, weight, *kept = ctx.saved_tensors
        grad = grad_out if grad_out.dim() == 2 else grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.matmul(grad_out, weight)
        if ctx.needs_input_grad[1]:
            rows = kept[0] if ctx.row_fn is None else ctx.row_fn(*kept, idx)
            grad_w = sampled_weight_grad(grad, idx, weights, rows, weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        if ctx.record is not None:
            ctx.record(grad)
        return grad_x, grad_w, grad_b, None, None, None, None


def sampled_weight_grad(
    grad: Tensor, idx: Tensor, weights: Tensor, rows: Tensor, dtype: torch.dtype
) -> Tensor:
    """The WTA-CRS weight gradient ``grad[idx]ᵀ · diag(weights) · rows`` (``grad`` is
    ``[N, out]``, ``rows`` the kept input rows ``[k, in]``), in ``dtype``; half-precision
    products are taken in fp32 (a 1/(s q) weight may exceed fp16's range)."""
    picked = grad.index_select(0, idx).t()
    if picked.dtype in _HALF:
        return torch.mm(picked.float() * weights, rows.float()).to(dtype)
    return torch.mm(picked * weights, rows)


def tie_sample(bias: Tensor | None, weight: Tensor, idx: Tensor, weights: Tensor) -> Tensor | None:
    """The bias to hand to a sampled linear function: ``bias`` itself in eager mode; under
    ``torch.compile``, a copy of it (zeros when ``bias`` is ``None``) that depends on the sample.

    Why: a sampled layer's output ``x Wᵀ + b`` does not depend on its sample, which only the
    backward pass reads. ``torch.compile``'s min-cut partitioner applies its recompute bans
    (random operators, operators off its allow-list) only to what the forward *outputs* need, so
    it may recompute the whole sampler in the backward graph, and inductor's random seeds are
    recomputed as fresh ones: the backward then pairs the gradient rows of *new* indices with the
    input rows the forward kept, a biased weight gradient (torch 2.13; measured max |z| 19–35 over
    1500 steps, ``benchmarks/wta_crs_compile.py``). Routing
    the bias through an opaque operator that reads ``(idx, weights)`` makes the sampler part of
    the forward computation, where random and non-allow-listed operators are never recomputed;
    the backward reuses the forward's draw. Cost under compile: one ``d_out`` copy (and, without
    a bias, a zero bias in the product); eager mode is unchanged. (A related upstream report,
    pytorch/pytorch#190758, shows the same failure for dropout when an activation memory budget
    below 1 lets the partitioner recompute banned random operators.)
    """
    if not torch.compiler.is_compiling():
        return bias
    anchor = bias if bias is not None else weight.new_zeros(weight.shape[0])
    return _tie_to_sample(anchor, idx, weights)


@torch.library.custom_op("optforge::wta_crs_tie_to_sample", mutates_args=())
def _tie_to_sample(anchor: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
    return anchor.clone()


@_tie_to_sample.register_fake
def _tie_to_sample_fake(anchor: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
    return torch.empty_like(anchor)


def _tie_backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
    return grad, None, None


_tie_to_sample.register_autograd(_tie_backward)
