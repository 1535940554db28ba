"""``rtlab transcribe`` as a user runs it: a real subprocess, real FFmpeg."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from rtlab.decoders import find_ffmpeg
from rtlab.testing import tone_words, wav_bytes

TONE_TEXT = "alpha bravo charlie delta echo foxtrot"


def rtlab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rtlab", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def tone_wav(tmp_path):
    path = tmp_path / "tones.wav"
    path.write_bytes(wav_bytes(tone_words(TONE_TEXT)[0]))
    return path


def test_help_lists_the_commands():
    result = rtlab("--help")
    assert result.returncode == 0
    for command in ("transcribe", "plugins"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["transcribe", "bench", "calibrate", "serve", "plugins", "models", "models list",
                                     "models convert"])  # fmt: skip
def test_help_shows_no_rst_markup(command):
    result = rtlab(*command.split(), "--help")
    assert result.returncode == 0
    assert not re.search(r"``|:(class|func|meth|data):", result.stdout), result.stdout


def test_jsonl_prints_partial_commit_and_a_final_summary(tone_wav):
    result = rtlab("transcribe", str(tone_wav), "--backend", "test", "--clock", "simulated", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["type"] for e in events} <= {"partial", "commit", "summary"}
    assert all("emitted_at" in e for e in events)
    assert events[-1]["type"] == "summary"
    assert events[-1]["text"] == TONE_TEXT
    assert set(events[-1]) >= {"text", "audio_seconds", "compute_seconds", "rtf"}
    committed = [w for e in events if e["type"] == "commit" for w in e["words"]]
    assert all(set(w) == {"text", "start", "end"} for w in committed)
    assert " ".join(w["text"] for w in committed) == TONE_TEXT


def test_text_mode_prints_the_committed_text(tone_wav):
    result = rtlab("transcribe", str(tone_wav), "--backend", "test", "--clock", "simulated")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == TONE_TEXT


def test_several_files_name_their_file_in_jsonl(tone_wav, data_dir):
    result = rtlab("transcribe", str(tone_wav), str(tone_wav), "--backend", "test", "--clock", "simulated",
                   "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["file"] for e in events if e["type"] == "summary"] == [str(tone_wav)] * 2


def test_wall_clock_streams_in_real_time(tone_wav):
    result = rtlab("transcribe", str(tone_wav), "--backend", "test", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    # Paced in real time: the summary cannot come before the audio has been played.
    assert summary["emitted_at"] >= summary["audio_seconds"]



def rtlab_stdin(data: bytes, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``rtlab ARGS`` with ``data`` piped into its standard input."""
    result = subprocess.run([sys.executable, "-m", "rtlab", *args], input=data, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def test_a_dash_streams_standard_input(tone_wav):
    result = rtlab_stdin(tone_wav.read_bytes(), "transcribe", "-", "--backend", "test", "--clock", "simulated")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == TONE_TEXT


def test_a_file_piped_in_on_the_wall_clock_plays_in_real_time(tone_wav):
    # The whole file is in the pipe at once; the processor holds its audio to real time
    # (pace_input), so the summary cannot come before the audio has been played.
    result = rtlab_stdin(tone_wav.read_bytes(), "transcribe", "-", "--backend", "test", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["text"] == TONE_TEXT
    assert summary["emitted_at"] >= summary["audio_seconds"] > 3


def _ctrl_c_after_first_event(*args: str, stdin: bytes | None = None, pause: float = 0.0, terminal: bool = False):
    """Run ``rtlab ARGS --format jsonl`` (with ``stdin`` written into a pipe that stays
    open, as a live source's would), press Ctrl-C once it has printed an event and
    ``pause`` seconds more; with ``terminal``, as a terminal does: SIGINT to rtlab's whole
    process group. Returns the exit status, the events, stderr and the FFmpeg processes it
    had before Ctrl-C."""
    import contextlib
    import os
    import signal
    import threading
    import time

    import psutil

    process = subprocess.Popen(
        [sys.executable, "-m", "rtlab", *args, "--format", "jsonl"],
        stdin=subprocess.PIPE if stdin is not None else None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=terminal,  # a group of its own, to signal as a terminal does
    )  # fmt: skip
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()

    def write() -> None:  # waits while the session holds the audio to real time
        with contextlib.suppress(BrokenPipeError, ValueError):  # rtlab ended the input before its end
            process.stdin.write(stdin)
            process.stdin.flush()

    writer = threading.Thread(target=write, daemon=True)
    if stdin is not None:
        writer.start()
    try:
        deadline = time.monotonic() + 60
        while not lines and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)  # each event is printed (and flushed) as it happens
        assert lines, "no event before Ctrl-C"
        time.sleep(pause)
        ffmpeg = [c for c in psutil.Process(process.pid).children(recursive=True) if "ffmpeg" in c.name()]
        if terminal:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        reader.join(timeout=10)
        err = process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if stdin is not None:
            writer.join(timeout=10)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
    return process.returncode, [json.loads(line) for line in lines], err, ffmpeg


def test_ctrl_c_ends_standard_input_and_the_tail_is_committed():
    audio, _ = tone_words(" ".join([TONE_TEXT] * 4))  # about 12 s
    status, events, err, ffmpeg = _ctrl_c_after_first_event("transcribe", "-", "--backend", "test",
                                                            stdin=wav_bytes(audio))  # fmt: skip
    assert status == 0, err
    assert "stopping: committing the tail" in err
    assert len(ffmpeg) == 1 and not ffmpeg[0].is_running()  # stopped and reaped by rtlab before it exited
    summary = events[-1]
    assert summary["type"] == "summary"
    assert 0 < summary["audio_seconds"] < len(audio) / 16000 - 1  # ended where it was, not where the pipe got to
    committed = " ".join(w["text"] for e in events if e["type"] == "commit" for w in e["words"])
    said = committed.split()
    assert committed == summary["text"] and said and said == (TONE_TEXT.split() * 4)[: len(said)]


def test_ctrl_c_while_a_quiet_source_keeps_its_pipe_open_exits_cleanly():
    # A reader thread still waiting for the pipe at exit must not hold a lock Python's
    # shutdown needs (it aborted with "could not acquire lock for <stdin>" before).
    audio, _ = tone_words(TONE_TEXT)
    status, events, err, _ = _ctrl_c_after_first_event(
        "transcribe", "-", "--backend", "test", stdin=wav_bytes(audio)[:60_000], pause=1.5
    )  # about 1.9 s of audio, then nothing; the session has played it when Ctrl-C comes
    assert status == 0, err
    assert "Fatal Python error" not in err
    summary = events[-1]
    assert summary["type"] == "summary" and summary["text"] and TONE_TEXT.startswith(summary["text"])


def test_ctrl_c_on_the_wall_clock_ends_the_file_and_skips_the_rest(tmp_path):
    audio, _ = tone_words(" ".join([TONE_TEXT] * 4))  # about 12 s
    long_wav = tmp_path / "long.wav"
    long_wav.write_bytes(wav_bytes(audio))
    status, events, err, _ = _ctrl_c_after_first_event("transcribe", str(long_wav), str(long_wav), "--backend", "test")
    assert status == 130, err
    assert f"interrupted: {long_wav} was not streamed to its end; 1 more file not streamed" in err
    assert [e["type"] for e in events].count("summary") == 1 and events[-1]["type"] == "summary"
    assert events[-1]["file"] == str(long_wav)
    assert 0 < events[-1]["audio_seconds"] < len(audio) / 16000 - 1



def test_ctrl_c_at_a_terminal_reaches_ffmpeg_too_and_the_tail_is_still_committed(tmp_path):
    # A terminal signals its whole foreground process group: FFmpeg quit at once and the
    # stream ended with "could not decode the audio: FFmpeg exited with code 255", no summary.
    audio, _ = tone_words(" ".join([TONE_TEXT] * 4))  # about 12 s
    long_wav = tmp_path / "long.wav"
    long_wav.write_bytes(wav_bytes(audio))
    status, events, err, ffmpeg = _ctrl_c_after_first_event("transcribe", str(long_wav), "--backend", "test",
                                                            terminal=True)  # fmt: skip
    assert status == 130, err
    assert "decode" not in err and f"interrupted: {long_wav} was not streamed to its end" in err
    assert len(ffmpeg) == 1 and not ffmpeg[0].is_running()
    assert events[-1]["type"] == "summary" and events[-1]["text"]
    committed = " ".join(w["text"] for e in events if e["type"] == "commit" for w in e["words"])
    assert committed == events[-1]["text"]


@pytest.mark.parametrize("output_format, to_the_group", [("text", True), ("jsonl", True), ("text", False)])
def test_ctrl_c_while_the_files_duration_is_measured_is_an_interruption_not_a_bad_file(tmp_path, tone_wav,
                                                                                      output_format, to_the_group):  # fmt: skip
    # On the wall clock a file is decoded once for its duration before any of it is sent.
    # Ctrl-C then (at a terminal: FFmpeg is signalled too) gave "FFmpeg could not decode
    # FILE (exit -2)", or "no audio was received: the input was empty"; jsonl still printed
    # that as the stream's last event where the other formats print nothing.
    import os
    import signal
    import time

    measuring = tmp_path / "measuring"
    slow = tmp_path / "ffmpeg"  # the duration's FFmpeg (-nostdin) waits until Ctrl-C
    slow.write_text(f'#!/bin/sh\ncase "$*" in *-nostdin*) touch "{measuring}"; sleep 60;; esac\n'
                    f'exec "{find_ffmpeg()}" "$@"\n')  # fmt: skip
    slow.chmod(0o755)
    process = subprocess.Popen([sys.executable, "-m", "rtlab", "transcribe", str(tone_wav), str(tone_wav),
                                "--backend", "test", "--format", output_format], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "RTLAB_FFMPEG": str(slow)}, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not measuring.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert measuring.exists(), process.communicate()[1]
        if to_the_group:
            os.killpg(process.pid, signal.SIGINT)  # as a terminal does
        else:  # as `kill -INT PID` does: before, the measuring FFmpeg went on to its end
            process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == f"Error: interrupted: {tone_wav} was not streamed to its end; 1 more file not streamed"
    assert "decode" not in err and "no audio" not in err
    assert out == ""  # no event: nothing of the file was transcribed


def test_ctrl_c_after_the_whole_file_was_sent_cuts_nothing_short(tone_wav):
    # A slow backend (3 s of compute per second of audio): the 3.3 s file has been sent
    # when the first event comes, so Ctrl-C then ends nothing early.
    status, events, err, _ = _ctrl_c_after_first_event("transcribe", str(tone_wav), "--backend", "test",
                                                       "-b", "compute_rtf=3")  # fmt: skip
    assert status == 0, err
    assert "stopping: committing the tail" in err and "interrupted" not in err
    assert events[-1]["type"] == "summary" and events[-1]["text"] == TONE_TEXT


def test_standard_input_is_read_once_and_never_from_a_terminal(tone_wav):
    import os

    _assert_one_line_error(rtlab("transcribe", "-", "-", "--backend", "test"), "read once")
    leader, follower = os.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "rtlab", "transcribe", "-", "--backend", "test"],
                                stdin=follower, capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        os.close(leader)
        os.close(follower)
    _assert_one_line_error(result, "standard input is a terminal; pipe audio into it")


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_file_is_a_one_line_error(tmp_path):
    _assert_one_line_error(rtlab("transcribe", str(tmp_path / "nope.wav"), "--backend", "test"), "no such file")


