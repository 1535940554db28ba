"""rtlab.testing.check_backend, the conformance kit plugin authors call from their tests:
it passes a backend that keeps the contract, and names each broken check of one that does not.

Every backend here has a name of its own: check_backend registers it for the duration of the
call, and a test checks that nothing stays registered afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtlab.backends import Backend
from rtlab.plugins import pm
from rtlab.registry import get_registry
from rtlab.testing import SPEECH_CLIP, ToneBackend, check_backend, tone_words, wav_bytes

TONE_TEXT = "alpha bravo charlie delta echo"


@pytest.fixture(scope="module")
def tones():
    """Tone-coded audio of TONE_TEXT and its words, for the tone backend."""
    audio, words = tone_words(TONE_TEXT)
    return audio, [word["text"] for word in words]


def failures(backend_class, **kwargs) -> str:
    """The AssertionError message of a check_backend call that must fail."""
    with pytest.raises(AssertionError) as raised:
        check_backend(backend_class, **kwargs)
    return str(raised.value)


def test_the_tone_backend_passes_every_check(tones):
    audio, words = tones
    report = check_backend(ToneBackend, audio=audio, expect=words)
    assert report.failed == []
    assert report.passed == [
        "registers as backend 'test' (plugin 'rtlab.testing')",
        "refuses an unknown option",
        "builds with its options",
        "loads, and loads again harmlessly",
        "says which languages it transcribes (a list of codes, or None)",
        "transcribes the clip",
        f"hears {', '.join(words)}",
        "transcribes 1 s of silence",
        "transcribes empty audio",
        "streams the clip through an AudioProcessor",
    ]
    assert str(report).startswith("ToneBackend: all 10 rtlab backend checks passed")


def test_a_batching_backend_is_checked_batched_against_alone(tones):
    audio, words = tones
    report = check_backend(ToneBackend, options={"max_batch": 4}, audio=audio, expect=words)
    assert report.passed[-1] == "gives a batch of passes the words of each pass alone"
    assert report.failed == []


class ShuffledBatch(ToneBackend):
    """Batches its passes, but hands each session the words of the next one."""

    name = "test-shuffled-batch"

    def transcribe_batch(self, requests):
        words = super().transcribe_batch(requests)
        return words[1:] + words[:1]


def test_a_batch_that_mixes_up_sessions_fails_naming_the_request(tones):
    audio, words = tones
    message = failures(ShuffledBatch, options={"max_batch": 4}, audio=audio, expect=words)
    assert "gives a batch of passes the words of each pass alone" in message
    assert "request 0" in message and "batched gave" in message


def test_a_clip_can_be_a_file_and_options_are_passed(tones, tmp_path):
    audio, words = tones
    path = tmp_path / "tones.wav"
    path.write_bytes(wav_bytes(audio))
    report = check_backend(ToneBackend, options={"model": "tones-2"}, audio=path, expect=words[:2])
    assert report.failed == []


def test_the_bundled_speech_clip_is_shipped_in_the_package():
    assert SPEECH_CLIP.is_file() and SPEECH_CLIP.parent.name == "data"
    assert check_backend(ToneBackend).failed == []  # tones heard in speech are still valid words


# -- broken backends: the message names the broken check ---------------------------------------


class OutOfOrder(Backend):
    name = "conformance-out-of-order"

    def transcribe(self, audio, *, prompt="", language=None):
        seconds = int(len(audio) / 16_000)
        return [{"text": "word", "start": s, "end": s + 0.5} for s in reversed(range(seconds))]


class NoEnd(Backend):
    name = "conformance-no-end"

    def transcribe(self, audio, *, prompt="", language=None):
        return [{"text": "word", "start": 0.0}] if len(audio) else []


class CrashesOnEmptyAudio(Backend):
    name = "conformance-crashes-on-empty"

    def transcribe(self, audio, *, prompt="", language=None):
        peak = float(np.max(np.abs(audio)))  # ValueError on an empty array
        return [{"text": "loud" if peak > 0.1 else "quiet", "start": 0.0, "end": 0.5}]


class NotABackend:
    name = "conformance-not-a-backend"

    def transcribe(self, audio, *, prompt="", language=None):
        return []


class Nameless(Backend):
    def transcribe(self, audio, *, prompt="", language=None):
        return []


class TakesTheTestName(ToneBackend):
    """A subclass that forgot to rename itself: "test" belongs to rtlab.testing."""


class LoadsOnce(Backend):
    name = "conformance-loads-once"

    def load(self):
        if getattr(self, "model", None) is not None:
            raise RuntimeError("already loaded")
        self.model = "weights"

    def transcribe(self, audio, *, prompt="", language=None):
        return []


class WordsPastTheEnd(Backend):
    name = "conformance-words-past-the-end"

    def transcribe(self, audio, *, prompt="", language=None):
        end = len(audio) / 16_000 + 5.0
        return [{"text": "ghost", "start": end - 0.5, "end": end}]


class ReturnsText(Backend):
    name = "conformance-returns-text"

    def transcribe(self, audio, *, prompt="", language=None):
        return "hello world"


class ReturnsWordStrings(Backend):
    name = "conformance-returns-word-strings"

    def transcribe(self, audio, *, prompt="", language=None):
        return ["hello", "world"] if len(audio) else []


def test_words_that_are_strings_are_told_to_be_dicts():
    message = failures(ReturnsWordStrings)
    assert "FAILED transcribes the clip: word 0 'hello' is a str, not a dict {'text': str, 'start': s, 'end': s}" \
        in message


class ListsNoLanguageItDefaultsTo(ReturnsText):
    name = "conformance-languages"

    def transcribe(self, audio, *, prompt="", language=None):
        return []

    def default_language(self):
        return "en"

    def languages(self):
        return ["de", "fr"]


def test_a_default_language_outside_languages_fails_naming_both():
    message = failures(ListsNoLanguageItDefaultsTo)
    assert "FAILED says which languages it transcribes (a list of codes, or None): default_language() is 'en', " \
           "which languages() does not list (de, fr)" in message


def test_words_out_of_time_order_fail_the_transcript_check():
    message = failures(OutOfOrder)
    assert "FAILED transcribes the clip: word 1 " in message
    assert "words must be in time order" in message
    assert "(and " in message  # long lists of problems are cut short


def test_a_word_without_an_end_fails_naming_the_missing_key():
    message = failures(NoEnd)
    assert "FAILED transcribes the clip: word 0 {'text': 'word', 'start': 0.0} has no 'end'" in message
    assert "FAILED transcribes 1 s of silence:" in message
    assert "FAILED streams the clip through an AudioProcessor: the stream did not end with a summary" in message


def test_a_backend_that_crashes_on_empty_audio_fails_only_that_check():
    message = failures(CrashesOnEmptyAudio)
    assert message.startswith("CrashesOnEmptyAudio: 1 of 9 rtlab backend checks failed")
    assert "FAILED transcribes empty audio: raised ValueError:" in message
    assert "passed transcribes 1 s of silence" in message


def test_a_class_that_is_not_a_backend_fails_registration_with_the_users_message():
    message = failures(NotABackend)
    assert message.startswith("NotABackend: 1 of 1 rtlab backend checks failed")
    assert "FAILED registers as a backend: plugin 'check_backend(NotABackend)' registered backend" in message
    assert "does not subclass rtlab.backends.Backend: write `class NotABackend(rtlab.Backend)`" in message


class ForgotTranscribe(Backend):
    name = "conformance-forgot-transcribe"


def test_a_backend_without_transcribe_fails_registration_naming_the_method():
    message = failures(ForgotTranscribe)
    assert message.startswith("ForgotTranscribe: 1 of 1 rtlab backend checks failed")
    assert "FAILED registers as a backend: " in message
    assert "does not define transcribe" in message and "define `transcribe`" in message


def test_a_nameless_backend_fails_registration():
    assert "registers as a backend: " in failures(Nameless) and "whose name is ''" in failures(Nameless)


def test_a_name_already_taken_fails_registration():
    message = failures(TakesTheTestName)
    assert "registers as a backend: backend 'test' from plugin 'check_backend(TakesTheTestName)' refused" in message
    assert "plugin 'rtlab.testing' already registered that name" in message


def test_a_second_load_that_fails_is_reported():
    message = failures(LoadsOnce)
    assert "FAILED loads, and loads again harmlessly: raised RuntimeError: already loaded" in message
    assert "transcribes the clip" not in message  # nothing to transcribe with


def test_words_outside_the_audio_and_a_non_list_are_refused():
    assert "lies outside the audio (0 to 6.13 s)" in failures(WordsPastTheEnd)
    assert "transcribes the clip: returned str, not a list of words" in failures(ReturnsText)


def test_an_unknown_option_and_a_missing_expected_word_are_reported(tones):
    audio, words = tones
    message = failures(ToneBackend, options={"wrod": 1}, audio=audio)
    assert (
        "FAILED builds with its options: raised InvalidOption: backend 'test' (plugin 'rtlab.testing') "
        "does not accept option 'wrod'; it accepts: batch_wait_ms, compute_rtf, fail_after, max_batch, model"
    ) in message
    message = failures(ToneBackend, audio=audio, expect=["alpha", "zulu"])
    assert "FAILED hears alpha, zulu: 'zulu' not in the transcript 'alpha bravo charlie delta echo'" in message


def test_every_failed_check_is_listed_in_one_error():
    message = failures(NoEnd)
    assert message.count("FAILED") == 3 and message.count("passed") == 6


def test_nothing_stays_registered_after_a_check():
    before = {pm.get_name(p) for p in pm.get_plugins()}
    for backend_class in (OutOfOrder, NotABackend, TakesTheTestName):
        with pytest.raises(AssertionError):
            check_backend(backend_class)
    assert {pm.get_name(p) for p in pm.get_plugins()} == before
    registry = get_registry()
    assert not [name for name in registry.names("backend") if name.startswith("conformance-")]
    assert registry.rejected == [] and registry.get("backend", "test") is ToneBackend


async def test_it_also_runs_from_an_async_test(tones):
    audio, words = tones
    assert check_backend(ToneBackend, audio=audio, expect=words).failed == []


# -- a real backend --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_faster_whisper_backend_passes_every_check():
    plugin = pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    # Words tiny.en hears in the synthetic clip whichever kernels CTranslate2 computes with
    # ("the quick round-fark jump over the lazy nog" on some CPUs, "... the lady nog" on
    # others, "... stump over ..." on a third; see tests/conftest.py).
    report = check_backend(plugin.FasterWhisperBackend, expect=["quick", "sells", "sea", "shore"])
    assert report.failed == [] and len(report.passed) == 10
