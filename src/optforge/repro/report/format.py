"""Number formatting and safe names for the report.

Numbers are shown with the precision they carry: up to four significant digits, scientific
notation only for very small or large magnitudes, and a spread rounded to two significant digits
with its mean at the same decimal place ("0.89 ± 0.10"). A spread below a millionth of the mean
("0.1 ± 1.4e-17") is dropped: the seeds agree to float precision.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["fmt_interval", "fmt_mean_sd", "fmt_number", "is_number", "md_text", "safe_stem"]


def is_number(value: Any) -> bool:
    """A real number (``bool`` excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt_number(value: Any, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits; ``n/a`` for a missing value."""
    if value is None:
        return "n/a"
    if not is_number(value):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{max(1, digits - 1)}g}"


def fmt_mean_sd(mean: float, sd: float) -> str:
    """``mean ± sd`` with ``sd`` to two significant digits and ``mean`` rounded to match."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or sd <= 1e-6 * max(abs(mean), 1e-300):
        return fmt_number(mean)  # the seeds agree to float precision
    decimals = 1 - math.floor(math.log10(sd))
    if 0 <= decimals <= 6 and abs(mean) < 1e6:
        return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"
    if decimals < 0 and abs(mean) < 1e6:
        return f"{round(mean, decimals):.0f} ± {round(sd, decimals):.0f}"
    return f"{mean:.3g} ± {sd:.2g}"


def fmt_interval(interval: Any) -> str:
    """``[low, high]``; ``None`` ends are unbounded; ``—`` when there is no interval."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return "—"
    low, high = interval
    low_text = "−∞" if low is None else fmt_number(low)
    high_text = "∞" if high is None else fmt_number(high)
    return f"[{low_text}, {high_text}]"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_stem(text: Any, limit: int = 80) -> str:
    """A file-name and HTML-id safe stem of ``text``: ``[A-Za-z0-9_.-]`` only, no leading dot,
    never empty (``../../escaped`` → ``escaped``)."""
    stem = _UNSAFE.sub("-", str(text)).strip(".-")
    stem = re.sub(r"\.{2,}", ".", stem)[:limit].strip(".-")
    return stem or "run"


def md_text(value: Any) -> str:
    """Text safe in Markdown (a table cell, a heading): one line, no link, code or HTML.

    ``&``, ``<`` and ``>`` become entities (no HTML, no autolink); backslash, ``|`` and the
    backtick are backslash-escaped, and so is a ``]`` that would open a link target (``](``
    or ``][``); quotes stay (the Markdown outputs never put record text inside an attribute).
    """
    text = str(value).replace("\\", "\\\\").replace("\n", " ").replace("\r", " ")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("|", "\\|").replace("`", "\\`")
    return re.sub(r"\](?=[(\[])", r"\\]", text)
