"""The AlignAtt policy on its test double (``test-attention``: tone words as tokens, their
cross-attention scripted on the frames where they sound), and the capability it needs."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref

import numpy as np
import pytest

import rtlab
from rtlab.backends import Backend
from rtlab.core.feeding import feed_bytes
from rtlab.errors import InvalidOption
from rtlab.policies import Step, missing_capabilities
from rtlab.policies.alignatt import (
    ANNOTATION_LONGEST,
    LOOP_LONGEST,
    ONSET_WAIT_LONGEST,
    AlignAtt,
    Annotations,
    AttentionTracker,
    _as_words,
    _Emitted,
    median_filter,
)
from rtlab.policies.vac import KEEP_SILENCE, ONSET_LEAD
from rtlab.policies.incremental import INCREMENTAL_DECODING, Decoded, IncrementalDecoder
from rtlab.registry import get_registry
from rtlab.testing.conformance import registered
from rtlab.testing import ToneAttentionBackend, ToneBackend, tone_words, wav_bytes
from rtlab.testing.attention import BOX, ToneIncrementalDecoder
from rtlab.testing.tones import VOCABULARY
from rtlab.vad import FRAME

SAMPLE_RATE = 16_000
TEXT = "alpha bravo charlie delta echo foxtrot golf"


def tokens_of(*words: str) -> list[int]:
    return ToneAttentionBackend().incremental_decoder().text_tokens(" ".join(words))


def texts(words: list[dict]) -> list[str]:
    return [w["text"] for w in words]


def stream(policy: AlignAtt, audio: np.ndarray, chunk: float = 1.0) -> tuple[list[list[dict]], list[dict]]:
    """Feed ``audio`` in chunks, one pass each, then finish: the commits of each pass, and
    of the finish."""
    size = int(chunk * SAMPLE_RATE)
    commits = []
    for start in range(0, len(audio), size):
        policy.insert_audio(audio[start : start + size])
        commits.append(policy.process_iter().committed)
    return commits, policy.finish().committed


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


# -- the capability ---------------------------------------------------------------------------


def test_alignatt_is_registered_and_needs_incremental_decoding():
    registry = get_registry()
    assert registry.get("policy", "alignatt") is AlignAtt
    assert AlignAtt.requires == (INCREMENTAL_DECODING,)
    assert registry.accepted_options("policy", "alignatt") == {
        "min_chunk": 1.2, "frame_threshold": 25, "audio_max_len": 30.0, "audio_min_len": 0.0, "max_context_tokens": None,
        "init_prompt": None, "static_init_prompt": None, "never_fire": False, "onset_agreement": False,
        "onset_logprob": None, "agreement": False, "decode_afresh": False, "vad": False, "vad_silence_ms": 500,
    }  # fmt: skip
    assert missing_capabilities(AlignAtt, ToneAttentionBackend) == []
    assert missing_capabilities(AlignAtt, ToneBackend) == [INCREMENTAL_DECODING]
    assert Backend.capabilities == () and not missing_capabilities(registry.get("policy", "local-agreement"), Backend)


def test_a_backend_without_the_capability_is_refused_in_one_line_naming_it():
    with pytest.raises(InvalidOption) as refused:
        AlignAtt(ToneBackend())
    message = one_line(refused.value)
    assert message.startswith(
        "policy 'alignatt' needs a backend with incremental decoding and cross-attention "
        "(capability 'incremental-decoding'); backend 'test' does not provide it: "
    )
    # It names the installed backends that have it (never rtlab's internal test double), as
    # every entry point takes the option: before, "use --backend openai-whisper", a flag that
    # a Python caller, a panel or a WebSocket client does not have.
    able = [n for n in get_registry().names("backend") if n != "test-attention"
            and INCREMENTAL_DECODING in get_registry().get("backend", n).capabilities]  # fmt: skip
    fix = " or ".join(f"backend={name}" for name in able)
    assert message.endswith(f"use {fix}" if able else "pip install -e plugins/rtlab-openai-whisper")
    assert "--backend" not in message


class AttentiveBackend(ToneAttentionBackend):
    """A backend of an installed (not internal) plugin that AlignAtt can run on."""

    name = "attentive"


def test_the_fix_a_python_caller_is_given_is_a_configuration_that_runs():
    with registered(AttentiveBackend):
        with pytest.raises(InvalidOption) as refused:
            rtlab.AudioProcessor("backend=test,policy=alignatt", clock="unaware")
        message = one_line(refused.value)
        assert "backend=attentive" in message and "--backend" not in message
        suggested = message.rsplit(": use ", 1)[1].split(" or ")
        assert "backend=attentive" in suggested
        for backend in suggested:  # each as written, in a configuration string
            assert rtlab.StreamConfig.parse(f"{backend},policy=alignatt").policy == "alignatt"


def test_faster_whisper_is_refused_before_any_decoding():
    if "faster-whisper" not in get_registry().names("backend"):
        pytest.skip("faster-whisper is not installed: pip install -e plugins/rtlab-faster-whisper")
    from rtlab.core.instances import get_backend

    with pytest.raises(InvalidOption, match="backend 'faster-whisper' does not provide it"):
        AlignAtt(get_backend("faster-whisper"))  # not even loaded: the class says it all


def test_a_stream_on_a_backend_without_it_is_refused_when_configured():
    # StreamConfig.validate builds the policy on the (unloaded) backend: no model loads.
    with pytest.raises(InvalidOption, match="capability 'incremental-decoding'"):
        rtlab.AudioProcessor(rtlab.StreamConfig(backend="test", policy="alignatt"), clock="unaware")


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("min_chunk", 0, "min_chunk must be a number of seconds above 0"),
        ("min_chunk", float("nan"), "min_chunk must be a number of seconds above 0, not nan"),
        ("min_chunk", float("inf"), "min_chunk must be a number of seconds above 0, not inf"),
        ("audio_max_len", float("nan"), r"audio_max_len must be a number of seconds above min_chunk \(1.2\), not nan"),
        ("frame_threshold", -1, "frame_threshold must be a whole number of frames >= 0"),
        ("frame_threshold", 2.5, "frame_threshold must be a whole number of frames >= 0"),
        ("audio_max_len", 1.0, r"audio_max_len must be a number of seconds above min_chunk \(1.2\)"),
        ("audio_max_len", 45, "audio_max_len must be at most the encoder window of backend 'test-attention', 30 s"),
        ("max_context_tokens", -3, "max_context_tokens must be a whole number >= 0"),
        ("init_prompt", 5, "init_prompt must be text"),
        ("never_fire", "yes", "never_fire must be true or false"),
        ("onset_agreement", 1, "onset_agreement must be true or false"),
        ("agreement", "on", "agreement must be true or false"),
        ("decode_afresh", 1, "decode_afresh must be true or false"),
        ("vad", "yes", "vad must be true or false"),
        ("vad_silence_ms", 20, "vad_silence_ms must be a number of milliseconds from 100 to 5000"),
        ("audio_min_len", -1, "audio_min_len must be a number of seconds from 0 to below audio_max_len"),
        ("audio_min_len", 30, r"audio_min_len must be a number of seconds from 0 to below audio_max_len \(30.0\)"),
    ],
)
def test_bad_options_are_refused_in_one_line(option, value, message):
    with pytest.raises(InvalidOption, match=message) as refused:
        AlignAtt(ToneAttentionBackend(), **{option: value})
    assert one_line(refused.value).startswith("policy 'alignatt': ")


# -- the attended frame ---------------------------------------------------------------------------


def test_the_attended_frame_is_the_newest_rows_peak_after_normalising_over_tokens():
    frames = 60
    rows = np.full((2, 3, frames), 1.0)
    rows[:, 0, 0:9] += 10  # the start sequence looks at the beginning
    rows[:, 1, 20:29] += 10
    rows[:, 2, 40:49] += 10
    tracker = AttentionTracker(rows[:, :2])
    assert tracker.attended_frame() == 20
    tracker.add(rows[:, 2:])
    assert tracker.attended_frame() == 40
    # A lone frame (narrower than the median filter) is not where the model looks.
    spike = np.full((2, 1, frames), 1.0)
    spike[:, 0, 55] += 100
    spike[:, 0, 10:19] += 5
    tracker.add(spike)
    assert tracker.attended_frame() == 10


def test_the_median_filter_reflects_its_edges_as_whisper_does():
    row = np.array([[5.0, 1, 1, 1, 1, 1, 9]])
    assert median_filter(row, 3).tolist() == [[1.0, 1, 1, 1, 1, 1, 1]]
    assert median_filter(np.array([[1.0, 2.0]]), 7).tolist() == [[1.0, 2.0]]  # too short: unchanged


@pytest.mark.parametrize("width", [3, 4, 7])
def test_the_median_filter_gives_numpy_s_median_of_each_window(width):
    """Each frame is the median of the reflected window around it, the very numbers
    np.median gives (the filter takes the middle value of odd windows without sorting)."""
    rows = np.random.default_rng(width).standard_normal((8, 2, 300))
    rows[0, 0, 100:110] = 1.5  # ties
    pad = width // 2
    padded = np.pad(rows, [(0, 0), (0, 0), (pad, pad)], mode="reflect")
    expected = np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)
    assert np.array_equal(median_filter(rows, width), expected)


# -- what is emitted, and when ---------------------------------------------------------------------


def test_a_pass_stops_where_the_attention_reaches_the_threshold():
    """alpha 0.3-0.6 s, bravo 0.8-1.1 s, charlie 1.3-1.6 s: with 1.8 s of audio (90 frames)
    and a threshold of 25 frames, a token attended at frame 65 or later is not accepted:
    charlie's first half (frame 65) stops the decode, and the last word is held back."""
    audio, _ = tone_words("alpha bravo charlie")
    policy = AlignAtt(ToneAttentionBackend(), frame_threshold=25)
    policy.insert_audio(audio[: int(1.8 * SAMPLE_RATE)])
    step = policy.process_iter()
    assert texts(step.committed) == ["alpha"] and texts(step.partial) == ["bravo"]
    assert policy.stops == {"attention": 1, "end_of_text": 0, "budget": 0, "loop": 0}
    assert step.committed == [{"text": "alpha", "start": 0.3, "end": 0.6}]  # the frames attended


