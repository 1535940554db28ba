"""rtlab.testing.check_policy, the conformance kit for authors of streaming policies: it
passes rtlab's own policies and names each broken check of a policy that breaks the contract
(words committed twice, a buffer that grows without bound, sessions that share state, a
capability not enforced, an option not refused).

Every policy here has a name of its own: check_policy registers it for the duration of the
call, and a test checks that nothing stays registered afterwards.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rtlab.vad
from rtlab.errors import InvalidOption
from rtlab.plugins import pm
from rtlab.policies import Policy, Step
from rtlab.policies.alignatt import AlignAtt
from rtlab.policies.local_agreement import LocalAgreement
from rtlab.registry import get_registry
from rtlab.testing import ToneVAD, check_policy, tone_vad, tone_words


def failures(policy_class, **kwargs) -> list[str]:
    """The failed checks of a check_policy call that must fail."""
    with pytest.raises(AssertionError) as raised:
        check_policy(policy_class, **kwargs)
    return [line.removeprefix("  FAILED ") for line in str(raised.value).splitlines() if line.startswith("  FAILED ")]


class WholeClip(Policy):
    """Keeps every sample and transcribes it once, at the end: right words, unbounded buffer."""

    name = "whole-clip"

    def __init__(self, backend, *, language=None, min_chunk: float = 1.0) -> None:
        super().__init__(backend, language=language)
        self.min_chunk = min_chunk
        self.audio = np.zeros(0, np.float32)

    def insert_audio(self, pcm: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, pcm])

    def process_iter(self) -> Step:
        return Step()

    def finish(self) -> Step:
        return Step(committed=list(self.backend.transcribe(self.audio, prompt="", language=self.language)))

    @property
    def buffered_seconds(self) -> float:
        return len(self.audio) / 16000


def test_rtlabs_policies_pass_every_check():
    report = check_policy(LocalAgreement)
    assert report.failed == []
    assert report.passed == [
        "registers as policy 'local-agreement' (plugin 'rtlab.policies.plugin')",
        "refuses an unknown option",
        "builds with its options on backend 'test'",
        "returns a Step from process_iter and finish",
        "commits every word of alpha ... hotel, once each",
        "commits every word of one ... nine, once each",
        "holds at most 35 s of audio over a 90 s stream",
        "keeps two sessions at once apart",
        # Its vad option, left off here, is checked too, with a tone VAD in Silero's place.
        "with vad=true: builds with its options on backend 'test'",
        "with vad=true: returns a Step from process_iter and finish",
        "with vad=true: commits every word of alpha ... hotel, once each",
        "with vad=true: commits every word of one ... nine, once each",
        "with vad=true: commits every word of two sentences 1.5 s apart, once each",
        "with vad=true: holds at most 35 s of audio over a 90 s stream",
        "with vad=true: keeps two sessions at once apart",
    ]
    assert str(report).startswith("LocalAgreement: all 15 rtlab policy checks passed\n")
    aligned = check_policy(AlignAtt, options={"min_chunk": 0.6})
    assert "refuses backend 'test', which lacks incremental-decoding" in aligned.passed
    assert "builds with its options on backend 'test-attention'" in aligned.passed
    assert "with vad=true: commits every word of two sentences 1.5 s apart, once each" in aligned.passed
    assert aligned.policy == "AlignAtt" and aligned.failed == [] and aligned.unchecked == []


class ReturnsCommittedWords(WholeClip):
    """Returns the committed words themselves, not a Step."""

    name = "returns-words"

    def finish(self):
        return super().finish().committed


def test_a_policy_that_returns_words_instead_of_a_step_is_told_to_return_a_step():
    failed = failures(ReturnsCommittedWords)
    assert "returns a Step from process_iter and finish: finish() returned list, not a Step: " \
           "return rtlab.policies.Step(committed=[...], partial=[...])" in failed


def test_a_buffer_that_grows_without_bound_fails_with_what_it_held():
    failed = failures(WholeClip)
    assert len(failed) == 1
    assert failed[0].startswith("holds at most 35 s of audio over a 90 s stream: it held 9")
    # The bound is the caller's to set: a policy for long windows can ask for more.
    assert check_policy(WholeClip, max_buffered_seconds=120).failed == []


class Repeating(WholeClip):
    """Commits what the whole buffer holds at every pass: each word again and again."""

    name = "repeating"

    def process_iter(self) -> Step:
        return Step(committed=list(self.backend.transcribe(self.audio, prompt="", language=self.language)))


def test_words_committed_twice_fail_naming_the_word():
    failed = failures(Repeating, max_buffered_seconds=120)
    assert [f.split(":")[0] for f in failed] == [
        "commits every word of alpha ... hotel, once each",
        "commits every word of one ... nine, once each",
        "keeps two sessions at once apart",
    ]
    assert "'alpha', 'start': 0.3" in failed[0] and "starts before the word before it" in failed[0]


class Overlapping(WholeClip):
    """Commits each word at once, and again, later and moved, when the next pass hears it."""

    name = "overlapping"

    def __init__(self, backend, *, language=None, min_chunk: float = 1.0) -> None:
        super().__init__(backend, language=language, min_chunk=min_chunk)
        self.done = 0

    def process_iter(self) -> Step:
        words = list(self.backend.transcribe(self.audio, prompt="", language=self.language))
        again = [dict(w, start=w["start"] + 0.1, end=w["end"] + 0.1) for w in words[max(self.done - 1, 0) : self.done]]
        new, self.done = words[self.done :], len(words)
        return Step(committed=again + new)

    def finish(self) -> Step:
        return Step()


def test_a_word_committed_again_over_the_same_audio_fails_naming_both():
    failed = failures(Overlapping, max_buffered_seconds=120)
    assert failed[0].startswith("commits every word of alpha ... hotel, once each: committed ")
    assert "over the audio of" in failed[0] and "committed before it" in failed[0]


class Shared(WholeClip):
    """Keeps its audio on the class: every session hears every other session's audio."""

    name = "shared"
    audio = np.zeros(0, np.float32)

    def __init__(self, backend, *, language=None, min_chunk: float = 1.0) -> None:
        Policy.__init__(self, backend, language=language)
        self.min_chunk = min_chunk

    def insert_audio(self, pcm: np.ndarray) -> None:
        Shared.audio = np.concatenate([Shared.audio[-16000 * 20 :], pcm])

    def finish(self) -> Step:
        words = Step(committed=list(self.backend.transcribe(Shared.audio, prompt="", language=self.language)))
        Shared.audio = np.zeros(0, np.float32)
        return words


