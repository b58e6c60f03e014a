r"""Exact per-example gradient squared norms from one backward pass ("ghost norms").

For a batch of N examples with per-example losses :math:`\ell_i`, one backward of
:math:`\sum_i \ell_i` gives, for every layer, its inputs :math:`X_i` (``[T, d_in]`` per example,
T = positions, e.g. tokens) and the gradients :math:`D_i = \partial\sum_j\ell_j/\partial Y_i`
w.r.t. its outputs (``[T, d_out]``). When example i's loss depends only on example i's
activations (batch-first, no mixing across examples), :math:`D_i = \partial\ell_i/\partial Y_i`
and the per-example parameter gradient of each layer is a function of :math:`(X_i, D_i)`:

.. math::

    \text{Linear: } \lVert \nabla_W \ell_i\rVert^2 = \lVert D_i^\top X_i\rVert_F^2
        = \langle X_iX_i^\top,\, D_iD_i^\top\rangle_F ,
    \qquad \lVert \nabla_b \ell_i\rVert^2 = \Big\lVert \sum_t D_{i,t}\Big\rVert^2 ,

    \text{Embedding: } \lVert \nabla_E \ell_i\rVert^2
        = \sum_{t,s} [\mathrm{id}_{i,t} = \mathrm{id}_{i,s}]\,\langle D_{i,t}, D_{i,s}\rangle ,

    \text{LayerNorm / RMSNorm: } \lVert \nabla_\gamma \ell_i\rVert^2
        = \Big\lVert \sum_t D_{i,t}\odot\hat x_{i,t}\Big\rVert^2 ,
    \qquad \lVert \nabla_\beta \ell_i\rVert^2 = \Big\lVert \sum_t D_{i,t}\Big\rVert^2 .

The Linear weight uses the two T×T Gram matrices when
:math:`T^2(d_{in}+d_{out}) < T\,d_{in}d_{out}` and materialises :math:`D_i^\top X_i` otherwise.
A module called several times in the forward pass (weights shared across calls) is handled by
concatenating its calls along T. The squared norm over all parameters is the sum over layers
(accumulated in float64, returned as float32). ``nn.Embedding``'s ``padding_idx`` rows get no
gradient; RMSNorm is any module whose class name contains ``RMSNorm`` and that has a ``weight``
tensor (``torch.nn.RMSNorm``, Llama's); its epsilon is read from ``variance_epsilon`` or ``eps``.

References: I. Goodfellow, "Efficient Per-Example Gradient Computations", arXiv:1510.01799
(2015); X. Li, F. Tramèr, P. Liang, T. Hashimoto, "Large Language Models Can Be Strong
Differentially Private Learners", ICLR 2022, arXiv:2110.05679 (ghost clipping).

Example::

    from optforge.func import GhostNormRecorder, per_example_grad_sqnorms

    sq = per_example_grad_sqnorms(model, lambda: F.cross_entropy(model(x), y, reduction="none"))

    with GhostNormRecorder.for_model(model) as rec:      # when the losses are needed as well
        losses = F.cross_entropy(model(x), y, reduction="none")
    sq = rec.sqnorms(losses, retain_graph=True)           # [N]; .grad untouched
    losses.mean().backward()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GhostKind",
    "GhostNormRecorder",
    "UnsupportedModuleError",
    "ghost_kind",
    "layer_grad_sqnorms",
    "per_example_grad_sqnorms",
]

GhostKind = Literal["linear", "embedding", "layernorm", "rmsnorm"]


class UnsupportedModuleError(ValueError):
    """The model has a trainable parameter, a parameter sharing or an activation layout that
    ghost norms cannot handle exactly (compute exact per-example gradients instead)."""


def per_example_grad_sqnorms(
    model: nn.Module, per_example_losses: Callable[[], Tensor], *, retain_graph: bool = False
) -> Tensor:
    """``||∇_θ ℓ_i||²`` over all trainable parameters of ``model``, for every example, exactly.

    Args:
        model: A module whose trainable parameters all live in ``nn.Linear``, ``nn.Embedding``,
            ``nn.LayerNorm`` or RMSNorm modules, with batch-first activations.
        per_example_losses: Called once (under ``torch.enable_grad()``) to run the forward pass;
            returns the ``[N]`` per-example losses ``ℓ_i``.
        retain_graph: Keep the graph for a later backward.

    Returns:
        ``[N]`` float32 squared norms (detached). Parameter ``.grad`` is left untouched.

    Raises:
        UnsupportedModuleError: a trainable parameter outside the supported modules, a parameter
            shared between modules, or activations that are not batch-first.
        ValueError: no trainable parameter, or losses that are not a 1-D tensor.
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameters")
    recorder = GhostNormRecorder.for_model(model)
    with torch.enable_grad(), recorder:
        losses = per_example_losses()
    return recorder.sqnorms(losses, retain_graph=retain_graph)


