"""Promises of rtlab.eval.replay and rtlab.eval.offline, checked with the deterministic tone backend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import rtlab

from rtlab.core.instances import get_backend
from rtlab.config import StreamConfig
from rtlab.decoders.files import decode_audio, read_audio, to_pcm16
from rtlab.errors import DecoderError, FFmpegNotFound
from rtlab.eval.offline import clear_cache, offline_transcribe
from rtlab.eval.replay import replay, replay_async
from rtlab.testing import tone_words, wav_bytes

DATA = Path(__file__).parent / "data"
TEXT = "alpha bravo charlie delta echo foxtrot golf hotel"


@pytest.fixture(scope="module")
def tones() -> tuple[np.ndarray, list[dict]]:
    return tone_words(TEXT)


def _skeleton(events: list[dict]) -> list[dict]:
    """Events without ``emitted_at`` (which carries measured compute time) and without
    the summary's compute figures."""
    drop = {"emitted_at", "compute_seconds", "measured_compute_seconds", "rtf"}
    return [{k: v for k, v in e.items() if k not in drop} for e in events]


def _assert_same_events(first: list[dict], second: list[dict]) -> None:
    assert _skeleton(first) == _skeleton(second)
    # emitted_at = audio arrival + this pass's measured compute: equal up to timing jitter,
    # far below the 0.5 s chunk, so the same words were committed at the same audio points.
    for a, b in zip(first, second):
        assert a["emitted_at"] == pytest.approx(b["emitted_at"], abs=0.05)


CONFIGS = [
    "backend=test,min_chunk=0.5",
    "backend=test,min_chunk=1",
    "backend=test,policy=local-agreement,min_chunk=2,buffer_trimming_sec=2,max_buffer_sec=4",
]


# --------------------------------------------------------------------------- replay


def test_two_simulated_replays_give_the_same_events(tones):
    audio, _ = tones
    configs = [StreamConfig.parse(c) for c in CONFIGS]
    first = replay(audio, configs)
    second = replay(audio, configs)
    for a, b in zip(first, second):
        assert a.error is None
        _assert_same_events(a.events, b.events)


def test_configuration_alone_or_together_gives_the_same_events(tones):
    audio, _ = tones
    configs = [StreamConfig.parse(c) for c in CONFIGS]
    together = replay(audio, configs)
    for config, run in zip(configs, together):
        (alone,) = replay(audio, [config])
        _assert_same_events(alone.events, run.events)


def test_replay_returns_one_run_per_configuration_in_order(tones):
    audio, _ = tones
    configs = [StreamConfig.parse(c) for c in CONFIGS]
    runs = replay(audio, configs)
    assert [r.configuration for r in runs] == configs
    for run in runs:
        assert run.text == TEXT
        assert run.summary is not None and run.events[-1] is run.summary
        assert run.summary["audio_seconds"] == pytest.approx(len(audio) / 16000, abs=0.01)
        # A backend this fast keeps up: each pass leaves almost no arrived audio waiting.
        assert run.lag_samples and max(lag for _, lag in run.lag_samples) < 0.1
        assert run.clock == "simulated"
    # A smaller chunk commits earlier: the first word's commit comes sooner.
    first_commit = [next(e for e in r.events if e["type"] == "commit")["emitted_at"] for r in runs]
    assert first_commit[0] < first_commit[1] < first_commit[2]


def test_simulated_replay_commits_at_audio_times_not_feeding_speed(tones):
    audio, words = tones
    (run,) = replay(audio, [StreamConfig.parse("backend=test,min_chunk=1")])
    commits = [e for e in run.events if e["type"] == "commit"]
    # LocalAgreement-2 commits a word on the pass after the one that first saw it whole, so
    # every commit is later than the end of its words in the audio.
    for event in commits:
        assert all(event["emitted_at"] >= w["end"] for w in event["words"])
    # Passes run every second of audio: commit times sit just after whole seconds.
    assert all(e["emitted_at"] % 1.0 < 0.2 for e in commits[:-1])