def test_a_lower_threshold_lets_the_decode_read_closer_to_the_end():
    audio, _ = tone_words("alpha bravo charlie")
    policy = AlignAtt(ToneAttentionBackend(), frame_threshold=24)
    policy.insert_audio(audio[: int(1.8 * SAMPLE_RATE)])
    step = policy.process_iter()
    # charlie's first half (frame 65, 25 from the end) is accepted now; its second half,
    # said at the buffer's last frames, is not: the word is incomplete, and held back.
    assert texts(step.committed) == ["alpha", "bravo"] and texts(step.partial) == ["cha"]


def test_no_decode_runs_on_less_audio_than_audio_min_len_but_the_last_one():
    """SimulStreaming's audio_min_len: a pass on a shorter buffer decodes nothing (no
    encoder run); once the buffer is long enough the pass decodes as without the option,
    and the stream's last decode runs whatever the buffer holds."""
    audio, _ = tone_words("alpha bravo charlie")
    backend = ToneAttentionBackend()
    policy = AlignAtt(backend, frame_threshold=25, audio_min_len=1.5)
    encodes = []
    original = policy.decoder.encode
    policy.decoder.encode = lambda pcm: encodes.append(len(pcm)) or original(pcm)
    policy.insert_audio(audio[: SAMPLE_RATE])
    assert policy.process_iter().committed == [] and encodes == []
    policy.insert_audio(audio[SAMPLE_RATE : int(1.8 * SAMPLE_RATE)])
    step = policy.process_iter()
    assert texts(step.committed) == ["alpha"] and len(encodes) == 1
    short = AlignAtt(ToneAttentionBackend(), audio_min_len=5.0)
    short.insert_audio(audio[: SAMPLE_RATE])
    assert short.process_iter().committed == []
    assert texts(short.finish().committed) == ["alpha", "bravo"]  # the last decode runs on what 1 s holds


def test_never_fire_commits_the_last_word_too():
    audio, _ = tone_words("alpha bravo charlie")
    policy = AlignAtt(ToneAttentionBackend(), frame_threshold=25, never_fire=True)
    policy.insert_audio(audio[: int(1.8 * SAMPLE_RATE)])
    step = policy.process_iter()
    assert texts(step.committed) == ["alpha", "bravo"] and step.partial == []


def test_a_word_cut_by_the_chunk_is_completed_by_the_next_pass_without_repeating():
    audio, _ = tone_words("alpha bravo charlie")
    policy = AlignAtt(ToneAttentionBackend(), frame_threshold=BOX, never_fire=True)
    policy.insert_audio(audio[: int(1.5 * SAMPLE_RATE)])  # charlie (1.3-1.6 s) is still sounding
    first = policy.process_iter()
    assert texts(first.committed) == ["alpha", "bravo", "cha"]
    policy.insert_audio(audio[int(1.5 * SAMPLE_RATE) :])
    second = policy.process_iter()
    assert texts(second.committed) == ["rlie"]  # the rest of the word: its tokens are forced
    assert policy.decoder.begins[-1][1] == tokens_of("alpha", "bravo") + tokens_of("charlie")[:1]


def test_the_end_of_the_stream_commits_every_word_and_frees_the_decoder():
    audio, _ = tone_words(TEXT)
    policy = AlignAtt(ToneAttentionBackend())
    passes, last = stream(policy, audio, chunk=1.2)
    assert " ".join(w["text"] for commit in passes + [last] for w in commit) == TEXT
    assert last and policy.stops["end_of_text"] == 1
    assert policy.decoder.frames == 0  # close(): the encoder output and cache are gone


def test_commits_are_at_once_and_in_order():
    """No second pass to agree: a word is committed by the first pass that hears it
    complete and reads past it by the threshold (0.5 s), and never again."""
    audio, truth = tone_words(TEXT)
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.5)
    passes, last = stream(policy, audio, chunk=0.5)
    committed = [(w["text"], index) for index, commit in enumerate(passes) for w in commit]
    assert [text for text, _ in committed] + texts(last) == TEXT.split()
    for text, index in committed:
        end = next(w["end"] for w in truth if w["text"] == text)
        heard = (index + 1) * 0.5  # audio received when the pass ran
        # Committed by the first pass after the next word began and the threshold passed
        # its start, and not before the word was heard complete.
        assert end + 0.5 <= heard + 1e-9 and heard <= end + 0.5 + 0.2 + 0.5 + 0.5 + 1e-9, (text, heard)
    starts = [w["start"] for commit in passes + [last] for w in commit]
    assert starts == sorted(starts)


def mishear_once(policy: AlignAtt) -> None:
    """The first decode of ``policy`` that hears two words or more hears the first as "alfa"."""
    original = policy.decoder.words
    misheard = []  # the decode (its number) that mishears

    def words(tokens):
        found = original(tokens)
        decode = len(policy.decoder.begins)
        if len(found) >= 2 and not misheard and not policy.emitted:
            misheard.append(decode)
        if found and misheard == [decode]:
            found[0] = (" alfa", found[0][1])
        return found

    policy.decoder.words = words


def test_onset_agreement_commits_the_first_words_once_two_decodes_from_the_start_agree():
    audio, _ = tone_words("alpha bravo charlie delta echo")
    policy = AlignAtt(ToneAttentionBackend(), onset_agreement=True)
    policy.insert_audio(audio[: int(1.8 * SAMPLE_RATE)])
    first = policy.process_iter()
    assert first.committed == [] and texts(first.partial) == ["alpha", "bravo"]  # said once: waits
    policy.insert_audio(audio[int(1.8 * SAMPLE_RATE) : int(2.4 * SAMPLE_RATE)])
    second = policy.process_iter()
    # Decoded from the start again (nothing forced), it agrees on alpha and bravo; what it
    # heard after them was said once so far, and waits.
    assert policy.decoder.begins[-1] == ([], [])
    assert texts(second.committed) == ["alpha", "bravo"] and texts(second.partial)[0] == "charlie"
    policy.insert_audio(audio[int(2.4 * SAMPLE_RATE) :])
    third = policy.process_iter()
    # From there on, AlignAtt as without the option: the committed words are forced, and
    # what one decode accepts is committed.
    assert policy.decoder.begins[-1][1] == tokens_of("alpha", "bravo")
    assert texts(third.committed)[0] == "charlie"
    rest = texts(third.committed) + texts(policy.finish().committed)
    assert rest == ["charlie", "delta", "echo"]


def test_onset_agreement_waits_while_the_decodes_from_the_start_disagree():
    audio, _ = tone_words("alpha bravo charlie delta echo")
    policy = AlignAtt(ToneAttentionBackend(), onset_agreement=True, min_chunk=0.6)
    mishear_once(policy)
    commits, last = stream(policy, audio, chunk=0.6)
    said = [texts(c) for c in commits]
    first = next(i for i, c in enumerate(said) if c)
    # 1.2 s: "alpha", 1.8 s: "alfa bravo", 2.4 s: "alpha bravo ...": no two agree until the
    # decode at 3.0 s, and "alfa" is never committed.
    assert first == 4 and said[first][:2] == ["alpha", "bravo"]
    assert policy.decoder.begins[: first + 1] == [([], [])] * (first + 1)
    assert [w for c in said for w in c] + texts(last) == "alpha bravo charlie delta echo".split()


def test_without_onset_agreement_the_first_decode_commits_what_it_heard():
    audio, _ = tone_words("alpha bravo charlie delta echo")
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.6)
    mishear_once(policy)
    commits, _ = stream(policy, audio, chunk=0.6)
    assert [w for c in commits for w in texts(c)][0] == "alfa"


@pytest.mark.parametrize("option", ["onset_agreement", "agreement"])
def test_with_either_agreement_rule_the_last_decode_keeps_every_word_agreed_or_not(option):
    audio, _ = tone_words("alpha bravo")
    policy = AlignAtt(ToneAttentionBackend(), **{option: True})
    policy.insert_audio(audio)
    assert policy.process_iter().committed == []
    assert texts(policy.finish().committed) == ["alpha", "bravo"]


class DoubtfulDecoder(ToneIncrementalDecoder):
    """The scripted decoder, giving scores: it chooses the tokens it hears with probability
    ``unsure`` while its buffer holds less than ``sure_after`` seconds of audio (Whisper
    guessing on the first second or two of speech), ``sure`` after; and ``unsure`` for
    the tokens of the words in ``doubted`` whatever the buffer."""

    scores = True

    def __init__(self, sure_after: float, unsure: float = 0.2, sure: float = 0.9, doubted: tuple = ()) -> None:
        super().__init__()
        self.sure_after, self.unsure, self.sure = sure_after, unsure, sure
        self.doubted = {t for word in doubted for t in self.text_tokens(word)}

    def begin(self, context, forced):
        return self._scored(super().begin(context, forced))

    def feed(self, token):
        return self._scored(super().feed(token))

    def _scored(self, decoded: Decoded) -> Decoded:
        sure = self.encoded[-1] >= self.sure_after and decoded.token not in self.doubted
        probability = self.sure if sure else self.unsure
        logits = np.full(self.eot + 1, np.log((1 - probability) / self.eot))
        logits[decoded.token] = np.log(probability)
        return Decoded(decoded.token, decoded.attention, logits)


def doubtful(**script) -> ToneAttentionBackend:
    class Backend(ToneAttentionBackend):
        def incremental_decoder(self, *, language=None):
            return DoubtfulDecoder(**script)

    return Backend()


