"""Subtitles from committed words, as they are committed: SubRip (``.srt``) and WebVTT.

:class:`Cues` takes each commit event's words and gives back the cues that are finished:
a cue ends at the end of a sentence, before a pause of at least ``max_gap`` seconds, or
when it would grow past ``max_chars`` characters or ``max_seconds`` seconds; the last one
ends with the stream (:meth:`Cues.flush`). A cue's times are its first word's start and
its last word's end, in seconds of audio, but never before the cue before it ends: word
times may overlap by a frame or two, and a player shows overlapping cues together.
``rtlab transcribe --format srt|vtt`` prints
each cue once it is finished, so a live stream can be captioned as it goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .core.events import join_words
from .options import is_number

FORMATS = ("srt", "vtt")
_SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")


@dataclass(frozen=True)
class Cue:
    """One subtitle: its text and its times in seconds of audio."""

    start: float
    end: float
    text: str


class Cues:
    """Committed words in, finished cues out (see the module docstring)."""

    def __init__(self, max_chars: int = 84, max_seconds: float = 7.0, max_gap: float = 1.0) -> None:
        for name, value in (("max_chars", max_chars), ("max_seconds", max_seconds), ("max_gap", max_gap)):
            if not is_number(value) or value <= 0:
                raise ValueError(f"{name} must be a number above 0, not {value!r}")
        self.max_chars = max_chars
        self.max_seconds = float(max_seconds)
        self.max_gap = float(max_gap)
        self._words: list[Mapping[str, Any]] = []
        self._last_end = 0.0  # where the last finished cue ends

    def add(self, words: Iterable[Mapping[str, Any]]) -> list[Cue]:
        """Take committed words (``text``, ``start``, ``end``); return the cues they finished."""
        finished = []
        for word in words:
            text = str(word["text"]).strip()
            if not text:
                continue
            # (A word that goes on from the one before it, "joins", stays in its cue.)
            if self._words and not word.get("joins") and self._breaks_before(word, text):
                finished.append(self._cue())
            self._words.append({**word, "text": text})
            if text.endswith(_SENTENCE_ENDS):
                finished.append(self._cue())
        return finished

    def flush(self) -> list[Cue]:
        """The stream ended: the cue in progress, if any."""
        return [self._cue()] if self._words else []

    def _breaks_before(self, word: Mapping[str, Any], text: str) -> bool:
        first, last = self._words[0], self._words[-1]
        chars = sum(len(w["text"]) + 1 for w in self._words) + len(text)
        return (
            float(word["start"]) - float(last["end"]) >= self.max_gap
            or chars > self.max_chars
            or float(word["end"]) - float(first["start"]) > self.max_seconds
        )

    def _cue(self) -> Cue:
        words, self._words = self._words, []
        start = max(float(words[0]["start"]), self._last_end)
        cue = Cue(start, max(start, float(words[-1]["end"])), join_words(words))
        self._last_end = cue.end
        return cue


def timestamp(seconds: float, format: str) -> str:
    """``HH:MM:SS,mmm`` (srt) or ``HH:MM:SS.mmm`` (vtt)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{',' if format == 'srt' else '.'}{millis:03d}"


def header(format: str) -> str:
    """What comes before the first cue: ``WEBVTT`` and a blank line for vtt, nothing for srt."""
    return "WEBVTT\n\n" if format == "vtt" else ""


def cue_text(cue: Cue, number: int, format: str) -> str:
    """One cue as the format writes it (``number`` counts from 1; srt numbers its cues),
    ending with the blank line that separates cues."""
    times = f"{timestamp(cue.start, format)} --> {timestamp(cue.end, format)}"
    lines = [str(number), times] if format == "srt" else [times]
    # A blank line would end the cue early; "-->" in the text would read as times in vtt.
    text = " ".join(cue.text.split()).replace("-->", "->")
    return "\n".join([*lines, text]) + "\n\n"


def subtitles(events: Iterable[Mapping[str, Any]], format: str = "srt", **options: Any) -> str:
    """The subtitles of a stream's events (its commit events' words), in ``format``."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    cues = Cues(**options)
    finished: list[Cue] = []
    for event in events:
        if event.get("type") == "commit":
            finished.extend(cues.add(event.get("words", [])))
    finished.extend(cues.flush())
    return header(format) + "".join(cue_text(cue, number, format) for number, cue in enumerate(finished, 1))