def test_undecodable_file_is_a_one_line_error(tmp_path):
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(bytes(range(256)) * 20)
    for clock in ("wall", "simulated"):
        _assert_one_line_error(
            rtlab("transcribe", str(garbage), "--backend", "test", "--clock", clock), "decode"
        )


def test_on_the_wall_clock_a_file_is_named_once_in_its_error(tmp_path):
    # The wall clock measures a file's length first; a header without samples was
    # "X: cannot decode X: no audio stream" (it has a stream; it has no samples).
    import wave

    header_only = tmp_path / "header only.wav"
    with wave.open(str(header_only), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(bytes(range(256)) * 20)
    for path, why in ((header_only, "holds no audio samples"), (garbage, "could not decode")):
        result = rtlab("transcribe", str(path), "--backend", "test")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        line = result.stderr.strip()
        assert line.startswith("Error: ") and why in line and str(path) in line, line
        prefix = f"Error: {path}: "
        assert not (line.startswith(prefix) and str(path) in line[len(prefix):]), f"named twice: {line}"
    assert "no audio stream" not in rtlab("transcribe", str(header_only), "--backend", "test").stderr


def test_of_several_files_each_bad_one_is_reported_and_the_good_ones_transcribed(tone_wav, tmp_path):
    # Only the first bad file's error was printed, at the end: the second was never named.
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(bytes(range(256)) * 20)
    empty = tmp_path / "empty ü.wav"
    empty.write_bytes(b"")
    result = rtlab("transcribe", str(garbage), str(tone_wav), str(empty), str(tone_wav), "--backend", "test",
                   "--clock", "simulated")  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [TONE_TEXT, TONE_TEXT]
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith(f"Error: {garbage}: could not decode the audio")
    assert lines[1] == f"Error: {empty}: no audio was received: the input was empty"
    assert lines[2] == f"Error: 2 of 4 files could not be transcribed: {garbage}, {empty}"


def test_empty_file_is_a_one_line_error(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _assert_one_line_error(rtlab("transcribe", str(empty), "--backend", "test", "--clock", "simulated"))


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--backend", "nope"), "unknown backend 'nope'"),
        (("--policy", "nope"), "unknown policy 'nope'"),
        (("--backend", "test", "-b", "temperature=3"), "option 'temperature'"),
        (("--backend", "test", "-p", "min_chunk=0"), "min_chunk"),
        (("--backend", "test", "-b", "novalue"), "KEY=VALUE"),
    ],
)
def test_unknown_names_and_options_are_one_line_errors(tone_wav, args, needle):
    result = rtlab("transcribe", str(tone_wav), *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert needle in result.stderr


def test_an_unknown_backend_tells_the_engines_from_rtlab_s_scripted_test_backends(tone_wav):
    # It listed "faster-whisper, openai-whisper, test, test-attention" as if all four were engines.
    result = rtlab("transcribe", str(tone_wav), "--backend", "nope")
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("Error: unknown backend 'nope'; installed backends: ")
    engines = message.split("installed backends: ", 1)[1].split(";", 1)[0]
    assert "test" not in engines.split(", ")
    assert "; rtlab's scripted test backends: test, test-attention. Run 'rtlab plugins'" in message


_SRT_BLOCK = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)$")


