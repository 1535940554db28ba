"""The session clock that ``emitted_at`` is measured on.

* ``wall``: real seconds since the first audio bytes arrived; audio is expected to be
  fed in real time, so latencies are true end-to-end latencies.
* ``simulated``: a virtual clock for feeding audio as fast as compute allows. Audio
  counts as arrived at its own timestamp, waiting for audio costs no real time, and every
  second spent computing advances the clock by that second (the "computationally aware"
  simulation of whisper_streaming). When compute is slower than real time, both modes
  report the same latencies; when it is faster, ``simulated`` finishes sooner. The jitter
  of a pass's measured compute moves where the next pass cuts the audio, so two runs may
  commit different words.
* ``modeled``: the virtual clock of ``simulated``, but a pass advances it by the compute
  a cost model predicts from what the pass did (see :mod:`rtlab.core.costs`), not by the
  measured compute: the same audio, configuration and cost model give the same events on
  every run, and on every machine.
* ``unaware``: the virtual clock, and compute takes no time (whisper_streaming's
  "computationally unaware" mode): every pass starts the moment its audio arrived, so
  latencies are the policy's lower bound, and every run commits the same words.
"""

from __future__ import annotations

import time

CLOCK_MODES = ("wall", "simulated", "modeled", "unaware")
#: The modes whose time is virtual: audio is fed as fast as the passes take it.
VIRTUAL_MODES = ("simulated", "modeled", "unaware")
#: The modes whose time depends on measured compute: their passes hold CPU slots so that
#: a pass's compute among others is what it is alone.
MEASURED_MODES = ("wall", "simulated")


def check_clock(mode: str) -> str:
    """``mode`` if it is one of :data:`CLOCK_MODES`; ValueError listing them otherwise."""
    if mode not in CLOCK_MODES:
        raise ValueError(f"unknown clock mode {mode!r}; choose one of {', '.join(CLOCK_MODES)}")
    return mode


class SessionClock:
    """Seconds since the stream started, in one of :data:`CLOCK_MODES`."""

    def __init__(self, mode: str = "wall") -> None:
        self.mode = check_clock(mode)
        self._started_at: float | None = None
        self._virtual = 0.0

    @property
    def simulated(self) -> bool:
        """Whether this clock's time is virtual (simulated, modeled or unaware)."""
        return self.mode in VIRTUAL_MODES

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
        """Virtual clocks: idle until ``audio_time`` of audio has arrived."""
        if self.simulated:
            self._virtual = max(self._virtual, audio_time)

    def add_compute(self, measured: float, modeled: float | None = None) -> float:
        """A pass's compute passes on the clock; returns the seconds it counted.

        ``simulated`` counts the measured seconds, ``modeled`` the cost model's
        prediction (required), ``unaware`` nothing; on the ``wall`` clock it already
        passed."""
        if self.mode == "modeled":
            if modeled is None:
                raise ValueError("the modeled clock needs the pass's modeled compute")
            counted = modeled
        elif self.mode == "unaware":
            counted = 0.0
        else:
            counted = measured
        if self.simulated:
            self._virtual += counted
        return counted
