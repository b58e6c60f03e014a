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

``nn.Conv1d`` / ``nn.Conv2d`` (``groups=1``, zero padding) are the Linear layer of their
unfolded input patches (``F.unfold``: T = output positions, ``d_in = C_in·∏kernel``).

The Linear weight uses the two T×T Gram matrices when
:math:`T^2(d_{in}+d_{out}) < T\,d_{in}d_{out}` and materialises :math:`D_i^\top X_i` otherwise.
A module called several times in the forward pass (weights shared across calls) is handled by
concatenating its calls along T. The squared norm over all parameters is the sum over layers
(accumulated in float64, returned as float32). ``nn.Embedding``'s ``padding_idx`` rows get no
gradient; RMSNorm is any module whose class name contains ``RMSNorm`` and that has a ``weight``
tensor (``torch.nn.RMSNorm``, Llama's); its epsilon is read from ``variance_epsilon`` or ``eps``.

Beyond norms, :class:`GhostGradients` keeps the per-example gradients of one backward in this
factored form :math:`(X_i, D_i)` per layer and gives, without forming any :math:`g_i`:

* :meth:`~GhostGradients.sqnorms`: :math:`\lVert g_i\rVert^2` (as above), and
  :meth:`~GhostGradients.sqnorm_sum` their sum :math:`\sum_i\lVert g_i\rVert^2` in fewer
  kernels;
* :meth:`~GhostGradients.inner`: :math:`\langle g_i, v\rangle` for a parameter-shaped
  :math:`v` (Linear: :math:`\sum_t D_{i,t}^\top V X_{i,t}`, Embedding:
  :math:`\sum_t\langle D_{i,t}, V_{\mathrm{id}_{i,t}}\rangle`, norms: a dot product);
* :meth:`~GhostGradients.gram`: the :math:`N\times N` matrix :math:`\langle g_i, g_j\rangle`,
  per Linear layer :math:`\sum_{t,s}(X_iX_j^\top)_{ts}(D_iD_j^\top)_{ts}` (for ``T = 1``
  simply :math:`(AA^\top)\circ(\Delta\Delta^\top)`), or from the per-example layer gradients
  :math:`D_i^\top X_i` when that costs fewer operations
  (:math:`N T\,d_{in}d_{out} + N^2 d_{in}d_{out} < N^2T^2(d_{in}+d_{out})`);
* :meth:`~GhostGradients.weighted_grads`: :math:`\sum_i c_i g_i` per parameter (the gradient
  of :math:`\sum_i c_i\ell_i`), from the factors, with no second backward.

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
    "GhostGradients",
    "GhostKind",
    "GhostNormRecorder",
    "UnsupportedModuleError",
    "ghost_kind",
    "layer_grad_sqnorms",
    "per_example_grad_sqnorms",
]

GhostKind = Literal["linear", "embedding", "layernorm", "rmsnorm", "conv"]


class UnsupportedModuleError(ValueError):
    """The model has a trainable parameter, a parameter sharing or an activation layout that
    ghost norms cannot handle exactly (compute exact per-example gradients instead)."""