def test_simulated_passes_ask_for_the_cores_by_how_far_they_are_in_the_audio(tones, monkeypatch):
    """The configuration furthest behind goes first (rtlab.core.scheduler): each pass asks with
    the audio time its processor has reached; on the wall clock, first come first served."""
    from rtlab.core.scheduler import Scheduler

    asked: list[tuple[int, float | None]] = []
    submit = Scheduler.submit

    async def spy(self, fn, *args, priority=None, **options):
        asked.append((id(self), priority))
        return await submit(self, fn, *args, priority=priority, **options)

    monkeypatch.setattr(Scheduler, "submit", spy)
    audio, _ = tones
    seconds = len(audio) / 16000
    replay(audio, [StreamConfig.parse("backend=test,min_chunk=0.5"), StreamConfig.parse("backend=test,model=other,min_chunk=2")])
    by_backend: dict[int, list[float]] = {}
    for backend, priority in asked:
        by_backend.setdefault(backend, []).append(priority)
    for min_chunk, priorities in zip((0.5, 2), by_backend.values()):
        assert priorities == sorted(priorities)
        assert priorities[0] == pytest.approx(min_chunk, abs=0.1)
        assert priorities[-1] == pytest.approx(seconds, abs=0.01)  # the final pass
    asked.clear()
    replay(audio[:16000], [StreamConfig.parse("backend=test,min_chunk=0.5")], clock="wall")
    assert asked and {priority for _, priority in asked} == {None}


def test_passes_run_with_one_blas_thread_and_the_setting_is_restored_after(tones, monkeypatch):
    from rtlab.registry import get_registry
    from rtlab.testing import blas_thread_counts

    ToneBackend = get_registry().get("backend", "test")

    before = blas_thread_counts()
    if not before or max(before) < 2:
        pytest.skip(f"numpy's BLAS runs {before} threads here: nothing to limit")
    seen: list[list[int]] = []
    transcribe = ToneBackend.transcribe

    def spy(self, audio, **kwargs):
        seen.append(blas_thread_counts())
        return transcribe(self, audio, **kwargs)

    monkeypatch.setattr(ToneBackend, "transcribe", spy)
    audio, _ = tones
    runs = replay(audio, [StreamConfig.parse(c) for c in CONFIGS])
    assert [r.text for r in runs] == [TEXT] * len(CONFIGS)
    assert seen and all(counts == [1] * len(before) for counts in seen)
    assert blas_thread_counts() == before


def test_wall_clock_replay_feeds_audio_in_real_time():
    audio, _ = tone_words("alpha bravo")
    (run,) = replay(audio, [StreamConfig.parse("backend=test,min_chunk=0.5")], clock="wall")
    assert run.clock == "wall"
    assert run.text == "alpha bravo"
    # The stream cannot end before all of its audio has been sent at real-time pace.
    assert run.summary["emitted_at"] >= len(audio) / 16000 - 0.15


def test_a_failing_configuration_keeps_its_error_and_the_others_finish(tones):
    audio, _ = tones
    good = StreamConfig.parse("backend=test,min_chunk=0.5")
    bad = StreamConfig.parse("backend=test,fail_after=3,min_chunk=0.5")
    runs = replay(audio, [good, bad])
    assert runs[0].error is None and runs[0].text == TEXT
    assert runs[1].error is not None and "failing on call 3" in runs[1].error
    assert runs[1].events[-1]["type"] == "error"
    assert runs[1].summary is None


def test_backend_instances_can_be_replayed_one_at_a_time(tones):
    from rtlab.eval.replay import _backend_groups

    configs = [StreamConfig.parse(c) for c in (
        "backend=test,min_chunk=0.5", "backend=test,model=other", "backend=test,min_chunk=2",
    )]  # fmt: skip
    # Policies may differ within a group; any backend option makes another instance.
    assert _backend_groups(configs) == [[0, 2], [1]]
    audio, _ = tones
    isolated = replay(audio, configs, isolate_backends=True)
    concurrent = replay(audio, configs)
    assert [r.text for r in isolated] == [r.text for r in concurrent] == [TEXT] * 3


def test_progress_reports_processed_audio_up_to_the_end(tones):
    audio, _ = tones
    seen: list[float] = []
    replay(audio, [StreamConfig.parse("backend=test")], progress=seen.append)
    assert seen and seen == sorted(seen)
    assert seen[-1] == pytest.approx(len(audio) / 16000, abs=0.01)


def test_replay_reads_an_audio_file():
    (run,) = replay(DATA / "realtime.wav", [StreamConfig.parse("backend=test")])
    assert run.error is None and run.summary is not None


async def test_replay_async_runs_inside_an_event_loop(tones):
    audio, _ = tones
    (run,) = await replay_async(audio, [StreamConfig.parse("backend=test")])
    assert run.text == TEXT
    with pytest.raises(RuntimeError, match="await replay_async"):
        replay(audio, [StreamConfig.parse("backend=test")])


def test_replay_refuses_bad_arguments(tones):
    audio, _ = tones
    with pytest.raises(ValueError, match="at least one configuration"):
        replay(audio, [])
    with pytest.raises(ValueError, match="clock"):
        replay(audio, [StreamConfig.parse("backend=test")], clock="sundial")
    with pytest.raises(ValueError, match="mono"):
        replay(np.zeros((2, 100), np.float32), [StreamConfig.parse("backend=test")])
    for chunk_seconds in (0, -1, "0.1"):
        with pytest.raises(ValueError, match=f"^chunk_seconds must be a number of seconds > 0, not {chunk_seconds!r}$"):
            replay(audio, [StreamConfig.parse("backend=test")], chunk_seconds=chunk_seconds)