@pytest.mark.parametrize("format", ["srt", "vtt"])
def test_rtlab_transcribe_prints_subtitles(tmp_path, format):
    clip = tmp_path / "tones.wav"
    clip.write_bytes(wav_bytes(tone_words(TONE_TEXT)[0]))
    result = rtlab("transcribe", str(clip), "--backend", "test", "--clock", "simulated", "--format", format)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    if format == "vtt":
        assert text.startswith("WEBVTT\n\n")
        text = text[len("WEBVTT\n\n"):].replace(".", ",")
        text = "".join(f"{n}\n{block}\n\n" for n, block in enumerate(text.strip().split("\n\n"), 1))
    blocks = [_SRT_BLOCK.match(block) for block in text.strip().split("\n\n")]
    assert all(blocks), text
    assert [int(b[1]) for b in blocks] == list(range(1, len(blocks) + 1))
    assert [b[2] for b in blocks] == sorted(b[2] for b in blocks) and all(b[2] <= b[3] for b in blocks)
    assert " ".join(b[4] for b in blocks) == TONE_TEXT


def test_subtitles_of_a_stream_that_fails_before_its_first_cue_are_not_begun(tmp_path):
    # "WEBVTT" was printed before the stream started: a file that failed to decode left a
    # redirected .vtt holding a header and nothing else, and exit status 1.
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(bytes(range(256)) * 20)
    failed = rtlab("transcribe", str(garbage), "--backend", "test", "--clock", "simulated", "--format", "vtt")
    assert failed.returncode == 1 and "could not decode" in failed.stderr
    assert failed.stdout == ""
    silence = tmp_path / "silence.wav"
    silence.write_bytes(wav_bytes(np.zeros(16000, np.float32)))
    empty = rtlab("transcribe", str(silence), "--backend", "test", "--clock", "simulated", "--format", "vtt")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == "WEBVTT\n\n", "no words: a valid file without cues"


