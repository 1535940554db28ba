"""The rules a Whisper pass's words go through (rtlab.words), shared by the Whisper
backends: scripted words, and the voice-activity check on a generated clip."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from rtlab import words
from rtlab.backends import SAMPLE_RATE
from rtlab.decoders.files import decode_audio

needs_vad = pytest.mark.skipif(
    importlib.util.find_spec("faster_whisper") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="the voice-activity check needs Silero VAD's model (shipped with faster-whisper) and onnxruntime",
)


def _words(*spans):
    return [(f"w{index}", start, end, 0.9) for index, (start, end) in enumerate(spans)]


@pytest.mark.parametrize(
    "one, other",
    [("Dog.", "dog"), ("«Oui»", "oui"), ("¿Qué?", "qué"), ('"Hi,"', "hi"), ("Straße", "STRASSE"), ("e-mail,", "e-mail")],
)
def test_words_compare_without_case_or_the_punctuation_around_them(one, other):
    assert words.key(one) == words.key(other)


def test_the_key_keeps_what_is_inside_a_word():
    assert words.key("l'usoc,") == "l'usoc" and words.key("d'") == "d"
    assert words.key("20") != words.key("2.0") and words.key("...") == ""


def test_the_policies_drop_committed_words_heard_again_by_the_same_key():
    from rtlab.policies.reheard import _key

    for text in ("«Oui»", "¿Qué?", "Dog.", "l'usoc,"):
        assert _key({"text": f" {text}", "start": 0.0, "end": 0.1}) == words.key(text)


def test_a_run_of_unaligned_words_goes_and_the_words_around_it_stay():
    said = _words((0, 0.3), (0.3, 0.6), (0.6, 0.6), (0.6, 0.6), (0.6, 0.6), (0.6, 0.9))
    assert words.cut_unaligned(said) == said[:2] + said[5:]
    assert words.cut_unaligned(said[2:]) == said[5:], "a run the window opens with goes alone"
    two = _words((0, 0.3), (0.3, 0.3), (0.3, 0.3), (0.3, 0.5))
    assert words.cut_unaligned(two) == two, "two short words in a row can be speech"


def test_a_run_that_ends_the_window_takes_the_stretched_word_before_it():
    stretched = _words((0, 0.3), (0.3, 2.5), (2.5, 2.5), (2.5, 2.5), (2.5, 2.5))
    assert words.cut_unaligned(stretched) == stretched[:1]
    spoken = _words((0, 0.3), (0.3, 0.7), (0.7, 0.7), (0.7, 0.7), (0.7, 0.7))
    assert words.cut_unaligned(spoken) == spoken[:2], "a word of normal length was heard"


def test_an_improbable_sentence_after_the_last_sentence_end_is_cut():
    """Whisper's hallucination rule on the text after a finished sentence: what tiny.en made
    up in the noise after fleurs-en-001's speech ("So, let's see.", as a stream's last pass
    heard it) goes; a next sentence said clearly, or one without a finished sentence before
    it (speech still coming in), stays."""
    cut = words.cut_anomalous_tail
    said = [(" a", 7.22, 7.38, 0.75), (" sentence.", 7.38, 7.74, 1.0)]
    made_up = [(" So,", 7.74, 7.96, 0.05), (" let's", 7.96, 7.96, 0.32), (" see.", 7.96, 8.24, 0.29)]
    assert cut(said + made_up) == said
    assert cut(made_up, continued=True) == [], "a continued window starts after a sentence end"
    assert cut(made_up) == made_up, "no finished sentence before it: speech still coming in"
    clear = [(" Always", 7.8, 8.1, 0.9), (" begin", 8.1, 8.4, 0.95), (" here", 8.4, 8.7, 0.2)]
    assert cut(said + clear) == said + clear
    assert cut(clear, continued=True) == clear


@needs_vad
def test_an_improbable_tail_said_over_speech_stays(data_dir):
    """Whisper's rule asks for silence around what it cuts: a continued window that opens
    with a word squeezed into one frame ("and", probability 0.03: a score of 3) before
    words said clearly keeps them when the voice-activity model hears speech under them
    (the shared LibriSpeech clip, after a pause, lost "counseled him." so); over the
    silence after the speech, or repeating what the pass said before, they go."""
    speech = decode_audio(data_dir / "fox.ogg")  # 6.1 s of espeak-ng speech; then 3 s of silence
    audio = np.concatenate([speech, np.zeros(3 * 16_000, np.float32)])
    heard = [(" and", 2.0, 2.0, 0.033), (" counseled", 2.0, 2.6, 0.54), (" him.", 2.6, 3.2, 0.97)]
    in_silence = [(word, start + 5, end + 5, p) for word, start, end, p in heard]
    cut = words.cut_anomalous_tail
    spoken = lambda start, end: words.is_spoken(audio, start, end)  # noqa: E731
    assert cut(heard, continued=True) == [], "the rule alone takes them"
    assert cut(heard, continued=True, spoken=spoken) == heard
    assert cut(in_silence, continued=True, spoken=spoken) == []
    said = [" So", " and", " counseled", " him.", " Then"]
    assert cut(heard, continued=True, spoken=spoken, said=said) == [], "said again: a decoder repeating itself"
    assert cut(heard, continued=True, spoken=spoken, said=said[2:]) == heard, "two words in common are not a repeat"
    assert not words.is_spoken(audio, 8.0, 8.0), "a span shorter than a frame"
    squeezed = [(" Gracias.", 2.7, 2.8, 0.029)]
    assert spoken(2.7, 2.8), "the end of a word said before it"
    assert cut(squeezed, continued=True, spoken=spoken) == [], "a word in 0.1 s: squeezed in, not said"
    probable = [(" That's", 7.0, 7.3, 0.39), (" it.", 7.3, 7.8, 0.62)]
    assert cut(probable, continued=True) == probable, "not anomalous by Whisper's score"
    assert cut(probable, continued=True, spoken=spoken) == [], "a continued window heard in silence"
    assert cut(probable) == probable, "the first window: speech may still be coming"
    # A first window without a sentence end: cut only where the VAD hears no speech.
    made_up = [(" 1.0.1", 7.0, 7.9, 0.05)]
    assert cut(made_up) == made_up, "without the VAD the rule leaves a first window alone"
    assert cut(made_up, spoken=spoken) == [], "anomalous, over silence"
    assert cut(heard, spoken=spoken) == heard, "anomalous, over speech: speech may still be coming"
    heard_then_made_up = [*heard[:2], (" him", 2.6, 3.2, 0.97), *made_up]
    assert cut(heard_then_made_up, spoken=spoken) == heard_then_made_up, "speech under some of it: all stays"


def test_a_last_word_stretched_over_unspoken_audio_is_retimed():
    said = _words((0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 3.0), (3.0, 3.0))
    retimed = words.retime_stopped_early(said)
    assert retimed[:3] == said[:3]
    assert [w[0] for w in retimed] == [w[0] for w in said]
    assert retimed[3][1:3] == pytest.approx((0.8, 1.1)), "the median word length, from the word's start"
    assert retimed[4][1:3] == pytest.approx((1.1, 1.4)), "a squeezed word follows it, as long"
    normal = _words((0, 0.2), (0.2, 0.9))
    assert words.retime_stopped_early(normal) == normal


def _pause_then_sound(rng_seed: int = 0) -> np.ndarray:
    """2 s: room noise (RMS 0.01) with a 20 ms click at 0.2 s, sound (RMS 0.2) from 0.8 s."""
    audio = np.random.default_rng(rng_seed).normal(0, 0.01, 2 * SAMPLE_RATE).astype(np.float32)
    audio[int(0.2 * SAMPLE_RATE) : int(0.22 * SAMPLE_RATE)] *= 4
    audio[int(0.8 * SAMPLE_RATE) :] *= 20
    return audio


def test_sound_onset_is_the_first_run_of_frames_above_silence():
    audio = _pause_then_sound()
    assert words.sound_onset(audio, 0.0, 2.0) == pytest.approx(0.8), "the click at 0.2 s is too short"
    assert words.sound_onset(audio, 1.0, 2.0) == pytest.approx(1.0), "sound from the start on"
    assert words.sound_onset(audio, 0.0, 0.7) == 0.0, "no sound: the start stays"


def test_a_stretched_word_starts_where_its_sound_does():
    """The window's only word, aligned over the pause before it too: kept at the pause's
    start it would be taken for a word heard in silence (a Portuguese "e Schlegel")."""
    audio = _pause_then_sound()
    only = [(" Schlegel.", 0.0, 1.6, 0.4)]
    assert words.retime_stopped_early(only, audio=audio) == [(" Schlegel.", 0.8, 0.9, 0.4)]
    assert words.retime_stopped_early(only) == [(" Schlegel.", 0.0, 0.1, 0.4)], "without the audio: as before"
    said = _words((0.8, 1.0), (1.0, 1.3), (1.3, 2.0))
    assert words.retime_stopped_early(said, audio=audio)[2][1] == pytest.approx(1.3), "a word over sound keeps its start"


@needs_vad
def test_a_continued_window_that_hears_the_last_word_again_from_its_end_keeps_it_once(fox_then_silence):
    before = [(" The", 0.3, 0.5, 0.9), (" quick.", 0.5, 0.8, 0.9)]
    again = [(" quick.", 0.8, 0.9, 0.5)]  # the window decoded from 0.8 s on: the same word
    assert words.settle_window(before, again, fox_then_silence, continued=True).pieces == before
    repeated = [(" quick.", 1.3, 1.5, 0.9)]  # said again, later
    assert words.settle_window(before, repeated, fox_then_silence, continued=True).pieces == before + repeated


def test_a_decoder_loop_is_cut_after_its_first_turn():
    said = [(text, index * 0.3, index * 0.3 + 0.3, 0.9) for index, text in enumerate(
        "long enough to make loud, loud, loud, loud, loud".split()
    )]  # fmt: skip
    kept, looped = words.cut_repetition(said)
    assert looped and [w[0] for w in kept] == ["long", "enough", "to", "make", "loud,"]
    phrase = [(text, 0.0, 0.1, 0.9) for text in "the entrance to the entrance to the entrance to".split()]
    assert [w[0] for w in words.cut_repetition(phrase)[0]] == ["the", "entrance", "to"]
    speech = [(text, 0.0, 0.1, 0.9) for text in "no no we will go go".split()]
    assert words.cut_repetition(speech) == (speech, False)  # twice is speech


def test_a_repetition_can_be_asked_to_end_past_the_words_already_checked():
    said = [(text,) for text in "type de type de type de".split()]
    assert words.repetition(said) == (0, 2)
    assert words.repetition(said, ending_after=6) is None  # all of it was checked before
    assert words.repetition(said, ending_after=5) == (0, 2)  # its last word is new
    again = [(text,) for text in "go go go and go go go".split()]
    assert words.repetition(again, ending_after=3) == (4, 1), "the first run that ends among the new words"
    assert words.repetition([(text,) for text in "a b a b a".split()]) is None


@pytest.fixture
def fox_then_silence(data_dir) -> np.ndarray:
    """6.1 s of espeak-ng speech, then 3 s of digital silence."""
    return np.concatenate([decode_audio(data_dir / "fox.ogg"), np.zeros(3 * 16_000, np.float32)])


def test_the_first_window_keeps_its_words_and_says_nothing_was_cut(fox_then_silence):
    said = [(" The", 0.3, 0.5, 0.9), (" quick", 0.5, 0.8, 0.9), (" brown", 0.8, 1.1, 0.9)]
    window = words.settle_window([], said, fox_then_silence, continued=False)
    assert window == words.Window(said, said, False, False)


@needs_vad
def test_a_continued_window_joins_the_words_before_it(fox_then_silence):
    """A continued window that begins inside the last word of the window before (Whisper
    hears it again, a little later) drops it, and the word before ends where the new
    window's first word starts."""
    before = [(" The", 0.3, 0.5, 0.9), (" quick", 0.5, 1.2, 0.9)]
    again = [(" quick.", 0.9, 1.1, 0.8), (" brown", 1.1, 1.4, 0.9), (" fox", 1.4, 1.7, 0.9)]
    window = words.settle_window(before, again, fox_then_silence, continued=True)
    assert window.words == again[1:]
    assert window.pieces == [before[0], (" quick", 0.5, 1.1, 0.9), *again[1:]]
    assert not window.cut and not window.looped
    assert before[1] == (" quick", 0.5, 1.2, 0.9), "the pass's words so far are not changed in place"
    later = [(" brown", 1.3, 1.5, 0.9)]
    assert words.settle_window(before, later, fox_then_silence, continued=True).pieces == [
        before[0], (" quick", 0.5, 1.2, 0.9), later[0]
    ], "the word before ends where it ended when the next one starts after it"


