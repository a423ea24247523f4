"""The lab's two charts as PNG bytes: accuracy against time, and accuracy per instruction.

matplotlib is imported inside each function (it takes a while to import, and only a report or
the lab's window ever draws). Figures are built with ``Figure`` and the Agg canvas directly, never
through pyplot, so drawing keeps no global state and works from any thread without a display.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

from desktop_app_lab.stats import ScoreRow, Sensitivity

__all__ = ["pareto_chart_png", "sensitivity_chart_png"]

#: Neutral colours that stay apart for colour-blind readers.
_FRONT = "#1f6fb4"
_OTHER = "#8c8c8c"
_BAR = "#4c8cc4"
#: Labels sit on a white patch so a line running under them leaves them readable.
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    figure.patch.set_facecolor("white")
    return figure


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    out = io.BytesIO()
    # No "Software" text chunk: the report promises not a single outside reference.
    canvas.print_png(out, metadata={"Software": None})
    return out.getvalue()


def _tidy(axes: Any) -> None:
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.grid(True, color="#e5e5e5", linewidth=0.8)
    axes.set_axisbelow(True)


def pareto_chart_png(rows: Sequence[ScoreRow], front: Sequence[str], title: str) -> bytes:
    """Accuracy (with its 95% interval) against mean latency, one labelled point per candidate;
    the Pareto front's points are highlighted and joined. Candidates with no answers are left out."""
    figure = _figure(7.0, 4.4)
    axes = figure.add_subplot(1, 1, 1)
    _tidy(axes)
    plotted = [r for r in rows if r.n and r.latency_mean is not None]
    if not plotted:
        axes.text(0.5, 0.5, "No answers yet", ha="center", va="center", transform=axes.transAxes, color=_OTHER)
    on_front = set(front)
    for row in plotted:
        colour = _FRONT if row.candidate in on_front else _OTHER
        accuracy = row.accuracy * 100
        # max(0, …): at 0% or 100% rounding can put the interval's end a hair inside the point
        axes.errorbar([row.latency_mean], [accuracy],
                      yerr=[[max(0.0, accuracy - row.ci_low * 100)], [max(0.0, row.ci_high * 100 - accuracy)]],
                      fmt="o", color=colour, ecolor=colour, elinewidth=1.2, capsize=4,
                      markersize=8 if row.candidate in on_front else 6, zorder=3)
        axes.annotate(row.candidate, (row.latency_mean, accuracy), xytext=(7, 5), textcoords="offset points",
                      fontsize=8.5, color="#222222", bbox=_LABEL_BOX, zorder=5)
    joined = sorted((r for r in plotted if r.candidate in on_front), key=lambda r: r.latency_mean)
    if len(joined) > 1:
        axes.plot([r.latency_mean for r in joined], [r.accuracy * 100 for r in joined], color=_FRONT,
                  linewidth=1.4, linestyle="--", zorder=2, label="Pareto front")
        axes.legend(loc="lower right", frameon=False, fontsize=8.5)
    axes.set_ylim(-3, 103)
    axes.set_xlim(left=0)
    axes.set_xlabel("Mean time per answer (s)")
    axes.set_ylabel("Accuracy (%), with 95% interval")
    axes.set_title(title, fontsize=11)
    figure.tight_layout()
    return _png(figure)


def _instruction_label(variant: int | None) -> str:
    return "main" if variant is None else f"paraphrase {variant + 1}"


def sensitivity_chart_png(name: str, sensitivity: Sensitivity) -> bytes:
    """Bars of the candidate's accuracy under each instruction (the main one first), with a line
    at their mean."""
    figure = _figure(7.0, 3.6)
    axes = figure.add_subplot(1, 1, 1)
    _tidy(axes)
    values = [a * 100 for a in sensitivity.accuracies]
    variants = sensitivity.variants or [None, *range(len(values) - 1)]
    labels = [_instruction_label(v) for v in variants]
    positions = list(range(len(values)))
    bars = axes.bar(positions, values, color=_BAR, width=0.6, zorder=3)
    for bar, value in zip(bars, values):
        axes.annotate(f"{value:.0f}%", (bar.get_x() + bar.get_width() / 2, value), xytext=(0, 3),
                      textcoords="offset points", ha="center", fontsize=8.5, bbox=_LABEL_BOX, zorder=5)
    axes.axhline(sensitivity.mean * 100, color="#444444", linewidth=1, linestyle="--", zorder=4,
                 label=f"mean {sensitivity.mean * 100:.0f}%")
    axes.set_xticks(positions)
    axes.set_xticklabels(labels, fontsize=8.5, rotation=20 if len(labels) > 5 else 0)
    axes.set_ylim(0, 108)
    axes.set_ylabel("Accuracy (%)")
    axes.set_title(f"{name}: accuracy per instruction wording", fontsize=11)
    axes.legend(loc="lower right", frameon=False, fontsize=8.5)
    figure.tight_layout()
    return _png(figure)
