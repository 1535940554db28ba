"""What one stream has shown so far, built from its events: the model behind every view.

A :class:`StreamState` reads the event contract (:mod:`rtlab.core.events`) and nothing
else, so the widget view, the text form and the tests all see the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.events import join_words
from .configs import in_panel_words

__all__ = ["StreamState", "one_line"]

#: What a stream is doing, in the order a run goes through them.
STATUSES = ("idle", "waiting", "loading", "streaming", "scoring", "done", "stopped", "failed")


def one_line(error: BaseException | str) -> str:
    """The first line of an error's message, prefixed with its type when that is all a
    bare ``str()`` would lose (``KeyError: 'x'``); rtlab's own errors already say what to do."""
    if isinstance(error, str):
        text = error
    else:
        from ..errors import RtlabError

        text = str(error) if isinstance(error, (RtlabError, FileNotFoundError)) else f"{type(error).__name__}: {error}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@dataclass
class StreamState:
    """One stream as a viewer sees it.

    ``committed`` are the committed words (``text``, ``start``, ``end``), ``partial`` the
    provisional text after them. ``latencies`` holds one ``(emitted_at, seconds)`` pair per
    committed word: the commit's ``emitted_at`` minus the word's own end time in the stream
    (the live estimate; the scored latency aligns to an offline pass, see
    :func:`rtlab.eval.metrics.commit_latencies`). ``lag`` is the latest lag sample when the
    view can read one; ``audio_seconds`` the audio streamed so far.
    """

    label: str
    status: str = "idle"
    committed: list[dict[str, Any]] = field(default_factory=list)
    partial: str = ""
    partial_joins: bool = False  # the partial goes on from the last committed word
    latencies: list[tuple[float, float]] = field(default_factory=list)
    first_text: float | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    lag: float | None = None
    audio_seconds: float = 0.0
    #: ``emitted_at`` of the latest event: seconds on the stream's clock.
    now: float = 0.0

    def reset(self) -> None:
        """Forget the last run (a new run starts from nothing)."""
        fresh = StreamState(self.label)
        self.__dict__.update(fresh.__dict__)

    def add(self, event: Mapping[str, Any]) -> None:
        """Take one event of the stream into account."""
        self.events.append(dict(event))
        kind = event.get("type")
        self.now = float(event.get("emitted_at") or self.now)
        if kind == "commit":
            words = list(event.get("words") or ())
            if words and self.first_text is None:
                self.first_text = self.now
            self.committed += words
            self.latencies += [(self.now, self.now - float(w["end"])) for w in words]
            self.partial = ""
        elif kind == "partial":
            self.partial = str(event.get("text", ""))
            self.partial_joins = bool(event.get("joins"))
        elif kind == "summary":
            self.summary = dict(event)
            self.partial = ""
            self.audio_seconds = float(event.get("audio_seconds") or self.audio_seconds)
        elif kind == "error":
            self.fail(str(event.get("message") or event.get("error")))

    def end(self) -> None:
        """The stream's events are over: ``done`` after its summary, ``failed`` after an
        error, ``stopped`` otherwise: a stream that ends normally sends its summary last,
        so one without it was ended before its end (its processor cleaned up by whoever
        owns it)."""
        if self.error:
            self.status = "failed"
        elif self.summary is None:
            self.status = "stopped"
            self.partial = ""
        else:
            self.status = "done"

    def fail(self, error: BaseException | str) -> None:
        """The stream failed: keep the one-line reason, with the CLI's flags in it written as
        a panel takes them (see :func:`~rtlab.widgets.configs.in_panel_words`)."""
        self.error = in_panel_words(one_line(error))
        self.status = "failed"
        self.partial = ""

    @property
    def text(self) -> str:
        """The committed text."""
        return join_words(self.committed)

    @property
    def last_latency(self) -> float | None:
        """The live commit latency of the latest committed word."""
        return self.latencies[-1][1] if self.latencies else None

    @property
    def finished(self) -> bool:
        """Whether the run is over (done, stopped or failed)."""
        return self.status in ("done", "stopped", "failed")

    def headline(self) -> str:
        """One line of figures: status, first text, the latest word's commit latency, lag, RTF."""
        parts = [self.status]
        if self.audio_seconds and not self.finished:
            parts.append(f"{self.audio_seconds:.1f} s of audio")
        if self.first_text is not None:
            parts.append(f"first text {self.first_text:.2f} s")
        if self.last_latency is not None:
            parts.append(f"last commit latency {self.last_latency:.2f} s")
        if self.lag is not None and not self.finished:
            parts.append(f"lag {self.lag:.2f} s")
        if self.summary and self.summary.get("rtf") is not None:
            parts.append(f"RTF {self.summary['rtf']:.3f}")
        return " · ".join(parts)

    def describe(self) -> str:
        """The readable text form: label, figures, then the text (partial in brackets)."""
        lines = [f"{self.label}: {self.headline()}"]
        if self.error:
            lines.append(f"    error: {self.error}")
        text = self.text + (f"{'' if self.partial_joins else ' '}[{self.partial}]" if self.partial else "")
        if text:
            lines.append(f"    {text}")
        return "\n".join(lines)
