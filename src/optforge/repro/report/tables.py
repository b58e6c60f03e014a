"""The report's tables as plain rows of text (the templates escape every cell)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optforge.repro.report.format import fmt_interval, fmt_mean_sd, fmt_number, is_number

__all__ = ["VERDICTS", "claim_verdict", "claims_rows", "method_table", "verdict_counts"]

VERDICTS = ("held", "failed", "inconclusive")
_VERDICT_TEXT = {"held": "held", "failed": "FAILED", "inconclusive": "inconclusive"}


def claim_verdict(claim: Mapping[str, Any]) -> str:
    """``held`` / ``failed`` / ``inconclusive``; records older than verdicts give held/failed."""
    verdict = claim.get("verdict")
    if verdict in VERDICTS:
        return str(verdict)
    return "held" if claim.get("held") is True else "failed"


def verdict_counts(claims: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(VERDICTS, 0)
    for claim in claims:
        counts[claim_verdict(claim)] += 1
    return counts


def _interval_text(claim: Mapping[str, Any]) -> str:
    if claim.get("n_seeds") == 1:
        return "— (1 seed)"
    text = fmt_interval(claim.get("interval"))
    level = claim.get("interval_level")
    if text != "—" and is_number(level) and not math.isclose(level, 0.95):
        text += f" ({100 * level:.4g}%)"
    return text


def claims_rows(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per claim: name, quantity, value, interval, threshold, verdict, statement."""
    rows = []
    for claim in record["claims"]:
        verdict = claim_verdict(claim)
        rows.append(
            {
                "claim": str(claim.get("name", "")),
                "quantity": str(claim.get("quantity") or claim.get("description") or "—"),
                "value": fmt_number(claim.get("value")),
                "interval": _interval_text(claim),
                "threshold": f"{claim.get('op', '')} {fmt_number(claim.get('threshold'))}",
                "verdict": verdict,
                "verdict_text": _VERDICT_TEXT[verdict],
                "statement": str(claim.get("statement", "")),
            }
        )
    return rows


CLAIMS_HEADER = (
    ("claim", "claim"),
    ("quantity", "measured quantity"),
    ("value", "value"),
    ("interval", "95% interval"),
    ("threshold", "threshold"),
    ("verdict_text", "verdict"),
    ("statement", "paper statement tested"),
)


def method_table(record: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Mean ± sd over seeds of every scalar metric, one row per method (header, rows)."""
    metrics = record["metrics"]
    names: list[str] = []
    for per_seed in metrics.values():
        for values in per_seed.values():
            for key, val in values.items():
                if (is_number(val) or val is None) and str(key) not in names:
                    names.append(str(key))
    rows = []
    for method, per_seed in metrics.items():
        row = [str(method)]
        for key in names:
            finite = [float(v[key]) for v in per_seed.values() if is_number(v.get(key))]
            finite = [v for v in finite if math.isfinite(v)]
            if not finite:
                row.append("n/a")
            elif len(finite) == 1:
                row.append(fmt_number(finite[0]))
            else:
                row.append(fmt_mean_sd(float(np.mean(finite)), float(np.std(finite, ddof=1))))
        rows.append(row)
    return ["method", *names], rows


def oriented_method_table(record: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """:func:`method_table`, transposed (one row per metric) when metrics outnumber methods."""
    header, rows = method_table(record)
    if len(header) - 1 <= max(len(rows), 4):
        return header, rows
    transposed = [[metric] + [row[i + 1] for row in rows] for i, metric in enumerate(header[1:])]
    return ["metric", *(row[0] for row in rows)], transposed
