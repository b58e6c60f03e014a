"""The report's figures (matplotlib, Agg backend): one per run, and the claim overview.

A run's figure shows, for each curve it logged (``plot.y`` of the record), the mean over seeds
of every method with a 95% bootstrap band of that mean (seeds resampled jointly, as for the
claims), one panel per curve, two panels per row, one colour and line style per method shared
by every panel (so a curve drawn under another stays visible). A run without curves gets bars
of its first scalar metrics with the same bootstrap interval as error bars.

The claim overview puts every claim on one row: its value and interval as a margin past its
threshold (right of the line: the claimed side), coloured by verdict.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from optforge.repro.report.format import fmt_interval, fmt_number, is_number

__all__ = ["bootstrap_mean_band", "plot_claims_overview", "plot_record"]

BAND_LEVEL = 0.95
BAND_DRAWS = 1000
BAND_SEED = 0
VERDICT_COLORS = {"held": "#176f2c", "failed": "#b00020", "inconclusive": "#c77c00"}
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@contextmanager
def _pyplot() -> Any:
    """pyplot on the Agg backend, TeX off (record text goes through :func:`_text`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.usetex": False}):
        yield plt


def _text(value: Any) -> str:
    """Record text as written: ``$`` escaped so mathtext never parses it."""
    return str(value).replace("$", r"\$")


def bootstrap_mean_band(
    values: np.ndarray, level: float = BAND_LEVEL, draws: int = BAND_DRAWS, seed: int = BAND_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over rows (seeds) of ``values`` ``(seeds, points)`` and its percentile bootstrap
    band: rows resampled with replacement, the same draws for every point (seeded)."""
    values = np.asarray(values, dtype=float)
    with warnings.catch_warnings():  # curves may be NaN before a burn-in
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        if values.shape[0] < 2:
            return mean, mean.copy(), mean.copy()
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, values.shape[0], size=(draws, values.shape[0]))
        means = np.nanmean(values[picks], axis=1)
        tail = (1 - level) / 2
        low, high = np.nanquantile(means, [tail, 1 - tail], axis=0)
    return mean, low, high


def _is_curve(value: Any) -> bool:
    return isinstance(value, list) and bool(value)


def _curve_keys(record: Mapping[str, Any]) -> list[str]:
    spec = record.get("plot") if isinstance(record.get("plot"), Mapping) else {}
    x_key = spec.get("x", "step")
    metrics = record["metrics"]
    keys = [str(k) for k in spec.get("y") or []] if isinstance(spec.get("y"), list) else []
    if not keys:
        keys = sorted(
            {
                str(k)
                for per_seed in metrics.values()
                for values in per_seed.values()
                for k, v in values.items()
                if _is_curve(v) and k != x_key
            }
        )[:4]
    return [
        k
        for k in keys
        if any(_is_curve(v.get(k)) for per_seed in metrics.values() for v in per_seed.values())
    ]


def _as_float(value: Any) -> float:
    return float(value) if is_number(value) else math.nan


def plot_record(record: Mapping[str, Any], path: Path) -> Path:
    """One PNG for one run: curves with bootstrap bands, else bars with bootstrap intervals."""
    spec = record.get("plot") if isinstance(record.get("plot"), Mapping) else {}
    x_key = str(spec.get("x", "step"))
    metrics = record["metrics"]
    methods = list(metrics)
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    curves = _curve_keys(record)
    with _pyplot() as plt:
        if curves:
            ncols = 1 if len(curves) == 1 else 2
            nrows = math.ceil(len(curves) / ncols)
            fig, axes = plt.subplots(
                nrows, ncols, figsize=(11, 1.0 + 3.6 * nrows), squeeze=False, layout="constrained"
            )
            n_methods = max(1, len(methods))
            handles: dict[str, Any] = {}
            for ax, key in zip(axes.flat, curves, strict=False):
                for i, (method, per_seed) in enumerate(metrics.items()):
                    runs = [v for v in per_seed.values() if _is_curve(v.get(key))]
                    if not runs:
                        continue
                    length = min(len(v[key]) for v in runs)
                    arr = np.array([[_as_float(u) for u in v[key][:length]] for v in runs])
                    xs = runs[0].get(x_key)
                    x = (
                        np.array([_as_float(u) for u in xs[:length]])
                        if isinstance(xs, list) and len(xs) >= length
                        else np.arange(length, dtype=float)
                    )
                    mean, low, high = bootstrap_mean_band(arr)
                    every = max(1, length // 8)
                    # Later methods are drawn thinner and dashed, markers staggered: a curve
                    # lying on another one still shows around and between its dashes.
                    (line,) = ax.plot(
                        x,
                        mean,
                        color=colors[method],
                        linestyle=_STYLES[i % len(_STYLES)],
                        marker=_MARKERS[i % len(_MARKERS)],
                        markevery=(min(length - 1, (i * every) // n_methods), every),
                        markersize=4.5,
                        linewidth=max(1.2, 3.4 - 0.6 * i),
                        alpha=0.9,
                        label=_text(method),
                    )
                    handles.setdefault(_text(method), line)
                    if arr.shape[0] > 1:
                        ax.fill_between(x, low, high, alpha=0.15, color=colors[method], lw=0)
                ax.set_xlabel(_text(x_key))
                ax.set_ylabel(_text(key))
                ax.set_title(_text(key), fontsize=10)
                if spec.get("logy"):
                    ax.set_yscale("log")
                ax.grid(alpha=0.3)
            for ax in axes.flat[len(curves) :]:
                ax.set_visible(False)
            fig.legend(
                list(handles.values()),
                list(handles),
                loc="outside lower center",
                ncol=min(4, max(1, len(handles))),
                fontsize=9,
                frameon=False,
            )
        else:
            keys = _scalar_keys(metrics)[:2]
            fig, axes = plt.subplots(
                1, max(1, len(keys)), figsize=(11, 4.2), squeeze=False, layout="constrained"
            )
            for ax, key in zip(axes[0], keys, strict=False):
                means, lows, highs = [], [], []
                for per_seed in metrics.values():
                    vals = np.array([[_as_float(v.get(key))] for v in per_seed.values()])
                    if vals.size and np.isfinite(vals).any():
                        mean, low, high = bootstrap_mean_band(vals)
                        means.append(mean[0])
                        lows.append(mean[0] - low[0])
                        highs.append(high[0] - mean[0])
                    else:
                        means.append(math.nan)
                        lows.append(0.0)
                        highs.append(0.0)
                labels = [_text(m) for m in methods]
                ax.bar(
                    labels,
                    means,
                    yerr=[lows, highs],
                    capsize=3,
                    color=[colors[m] for m in methods],
                )
                ax.set_ylabel(_text(key))
                ax.set_title(f"{_text(key)} (mean, 95% bootstrap interval)", fontsize=10)
                ax.tick_params(axis="x", rotation=30, labelsize=8)
                for label in ax.get_xticklabels():
                    label.set_horizontalalignment("right")
        seeds = record.get("seeds")
        n_seeds = len(seeds) if isinstance(seeds, list) else "?"
        fig.suptitle(
            _text(
                f"{record['name']} ({record['scale']}, {n_seeds} seeds): mean over seeds, "
                "95% bootstrap band"
            )
        )
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path


def _scalar_keys(metrics: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    for per_seed in metrics.values():
        for values in per_seed.values():
            for key, val in values.items():
                if is_number(val) and str(key) not in keys:
                    keys.append(str(key))
    return keys


def _margins(claim: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """(value, low, high) as margins past the threshold, scaled by |threshold|; right = claimed.

    With a zero threshold the scale is the largest finite |value| or interval end.
    """
    value, threshold = claim.get("value"), claim.get("threshold")
    if not (is_number(value) and is_number(threshold)) or not math.isfinite(value):
        return None
    sign = 1.0 if claim.get("op") in (">=", ">") else -1.0
    interval = claim.get("interval")
    if isinstance(interval, list) and len(interval) == 2:
        low = -math.inf if interval[0] is None else _as_float(interval[0])
        high = math.inf if interval[1] is None else _as_float(interval[1])
    else:
        low = high = float(value)
    finite = [abs(v) for v in (value, low, high) if math.isfinite(v)]
    scale = abs(threshold) if abs(threshold) > 1e-12 else max([*finite, 1e-12])
    ends = sorted(sign * (v - threshold) / scale for v in (low, high))
    return sign * (value - threshold) / scale, ends[0], ends[1]


def plot_claims_overview(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """One row per claim: value (dot) and interval (bar) as a margin past the threshold.

    ``rows`` are ``{"label": str, "group": str, "claim": claim record}``; the x axis is clipped
    at ±100% of |threshold|, the text on the right gives the exact figures.
    """
    n = max(1, len(rows))
    with _pyplot() as plt:
        fig, ax = plt.subplots(figsize=(11, 1.2 + 0.24 * n))
        previous_group = None
        for i, row in enumerate(rows):
            claim = row["claim"]
            y = n - 1 - i
            verdict = claim.get("verdict")
            if verdict not in VERDICT_COLORS:
                verdict = "held" if claim.get("held") else "failed"
            color = VERDICT_COLORS[verdict]
            margins = _margins(claim)
            if margins is None:
                ax.plot([-1], [y], marker="x", color=color, markersize=7)
            else:
                value, low, high = (float(np.clip(v, -1, 1)) for v in margins)
                ax.plot([low, high], [y, y], color=color, linewidth=3, alpha=0.45)
                ax.plot([value], [y], marker="o", color=color, markersize=5)
            text = (
                f"{fmt_number(claim.get('value'))} {fmt_interval(claim.get('interval'))} "
                f"{claim.get('op', '')} {fmt_number(claim.get('threshold'))}  {verdict}"
            )
            ax.text(
                1.01,
                y,
                _text(text),
                transform=ax.get_yaxis_transform(),  # x in axes fractions, y in rows
                va="center",
                fontsize=7.5,
                color=color,
                clip_on=False,
            )
            if row.get("group") != previous_group:
                if i:
                    ax.axhline(y + 0.5, color="#999", linewidth=0.6)
                previous_group = row.get("group")
        ax.axvline(0, color="black", linewidth=1)
        ax.set_yticks(range(n))
        labels = [_text(str(r["label"])[:64]) for r in reversed(rows)]
        ax.set_yticklabels(labels or [""], fontsize=7.5)
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xticks([-1, -0.5, 0, 0.5, 1])
        ax.set_xticklabels(["≤ −100%", "−50%", "threshold", "+50%", "≥ +100%"])
        ax.xaxis.set_ticks_position("both")
        ax.tick_params(axis="x", labeltop=True, labelsize=8)
        ax.set_xlabel(
            "margin past the threshold, as a fraction of |threshold| (of the largest |value| "
            "when the threshold is 0); right: the claimed side",
            fontsize=8,
        )
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(
            "Every claim: value (dot) and interval (bar); green held, red failed, "
            "amber inconclusive",
            fontsize=10,
        )
        fig.tight_layout()
        fig.subplots_adjust(right=0.68)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path
