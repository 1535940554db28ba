"""PNG charts for the panels: the live commit-latency chart, the WER–latency plot and the
commit timeline.

Drawn with matplotlib's object API on an Agg canvas, so a chart can be drawn in a worker
thread and the notebook's own pyplot backend is left as it is.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["color", "keep_pyplot_backend", "latency_chart_png", "timeline_png", "wer_latency_png"]

# matplotlib's tab10 and tab20, the colours rtlab.eval.plots gives configurations in order
# (tab20 once there are more than ten, so that no two share a colour up to twenty).
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
_TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
          "#ff9896", "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2",
          "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")  # fmt: skip


def color(index: int, count: int = 1) -> str:
    """The colour of the ``index``-th of ``count`` configurations (the same as in rtlab's
    plots of ``count`` configurations)."""
    palette = _TAB10 if count <= len(_TAB10) else _TAB20
    return palette[index % len(palette)]


def latency_chart_png(
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]], *, clock: str, dpi: int = 80
) -> bytes:
    """Commit latency of every committed word against stream time, one colour per
    configuration: ``series`` is ``(label, colour, [(emitted_at, latency), ...])``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 2.6), dpi=dpi)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for label, colour, points in series:
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3.5, linestyle="none", alpha=0.8, color=colour, label=label)
    ax.set_xlabel(f"stream time [s] ({clock} clock)")
    ax.set_ylabel("commit latency [s]")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title("Commit latency per word, live (commit time − the word's end in the stream)", fontsize="small")
    if any(points for _, _, points in series):
        ax.legend(fontsize="x-small", loc="upper left", frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


@contextlib.contextmanager
def keep_pyplot_backend() -> Iterator[None]:
    """Put matplotlib's backend back after :mod:`rtlab.eval.plots` (which selects Agg), so
    that a notebook's inline plots keep showing."""
    import matplotlib

    backend = matplotlib.get_backend()
    try:
        yield
    finally:
        if matplotlib.get_backend() != backend:
            matplotlib.use(backend, force=True)


def wer_latency_png(summaries: Sequence[Mapping[str, Any]], colors: Sequence[str] | None = None) -> bytes:
    """:func:`rtlab.eval.plots.plot_wer_vs_latency` of ``summaries``, as PNG bytes."""
    from ..eval.plots import plot_wer_vs_latency

    with keep_pyplot_backend(), tempfile.TemporaryDirectory(prefix="rtlab-panel-") as folder:
        return plot_wer_vs_latency(summaries, Path(folder) / "wer_vs_latency.png", colors=colors).read_bytes()


def timeline_png(
    lanes: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], *, clock: str, colors: Sequence[str] | None = None
) -> bytes:
    """:func:`rtlab.eval.plots.commit_timeline_figure` of ``lanes`` (``(label, events)``), as
    PNG bytes."""
    from ..eval.plots import commit_timeline_figure

    buffer = io.BytesIO()
    commit_timeline_figure(lanes, clock=clock, colors=colors).savefig(buffer, format="png")
    return buffer.getvalue()