@needs_vad
def test_a_window_whose_text_a_rule_took_says_so(fox_then_silence):
    """The next window must not be prompted with text a rule took: ``cut`` says there was
    some. A loop is cut after its first turn and stops the pass (``looped``)."""
    unaligned = [(" a", 0.3, 0.6, 0.9), (" b", 0.6, 0.6, 0.9), (" c", 0.6, 0.6, 0.9), (" d", 0.6, 0.6, 0.9)]
    window = words.settle_window([], unaligned, fox_then_silence, continued=False)
    assert window.words == unaligned[:1] and window.cut and not window.looped
    loop = [(f" {text}", 0.3 * i, 0.3 * i + 0.3, 0.9) for i, text in enumerate("go loud loud loud".split())]
    window = words.settle_window([], loop, fox_then_silence, continued=False)
    assert [w[0] for w in window.words] == [" go", " loud"] and window.looped
    assert words.continue_from(window, fox_then_silence, 9.1) is None, "after a loop the next pass tries again"


def test_the_next_window_is_prompted_with_the_words_kept():
    kept = [(" a", 0.3, 0.6, 0.9), (" b", 0.6, 0.9, 0.9)]
    encode = lambda text: [ord(character) for character in text]  # noqa: E731
    assert words.Window(kept, kept, False, False).prompt_tokens([7, 8], encode) == [7, 8], "nothing cut: the tokens"
    assert words.Window(kept, kept, False, True).prompt_tokens([7, 8, 9], encode) == encode(" a b")