def test_cue_limits_shape_the_subtitles(tmp_path):
    """Without a pause long enough or a sentence end, the tone words are cut only by the
    limits: at most 12 characters a cue (one or two words of the tone text)."""
    clip = tmp_path / "tones.wav"
    clip.write_bytes(wav_bytes(tone_words(TONE_TEXT)[0]))
    result = rtlab("transcribe", str(clip), "--backend", "test", "--clock", "simulated", "--format", "srt",
                   "--cue-chars", "12", "--cue-gap", "30")  # fmt: skip
    assert result.returncode == 0, result.stderr
    texts = [block.split("\n")[2] for block in result.stdout.strip().split("\n\n")]
    assert " ".join(texts) == TONE_TEXT and len(texts) > 2
    assert all(len(text) <= 12 or " " not in text for text in texts), texts


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cue-chars", "30"], "--cue-chars shapes subtitle cues: add --format srt or --format vtt"),
        (["--format", "jsonl", "--cue-gap", "2"], "--cue-gap shapes subtitle cues"),
        (["--format", "vtt", "--cue-seconds", "0"], "--cue-seconds must be above 0, not 0"),
        (["--format", "srt", "--cue-chars", "-5"], "--cue-chars must be above 0, not -5"),
    ],
)
def test_cue_limits_are_checked_in_one_line(tmp_path, args, message):
    clip = tmp_path / "tones.wav"
    clip.write_bytes(wav_bytes(tone_words(TONE_TEXT)[0]))
    result = rtlab("transcribe", str(clip), "--backend", "test", *args)
    assert result.returncode != 0 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_subtitles_are_of_one_stream():
    result = rtlab("transcribe", "a.wav", "b.wav", "--backend", "test", "--format", "srt")
    assert result.returncode != 0 and "--format srt writes one stream's subtitles; give one FILE" in result.stderr


