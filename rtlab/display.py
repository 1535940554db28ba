"""Live terminal display for ``rtlab transcribe``: committed text, dimmed partial, progress."""

from __future__ import annotations

import shutil
import sys
from typing import Any, TextIO

DIM, RESET, CLEAR_LINE = "\033[2m", "\033[0m", "\r\033[K"


class LiveText:
    """Prints committed words as they arrive; on a terminal, a status line below them shows
    a progress bar and the provisional (partial) text, dimmed, rewritten in place."""

    def __init__(self, label: str = "", stream: TextIO | None = None, status: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.status = status or sys.stderr
        self.tty = self.status.isatty()
        self.label = label
        self.progress = 0.0
        self.partial = ""
        self._column = 0

    def event(self, event: dict[str, Any]) -> None:
        """Update the display with one transcript event."""
        if event["type"] == "commit":
            self._clear_status()
            for word in event["words"]:
                self._write_word(word["text"])
            self.stream.flush()
            self.partial = ""
        elif event["type"] == "partial":
            self.partial = event["text"]
        self._draw_status()

    def set_progress(self, fraction: float) -> None:
        """Fraction of the input sent so far."""
        self.progress = fraction
        self._draw_status()

    def _write_word(self, text: str) -> None:
        width = shutil.get_terminal_size((100, 20)).columns if self.stream.isatty() else 100
        if self._column and self._column + 1 + len(text) > width:
            self.stream.write("\n")
            self._column = 0
        if self._column:
            self.stream.write(" ")
            self._column += 1
        self.stream.write(text)
        self._column += len(text)

    def _draw_status(self) -> None:
        if not self.tty:
            return
        width = shutil.get_terminal_size((100, 20)).columns
        filled = int(self.progress * 20)
        bar = f"[{'#' * filled}{'.' * (20 - filled)}] {self.progress:4.0%} {self.label} "
        partial = self.partial[-max(0, width - len(bar) - 1) :]
        if self._column and self.stream is self.status:
            return
        self.status.write(f"{CLEAR_LINE}{bar}{DIM}{partial}{RESET}")
        self.status.flush()

    def _clear_status(self) -> None:
        if self.tty:
            self.status.write(CLEAR_LINE)
            self.status.flush()

    def close(self) -> None:
        """End the text with a newline and remove the status line."""
        self._clear_status()
        if self._column:
            self.stream.write("\n")
            self._column = 0
        self.stream.flush()