def test_the_next_window_starts_where_the_text_ends_if_speech_follows(fox_then_silence):
    """A pass decodes a second window only when the model stopped more than a second before
    the audio its windows cover ends and there is sound after its text."""
    def window(end: float) -> words.Window:
        pieces = [(" The", 0.3, 0.5, 0.9), (" quick", 0.5, end, 0.9)]
        return words.Window(pieces, pieces, False, False)

    assert words.continue_from(window(1.2), fox_then_silence, 9.1) == 1.2, "speech follows"
    assert words.continue_from(window(6.2), fox_then_silence, 9.1) is None, "only silence follows"
    assert words.continue_from(window(1.2), fox_then_silence[: int(2.0 * 16_000)], 2.0) is None, "within a second"
    assert words.continue_from(words.Window([], [], False, False), fox_then_silence, 9.1) is None, "no text"


def test_word_pieces_become_words_with_punctuation_glued_on():
    pieces = [(" round", 0.0, 0.3, 0.9), ("-fark", 0.3, 0.5, 0.6), (" it", 0.5, 0.6, 0.8), ("'s", 0.6, 0.7, 0.7),
              (" .", 0.7, 0.7, 0.1), (" here.", 0.7, 1.0, 0.95)]  # fmt: skip
    merged = words.merge_word_pieces(pieces)
    assert [w["text"] for w in merged] == ["round-fark", "it's", "here."]
    assert merged[0] == {"text": "round-fark", "start": 0.0, "end": 0.5, "probability": 0.6}
    assert words.merge_word_pieces([(" .", 0.0, 0.1, 0.2)]) == [], "punctuation alone is what a looping decoder emits"