async def test_stream_file_refuses_a_chunk_size_of_nothing_before_it_starts(data_dir, no_ffmpeg_left):
    # Before, chunk_seconds=0 fed a wall-clock stream one byte at a time.
    with pytest.raises(ValueError, match="^chunk_seconds must be a number of seconds > 0, not 0$"):
        await rtlab.stream_file(data_dir / "fox.ogg", "test", chunk_seconds=0)


# --------------------------------------------------------------------------- offline passes


def test_decode_audio_gives_16k_mono_float32():
    audio = decode_audio(DATA / "fox.ogg")
    assert audio.dtype == np.float32 and audio.ndim == 1
    reference = decode_audio(DATA / "fox.wav")
    assert len(audio) == pytest.approx(len(reference), rel=0.02)
    assert 0 < float(np.abs(audio).max()) <= 1.0


def test_decode_audio_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        decode_audio(tmp_path / "missing.wav")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(DecoderError, match="could not decode"):
        decode_audio(broken)


def test_read_audio_reads_16_bit_wav_without_ffmpeg_and_the_rest_through_it(tmp_path, tones, monkeypatch):
    audio, _ = tones
    path = tmp_path / "tones.wav"
    path.write_bytes(wav_bytes(audio))
    with_ffmpeg = read_audio(path)
    monkeypatch.setenv("RTLAB_FFMPEG", str(tmp_path / "no-ffmpeg-here"))
    assert np.array_equal(read_audio(path), with_ffmpeg)  # the same samples, FFmpeg not asked
    assert np.abs(with_ffmpeg - audio).max() <= 2 / 32768  # 16-bit steps
    with pytest.raises(FFmpegNotFound):  # anything else is FFmpeg's
        read_audio(DATA / "fox.ogg")
    floats = tmp_path / "floats.wav"
    floats.write_bytes(wav_bytes(audio, float32=True))
    with pytest.raises(FFmpegNotFound):
        read_audio(floats)
    monkeypatch.delenv("RTLAB_FFMPEG")
    assert np.array_equal(read_audio(floats), audio)


def test_to_pcm16_round_trips_within_one_step():
    audio = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0], np.float32)
    pcm = np.frombuffer(to_pcm16(audio), "<i2")
    assert pcm.tolist() == [0, 16384, -16384, 32767, -32768, 32767]


def test_offline_pass_finds_the_words_and_is_cached(tmp_path, tones):
    audio, words = tones
    path = tmp_path / "tones.wav"
    path.write_bytes(wav_bytes(audio))
    clear_cache()
    backend = get_backend("test", model="offline-cache-test")
    first = offline_transcribe(path, "test", model="offline-cache-test")
    calls = backend.calls
    second = offline_transcribe(path, "test", model="offline-cache-test")
    assert second is first and backend.calls == calls
    assert first.text == TEXT
    assert [w["text"] for w in first.words] == TEXT.split()
    for found, true in zip(first.words, words):
        assert found["end"] == pytest.approx(true["end"], abs=0.05)
    assert first.audio_seconds == pytest.approx(len(audio) / 16000, abs=0.01)
    assert first.rtf is not None and math.isfinite(first.rtf)
    # A rewritten file is a different file.
    path.write_bytes(wav_bytes(tone_words("zulu")[0]))
    assert offline_transcribe(path, "test", model="offline-cache-test").text == "zulu"


async def test_an_offline_pass_waits_for_a_free_replica_of_its_model(tones):
    """A reference pass that runs alongside a replay takes its turn on the model like a
    streaming pass (the test backend has one replica)."""
    import asyncio
    import threading

    from rtlab.backends import ensure_loaded
    from rtlab.eval.offline import transcribe_samples
    from rtlab.core.scheduler import scheduler_for

    audio, _ = tones
    backend = ensure_loaded(get_backend("test", model="offline-replica"))
    loop = asyncio.get_running_loop()
    held, release = threading.Event(), threading.Event()
    streaming = asyncio.ensure_future(scheduler_for(backend).submit(lambda: held.set() or release.wait(10)))
    await loop.run_in_executor(None, held.wait, 10)
    offline = loop.run_in_executor(None, transcribe_samples, backend, audio)
    await asyncio.sleep(0.3)
    assert not offline.done()  # the one replica is busy with the streaming pass
    release.set()
    await streaming
    assert (await offline).text == TEXT
