"""The official estimator's probabilities: ``p_i ∝ ‖H_i‖ · ‖∇Z_i‖`` with cached gradient norms.

The variance of the sampled weight gradient ``∇Zᵀ H`` is smallest for ``p_i ∝ ‖H_i‖·‖∇Z_i‖``,
but the rows are chosen in the forward pass, before ``∇Z`` exists. The official code
(``approxlinear/scheme.py``, ``functional.py``) keeps, for every converted layer, the row norms
``‖∇Z_i‖`` its backward pass saw, indexed by dataset example and token position, and reads
them the next time the same example comes by. :class:`GradNormCache` does the same, opt-in:

* ``GradNormCache(num_examples=M)`` — the official per-example cache: activate the batch's
  example indices with ``with cache.batch(indices):`` around forward and backward; the layer's
  input must be ``(B, L, d)`` with ``B = len(indices)`` and a fixed ``L``;
* ``GradNormCache()`` — the previous step's norms, row for row (no indices; for fixed batches,
  position-dependent gradients, or when the data loader gives no example index).

Any positive ``p`` keeps the estimate unbiased (the importance weights use the same ``p``), so a
stale norm costs variance, never bias. To bound that cost, every row gets
``ĝ_i = g_i + floor · mean(g)``; an all-zero (never seen) block falls back to ``ĝ = 1``, the
activation-only probabilities. The official code adds ``1e-8`` instead, which lets a row whose
cached norm is 0 be drawn with a vanishing probability and an enormous weight.

Example:
    >>> import torch
    >>> from optforge.nn import GradNormCache, WTACRSLinear
    >>> cache = GradNormCache()
    >>> layer = WTACRSLinear(16, 8, ratio=0.25, min_k=1, grad_norm_cache=cache)
    >>> x = torch.randn(64, 16)
    >>> for _ in range(2):  # step 2 samples with ‖x_i‖·(‖∇Z_i‖ of step 1 + floor)
    ...     layer(x).pow(2).sum().backward()
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from optforge._core import check_in_range, check_positive_int

__all__ = ["GradNormCache"]

_KEYS = itertools.count()


class GradNormCache:
    """Cached ``‖∇Z_i‖`` of every layer that uses it, per example (official) or per row.

    Args:
        num_examples: Dataset size for the official per-example cache (example indices must be
            set with :meth:`batch`), or ``None`` for the previous step's norms row for row.
        floor: Fraction of the mean cached norm added to every row, ``ĝ = g + floor·mean(g)``,
            in ``[0, ∞)``; bounds the variance when a row's gradient grew since it was cached.
        dtype: Storage dtype of the per-example cache (the official code: bfloat16).

    Storage: per layer ``num_examples × L`` values on the layer's device (per-example) or ``N``
    fp32 values (per row). Eager mode only (the backward writes to the cache).
    """

    def __init__(
        self,
        num_examples: int | None = None,
        *,
        floor: float = 0.1,
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        if num_examples is not None:
            num_examples = check_positive_int("num_examples", num_examples)
        self.num_examples = num_examples
        self.floor = float(check_in_range("floor", floor, 0.0, float("inf")))
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.dtype = dtype
        self._indices: Tensor | None = None
        self._on_device: dict[torch.device, Tensor] = {}
        self._store: dict[int, Tensor] = {}

    # ------------------------------------------------------------------ batch indices
    def set_batch(self, example_indices: Tensor | None) -> None:
        """Set (or clear, with ``None``) the dataset indices of the next forward/backward."""
        if example_indices is None:
            self._indices, self._on_device = None, {}
            return
        if self.num_examples is None:
            raise ValueError(
                "example indices need a per-example cache: GradNormCache(num_examples)"
            )
        idx = torch.as_tensor(example_indices)
        if idx.dim() != 1 or idx.dtype not in (torch.int32, torch.int64) or idx.numel() == 0:
            raise ValueError("example_indices must be a non-empty 1-D integer tensor")
        if idx.device.type == "cpu" and (int(idx.min()) < 0 or int(idx.max()) >= self.num_examples):
            raise ValueError(f"example_indices must lie in [0, {self.num_examples})")
        self._indices, self._on_device = idx.long(), {}

    @contextlib.contextmanager
    def batch(self, example_indices: Tensor) -> Iterator[GradNormCache]:
        """Context in which forward and backward use these examples' cached norms."""
        self.set_batch(example_indices)
        try:
            yield self
        finally:
            self.set_batch(None)

    def new_key(self) -> int:
        """A fresh storage key (one per layer)."""
        return next(_KEYS)

    def clear(self) -> None:
        """Forget every cached norm."""
        self._store.clear()

    # ------------------------------------------------------------------ layer side
    def _device_indices(self, device: torch.device) -> Tensor:
        if self._indices is None:
            raise ValueError(
                "a per-example GradNormCache needs the batch's example indices: wrap forward and "
                "backward in `with cache.batch(indices):`"
            )
        if device not in self._on_device:
            self._on_device[device] = self._indices.to(device, non_blocking=True)
        return self._on_device[device]

    def _block(self, key: int, shape: torch.Size, device: torch.device) -> tuple[Tensor, Tensor]:
        """(storage ``M × L``, device indices) for an input of ``shape`` = ``(B, L, d)``."""
        idx = self._device_indices(device)
        if len(shape) != 3 or shape[0] != idx.numel():
            raise ValueError(
                f"a per-example GradNormCache needs inputs of shape (B, L, d) with B = "
                f"{idx.numel()} example indices, got shape {tuple(shape)}"
            )
        length = shape[1]
        store = self._store.get(key)
        if store is None:
            store = torch.zeros(self.num_examples, length, dtype=self.dtype, device=device)
            self._store[key] = store
        elif store.shape[1] != length:
            raise ValueError(
                f"GradNormCache shape mismatch: cached sequence length {store.shape[1]}, input "
                f"length {length} (the per-example cache needs a fixed padded length)"
            )
        return store, idx

    def scale(self, key: int, shape: torch.Size, device: torch.device) -> Tensor | None:
        """``ĝ`` for the rows of an input of ``shape`` (``None``: no norm cached yet)."""
        if self.num_examples is None:
            g = self._store.get(key)
            n_rows = shape.numel() // shape[-1]
            if g is None or g.numel() != n_rows or g.device != device:
                return None
        else:
            store, idx = self._block(key, shape, device)
            g = store.index_select(0, idx).reshape(-1).float()
        mean = g.mean()
        return torch.where(mean > 0, g + self.floor * mean, 1.0)

    def recorder(
        self, key: int, shape: torch.Size, device: torch.device
    ) -> Callable[[Tensor], None]:
        """A callback for the backward pass storing ``‖∇Z_i‖`` of the ``(N, d_out)`` gradient."""
        if self.num_examples is None:

            def record_rows(grad: Tensor) -> None:
                self._store[key] = _row_norms(grad)

            return record_rows
        store, idx = self._block(key, shape, device)

        def record_examples(grad: Tensor) -> None:
            norms = _row_norms(grad)
            store.index_copy_(0, idx, norms.view(idx.numel(), -1).to(store.dtype))

        return record_examples


def _row_norms(grad: Tensor) -> Tensor:
    wide = None if grad.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.linalg.vector_norm(grad, dim=1, dtype=wide).float()