def per_example_grad_sqnorms(
    model: nn.Module, per_example_losses: Callable[[], Tensor], *, retain_graph: bool = False
) -> Tensor:
    """``||∇_θ ℓ_i||²`` over all trainable parameters of ``model``, for every example, exactly.

    Args:
        model: A module whose trainable parameters all live in ``nn.Linear``, ``nn.Embedding``,
            ``nn.LayerNorm``, RMSNorm or ``nn.Conv1d``/``nn.Conv2d`` modules, with batch-first
            activations.
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
    """Records each supported module's input and output (its ``forward`` wrapped while the
    context is open, restored on exit), then ghost norms.

    Use it as a context manager around the forward pass, then call :meth:`sqnorms` with the
    per-example losses. Only modules with a trainable parameter are recorded.

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
        self._hooks: list[Callable[..., None]] = []
        covered: dict[int, str] = {}
        for module in modules:
            kind = ghost_kind(module)
            if kind is None:
                continue
            for p in _own_params(module):
                if id(p) in covered:
                    raise UnsupportedModuleError(
                        "ghost norms do not support parameters shared between modules (tied "
                        "embeddings)"
                    )
                covered[id(p)] = kind
            store: list[tuple[Tensor, Tensor]] = []
            self.entries.append((kind, module, store))
            self._hooks.append(_store_hook(store))
        if params is not None:
            missing = [p for p in params if id(p) not in covered]
            if missing:
                raise UnsupportedModuleError(
                    f"ghost norms cover nn.Linear, nn.Embedding, nn.LayerNorm, RMSNorm and "
                    f"nn.Conv1d/2d (groups=1, zero padding) "
                    f"modules only; {len(missing)} trainable parameter(s) (shapes "
                    f"{[tuple(p.shape) for p in missing[:4]]}) are outside them (freeze them)"
                )
        self.handles: list[Any] = []

    @classmethod
    def for_model(cls, model: nn.Module) -> GhostNormRecorder:
        """A recorder over every module of ``model`` that must cover all its trainable params."""
        return cls(list(model.modules()), params=[p for p in model.parameters() if p.requires_grad])

    def __enter__(self) -> GhostNormRecorder:
        # Each recorded module's ``forward`` is wrapped for the duration of the context (an
        # instance attribute shadowing the class's method, restored on exit): cheaper than a
        # forward hook (no hook dispatch in ``Module.__call__``, nothing to register), and it
        # sees exactly the input and output of ``forward`` (inside any user hooks).
        for (_, module, _), hook in zip(self.entries, self._hooks, strict=True):
            if any(p.requires_grad for p in _own_params(module)):
                own = module.__dict__.get("forward", _MISSING)
                module.__dict__["forward"] = _recording(module.forward, hook, module)
                self.handles.append((module, own))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, own in reversed(self.handles):
            if own is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = own
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
            math_kind, x, d = _factors(kind, module, x, d, n)
            entry = grouped.setdefault(id(module), (math_kind, module, [], []))
            entry[2].append(x)
            entry[3].append(d)
        for kind, module, xs, ds in grouped.values():
            x, d = torch.cat(xs, dim=1), torch.cat(ds, dim=1)
            acc += _module_sqnorm(kind, module, x, d).double()
        for *_, store in self.entries:
            store.clear()
        return acc.to(torch.float32)