def test_onset_logprob_holds_the_first_words_while_the_decodes_are_unsure_of_them():
    audio, _ = tone_words("alpha bravo charlie delta echo foxtrot golf hotel")
    policy = AlignAtt(doubtful(sure_after=3.0, doubted=("echo",)), min_chunk=0.6, onset_logprob=-0.7)
    commits, last = stream(policy, audio, chunk=0.6)
    said = [texts(c) for c in commits]
    encoded = policy.decoder.encoded
    first = next(i for i, c in enumerate(said) if c)
    # The decodes on less than 3 s (log 0.2 = -1.6 a token) commit nothing, and show what
    # they heard as partial text; each starts from the start of the buffer, nothing forced.
    assert encoded[first] >= 3.0 and all(seconds < 3.0 for seconds in encoded[:first])
    assert policy.decoder.begins[: first + 1] == [([], [])] * (first + 1)
    assert said[first][:2] == ["alpha", "bravo"]
    # Once a word is committed the rule is done: "echo", doubted at any length, is committed
    # as AlignAtt commits, by the decode that heard it with a word after it.
    assert "echo" in [w for c in said for w in c]
    assert [w for c in said for w in c] + texts(last) == "alpha bravo charlie delta echo foxtrot golf hotel".split()


@pytest.mark.parametrize("value", [0.5, float("nan"), float("-inf"), "low", True])
def test_onset_logprob_must_be_a_log_probability(value):
    with pytest.raises(InvalidOption) as refused:
        AlignAtt(doubtful(sure_after=0.0), onset_logprob=value)
    assert one_line(refused.value).startswith(
        "policy 'alignatt': onset_logprob must be a log-probability (a number <= 0; Whisper's threshold is -1)"
    )
    assert AlignAtt(doubtful(sure_after=0.0), onset_logprob=0).onset_logprob == 0.0


def test_onset_logprob_on_a_decoder_without_scores_is_refused_in_one_line():
    with pytest.raises(InvalidOption) as refused:
        AlignAtt(ToneAttentionBackend(), onset_logprob=-1)
    assert one_line(refused.value) == (
        "policy 'alignatt': onset_logprob needs the tokens' probabilities, and backend 'test-attention''s "
        "incremental decoder gives none; leave onset_logprob unset"
    )


def test_onset_logprob_in_a_beam_search_is_the_leading_hypothesis_s():
    # Greedy says "I scream" (log 0.5, log 0.3: mean -0.95); two beams "ice cream" (log 0.4,
    # log 0.9: mean -0.51). At -0.7 the greedy opening waits and the beams' goes.
    for beam_size, committed in ((1, []), (2, ["ice", "cream"])):
        policy = AlignAtt(garden_path(beam_size), onset_logprob=-0.7, never_fire=True)
        policy.insert_audio(FOUR_SECONDS)
        assert texts(policy.process_iter().committed) == committed


def test_without_onset_logprob_an_unsure_first_decode_commits_what_it_heard():
    audio, _ = tone_words("alpha bravo charlie delta echo foxtrot")
    policy = AlignAtt(doubtful(sure_after=3.0), min_chunk=0.6)
    commits, _ = stream(policy, audio, chunk=0.6)
    first = next(i for i, c in enumerate(commits) if c)
    assert policy.decoder.encoded[first] < 3.0


def test_onset_logprob_waits_at_most_while_the_buffer_is_short_then_commits_unsure_words():
    text = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar"
    audio, _ = tone_words(text)
    policy = AlignAtt(doubtful(sure_after=60.0), min_chunk=0.6, onset_logprob=-0.7)
    commits, last = stream(policy, audio, chunk=0.6)
    first = next(i for i, c in enumerate(commits) if c)
    # Never sure: the wait ends once the buffer holds ONSET_WAIT_LONGEST seconds.
    assert policy.decoder.encoded[first] == pytest.approx(ONSET_WAIT_LONGEST, abs=0.6)
    assert all(seconds < ONSET_WAIT_LONGEST for seconds in policy.decoder.encoded[:first])
    assert [w for c in commits for w in texts(c)] + texts(last) == text.split()


def test_onset_logprob_the_last_decode_keeps_every_word_however_unsure():
    audio, _ = tone_words("alpha bravo")
    policy = AlignAtt(doubtful(sure_after=60.0), onset_logprob=-0.1)
    policy.insert_audio(audio)
    assert policy.process_iter().committed == []
    assert texts(policy.finish().committed) == ["alpha", "bravo"]


def committed_by(policy: AlignAtt) -> list[tuple[bool, list[str]]]:
    """Records each decode of ``policy``: whether it was a last one, and what it committed."""
    decodes: list[tuple[bool, list[str]]] = []
    decode = policy._decode_buffer

    def recording(final, restarts=0):
        step = decode(final, restarts)
        decodes.append((final, texts(step.committed)))
        return step

    policy._decode_buffer = recording
    return decodes


@pytest.mark.parametrize("onset_logprob", [None, -0.7])
def test_onset_logprob_with_vad_holds_each_utterance_s_first_words(onset_logprob):
    first, _ = tone_words("alpha bravo charlie delta echo")
    second, _ = tone_words("foxtrot golf hotel india juliett")
    audio = np.concatenate([first, np.zeros(2 * SAMPLE_RATE, np.float32), second])
    backend = doubtful(sure_after=0.0, doubted=("alpha", "foxtrot"))  # unsure of each opening word
    policy = with_loudness_vad(AlignAtt(backend, vad=True, min_chunk=0.6, onset_logprob=onset_logprob))
    decodes = committed_by(policy)
    commits, last = stream(policy, audio, chunk=0.6)
    said = "alpha bravo charlie delta echo foxtrot golf hotel india juliett".split()
    assert [w for c in commits for w in texts(c)] + texts(last) == said
    openings = [(final, words) for final, words in decodes if words and words[0] in ("alpha", "foxtrot")]
    if onset_logprob is None:  # each decode commits what it heard, but the last word
        assert openings == [(False, ["alpha"]), (False, ["foxtrot"])]
    else:
        # The unsure first word goes with enough sure words after it to bring the mean
        # log-probability of their tokens to -0.7 ("alpha bravo": (2 log 0.2 + 2 log 0.9) / 4
        # = -0.86; "alpha bravo charlie": -0.61). The second utterance opens the rule again.
        assert openings == [(False, ["alpha", "bravo", "charlie"]), (False, ["foxtrot", "golf", "hotel"])]


def mishear_within(policy: AlignAtt, word: str, heard: str) -> list[int]:
    """The first decode of ``policy`` that decodes ``word`` with a word after it hears it as
    ``heard``; the decode's number is added to the list returned."""
    original = policy.decoder.words
    misheard: list[int] = []

    def words(tokens):
        found = original(tokens)
        decode = len(policy.decoder.begins)
        said = [text.strip() for text, _ in found]
        if not misheard and word in said[:-1]:
            misheard.append(decode)
        if misheard == [decode] and word in said:
            index = said.index(word)
            found[index] = (" " + heard, found[index][1])
        return found

    policy.decoder.words = words
    return misheard


def test_without_agreement_one_decode_commits_what_it_misheard_mid_stream():
    audio, _ = tone_words("alpha bravo charlie delta echo foxtrot")
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.6)
    misheard = mishear_within(policy, "charlie", "charly")
    commits, last = stream(policy, audio, chunk=0.6)
    assert misheard and "charly" in [w for c in commits for w in texts(c)] + texts(last)


def test_agreement_commits_a_word_once_two_decodes_after_the_committed_words_agree():
    audio, _ = tone_words("alpha bravo charlie delta echo foxtrot")
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.6, agreement=True)
    misheard = mishear_within(policy, "charlie", "charly")
    commits, last = stream(policy, audio, chunk=0.6)
    said = [w for c in commits for w in texts(c)]
    # The decode that misheard it is not followed by one that agrees: "charly" is never
    # committed, and every word comes once, in order.
    assert misheard and said + texts(last) == "alpha bravo charlie delta echo foxtrot".split()
    assert "charlie" in said  # committed before the last decode, once two decodes agreed
    # After the first commit, decodes go on after the committed words (forced), unlike
    # onset_agreement's decodes from the start, and the rule stays on.
    forced = [begin[1] for begin in policy.decoder.begins]
    assert any(forced) and forced[-1] == tokens_of(*said)
    # Never committed before AlignAtt alone commits it, sometimes later: a word the decode
    # before held back (as its last) is agreed at once, one it had not decoded waits.
    heard_once = AlignAtt(ToneAttentionBackend(), min_chunk=0.6)
    plain, _ = stream(heard_once, audio, chunk=0.6)
    pass_of = {w: i for i, c in enumerate(commits) for w in texts(c)}
    plain_of = {w: i for i, c in enumerate(plain) for w in texts(c)}
    both = [w for w in pass_of if w in plain_of and w != "charlie"]
    assert both and all(pass_of[w] >= plain_of[w] for w in both)
    assert any(pass_of[w] > plain_of[w] for w in both)


@pytest.mark.parametrize("audio_max_len", [30.0, 1.5], ids=["whole-stream", "trimmed"])
def test_decode_afresh_forces_nothing_and_commits_each_word_once_in_order(audio_max_len):
    """Also when the buffer is trimmed and its committed words leave it (become context)."""
    audio, truth = tone_words(TEXT)
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.6, audio_max_len=audio_max_len, decode_afresh=True)
    commits, last = stream(policy, audio, chunk=0.6)
    assert [w for c in commits for w in texts(c)] + texts(last) == TEXT.split()
    assert len([c for c in commits if c]) >= 3  # committed as the stream goes
    assert all(forced == [] for _, forced in policy.decoder.begins)
    # Each decode read the buffer from its start: words committed before were decoded again.
    assert len(policy.decoder.begins) == len(commits) + 1
    starts = [w["start"] for c in commits + [last] for w in c]
    assert starts == sorted(starts)
    if audio_max_len < 30:
        assert policy.buffer_offset > 0 and policy.context_words  # words left the buffer
        return
    forced = AlignAtt(ToneAttentionBackend(), min_chunk=0.6)
    assert stream(forced, audio, chunk=0.6) == (commits, last)  # the same commits, at the same times