def test_sessions_that_share_state_fail_the_sessions_check():
    failed = failures(Shared)
    assert [f.split(":")[0] for f in failed] == ["keeps two sessions at once apart"]
    assert "lies outside the audio" in failed[0]  # the other session's words


class Unenforced(WholeClip):
    """Requires incremental decoding and leaves the check to rtlab."""

    name = "unenforced"
    requires = ("incremental-decoding",)


class Enforced(Unenforced):
    name = "enforced"

    def __init__(self, backend, *, language=None, min_chunk: float = 1.0) -> None:
        if "incremental-decoding" not in getattr(backend, "capabilities", ()):
            raise InvalidOption("policy 'enforced' needs capability 'incremental-decoding'")
        super().__init__(backend, language=language, min_chunk=min_chunk)


def test_a_backend_without_a_required_capability_is_refused_as_rtlab_builds_the_policy():
    # rtlab refuses the backend before the policy's __init__ (Registry.create, since 48fd23d):
    # a policy that leaves the check to rtlab passes. Before, check_policy built the class
    # itself and failed it: "it was built on a backend without the capabilities it requires".
    for policy in (Unenforced, Enforced):
        report = check_policy(policy, max_buffered_seconds=120)
        assert "refuses backend 'test', which lacks incremental-decoding" in report.passed
        assert "builds with its options on backend 'test-attention'" in report.passed


class NeedsWhatNoToneBackendHas(WholeClip):
    name = "needs-a-gpu"
    requires = ("cuda-graphs",)


def test_a_capability_no_tone_backend_has_is_reported():
    assert failures(NeedsWhatNoToneBackendHas) == [
        "streams on a tone backend: none of test, test-attention provides cuda-graphs"
    ]


def test_options_are_passed_and_a_bad_one_fails_the_build():
    assert check_policy(LocalAgreement, options={"min_chunk": 0.5}).failed == []
    failed = failures(LocalAgreement, options={"min_chunk": -1})
    assert len(failed) == 1  # nothing streams without a policy
    assert failed[0].startswith("builds with its options on backend 'test': raised InvalidOption")