def ghost_kind(module: nn.Module) -> GhostKind | None:
    """``"linear"``, ``"embedding"``, ``"layernorm"``, ``"rmsnorm"``, ``"conv"`` (``nn.Conv1d``,
    ``nn.Conv2d``: ``groups=1``, zero padding given as numbers), or ``None`` if unsupported."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        # scale_grad_by_freq rescales the batch gradient: no per-example decomposition
        return None if module.scale_grad_by_freq else "embedding"
    if isinstance(module, nn.LayerNorm):
        return "layernorm" if len(module.normalized_shape) == 1 else None
    if "RMSNorm" in type(module).__name__ and isinstance(getattr(module, "weight", None), Tensor):
        return "rmsnorm"
    if (
        isinstance(module, nn.Conv1d | nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    ):
        return "conv"
    return None


def layer_grad_sqnorms(module: nn.Module, inputs: Tensor, output_grads: Tensor) -> Tensor:
    """Per-example squared norm of one module's trainable-parameter gradient.

    Args:
        module: An ``nn.Linear``, ``nn.Embedding``, ``nn.LayerNorm``, RMSNorm or
            ``nn.Conv1d``/``nn.Conv2d`` module.
        inputs: Its input, batch-first: ``[N, ..., d_in]`` (token ids ``[N, ...]`` for an
            embedding).
        output_grads: Gradient of ``Σ_i ℓ_i`` w.r.t. its output, ``[N, ..., d_out]``.

    Returns:
        ``[N]`` squared norms (zeros if the module has no trainable parameter).
    """
    kind = ghost_kind(module)
    if kind is None:
        raise UnsupportedModuleError(
            f"ghost norms support nn.Linear, nn.Embedding, nn.LayerNorm, RMSNorm and "
            f"nn.Conv1d/2d (groups=1, zero padding) modules, "
            f"got {type(module).__name__}"
        )
    n = inputs.shape[0] if inputs.dim() > 0 else 0
    if not any(p.requires_grad for p in module.parameters(recurse=False)):
        return torch.zeros(n, dtype=torch.float32, device=output_grads.device)
    kind, x, d = _factors(kind, module, inputs.detach(), output_grads.detach(), n)
    return _module_sqnorm(kind, module, x, d)


def _own_params(module: nn.Module) -> list[Tensor]:
    """``module.parameters(recurse=False)`` without the generator machinery."""
    return [p for p in module._parameters.values() if p is not None]


_MISSING = object()


def _recording(
    forward: Callable[..., Any], hook: Callable[..., None], module: nn.Module
) -> Callable[..., Any]:
    """``forward`` that also hands its input and output to ``hook`` (as a forward hook)."""

    def recorded(*args: Any, **kwargs: Any) -> Any:
        out = forward(*args, **kwargs)
        hook(module, args if args else tuple(kwargs.values()), out)
        return out

    return recorded


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


def _factors(
    kind: str, module: nn.Module, x: Tensor, d: Tensor, n: int
) -> tuple[str, Tensor, Tensor]:
    """A module's inputs and output grads as per-example factors ``[N, T, d_in]``,
    ``[N, T, d_out]`` (ids ``[N, T]`` for an embedding); a convolution becomes the Linear layer
    of its unfolded patches (``T`` = output positions, ``d_in`` = ``C_in·∏kernel``)."""
    if kind != "conv":
        return kind, _per_sample(x, n, kind), _per_sample(d, n, "output")
    dims = 3 if isinstance(module, nn.Conv1d) else 4
    for t in (x, d):
        if t.dim() != dims or t.shape[0] != n:
            raise UnsupportedModuleError(
                f"ghost norms need batch-first activations; a module saw shape "
                f"{tuple(t.shape)} for a batch of {n}"
            )
    if isinstance(module, nn.Conv1d):  # [N, C, L] as [N, C, 1, L], kernel (1, k)
        x = x.unsqueeze(2)
        kernel, dilation = (1, *module.kernel_size), (1, *module.dilation)
        padding, stride = (0, *module.padding), (1, *module.stride)
    else:
        kernel, dilation = module.kernel_size, module.dilation
        padding, stride = module.padding, module.stride
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return "linear", patches.transpose(1, 2), d.reshape(n, d.shape[1], -1).transpose(1, 2)


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
            if t == 1:  # ‖d_i a_iᵀ‖² = ‖a_i‖²‖d_i‖²
                out += x.square().sum(dim=(1, 2)) * d.square().sum(dim=(1, 2))
            elif t * t * (d_in + d_out) < t * d_in * d_out:  # ghost: two T×T Gram matrices
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


def _layer_sqnorms(kind: str, module: nn.Module, x: Tensor, d: Tensor) -> Tensor:
    """``[N]`` float64 squared norms of one layer's per-example gradients (factored form)."""
    w, b = (module.weight, module.bias) if kind == "linear" else (None, None)
    if w is not None and x.shape[1] == 1 and w.requires_grad:  # ‖a_i‖²‖δ_i‖² (+‖δ_i‖²)
        x, d = _as_float(x), _as_float(d)
        d_sq = d.square().sum(dim=(1, 2))
        x_sq = x.square().sum(dim=(1, 2))
        if b is not None and b.requires_grad:
            return torch.addcmul(d_sq, d_sq, x_sq).to(torch.float64)
        return (d_sq * x_sq).to(torch.float64)
    return _module_sqnorm(kind, module, x, d).to(torch.float64)


