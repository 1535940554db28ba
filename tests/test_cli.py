"""``rtlab transcribe`` as a user runs it: a real subprocess, real FFmpeg."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
