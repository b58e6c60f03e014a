"""Type aliases shared by several method packages."""

from __future__ import annotations

from typing import Literal

Reduction = Literal["mean", "sum", "none"]
"""How a loss reduces over examples, as in ``torch.nn`` losses."""

__all__ = ["Reduction"]