def _as_float(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


_BLOCK_ELEMENTS = 1 << 22  # cap of one (rows·T) × (N·T) block of the sequence Gram


class GhostGradients:
    r"""Per-example gradients of one recorded forward pass, in factored form, per layer.

    :meth:`capture` runs one backward of :math:`\sum_i \ell_i` (optionally also giving the
    gradients of some parameters in the same pass) and keeps, for every recorded module, its
    inputs :math:`X_i` and output gradients :math:`D_i = \partial\ell_i/\partial Y_i`
    (batch-first, no mixing across examples). Every quantity below is then exact (module
    docstring) and none forms a per-example gradient of the whole model.

    Args:
        layers: ``(kind, module, x, d)`` per module: ``x`` ``[N, T, d_in]`` (ids ``[N, T]``
            for an embedding), ``d`` ``[N, T, d_out]``.
        n: the number of examples N.
    """

    def __init__(self, layers: list[tuple[str, nn.Module, Tensor, Tensor]], n: int) -> None:
        self.layers = layers
        self.n = n
        self._dense_cache: _Dense | bool | None = False  # False: not looked at yet
        self._matrices: dict[int, tuple[Tensor, Tensor]] = {}  # layer -> its [N, d] x and d
        self.loss_sum: Tensor | None = None  # Σ_i ℓ_i of :meth:`capture`'s backward (detached)

    @classmethod
    def capture(
        cls,
        recorder: GhostNormRecorder,
        losses: Tensor,
        params: Iterable[Tensor] = (),
        *,
        retain_graph: bool = False,
    ) -> tuple[GhostGradients, tuple[Tensor | None, ...]]:
        """One backward of ``losses.sum()``: the factors and the gradients of ``params``.

        Args:
            recorder: the :class:`GhostNormRecorder` whose context held the forward pass (its
                recorded activations are released).
            losses: ``[N]`` per-example losses of that forward pass.
            params: tensors whose gradient of ``Σ_i ℓ_i`` is wanted as well (same backward).
            retain_graph: keep the graph for a later backward.

        Returns:
            ``(ghost, grads)``: ``grads`` aligned with ``params`` (``None`` if unused);
            ``ghost.loss_sum`` is the (detached) ``Σ_i ℓ_i`` of the backward.

        Raises:
            UnsupportedModuleError: activations that are not batch-first.
            ValueError: ``losses`` not 1-D, or no recorded module ran.
        """
        if not isinstance(losses, Tensor) or losses.dim() != 1:
            shape = getattr(losses, "shape", type(losses).__name__)
            raise ValueError(f"losses must be a 1-D tensor of per-example losses, got {shape}")
        n = losses.shape[0]
        # the recorded modules that ran, each with its calls (in call order)
        ran = [(kind, m, list(store)) for kind, m, store in recorder.entries if store]
        for *_, store in recorder.entries:
            store.clear()
        if not ran:
            raise ValueError(
                "no supported module with trainable parameters ran in the forward pass"
            )
        outs: list[Tensor] = []
        for _, _, calls in ran:  # batch-first check before the backward
            for x, y in calls:
                for t in (x, y):
                    if t.dim() < 2 or t.shape[0] != n:
                        raise UnsupportedModuleError(
                            f"ghost norms need batch-first activations; a module saw shape "
                            f"{tuple(t.shape)} for a batch of {n}"
                        )
                outs.append(y)
        with torch.enable_grad():
            total = losses.sum()
        n_outs = len(outs)
        outs.extend(params)
        grads = torch.autograd.grad(total, outs, allow_unused=True, retain_graph=retain_graph)
        # a module called several times: its per-sample grad is the sum over calls (concat in T)
        layers = []
        matrices: dict[int, tuple[Tensor, Tensor]] = {}  # [N, d] originals of one-call layers
        i = 0
        for kind, module, calls in ran:
            xs, ds = [], []
            for x, y in calls:
                d = grads[i]
                i += 1
                if d is None:
                    d = torch.zeros_like(y)
                elif d.requires_grad:
                    d = d.detach()
                if len(calls) == 1 and kind == "linear" and x.dim() == 2 and d.dim() == 2:
                    matrices[len(layers)] = (x, d)  # batch-first checked above: [N, 1, d]
                    math_kind, x, d = kind, x.unsqueeze(1), d.unsqueeze(1)
                else:
                    math_kind, x, d = _factors(kind, module, x, d, n)
                xs.append(x)
                ds.append(d)
            if len(xs) == 1:
                layers.append((math_kind, module, xs[0], ds[0]))
            else:
                layers.append((math_kind, module, torch.cat(xs, dim=1), torch.cat(ds, dim=1)))
        ghost = cls(layers, n)
        ghost._matrices = matrices
        ghost.loss_sum = total.detach()
        return ghost, tuple(grads[n_outs:])

    # -- per-example quantities ------------------------------------------------------------

    def sqnorms(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``[N]`` squared norms ``‖g_i‖²`` over the recorded modules' trainable parameters.

        Linear layers with one position (``T = 1``) and a trainable weight contribute
        ``‖a_i‖²‖δ_i‖² (+ ‖δ_i‖²`` with a trainable bias); two or more of them (same dtype) are
        done together: one concatenation of their inputs and output gradients, one square, one
        matrix product with a 0/1 matrix giving every layer's ``‖a_i‖²`` and ``‖δ_i‖²``, the
        products in float64."""
        acc: Tensor | None = None
        dense = self._dense()
        if dense is not None:
            acc = _dense_sqnorms(dense)
        for i, (kind, module, x, d) in enumerate(self.layers):
            if dense is None or i not in dense.index:
                term = _layer_sqnorms(kind, module, x, d)
                acc = term if acc is None else acc.add_(term)
        assert acc is not None
        return acc.to(dtype)

    def sqnorm_sum(self) -> Tensor:
        """``Σ_i ‖g_i‖²`` (0-dim, float64): ``sqnorms().sum()`` up to float rounding, in fewer
        kernels. The one-position Linear layers with a trainable weight (one or more) give
        ``Σ_i Σ_l (‖a_{l,i}‖² + [bias_l]) ‖δ_{l,i}‖²`` as one dot product: the concatenated
        inputs and output gradients squared, one ``addmm`` with a 0/1 matrix (the bias terms
        added in the input dtype) giving ``(‖a_{l,i}‖² + [bias_l], ‖δ_{l,i}‖²)`` side by side,
        then a float64 dot product of the two columns."""
        dense = self._dense()
        if dense is None:
            dense = self._dense(min_layers=1)
        acc = None if dense is None else _dense_sqnorm_sum(dense)
        for i, (kind, module, x, d) in enumerate(self.layers):
            if dense is None or i not in dense.index:
                term = _layer_sqnorms(kind, module, x, d).sum()
                acc = term if acc is None else acc + term
        assert acc is not None
        return acc

    def _dense(self, min_layers: int = 2) -> _Dense | None:
        """The one-position Linear layers with a trainable weight, concatenated (``min_layers``
        or more of one float dtype; the default's result is computed once per object)."""
        if min_layers == 2 and self._dense_cache is not False:
            return self._dense_cache  # type: ignore[return-value]
        picked: list[int] = []
        layers = []
        dtype = None
        for i, layer in enumerate(self.layers):
            kind, module, x, d = layer
            if (
                kind == "linear"
                and x.shape[1] == 1
                and module.weight.requires_grad
                and x.dtype == d.dtype
                and (dtype is None or x.dtype == dtype)
                and x.dtype in (torch.float32, torch.float64)
            ):
                picked.append(i)
                layers.append(layer)
                dtype = x.dtype
        dense = None
        if len(picked) >= min_layers:
            n = self.n
            xs, ds = [], []
            for i, (_, _, x, d) in zip(picked, layers, strict=True):
                x, d = self._matrices.get(i) or (x.reshape(n, -1), d.reshape(n, -1))
                xs.append(x)
                ds.append(d)
            x_widths = tuple(t.shape[1] for t in xs)
            d_widths = tuple(t.shape[1] for t in ds)
            bias = tuple(m.bias is not None and m.bias.requires_grad for _, m, _, _ in layers)
            flat = torch.cat(xs + ds, dim=1)
            dense = _Dense(tuple(picked), layers, flat, bias, x_widths, d_widths)
        if min_layers == 2:
            self._dense_cache = dense
        return dense

    def inner(self, vectors: dict[Tensor, Tensor], dtype: torch.dtype = torch.float64) -> Tensor:
        """``[N]`` inner products ``⟨g_i, v⟩``; ``vectors`` maps a parameter to its part of
        ``v`` (same shape; parameters not in it count as zero)."""
        by_id = {id(p): v for p, v in vectors.items()}
        acc = torch.zeros(self.n, dtype=dtype, device=self._device)
        dense = self._dense()
        if dense is not None and dense.flat.dtype == dtype:
            done = _dense_inner(dense, by_id, acc)
        else:
            done = set()
        for i, (kind, module, x, d) in enumerate(self.layers):
            if i in done:
                continue
            parts = {
                name: by_id[id(p)].detach() for name, p in _trainable(module) if id(p) in by_id
            }
            if parts:
                acc += _module_inner(kind, module, x, d, parts, dtype)
        return acc

    def gram(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The ``[N, N]`` Gram matrix ``⟨g_i, g_j⟩`` (computed and summed in ``dtype``)."""
        acc = torch.zeros(self.n, self.n, dtype=dtype, device=self._device)
        for kind, module, x, d in self.layers:
            acc += _module_gram(kind, module, x, d, dtype)
        return acc

    def weighted_grads(self, weights: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``Σ_i c_i g_i`` per trainable parameter of the recorded modules, as
        ``(param, grad)`` pairs (``grad`` in the parameter's dtype): the gradient of
        ``Σ_i c_i ℓ_i`` without a second backward."""
        if tuple(weights.shape) != (self.n,):
            raise ValueError(f"weights must have shape [{self.n}], got {tuple(weights.shape)}")
        out: list[tuple[Tensor, Tensor]] = []
        for kind, module, x, d in self.layers:
            grads = _module_weighted(kind, module, x, d, weights.detach())
            for name, p in _trainable(module):
                out.append((p, grads[name].reshape(p.shape).to(p.dtype)))
        return out

    @property
    def _device(self) -> torch.device:
        return self.layers[0][3].device


class _Dense:
    """One-position Linear layers side by side: ``flat = [a_1 … a_L | δ_1 … δ_L]``, ``[N, ·]``."""

    __slots__ = ("bias", "d_widths", "flat", "index", "layers", "x_widths")

    def __init__(
        self,
        index: tuple[int, ...],
        layers: list[tuple[str, nn.Module, Tensor, Tensor]],
        flat: Tensor,
        bias: tuple[bool, ...],
        x_widths: tuple[int, ...],
        d_widths: tuple[int, ...],
    ) -> None:
        self.index, self.layers, self.flat, self.bias = index, layers, flat, bias
        self.x_widths, self.d_widths = x_widths, d_widths


_SEGMENTS: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}


def _segments(dense: _Dense) -> tuple[Tensor, Tensor]:
    """The 0/1 matrix summing ``flat``'s columns per block (``[Σ widths, 2L]``) and the bias
    flags ``[L]`` (float64), cached per layout."""
    flat = dense.flat
    key = (dense.x_widths, dense.d_widths, dense.bias, flat.dtype, flat.device)
    hit = _SEGMENTS.get(key)
    if hit is None:
        widths = dense.x_widths + dense.d_widths
        block = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths))
        seg = F.one_hot(block, len(widths)).to(dtype=flat.dtype, device=flat.device)
        bias = torch.tensor(dense.bias, dtype=torch.float64, device=flat.device)
        if len(_SEGMENTS) >= 64:
            _SEGMENTS.clear()
        hit = _SEGMENTS[key] = (seg, bias)
    return hit


def _dense_sqnorms(dense: _Dense) -> Tensor:
    """``Σ_l (‖a_{l,i}‖² + [bias_l]) ‖δ_{l,i}‖²`` in float64, ``[N]``."""
    seg, bias = _segments(dense)
    blocks = (dense.flat.square() @ seg).double()  # [N, 2L]: ‖a_l‖², then ‖δ_l‖²
    n_layers = len(dense.bias)
    return ((blocks[:, :n_layers] + bias) * blocks[:, n_layers:]).sum(dim=1)


_PAIRS: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}