def test_nothing_stays_registered_after_a_check():
    before = set(get_registry(refresh=True).names("policy"))
    check_policy(WholeClip, max_buffered_seconds=120)
    failures(Repeating)
    assert set(get_registry(refresh=True).names("policy")) == before
    assert not [name for name, _ in pm.list_name_plugin() if name.startswith("check_policy(")]


async def test_it_also_runs_from_an_async_test():
    assert check_policy(LocalAgreement).failed == []


# --------------------------------------------------------------------------- the vad option


def test_vad_true_is_checked_on_tones_with_a_tone_vad_standing_in_for_silero():
    silero = rtlab.vad.SileroVAD
    # Before, Silero heard no speech in the tones and every word was dropped: "committed ''".
    report = check_policy(LocalAgreement, options={"vad": True, "vad_silence_ms": 800})
    assert report.failed == [] and report.unchecked == []
    assert "commits every word of two sentences 1.8 s apart, once each" in report.passed
    assert not [name for name in report.passed if name.startswith("with vad=true")]  # already on
    assert rtlab.vad.SileroVAD is silero  # the stand-in is gone afterwards


def test_the_tone_vad_hears_tones_as_speech_and_silence_as_silence():
    audio, words = tone_words("alpha bravo")
    with tone_vad() as made:
        activity = rtlab.vad.VoiceActivity()
        activity.process(audio)
    assert [type(vad) for vad in made] == [ToneVAD] and made.frames == len(audio) // rtlab.vad.FRAME
    for word in words:
        assert activity.speech_in(word["start"] + 0.05, word["end"] - 0.05)
    assert not activity.speech_in(0.0, words[0]["start"] - 0.05)
    assert not activity.speech_in(words[0]["end"] + 0.05, words[1]["start"] - 0.05)


class LosesWordsAtPauses(LocalAgreement):
    """LocalAgreement whose voice-activity path drops what it commits when an utterance ends."""

    name = "loses-words-at-pauses"

    def end_utterance(self, pause):
        super().end_utterance(pause)
        return Step(committed=[], partial=[])


def test_words_lost_where_the_vad_ends_an_utterance_fail_though_the_options_leave_vad_off():
    # Before, the vad path was never run: "all 8 rtlab policy checks passed".
    assert failures(LosesWordsAtPauses) == [
        "with vad=true: commits every word of two sentences 1.5 s apart, once each: committed "
        "'alpha bravo charlie delta echo one two three four five six' for "
        "'alpha bravo charlie delta echo foxtrot golf hotel one two three four five six seven eight nine'"
    ]


class OwnDetector(WholeClip):
    """A vad option with a detector of its own, which (as Silero does on tones) hears no speech."""

    name = "own-detector"

    def __init__(self, backend, *, language=None, min_chunk: float = 1.0, vad: bool = False) -> None:
        super().__init__(backend, language=language, min_chunk=min_chunk)
        self.vad = vad

    def finish(self) -> Step:
        return Step() if self.vad else super().finish()


def test_a_vad_path_the_tone_vad_cannot_reach_is_reported_not_checked_instead_of_passing_or_failing():
    with pytest.warns(UserWarning, match=r"check_policy\(OwnDetector\): not checked: its voice-activity path"):
        report = check_policy(OwnDetector, max_buffered_seconds=120)
    assert report.failed == [] and not [name for name in report.passed if "vad" in name]
    assert report.unchecked == [
        "its voice-activity path (vad=true): it never asked rtlab.vad's detector, where check_policy puts a "
        "tone VAD in Silero VAD's place (Silero hears no speech in tones)"
    ]
    assert str(report).startswith("OwnDetector: all 8 rtlab policy checks passed; 1 part not checked\n")
    assert "\n  NOT CHECKED its voice-activity path (vad=true)" in str(report)
    # Asked for, vad=true is checked as given (its words are lost), and the report says why.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(AssertionError) as raised:
            check_policy(OwnDetector, options={"vad": True}, max_buffered_seconds=120)
    assert "FAILED commits every word of alpha ... hotel, once each: committed ''" in str(raised.value)
    assert "NOT CHECKED its voice-activity path (vad=true)" in str(raised.value)
