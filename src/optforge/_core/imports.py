"""Optional heavy dependencies, imported inside the functions that need them."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` naming the optforge extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is required for this feature; install it with "
            f"`pip install 'optforge[{extra}]'`"
        ) from err
