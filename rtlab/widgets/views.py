"""The ipywidgets of the panels: one stream's view, and the end-of-stream table.

Imported only when a panel shows itself as widgets (in Jupyter), never by ``import rtlab``.
Every widget's value is a function of a :class:`~rtlab.widgets.state.StreamState`, set by
``refresh()`` from the event loop's thread.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets

from .state import StreamState

__all__ = ["StreamView", "differences_html", "sparkline_svg", "summary_table_html", "text_html"]

PARTIAL_COLOR = "#8a8a8a"
ERROR_COLOR = "#c62828"


def text_html(state: StreamState) -> str:
    """Committed text in the normal colour, the partial text after it in grey."""
    committed = html.escape(state.text)
    partial = html.escape(state.partial)
    return (
        "<div class='rtlab-text' style='line-height:1.45; min-height:3em; white-space:normal'>"
        f"<span class='rtlab-committed'>{committed}</span>{'' if state.partial_joins else ' '}"
        f"<span class='rtlab-partial' style='color:{PARTIAL_COLOR}'>{partial}</span></div>"
    )


def sparkline_svg(values: Sequence[float], *, width: int = 180, height: int = 28, color: str = "#1f77b4") -> str:
    """A tiny inline SVG line of ``values`` (the last ones that fit), scaled from 0 to
    their maximum (at least one second)."""
    values = list(values)[-60:]
    if not values:
        return f"<svg class='rtlab-sparkline' width='{width}' height='{height}'></svg>"
    top = max(1.0, max(values))
    step = width / max(1, len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (height - 4) * max(0.0, v) / top:.1f}" for i, v in enumerate(values)
    )
    return (
        f"<svg class='rtlab-sparkline' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
        f"<line x1='0' y1='{height - 2}' x2='{width}' y2='{height - 2}' stroke='#ddd'/>"
        f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{points}'/></svg>"
    )


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def _swatch(color: str) -> str:
    """A small square of a configuration's colour, before its name."""
    return (f"<span style='display:inline-block;width:0.8em;height:0.8em;background:{color};"
            f"margin-right:0.4em'></span>")  # fmt: skip


def summary_table_html(
    summaries: Sequence[Mapping[str, Any]],
    colors: Sequence[str] = (),
    failures: Sequence[tuple[str, str]] = (),
) -> str:
    """The end-of-stream table: per configuration WER, median and p95 commit latency,
    first text and RTF (the columns of ``rtlab bench``'s table), with a caption saying what
    each statistic is over; then the configurations that did not run, with their one-line
    error."""
    head = ("configuration", "WER", "median latency", "p95 latency", "first text", "RTF")
    cell = "padding:2px 10px; text-align:right"
    rows = []
    for index, s in enumerate(summaries):
        wer = s["wer"]["value"]
        swatch = _swatch(colors[index]) if index < len(colors) else ""
        values = [
            "–" if wer is None else f"{100 * wer:.1f}%",
            _seconds(s["latency"]["median"]),
            _seconds(s["latency"]["p95"]),
            _seconds(s["first_text_latency"]["median"]),
            "–" if s["rtf"] is None else f"{s['rtf']:.3f}",
        ]
        error = f" <span style='color:{ERROR_COLOR}'>(stream failed)</span>" if s.get("errors") else ""
        rows.append(
            f"<tr><td style='padding:2px 10px'>{swatch}{html.escape(str(s['name']))}{error}</td>"
            + "".join(f"<td style='{cell}'>{v}</td>" for v in values) + "</tr>"
        )
    for label, error in failures:
        rows.append(
            f"<tr><td style='padding:2px 10px'>{html.escape(label)}</td>"
            f"<td colspan='5' style='padding:2px 10px; color:{ERROR_COLOR}'>{html.escape(error)}</td></tr>"
        )
    first = "padding:2px 10px; text-align:left"
    header = "".join(f"<th style='{cell if i else first}'>{h}</th>" for i, h in enumerate(head))
    legend = (
        "<caption style='caption-side:bottom; text-align:left; color:#666; font-size:0.85em; padding:2px 10px'>"
        "WER and RTF pooled over the configuration's streams; median and p95 commit latency over every "
        "word; first text: when the first word was committed (the median, over several streams)</caption>"
    )
    return (f"<table class='rtlab-results'>{legend}<thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")  # fmt: skip


def _words(words: Sequence[str] | None) -> str:
    if words is None:
        return "–"
    return f"«{html.escape(' '.join(words))}»" if words else "<i>nothing</i>"