def _pair_segments(dense: _Dense) -> tuple[Tensor, Tensor]:
    """The 0/1 matrix summing ``flat``'s columns into ``(‖a_l‖², ‖δ_l‖²)`` pairs, layer by
    layer (``[Σ widths, 2L]``, columns ``a_1, δ_1, a_2, δ_2, …``), and the row ``[2L]`` adding
    each layer's bias flag to its ``‖a_l‖²`` (in ``flat``'s dtype), cached per layout."""
    flat = dense.flat
    key = (dense.x_widths, dense.d_widths, dense.bias, flat.dtype, flat.device)
    hit = _PAIRS.get(key)
    if hit is None:
        n_layers = len(dense.bias)
        widths = torch.tensor(dense.x_widths + dense.d_widths)
        column = torch.cat([2 * torch.arange(n_layers), 2 * torch.arange(n_layers) + 1])
        seg = F.one_hot(torch.repeat_interleave(column, widths), 2 * n_layers)
        bias = torch.zeros(2 * n_layers)
        bias[0::2] = torch.tensor(dense.bias, dtype=bias.dtype)
        seg = seg.to(dtype=flat.dtype, device=flat.device)
        if len(_PAIRS) >= 64:
            _PAIRS.clear()
        hit = _PAIRS[key] = (seg, bias.to(dtype=flat.dtype, device=flat.device))
    return hit


