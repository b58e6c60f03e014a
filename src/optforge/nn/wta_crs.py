"""WTA-CRS: linear layers whose weight gradient is an unbiased estimate from sampled token rows.

Paper: *Winner-Take-All Column Row Sampling for Memory Efficient Adaptation of Language Model*,
Zirui Liu, Guanchu Wang, Shaochen Zhong, Zhaozhuo Xu, Daochen Zha, Ruixiang Tang, Zhimeng Jiang,
Kaixiong Zhou, Vipin Chaudhary, Shuai Xu, Xia Hu (NeurIPS 2023), arXiv:2305.15265.

A linear layer ``Z = H Wᵀ + b`` stores its input ``H`` (``N × d_in`` after flattening the leading
dimensions, ``N = batch · sequence``) only to form the weight gradient

$$ \\nabla W = \\nabla Z^\\top H = \\sum_{i=1}^{N} \\nabla Z_{i,:}^\\top H_{i,:}. $$

WTA-CRS replaces this sum over token rows by an unbiased estimate that uses ``k`` of the ``N``
rows, chosen in the forward pass, so the layer saves ``k`` rows (plus ``k`` indices and ``k``
fp32 weights) instead of ``N``. With sampling probabilities ``p`` the ``|C|`` most probable rows
(the *winners* ``C``) are kept exactly and the other ``s = k − |C|`` are drawn i.i.d. with
replacement from the residual distribution ``q_j = p_j / Σ_{l∉C} p_l`` (``j ∉ C``):

$$ \\widehat{\\nabla W} = \\sum_{c\\in C} \\nabla Z_c^\\top H_c
   + \\frac{1}{s}\\sum_{t=1}^{s} \\frac{\\nabla Z_{j_t}^\\top H_{j_t}}{q_{j_t}}, \\qquad
   \\mathbb E\\,\\widehat{\\nabla W} = \\nabla W. $$

``|C|`` follows the official adaptive rule: with the top-``k`` probabilities sorted and ``P_c``
their cumulative sum, ``|C| = argmin_{1≤c<k} (1 − P_c)/(k − c)`` if that minimum is below ``1/k``
(equivalently ``P_C > |C|/k``, the paper's condition for a variance gain over CRS), else 0. Plain
column-row sampling (CRS, ``method="crs"``) is the special case ``|C| = 0``. The forward output,
the input gradient ``∇Z W`` and the bias gradient are exact.

Example:
    >>> import torch
    >>> from optforge.nn import WTACRSLinear, convert_linear
    >>> layer = WTACRSLinear(64, 32, ratio=0.3)
    >>> y = layer(torch.randn(8, 16, 64))  # saves 0.3 · 128 rows for the weight gradient
    >>> y.sum().backward()
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    >>> convert_linear(model, ratio=0.3, include=None)  # every nn.Linear
    ['0']

Choices:

* Probabilities: ``p_i ∝ ‖H_i‖`` (the official code's "first visit" proxy; the ideal
  ``‖H_i‖·‖∇Z_i‖`` needs ``∇Z``, unknown in the forward pass). The official per-example gradient
  norm cache is not implemented. Zero rows get ``p_i = 0``, which keeps the estimate unbiased
  because they contribute nothing to ``∇W``; an all-zero input falls back to uniform.
* Unbiased by construction: the official code's two biased shortcuts (unweighted stochastic rows
  on the first epoch, unweighted sampling without replacement when ``|C| = 0``) are not offered.
* No host synchronisation: ``|C|`` is computed on the device and the ``k`` slots are filled with
  ``where(slot < |C|, winner, draw)``, so every tensor has a fixed shape ``k``.
* Importance weights are kept in fp32 and applied to the gathered output-gradient rows in the
  backward pass (computed in fp32 for half-precision inputs), so no ``1/(s q)`` overflows fp16.
* Randomness: ``generator=None`` draws from torch's default generator of the input's device,
  as ``nn.Dropout`` does, so ``torch.utils.checkpoint`` (which restores that RNG state) replays
  the same rows. Pass a ``torch.Generator`` (or an int seed) for a dedicated stream; under
  checkpointing the recomputation then draws fresh rows (still an unbiased estimate, since rows
  and indices are saved together).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from optforge._core import check_in_range, check_positive_int, make_generator

__all__ = [
    "DEFAULT_TARGETS",
    "WTACRSLinear",
    "WTACRSLinearFunction",
    "approx_matmul",
    "convert_linear",
    "peak_memory_bytes",
    "revert_linear",
    "sample_indices",
    "sample_size",
    "saved_tensor_bytes",
]

Method = Literal["wta", "crs", "exact"]
_METHODS = ("wta", "crs", "exact")

#: Layer-name patterns replaced by default, the paper's "level 2" set: attention output and
#: feed-forward projections (not q/k/v, which share one input). Llama/Mistral/Qwen, T5, BERT,
#: OPT/BART/Whisper naming.
DEFAULT_TARGETS: tuple[str, ...] = (
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "*.SelfAttention.o",
    "*.EncDecAttention.o",
    "wi",
    "wi_0",
    "wi_1",
    "wo",
    "*.attention.output.dense",
    "*.intermediate.dense",
    "*.output.dense",
    "out_proj",
    "fc1",
    "fc2",
)


# --------------------------------------------------------------------------- sampler and estimator
def sample_indices(
    probs: Tensor,
    k: int,
    *,
    adaptive: bool = True,
    det_ratio: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``k`` row indices and importance weights for an unbiased WTA-CRS estimate.

    For any vectors ``v_i``, ``Σ_t weights[t] · v[idx[t]]`` is an unbiased estimate of
    ``Σ_i v_i`` (exact when ``k >= len(probs)``).

    Args:
        probs: Non-negative sampling scores of shape ``(N,)``; normalised here.
        k: Number of slots to fill (``>= 1``).
        adaptive: Choose the number of winners ``|C|`` by the paper's adaptive rule. With
            ``adaptive=False`` and no ``det_ratio`` this is plain CRS (``|C| = 0``).
        det_ratio: Fixed winner fraction, ``|C| = floor(k · det_ratio)``, in ``[0, 1)``; takes
            precedence over ``adaptive``.
        generator: Random generator for the stochastic draws (default: torch's global one).

    Returns:
        ``(idx, weights)``: int64 indices of shape ``(k,)`` (winners first, stochastic draws may
        repeat) and fp32 weights of shape ``(k,)`` (1 for winners, ``1/(s·q_j)`` for draws).
    """
    if not isinstance(probs, Tensor) or probs.dim() != 1:
        raise ValueError("probs must be a 1-D tensor of non-negative scores")
    if not probs.is_floating_point():
        raise TypeError(f"probs must be a floating-point tensor, got dtype {probs.dtype}")
    k = check_positive_int("k", k)
    if det_ratio is not None:
        check_in_range("det_ratio", det_ratio, 0.0, 1.0, high_inclusive=False)
    n = probs.numel()
    device = probs.device
    if k >= n:
        return torch.arange(n, device=device), torch.ones(n, device=device)
    p = probs.float()
    total = p.sum()
    p = torch.where(total > 0, p / total.clamp_min(torch.finfo(p.dtype).tiny), 1.0 / n)
    vals, top = torch.topk(p, k)  # descending
    slot = torch.arange(k, device=device)
    if det_ratio is not None:
        n_win = torch.tensor(math.floor(k * det_ratio), device=device)
    elif adaptive and k > 1:
        c = torch.arange(1, k, device=device, dtype=p.dtype)
        score = (1.0 - torch.cumsum(vals, 0)[: k - 1]) / (k - c)
        best = torch.argmin(score)
        n_win = torch.where(score[best] < 1.0 / k, best + 1, 0)
    else:
        n_win = torch.tensor(0, device=device)
    is_win = slot < n_win
    n_draw = (k - n_win).to(p.dtype)  # s >= 1: |C| <= k - 1 in every branch
    residual = p.scatter(0, top, torch.where(is_win, 0.0, vals))
    rsum = residual.sum()
    has_rest = rsum > 0
    q = torch.where(has_rest, residual / rsum.clamp_min(torch.finfo(p.dtype).tiny), 1.0 / n)
    draws = torch.multinomial(q, k, replacement=True, generator=generator)
    q_draw = q[draws].clamp_min(1e-12 / n)
    w_draw = torch.where(has_rest, 1.0 / (n_draw * q_draw), 0.0)
    idx = torch.where(is_win, top, draws)
    weights = torch.where(is_win, 1.0, w_draw)
    return idx, weights