# -- rtlab calibrate --------------------------------------------------------------------------------


def _a_file_on_the_path(tmp):
    (tmp / "costs.json").write_text("")
    return tmp / "costs.json" / "x.json"


def _audio_as_out(tmp):
    (tmp / "clip.ogg").write_bytes(bytes(range(256)) * 4)
    return tmp / "clip.ogg"


def _calibrated_elsewhere(tmp):
    path = tmp / "costs.json"
    path.write_text(json.dumps({
        "rtlab_cost_model": 1, "hardware": {"platform": "another machine", "cpu_count": 64},
        "calibrations": [{"key": {"backend": "test", "options": {"model": "tones"}, "device": None},
                          "weights": {"calls": 0.001}}],
    }))  # fmt: skip
    return path


@pytest.mark.parametrize(
    "out, needle",
    [
        (_a_file_on_the_path, "costs.json is a file, not a folder; give a path in a folder"),
        (_audio_as_out, "clip.ogg is not a cost model (not UTF-8 text): give a file written by 'rtlab calibrate --out FILE'"),
        (_calibrated_elsewhere, "was calibrated on other hardware"),
    ],
    ids=["under-a-file", "not-text", "other-hardware"],
)
def test_calibrate_refuses_a_wrong_out_before_timing_anything(tmp_path, out, needle):
    # The audio cannot be decoded: an error about it would mean the timing had begun.
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(bytes(range(256)) * 20)
    target = out(tmp_path)
    before = target.read_bytes() if target.is_file() else None
    result = rtlab("calibrate", "--backend", "test", "--audio", str(garbage), "--out", str(target))
    _assert_one_line_error(result, needle)
    assert (target.read_bytes() if target.is_file() else None) == before