class GhostNormRecorder:
    """Forward hooks that keep each supported module's input and output, then ghost norms.

    Use it as a context manager around the forward pass, then call :meth:`sqnorms` with the
    per-example losses. Only modules with a trainable parameter are hooked.

    Args:
        modules: The modules to record (e.g. ``list(model.modules())``); unsupported ones are
            skipped.
        params: The trainable parameters that must be covered (``None``: no coverage check, e.g.
            to measure one layer only).

    Raises:
        UnsupportedModuleError: a parameter shared between two recorded modules, or one of
            ``params`` outside every supported module.
    """

    def __init__(
        self, modules: Iterable[nn.Module], params: Iterable[nn.Parameter] | None = None
    ) -> None:
        self.entries: list[tuple[str, nn.Module, list[tuple[Tensor, Tensor]]]] = []
        covered: dict[int, str] = {}
        for module in modules:
            kind = ghost_kind(module)
            if kind is None:
                continue
            for p in module.parameters(recurse=False):
                if id(p) in covered:
                    raise UnsupportedModuleError(
                        "ghost norms do not support parameters shared between modules (tied "
                        "embeddings)"
                    )
                covered[id(p)] = kind
            self.entries.append((kind, module, []))
        if params is not None:
            missing = [p for p in params if id(p) not in covered]
            if missing:
                raise UnsupportedModuleError(
                    f"ghost norms cover nn.Linear, nn.Embedding, nn.LayerNorm and RMSNorm "
                    f"modules only; {len(missing)} trainable parameter(s) (shapes "
                    f"{[tuple(p.shape) for p in missing[:4]]}) are outside them (freeze them)"
                )
        self.handles: list[Any] = []

    @classmethod
    def for_model(cls, model: nn.Module) -> GhostNormRecorder:
        """A recorder over every module of ``model`` that must cover all its trainable params."""
        return cls(list(model.modules()), params=[p for p in model.parameters() if p.requires_grad])

    def __enter__(self) -> GhostNormRecorder:
        for _, module, store in self.entries:
            if any(p.requires_grad for p in module.parameters(recurse=False)):
                self.handles.append(module.register_forward_hook(_store_hook(store)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def sqnorms(self, losses: Tensor, *, retain_graph: bool = False) -> Tensor:
        """Per-example squared gradient norms of the recorded modules' trainable parameters.

        Args:
            losses: ``[N]`` per-example losses computed in the recorded forward pass.
            retain_graph: Keep the graph for a later backward.

        Returns:
            ``[N]`` float32 squared norms (detached); the recorded activations are released.
        """
        if not isinstance(losses, Tensor) or losses.dim() != 1:
            shape = getattr(losses, "shape", type(losses).__name__)
            raise ValueError(f"losses must be a 1-D tensor of per-example losses, got {shape}")
        n = losses.shape[0]
        calls = [(kind, m, x, y) for kind, m, store in self.entries for x, y in store]
        if not calls:
            raise ValueError(
                "no supported module with trainable parameters ran in the forward pass"
            )
        with torch.enable_grad():
            total = losses.sum()
        outs = [y for *_, y in calls]
        deltas = torch.autograd.grad(total, outs, allow_unused=True, retain_graph=retain_graph)
        acc = torch.zeros(n, dtype=torch.float64, device=total.device)
        # a module called several times: its per-sample grad is the sum over calls (concat in time)
        grouped: dict[int, tuple[str, nn.Module, list[Tensor], list[Tensor]]] = {}
        for (kind, module, x, y), d in zip(calls, deltas, strict=True):
            if d is None:
                d = torch.zeros_like(y)
            entry = grouped.setdefault(id(module), (kind, module, [], []))
            entry[2].append(_per_sample(x, n, kind))
            entry[3].append(_per_sample(d, n, "output"))
        for kind, module, xs, ds in grouped.values():
            x, d = torch.cat(xs, dim=1), torch.cat(ds, dim=1)
            acc += _module_sqnorm(kind, module, x, d).double()
        for *_, store in self.entries:
            store.clear()
        return acc.to(torch.float32)


def ghost_kind(module: nn.Module) -> GhostKind | None:
    """``"linear"``, ``"embedding"``, ``"layernorm"``, ``"rmsnorm"``, or ``None`` if unsupported."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    if "RMSNorm" in type(module).__name__ and isinstance(getattr(module, "weight", None), Tensor):
        return "rmsnorm"
    return None


def layer_grad_sqnorms(module: nn.Module, inputs: Tensor, output_grads: Tensor) -> Tensor:
    """Per-example squared norm of one module's trainable-parameter gradient.

    Args:
        module: An ``nn.Linear``, ``nn.Embedding``, ``nn.LayerNorm`` or RMSNorm module.
        inputs: Its input, batch-first: ``[N, ..., d_in]`` (token ids ``[N, ...]`` for an
            embedding).
        output_grads: Gradient of ``Σ_i ℓ_i`` w.r.t. its output, ``[N, ..., d_out]``.

    Returns:
        ``[N]`` squared norms (zeros if the module has no trainable parameter).
    """
    kind = ghost_kind(module)
    if kind is None:
        raise UnsupportedModuleError(
            f"ghost norms support nn.Linear, nn.Embedding, nn.LayerNorm and RMSNorm modules, "
            f"got {type(module).__name__}"
        )
    n = inputs.shape[0] if inputs.dim() > 0 else 0
    if not any(p.requires_grad for p in module.parameters(recurse=False)):
        return torch.zeros(n, dtype=torch.float32, device=output_grads.device)
    x, d = _per_sample(inputs.detach(), n, kind), _per_sample(output_grads.detach(), n, "output")
    return _module_sqnorm(kind, module, x, d)


def _store_hook(store: list[tuple[Tensor, Tensor]]) -> Callable[..., None]:
    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        store.append((inputs[0].detach(), output))

    return hook


def _per_sample(x: Tensor, n: int, kind: str) -> Tensor:
    """Reshape to ``[N, T, d]`` (``[N, T]`` for embedding ids), checking the batch dimension."""
    if x.dim() < 2 or x.shape[0] != n:
        raise UnsupportedModuleError(
            f"ghost norms need batch-first activations; a module saw shape {tuple(x.shape)} "
            f"for a batch of {n}"
        )
    return x.reshape(n, -1) if kind == "embedding" else x.reshape(n, -1, x.shape[-1])


def _module_sqnorm(kind: str, module: nn.Module, x: Tensor, d: Tensor) -> Tensor:
    """Per-sample squared norm of a module's parameter gradient from inputs x, output grads d."""
    if kind == "embedding":
        ids = x
        pad = getattr(module, "padding_idx", None)
        if pad is not None:
            d = d * (ids != pad).unsqueeze(-1)
        same = (ids[:, :, None] == ids[:, None, :]).to(d.dtype)
        return (same * (d @ d.transpose(1, 2))).sum(dim=(1, 2))
    x, d = _as_float(x), _as_float(d)
    out = torch.zeros(x.shape[0], dtype=d.dtype, device=x.device)
    if kind == "linear":
        if module.weight.requires_grad:
            t, d_in, d_out = x.shape[1], x.shape[2], d.shape[2]
            if t * t * (d_in + d_out) < t * d_in * d_out:  # ghost: two T×T Gram matrices
                out += ((x @ x.transpose(1, 2)) * (d @ d.transpose(1, 2))).sum(dim=(1, 2))
            else:  # materialise the per-sample weight gradient (cheaper for short sequences)
                out += torch.einsum("nto,nti->noi", d, x).pow(2).sum(dim=(1, 2))
        if module.bias is not None and module.bias.requires_grad:
            out += d.sum(dim=1).pow(2).sum(dim=1)
        return out
    if kind == "layernorm":
        xhat = F.layer_norm(x, x.shape[-1:], eps=module.eps)
    else:  # rmsnorm
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        eps = torch.finfo(torch.float32).eps if eps is None else eps
        xhat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if getattr(module, "weight", None) is not None and module.weight.requires_grad:
        out += (d * xhat).sum(dim=1).pow(2).sum(dim=1)
    bias = getattr(module, "bias", None)
    if isinstance(bias, Tensor) and bias.requires_grad:
        out += d.sum(dim=1).pow(2).sum(dim=1)
    return out


def _as_float(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