def test_decode_afresh_drops_a_committed_word_heard_again_with_other_letters():
    """A decode commits "charly" for charlie; the next decodes, from the start of the
    buffer, hear "charlie" there: it is the committed word heard again, not a new one."""
    audio, _ = tone_words("alpha bravo charlie delta echo foxtrot")
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.6, decode_afresh=True)
    misheard = mishear_within(policy, "charlie", "charly")
    commits, last = stream(policy, audio, chunk=0.6)
    said = [w for c in commits for w in texts(c)] + texts(last)
    assert misheard and said == "alpha bravo charly delta echo foxtrot".split()
    # Decodes after it heard charlie again from the start (nothing forced).
    assert len(policy.decoder.begins) > misheard[0] and all(forced == [] for _, forced in policy.decoder.begins)


def test_decode_afresh_with_agreement_commits_words_two_decodes_from_the_start_agree_on():
    audio, _ = tone_words("alpha bravo charlie delta echo foxtrot")
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.6, decode_afresh=True, agreement=True)
    misheard = mishear_within(policy, "charlie", "charly")
    commits, last = stream(policy, audio, chunk=0.6)
    said = [w for c in commits for w in texts(c)]
    assert misheard and said + texts(last) == "alpha bravo charlie delta echo foxtrot".split()
    assert "charlie" in said and all(forced == [] for _, forced in policy.decoder.begins)


def said_as(policy: AlignAtt, written: dict[str, str]) -> None:
    """The decoder of ``policy`` writes the tone words in ``written`` as other text, their
    tokens unchanged."""
    original = policy.decoder.words

    def words(tokens):
        return [(" " + written.get(text.strip(), text.strip()), group) for text, group in original(tokens)]

    policy.decoder.words = words


def test_a_non_speech_annotation_is_decoded_but_not_committed():
    """German FLEURS on base: "* Musik * Für die besten Aussichten ...": the annotation's
    words are dropped from the commits; the decoder is still forced with their tokens, so
    the decodes are those of a policy without the filter."""
    audio, _ = tone_words(TEXT)
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.6)
    said_as(policy, {"alpha": "*", "bravo": "Musik", "charlie": "*"})
    commits, last = stream(policy, audio, chunk=0.6)
    assert [w for c in commits for w in texts(c)] + texts(last) == "delta echo foxtrot golf".split()
    assert policy.annotations.dropped == 1
    assert tokens_of("alpha", "bravo", "charlie") == policy.decoder.begins[-1][1][:6]  # forced
    plain = AlignAtt(ToneAttentionBackend(), min_chunk=0.6)
    stream(plain, audio, chunk=0.6)
    assert policy.decoder.begins == plain.decoder.begins  # the same decodes
    # A pass shows no partial word of an open annotation.
    partial_passes = []
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.6)
    said_as(policy, {"alpha": "*", "bravo": "Musik", "charlie": "*"})
    for start in range(0, int(1.8 * SAMPLE_RATE), int(0.6 * SAMPLE_RATE)):
        policy.insert_audio(audio[start : start + int(0.6 * SAMPLE_RATE)])
        partial_passes.append(texts(policy.process_iter().partial))
    assert all(partial == [] for partial in partial_passes) and texts(policy.annotations.held) == ["*"]


def test_a_word_that_closes_an_annotation_is_not_held_as_cut_by_the_chunk():
    """Portuguese FLEURS on base: "[MÚSICA DE" committed, then each decode forced with
    it said "FUNDO]" and stopped; held as the chunk's last word, it kept every word of
    the speech after it waiting for the stream's end. A closing marker ends its word:
    one that closes an annotation an earlier word opened is committed (and dropped with
    its annotation) while another last word waits."""
    audio, _ = tone_words(TEXT)

    def passes(policy: AlignAtt) -> list[str]:
        fed = 0
        for end in (1.8, 2.1):  # charlie (1.3-1.6 s) is the second decode's last word
            policy.insert_audio(audio[fed : int(end * SAMPLE_RATE)])
            fed = int(end * SAMPLE_RATE)
            policy.process_iter()
        return [word.text.strip() for word in policy.emitted]

    plain = AlignAtt(ToneAttentionBackend(), frame_threshold=25)
    assert passes(plain) == ["alpha", "bravo"]  # charlie waits
    policy = AlignAtt(ToneAttentionBackend(), frame_threshold=25)
    said_as(policy, {"alpha": "[MÚSICA", "bravo": "DE", "charlie": "FUNDO]"})
    assert passes(policy) == ["[MÚSICA", "DE", "FUNDO]"]
    assert policy.annotations.dropped == 1 and policy.annotations.held == []
    policy.insert_audio(audio[int(2.1 * SAMPLE_RATE) :])
    assert texts(policy.finish().committed) == ["delta", "echo", "foxtrot", "golf"]
    # Opened and closed in one decode: the same.
    policy = AlignAtt(ToneAttentionBackend(), frame_threshold=25)
    said_as(policy, {"bravo": "[Musik", "charlie": "Musik]."})
    assert passes(policy) == ["alpha", "[Musik", "Musik]."] and policy.annotations.dropped == 1
    # A whole annotation in one word waits as any last word: committed, it would be forced
    # into the next decodes (Spanish FLEURS on base: a lone "[Música]" over the silence
    # before the clip, forced, was said again in every decode over the speech after it).
    policy = AlignAtt(ToneAttentionBackend(), frame_threshold=25)
    said_as(policy, {"charlie": "[Música]"})
    assert passes(policy) == ["alpha", "bravo"] and policy.annotations.dropped == 0


class RepeatingDecoder(ToneIncrementalDecoder):
    """The scripted decoder that, once it hears five words, says the second to the
    fourth again after them, looking where they were said (tiny.en after an English clip:
    "... even in the middle of a sentence. Even in the middle of a sentence.")."""

    def encode(self, audio):
        frames = super().encode(audio)
        if len(self._heard) >= 10:
            self._heard += self._heard[2:8]
        return frames


def test_a_last_decode_stops_where_the_model_goes_back_to_audio_it_had_read():
    audio, _ = tone_words("alpha bravo charlie delta echo")

    class Backend(ToneAttentionBackend):
        def incremental_decoder(self, *, language=None):
            return RepeatingDecoder()

    policy = AlignAtt(Backend(), min_chunk=0.6)
    commits, last = stream(policy, audio, chunk=0.6)
    assert [w for c in commits for w in texts(c)] + texts(last) == "alpha bravo charlie delta echo".split()
    assert policy.rereads >= 1  # the last decode said "bravo charlie delta" again, looking back 1.4 s
    plain = AlignAtt(ToneAttentionBackend(), min_chunk=0.6)
    stream(plain, audio, chunk=0.6)
    assert plain.rereads == 0


def test_the_reread_rule_asks_words_not_annotations_and_allows_a_small_step_back():
    policy = AlignAtt(ToneAttentionBackend())
    policy.insert_audio(np.zeros(5 * SAMPLE_RATE, np.float32))
    policy.emitted = [_Emitted(" alpha", tokens_of("alpha"), 0.0, 2.0)]  # read to frame 100
    policy._last_end = 2.0
    words = [(" bravo", [0]), (" (speaking", [0]), (" in", [0]), (" English)", [0, 0]), (" charlie", [0]), (" delta", [0])]
    frames = [110, 5, 5, 5, 5, 120, 150]  # the annotation looks at the start of the buffer
    assert policy._reread(words, frames) == len(words)
    assert policy._reread(words[:1] + words[4:], [110, 100, 150]) == len(words[:1] + words[4:])  # 0.2 s back
    assert policy._reread(words[:1] + words[4:], [110, 55, 150]) == 1  # 1.1 s back: said again
    assert policy._reread([(" bravo", [0])], [45]) == 0  # before the words emitted end


def words_of(*texts: str) -> list[dict]:
    return [{"text": text, "start": float(i), "end": i + 0.5} for i, text in enumerate(texts)]


def test_annotations_open_and_close_across_passes_and_in_one_word():
    annotations = Annotations()
    first = annotations.step(Step(committed=words_of("Weiter", "[MÚSICA"), partial=words_of("DE")), final=False)
    assert texts(first.committed) == ["Weiter"] and first.partial == []
    second = annotations.step(Step(committed=words_of("DE", "FUNDO].", "Construída"), partial=words_of("pelos")), False)
    assert texts(second.committed) == ["Construída"] and texts(second.partial) == ["pelos"]
    third = annotations.step(Step(committed=words_of("*Musik*", "Für"), partial=words_of("die", "(Musik)")), False)
    assert texts(third.committed) == ["Für"] and texts(third.partial) == ["die"]
    fourth = annotations.step(Step(partial=words_of("die", "[Applaus]")), False)
    assert texts(fourth.partial) == ["die"]
    # tiny.en at a chunk placement of the shared English speech; and a song.
    said = words_of("(speaking", "in", "foreign", "language)", "All", "now", "♪", "la", "la", "♪.", "is")
    fifth = annotations.step(Step(committed=said), False)
    assert texts(fifth.committed) == ["All", "now", "is"]
    assert annotations.dropped == 4 and annotations.held == []  # (the committed ones)


def test_an_annotation_left_open_gives_its_words_back():
    """A bracket not closed within ANNOTATION_LONGEST words, or by the end of the stream,
    was text: nothing is lost to it."""
    annotations = Annotations()
    words = words_of("[siehe", *[f"w{i}" for i in range(ANNOTATION_LONGEST + 2)])
    out = annotations.step(Step(committed=words[: ANNOTATION_LONGEST]), final=False)
    assert out.committed == [] and len(annotations.held) == ANNOTATION_LONGEST
    out = annotations.step(Step(committed=words[ANNOTATION_LONGEST:]), final=False)
    assert texts(out.committed) == texts(words) and annotations.dropped == 0
    annotations.step(Step(committed=words_of("*", "Lachen")), final=False)
    assert texts(annotations.step(Step(), final=True).committed) == ["*", "Lachen"]
    assert annotations.held == [] and annotations.closer is None


