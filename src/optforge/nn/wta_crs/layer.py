"""``WTACRSLinear``: a drop-in ``nn.Linear`` that keeps ``ratio`` of its input rows for ``∇W``.

The layer draws ``k = min(max(round(ratio·N), min_k), N)`` of the ``N`` flattened input rows in the
forward pass (:func:`~optforge.nn.wta_crs.sample_rows`, scores ``‖x_i‖``, or
``‖x_i‖·‖∇Z_i‖`` with a :class:`~optforge.nn.GradNormCache`) and hands them to
:class:`~optforge.nn.wta_crs.WTACRSLinearFunction`. Layers that read the *same input tensor*
(q/k/v projections, gate/up projections, the LoRA ``A`` matrices of those) can share one
:class:`SampleShare`: the first draws, the others reuse its indices, weights and stored rows, so
the input is kept once at ``ratio`` instead of three times.

Example:
    >>> import torch
    >>> from optforge.nn import SampleShare, WTACRSLinear
    >>> share = SampleShare()
    >>> q = WTACRSLinear(64, 64, ratio=0.3, share=share)
    >>> k = WTACRSLinear(64, 64, ratio=0.3, share=share)
    >>> x = torch.randn(4, 32, 64)
    >>> (q(x) * k(x)).sum().backward()  # one index set, one stored copy of 0.3 of x
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Mapping
from numbers import Integral
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from optforge._core import (
    check_choice,
    check_device,
    check_in_range,
    check_nonnegative_int,
    check_positive_int,
    check_seed,
    make_generator,
)
from optforge.nn.wta_crs.cache import GradNormCache
from optforge.nn.wta_crs.function import (
    ROW_SOURCE_ATTR,
    RowSource,
    WTACRSLinearFunction,
    tie_sample,
)
from optforge.nn.wta_crs.sampling import sample_rows, sample_size

__all__ = ["LAYER_OPTIONS", "SampleShare", "WTACRSLinear", "check_layer_config"]

Method = Literal["wta", "crs", "exact"]
_METHODS = ("wta", "crs", "exact")
Sample = tuple[Tensor, Tensor, Tensor | RowSource]


class SampleShare:
    """One sample (indices, weights, stored rows) for consecutive layers reading the same tensor.

    A layer looks up its input: if it is the very tensor (same object, same version) the last
    sampling layer of this share read, with the same ``k`` and method, it reuses that sample;
    otherwise it draws and records its own. Only weak references are kept, so the share never
    holds an activation alive; under ``torch.compile`` it is bypassed (every layer draws).
    Each layer's estimate stays unbiased: a shared sample is a valid draw for every layer.
    """

    def __init__(self) -> None:
        self._entry: tuple[Any, ...] | None = None
        self.hits = 0

    def get(self, x: Tensor, key: Hashable) -> Sample | None:
        """The recorded sample if ``x`` is the input it was drawn from, else ``None``."""
        entry = self._entry
        if entry is None:
            return None
        x_ref, version, entry_key, refs = entry
        if x_ref() is not x or x._version != version or entry_key != key:
            return None
        sample = tuple(ref() for ref in refs)
        if any(t is None for t in sample):
            return None
        self.hits += 1
        return sample  # type: ignore[return-value]

    def put(self, x: Tensor, key: Hashable, sample: Sample) -> None:
        """Record ``sample`` as drawn from ``x``."""
        self._entry = (weakref.ref(x), x._version, key, tuple(weakref.ref(t) for t in sample))


#: The options of a :class:`WTACRSLinear` besides its shape (what ``convert_linear`` forwards).
LAYER_OPTIONS: tuple[str, ...] = (
    "ratio",
    "min_k",
    "method",
    "det_ratio",
    "generator",
    "grad_norm_cache",
    "share",
)
_DEFAULTS: dict[str, Any] = {
    "ratio": 0.3,
    "min_k": 10,
    "method": "wta",
    "det_ratio": None,
    "generator": None,
    "grad_norm_cache": None,
    "share": None,
}


def check_layer_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate :class:`WTACRSLinear` options; the full option dict with defaults filled in.

    Raises ``TypeError`` for an unknown option or a value of the wrong type and ``ValueError``
    for an out-of-range value, each naming the option; nothing is built before it passes.
    """
    unknown = sorted(set(config) - set(LAYER_OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown WTACRSLinear option(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(LAYER_OPTIONS)}"
        )
    out = {**_DEFAULTS, **config}
    out["ratio"] = float(check_in_range("ratio", out["ratio"], 0.0, 1.0, low_inclusive=False))
    out["min_k"] = check_positive_int("min_k", out["min_k"])
    check_choice("method", out["method"], _METHODS)
    det_ratio = out["det_ratio"]
    if det_ratio is not None:
        check_in_range("det_ratio", det_ratio, 0.0, 1.0, high_inclusive=False)
        if out["method"] == "crs":
            raise ValueError("det_ratio applies to method='wta' only (CRS has no winners)")
        out["det_ratio"] = float(det_ratio)
    generator = out["generator"]
    if isinstance(generator, Integral) and not isinstance(generator, bool):
        out["generator"] = check_seed("generator", generator)
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, an int seed or None, got "
            f"{type(generator).__name__}"
        )
    cache = out["grad_norm_cache"]
    if cache is not None and not isinstance(cache, GradNormCache):
        raise TypeError(
            f"grad_norm_cache must be a GradNormCache or None, got {type(cache).__name__}"
        )
    share = out["share"]
    if share is not None and not isinstance(share, SampleShare):
        raise TypeError(f"share must be a SampleShare or None, got {type(share).__name__}")
    return out


