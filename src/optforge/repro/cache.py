"""The one caching rule of the reproductions.

Work shared by the arms of one seed belongs in the reproduction's ``experiment`` (see
:mod:`optforge.repro.registry`), which the runner calls once per (config, seed). Work shared
across seeds or scales in one process (a fixed pretrained model, an expensive constant) is
wrapped in :func:`memoize`: a per-process LRU cache keyed on the arguments' canonical JSON
(configs may be plain dicts and lists). Cached values are shared: never modify them in place.

Example::

    @memoize
    def trained_classifier(config: dict, device: str) -> nn.Module: ...
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

__all__ = ["memoize"]


def memoize(fn: Callable[..., R] | None = None, *, maxsize: int = 16) -> Any:
    """Cache ``fn``'s results per process, keyed on its arguments (JSON-canonicalised)."""

    def wrap(f: Callable[..., R]) -> Callable[..., R]:
        entries: OrderedDict[str, R] = OrderedDict()

        @functools.wraps(f)
        def cached(*args: Any, **kwargs: Any) -> R:
            key = json.dumps([args, kwargs], sort_keys=True, default=_key_part)
            if key in entries:
                entries.move_to_end(key)
                return entries[key]
            value = f(*args, **kwargs)
            entries[key] = value
            if len(entries) > maxsize:
                entries.popitem(last=False)
            return value

        cached.cache_clear = entries.clear  # type: ignore[attr-defined]
        return cached

    return wrap if fn is None else wrap(fn)


def _key_part(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
    if hasattr(value, "items"):
        return dict(value.items())
    raise TypeError(f"memoize: argument of type {type(value).__name__} cannot be a cache key")