def test_a_decode_s_token_budget_grows_with_its_audio_up_to_one_window():
    assert words.token_budget(8.0, 0.0) == 16
    assert words.token_budget(8.0, 2.5) == 36
    assert words.token_budget(8.0, 30.0) == words.token_budget(8.0, 95.0) == 256  # one 30 s window at most
    assert words.token_budget(1.5, 3.0) == 20  # whole tokens, rounded down


@pytest.mark.parametrize(
    "no_speech, avg_logprob, continued, silent",
    [
        (0.95, -1.05, False, True),  # tiny.en's "you" in pink noise
        (0.95, -0.70, False, False),  # the model is sure of its text: speech
        (0.95, -0.70, True, True),  # a continued window: the no-speech probability alone
        (0.40, -2.00, True, False),  # unlikely text, but the model hears speech
    ],
)
def test_whispers_no_speech_check(no_speech, avg_logprob, continued, silent):
    assert words.is_silent(no_speech, avg_logprob, continued=continued) is silent


@pytest.mark.parametrize(
    "ratio, avg_logprob, no_speech, again",
    [
        (1.5, -0.3, 0.1, False),  # fluent and likely: settled
        (3.0, -0.3, 0.1, True),  # a loop compresses well
        (1.5, -1.2, 0.1, True),  # unlikely text
        (3.0, -1.2, 0.9, False),  # silence: decoding it hotter would only make words up
        (3.0, -0.3, 0.9, True),  # a confident loop is not silence
    ],
)
def test_whispers_temperature_fallback(ratio, avg_logprob, no_speech, again):
    assert words.needs_fallback(ratio, avg_logprob, no_speech) is again