class LoudnessVAD:
    """Silero's interface, scripted: a 32 ms frame is speech when its tones are loud
    (the test double's words are tones, which Silero takes for silence)."""

    def __init__(self) -> None:
        self._rest = np.zeros(0, np.float32)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._rest, np.asarray(pcm, np.float32)])
        whole = len(audio) // FRAME * FRAME
        self._rest = audio[whole:]
        frames = audio[:whole].reshape(-1, FRAME)
        return (np.sqrt((frames**2).mean(axis=1)) > 0.01).astype(np.float32)

    @property
    def pending(self) -> int:
        return len(self._rest)

    def reset_state(self) -> None:
        """Loudness has no state to reset."""


def with_loudness_vad(policy: AlignAtt) -> AlignAtt:
    policy.vac.activity.vad = LoudnessVAD()
    return policy


def two_utterances() -> tuple[np.ndarray, float]:
    """ "alpha bravo charlie", 2 s of silence, "delta echo": the audio and where the
    second utterance's audio starts."""
    first, _ = tone_words("alpha bravo charlie")
    second, _ = tone_words("delta echo")
    return np.concatenate([first, np.zeros(2 * SAMPLE_RATE, np.float32), second]), len(first) / SAMPLE_RATE + 2


def test_vad_ends_an_utterance_with_a_last_decode_and_starts_the_next_afresh():
    audio, second_start = two_utterances()
    policy = with_loudness_vad(AlignAtt(ToneAttentionBackend(), vad=True, vad_silence_ms=500, init_prompt="golf"))
    heard_at_end = []
    end_utterance = policy.end_utterance

    def recording(pause):
        step = end_utterance(pause)
        heard_at_end.append((pause.start, policy.decoder.encoded[-1]))
        return step

    policy.end_utterance = recording
    commits, last = stream(policy, audio, chunk=0.6)
    # The utterance's last decode heard it and 0.2 s of the pause after it, no more.
    (speech_end, heard), *_ = heard_at_end
    assert speech_end == pytest.approx(1.6, abs=0.04) and heard == pytest.approx(speech_end + 0.2, abs=1e-3)
    said = [texts(c) for c in commits]
    assert [w for c in said for w in c] + texts(last) == "alpha bravo charlie delta echo".split()
    # charlie, the utterance's last word, was committed by the decode at the pause's end
    # (which keeps every word), without waiting for speech after it.
    ended = next(i for i, c in enumerate(said) if "charlie" in c)
    assert (ended + 1) * 0.6 < second_start
    # The next utterance's first decode forced nothing and had the init prompt alone as
    # its context: the first utterance's words are another utterance's.
    begins = policy.decoder.begins
    after = next(b for b, seconds in zip(begins, policy.decoder.encoded) if b[1] == [] and seconds < 2.5 and b is not begins[0])
    assert after == (tokens_of("golf"), [])
    assert policy.skipped_passes >= 1  # the silence between the two costs no decode


def test_the_decoder_learns_that_the_audio_ends_before_the_stream_s_last_decode_and_not_before():
    """``end_of_audio``: called once, after every pass's decode and before the stream's
    last (an utterance's last decode with ``vad`` is not the stream's: audio follows it)."""
    for vad in (False, True):
        audio, _ = two_utterances()
        policy = AlignAtt(ToneAttentionBackend(), vad=vad)
        if vad:
            with_loudness_vad(policy)
        ended = []
        if vad:
            end_utterance = policy.end_utterance
            policy.end_utterance = lambda pause: ended.append(pause) or end_utterance(pause)
        size = int(0.6 * SAMPLE_RATE)
        for start in range(0, len(audio), size):
            policy.insert_audio(audio[start : start + size])
            policy.process_iter()
        decoder = policy.decoder
        passes = len(decoder.encoded)
        assert passes > 3 and decoder.encodes_before_end is None, vad
        assert len(ended) == (1 if vad else 0)
        policy.finish()
        assert decoder.encodes_before_end == passes and len(decoder.encoded) == passes + 1, vad


def test_a_decoder_without_end_of_audio_still_finishes_the_stream():
    """The contract lets a decoder be any object with its members; ``end_of_audio`` is
    optional among them."""

    class Plain:  # not derived from IncrementalDecoder, and without end_of_audio
        def __init__(self, decoder):
            self._decoder = decoder

        def __getattr__(self, name):
            if name == "end_of_audio":
                raise AttributeError(name)
            return getattr(self._decoder, name)

    audio, _ = tone_words(TEXT)
    policy = AlignAtt(ToneAttentionBackend())
    inner = policy.decoder
    policy.decoder = Plain(inner)
    commits, last = stream(policy, audio)
    assert [w for c in commits for w in texts(c)] + texts(last) == TEXT.split()
    assert inner.encodes_before_end is None


async def test_a_session_tells_its_decoder_that_the_audio_ends_through_the_batcher(monkeypatch, no_ffmpeg_left):
    """The session's wrappers (the cost counter, the batcher's) pass ``end_of_audio`` on
    to the decoder: each of two batched sessions' decoders learns it once, before its last
    encoder run."""
    calls: dict[int, list[str]] = {}
    encode, end_of_audio = ToneIncrementalDecoder.encode, ToneIncrementalDecoder.end_of_audio

    def recording(name, method):
        def call(self, *args):
            calls.setdefault(id(self), []).append(name)
            return method(self, *args)

        return call

    monkeypatch.setattr(ToneIncrementalDecoder, "encode", recording("encode", encode))
    monkeypatch.setattr(ToneIncrementalDecoder, "end_of_audio", recording("end", end_of_audio))
    config = rtlab.StreamConfig(
        backend="test-attention", model="told", backend_options={"max_batch": 2, "batch_wait_ms": 20},
        policy="alignatt", policy_options={"min_chunk": 0.5},
    )  # fmt: skip
    words = ["alpha bravo charlie delta", "one two three four five"]
    together = await asyncio.gather(*(run_processor(rtlab.AudioProcessor(config, clock="unaware"), tone_words(t)[0]) for t in words))
    assert [events[-1]["text"] for events in together] == words
    assert len(calls) == 2
    for sequence in calls.values():
        assert sequence.count("end") == 1 and sequence[-2:] == ["end", "encode"] and sequence.count("encode") > 2, sequence


def test_vad_skips_decodes_over_silence_and_keeps_a_short_buffer():
    policy = with_loudness_vad(AlignAtt(ToneAttentionBackend(), vad=True))
    commits, last = stream(policy, np.zeros(5 * SAMPLE_RATE, np.float32), chunk=1.2)
    assert policy.decoder.encoded == []  # not even at the end: nobody spoke
    assert all(c == [] for c in commits) and policy.skipped_passes == len(commits)
    assert policy.buffered_seconds <= KEEP_SILENCE + 1e-6


def test_vad_the_first_decode_of_an_utterance_hears_little_of_the_silence_before_it():
    # 3 s of silence, then "alpha bravo" (its first tone at 3.3 s). The decodes over the
    # silence were skipped, keeping KEEP_SILENCE seconds of it; the first decode over the
    # speech hears ONSET_LEAD seconds before it, no more.
    speech, _ = tone_words("alpha bravo")
    audio = np.concatenate([np.zeros(3 * SAMPLE_RATE, np.float32), speech])
    policy = with_loudness_vad(AlignAtt(ToneAttentionBackend(), vad=True))
    commits, last = stream(policy, audio, chunk=1.2)
    assert policy.skipped_passes == 2
    assert policy.decoder.encoded[0] == pytest.approx(3.6 - (3.3 - ONSET_LEAD), abs=2 * FRAME / SAMPLE_RATE)
    assert [w for c in commits for w in texts(c)] + texts(last) == ["alpha", "bravo"]


def test_vad_the_stream_s_last_decode_hears_no_more_of_the_silence_than_an_utterance_end():
    audio, _ = tone_words("alpha bravo")  # bravo ends at 1.1 s
    policy = with_loudness_vad(AlignAtt(ToneAttentionBackend(), vad=True, vad_silence_ms=500))
    commits, last = stream(policy, np.concatenate([audio, np.zeros(int(0.4 * SAMPLE_RATE), np.float32)]), chunk=0.6)
    assert [w for c in commits for w in texts(c)] + texts(last) == ["alpha", "bravo"]
    assert policy.decoder.encoded[-1] == pytest.approx(policy.vac.speech_end + 0.2, abs=1e-3)
    assert policy.vac.speech_end < 1.2
    silent = with_loudness_vad(AlignAtt(ToneAttentionBackend(), vad=True))
    silent.insert_audio(np.zeros(SAMPLE_RATE, np.float32))
    assert silent.finish().committed == [] and silent.decoder.encoded == []  # nobody spoke: no decode


def test_vad_drops_words_the_last_decode_heard_outside_speech():
    """Whisper says "Thank you." in the silence after an utterance; the utterance's last
    decode keeps every word, except those heard where the VAD found no speech."""
    audio, _ = tone_words("alpha bravo")
    policy = with_loudness_vad(AlignAtt(ToneAttentionBackend(), vad=True, vad_silence_ms=500))
    original = policy._timed

    def with_a_ghost(words, attended):
        timed = original(words, attended)
        if timed and timed[-1].text.strip() == "bravo":
            ghost = _Emitted(" ghost", [], timed[-1].end + 0.45, timed[-1].end + 0.65)  # in the pause
            timed.append(ghost)
        return timed

    policy._timed = with_a_ghost
    commits, last = stream(policy, np.concatenate([audio, np.zeros(3 * SAMPLE_RATE, np.float32)]), chunk=0.6)
    words = [w for c in commits for w in texts(c)] + texts(last)
    assert words[:2] == ["alpha", "bravo"] and "ghost" not in words


# -- the buffer and the context --------------------------------------------------------------------


def test_audio_that_leaves_the_buffer_becomes_context():
    audio, _ = tone_words(TEXT)
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=1.0, audio_max_len=2.5)
    passes, last = stream(policy, audio, chunk=1.0)
    assert " ".join(w["text"] for commit in passes + [last] for w in commit) == TEXT
    decoder = policy.decoder
    assert max(decoder.encoded) <= 2.5
    assert policy.buffer_offset > 0
    # Every begin's context and forced tokens are, in order, what was committed before.
    committed: list[int] = []
    emitted = [commit for commit in passes + [last]]
    for (context, forced), before in zip(decoder.begins, emitted):
        assert context + forced == committed[len(committed) - len(context) - len(forced) :]
        committed += tokens_of(*texts(before))
    assert any(context for context, _ in decoder.begins)  # the carry-over happened