def approx_matmul(
    x: Tensor,
    y: Tensor,
    k: int,
    *,
    method: Literal["wta", "crs", "uniform"] = "wta",
    probs: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Estimate ``x @ y`` from ``k`` sampled column-row pairs of the contraction dimension.

    Args:
        x: Left factor of shape ``(n, m)``.
        y: Right factor of shape ``(m, q)``.
        k: Number of column-row pairs (``1 <= k``; ``k >= m`` gives the exact product).
        method: ``"wta"`` (winners + residual sampling, adaptive ``|C|``), ``"crs"`` (i.i.d.
            sampling) or ``"uniform"`` (CRS with uniform probabilities).
        probs: Sampling scores of shape ``(m,)``; default ``‖x[:, i]‖ · ‖y[i, :]‖`` (optimal
            for CRS). Ignored by ``"uniform"``.
        generator: Random generator for the draws.

    Returns:
        The unbiased estimate of ``x @ y``, shape ``(n, q)``.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[0]:
        raise ValueError(
            f"x and y must be matrices with x.shape[1] == y.shape[0], got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if method not in ("wta", "crs", "uniform"):
        raise ValueError(f"method must be 'wta', 'crs' or 'uniform', got {method!r}")
    if method == "uniform":
        probs = torch.ones(x.shape[1], device=x.device)
    elif probs is None:
        probs = torch.linalg.vector_norm(x, dim=0) * torch.linalg.vector_norm(y, dim=1)
    idx, w = sample_indices(probs, k, adaptive=method == "wta", generator=generator)
    return (x[:, idx] * w.to(x.dtype)) @ y[idx]


def sample_size(n: int, ratio: float, min_k: int) -> int:
    """The number of sampled rows ``k = min(max(round(ratio · n), min_k), n)``."""
    return min(max(round(ratio * n), min_k), n)


# --------------------------------------------------------------------------- autograd function
class WTACRSLinearFunction(torch.autograd.Function):
    """``y = x Wᵀ + b`` exactly; the backward's ``∇W`` is a WTA-CRS estimate from saved rows.

    ``apply(x, weight, bias, k, adaptive, det_ratio, generator)``: ``k`` rows of the flattened
    input are sampled (see :func:`sample_indices`) and saved with their indices and weights; the
    full input is not kept. ``∇x`` and ``∇b`` are exact. Differentiable once.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        k: int,
        adaptive: bool,
        det_ratio: float | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        out = F.linear(x, weight, bias)
        ctx.x_shape = x.shape
        ctx.has_bias = bias is not None
        if ctx.needs_input_grad[1]:
            rows = x.reshape(-1, x.shape[-1])
            wide = torch.float32 if rows.dtype in (torch.float16, torch.bfloat16) else None
            norms = torch.linalg.vector_norm(rows, dim=1, dtype=wide).float()
            idx, w = sample_indices(
                norms, k, adaptive=adaptive, det_ratio=det_ratio, generator=generator
            )
            ctx.save_for_backward(rows.index_select(0, idx), idx, w, weight)
        else:
            ctx.save_for_backward(None, None, None, weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        rows, idx, w, weight = ctx.saved_tensors
        grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            picked = grad.index_select(0, idx)
            if picked.dtype in (torch.float16, torch.bfloat16):
                grad_w = ((picked.float() * w[:, None]).t() @ rows.float()).to(weight.dtype)
            else:
                grad_w = (picked * w[:, None].to(picked.dtype)).t() @ rows
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None, None, None, None


# --------------------------------------------------------------------------- module
class WTACRSLinear(nn.Linear):
    """Drop-in ``nn.Linear`` that saves only ``ratio`` of its input rows for the weight gradient.

    Same parameters and ``state_dict`` keys as ``nn.Linear``. Behaves exactly like ``nn.Linear``
    (nothing sampled) in ``eval()``, under ``torch.no_grad()``, when the weight is frozen, when
    ``method="exact"`` or when ``k`` reaches the number of rows.

    Args:
        in_features: Size of each input row.
        out_features: Size of each output row.
        bias: Whether to learn an additive bias.
        ratio: Fraction of the ``N`` input rows kept for ``∇W``, in ``(0, 1]``.
        min_k: Minimum number of rows kept (``k = min(max(round(ratio·N), min_k), N)``).
        method: ``"wta"`` (winner-take-all + residual sampling), ``"crs"`` (plain column-row
            sampling) or ``"exact"`` (plain ``nn.Linear``).
        det_ratio: Fixed fraction of winners in ``[0, 1)``; ``None`` uses the adaptive rule.
        generator: ``None`` (torch's default RNG, checkpoint-friendly), a ``torch.Generator`` or
            an int seed for a dedicated generator.
        device: Parameter device.
        dtype: Parameter dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        ratio: float = 0.3,
        min_k: int = 10,
        method: Method = "wta",
        det_ratio: float | None = None,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._configure(ratio, min_k, method, det_ratio, generator)

    def _configure(
        self,
        ratio: float = 0.3,
        min_k: int = 10,
        method: Method = "wta",
        det_ratio: float | None = None,
        generator: torch.Generator | int | None = None,
    ) -> None:
        self.ratio = float(check_in_range("ratio", ratio, 0.0, 1.0, low_inclusive=False))
        self.min_k = check_positive_int("min_k", min_k)
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        self.method = method
        if det_ratio is not None:
            check_in_range("det_ratio", det_ratio, 0.0, 1.0, high_inclusive=False)
            if method == "crs":
                raise ValueError("det_ratio applies to method='wta' only (CRS has no winners)")
        self.det_ratio = det_ratio
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = make_generator(generator, self.weight.device)
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator, an int or None, got "
                f"{type(generator).__name__}"
            )
        self.generator = generator

    @classmethod
    def from_linear(cls, linear: nn.Linear, **config: Any) -> WTACRSLinear:
        """A ``WTACRSLinear`` sharing ``linear``'s ``Parameter`` objects (no copy).

        Args:
            linear: The layer to wrap (its ``weight``/``bias`` are reused as they are).
            **config: ``ratio``, ``min_k``, ``method``, ``det_ratio``, ``generator``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features = linear.in_features
        layer.out_features = linear.out_features
        layer.weight = linear.weight
        layer.register_parameter("bias", linear.bias)
        layer.train(linear.training)
        layer._configure(**config)
        return layer

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` sharing this layer's parameters."""
        linear = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(linear)
        linear.in_features = self.in_features
        linear.out_features = self.out_features
        linear.weight = self.weight
        linear.register_parameter("bias", self.bias)
        linear.train(self.training)
        return linear

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a tensor, got {type(input).__name__}")
        if not input.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {input.dtype}")
        if input.dim() < 2:
            raise ValueError(
                f"input must have a batch dimension (shape (..., N, {self.in_features})), got "
                f"shape {tuple(input.shape)}"
            )
        n_rows = input.numel() // max(input.shape[-1], 1)
        k = sample_size(n_rows, self.ratio, self.min_k)
        exact = (
            self.method == "exact"
            or k >= n_rows
            or not self.training
            or not torch.is_grad_enabled()
            or not self.weight.requires_grad
        )
        if exact:
            return F.linear(input, self.weight, self.bias)
        return WTACRSLinearFunction.apply(
            input,
            self.weight,
            self.bias,
            k,
            self.method == "wta",
            self.det_ratio,
            self.generator,
        )

    def extra_repr(self) -> str:
        extra = f", det_ratio={self.det_ratio}" if self.det_ratio is not None else ""
        return f"{super().extra_repr()}, ratio={self.ratio}, method={self.method!r}{extra}"


# --------------------------------------------------------------------------- model surgery
Selector = Sequence[str] | Callable[[str, nn.Module], bool] | None


def _matches(name: str, module: nn.Module, selector: Selector, default: bool) -> bool:
    if selector is None:
        return default
    if callable(selector):
        return bool(selector(name, module))
    if isinstance(selector, str):
        selector = (selector,)
    leaf = name.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(leaf, pat) for pat in selector)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def convert_linear(
    model: nn.Module,
    ratio: float = 0.3,
    *,
    include: Selector = DEFAULT_TARGETS,
    exclude: Selector = ("lm_head",),
    **config: Any,
) -> list[str]:
    """Replace matching ``nn.Linear`` layers of ``model`` in place by :class:`WTACRSLinear`.

    Parameters are shared, not copied, so optimizers and checkpoints keep working. Only layers
    whose type is exactly ``nn.Linear`` are replaced (subclasses such as the ``out_proj`` of
    ``nn.MultiheadAttention``, whose weight is read directly by its parent, are left alone).

    Args:
        model: The model to modify in place.
        ratio: Fraction of rows kept, in ``(0, 1]``.
        include: Name patterns (``fnmatch``, matched against the full module name and its last
            component), a predicate ``(name, module) -> bool``, or ``None`` for every linear.
        exclude: Patterns or predicate of layers never replaced (default ``lm_head``).
        **config: Further :class:`WTACRSLinear` options (``min_k``, ``method``, ``det_ratio``,
            ``generator``).

    Returns:
        The names of the replaced layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_in_range("ratio", ratio, 0.0, 1.0, low_inclusive=False)
    if isinstance(model, nn.Linear):
        raise ValueError("model is itself an nn.Linear; use WTACRSLinear.from_linear(model)")
    names = [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear
        and _matches(name, module, include, True)
        and not _matches(name, module, exclude, False)
    ]
    for name in names:
        layer = WTACRSLinear.from_linear(model.get_submodule(name), ratio=ratio, **config)
        _set_submodule(model, name, layer)
    return names


def revert_linear(model: nn.Module) -> list[str]:
    """Turn every :class:`WTACRSLinear` of ``model`` back into an ``nn.Linear`` (shared params).

    Args:
        model: The model to modify in place.

    Returns:
        The names of the reverted layers.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, WTACRSLinear) and n]
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).to_linear())
    return names