@pytest.mark.parametrize("engine", ["whisper", "faster_whisper"])
def test_the_thresholds_are_the_engines_own_defaults(engine):
    """Both engines' transcribe() defaults: rtlab's streaming passes apply the same rules
    as an offline pass of either engine."""
    import inspect

    module = pytest.importorskip(engine)
    transcribe = module.transcribe if engine == "whisper" else module.WhisperModel.transcribe
    defaults = {name: parameter.default for name, parameter in inspect.signature(transcribe).parameters.items()}
    assert defaults["no_speech_threshold"] == words.NO_SPEECH_THRESHOLD
    assert defaults["compression_ratio_threshold"] == words.COMPRESSION_RATIO_THRESHOLD
    assert defaults.get("logprob_threshold", defaults.get("log_prob_threshold")) == words.LOG_PROB_THRESHOLD


def test_join_words_writes_a_joining_word_on_to_the_one_before_it():
    from rtlab.core.events import commit_event, join_words

    words = [{"text": " der", "start": 0.0, "end": 0.3}, {"text": "Unabhängigkeit", "start": 0.3, "end": 1.0},
             {"text": "serklärung", "start": 1.0, "end": 1.5, "joins": True}, {"text": "  ", "start": 1.5, "end": 1.6},
             {"text": " eine", "start": 1.6, "end": 2.0}]  # fmt: skip
    assert join_words(words) == "der Unabhängigkeitserklärung eine"
    assert join_words(words[2:]) == "serklärung eine"  # nothing before it to go on
    # A commit event keeps the mark, and only where it is set.
    event = commit_event(words, 2.0)
    assert [w.get("joins") for w in event["words"]] == [None, None, True, None, None]
