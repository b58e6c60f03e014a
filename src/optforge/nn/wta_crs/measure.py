"""Contention-free measurements of a training step: saved bytes, peak memory, aten ops, host syncs.

* :func:`saved_tensor_bytes` — what autograd keeps between forward and backward, exactly
  (``torch.autograd.graph.saved_tensors_hooks``, storages counted once);
* :func:`peak_memory_bytes` — ``torch.cuda.max_memory_allocated`` over a step on CUDA;
* :func:`aten_op_counts` — the top-level ``aten::`` operators a step issues (CPU profiler events
  not nested in another aten operator: what the Python code dispatches, one kernel launch or
  more each on a GPU);
* :func:`host_sync_ops` — the profiled operators that read a device value back to the host
  (``aten::item``, ``aten::_local_scalar_dense``, ``aten::nonzero``, ...), which stall a GPU.

Example:
    >>> import torch
    >>> from optforge.nn.wta_crs import aten_op_counts, host_sync_ops
    >>> layer = torch.nn.Linear(8, 4)
    >>> x = torch.randn(16, 8)
    >>> sum(aten_op_counts(lambda: layer(x).sum().backward()).values()) > 0
    True
    >>> host_sync_ops(lambda: layer(x).sum().backward())
    []
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["aten_op_counts", "host_sync_ops", "peak_memory_bytes", "saved_tensor_bytes"]

#: Operators that copy a device value to the host (a synchronisation on CUDA).
SYNC_OPS = frozenset(
    {
        "aten::item",
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::is_nonzero",
        "aten::equal",
        "aten::masked_select",
        "aten::unique",
        "aten::_unique2",
    }
)


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


def _profile(fn: Callable[[], Any]) -> list[Any]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return list(prof.events())


def aten_op_counts(fn: Callable[[], Any]) -> Counter[str]:
    """The top-level ``aten::`` operators ``fn()`` issues, by name (CPU profiler).

    Top level: not nested inside another ``aten::`` event (operators called from Python, from
    an autograd node or from a custom ``autograd.Function``; the internals of a composite
    operator such as ``aten::linear → aten::addmm`` count once).
    """
    counts: Counter[str] = Counter()
    for event in _profile(fn):
        parent = event.cpu_parent
        if event.name.startswith("aten::") and (
            parent is None or not parent.name.startswith("aten::")
        ):
            counts[event.name] += 1
    return counts


def host_sync_ops(fn: Callable[[], Any]) -> list[str]:
    """Names of the profiled operators in ``fn()`` that read device values back to the host."""
    return [e.name for e in _profile(fn) if e.name in SYNC_OPS]
