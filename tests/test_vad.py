"""Voice activity (rtlab.vad): Silero VAD on a stream, as it arrives."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="voice-activity detection needs onnxruntime (installed with faster-whisper)")
pytest.importorskip("faster_whisper", reason="Silero VAD's model ships with faster-whisper")

from rtlab.decoders.files import decode_audio  # noqa: E402
from rtlab.vad import FRAME, SileroVAD, VoiceActivity  # noqa: E402

SR = 16_000


@pytest.fixture(scope="module")
def speech(data_dir) -> np.ndarray:
    return decode_audio(data_dir / "fox.ogg")


def test_pieces_of_any_size_give_the_probabilities_of_the_whole(speech):
    whole = SileroVAD().process(speech)
    vad = SileroVAD()
    pieces = [vad.process(speech[i : i + 777]) for i in range(0, len(speech), 777)]
    assert np.array_equal(np.concatenate(pieces), whole)
    assert len(whole) == len(speech) // FRAME


def test_speech_is_speech_and_silence_and_a_tone_are_not(speech):
    t = np.arange(3 * SR) / SR
    probabilities = {
        "speech": SileroVAD().process(speech),
        "silence": SileroVAD().process(np.zeros(3 * SR, np.float32)),
        "tone": SileroVAD().process((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)),
    }
    assert (probabilities["speech"] >= 0.5).mean() > 0.5
    assert (probabilities["silence"] >= 0.5).sum() == 0
    assert (probabilities["tone"] >= 0.5).mean() < 0.1


def test_a_pause_after_speech_ends_the_utterance(speech):
    activity = VoiceActivity(min_silence_ms=500)
    assert activity.utterance_ended() is None and not activity.heard_speech
    activity.process(np.zeros(SR, np.float32))
    assert activity.utterance_ended() is None and activity.silent_since() is None  # no speech yet
    activity.process(speech)
    assert activity.heard_speech
    ended_at = None
    while ended_at is None:
        assert activity.seconds < 1 + len(speech) / SR + 2, "two seconds of silence and no end"
        silent = activity.silent_since()
        pause = activity.utterance_ended()
        if pause is not None:
            ended_at = silent
        else:
            assert silent < 0.5 + FRAME / SR
        activity.process(np.zeros(FRAME, np.float32))
    assert 0.5 <= ended_at < 0.5 + FRAME / SR  # exactly when the pause reaches 500 ms
    assert 1.0 < pause.start <= 1.0 + len(speech) / SR and pause.end == pytest.approx(activity.seconds - FRAME / SR)


def test_reset_starts_a_new_stream(speech):
    vad = SileroVAD()
    first = vad.process(speech)
    vad.reset()
    assert np.array_equal(vad.process(speech), first)


def test_speech_in_says_whether_a_span_held_speech_and_forgets_what_it_is_told_to(speech):
    activity = VoiceActivity()
    activity.process(np.zeros(SR, np.float32))
    activity.process(speech)
    activity.process(np.zeros(2 * SR, np.float32))
    end = 1 + len(speech) / SR
    assert activity.speech_in(0.0, 0.9) is False
    assert activity.speech_in(1.5, 3.0) is True
    assert activity.speech_in(end + 0.5, end + 1.5) is False
    assert activity.speech_in(end + 3.0, end + 4.0) is None, "not heard yet"
    activity.forget_before(end)
    assert activity.speech_in(1.5, 3.0) is None, "forgotten"
    assert activity.speech_in(end + 0.5, end + 1.5) is False
    assert len(activity._flags) == activity.frames - activity._first_flag


def test_first_speech_after_finds_where_the_next_speech_starts(speech):
    # Real Silero on the fox clip after 1 s of silence, twice, 2 s apart.
    activity = VoiceActivity()
    gap = np.zeros(2 * SR, np.float32)
    for piece in (np.zeros(SR, np.float32), speech, gap, speech, gap):
        activity.process(piece)
    first = activity.first_speech_after(0.0)
    assert first is not None and 1.0 <= first < 2.0 and activity.speech_in(0.0, first) is False
    second_start = 1 + len(speech) / SR + 2
    second = activity.first_speech_after(second_start - 1.0)
    assert second is not None and second_start <= second < second_start + 1.0
    assert activity.speech_in(second_start - 1.0, second) is False
    assert activity.first_speech_after(activity.seconds - 1.0) is None, "nobody spoke since"
    activity.forget_before(second_start)
    assert activity.first_speech_after(0.0) == second, "what was forgotten is not searched"


def test_words_that_lead_into_speech_count_as_said_and_words_apart_from_it_do_not(monkeypatch):
    from rtlab.policies.vac import VoiceActivityController

    controller = VoiceActivityController()
    # Silero flags speech only from 1.0 s to 2.0 s: a soft start it trusted late.
    monkeypatch.setattr(controller, "heard_in_speech", lambda start, end: 1.0 <= start < 2.0)
    spans = [
        (0.1, 0.3),  # apart from the speech (0.5 s before the next word): not said
        (0.8, 0.93),  # "to", leading into "the" (0.02 s before it)
        (0.95, 1.045),  # "the", leading into "north" (0.005 s before it)
        (1.05, 1.4),  # "north", in speech
        (2.5, 2.8),  # after the speech: lead_gap rescues only words before speech
    ]
    assert controller.words_in_speech(spans) == [False, True, True, True, False]
    assert controller.words_in_speech(spans, lead_gap=0.01) == [False, False, True, True, False]


def quiet_after_loud(speech: np.ndarray) -> tuple[np.ndarray, float]:
    """The clip three times, two seconds of silence, the clip at 1% of its level; and the
    second at which the quiet clip starts."""
    start = 3 * len(speech) + 2 * SR
    audio = np.concatenate([speech, speech, speech, np.zeros(2 * SR, np.float32), 0.01 * speech])
    return audio.astype(np.float32), start / SR


def test_a_quiet_speaker_after_a_pause_is_heard_after_a_loud_one(speech):
    # Silero's state carries what it heard: after the loud clips, the same words at 1% of
    # their level are not speech to it (2% of their frames), though a fresh state hears
    # them (85%). The pause resets the state.
    audio, start = quiet_after_loud(speech)
    activity = VoiceActivity()
    activity.process(audio)
    quiet = [activity.speech_in(t, t + 0.1) for t in np.arange(start, start + len(speech) / SR - 0.1, 0.1)]
    assert activity.resets >= 1
    assert np.mean(quiet) > 0.5
    fresh = VoiceActivity()
    fresh.process(np.concatenate([np.zeros(2 * SR, np.float32), 0.01 * speech]).astype(np.float32))
    heard_fresh = [fresh.speech_in(t, t + 0.1) for t in np.arange(2.0, 2.0 + len(speech) / SR - 0.1, 0.1)]
    assert abs(np.mean(quiet) - np.mean(heard_fresh)) < 0.1


def test_voice_activity_does_not_depend_on_how_the_stream_is_cut(speech):
    audio, _ = quiet_after_loud(speech)
    whole, pieces = VoiceActivity(), VoiceActivity()
    whole.process(audio)
    for i in range(0, len(audio), 777):
        pieces.process(audio[i : i + 777])
    spans = np.arange(0, len(audio) / SR - 0.1, 0.1)
    assert whole.resets == pieces.resets >= 1 and whole.speech_frames == pieces.speech_frames
    assert [whole.speech_in(t, t + 0.1) for t in spans] == [pieces.speech_in(t, t + 0.1) for t in spans]
