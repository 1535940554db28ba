"""Live terminal display for ``rtlab transcribe``: committed text, dimmed partial, progress."""

from __future__ import annotations

import shutil
import sys
from typing import Any, Callable, TextIO

DIM, RESET, CLEAR = "\033[2m", "\033[0m", "\r\033[K"
UP = "\033[1A"


class LiveText:
    """Shows committed words as they arrive.

    On a terminal, the line being written also shows the partial (provisional) text,
    dimmed, and a progress bar sits on the line below; both are redrawn in place. When
    stdout is not a terminal, only committed text is written to it (a progress bar goes to
    stderr when that is a terminal).
    """

    def __init__(self, label: str = "", stream: TextIO | None = None, status: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.status = status or sys.stderr
        self.live = self.stream.isatty()
        self.bar_only = not self.live and self.status.isatty()
        self.label = label
        self.progress = 0.0
        self.partial = ""
        self.partial_joins = False  # the partial goes on from the last committed word
        self.line = ""

    def _width(self) -> int:
        return max(40, shutil.get_terminal_size((100, 20)).columns - 1)

    def event(self, event: dict[str, Any]) -> None:
        """Update the display with one transcript event."""
        if event["type"] == "commit":
            for word in event["words"]:
                self._add_word(word["text"], joins=bool(word.get("joins")))
            self.partial = ""
            if not self.live:
                self.stream.flush()
        elif event["type"] == "partial":
            self.partial = event["text"]
            self.partial_joins = bool(event.get("joins"))
        self._draw()

    def set_progress(self, fraction: float) -> None:
        """Fraction of the input sent so far."""
        self.progress = fraction
        self._draw()

    def _add_word(self, text: str, joins: bool = False) -> None:
        """Write a committed word; one that ``joins`` the word before goes on it (no space,
        no line break between them)."""
        if self.line and not joins and len(self.line) + 1 + len(text) > self._width():
            if self.live:
                self.stream.write(f"{CLEAR}{self.line}\n")
            else:
                self.stream.write("\n")
            self.line = ""
        space = " " if self.line and not joins else ""
        if not self.live:
            self.stream.write(space + text)
        self.line += space + text

    def _bar(self) -> str:
        filled = int(self.progress * 20)
        return f"[{'#' * filled}{'.' * (20 - filled)}] {self.progress:4.0%} {self.label}"

    def _draw(self) -> None:
        if self.live:
            room = self._width() - len(self.line) - 1
            partial = self.partial[: max(0, room)] if room > 3 else ""
            space = "" if self.partial_joins or not self.line else " "
            text = f"{self.line}{space}{DIM}{partial}{RESET}" if partial else self.line
            self.stream.write(f"{CLEAR}{text}\n{CLEAR}{self._bar()}{UP}\r")
            self.stream.flush()
        elif self.bar_only:
            self.status.write(f"{CLEAR}{self._bar()}")
            self.status.flush()

    def close(self) -> None:
        """Finish the last line and remove the progress bar."""
        if self.live:
            self.stream.write(f"{CLEAR}{self.line}\n{CLEAR}" if self.line else CLEAR + "\n" + CLEAR + UP)
        else:
            if self.line:
                self.stream.write("\n")
            if self.bar_only:
                self.status.write(CLEAR)
                self.status.flush()
        self.stream.flush()
        self.line = ""


def error_message(error: Exception) -> str:
    """An rtlab error as a command-line user reads it: a policy's refusal of a backend
    without a capability it needs names the fix as the ``--backend`` flag (its message
    names it as every other entry point takes it, ``backend=NAME``)."""
    from ..errors import MissingCapability

    if isinstance(error, MissingCapability) and error.refusal and error.backends:
        return f"{error.refusal}: use --backend {' or --backend '.join(error.backends)}"
    return str(error)


def run_script(main: Callable[[], int | None]) -> int:
    """Run a script's ``main`` (the scripts under ``benchmarks/``) as the ``rtlab`` commands
    run: an rtlab error (a model that cannot load, a cost model without the calibration, a
    refused option) ends it with its one-line message on stderr and exit status 1, not a
    traceback. Other exceptions are bugs and keep theirs."""
    from ..errors import RtlabError

    try:
        return main() or 0
    except RtlabError as error:
        print(f"Error: {error_message(error)}", file=sys.stderr, flush=True)
        return 1
