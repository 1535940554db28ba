"""The session clock that ``emitted_at`` is measured on."""

from __future__ import annotations

import pytest

from rtlab.core.clock import CLOCK_MODES, SessionClock


def test_simulated_clock_idles_to_audio_arrival_and_adds_compute():
    clock = SessionClock("simulated")
    assert clock.simulated and clock.now() == 0.0
    clock.wait_for_audio(2.0)  # waiting for audio that arrives at 2 s
    assert clock.now() == 2.0
    clock.add_compute(0.5)
    assert clock.now() == 2.5
    clock.wait_for_audio(1.0)  # audio that arrived while computing: no waiting
    assert clock.now() == 2.5
    clock.wait_for_audio(3.0)
    clock.add_compute(1.25)
    assert clock.now() == 4.25


def test_simulated_clock_ignores_start():
    clock = SessionClock("simulated")
    clock.start()
    assert clock.now() == 0.0


def test_wall_clock_is_zero_until_the_stream_starts_and_ignores_virtual_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("rtlab.core.clock.time.monotonic", lambda: now[0])
    clock = SessionClock("wall")
    assert not clock.simulated and not clock.started
    clock.wait_for_audio(5.0)
    clock.add_compute(5.0)
    assert clock.now() == 0.0
    now[0] = 101.0
    clock.start()
    assert clock.started and clock.now() == 0.0
    now[0] = 103.5
    clock.wait_for_audio(10.0)  # no virtual time on the wall clock
    clock.add_compute(10.0)
    assert clock.now() == 2.5  # real seconds since start()


def test_wall_clock_start_twice_keeps_the_first_start():
    clock = SessionClock("wall")
    clock.start()
    started = clock._started_at
    clock.start()
    assert clock._started_at == started


def test_unknown_clock_mode_lists_the_choices():
    with pytest.raises(ValueError, match=", ".join(CLOCK_MODES)):
        SessionClock("sundial")