def differences_html(rows: Sequence[tuple[str, str, Sequence[Any] | None]], *, most: int = 8) -> str:
    """Per configuration (label, colour, its :class:`~rtlab.eval.metrics.WordDifference`
    list against the offline pass, or None without one): the places where the stream's
    words differ from the offline pass's, the costliest against the reference first, at
    most ``most`` each."""
    items = []
    for label, tint, differences in rows:
        name = f"{_swatch(tint)}<b>{html.escape(label)}</b>"
        if differences is None:
            items.append(f"<li>{name}: no offline pass to compare with</li>")
            continue
        if not differences:
            items.append(f"<li>{name}: the same words as the offline pass</li>")
            continue
        costed = all(d.cost is not None for d in differences)
        total = f", {sum(d.cost for d in differences):+d} errors against the reference" if costed else ""
        ordered = sorted(differences, key=lambda d: -(d.cost or 0)) if costed else list(differences)
        places = "".join(
            f"<li>offline {_words(d.base)} → streamed {_words(d.other)}"
            + (f", reference {_words(d.reference)}, <b>{d.cost:+d}</b>" if d.cost is not None else "") + "</li>"
            for d in ordered[:most]
        )
        more = f"<li>… {len(ordered) - most} more</li>" if len(ordered) > most else ""
        count = f"{len(differences)} place{'s' * (len(differences) != 1)}"
        items.append(f"<li>{name}: {count} where the stream differs from the offline pass{total}<ul>{places}{more}</ul></li>")
    return f"<div class='rtlab-differences'><ul style='margin:0.3em 0'>{''.join(items)}</ul></div>"


class StreamView:
    """One stream's widgets: title, figures, text (partial in grey), error, lag gauge and
    commit-latency sparkline.

    The lag gauge is scaled to the stream's ``min_chunk`` (seconds): its full scale is four
    of them. It is green up to one and a half (the wait for the next pass, and the point
    where the processor counts itself behind), orange up to three, red beyond.
    ``min_chunk=None`` leaves the gauge out (a stream whose lag the view cannot read live).
    ``in_row``: the view is one of several columns side by side.
    """

    def __init__(
        self, state: StreamState, *, color: str = "#1f77b4", min_chunk: float | None = None, in_row: bool = False
    ) -> None:
        self.state = state
        self.color = color
        self.min_chunk = min_chunk
        lag_max = None if min_chunk is None else 4 * min_chunk
        self.title = widgets.HTML()
        self.figures = widgets.HTML()
        self.text = widgets.HTML(layout=widgets.Layout(min_height="3.5em"))
        self.error = widgets.HTML()
        self.sparkline = widgets.HTML()
        parts: list[widgets.Widget] = [self.title, self.figures, self.text, self.error]
        self.lag = None
        if min_chunk is not None:
            self.lag = widgets.FloatProgress(value=0.0, min=0.0, max=lag_max, description="lag",
                                             layout=widgets.Layout(width="220px"))  # fmt: skip
            self.lag_label = widgets.Label()
            parts.append(widgets.HBox([self.lag, self.lag_label]))
        parts.append(self.sparkline)
        # Side by side in a row, columns share its width (flex); alone, the box takes its own height.
        self.box = widgets.VBox(parts, layout=widgets.Layout(
            flex="1 1 0" if in_row else None, min_width="240px", border="1px solid #ddd", padding="4px 8px",
            margin="2px",
        ))  # fmt: skip
        self.box.add_class("rtlab-column")
        self.refresh()

    def refresh(self) -> None:
        """Set every widget from the state."""
        state = self.state
        self.title.value = (
            f"<b class='rtlab-label'><span style='color:{self.color}'>■</span> {html.escape(state.label)}</b>"
        )
        self.figures.value = (
            f"<span class='rtlab-status' style='color:#666; font-size:0.9em'>{html.escape(state.headline())}</span>"
        )
        self.text.value = text_html(state)
        self.error.value = (
            f"<div class='rtlab-error' style='color:{ERROR_COLOR}'>{html.escape(state.error)}</div>"
            if state.error else ""
        )  # fmt: skip
        if self.lag is not None:
            lag = state.lag or 0.0
            self.lag.value = min(lag, self.lag.max)
            self.lag.bar_style = (
                "success" if lag <= 1.5 * self.min_chunk else "warning" if lag <= 3 * self.min_chunk else "danger"
            )
            self.lag_label.value = "–" if state.lag is None else f"{lag:.2f} s"
        latencies = [value for _, value in state.latencies]
        caption = ""
        if latencies:
            caption = f" last {latencies[-1]:.2f} s"
        self.sparkline.value = (
            "<div style='display:flex; align-items:center; gap:6px; font-size:0.85em; color:#666'>"
            f"<span>commit latency</span>{sparkline_svg(latencies, color=self.color)}<span>{caption}</span></div>"
        )