def _dense_sqnorm_sum(dense: _Dense) -> Tensor:
    """``Σ_i Σ_l (‖a_{l,i}‖² + [bias_l]) ‖δ_{l,i}‖²``, 0-dim float64: one ``addmm`` and one dot
    product of two strided columns."""
    seg, bias = _pair_segments(dense)
    pairs = torch.addmm(bias, dense.flat.square(), seg).double().view(-1, 2)
    return torch.dot(pairs[:, 0], pairs[:, 1])


def _dense_inner(dense: _Dense, by_id: dict[int, Tensor], acc: Tensor) -> set[int]:
    """Adds ``Σ_l δ_{l,i}ᵀ V_l a_{l,i} + δ_{l,i}·v_l`` of the dense layers whose every trainable
    parameter has its part in ``by_id`` (the others are left to the per-layer path) to ``acc``;
    returns the indices done."""
    n = acc.shape[0]
    flat = dense.flat
    offsets = [0]
    for w in dense.x_widths + dense.d_widths:
        offsets.append(offsets[-1] + w)
    n_layers = len(dense.bias)
    rows: list[Tensor] = []
    x_cols: list[Tensor] = []
    d_cols: list[Tensor] = []
    biases: list[Tensor] = []
    done: set[int] = set()
    for j, (index, (_, module, _, _)) in enumerate(zip(dense.index, dense.layers, strict=True)):
        v_w = by_id.get(id(module.weight))
        has_bias = dense.bias[j]
        v_b = by_id.get(id(module.bias)) if has_bias else None
        if v_w is None or (has_bias and v_b is None):
            continue
        x = flat[:, offsets[j] : offsets[j + 1]]
        d = flat[:, offsets[n_layers + j] : offsets[n_layers + j + 1]]
        rows.append(d @ v_w.detach().to(flat.dtype).reshape(d.shape[1], x.shape[1]))
        x_cols.append(x)
        if v_b is not None:
            d_cols.append(d)
            biases.append(v_b.detach().to(flat.dtype).reshape(-1))
        done.add(index)
    if not rows:
        return done
    x_all = x_cols[0] if len(x_cols) == 1 else torch.cat(x_cols, dim=1)
    dv = rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)
    out = (dv * x_all).sum(dim=1)
    if biases:
        d_all = d_cols[0] if len(d_cols) == 1 else torch.cat(d_cols, dim=1)
        out = torch.addmv(out, d_all, torch.cat(biases))
    acc += out.to(acc.dtype).reshape(n)
    return done