# --------------------------------------------------------------------------- measurement
def saved_tensor_bytes(
    fn: Callable[[], Tensor],
    *,
    exclude: Iterable[Tensor] = (),
    backward: bool = True,
) -> int:
    """Bytes of the tensors autograd saves while ``fn()`` builds its graph (storages deduped).

    Runs ``fn`` under ``torch.autograd.graph.saved_tensors_hooks``, records each saved tensor's
    untyped storage once, then (by default) calls ``backward()`` on the returned scalar.

    Args:
        fn: A closure returning a scalar loss.
        exclude: Tensors whose storages are not counted (pass ``model.parameters()`` to count
            activations only).
        backward: Run ``loss.backward()`` afterwards.

    Returns:
        The total number of bytes of distinct saved storages.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip:
            storages[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    if backward:
        loss.backward()
    return sum(storages.values())


def peak_memory_bytes(fn: Callable[[], Tensor], device: torch.device | str) -> int:
    """Peak memory of one forward + backward of the loss closure ``fn``.

    On CUDA: ``torch.cuda.max_memory_allocated`` over the step minus the memory allocated
    before it. On CPU: :func:`saved_tensor_bytes` (what autograd keeps between the passes).

    Args:
        fn: A closure returning a scalar loss.
        device: The device the closure runs on.

    Returns:
        Bytes.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return saved_tensor_bytes(fn)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn().backward()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)
