"""Exact, cheap recomputation of the elementwise tensors of Llama-style blocks (opt-in).

Sampling the inputs of the linear layers (:class:`~optforge.nn.WTACRSLinear`) leaves the
tensors other operators keep for the backward pass. In a Llama block two of them are pure
elementwise functions of tensors that are kept anyway, so they can be recomputed in the backward
pass instead of stored (the SwiGLU/RMSNorm analogue of the 1-bit ReLU masks):

* **SwiGLU** ``down(silu(gate(x)) · up(x))``: autograd keeps ``gate``, ``silu(gate)`` and ``up``
  (three ``N × d_ff`` tensors); :class:`SwiGLUMLP` keeps ``gate`` and ``up`` and recomputes
  ``silu(gate)`` in the backward pass (two). When ``down_proj`` is a sampling
  :class:`~optforge.nn.WTACRSLinear`, its ``k`` sampled input rows ``silu(gate_S) · up_S`` are
  recomputed from the kept ``gate``/``up`` as well instead of stored (same draw, same values).
* **RMSNorm** ``w · x / rms(x)``: autograd keeps the input ``x`` and the normalised ``x̂``
  (two ``N × d`` tensors); :class:`RecomputeRMSNorm` keeps ``x`` and recomputes ``x̂`` (one).
  The :class:`~optforge.nn.WTACRSLinear` layers reading its output (q/k/v, gate/up) recompute
  their ``k`` sampled input rows from the kept ``x`` too instead of storing them
  (:class:`~optforge.nn.wta_crs.function.RowSource`).

Both compute the very operators of the Hugging Face modules they replace, in the same order, so
outputs and gradients equal the originals' (tested: ``LlamaRMSNorm`` and the gating product
bitwise, a whole tiny Llama to float summation order); parameters are shared and
``state_dict`` keys unchanged. The cost is one
extra elementwise pass (``silu``; the RMSNorm forward) per backward. :func:`convert_model`
applies them with ``recompute=True`` (recorded in the conversion spec like the ReLU masks).

Example:
    >>> import torch, transformers
    >>> from optforge.nn.wta_crs import RecomputeRMSNorm
    >>> norm = transformers.models.llama.modeling_llama.LlamaRMSNorm(16)
    >>> light = RecomputeRMSNorm.from_module(norm)
    >>> x = torch.randn(4, 16, requires_grad=True)
    >>> bool(torch.equal(light(x), norm(x)))
    True
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from optforge.nn.wta_crs.function import (
    ROW_SOURCE_ATTR,
    RowSource,
    sampled_weight_grad,
    tie_sample,
)
from optforge.nn.wta_crs.layer import WTACRSLinear

__all__ = [
    "RMSNORM_CLASSES",
    "SWIGLU_CLASSES",
    "RecomputeRMSNorm",
    "SwiGLUMLP",
    "recomputable",
    "swiglu",
]

#: Hugging Face MLP classes computing ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``.
SWIGLU_CLASSES: tuple[str, ...] = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP")
#: Hugging Face RMSNorm classes computing ``weight * (x / rms(x))`` in fp32 (``variance_epsilon``).
RMSNORM_CLASSES: tuple[str, ...] = (
    "LlamaRMSNorm",
    "MistralRMSNorm",
    "Qwen2RMSNorm",
    "Qwen3RMSNorm",
)


#: ``act_fn`` types computing ``F.silu`` (``nn.SiLU`` and transformers' own class).
_SILU_CLASSES: tuple[str, ...] = ("SiLUActivation",)


class _SwiGLU(torch.autograd.Function):
    """``silu(gate) · up``, saving ``gate`` and ``up`` only."""

    @staticmethod
    def forward(ctx: Any, gate: Tensor, up: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        gate, up = ctx.saved_tensors
        grad_gate = grad_up = None
        if ctx.needs_input_grad[1]:
            grad_up = grad * F.silu(gate)  # autograd's MulBackward: grad · other
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate)  # MulBackward, SiluBackward
        return grad_gate, grad_up


class _SwiGLUDown(torch.autograd.Function):
    """``down(silu(gate) · up)`` with a sampled ``∇W_down``: keeps ``gate``, ``up``, ``S``, ``w``.

    The forward takes the product ``h`` (computed once, not saved) and the sample ``(idx, w)``
    drawn from it; the backward recomputes ``silu`` for ``∇gate``/``∇up`` and the sampled rows
    ``h_S = silu(gate_S) · up_S`` for ``∇W = (∇Z_S)ᵀ diag(w) h_S`` (the same arithmetic as
    :class:`~optforge.nn.WTACRSLinearFunction` on stored rows).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        gate: Tensor,
        up: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        h: Tensor,
        idx: Tensor,
        weights: Tensor,
        record: Any,
    ) -> Tensor:
        ctx.save_for_backward(gate, up, weight, idx, weights)
        ctx.has_bias = bias is not None
        ctx.record = record
        return F.linear(h, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        gate, up, weight, idx, weights = ctx.saved_tensors
        grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_gate = grad_up = grad_w = grad_b = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_h = torch.matmul(grad_out, weight)
            if ctx.needs_input_grad[1]:
                grad_up = grad_h * F.silu(gate)
            if ctx.needs_input_grad[0]:
                grad_gate = torch.ops.aten.silu_backward(grad_h * up, gate)
        if ctx.needs_input_grad[2]:
            d_ff = gate.shape[-1]
            rows = F.silu(gate.reshape(-1, d_ff).index_select(0, idx)) * up.reshape(
                -1, d_ff
            ).index_select(0, idx)
            grad_w = sampled_weight_grad(grad, idx, weights, rows, weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = grad.sum(0)
        if ctx.record is not None:
            ctx.record(grad)
        return grad_gate, grad_up, grad_w, grad_b, None, None, None, None


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """``F.silu(gate) * up`` keeping ``gate`` and ``up`` for the backward pass, not ``silu(gate)``.

    Same value and gradients as the plain expression (bitwise: the same operators).
    """
    if not torch.is_grad_enabled() or not (gate.requires_grad or up.requires_grad):
        return F.silu(gate) * up
    return _SwiGLU.apply(gate, up)


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    # LlamaRMSNorm.forward, operator for operator
    dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(dtype)


def _norm_rows(x: Tensor, weight: Tensor, idx: Tensor, *, eps: float) -> Tensor:
    """Rows ``idx`` of the flattened RMSNorm output, recomputed from its input."""
    return _rms_norm(x.reshape(-1, x.shape[-1]).index_select(0, idx), weight, eps)


class _RMSNorm(torch.autograd.Function):
    """RMSNorm saving its input only; the backward pass replays the forward under autograd."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        return _rms_norm(x, weight, eps)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(need_x)
            w_ = weight.detach().requires_grad_(need_w)
            out = _rms_norm(x_, w_, ctx.eps)
            inputs = [t for t, need in ((x_, need_x), (w_, need_w)) if need]
            grads = list(torch.autograd.grad(out, inputs, grad))
        grad_x = grads.pop(0) if need_x else None
        grad_w = grads.pop(0) if need_w else None
        return grad_x, grad_w, None


class RecomputeRMSNorm(nn.Module):
    """A Llama-style RMSNorm that keeps only its input for the backward pass.

    ``weight * (x / sqrt(mean(x²) + eps))`` computed in fp32 and cast back, exactly as
    ``LlamaRMSNorm``; the normalised ``x̂`` is recomputed in the backward pass instead of kept.

    Args:
        weight: The scale ``Parameter`` (shared, not copied).
        eps: ``variance_epsilon``.
    """

    def __init__(self, weight: nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        self.variance_epsilon = float(eps)

    @classmethod
    def from_module(cls, norm: nn.Module) -> RecomputeRMSNorm:
        """Wrap a Hugging Face RMSNorm (:data:`RMSNORM_CLASSES`), sharing its ``weight``."""
        if type(norm).__name__ not in RMSNORM_CLASSES:
            raise TypeError(
                f"norm must be one of {', '.join(RMSNORM_CLASSES)}, got {type(norm).__name__}"
            )
        layer = cls(norm.weight, norm.variance_epsilon)
        layer.train(norm.training)
        return layer

    def forward(self, hidden_states: Tensor) -> Tensor:
        # Under torch.compile the plain norm is traced: the compiler's partitioner chooses what
        # to keep and recomputes cheap elementwise work itself (and the backward's replay
        # under autograd, ``torch.autograd.grad``, would break the graph).
        if (
            torch.compiler.is_compiling()
            or not torch.is_grad_enabled()
            or not (hidden_states.requires_grad or self.weight.requires_grad)
        ):
            return _rms_norm(hidden_states, self.weight, self.variance_epsilon)
        out = _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)
        # the input is kept anyway: WTA-CRS layers reading `out` recompute their sampled rows
        rows = functools.partial(_norm_rows, eps=self.variance_epsilon)
        source = RowSource((hidden_states, self.weight), rows, out._version)
        setattr(out, ROW_SOURCE_ATTR, source)
        return out

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}, recompute=True"


class SwiGLUMLP(nn.Module):
    """``down_proj(silu(gate_proj(x)) · up_proj(x))`` keeping ``gate`` and ``up``, not ``silu``.

    Holds the very ``gate_proj``/``up_proj``/``down_proj`` modules of the MLP it replaces (plain
    or :class:`~optforge.nn.WTACRSLinear`), so ``state_dict`` keys are unchanged.
    """

    def __init__(self, gate_proj: nn.Module, up_proj: nn.Module, down_proj: nn.Module) -> None:
        super().__init__()
        self.gate_proj = gate_proj
        self.up_proj = up_proj
        self.down_proj = down_proj

    @classmethod
    def from_module(cls, mlp: nn.Module) -> SwiGLUMLP:
        """Wrap a Hugging Face SwiGLU MLP (:data:`SWIGLU_CLASSES` with a SiLU ``act_fn``)."""
        if not recomputable(mlp):
            raise TypeError(
                f"mlp must be one of {', '.join(SWIGLU_CLASSES)} with a SiLU act_fn, got "
                f"{type(mlp).__name__}"
            )
        layer = cls(mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        layer.train(mlp.training)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        down = self.down_proj
        k = None
        # fused only when gate/up are kept anyway (their gradients are needed)
        needed = gate.requires_grad or up.requires_grad
        if type(down) is WTACRSLinear and needed and gate.shape == up.shape:
            k = down.sample_count(gate)  # h = silu(gate) · up has gate's shape
        if k is None:
            return down(swiglu(gate, up))
        # sampled ∇W_down: its k input rows are recomputed from gate/up too, not stored
        with torch.no_grad():
            h = F.silu(gate) * up
        down._check_input(h)
        with torch.no_grad():
            idx, weights = down.draw(h, k)
        bias = tie_sample(down.bias, down.weight, idx, weights)
        return _SwiGLUDown.apply(gate, up, down.weight, bias, h, idx, weights, down.recorder(h))


def recomputable(module: nn.Module) -> bool:
    """Whether :func:`convert_model(recompute=True) <optforge.nn.convert_model>` replaces it."""
    name = type(module).__name__
    if name in RMSNORM_CLASSES:
        return isinstance(getattr(module, "weight", None), nn.Parameter) and hasattr(
            module, "variance_epsilon"
        )
    if name in SWIGLU_CLASSES:
        act = getattr(module, "act_fn", None)
        silu = type(act) is nn.SiLU or type(act).__name__ in _SILU_CLASSES
        return silu and all(
            isinstance(getattr(module, a, None), nn.Module)
            for a in ("gate_proj", "up_proj", "down_proj")
        )
    return False


def replacement(module: nn.Module) -> nn.Module:
    """The recomputing replacement of a :func:`recomputable` module."""
    if type(module).__name__ in RMSNORM_CLASSES:
        return RecomputeRMSNorm.from_module(module)
    return SwiGLUMLP.from_module(module)
