"""Promises of rtlab.eval.corpus: each layout loads, bad input fails clearly, concatenation adds up."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from rtlab.decoders import find_ffmpeg
from rtlab.eval.corpus import Utterance, audio_files, concatenate, load_corpus, shared_speech_dir
from rtlab.errors import DecoderError, FFmpegNotFound


def _write_wav(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> Path:
    """A mono 16-bit sine tone."""
    t = np.arange(round(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        return wav.getnframes() / wav.getframerate()


def _has_ffmpeg() -> bool:
    try:
        find_ffmpeg()
    except FFmpegNotFound:
        return False
    return True


needs_ffmpeg = pytest.mark.skipif(not _has_ffmpeg(), reason="no ffmpeg binary available")


# --------------------------------------------------------------------------- folder layout


def test_audio_folder_pairs_each_clip_with_its_txt_sorted_by_name(tmp_path):
    for name, text in [("b", "second clip"), ("a", "first\nclip ")]:
        _write_wav(tmp_path / f"{name}.wav", 0.1)
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored")
    utterances = load_corpus(tmp_path, language="en")
    assert [u.id for u in utterances] == ["a", "b"]
    assert utterances[0].text == "first clip"
    assert utterances[0].audio == tmp_path / "a.wav"
    assert utterances[0].language == "en"
    assert utterances[0].segments is None


def test_audio_files_are_a_folders_audio_by_name_whatever_the_suffixs_case(tmp_path):
    for name in ("b.OGG", "a.wav", "c.opus", "a.txt", "notes.md"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.ogg").mkdir()  # a folder, whatever its name
    assert [p.name for p in audio_files(tmp_path)] == ["a.wav", "b.OGG", "c.opus"]


def test_audio_without_reference_is_skipped_with_a_warning(tmp_path):
    _write_wav(tmp_path / "a.wav", 0.1)
    (tmp_path / "a.txt").write_text("hello")
    _write_wav(tmp_path / "orphan.wav", 0.1)
    with pytest.warns(UserWarning, match="orphan.wav"):
        utterances = load_corpus(tmp_path)
    assert [u.id for u in utterances] == ["a"]


def test_folder_without_a_corpus_names_folder_and_layout(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="no utterances found in .*same-name .txt"):
        load_corpus(tmp_path)


def test_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_corpus(tmp_path / "does-not-exist")


# --------------------------------------------------------------------------- LibriSpeech layout


def test_librispeech_layout_is_found_recursively(tmp_path):
    chapter = tmp_path / "test-clean" / "1089" / "134686"
    chapter.mkdir(parents=True)
    (chapter / "1089-134686.trans.txt").write_text(
        "1089-134686-0000 HE HOPED THERE WOULD BE STEW\n"
        "1089-134686-0001 STUFF IT INTO YOU\n"
        "1089-134686-0002 NO AUDIO FOR THIS ONE\n",
        encoding="utf-8",
    )
    _write_wav(chapter / "1089-134686-0000.wav", 0.1)
    (chapter / "1089-134686-0001.flac").write_bytes(b"")  # only the name matters for loading
    with pytest.warns(UserWarning, match="1089-134686-0002"):
        utterances = load_corpus(tmp_path)
    assert [u.id for u in utterances] == ["1089-134686-0000", "1089-134686-0001"]
    assert utterances[0].text == "HE HOPED THERE WOULD BE STEW"
    assert utterances[1].audio.suffix == ".flac"


def test_malformed_librispeech_line_names_file_and_line(tmp_path):
    (tmp_path / "x.trans.txt").write_text("ok-0 fine\nlonely\n")
    _write_wav(tmp_path / "ok-0.wav", 0.1)
    with pytest.raises(ValueError, match=r"x\.trans\.txt:2"):
        load_corpus(tmp_path)


# --------------------------------------------------------------------------- JSONL manifest


def test_jsonl_manifest_resolves_relative_and_absolute_audio(tmp_path):
    (tmp_path / "clips").mkdir()
    rel = _write_wav(tmp_path / "clips" / "one.wav", 0.1)
    absolute = _write_wav(tmp_path / "two.wav", 0.1)
    manifest = tmp_path / "set.jsonl"
    manifest.write_text(
        json.dumps({"audio": "clips/one.wav", "text": "bonjour", "language": "fr"})
        + "\n\n"
        + json.dumps({"audio": str(absolute), "text": "hello", "id": "greeting"})
        + "\n",
        encoding="utf-8",
    )
    utterances = load_corpus(manifest, language="en")
    assert [(u.id, u.audio, u.text, u.language) for u in utterances] == [
        ("one", rel, "bonjour", "fr"),
        ("greeting", absolute, "hello", "en"),
    ]


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"audio": "one.wav"}', "'text'"),
        ('{"audio": "missing.wav", "text": "x"}', "audio file not found"),
        ('{"audio": "one.wav", "text": "again"}', "duplicate id 'one'"),
    ],
)
def test_bad_manifest_line_is_reported_with_its_number(tmp_path, second_line, message):
    _write_wav(tmp_path / "one.wav", 0.1)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "one.wav", "text": "fine"}\n' + second_line + "\n")
    with pytest.raises(ValueError, match=rf"m\.jsonl:2: .*{message}"):
        load_corpus(manifest)


@pytest.mark.parametrize(("name", "expected"), [("m.jsonl", '"audio"'), ("x.trans.txt", "UTTID TEXT")])
def test_a_corpus_file_without_an_utterance_names_what_it_should_hold(tmp_path, name, expected):
    corpus = tmp_path / name
    corpus.write_text("\n\n", encoding="utf-8")  # an empty list, not a corpus of nothing to score
    with pytest.raises(ValueError, match=rf"no utterances found in .*{name}: expected .*{expected}"):
        load_corpus(corpus)


@pytest.mark.parametrize("layout", ["folder", "manifest", "librispeech"])
def test_a_reference_that_is_not_utf8_is_named(tmp_path, layout):
    _write_wav(tmp_path / "one.wav", 0.1)
    latin1 = "café".encode("latin-1")
    text_file, corpus = {
        "folder": (tmp_path / "one.txt", tmp_path),
        "manifest": (tmp_path / "m.jsonl", tmp_path / "m.jsonl"),
        "librispeech": (tmp_path / "x.trans.txt", tmp_path),
    }[layout]
    prefix = {"folder": b"", "manifest": b'{"audio": "one.wav", "text": "', "librispeech": b"one "}[layout]
    text_file.write_bytes(prefix + latin1 + (b'"}' if layout == "manifest" else b"") + b"\n")
    with pytest.raises(ValueError, match=rf"{text_file.name} is not UTF-8 text .*: save it as UTF-8"):
        load_corpus(corpus)


# --------------------------------------------------------------------------- concatenation


@needs_ffmpeg
def test_concatenate_sums_durations_and_joins_texts(tmp_path):
    first = Utterance("a", _write_wav(tmp_path / "a.wav", 0.5), "hello there", "en")
    # a different sample rate checks that every clip is resampled to 16 kHz
    second = Utterance("b", _write_wav(tmp_path / "b.wav", 0.75, rate=8000), "general", "en")
    joined = concatenate([first, second], tmp_path / "out" / "long.wav", gap_seconds=0.25)
    assert joined.id == "long"
    assert joined.text == "hello there general"
    assert joined.language == "en"
    assert _wav_seconds(joined.audio) == pytest.approx(0.5 + 0.25 + 0.75, abs=0.01)
    assert joined.segments is not None
    (s0, e0, t0), (s1, e1, t1) = joined.segments
    assert (s0, t0, t1) == (0.0, "hello there", "general")
    assert e0 == pytest.approx(0.5, abs=0.01)
    assert s1 == pytest.approx(0.75, abs=0.01)
    assert e1 == pytest.approx(1.5, abs=0.01)


@needs_ffmpeg
def test_concatenate_reports_undecodable_audio(tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"OggS" + bytes(range(256)) * 40)  # FFmpeg says two lines: CRC mismatch, end of file
    with pytest.raises(DecoderError, match="could not decode .*broken.wav") as raised:
        concatenate([Utterance("x", broken, "x")], tmp_path / "out.wav")
    assert "\n" not in str(raised.value) and " | " in str(raised.value)


def test_concatenate_leaves_no_half_written_stream(tmp_path):
    good = Utterance("a", _write_wav(tmp_path / "a.wav", 0.5), "hello")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"OggS" + bytes(range(256)) * 40)
    out = tmp_path / "out"
    with pytest.raises(DecoderError):
        concatenate([good, Utterance("x", broken, "x")], out / "long.wav")
    assert list(out.iterdir()) == []


def test_concatenate_needs_utterances(tmp_path):
    with pytest.raises(ValueError):
        concatenate([], tmp_path / "out.wav")


# --------------------------------------------------------------------------- shared data


def test_shared_speech_dir_follows_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("RTLAB_SPEECH_DIR", str(tmp_path))
    assert shared_speech_dir() == tmp_path
    monkeypatch.setenv("RTLAB_SPEECH_DIR", str(tmp_path / "absent"))
    assert shared_speech_dir() is None


def test_shared_speech_folder_loads_six_utterances(monkeypatch):
    monkeypatch.delenv("RTLAB_SPEECH_DIR", raising=False)
    folder = shared_speech_dir()
    if folder is None:
        pytest.skip("shared speech data (../shared/data/speech/en) is not present")
    utterances = load_corpus(folder, language="en")
    assert len(utterances) == 6
    assert all(u.audio.is_file() and u.text for u in utterances)
    ids = [u.id for u in utterances]
    assert ids == sorted(ids)
    assert "librispeech-1089-134686-0001" in ids
