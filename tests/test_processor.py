"""AudioProcessor: the state machine, the event contract, the clocks, bad input, and no
FFmpeg left behind. Runs the real FFmpeg with the deterministic tone backend ("test")."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import types

import numpy as np
import pytest

import rtlab.core.scheduler
from rtlab.decoders import FFmpegDecoder, find_ffmpeg
from rtlab.errors import (
    InvalidOption,
    ProcessorNotRunning,
    ProcessorStopped,
    UnknownBackend,
    UnknownDecoder,
    UnknownPolicy,
)
from rtlab.core.events import EventQueue
from rtlab.config import StreamConfig
from rtlab.core.processor import AudioProcessor
from rtlab.testing import ToneBackend, tone_words, wav_bytes
from rtlab.testing.conformance import registered
from tone_backends import CompoundTones

TEXT = "alpha bravo charlie delta echo foxtrot"
SR = 16_000


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, bytes]:
    """The tone-coded TEXT as wav, ogg/opus, webm/opus and raw s16le PCM."""
    audio, _ = tone_words(TEXT)
    folder = tmp_path_factory.mktemp("clips")
    wav = folder / "tones.wav"
    wav.write_bytes(wav_bytes(audio))
    clips = {"wav": wav.read_bytes(), "pcm_s16le": (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()}
    for ext in ("ogg", "webm"):
        out = folder / f"tones.{ext}"
        subprocess.run(
            [find_ffmpeg(), "-v", "error", "-i", str(wav), "-c:a", "libopus", "-b:a", "32k", str(out)],
            check=True, timeout=60,
        )
        clips[ext] = out.read_bytes()
    return clips


async def stream(processor: AudioProcessor, data: bytes, chunk_size: int = 4096) -> list[dict]:
    """Feed ``data`` in chunks while consuming the events; finish; return every event."""
    events = await processor.create_tasks()
    consumed: list[dict] = []

    async def consume() -> None:
        async for event in events:
            consumed.append(event)

    consumer = asyncio.create_task(consume())
    for offset in range(0, len(data), chunk_size):
        await processor.process_audio(data[offset : offset + chunk_size])
    await processor.finish()
    await asyncio.wait_for(consumer, 60)
    return consumed


async def collect(events) -> list[dict]:
    return [event async for event in events]


def committed_text(events: list[dict]) -> str:
    return " ".join(w["text"] for e in events if e["type"] == "commit" for w in e["words"])


# -- the state machine ------------------------------------------------------------------------


async def test_create_tasks_twice_returns_the_same_stream_and_starts_nothing_new(clips, ffmpeg_children, no_ffmpeg_left):
    processor = AudioProcessor("test")
    try:
        events = await processor.create_tasks()
        assert processor.state == "RUNNING"
        await processor.process_audio(clips["ogg"][:4096])  # FFmpeg starts with the first bytes
        pid = processor.decoder.pid
        tasks = list(processor._tasks)
        assert await processor.create_tasks() is events
        both = await asyncio.gather(processor.create_tasks(), processor.create_tasks())
        assert both == [events, events]
        assert processor.decoder.pid == pid
        assert processor._tasks == tasks
        assert [p.pid for p in ffmpeg_children()] == [pid]
    finally:
        await processor.cleanup()


async def test_concurrent_first_create_tasks_start_one_decoder(ffmpeg_children, no_ffmpeg_left):
    # A named container: a decoder's start() starts its FFmpeg, so a second decoder shows.
    processor = AudioProcessor("test", decoder_options={"input_format": "ogg"})
    try:
        first, second = await asyncio.gather(processor.create_tasks(), processor.create_tasks())
        assert first is second
        assert len(ffmpeg_children()) == 1
    finally:
        await processor.cleanup()


async def test_cleanup_twice_is_a_noop(no_ffmpeg_left):
    processor = AudioProcessor("test")
    events = await processor.create_tasks()
    decoder = processor.decoder
    await processor.cleanup()
    assert processor.state == "STOPPED" and decoder.state == "STOPPED"
    await processor.cleanup()
    assert processor.state == "STOPPED"
    assert [event async for event in events] == []  # the stream ended, without a summary


async def test_cleanup_before_create_tasks_stops_the_processor():
    processor = AudioProcessor("test")
    await processor.cleanup()
    assert processor.state == "STOPPED"
    with pytest.raises(ProcessorStopped, match="create a new AudioProcessor"):
        await processor.create_tasks()


async def test_create_tasks_after_cleanup_is_refused(no_ffmpeg_left, ffmpeg_children):
    processor = AudioProcessor("test")
    await processor.create_tasks()
    await processor.cleanup()
    with pytest.raises(ProcessorStopped, match="create a new AudioProcessor") as raised:
        await processor.create_tasks()
    assert raised.value.code == "processor_stopped"
    assert processor.state == "STOPPED"
    assert ffmpeg_children() == []


async def test_create_tasks_after_finish_is_refused(clips, no_ffmpeg_left):
    processor = AudioProcessor("test", clock="simulated")
    await stream(processor, clips["wav"])
    with pytest.raises(ProcessorStopped, match="create a new"):
        await processor.create_tasks()
    await processor.finish()  # finishing a stopped processor does nothing
    await processor.cleanup()


async def test_a_finish_cancelled_stops_the_processor_as_cleanup_does(clips, ffmpeg_children, no_ffmpeg_left):
    # A benchmark stopped with Ctrl-C cancels the finish() its replay awaits. The tasks of
    # the processor were cancelled while it still ran, and warned CleanupSkipped, as if no
    # one had cleaned it up.
    import warnings

    from rtlab.core.processor import CleanupSkipped

    processor = AudioProcessor(StreamConfig.parse("backend=test,compute_rtf=0.5"), clock="simulated")
    events = await processor.create_tasks()
    consumer = asyncio.create_task(collect(events))
    await processor.process_audio(clips["wav"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finishing = asyncio.create_task(processor.finish())
        await asyncio.sleep(0.3)  # passes of 0.5 s per audio second still to run
        assert not finishing.done() and processor.state == "RUNNING"
        finishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await finishing
    assert not [w for w in caught if issubclass(w.category, CleanupSkipped)], [str(w.message) for w in caught]
    assert processor.state == "STOPPED" and ffmpeg_children() == []
    await asyncio.wait_for(consumer, 10)  # the event stream ended


async def test_a_cleanup_cancelled_midway_releases_everything_then_raises(clips, ffmpeg_children, no_ffmpeg_left):
    # A server task closing a session is itself cancelled while the processor's tasks wind
    # down: the release goes on to the end (FFmpeg stopped), and the caller's cancellation
    # is not swallowed.
    processor = AudioProcessor("test", clock="simulated")
    events = await processor.create_tasks()
    consumer = asyncio.create_task(collect(events))
    await processor.process_audio(clips["wav"][:20_000])
    winding_down = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            winding_down.set()
            await asyncio.sleep(0.3)
            raise

    slow = asyncio.create_task(slow_to_end())
    await asyncio.sleep(0)
    processor._tasks.append(slow)
    cleaning = asyncio.create_task(processor.cleanup())
    await asyncio.wait_for(winding_down.wait(), 5)
    cleaning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cleaning
    assert slow.done() and processor.state == "STOPPED" and ffmpeg_children() == []
    await asyncio.wait_for(consumer, 10)  # the event stream ended
    await processor.cleanup()  # and a later cleanup returns at once


async def test_a_cleanup_cancelled_while_ffmpeg_stops_still_stops_it(clips, ffmpeg_children, no_ffmpeg_left):
    processor = AudioProcessor("test", clock="simulated")
    events = await processor.create_tasks()
    consumer = asyncio.create_task(collect(events))
    await processor.process_audio(clips["wav"][:20_000])
    stop, stopping = processor.decoder.stop, asyncio.Event()

    async def slow_stop() -> None:
        stopping.set()
        await asyncio.sleep(0.3)
        await stop()

    processor.decoder.stop = slow_stop
    cleaning = asyncio.create_task(processor.cleanup())
    await asyncio.wait_for(stopping.wait(), 5)
    cleaning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cleaning
    assert ffmpeg_children() == []
    await asyncio.wait_for(consumer, 10)


async def test_cleanup_while_create_tasks_is_loading_leaves_nothing_running(ffmpeg_children, no_ffmpeg_left):
    # A client that disconnects while the model loads: create_tasks must not go on to
    # start a decoder after cleanup() ran.
    processor = AudioProcessor("test")
    starting = asyncio.create_task(processor.create_tasks())
    await asyncio.sleep(0)  # create_tasks is now waiting for the model load (executor)
    await processor.cleanup()
    with pytest.raises(ProcessorStopped, match="cleaned up while it was starting"):
        await starting
    assert processor.state == "STOPPED"
    assert ffmpeg_children() == []


async def test_process_audio_before_create_tasks_raises_processor_not_running():
    processor = AudioProcessor("test")
    with pytest.raises(ProcessorNotRunning, match="create_tasks"):
        await processor.process_audio(b"\x00" * 100)
    assert processor.state == "IDLE"


@pytest.mark.parametrize("data", [5, "audio", None, [0, 1]])
async def test_process_audio_takes_bytes_only(data):
    # bytes(5) is five zero bytes: an int was taken as audio before.
    processor = AudioProcessor("test", decoder="pcm_s16le")
    await processor.create_tasks()
    try:
        with pytest.raises(TypeError, match=f"^process_audio takes bytes .*, not {type(data).__name__}$"):
            await processor.process_audio(data)
        await processor.process_audio(bytearray(320))  # bytes-like is fine
        await processor.process_audio(memoryview(bytes(320)))
    finally:
        await processor.cleanup()


async def test_process_audio_after_cleanup_raises_processor_stopped(no_ffmpeg_left):
    processor = AudioProcessor("test")
    await processor.create_tasks()
    await processor.cleanup()
    with pytest.raises(ProcessorStopped):
        await processor.process_audio(b"\x00" * 100)


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("clock", ["wall", "simulated"])
@pytest.mark.parametrize("fmt", ["wav", "ogg", "webm", "pcm_s16le"])
async def test_transcript_equals_the_spoken_text(fmt, clock, clips, no_ffmpeg_left):
    decoder = "pcm_s16le" if fmt == "pcm_s16le" else "ffmpeg"
    processor = AudioProcessor("test", clock=clock, decoder=decoder)
    events = await stream(processor, clips[fmt], chunk_size=1000)
    assert committed_text(events) == TEXT
    assert events[-1]["type"] == "summary" and events[-1]["text"] == TEXT
    assert processor.state == "STOPPED"


@pytest.mark.parametrize("clock", ["wall", "simulated"])
async def test_events_follow_the_contract(clock, clips):
    processor = AudioProcessor("test", clock=clock)
    events = await stream(processor, clips["wav"])
    assert all(isinstance(e["emitted_at"], float) and e["emitted_at"] >= 0 for e in events)
    times = [e["emitted_at"] for e in events]
    assert times == sorted(times)
    assert {e["type"] for e in events[:-1]} <= {"partial", "commit"}
    for event in events:
        if event["type"] == "commit":
            assert event["words"] and all(set(w) == {"text", "start", "end"} for w in event["words"])
        if event["type"] == "partial":
            assert set(event) == {"type", "text", "emitted_at"}
    summary = events[-1]
    assert set(summary) == {
        "type", "text", "audio_seconds", "compute_seconds", "measured_compute_seconds", "rtf", "language", "emitted_at"
    }  # fmt: skip
    assert summary["language"] == "en", "the language transcribed: none was asked for, the backend's default"
    assert summary["measured_compute_seconds"] == summary["compute_seconds"]  # measured on these clocks
    assert summary["text"] == committed_text(events)
    assert summary["audio_seconds"] == pytest.approx(len(tone_words(TEXT)[0]) / SR, abs=0.01)
    assert summary["rtf"] == pytest.approx(summary["compute_seconds"] / summary["audio_seconds"], abs=1e-3)
    # Word times are the true audio times of the tones (20 ms analysis frames).
    words = [w for e in events if e["type"] == "commit" for w in e["words"]]
    for word, truth in zip(words, tone_words(TEXT)[1], strict=True):
        assert word["start"] == pytest.approx(truth["start"], abs=0.03)
        assert word["end"] == pytest.approx(truth["end"], abs=0.03)


async def test_metrics_are_recorded(clips):
    processor = AudioProcessor("test", clock="simulated")
    await stream(processor, clips["wav"])
    metrics = processor.metrics
    assert metrics["state"] == "STOPPED"
    assert metrics["audio_seconds"] == pytest.approx(len(tone_words(TEXT)[0]) / SR, abs=0.01)
    assert metrics["compute_seconds"] > 0 and metrics["rtf"] > 0
    # Lag is audio that arrived on the session's clock and no pass took yet. On the
    # simulated clock all the audio is received at once, but it arrives at its own time:
    # a backend this fast never falls behind, so each pass leaves almost nothing waiting.
    times = [at for at, _ in metrics["lag_samples"]]
    assert len(times) >= metrics["audio_seconds"] // 1.0 and times == sorted(times)
    assert max(lag for _, lag in metrics["lag_samples"]) < 0.1
    assert metrics["first_pcm_latency"] is not None


# -- clocks -------------------------------------------------------------------------------------


async def test_simulated_clock_counts_compute_time(clips):
    # The test backend sleeps compute_rtf seconds per second of buffer it transcribes.
    audio, _ = tone_words("alpha bravo")
    processor = AudioProcessor("test", clock="simulated", backend_options={"compute_rtf": 0.5})
    events = await stream(processor, wav_bytes(audio))
    summary = events[-1]
    assert summary["text"] == "alpha bravo"
    seconds = summary["audio_seconds"]
    # Virtual time reaches the end of the audio, then the final pass over the whole buffer
    # (no trimming under 15 s) costs at least compute_rtf * the buffer.
    assert summary["emitted_at"] >= seconds + 0.5 * seconds - 1e-3
    assert summary["compute_seconds"] >= 0.5 * seconds
    assert summary["emitted_at"] >= summary["compute_seconds"] - 1e-3
    # A word is committed after its audio arrived plus a pass over a buffer holding it.
    for event in events:
        if event["type"] == "commit":
            last_end = max(w["end"] for w in event["words"])
            assert event["emitted_at"] >= 1.5 * last_end - 1e-3


async def test_simulated_clock_is_deterministic_for_the_test_backend(clips, monkeypatch):
    # Measured compute time is the only source of variation: pin it to zero.
    monkeypatch.setattr(rtlab.core.scheduler, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))
    runs = [await stream(AudioProcessor("test", clock="simulated"), clips["wav"], chunk_size=c) for c in (777, 4096)]
    assert runs[0] == runs[1]
    summary = runs[0][-1]
    assert summary["compute_seconds"] == 0 and summary["emitted_at"] == summary["audio_seconds"]
    # With no compute, an event is emitted when the audio of its pass has arrived:
    # every min_chunk (1 s) and at the end of the stream.
    assert {e["emitted_at"] for e in runs[0]} <= {1.0, 2.0, 3.0, summary["audio_seconds"]}


async def test_simulated_clock_gives_the_same_words_whatever_the_chunking(clips):
    runs = [await stream(AudioProcessor("test", clock="simulated"), clips["wav"], chunk_size=c) for c in (501, 8192)]
    timed = ("emitted_at", "compute_seconds", "measured_compute_seconds", "rtf")
    untimed = [[{k: v for k, v in e.items() if k not in timed} for e in run] for run in runs]
    assert untimed[0] == untimed[1]


async def test_unknown_clock_mode_is_refused():
    with pytest.raises(ValueError, match="wall, simulated"):
        AudioProcessor("test", clock="sundial")


# -- failures: an error event, STOPPED, no FFmpeg left --------------------------------------------


async def test_no_ffmpeg_left_after_cleanup_mid_stream(clips, ffmpeg_children, no_ffmpeg_left):
    processor = AudioProcessor("test")
    events = await processor.create_tasks()
    await processor.process_audio(clips["wav"][: len(clips["wav"]) // 2])
    assert len(ffmpeg_children()) == 1
    await processor.cleanup()
    assert ffmpeg_children() == []
    assert all(e["type"] != "summary" for e in [e async for e in events])


async def test_an_exception_inside_a_task_ends_the_stream_with_an_error(clips, no_ffmpeg_left):
    processor = AudioProcessor("test", clock="simulated", backend_options={"fail_after": 2})
    events = await stream(processor, clips["wav"])
    error = events[-1]
    assert error["type"] == "error" and error["error"] == "internal_error"
    assert "RuntimeError" in error["message"] and "failing on call" in error["message"]
    assert isinstance(error["emitted_at"], float)
    assert processor.state == "STOPPED"
    assert isinstance(processor.error, RuntimeError)


@pytest.mark.parametrize(
    "broken",
    [
        {"start": float("nan")},
        {"end": float("inf")},
        {"text": None},
        {"start": "0.1"},
    ],
)
async def test_a_backend_word_without_text_or_finite_times_ends_the_stream_naming_the_backend(
    broken, clips, monkeypatch, no_ffmpeg_left
):
    # Before: "ValueError: cannot convert float NaN to integer" from inside the policy
    # (or "AttributeError: 'NoneType' object has no attribute 'strip'").
    from rtlab.testing import ToneBackend

    heard = ToneBackend.transcribe

    def transcribe(self, audio, **options):
        return [{**word, **broken} for word in heard(self, audio, **options)]

    monkeypatch.setattr(ToneBackend, "transcribe", transcribe)
    events = await stream(AudioProcessor("test"), clips["wav"])
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["error"] == "plugin_error"
    assert events[0]["message"].startswith("backend 'test' returned the word {")
    assert "its times finite numbers" in events[0]["message"] and "\n" not in events[0]["message"]


async def test_a_decoder_exception_ends_the_stream_with_an_error(monkeypatch, no_ffmpeg_left):
    async def broken_read(self):
        raise OSError("disk on fire")

    monkeypatch.setattr(FFmpegDecoder, "read", broken_read)
    processor = AudioProcessor("test")
    events = await processor.create_tasks()
    received = await asyncio.wait_for(collect(events), 60)  # not a hang
    assert [(e["type"], e["error"]) for e in received] == [("error", "internal_error")]
    assert "OSError: disk on fire" in received[0]["message"]
    assert processor.state == "STOPPED"


def _raise_on_call(cls, name: str, error: BaseException, monkeypatch, call: int = 2) -> None:
    """``cls.name`` raises ``error`` on its ``call``-th call (patched on the class: see
    the queued-pass test)."""
    original = getattr(cls, name)
    calls = []

    def raising(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, raising)


@pytest.mark.parametrize(
    "where, error",
    [("backend transcribe", SystemExit(3)), ("policy step", KeyboardInterrupt()), ("policy finish", SystemExit(0))],
)
def test_an_exit_raised_in_a_pass_ends_the_stream_with_an_error_and_goes_no_further(
    where, error, clips, monkeypatch, ffmpeg_children, no_ffmpeg_left
):
    # A pass runs on a scheduler thread, where no Ctrl-C is ever delivered and sys.exit()
    # ends only that thread. Before, the exception was carried to the event loop and out
    # of it (a server stopped with every other session, a CLI exited without a word): the
    # stream had no last event and the processor stayed RUNNING, its decoder never stopped.
    from rtlab.policies.local_agreement import LocalAgreement
    from rtlab.testing import ToneBackend

    cls, name = {"backend transcribe": (ToneBackend, "transcribe"), "policy step": (LocalAgreement, "process_iter"),
                 "policy finish": (LocalAgreement, "finish")}[where]  # fmt: skip
    _raise_on_call(cls, name, error, monkeypatch, call=1 if name == "finish" else 2)
    processor = AudioProcessor("test", clock="simulated")
    data = clips["wav"] if name == "finish" else clips["wav"][: 2 * len(clips["wav"]) // 3]  # FFmpeg still runs

    async def run() -> list[dict]:
        try:
            events = await processor.create_tasks()
            await processor.process_audio(data)
            if name == "finish":
                await processor.finish()
            received = await asyncio.wait_for(collect(events), 60)  # not a hang
            assert ffmpeg_children() == []
            return received
        finally:
            await processor.cleanup()

    try:
        received = asyncio.run(run())
    except (KeyboardInterrupt, SystemExit) as escaped:
        pytest.fail(f"{escaped!r} raised in a pass escaped the event loop")
    assert received[-1]["type"] == "error" and received[-1]["error"] == "internal_error"
    assert received[-1]["message"] == (
        f"{error!r} was raised in a transcription pass (backend 'test', policy 'local-agreement'); "
        "the stream ended there, the process goes on"
    )
    assert processor.state == "STOPPED" and processor.error is error


def test_a_ctrl_c_on_the_event_loop_stops_ffmpeg_and_ends_the_stream_before_it_goes_on(
    clips, monkeypatch, ffmpeg_children, no_ffmpeg_left
):
    # A Ctrl-C that reaches Python (the second one in rtlab transcribe) is raised on the
    # event loop's thread, in whatever runs there: here, the policy taking a pass's audio.
    # It must still stop the program; before, it did so with FFmpeg running, the processor
    # RUNNING and the stream without a last event.
    from rtlab.policies.local_agreement import LocalAgreement

    _raise_on_call(LocalAgreement, "insert_audio", KeyboardInterrupt(), monkeypatch)
    processor = AudioProcessor("test", clock="simulated")
    loop = asyncio.new_event_loop()
    try:

        async def start():
            events = await processor.create_tasks()
            await processor.process_audio(clips["wav"][: 2 * len(clips["wav"]) // 3])  # no end of input
            return events

        consumer = loop.create_task(collect(loop.run_until_complete(start())))
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(consumer)
        assert processor.state == "STOPPED" and ffmpeg_children() == []  # before it went on
        received = loop.run_until_complete(consumer)  # what a consumer reads after it
        assert received[-1]["type"] == "error" and received[-1]["error"] == "interrupted"
        assert received[-1]["message"].startswith("KeyboardInterrupt() stopped the program while the stream ran")
        assert isinstance(processor.error, KeyboardInterrupt)
    finally:
        # (Before the fix, cleanup() re-raised the interruption its task had ended with: a
        # failure of this test, not the end of the test run.)
        with contextlib.suppress(KeyboardInterrupt):
            loop.run_until_complete(processor.cleanup())
        loop.close()


async def test_fail_with_a_message_ends_the_stream_with_that_message(clips, ffmpeg_children, no_ffmpeg_left):
    # Before: the message was "str: the microphone was unplugged", an internal error.
    processor = AudioProcessor("test")
    events = await processor.create_tasks()
    await processor.process_audio(clips["wav"][: len(clips["wav"]) // 2])
    await processor.fail("the microphone was unplugged")
    assert ffmpeg_children() == []
    received = await asyncio.wait_for(collect(events), 60)
    assert [(e["type"], e["error"], e["message"]) for e in received if e["type"] != "partial"] == [
        ("error", "error", "the microphone was unplugged")
    ]
    assert processor.state == "STOPPED" and str(processor.error) == "the microphone was unplugged"


async def test_fail_with_neither_an_exception_nor_a_message_is_refused_and_changes_nothing(no_ffmpeg_left):
    processor = AudioProcessor("test")
    await processor.create_tasks()
    try:
        with pytest.raises(TypeError, match=r"^fail\(\) takes an exception or a message \(str\), not int$"):
            await processor.fail(404)
        assert processor.state == "RUNNING" and processor.error is None
    finally:
        await processor.cleanup()


async def test_garbage_input_ends_with_a_decode_failed_error(no_ffmpeg_left):
    processor = AudioProcessor("test")
    events = await stream(processor, b"this is not audio " * 2000)
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["error"] == "decode_failed"
    assert "Invalid data found" in events[0]["message"]  # FFmpeg's own words
    assert processor.state == "STOPPED"
    with pytest.raises(ProcessorStopped):
        await processor.process_audio(b"more")


async def test_empty_input_ends_with_a_decode_failed_error(no_ffmpeg_left):
    processor = AudioProcessor("test")
    events = await stream(processor, b"")
    assert [(e["type"], e.get("error")) for e in events] == [("error", "decode_failed")]
    assert processor.state == "STOPPED"


async def test_silence_only_ends_with_an_empty_summary(no_ffmpeg_left):
    processor = AudioProcessor("test", clock="simulated")
    events = await stream(processor, wav_bytes(np.zeros(3 * SR, np.float32)))
    assert [e["type"] for e in events if e["type"] != "partial"] == ["summary"]
    assert events[-1]["text"] == ""
    assert events[-1]["audio_seconds"] == pytest.approx(3.0, abs=0.01)


async def test_a_truncated_file_transcribes_what_arrived(clips, no_ffmpeg_left):
    processor = AudioProcessor("test", clock="simulated")
    events = await stream(processor, clips["wav"][: len(clips["wav"]) // 2])
    assert events[-1]["type"] == "summary"
    assert events[-1]["text"] and TEXT.startswith(events[-1]["text"])


def test_a_bad_policy_option_value_is_refused_before_any_work(no_ffmpeg_left):
    with pytest.raises(InvalidOption, match="min_chunk"):
        AudioProcessor("test", policy_options={"min_chunk": 0})


class EnglishOnlyTones(ToneBackend):
    """A tone backend whose model transcribes English alone, as a ``.en`` Whisper does."""

    name = "english-only-tones"

    def languages(self) -> list[str]:
        return ["en"]


async def test_a_language_the_model_refuses_stops_the_start_as_the_editors_check_does(no_ffmpeg_left):
    from rtlab.core.costs import CostModel
    from rtlab.widgets.configs import check_startable

    refusal = "^backend 'english-only-tones' is English-only and does not transcribe language 'de'; "
    with registered(EnglishOnlyTones):
        config = StreamConfig(backend="english-only-tones", language="de")
        with pytest.raises(InvalidOption, match=refusal):
            check_startable(config)
        # A cost model without its calibration: the language is refused first, before
        # the session takes the backend's scheduler or looks for a calibration.
        processor = AudioProcessor(config, clock="modeled", cost_model=CostModel())
        with pytest.raises(InvalidOption, match=refusal):
            await processor.create_tasks()
    assert processor.state == "STOPPED" and processor.scheduler is None and processor.policy is None


@pytest.mark.parametrize(
    "bounds, message",
    [
        (dict(max_buffered_seconds=0), "^max_buffered_seconds must be a number of seconds above 0, not 0$"),
        (dict(max_buffered_seconds=-1.0), "^max_buffered_seconds must be a number of seconds above 0, not -1.0$"),
        (dict(max_buffered_seconds=float("nan")), "^max_buffered_seconds must be a number of seconds above 0, not nan$"),
        (dict(max_buffered_seconds=float("inf")), "^max_buffered_seconds must be a number of seconds above 0, not inf$"),
        (dict(max_buffered_seconds="30"), "^max_buffered_seconds must be a number of seconds above 0, not '30'$"),
        (dict(max_events=0), "^max_events must be a whole number of events >= 1, not 0$"),
        (dict(max_events=2.5), "^max_events must be a whole number of events >= 1, not 2.5$"),
        (dict(max_events=True), "^max_events must be a whole number of events >= 1, not True$"),
        # Before: any truthy value turned pacing on, "no" included.
        (dict(pace_input="no"), "^pace_input must be True or False, not 'no'$"),
        (dict(pace_input=1), "^pace_input must be True or False, not 1$"),
    ],
)
def test_bad_buffer_bounds_are_refused_naming_them(bounds, message, no_ffmpeg_left):
    # Before: 0 or below ran a pass per FFmpeg read (a one-sample buffer), NaN and inf
    # failed in int() with "cannot convert float NaN to integer".
    with pytest.raises(InvalidOption, match=message):
        AudioProcessor("test", **bounds)


@pytest.mark.parametrize("clock", ["wall", "simulated"])
async def test_a_pcm_buffer_smaller_than_min_chunk_does_not_stall(clock, clips, no_ffmpeg_left):
    processor = AudioProcessor("test", clock=clock, max_buffered_seconds=0.5)  # min_chunk is 1 s
    events = await asyncio.wait_for(stream(processor, clips["wav"]), 60)
    assert events[-1]["type"] == "summary" and events[-1]["text"] == TEXT
    assert processor.buffer.pending == 0


async def test_a_queued_pass_takes_the_audio_that_arrived_while_it_waited(clips, monkeypatch):
    """Wall clock: sessions take turns on one model, so a pass can wait in the queue; the
    audio that arrives meanwhile goes into that pass, not the next one."""
    import threading

    processor = AudioProcessor("test", decoder="pcm_s16le", policy_options={"min_chunk": 0.5})
    events = await processor.create_tasks()
    seen, behind = [], []
    backend_class = type(processor.backend)
    transcribe = backend_class.transcribe

    def recording(self, audio, **options):
        if self is processor.backend:
            seen.append(len(audio))
            behind.append(processor.policy.behind)
        return transcribe(self, audio, **options)

    # On the class: patched on the shared instance, the undo would leave the original
    # bound method on the instance, hiding later patches of the class from other tests.
    monkeypatch.setattr(backend_class, "transcribe", recording)
    busy, release = threading.Event(), threading.Event()
    blocker = asyncio.ensure_future(
        processor.scheduler.submit(lambda: busy.set() or release.wait(30))  # another session's pass
    )
    await asyncio.get_running_loop().run_in_executor(None, busy.wait, 30)
    pcm = clips["pcm_s16le"]
    await processor.process_audio(pcm[: SR])  # 0.5 s: a pass is due, and queues
    while processor.buffer.taken == 0 and processor.buffer.received < SR // 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    await processor.process_audio(pcm[SR : 3 * SR])  # 1 s more while the pass waits
    while processor.buffer.received < 3 * SR // 2:
        await asyncio.sleep(0.01)
    release.set()
    await blocker
    while not seen:  # the queued pass has taken its audio and started
        await asyncio.sleep(0.01)
    await processor.process_audio(pcm[3 * SR :])
    await processor.finish()
    received = [event async for event in events]
    assert received[-1]["type"] == "summary" and received[-1]["text"] == TEXT
    assert seen[0] == 3 * SR // 2, "the first pass saw 1.5 s: the 0.5 s that made it due and the 1 s after"
    assert behind[:2] == [False, True], "a pass that took in 3 min_chunks tells the policy it is behind"
    await processor.cleanup()


# -- unknown names and options ---------------------------------------------------------------------


def test_unknown_backend_policy_and_decoder_are_refused():
    with pytest.raises(UnknownBackend, match="'nope'.*installed backends: .*test"):
        AudioProcessor("nope")
    with pytest.raises(UnknownPolicy, match="'nope'.*local-agreement"):
        AudioProcessor("test", policy="nope")
    with pytest.raises(UnknownDecoder, match="'nope'.*ffmpeg, pcm_s16le"):
        AudioProcessor("test", decoder="nope")


@pytest.mark.parametrize(
    "options, kind, plugin",
    [
        (dict(backend_options={"bogus": 1}), "backend 'test'", "rtlab.testing"),
        (dict(policy_options={"bogus": 1}), "policy 'local-agreement'", "rtlab.policies.plugin"),
        (dict(decoder_options={"bogus": 1}), "decoder 'ffmpeg'", "rtlab.decoders.plugin"),
    ],
)
def test_unknown_option_is_refused_naming_the_option_and_plugin(options, kind, plugin):
    with pytest.raises(InvalidOption) as raised:
        AudioProcessor("test", **options)
    message = str(raised.value)
    assert kind in message and f"plugin {plugin!r}" in message and "'bogus'" in message
    assert "it accepts:" in message


def test_model_is_a_backend_option():
    with pytest.raises(InvalidOption, match="'model'"):
        AudioProcessor("test", decoder_options={"model": "x"})
    AudioProcessor("test", model="tones")  # the test backend accepts a model name


# -- bounded queues ----------------------------------------------------------------------------------


def partial(text: str) -> dict:
    return {"type": "partial", "text": text, "emitted_at": 0.0}


def commit(text: str) -> dict:
    return {"type": "commit", "words": [{"text": text, "start": 0.0, "end": 0.1}], "emitted_at": 0.0}


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_event_queue_drops_partials_when_nobody_reads():
    events = EventQueue(10)
    for i in range(10_000):
        await events.put(partial(str(i)))
    assert len(events._items) <= 5
    assert events.dropped_partials == 10_000 - len(events._items)
    assert events._items[-1]["text"] == "9999"  # the newest partial is kept


async def test_event_queue_commits_wait_for_room_and_are_never_dropped():
    events = EventQueue(4)
    for i in range(4):
        await events.put(commit(str(i)))
    blocked = asyncio.create_task(events.put(commit("4")))
    await settle()
    assert not blocked.done()  # bounded: the producer waits
    assert len(events._items) == 4
    assert (await events.__anext__())["words"][0]["text"] == "0"
    await asyncio.wait_for(blocked, 5)
    await events.close({"type": "summary", "text": "", "emitted_at": 0.0})
    rest = [e async for e in events]
    assert [e["words"][0]["text"] for e in rest[:-1]] == ["1", "2", "3", "4"]
    assert rest[-1]["type"] == "summary"


async def test_event_queue_close_fits_the_final_event_and_wakes_a_waiting_producer():
    events = EventQueue(2)
    await events.put(commit("a"))
    await events.put(commit("b"))
    blocked = asyncio.create_task(events.put(commit("c")))
    await settle()
    await events.close({"type": "error", "error": "x", "message": "m", "emitted_at": 0.0})
    await asyncio.wait_for(blocked, 5)
    await events.close()  # idempotent
    assert [e["type"] for e in [e async for e in events]] == ["commit", "commit", "error"]


async def test_a_consumer_that_never_reads_does_not_grow_the_processor(no_ffmpeg_left):
    # 30 s of audio cannot fit in 4 events + 1 s of PCM + the pipes: feeding must block.
    audio, _ = tone_words(" ".join(["alpha", "bravo", "charlie"] * 20))
    processor = AudioProcessor("test", max_events=4, max_buffered_seconds=1.0)
    await processor.create_tasks()

    async def feed() -> None:
        data = wav_bytes(audio)
        for offset in range(0, len(data), 4096):
            await processor.process_audio(data[offset : offset + 4096])

    feeder = asyncio.create_task(feed())
    done, _ = await asyncio.wait({feeder}, timeout=2)
    assert not done, processor.error
    assert len(processor.events._items) <= 4
    assert processor.buffer.pending <= 1.0 * SR + 4096
    assert processor.policy.buffered_seconds <= 30
    await processor.cleanup()
    # The blocked feeder is released: it returns, or is told the processor stopped.
    with pytest.raises(ProcessorStopped):
        await asyncio.wait_for(feeder, 10)


# --------------------------------------------------------------------------- a pipe


def _pipe(data: bytes, fail_after: int | None = None):
    """A blocking ``read(n)`` over ``data``, as a pipe gives it; raises OSError once
    ``fail_after`` bytes were read, when given."""
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        if fail_after is not None and position >= fail_after:
            raise OSError("the pipe broke")
        chunk = data[position : position + n]
        position += len(chunk)
        return chunk

    return read


def _pipe_readers() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "rtlab-pipe-reader"]


@pytest.mark.parametrize("fmt", ["wav", "ogg"])
async def test_a_pipe_streams_like_a_file(clips, fmt, no_ffmpeg_left):
    from rtlab.core.feeding import stream_reader

    events = await stream_reader(_pipe(clips[fmt]), "test", clock="simulated")
    assert events[-1]["type"] == "summary" and events[-1]["text"] == TEXT
    await asyncio.sleep(0.3)
    assert not _pipe_readers()


async def test_a_pipe_that_breaks_ends_the_stream_with_its_error(clips, no_ffmpeg_left):
    from rtlab.core.feeding import stream_reader

    events = await stream_reader(_pipe(clips["wav"], fail_after=8192), "test", clock="simulated")
    assert events[-1]["type"] == "error" and "the pipe broke" in events[-1]["message"]
    await asyncio.sleep(0.3)
    assert not _pipe_readers()


async def test_stopping_a_piped_file_ends_it_where_the_clock_is(no_ffmpeg_left):
    from rtlab.core.feeding import stream_reader

    audio, _ = tone_words(" ".join([TEXT] * 3))  # about 9 s, all of it in the pipe at once
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(2.0, stop.set)
    events = await stream_reader(_pipe(wav_bytes(audio)), "test", stop=stop)
    summary = events[-1]
    assert summary["type"] == "summary"
    # Held to real time (pace_input), so at the stop about 2 s had been played: the rest
    # of what the pipe gave is dropped, not transcribed at once.
    assert 1.0 < summary["audio_seconds"] < 3.0
    said = summary["text"].split()
    assert said and said == (TEXT.split() * 3)[: len(said)]


async def test_stopping_a_pipe_that_has_given_everything_still_ends_it_where_the_clock_is(no_ffmpeg_left):
    """A pipe can reach its end long before its audio is played (raw PCM at once here; an
    FFmpeg that reads ahead, such as 9.0, with a short WAV file): a stop while the rest
    plays ends it there too, instead of playing it to the end."""
    from rtlab.config import StreamConfig
    from rtlab.core.feeding import stream_reader
    from rtlab.decoders.files import to_pcm16

    audio, _ = tone_words(" ".join([TEXT] * 3))  # about 9 s
    read = _pipe(to_pcm16(audio))
    ended_at = []

    def pipe(n: int) -> bytes:
        data = read(n)
        if not data and not ended_at:
            ended_at.append(time.monotonic())
        return data

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(2.0, stop.set)
    started = time.monotonic()
    events = await stream_reader(pipe, StreamConfig(backend="test", decoder="pcm_s16le"), stop=stop)
    assert ended_at and ended_at[0] - started < 1.5, "the pipe gave everything before the stop"
    summary = events[-1]
    assert summary["type"] == "summary"
    assert 1.0 < summary["audio_seconds"] < 3.0, summary
    said = summary["text"].split()
    assert said and said == (TEXT.split() * 3)[: len(said)]


def test_pace_input_holds_only_the_wall_clock():
    assert AudioProcessor("test", pace_input=True).pace_input
    assert not AudioProcessor("test", clock="unaware", pace_input=True).pace_input
    assert not AudioProcessor("test").pace_input


async def test_a_stream_that_stops_does_not_wait_for_a_quiet_pipe(clips, no_ffmpeg_left):
    import threading

    from rtlab.core.feeding import feed_reader

    release = threading.Event()
    given = [clips["wav"][:20_000]]  # some audio, then the pipe goes quiet and stays open

    def read(n: int) -> bytes:
        if given:
            return given.pop()
        release.wait(30)
        return b""

    processor = AudioProcessor("test")
    await processor.create_tasks()
    feeder = asyncio.create_task(feed_reader(processor, read))
    try:
        await asyncio.sleep(0.5)
        assert not feeder.done()  # a live source that is quiet for now: the stream waits
        await processor.cleanup()  # stopped from elsewhere (a server's shutdown, say)
        await asyncio.wait_for(feeder, 5)
    finally:
        release.set()
        await processor.cleanup()
    assert processor.state == "STOPPED"


async def test_a_file_is_read_as_it_is_sent_not_held_whole(tmp_path):
    """feed_file reads the file a chunk at a time (a two-hour 44.1 kHz stereo WAV is 1.3 GB;
    before, it was read whole before the first byte was sent), sends every byte in order,
    and finishes the processor once."""
    import tracemalloc

    from rtlab.core.feeding import feed_file

    class Receiver:  # what feed_file needs of an AudioProcessor
        state = "RUNNING"

        def __init__(self) -> None:
            self.received, self.finished = bytearray(), 0

        async def process_audio(self, data: bytes) -> None:
            self.received += data[:16]  # keep only what shows the order

        async def finish(self) -> None:
            self.finished += 1

    path = tmp_path / "long.bin"
    size = 8 * 1024 * 1024
    path.write_bytes(bytes(range(256)) * (size // 256))
    receiver = Receiver()
    tracemalloc.start()
    try:
        await feed_file(receiver, path, realtime=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size // 4, peak  # before: the whole file, 8 MiB, at once
    assert receiver.finished == 1 and bytes(receiver.received[:16]) == bytes(range(16))
    assert len(receiver.received) == 16 * (size // 16_384)


async def test_async_with_starts_the_processor_and_always_cleans_it_up(clips, no_ffmpeg_left, ffmpeg_children):
    async with AudioProcessor("test", clock="simulated") as processor:
        assert processor.state == "RUNNING"
        await processor.process_audio(clips["wav"])
        assert len(ffmpeg_children()) == 1
        await processor.finish()
    events = [event async for event in processor.events]
    assert events[-1]["type"] == "summary" and events[-1]["text"]
    assert processor.state == "STOPPED"

    with pytest.raises(RuntimeError, match="the caller's own error"):
        async with AudioProcessor("test", decoder_options={"input_format": "ogg"}) as processor:
            assert len(ffmpeg_children()) == 1  # a named container: FFmpeg starts at once
            raise RuntimeError("the caller's own error")
    assert processor.state == "STOPPED" and ffmpeg_children() == []
    assert [event async for event in processor.events] == []  # stopped where it was: no summary


async def test_a_partial_that_begins_with_the_rest_of_a_committed_word_says_it_joins(no_ffmpeg_left):
    """While "charliedelta" is heard once over the committed "charlie", not yet agreed, the
    partial is "delta echo" marked ``joins``: a viewer writes it on to "charlie"."""
    said, then = tone_words("alpha bravo charlie")[0], tone_words("delta echo foxtrot golf hotel")[0]
    audio = np.concatenate([said, np.zeros(int(0.6 * 16_000), np.float32), then])
    with registered(CompoundTones):
        processor = AudioProcessor(StreamConfig(backend="compound-tones", decoder="pcm_s16le"), clock="simulated")
        events = await stream(processor, (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), chunk_size=1000)
    partials = [e for e in events if e["type"] == "partial" and e["text"]]
    joining = [e for e in partials if e.get("joins")]
    assert [e["text"] for e in joining] == ["delta echo"]
    assert all("joins" not in e for e in partials if e not in joining), "the key is absent otherwise"
    assert events[-1]["text"] == "alpha bravo charliedelta echo foxtrot golf hotel"


async def test_the_rest_of_a_word_heard_over_a_committed_one_joins_it_in_every_text(tmp_path, no_ffmpeg_left):
    """"charlie" is committed before "delta" is said; later passes hear "charliedelta" over
    it. The rest, "delta", is committed marked ``joins``, and every text of the stream
    writes it on to "charlie": the summary, the stream's text, the scored hypothesis and
    subtitles."""
    from rtlab.eval.results import evaluate_stream
    from rtlab.subtitles import subtitles

    said, then = tone_words("alpha bravo charlie")[0], tone_words("delta echo")[0]
    audio = np.concatenate([said, np.zeros(int(0.6 * 16_000), np.float32), then])  # committed in the pause
    with registered(CompoundTones):
        processor = AudioProcessor(StreamConfig(backend="compound-tones", decoder="pcm_s16le"), clock="simulated")
        events = await stream(processor, (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), chunk_size=1000)
    words = [w for e in events if e["type"] == "commit" for w in e["words"]]
    assert [(w["text"], w.get("joins", False)) for w in words] == [
        ("alpha", False), ("bravo", False), ("charlie", False), ("delta", True), ("echo", False)
    ]  # fmt: skip
    assert "joins" not in words[0], "the key is absent on a word that does not join"
    assert events[-1]["text"] == "alpha bravo charliedelta echo"
    scored = evaluate_stream(file="tones", reference="alpha bravo charliedelta echo", events=events)
    assert scored.hypothesis == "alpha bravo charliedelta echo" and scored.wer.errors == 0
    assert "charliedelta echo" in subtitles(events, "srt")