@pytest.mark.parametrize("audio_max_len, chunk", [(1.5, 0.3), (1.5, 0.6), (1.8, 1.0), (2.0, 0.6), (2.0, 1.0)])
def test_a_trim_where_every_emitted_word_leaves_does_not_cut_inside_the_last(audio_max_len, chunk):
    """The audio that must leave ends inside the last emitted word: the cut moves to that
    word's end, or the rest of it, heard at the buffer's start, would be committed again."""
    audio, _ = tone_words(TEXT)
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=min(chunk, 1.0), audio_max_len=audio_max_len)
    commits, last = stream(policy, audio, chunk=chunk)
    assert [w for c in commits for w in texts(c)] + texts(last) == TEXT.split()
    assert policy.buffer_offset > 0 and policy.context_words  # words left the buffer
    assert max(policy.decoder.encoded) <= audio_max_len


def test_the_init_prompt_is_context_until_trimmed_and_the_static_prompt_stays():
    audio, _ = tone_words(TEXT)
    policy = AlignAtt(
        ToneAttentionBackend(), min_chunk=1.0, audio_max_len=2.5, max_context_tokens=6,
        init_prompt="zero one", static_init_prompt="kilo",
    )  # fmt: skip
    passes, last = stream(policy, audio, chunk=1.0)
    begins = policy.decoder.begins
    assert begins[0][0] == tokens_of("kilo", "zero", "one")
    contexts = [context for context, _ in begins]
    assert all(c[:2] == tokens_of("kilo") and len(c) <= 6 for c in contexts)
    assert contexts[-1] != begins[0][0]  # the init prompt scrolled out for the stream's words
    assert " ".join(w["text"] for commit in passes + [last] for w in commit) == TEXT


def test_context_leaves_room_for_new_tokens():
    policy = AlignAtt(ToneAttentionBackend())
    policy.context_words = [tokens_of("alpha")] * 300  # 600 tokens: more than a decode holds
    context = policy.context(forced=100)
    assert len(context) + 100 <= policy.decoder.max_tokens - 20
    assert len(policy.context_words) == len(context) // 2


# -- sessions ---------------------------------------------------------------------------------------


async def run_processor(processor: rtlab.AudioProcessor, audio: np.ndarray) -> list[dict]:
    events = await processor.create_tasks()
    feeder = asyncio.create_task(feed_bytes(processor, wav_bytes(audio), realtime=False))
    received = [event async for event in events]
    await feeder
    await processor.cleanup()
    return received


async def test_the_decoder_state_is_freed_at_cleanup_and_the_backend_keeps_none():
    config = rtlab.StreamConfig(backend="test-attention", policy="alignatt", policy_options={"min_chunk": 0.5})
    processor = rtlab.AudioProcessor(config, clock="unaware")
    await processor.create_tasks()
    decoder = weakref.ref(processor.policy.decoder)
    backend = processor.backend
    await processor.process_audio(wav_bytes(tone_words("alpha bravo charlie delta")[0]))
    await asyncio.sleep(0.2)  # some passes ran
    await processor.cleanup()  # in the middle of the stream
    gc.collect()
    assert processor.policy is None and decoder() is None
    assert not [value for value in vars(backend).values() if "Decoder" in type(value).__name__]


async def test_alignatt_passes_report_what_the_decoder_did_and_the_modeled_clock_counts_it():
    from rtlab.core.costs import Calibration, CostModel, key_for
    from rtlab.core.instances import get_backend

    config = rtlab.StreamConfig(backend="test-attention", policy="alignatt", policy_options={"min_chunk": 0.5})
    weights = {"encoder_runs": 0.3, "begins": 0.02, "begin_tokens": 0.001, "steps": 0.01}
    costs = CostModel()
    costs.add(Calibration(key=key_for(config, get_backend(config)), weights=weights))
    audio = tone_words("alpha bravo charlie delta echo foxtrot")[0]
    runs = []
    for _ in range(2):
        processor = rtlab.AudioProcessor(config, clock="modeled", cost_model=costs)
        events = await run_processor(processor, audio)
        runs.append(([{k: v for k, v in e.items() if k != "measured_compute_seconds"} for e in events],
                     [features for features, _ in processor.pass_costs]))  # fmt: skip
    (events, passes), (again, _) = runs
    assert events == again, "the same events on every modeled run"
    totals = {name: sum(p.get(name, 0.0) for p in passes) for name in weights}
    assert totals["encoder_runs"] >= 4 and totals["steps"] > totals["begins"] >= totals["encoder_runs"] - 1
    assert set().union(*passes) <= set(weights)
    summary = events[-1]
    assert summary["compute_seconds"] == pytest.approx(sum(weights[n] * totals[n] for n in weights))
    committed = [e for e in events if e["type"] == "commit"]
    assert committed[0]["emitted_at"] > committed[0]["words"][-1]["end"], "compute moved the clock"


async def test_a_calibration_of_another_policys_passes_says_to_calibrate_alignatts():
    from rtlab.core.costs import Calibration, CostModel, key_for
    from rtlab.core.instances import get_backend

    config = rtlab.StreamConfig(backend="test-attention", policy="alignatt", policy_options={"min_chunk": 0.5})
    costs = CostModel()  # what calibrating LocalAgreement's passes fits: transcribe's features
    costs.add(Calibration(key=key_for(config, get_backend(config)), weights={"calls": 0.1, "audio_seconds": 0.01}))
    events = await run_processor(rtlab.AudioProcessor(config, clock="modeled", cost_model=costs),
                                 tone_words("alpha bravo charlie")[0])  # fmt: skip
    assert events[-1]["type"] == "error"
    message = events[-1]["message"]
    assert "has no weight for 'begin_tokens'" in message  # the first of the decoder's features
    assert message.endswith("--policy alignatt") and "rtlab calibrate --backend test-attention" in message


async def test_concurrent_sessions_share_no_decoder_state(no_ffmpeg_left):
    config = rtlab.StreamConfig(backend="test-attention", policy="alignatt", policy_options={"min_chunk": 0.5})
    texts_ = ["alpha bravo charlie delta echo", "one two three four five six seven"]
    processors = [rtlab.AudioProcessor(config, clock="unaware") for _ in texts_]
    results = await asyncio.gather(*(run_processor(p, tone_words(t)[0]) for p, t in zip(processors, texts_)))
    assert processors[0].backend is processors[1].backend  # one shared backend instance
    alone = await run_processor(rtlab.AudioProcessor(config, clock="unaware"), tone_words(texts_[0])[0])
    assert [events[-1]["text"] for events in results] == texts_
    assert [e for e in results[0] if e["type"] == "commit"] == [e for e in alone if e["type"] == "commit"]


async def test_concurrent_sessions_batched_commit_what_they_commit_unbatched(no_ffmpeg_left):
    """With batching on, the encoder runs and decoder steps of concurrent sessions share
    batches (the decoder double's own defaults run a batch one call after another), and
    every session commits the words, at the times, it commits with batching off."""
    from rtlab.core.scheduler import scheduler_for

    texts_ = ["alpha bravo charlie delta echo", "one two three four five six seven", "golf hotel india juliett kilo lima"]

    def config(batched: bool) -> rtlab.StreamConfig:
        options = {"max_batch": 4, "batch_wait_ms": 20} if batched else {}
        return rtlab.StreamConfig(
            backend="test-attention", model="batched" if batched else None, backend_options=options,
            policy="alignatt", policy_options={"min_chunk": 0.5},
        )  # fmt: skip

    def commits(events: list[dict]) -> list[dict]:
        return [e for e in events if e["type"] == "commit"]

    alone = [await run_processor(rtlab.AudioProcessor(config(False), clock="unaware"), tone_words(t)[0]) for t in texts_]
    processors = [rtlab.AudioProcessor(config(True), clock="unaware") for _ in texts_]
    together = await asyncio.gather(*(run_processor(p, tone_words(t)[0]) for p, t in zip(processors, texts_)))
    assert [events[-1]["text"] for events in together] == texts_
    assert [commits(events) for events in together] == [commits(events) for events in alone]
    batcher = scheduler_for(processors[0].backend).batcher
    stats = batcher.stats
    assert max(stats.by_kind["encode_batch"]) > 1 and max(stats.by_kind["step_batch"]) > 1, stats.by_kind
    gc.collect()
    assert not list(batcher.decoding), "the batcher holds no session's decoder after its stream"


async def test_a_tone_stream_through_real_ffmpeg_gives_its_text(tmp_path, no_ffmpeg_left):
    import subprocess

    from rtlab.decoders import find_ffmpeg

    audio, _ = tone_words(TEXT)
    ogg = tmp_path / "tones.ogg"
    subprocess.run([find_ffmpeg(), "-v", "error", "-f", "wav", "-i", "pipe:0", "-c:a", "libopus", str(ogg)],
                   input=wav_bytes(audio), check=True)  # fmt: skip
    events = await rtlab.stream_file(ogg, rtlab.StreamConfig(backend="test-attention", policy="alignatt"), clock="simulated")
    assert events[-1]["type"] == "summary" and events[-1]["text"] == TEXT
    commits = [e for e in events if e["type"] == "commit"]
    assert len(commits) > 2 and [e["emitted_at"] for e in commits] == sorted(e["emitted_at"] for e in commits)


# -- front ends -------------------------------------------------------------------------------------