def _autocast(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (e.g. meta)
        return False


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
        grad_norm_cache: A :class:`~optforge.nn.GradNormCache` for ``p ∝ ‖x_i‖·‖∇Z_i‖`` (the
            official estimator), or ``None`` for ``p ∝ ‖x_i‖``.
        share: A :class:`SampleShare` common to layers that read the same input, or ``None``.
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
        grad_norm_cache: GradNormCache | None = None,
        share: SampleShare | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_nonnegative_int("in_features", in_features)
        check_nonnegative_int("out_features", out_features)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        config = {
            "ratio": ratio,
            "min_k": min_k,
            "method": method,
            "det_ratio": det_ratio,
            "generator": generator,
            "grad_norm_cache": grad_norm_cache,
            "share": share,
        }
        check_layer_config(config)  # before allocating the parameters
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._configure(**config)

    def _configure(self, **config: Any) -> None:
        checked = check_layer_config(config)
        generator = checked["generator"]
        if isinstance(generator, int):
            generator = make_generator(generator, self.weight.device)
        self.ratio = checked["ratio"]
        self.min_k = checked["min_k"]
        self.method = checked["method"]
        self.det_ratio = checked["det_ratio"]
        self.generator = generator
        self.grad_norm_cache = checked["grad_norm_cache"]
        cache = self.grad_norm_cache
        self._cache_key = cache.new_key() if cache is not None else None
        self.share = checked["share"]

    @classmethod
    def from_linear(cls, linear: nn.Linear, **config: Any) -> WTACRSLinear:
        """A ``WTACRSLinear`` sharing ``linear``'s ``Parameter`` objects (no copy).

        Args:
            linear: The layer to wrap (its ``weight``/``bias`` are reused as they are).
            **config: ``ratio``, ``min_k``, ``method``, ``det_ratio``, ``generator``,
                ``grad_norm_cache``, ``share``.
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
        self._check_input(input)
        k = self.sample_count(input)
        if k is None:
            return F.linear(input, self.weight, self.bias)
        record = self.recorder(input)
        with torch.no_grad():
            idx, weights, rows = self._sample(input, k)
        bias = tie_sample(self.bias, self.weight, idx, weights)
        return WTACRSLinearFunction.apply(input, self.weight, bias, idx, weights, rows, record)

    def sample_count(self, input: Tensor) -> int | None:
        """``k`` if a call on ``input`` samples rows; ``None`` when it is plain ``nn.Linear``."""
        n_rows = input.numel() // max(input.shape[-1], 1)
        k = sample_size(n_rows, self.ratio, self.min_k)
        if (
            self.method == "exact"
            or k >= n_rows
            or not self.training
            or not torch.is_grad_enabled()
            or not self.weight.requires_grad
        ):
            return None
        return k

    def recorder(self, input: Tensor) -> Any:
        """The gradient-norm cache's callback for this input (``None`` without a cache)."""
        if self.grad_norm_cache is None:
            return None
        if torch.compiler.is_compiling():
            # the cache writes gradient norms from inside the backward pass (a Python callback
            # and an in-place update of its table), which inductor cannot compile: say so here
            # instead of failing deep in the compiler
            raise RuntimeError(
                "grad_norm_cache is an eager-mode feature: WTACRSLinear with a GradNormCache "
                "cannot run under torch.compile (compile the model without the cache, or leave "
                "the converted layers uncompiled)"
            )
        return self.grad_norm_cache.recorder(self._cache_key, input.shape, input.device)

    def _check_input(self, input: Tensor) -> None:
        """Shape, device and dtype against the weight: metadata only, no host synchronisation.

        Values are not checked (a NaN or inf check would read a device value back): a non-finite
        input gives a non-finite output, as with ``nn.Linear``, and never an invalid sample.
        """
        if input.shape[-1] != self.in_features:
            raise ValueError(
                f"input must have {self.in_features} features in its last dimension "
                f"(in_features), got shape {tuple(input.shape)}"
            )
        check_device("input", input, self.weight.device, owner="the layer's weight")
        if input.dtype != self.weight.dtype and not _autocast(input.device.type):
            raise TypeError(
                f"input has dtype {input.dtype} but the layer's weight {self.weight.dtype}; "
                f"cast one of them (or run under torch.autocast)"
            )

    def _sample(self, input: Tensor, k: int) -> Sample:
        share = None if torch.compiler.is_compiling() else self.share
        key = (k, self.method, self.det_ratio)
        if share is not None:
            hit = share.get(input, key)
            if hit is not None:
                return hit
        rows = input if input.dim() == 2 else input.reshape(-1, input.shape[-1])
        idx, weights = self._draw_rows(rows, input, k)
        compiling = torch.compiler.is_compiling()
        source = None if compiling else getattr(input, ROW_SOURCE_ATTR, None)
        if isinstance(source, RowSource) and source.version == input._version:
            # the rows are recomputed in the backward pass from tensors kept anyway
            sample: Sample = (idx, weights, source)
        else:
            sample = (idx, weights, rows.index_select(0, idx))
        if share is not None:
            share.put(input, key, sample)
        return sample

    def draw(self, input: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Indices and importance weights of ``k`` of ``input``'s flattened rows (no rows kept).

        The layer's own draw (scores ``‖x_i‖``, times the cached gradient norms with a cache),
        without the shared sample; call under ``torch.no_grad()``.
        """
        rows = input if input.dim() == 2 else input.reshape(-1, input.shape[-1])
        return self._draw_rows(rows, input, k)

    def _draw_rows(self, rows: Tensor, input: Tensor, k: int) -> tuple[Tensor, Tensor]:
        scale = None
        if self.grad_norm_cache is not None:
            scale = self.grad_norm_cache.scale(self._cache_key, input.shape, input.device)
        return sample_rows(
            rows,
            k,
            method="crs" if self.method == "crs" else "wta",
            det_ratio=self.det_ratio,
            generator=self.generator,
            scale=scale,
        )

    def extra_repr(self) -> str:
        extra = f", det_ratio={self.det_ratio}" if self.det_ratio is not None else ""
        cache = ", grad_norm_cache=True" if self.grad_norm_cache is not None else ""
        shared = ", shared" if self.share is not None else ""
        return (
            f"{super().extra_repr()}, ratio={self.ratio}, method={self.method!r}"
            f"{extra}{cache}{shared}"
        )