def _trainable(module: nn.Module) -> list[tuple[str, Tensor]]:
    return [
        (name, p)
        for name, p in module.named_parameters(recurse=False)
        if name in ("weight", "bias") and p.requires_grad
    ]


def _norm_factors(kind: str, module: nn.Module, x: Tensor, d: Tensor) -> dict[str, Tensor]:
    """Per-example gradients ``[N, d]`` of a (Layer|RMS)Norm's weight and bias."""
    if kind == "layernorm":
        xhat = F.layer_norm(x, x.shape[-1:], eps=module.eps)
    else:
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        eps = torch.finfo(torch.float32).eps if eps is None else eps
        xhat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    out = {}
    for name, _ in _trainable(module):
        out[name] = (d * xhat).sum(dim=1) if name == "weight" else d.sum(dim=1)
    return out


def _embedding_grads(module: nn.Module, ids: Tensor, d: Tensor) -> Tensor:
    pad = getattr(module, "padding_idx", None)
    return d if pad is None else d * (ids != pad).unsqueeze(-1).to(d.dtype)


def _module_inner(
    kind: str, module: nn.Module, x: Tensor, d: Tensor, parts: dict[str, Tensor], dtype: torch.dtype
) -> Tensor:
    d = d.to(dtype)
    if kind == "embedding":
        d = _embedding_grads(module, x, d)
        return (parts["weight"].to(dtype)[x] * d).sum(dim=(1, 2))
    x = x.to(dtype)
    out = torch.zeros(x.shape[0], dtype=dtype, device=x.device)
    if kind == "linear":
        if "weight" in parts:  # (a convolution's weight as the matrix of its patches)
            w = parts["weight"].to(dtype).reshape(d.shape[-1], -1)
            out += ((d @ w) * x).sum(dim=(1, 2))
        if "bias" in parts:
            out += d.sum(dim=1) @ parts["bias"].to(dtype)
        return out
    for name, g in _norm_factors(kind, module, x, d).items():
        if name in parts:
            out += g @ parts[name].to(dtype)
    return out


