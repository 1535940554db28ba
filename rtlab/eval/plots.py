"""PNG plots of benchmark results, drawn with matplotlib's Agg backend (no display needed).

Inputs are the plain records of :mod:`rtlab.eval.bench`: per-configuration summaries (dicts with
``name``, ``wer``, ``latency`` ...) and per-stream results as dicts
(:meth:`rtlab.eval.results.StreamResult.to_dict`, e.g. lines of ``results.jsonl``). Each
configuration keeps one colour across all plots. Every title names the clock mode and the
normalizer, because a latency or a WER means little without them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["commit_timeline_figure", "plot_commit_timeline", "plot_lag", "plot_latency_cdf", "plot_wer_vs_latency", "save_bench_plots"]

#: File names written by :func:`save_bench_plots`.
FILES = {"wer_vs_latency": "wer_vs_latency.png", "latency_cdf": "latency_cdf.png", "lag": "lag.png"}
#: File name of :func:`plot_commit_timeline` where a panel saves it (one audio, its streams).
TIMELINE = "timeline.png"
#: A lane with more committed words than this draws them without their text.
TIMELINE_LABELLED_WORDS = 80
_LANE = 1.5  # height of a timeline lane, in the plot's units


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "plots need matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'rtlab[plots]')"
        ) from exc
    return matplotlib


def _pyplot() -> Any:
    _matplotlib().use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colors(count: int, given: Sequence[Any] | None = None) -> list[Any]:
    """``given`` (one matplotlib colour per configuration, e.g. a panel's), else tab10's
    colours in order, tab20's beyond ten configurations."""
    if given is not None:
        if len(given) != count:
            raise ValueError(f"colors: {len(given)} given for {count} configurations; give one per configuration")
        return list(given)
    cmap = _matplotlib().colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _subtitle(summaries: Sequence[Mapping[str, Any]]) -> str:
    clocks = sorted({c for s in summaries for c in _as_list(s.get("clock"))})
    norms = sorted({n for s in summaries for n in _as_list(s.get("normalizer"))})
    return f"clock: {', '.join(clocks) or '?'} · normalizer: {', '.join(norms) or '?'}"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _legend_below(fig: Any, ax: Any, count: int) -> None:
    # Configuration names are long ("faster-whisper:tiny.en local-agreement min_chunk=0.5"):
    # a legend under the axes never hides data. None when nothing was drawn (no reference
    # text, so no WER): matplotlib would warn that it has nothing to list.
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.14), fontsize="small", frameon=False, ncol=1)
    fig.subplots_adjust(bottom=min(0.6, 0.16 + 0.045 * count))


def _say_when_empty(ax: Any, drawn: bool, why: str) -> None:
    # An empty PNG reads as a broken plot; this one says what was missing.
    if not drawn:
        ax.text(0.5, 0.5, f"nothing to plot:\n{why}", transform=ax.transAxes, ha="center", va="center",
                color="grey", fontsize="medium")  # fmt: skip


def _figure(count: int) -> tuple[Any, Any]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5 + 0.3 * count), dpi=110)
    return fig, ax


def plot_wer_vs_latency(
    summaries: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    connect: bool = False,
    title: str = "Accuracy against latency",
    colors: Sequence[Any] | None = None,
) -> Path:
    """WER (%) against median commit latency, one point per configuration; a thin line
    reaches out to its p95 latency. ``connect`` joins the points in order (a sweep);
    ``colors`` gives each configuration its colour (default: tab10 in order)."""
    fig, ax = _figure(len(summaries))
    xs, ys = [], []
    for index, (summary, color) in enumerate(zip(summaries, _colors(len(summaries), colors)), start=1):
        wer = summary["wer"]["value"]
        median, p95 = summary["latency"]["median"], summary["latency"]["p95"]
        if wer is None or median is None:
            continue
        xs.append(median)
        ys.append(100 * wer)
        ax.plot([median, p95], [100 * wer] * 2, color=color, linewidth=1.2, alpha=0.6)
        ax.scatter([median], [100 * wer], color=color, s=60, zorder=3,
                   label=f"[{index}] {summary['name']}")  # fmt: skip
        ax.annotate(str(index), (median, 100 * wer), textcoords="offset points", xytext=(6, 6),
                    fontsize="small")  # fmt: skip
    if connect and len(xs) > 1:
        ax.plot(xs, ys, color="grey", linewidth=0.8, linestyle="--", zorder=1)
    ax.set_xlabel("commit latency, median (point) to p95 (line end) [s]")
    ax.set_ylabel("WER [%]")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0, top=max(ys + [1.0]) * 1.25)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{title}\n{_subtitle(summaries)}", fontsize="medium")
    _say_when_empty(ax, bool(xs), "no configuration has both a WER and a commit latency\n"
                    "(no reference text, or no committed word matched the offline pass)")
    _legend_below(fig, ax, len(summaries))
    return _save(fig, path)


