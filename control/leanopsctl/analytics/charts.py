"""The reports' charts: lag per topic over time, runs per day by outcome.

matplotlib draws them off screen: each figure is made on Agg's canvas directly (no pyplot, no window, no
global backend). Each function returns the :class:`~matplotlib.figure.Figure` (a test reads it before it is
saved) and :func:`save_png` writes it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib import dates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leanops.protocol.model import RUN_OUTCOMES

#: 1200 x 600 pixels at DPI.
SIZE_INCHES = (12.0, 6.0)
DPI = 100
#: One colour per outcome, the same in every chart: good green, waiting grey and yellow, failures red.
OUTCOME_COLOURS = {
    "processed": "#2ca02c",
    "up_to_date": "#98df8a",
    "skipped_locked": "#dbdb8d",
    "paused": "#c7c7c7",
    "failed": "#d62728",
    "timed_out": "#ff7f0e",
    "aborted": "#8c564b",
}
#: Lag's unit: the largest whose values stay readable (seconds up to 2 minutes, minutes up to 3 hours, hours
#: up to 3 days).
_UNITS = (
    ("days", 86_400.0, 3 * 86_400.0),
    ("hours", 3_600.0, 3 * 3_600.0),
    ("minutes", 60.0, 120.0),
    ("seconds", 1.0, 0.0),
)


def lag_unit(seconds: Sequence[float]) -> tuple[str, float]:
    """The unit that the largest of ``seconds`` reads best in, and its size in seconds."""
    largest = max(seconds, default=0.0)
    for name, size, above in _UNITS:
        if largest > above:
            return name, size
    return "seconds", 1.0


def _figure() -> Figure:
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def lag_figure(
    rows: Sequence[Mapping[str, Any]], *, subtitle: str = "", window: tuple[datetime, datetime] | None = None
) -> Figure:
    """One line per topic: its hourly average lag over time (``rows`` of the ``lag`` query), over the
    report's ``window`` (naive UTC) when given: a few hours of history still read as where they lie in it."""
    by_topic: dict[str, list[tuple[Any, float]]] = defaultdict(list)
    for row in rows:
        if row["avg_lag_seconds"] is not None:
            by_topic[str(row["topic"])].append((row["hour"], float(row["avg_lag_seconds"])))
    unit, size = lag_unit([lag for points in by_topic.values() for _, lag in points])
    figure = _figure()
    axes = figure.add_subplot()
    for topic in sorted(by_topic):
        points = sorted(by_topic[topic])
        axes.plot(
            [p[0] for p in points], [p[1] / size for p in points], marker=".", linewidth=1.5, label=topic
        )
    axes.set_title("Average lag per topic, by hour" + (f" ({subtitle})" if subtitle else ""))
    axes.set_xlabel("hour (UTC)")
    axes.set_ylabel(f"average lag ({unit})")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    locator = dates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
    if window is not None:
        axes.set_xlim(dates.date2num(window[0]), dates.date2num(window[1]))
    if by_topic:
        axes.legend(
            title="topic", loc="upper left", bbox_to_anchor=(1.01, 1.0), ncols=1 + len(by_topic) // 25
        )
    return figure


def runs_figure(rows: Sequence[Mapping[str, Any]], *, subtitle: str = "") -> Figure:
    """Runs per day, one bar a day stacked by outcome (``rows`` of the ``runs`` query, summed over topics)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        counts[str(row["outcome"])][str(row["day"])] += int(row["runs"])
    days = sorted({day for per_day in counts.values() for day in per_day})
    known = [o for o in RUN_OUTCOMES if o in counts]
    outcomes = known + sorted(set(counts) - set(known))
    figure = _figure()
    axes = figure.add_subplot()
    bottom = [0] * len(days)
    for outcome in outcomes:
        heights = [counts[outcome].get(day, 0) for day in days]
        axes.bar(days, heights, bottom=bottom, label=outcome, color=OUTCOME_COLOURS.get(outcome))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set_title("Runs per day by outcome" + (f" ({subtitle})" if subtitle else ""))
    axes.set_xlabel("day (UTC)")
    axes.set_ylabel("runs")
    axes.grid(True, axis="y", alpha=0.3)
    if len(days) > 10:
        axes.tick_params(axis="x", labelrotation=45)
    if outcomes:
        axes.legend(title="outcome", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def save_png(figure: Figure, path: Path | str) -> None:
    figure.savefig(path, format="png", dpi=DPI)