def test_rtlab_transcribe_accepts_policy_alignatt(tmp_path):
    from click.testing import CliRunner

    from rtlab.cli import cli as main

    clip = tmp_path / "tones.wav"
    clip.write_bytes(wav_bytes(tone_words(TEXT)[0]))
    result = CliRunner().invoke(
        main, ["transcribe", str(clip), "--backend", "test-attention", "--policy", "alignatt",
               "-p", "frame_threshold=20", "--clock", "unaware", "--format", "jsonl"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["text"] == TEXT
    refused = CliRunner().invoke(main, ["transcribe", str(clip), "--backend", "test", "--policy", "alignatt"])
    assert refused.exit_code != 0 and "capability 'incremental-decoding'" in refused.output


def test_bench_runs_both_policies_on_the_same_backend(tone_corpus, tmp_path):
    from rtlab.config import StreamConfig
    from rtlab.eval.bench import run_bench

    configs = [
        StreamConfig.parse("backend=test-attention,policy=local-agreement,min_chunk=0.5"),
        StreamConfig.parse("backend=test-attention,policy=alignatt,min_chunk=0.5"),
    ]
    run = run_bench(tone_corpus, configs, clock="unaware", work_dir=tmp_path)
    assert [s["wer"]["value"] for s in run.summaries] == [0.0, 0.0]
    assert all(s["latency"]["count"] for s in run.summaries)


async def test_a_compare_panel_shows_both_policies_side_by_side():
    pytest.importorskip("ipywidgets")
    from rtlab.widgets import ComparePanel

    audio, _ = tone_words(TEXT)
    panel = ComparePanel(
        audio, ["backend=test-attention,policy=local-agreement,min_chunk=0.5",
                "backend=test-attention,policy=alignatt,min_chunk=0.5",
                "backend=test,policy=alignatt"],
        reference=TEXT, clock="unaware", view="text",
    )  # fmt: skip
    await panel.start()
    agreement, alignatt, refused = panel.columns
    assert agreement.state.text == TEXT and alignatt.state.text == TEXT
    assert refused.state.status == "failed" and "capability 'incremental-decoding'" in refused.state.error


async def test_api_backends_says_which_policies_each_backend_can_run(make_server):
    import tornado.httpclient

    running = await make_server()
    response = await tornado.httpclient.AsyncHTTPClient().fetch(running.url + "/api/backends")
    info = json.loads(response.body)
    backends = {b["name"]: b for b in info["backends"]}
    policies = {p["name"]: p for p in info["policies"]}
    assert policies["alignatt"]["requires"] == ["incremental-decoding"] and policies["local-agreement"]["requires"] == []
    assert backends["test"]["capabilities"] == [] and backends["test"]["policies"] == ["local-agreement"]
    assert backends["test-attention"]["capabilities"] == ["incremental-decoding"]
    assert backends["test-attention"]["policies"] == ["alignatt", "local-agreement"]
    # What older clients read is still there.
    assert {"default", "backends", "policies", "decoders", "formats"} <= set(info)
    assert {"name", "description", "plugin", "options", "devices"} <= set(backends["test"])


def test_the_policies_benchmark_compares_both_policies_and_writes_its_page(tone_corpus, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "policies.py"
    spec = importlib.util.spec_from_file_location("policies_benchmark", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = tmp_path / "page.md"
    argv = ["--compare", "--backend", "test-attention", "--corpus", str(tone_corpus), "--languages", "en",
            "--english-model", "tones", "--clocks", "unaware", "--out", str(tmp_path / "out"), "--markdown", str(page),
            "--variant", "short=policy=alignatt,min_chunk=0.5,frame_threshold=10"]  # fmt: skip
    assert script.main(argv) == 0
    report = json.loads((tmp_path / "out" / "policies-alignatt.json").read_text())
    assert [(r["policy"], r["wer"], r["kept"]) for r in report["rows"]] == [
        ("local-agreement", 0.0, 1.0), ("alignatt", 0.0, 1.0), ("short", 0.0, 1.0)
    ]
    short = report["rows"][2]
    assert short["options"]["policy"] == "alignatt" and short["options"]["policy.min_chunk"] == 0.5
    assert short["first_text"] < report["rows"][1]["first_text"], "smaller chunks show text sooner"
    text = page.read_text()
    assert "| en (tones) | unaware | alignatt | 0.0% | 0.0% | 100.0% |" in text and "--compare" in text
    assert "- `short`: `policy=alignatt,min_chunk=0.5,frame_threshold=10`" in text
    assert f"(backend test-attention, {script.decoding(report['rows'])};" in text
    # how each model decoded, from the loaded backends' beam_size (the default differs by model)
    loaded = [{"model": "tiny.en", "beam_size": 1}, {"model": "base", "beam_size": 5}, {"model": "base", "beam_size": 1}]
    assert script.decoding(loaded) == "base greedy or 5 beams, tiny.en greedy"
    assert script.decoding([{"model": "tones"}]) == "the backend's decoding"
    # both hear every tone: no difference, and nothing for the five clips to spread
    assert report["rows"][0]["minus_local_agreement"] is None
    files = report["rows"][1]["files"]
    assert report["rows"][1]["minus_local_agreement"] == {
        "value": 0.0, "low": 0.0, "high": 0.0, "confidence": 0.95, "resamples": 2000, "groups": files}
    assert f"- en, unaware, alignatt: +0.0 points (95% CI +0.0 to +0.0, {files} clips)" in text
    with pytest.raises(SystemExit):
        script.main(argv[:-2] + ["--variant", "alignatt=min_chunk=1"])  # a name of its own


ELEVEN_WORDS = [2 * index for index in range(LOOP_LONGEST + 1)]  # first halves: a token a word


def looping(choices):
    """A test-double backend whose decoder says ``choices`` over and over (tokens), never
    the end of text."""

    class Looping(ToneAttentionBackend):
        def incremental_decoder(self, *, language=None):
            decoder = super().incremental_decoder(language=language)
            said = []
            decoder._choice = lambda: said.append(1) or choices[(len(said) - 1) % len(choices)]
            return decoder

    return Looping()


def test_the_last_decode_of_a_looping_decoder_stops_at_its_token_budget():
    # Eleven words over and over: longer than the loop rule looks for.
    policy = AlignAtt(looping(ELEVEN_WORDS))
    policy.insert_audio(tone_words("alpha")[0])  # 0.8 s: 16 + 8 x 0.8 = 22 tokens at most
    last = policy.finish()
    assert len(last.committed) == 22 and policy.stops["budget"] == 1


def test_a_decode_stops_where_the_decoder_starts_repeating_itself():
    """ "al al al ...": the attention rule would not stop it (the model keeps looking at the
    same audio); three times the same words in a row, and the decode stops after the first."""
    policy = AlignAtt(looping([0]), never_fire=True)
    policy.insert_audio(tone_words("alpha bravo charlie")[0])
    assert texts(policy.process_iter().committed) == ["al"] and policy.stops["loop"] == 1
    two = AlignAtt(looping([0, 2]), never_fire=True)
    two.insert_audio(tone_words(TEXT)[0])
    assert texts(two.process_iter().committed) == ["al", "br"] and two.stops["loop"] == 1


class _LoopsAfterCharlie(ToneIncrementalDecoder):
    """Says "bravo charlie" over and over once it said "charlie", looking at where
    "charlie" ends (the French clip's "Votre type de type de ...")."""

    def encode(self, audio):
        frames = super().encode(audio)
        said = [VOCABULARY[token // 2] for token, _ in self._heard[::2]]
        if "charlie" in said:
            end = 2 * said.index("charlie") + 2
            looking_at = self._heard[end - 1][1]
            self._heard = self._heard[:end] + [(token, looking_at) for token, _ in self._heard[end - 4 : end]] * 20
        return frames


class _LoopingBackend(ToneAttentionBackend):
    def incremental_decoder(self, *, language=None):
        return _LoopsAfterCharlie(language)


def test_a_loop_that_goes_on_from_the_committed_words_restarts_the_buffer_after_its_first_turn():
    policy = AlignAtt(_LoopingBackend(), never_fire=True)
    audio, spans = tone_words(TEXT)
    policy.insert_audio(audio)
    first = policy.process_iter()
    assert texts(first.committed) == ["alpha", "bravo", "charlie"] and policy.stops["loop"] == 1
    # Forced with those words, the decoder goes on with "bravo charlie": no new word is
    # kept, and the audio after "charlie" is decoded again with nothing forced.
    policy.insert_audio(np.zeros(SAMPLE_RATE, np.float32))
    second = policy.process_iter()
    assert policy.loop_restarts == 1 and policy.stops["loop"] == 2
    assert policy.buffer_offset == pytest.approx(first.committed[-1]["end"])
    assert policy.decoder.begins[-1][1] == [], "nothing forced after the restart"
    assert texts(second.committed) == ["delta", "echo", "foxtrot", "golf"]
    assert texts(policy.finish().committed) == []
    assert second.committed[0]["start"] == pytest.approx(spans[3]["start"], abs=0.05), "delta, where it is said"


def test_a_loop_of_a_whole_phrase_is_cut_too():
    # tiny.en's "the same as the other, the same as the other, ...": five words.
    policy = AlignAtt(looping([0, 2, 4, 6, 8]), never_fire=True, frame_threshold=0)
    policy.insert_audio(tone_words(TEXT)[0])
    assert texts(policy.process_iter().committed) == ["al", "br", "cha", "de", "ec"] and policy.stops["loop"] == 1


def test_the_last_decode_goes_on_after_a_loop_with_the_audio_after_its_first_turn():
    # No decode follows the stream's last: the audio after the loop is decoded at once.
    policy = AlignAtt(_LoopingBackend())
    audio, _ = tone_words(TEXT)
    policy.insert_audio(audio)
    assert texts(policy.finish().committed) == TEXT.split()
    assert policy.stops["loop"] == 1 and policy.loop_restarts == 1


def test_loop_restarts_in_one_pass_are_bounded():
    class AlwaysLooping(ToneIncrementalDecoder):  # every decode, from wherever it starts
        def encode(self, audio):
            frames = super().encode(audio)
            if len(self._heard) >= 4:
                self._heard = self._heard[:4] + [(token, frame) for token, frame in self._heard[2:4]] * 20
            return frames

    class Backend(ToneAttentionBackend):
        def incremental_decoder(self, *, language=None):
            return AlwaysLooping(language)

    policy = AlignAtt(Backend())
    policy.insert_audio(tone_words(TEXT)[0])
    committed = texts(policy.finish().committed)
    assert policy.loop_restarts == 2 and policy.stops["loop"] == 3
    assert committed == ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def test_a_decode_s_tokens_for_the_buffer_are_bounded_by_its_length():
    policy = AlignAtt(looping(ELEVEN_WORDS), never_fire=True, frame_threshold=0)
    policy.insert_audio(tone_words("alpha")[0])  # 0.8 s: 22 tokens for the buffer at most
    assert len(policy.process_iter().committed) == 22 and policy.stops["budget"] == 1
    policy.insert_audio(np.zeros(int(0.5 * SAMPLE_RATE), np.float32))  # 1.3 s: 26, 22 of them forced
    assert len(policy.process_iter().committed) == 4 and policy.stops["budget"] == 2


def test_decode_afresh_keeps_the_rest_of_a_word_heard_over_the_committed_one_as_joining_it():
    """With the committed words gone from the buffer, a decode from its start hears
    "charliedelta" over the committed "charlie": "delta" is new and goes on from it."""
    policy = AlignAtt(ToneAttentionBackend(), min_chunk=0.6, decode_afresh=True)
    policy._said = [{"text": "charlie", "start": 0.5, "end": 1.0}]
    policy._last_end = 1.0
    frames = policy.decoder.frames_per_second
    words = [(" charliedelta", [1, 2]), (" echo", [3])]
    new, attended, joins = policy._not_heard_before(words, [int(0.5 * frames), int(1.5 * frames), int(1.7 * frames)])
    assert (new, joins) == ([("delta", [1, 2]), (" echo", [3])], True)
    assert attended == [int(0.5 * frames), int(1.5 * frames), int(1.7 * frames)]
    # The mark goes with the word to its commit event.
    emitted = policy._timed(new, attended)
    emitted[0].joins = True
    assert [w.get("joins", False) for w in _as_words(emitted)] == [True, False]


# -- beam search ------------------------------------------------------------------------------


class GardenPathDecoder(IncrementalDecoder):
    """A scripted decoder that searches beams: one token a word, the probability of each
    next token set by ``script`` (the tokens so far -> {token: probability}; the rest of
    the mass spread over the other tokens), and each token fed looking at frame 10 times
    its place in the hypothesis, or at the end of the audio after a hypothesis in
    ``looking_at_end``. With the default script greedy decoding says "I scream" (0.5, then
    0.3) and a search of two beams "ice cream" (0.4, then 0.9)."""

    WORDS = [" I", " ice", " scream", " cream", " scare", " the"]
    I, ICE, SCREAM, CREAM, SCARE, THE = range(6)
    eot = 6
    beam_search = True
    max_tokens = 200

    def __init__(self, beam_size: int, script: dict | None = None, looking_at_end: tuple = ()) -> None:
        self.beam_size = beam_size
        eot, g = self.eot, GardenPathDecoder
        self.script = script or {
            (): {g.I: 0.5, g.ICE: 0.4},
            (g.I,): {g.SCREAM: 0.3, g.SCARE: 0.3, g.THE: 0.2},
            (g.ICE,): {g.CREAM: 0.9},
            (g.I, g.SCREAM): {eot: 0.9},
            (g.I, g.SCARE): {eot: 0.9},
            (g.I, g.THE): {eot: 0.9},
            (g.ICE, g.CREAM): {eot: 0.95},
        }
        self.looking_at_end = set(looking_at_end)
        self.frames = 0
        self.hypotheses: list[tuple[int, ...]] = []
        self.steps: list[int] = []  #: hypotheses fed per feed_beams

    def encode(self, audio):
        self.frames = len(audio) // 320
        return self.frames

    def begin(self, context, forced):
        self.hypotheses = [tuple(forced)]
        rows = [self._row(0)] * (2 + len(forced)) + [self._row(10 * len(forced) + 10, tuple(forced))]
        return self._decoded(tuple(forced), np.stack(rows, axis=1))

    def feed(self, token):
        return self.feed_beams([token], [0])[0]

    def feed_beams(self, tokens, sources):
        self.steps.append(len(tokens))
        self.hypotheses = [self.hypotheses[s] + (t,) for t, s in zip(tokens, sources)]
        return [self._decoded(h, self._row(10 * len(h) + 10, h)[:, None, :]) for h in self.hypotheses]

    def _decoded(self, hypothesis, attention):
        probabilities = dict(self.script.get(hypothesis, {self.eot: 0.9}))
        rest = [t for t in range(self.eot + 1) if t not in probabilities]
        for token in rest:
            probabilities[token] = (1.0 - sum(probabilities.values())) / len(rest) if rest else 0.0
        logits = np.log(np.array([probabilities[t] for t in range(self.eot + 1)]))
        return Decoded(int(np.argmax(logits)), attention.astype(np.float32), logits)

    def _row(self, frame, hypothesis=None):
        if hypothesis in self.looking_at_end:
            frame = self.frames - BOX
        row = np.ones(self.frames, np.float32)
        row[frame : frame + BOX] += 10.0
        return np.repeat((row / row.sum())[None, :], 2, axis=0)

    def words(self, tokens):
        return [(self.WORDS[t], [t]) for t in tokens if t < self.eot]

    def text_tokens(self, text):
        return [self.WORDS.index(" " + w) for w in text.split()]


def garden_path(beam_size: int, **script) -> ToneAttentionBackend:
    class Backend(ToneAttentionBackend):
        def incremental_decoder(self, *, language=None):
            return GardenPathDecoder(beam_size, **script)

    return Backend()


FOUR_SECONDS = np.full(4 * SAMPLE_RATE, 0.1, np.float32)


@pytest.mark.parametrize("beam_size, said", [(1, ["I", "scream"]), (2, ["ice", "cream"]), (3, ["ice", "cream"])])
def test_beam_search_finds_the_likelier_words_greedy_decoding_passes_by(beam_size, said):
    policy = AlignAtt(garden_path(beam_size))
    assert policy.beam_size == beam_size
    policy.insert_audio(FOUR_SECONDS)
    assert texts(policy.finish().committed) == said
    assert policy.stops["end_of_text"] == 1
    # Each step fed the beam's hypotheses at once (greedy: one at a time).
    assert max(policy.decoder.steps) == beam_size


def test_a_beam_of_one_decodes_as_the_greedy_decode():
    policy = AlignAtt(garden_path(1), frame_threshold=25)
    frames = policy.decoder.encode(FOUR_SECONDS)
    for threshold in (None, 25):
        greedy = policy._decode([], [], frames, threshold=threshold, budget=10)
        beams = policy._decode_beams([], [], frames, threshold=threshold, budget=10)
        assert (beams.tokens, beams.attended, beams.stop) == (greedy.tokens, greedy.attended, greedy.stop)


def test_a_beam_search_stops_where_its_leading_hypothesis_looks_at_the_end_of_the_audio():
    """"ice cream" leads, and its next token would be chosen looking at the last frames:
    the decode stops with the leading hypothesis's words ("I scream" looks elsewhere), the
    last of them held for the next chunk, as in a greedy decode."""
    g = GardenPathDecoder
    script = {
        (): {g.I: 0.5, g.ICE: 0.4},
        (g.I,): {g.SCREAM: 0.3, g.SCARE: 0.3},
        (g.ICE,): {g.CREAM: 0.9},
        (g.ICE, g.CREAM): {g.THE: 0.9},
    }
    policy = AlignAtt(garden_path(2, script=script, looking_at_end=[(g.ICE, g.CREAM)]))
    policy.insert_audio(FOUR_SECONDS)
    step = policy.process_iter()
    assert texts(step.committed) == ["ice"] and texts(step.partial) == ["cream"]
    assert policy.stops == {"attention": 1, "end_of_text": 0, "budget": 0, "loop": 0}
    assert policy.emitted[0].start == pytest.approx(10 / 50), "timed where it was chosen looking"


def test_a_beam_search_s_decode_is_bounded_by_its_token_budget():
    # "I ice ice I ice I I ice ...": the Thue-Morse sequence, which never says the same
    # words three times in a row (the loop rule does not stop it), and never ends.
    g = GardenPathDecoder
    said = [bin(n).count("1") % 2 for n in range(100)]
    policy = AlignAtt(garden_path(2, script={tuple(said[:n]): {said[n]: 0.9} for n in range(100)}))
    policy.insert_audio(FOUR_SECONDS[: SAMPLE_RATE // 2])  # 0.5 s: 16 + 8 x 0.5 = 20 tokens at most
    committed = policy.finish().committed
    assert policy.stops == {"attention": 0, "end_of_text": 0, "budget": 1, "loop": 0}
    assert texts(committed) == [g.WORDS[t].strip() for t in said[:20]]


def test_a_beam_search_stops_where_its_leading_hypothesis_falls_into_a_loop():
    g = GardenPathDecoder
    policy = AlignAtt(garden_path(2, script={(g.ICE,) * n: {g.ICE: 0.9} for n in range(100)}), never_fire=True)
    policy.insert_audio(FOUR_SECONDS)
    assert texts(policy.process_iter().committed) == ["ice"]
    assert policy.stops["loop"] == 1


def test_beams_on_a_decoder_that_cannot_search_them_are_refused_in_one_line():
    class Backend(ToneAttentionBackend):
        def incremental_decoder(self, *, language=None):
            decoder = super().incremental_decoder(language=language)
            decoder.beam_size = 3
            return decoder

    with pytest.raises(InvalidOption) as error:
        AlignAtt(Backend())
    assert one_line(error.value) == (
        "policy 'alignatt': backend 'test-attention' has beam_size=3, but its incremental decoder cannot search "
        "beams; use beam_size=1"
    )


def test_a_decoder_without_scores_says_it_cannot_search_beams():
    decoder = ToneAttentionBackend().incremental_decoder()
    with pytest.raises(NotImplementedError, match="cannot search beams"):
        decoder.feed_beams([0], [0])
    with pytest.raises(ValueError, match="no scores"):
        Decoded(0, np.zeros((1, 1, 1))).log_probs()
