"""Counting the FFmpeg processes a server has started, for /healthz and /metrics.

The count comes from the operating system, not from the sessions' own bookkeeping, so
a leaked FFmpeg process shows up even when no session remembers it.
"""

from __future__ import annotations

import os


def ffmpeg_children(parent: int | None = None) -> list[int] | None:
    """Process ids of ``parent``'s children (default: this process) named ffmpeg*.

    Reads ``/proc``; returns None where there is no ``/proc`` (not Linux).
    """
    parent = os.getpid() if parent is None else parent
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    children = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                line = stat.read().decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        name = line[line.find("(") + 1 : line.rfind(")")]
        fields = line[line.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent and name.startswith("ffmpeg"):
            children.append(int(entry))
    return children
