"""The session clock that ``emitted_at`` is measured on.

* ``wall``: real seconds since the first audio bytes arrived; audio is expected to be
  fed in real time, so latencies are true end-to-end latencies.
* ``simulated``: a virtual clock for feeding audio as fast as compute allows. Audio
  counts as arrived at its own timestamp, waiting for audio costs no real time, and every
  second spent computing advances the clock by that second (the "computationally aware"
  simulation of whisper_streaming). When compute is slower than real time, both modes
  report the same latencies; when it is faster, ``simulated`` finishes sooner.
"""

from __future__ import annotations

import time

CLOCK_MODES = ("wall", "simulated")


class SessionClock:
    """Seconds since the stream started, in one of :data:`CLOCK_MODES`."""

    def __init__(self, mode: str = "wall") -> None:
        if mode not in CLOCK_MODES:
            raise ValueError(f"unknown clock mode {mode!r}; choose one of {', '.join(CLOCK_MODES)}")
        self.mode = mode
        self._started_at: float | None = None
        self._virtual = 0.0

    @property
    def simulated(self) -> bool:
        return self.mode == "simulated"

    @property
    def started(self) -> bool:
        return self._started_at is not None

    def start(self) -> None:
        """Mark the start of the stream (first audio); later calls do nothing."""
        if self._started_at is None:
            self._started_at = time.monotonic()

    def now(self) -> float:
        """Seconds since the stream started on this clock (0 before it started)."""
        if self.simulated:
            return self._virtual
        if self._started_at is None:
            return 0.0
        return time.monotonic() - self._started_at

    def wait_for_audio(self, audio_time: float) -> None:
        """Simulated mode: idle until ``audio_time`` of audio has arrived (in real time)."""
        if self.simulated:
            self._virtual = max(self._virtual, audio_time)

    def add_compute(self, seconds: float) -> None:
        """Simulated mode: compute time passes on the clock. Wall mode: it already did."""
        if self.simulated:
            self._virtual += seconds