def test_a_calibration_saved_keeps_what_another_added_to_the_file_meanwhile(tmp_path):
    # `rtlab calibrate` reads its --out before the timing; another calibration into the same
    # file during the timing was then overwritten when this one saved.
    from click.testing import CliRunner

    from rtlab.cli import cli
    from rtlab.core.costs import load_cost_model
    from rtlab.eval.calibrate import cost_model_to_extend, save_calibration

    out, elsewhere = tmp_path / "costs.json", tmp_path / "other.json"
    read_before_timing = cost_model_to_extend(out)  # no file yet
    meanwhile = CliRunner().invoke(cli, ["calibrate", "--backend", "test", "--out", str(out)])
    assert meanwhile.exit_code == 0, meanwhile.output
    mine = CliRunner().invoke(cli, ["calibrate", "--backend", "test", "-b", "compute_rtf=0.0001", "--out", str(elsewhere)])
    assert mine.exit_code == 0, mine.output
    (calibration,) = load_cost_model(elsewhere).calibrations
    save_calibration(calibration, out, model=read_before_timing)
    assert len(load_cost_model(out).calibrations) == 2  # before: 1, the other one lost


def test_calibrate_reads_its_out_and_describes_the_machine_once(tmp_path, monkeypatch):
    # The --out cost model was read and checked before the timing and again when saving,
    # and the machine described (FFmpeg run for its version among it) each time.
    from collections import Counter

    from click.testing import CliRunner

    import rtlab.eval.calibrate as calibration
    import rtlab.eval.metrics as metrics
    from rtlab.cli import cli

    out = tmp_path / "costs.json"
    first = CliRunner().invoke(cli, ["calibrate", "--backend", "test", "--out", str(out)])
    assert first.exit_code == 0, first.output  # a cost model to extend
    calls: Counter[str] = Counter()

    def counted(function):
        def call(*args, **kwargs):
            calls[function.__name__] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(metrics, "environment_info", counted(metrics.environment_info))
    monkeypatch.setattr(calibration, "load_cost_model", counted(calibration.load_cost_model))
    result = CliRunner().invoke(cli, ["calibrate", "--backend", "test", "-b", "compute_rtf=0.0001", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert calls == {"environment_info": 1, "load_cost_model": 1}
    assert len(json.loads(out.read_text())["calibrations"]) == 2  # added to what the file held


@pytest.mark.parametrize("command", [("transcribe", "FILE"), ("calibrate",)])
def test_a_policy_refusing_the_backend_names_the_fix_as_a_flag(command, tone_wav):
    # The refusal names the fix as a configuration takes it ("use backend=NAME"); on the
    # command line the option is a flag. The test backend lacks AlignAtt's capability.
    args = [tone_wav if arg == "FILE" else arg for arg in command]
    result = rtlab(*args, "--backend", "test", "--policy", "alignatt")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "backend 'test' does not provide it" in error
    assert re.search(r": use --backend [\w-]+( or --backend [\w-]+)*$", error), error
    assert "backend=" not in error


@pytest.mark.parametrize("live", [False, True])
def test_the_live_display_writes_a_joining_word_on_to_the_word_before(live):
    import io

    from rtlab.cli.display import LiveText

    class Output(io.StringIO):
        def isatty(self) -> bool:
            return live

    out = Output()
    display = LiveText(stream=out, status=io.StringIO())
    display.event({"type": "commit", "words": [{"text": "der", "start": 0, "end": 0.3}, {"text": "Unabhängigkeit", "start": 0.3, "end": 1}]})
    display.event({"type": "commit", "words": [{"text": "serklärung", "start": 1, "end": 1.5, "joins": True}, {"text": "eine", "start": 1.5, "end": 2}]})
    assert display.line == "der Unabhängigkeitserklärung eine"
    if not live:
        assert out.getvalue() == "der Unabhängigkeitserklärung eine"
    else:  # a partial that goes on from the last committed word is drawn on to it
        display.event({"type": "partial", "text": "s Ziel", "joins": True})
        assert "eine\x1b[2ms Ziel" in out.getvalue().replace("\x1b[0m", "")
        display.event({"type": "partial", "text": "das Ziel"})
        assert "eine \x1b[2mdas Ziel" in out.getvalue().replace("\x1b[0m", "")