def _module_gram(kind: str, module: nn.Module, x: Tensor, d: Tensor, dtype: torch.dtype) -> Tensor:
    n = x.shape[0]
    d = d.to(dtype)
    if kind == "embedding":
        d = _embedding_grads(module, x, d)
        return _seq_gram(x, d, same_ids=True)
    x = x.to(dtype)
    if kind != "linear":
        out = torch.zeros(n, n, dtype=dtype, device=x.device)
        for g in _norm_factors(kind, module, x, d).values():
            out += g @ g.T
        return out
    out = torch.zeros(n, n, dtype=dtype, device=x.device)
    if module.weight.requires_grad:
        t, d_in, d_out = x.shape[1], x.shape[2], d.shape[2]
        if t == 1:
            out += (x[:, 0] @ x[:, 0].T) * (d[:, 0] @ d[:, 0].T)
        elif n * t * t * (d_in + d_out) <= t * d_in * d_out + n * d_in * d_out:
            out += _seq_gram(x, d, same_ids=False)
        else:  # per-example layer gradients D_iᵀX_i, [N, d_out·d_in] (one layer at a time)
            g = torch.einsum("nto,nti->noi", d, x).reshape(n, -1)
            out += g @ g.T
    if module.bias is not None and module.bias.requires_grad:
        s = d.sum(dim=1)
        out += s @ s.T
    return out


def _seq_gram(x: Tensor, d: Tensor, *, same_ids: bool) -> Tensor:
    """``Σ_{t,s} K(x_{i,t}, x_{j,s}) ⟨d_{i,t}, d_{j,s}⟩`` with ``K`` the dot product (or the id
    equality), in row blocks of examples so no more than ~4M entries live at once."""
    n, t = x.shape[0], x.shape[1]
    xf = x.reshape(n * t, -1) if not same_ids else x.reshape(n * t)
    df = d.reshape(n * t, -1)
    out = torch.empty(n, n, dtype=d.dtype, device=d.device)
    rows = max(1, _BLOCK_ELEMENTS // max(1, n * t * t))
    for i in range(0, n, rows):
        j = min(n, i + rows)
        xb, db = xf[i * t : j * t], df[i * t : j * t]
        k = (xb[:, None] == xf[None, :]).to(d.dtype) if same_ids else xb @ xf.T
        block = (k * (db @ df.T)).reshape(j - i, t, n, t).sum(dim=(1, 3))
        out[i:j] = block
    return out


def _module_weighted(
    kind: str, module: nn.Module, x: Tensor, d: Tensor, c: Tensor
) -> dict[str, Tensor]:
    if kind == "embedding":
        cd = _embedding_grads(module, x, d) * c.to(d.dtype).view(-1, 1, 1)
        w = module.weight
        grad = torch.zeros(w.shape, dtype=cd.dtype, device=w.device)
        grad.index_add_(0, x.reshape(-1), cd.reshape(-1, cd.shape[-1]))
        return {"weight": grad}
    x, d = _as_float(x), _as_float(d)
    if kind == "linear":
        cd = d * c.to(d.dtype).view(-1, 1, 1)
        out = {}
        if module.weight.requires_grad:
            out["weight"] = cd.reshape(-1, cd.shape[-1]).T @ x.reshape(-1, x.shape[-1]).to(d.dtype)
        if module.bias is not None and module.bias.requires_grad:
            out["bias"] = cd.sum(dim=(0, 1))
        return out
    return {name: c.to(g.dtype) @ g for name, g in _norm_factors(kind, module, x, d).items()}