def plot_latency_cdf(
    summaries: Sequence[Mapping[str, Any]],
    streams: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
) -> Path:
    """Cumulative distribution of per-word commit latency, one curve per configuration
    (words pooled over every file of the configuration)."""
    import numpy as np

    fig, ax = _figure(len(summaries))
    drawn = False
    for summary, color in zip(summaries, _colors(len(summaries))):
        values = np.sort([v for s in streams if s["config"].get("name") == summary["name"]
                          for v in s.get("word_latencies") or ()])  # fmt: skip
        if values.size == 0:
            continue
        fraction = np.arange(1, values.size + 1) / values.size
        # Only words matched to a reference word have a latency: say so where some were not.
        committed = sum(len((s.get("hypothesis") or "").split()) for s in streams
                        if s["config"].get("name") == summary["name"])  # fmt: skip
        counted = f"{values.size} words" if committed <= values.size else f"{values.size} of {committed} words timed"
        ax.step(values, fraction, where="post", color=color, label=f"{summary['name']} ({counted})")
        drawn = True
    ax.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    ax.axhline(0.95, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("commit latency per word [s]  (commit emitted_at − word end in the audio)")
    ax.set_ylabel("fraction of committed words")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Commit latency CDF\n{_subtitle(summaries)}", fontsize="medium")
    _say_when_empty(ax, drawn, "no committed word has a latency\n(none committed, or none matched the offline pass)")
    _legend_below(fig, ax, len(summaries))
    return _save(fig, path)


def plot_lag(
    summaries: Sequence[Mapping[str, Any]],
    streams: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
) -> Path:
    """Lag (audio received minus audio processed) over time, one colour per configuration.

    Files are laid end to end: each file's samples are shifted by the length of the files
    before it (their audio, or their last sample when that came later), and dotted lines
    mark where a file starts.
    """
    fig, ax = _figure(len(summaries))
    files: list[str] = []
    for s in streams:
        if s["file"] not in files:
            files.append(s["file"])
    offsets, start = {}, 0.0
    for name in files:
        offsets[name] = start
        # A file's stream ends after its audio when the last passes run late: leave room.
        # A failed stream's audio_seconds is unknown (None).
        ends = [s["audio_seconds"] for s in streams if s["file"] == name and s["audio_seconds"] is not None]
        ends += [t for s in streams if s["file"] == name and s.get("lag") for t, _ in s["lag"]["samples"]]
        start += max(ends, default=0.0)
    for offset in list(offsets.values())[1:]:
        ax.axvline(offset, color="grey", linewidth=0.5, linestyle=":")
    drawn = False
    for summary, color in zip(summaries, _colors(len(summaries))):
        labelled = False
        for s in streams:
            if s["config"].get("name") != summary["name"] or not s.get("lag"):
                continue
            samples = s["lag"]["samples"]
            if not samples:
                continue
            xs = [offsets[s["file"]] + t for t, _ in samples]
            ys = [lag for _, lag in samples]
            ax.step(xs, ys, where="post", color=color, linewidth=1.2,
                    label=None if labelled else summary["name"])  # fmt: skip
            labelled = drawn = True
    ax.set_xlabel("stream time [s]" + (" (files end to end)" if len(files) > 1 else ""))
    ax.set_ylabel("lag: audio received − audio processed [s]")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Lag over time\n{_subtitle(summaries)}", fontsize="medium")
    _say_when_empty(ax, drawn, "no stream recorded lag samples")
    _legend_below(fig, ax, len(summaries))
    return _save(fig, path)


def plot_commit_timeline(
    lanes: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
    path: str | os.PathLike[str],
    *,
    clock: str | None = None,
    title: str = "When each word was said and when it was committed",
) -> Path:
    """:func:`commit_timeline_figure` saved as a PNG at ``path``."""
    return _save(commit_timeline_figure(lanes, clock=clock, title=title), path)


def commit_timeline_figure(
    lanes: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
    *,
    clock: str | None = None,
    title: str = "When each word was said and when it was committed",
    colors: Sequence[Any] | None = None,
) -> Any:
    """One lane per stream of the same audio, as a matplotlib figure: ``lanes`` is
    ``(label, events)``, the events of a stream as its processor emitted them (only
    ``commit`` events are read).

    In a lane, each committed word is a pale box over the audio it was said in (its
    ``start`` to ``end``, with its text while the lane has at most
    :data:`TIMELINE_LABELLED_WORDS` words), and a line runs down from the word's end to
    the tick where it was committed (its commit event's ``emitted_at``): the line's slant
    is the word's wait. Audio time and stream time share the axis, as both start when the
    stream does.
    """
    _matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(10, 1.0 + 1.3 * max(1, len(lanes))), dpi=110)  # not pyplot's: no backend chosen
    ax = fig.add_subplot()
    right = 0.0
    for row, ((label, events), color) in enumerate(zip(lanes, _colors(len(lanes), colors))):
        base = _LANE * (len(lanes) - 1 - row)  # the first lane on top; its commit ticks end here
        commits = [e for e in events if e.get("type") == "commit" and e.get("words")]
        words = [(w, float(e["emitted_at"])) for e in commits for w in e["words"]]
        for index, (word, emitted_at) in enumerate(words):
            start, end = float(word["start"]), float(word["end"])
            ax.add_patch(Rectangle((start, base + 0.4), max(end - start, 0.02), 0.25,
                                   facecolor=color, alpha=0.25, edgecolor=color, linewidth=0.5))  # fmt: skip
            ax.plot([end, emitted_at], [base + 0.4, base + 0.1], color=color, linewidth=0.7, alpha=0.7)
            if len(words) <= TIMELINE_LABELLED_WORDS:
                ax.text((start + end) / 2, base + 0.7 + 0.17 * (index % 2), str(word["text"]).strip(),
                        ha="center", va="bottom", fontsize=6.5)  # fmt: skip
            right = max(right, end, emitted_at)
        ticks = sorted({float(e["emitted_at"]) for e in commits})
        ax.vlines(ticks, base, base + 0.1, color=color, linewidth=1.6)
        ax.text(0.005, base + 1.1, f"{label}  ({len(words)} words, {len(ticks)} commits)", fontsize="small",
                color=color, va="bottom", transform=ax.get_yaxis_transform())  # fmt: skip
    ax.set_xlim(0, max(right, 1.0) * 1.02)
    ax.set_ylim(-0.15, _LANE * (len(lanes) - 1) + 1.35)
    ax.set_yticks([])
    ax.set_xlabel("seconds since the stream started: audio (boxes), commits (ticks)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title + (f"\nclock: {clock}" if clock else ""), fontsize="medium")
    fig.tight_layout()
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    plt = _pyplot()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def save_bench_plots(
    summaries: Sequence[Mapping[str, Any]],
    streams: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
) -> list[Path]:
    """The three benchmark plots in ``out_dir`` (see :data:`FILES`); returns their paths.
    Raises ``ImportError`` with the install command when matplotlib is missing."""
    out = Path(out_dir)
    return [
        plot_wer_vs_latency(summaries, out / FILES["wer_vs_latency"]),
        plot_latency_cdf(summaries, streams, out / FILES["latency_cdf"]),
        plot_lag(summaries, streams, out / FILES["lag"]),
    ]
