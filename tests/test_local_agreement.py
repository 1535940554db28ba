"""LocalAgreement-2 driven directly with scripted hypotheses (no processor, no threads).

``ScriptedBackend`` returns one scripted hypothesis per call, with word times relative to
the audio it was given (the policy's buffer), and records the prompts and buffer lengths.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtlab.core.events import join_words
from rtlab.errors import InvalidOption
from rtlab.levels import frame_rms
from rtlab.policies.local_agreement import KEEP_SILENCE, ONSET_LEAD, LocalAgreement
from rtlab.testing import ScriptedBackend
from rtlab.vad import FRAME

SR = 16_000


def words(spec: str) -> list[dict]:
    """``"a@0.0-0.4 b@0.5-0.9"`` → words with those times."""
    result = []
    for item in spec.split():
        text, times = item.split("@")
        start, end = times.split("-")
        result.append({"text": text, "start": float(start), "end": float(end), "probability": 0.9})
    return result


def policy_for(*hypotheses: str, **options) -> tuple[LocalAgreement, ScriptedBackend]:
    """A policy over scripted hypotheses; the audio (zeros) does not matter, so the check
    for words heard in silence and the bound on the quiet before the buffer's speech are
    off unless a test turns them on."""
    backend = ScriptedBackend([words(h) for h in hypotheses])
    options.setdefault("silence_factor", 0)
    options.setdefault("lead_silence_sec", None)
    return LocalAgreement(backend, language="en", **options), backend


def step(policy: LocalAgreement, seconds: float = 1.0):
    policy.insert_audio(np.zeros(int(round(seconds * SR)), np.float32))
    return policy.process_iter()


def texts(ws) -> list[str]:
    return [w["text"] for w in ws]


def agreed_then_tail(first: str, second: str, third: str, seconds: float = 2.0) -> tuple[list[str], list[str]]:
    """Three scripted passes ``seconds`` apart, then the end of the stream: what the
    second pass committed, and what the third pass and the end added after it."""
    policy, _ = policy_for(first, second, third)
    step(policy, seconds)
    agreed = texts(step(policy, seconds).committed)
    step(policy, seconds)
    return agreed, texts(policy.finish().committed)


def test_commits_the_common_prefix_of_two_consecutive_hypotheses():
    policy, _ = policy_for("a@0.0-0.2 b@0.3-0.5 c@0.6-0.8", "a@0.0-0.2 b@0.3-0.5 d@0.6-0.9")
    first = step(policy)
    assert first.committed == []  # one hypothesis agrees with nothing yet
    assert texts(first.partial) == ["a", "b", "c"]
    second = step(policy)
    assert texts(second.committed) == ["a", "b"]
    assert texts(second.partial) == ["d"]
    assert texts(policy.committed) == ["a", "b"]


def test_agreement_ignores_case_and_edge_punctuation():
    policy, _ = policy_for("The@0.0-0.2 dog.@0.3-0.5 runs@0.6-0.8", "the@0.0-0.2 Dog,@0.3-0.5 sleeps@0.6-0.9")
    step(policy)
    second = step(policy)
    # The newer hypothesis's spelling is the one committed.
    assert texts(second.committed) == ["the", "Dog,"]


def test_committed_words_are_never_committed_again():
    policy, _ = policy_for(
        "a@0.0-0.2 b@0.3-0.5",
        "a@0.0-0.2 b@0.3-0.5 c@1.2-1.5",
        "a@0.0-0.2 b@0.3-0.5 c@1.2-1.5 d@2.2-2.5",
        "a@0.0-0.2 b@0.3-0.5 c@1.2-1.5 d@2.2-2.5",
    )
    committed = [w for _ in range(4) for w in step(policy).committed]
    assert texts(committed) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("after_d", ["speech", "quiet"])
@pytest.mark.parametrize("behind", [False, True])
def test_trims_the_buffer_in_the_pause_after_the_last_committed_word_and_prompts_with_what_left_it(behind, after_d):
    policy, backend = policy_for(
        "a@0.1-0.4",
        "a@0.1-0.4 b@1.2-1.6",  # commits a
        "a@0.1-0.4 b@1.2-1.6 c@2.1-2.5",  # commits b; 3 s > 2 s: cut in the b-c pause, 1.85
        "c@0.25-0.65 d@1.35-1.75",  # times relative to the buffer, which now starts at 1.85
        "d@0.35-0.75",  # commits c above (cut in the c-d pause, 2.85), then d
        buffer_trimming_sec=2.0,
        max_buffer_sec=10.0,
        prompt_pause_sec=None,  # the prompt runs across pauses (whisper_streaming's)
        overload_trimming_sec=2.0,
    )
    policy.behind = behind
    # Sound under the words, quiet in the pauses between them; after d, speech no pass
    # transcribed yet, or quiet.
    audio = np.random.default_rng(7).normal(0, 0.1, 5 * SR).astype(np.float32)
    for start, end in [(0.4, 1.2), (1.6, 2.1), (2.5, 3.2)] + ([(3.6, 5.0)] if after_d == "quiet" else []):
        audio[int(start * SR) : int(end * SR)] = 0
    committed = []
    offsets = []
    for second in range(5):
        policy.insert_audio(audio[second * SR : (second + 1) * SR])
        committed += policy.process_iter().committed
        offsets.append(policy.buffer_offset)
    assert texts(committed) == ["a", "b", "c", "d"]
    # After d, with speech after it and no word heard there yet, no pause confirms its
    # end: the buffer waits for one (a cut inside running speech loses words); behind
    # real time, where a longer buffer would put the stream further behind, it is cut at
    # d's end. Quiet after d is its pause: cut in the middle of the 1.4 s heard so far.
    last = 4.3 if after_d == "quiet" else 3.6 if behind else 2.85
    assert offsets == pytest.approx([0.0, 0.0, 1.85, 2.85, last])
    assert backend.audio_lengths == pytest.approx([1.0, 2.0, 3.0, 2.15, 2.15])
    # Committed words still inside the buffer are not prompted; those that left it are.
    assert backend.prompts == ["", "", "", "a b", "a b c"]
    # Word times are stream times, whatever the buffer offset was. (Flat lists: pytest.approx
    # does not compare nested sequences such as a list of (start, end) pairs.)
    assert [w["start"] for w in committed] == pytest.approx([0.1, 1.2, 2.1, 3.2])
    assert [w["end"] for w in committed] == pytest.approx([0.4, 1.6, 2.5, 3.6])


def test_no_trimming_while_the_buffer_is_within_buffer_trimming_sec():
    policy, backend = policy_for("a@0.1-0.4", "a@0.1-0.4 b@1.2-1.6", "a@0.1-0.4 b@1.2-1.6 c@2.2-2.6")
    for _ in range(5):
        step(policy)
    assert texts(policy.committed) == ["a", "b", "c"]
    assert policy.buffer_offset == 0.0
    assert backend.audio_lengths == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert backend.prompts == [""] * 5


def test_without_commits_the_buffer_grows_until_max_buffer_sec():
    policy, _ = policy_for(*[f"w{i}@0.0-0.5" for i in range(1, 5)], buffer_trimming_sec=2.0, max_buffer_sec=10.0)
    for _ in range(4):
        assert step(policy).committed == []
    assert policy.buffered_seconds == 4.0 and policy.buffer_offset == 0.0


@pytest.mark.parametrize(
    "prompt_chars, prompt",
    [(200, "alpha bravo charlie"), (13, "bravo charlie"), (12, "charlie"), (7, "charlie"), (6, "")],
)
def test_prompt_is_the_last_whole_words_within_prompt_chars(prompt_chars, prompt):
    policy, backend = policy_for(
        "alpha@0.1-0.3 bravo@0.4-0.6 charlie@0.7-0.9",
        "alpha@0.1-0.3 bravo@0.4-0.6 charlie@0.7-0.9 delta@1.2-1.5",  # commits 3; trim at 0.9
        "delta@0.3-0.6",
        buffer_trimming_sec=1.0,
        prompt_chars=prompt_chars,
    )
    for _ in range(3):
        step(policy)
    assert backend.prompts[2] == prompt


@pytest.mark.parametrize(
    "first, gap_start, sentence_pause_sec, offset",
    [
        ("over.", 1.5, 0.8, 0.95),  # a sentence, then 1.1 s of pause: cut in its middle
        ("over.", 1.5, None, 0.0),  # off: the buffer is cut only past buffer_trimming_sec
        ("over", 1.5, 0.8, 0.0),  # no sentence end
        ("over.", 0.9, 0.8, 0.0),  # a pause of 0.5 s only
    ],
)
def test_sentence_pause_sec_cuts_the_buffer_after_a_finished_sentence_and_a_long_pause(
    first, gap_start, sentence_pause_sec, offset
):
    then = f"next@{gap_start}-{gap_start + 0.3}"
    policy, backend = policy_for(
        f"{first}@0.1-0.4", f"{first}@0.1-0.4 {then}", f"{first}@0.1-0.4 {then}",
        sentence_pause_sec=sentence_pause_sec, prompt_pause_sec=None,  # (the default leaves the sentence out)
    )  # fmt: skip
    assert texts(step(policy).committed) == []
    assert texts(step(policy).committed) == [first]
    assert policy.buffer_offset == pytest.approx(offset)
    if offset:  # the next pass hears the buffer from the cut on, prompted with the sentence
        step(policy)
        assert backend.prompts[-1] == first and backend.audio_lengths[-1] == pytest.approx(3 - offset)


@pytest.mark.parametrize(
    "first, sound_from, sentence_pause_sec, offset",
    [
        ("over.", None, 0.8, 1.2),  # quiet to the buffer's end (1.6 s): cut in its middle
        ("over.", 1.0, 0.8, 0.0),  # a sound from 1.0 s that no pass heard as a word: 0.6 s quiet
        ("over.", 1.0, 0.5, 0.7),  # long enough here: cut in the quiet, before the sound
        ("over", None, 0.8, 0.0),  # no sentence end
    ],
)
def test_sentence_pause_sec_cuts_in_the_pause_before_the_next_word_is_heard(
    first, sound_from, sentence_pause_sec, offset
):
    policy, backend = policy_for(
        f"{first}@0.1-0.4", f"{first}@0.1-0.4", "",
        sentence_pause_sec=sentence_pause_sec, prompt_pause_sec=None,
    )  # fmt: skip
    audio = np.zeros(2 * SR, np.float32)
    if sound_from is not None:
        audio[int(sound_from * SR) :] = np.random.default_rng(0).normal(0, 0.1, 2 * SR - int(sound_from * SR))
    policy.insert_audio(audio[:SR])
    assert texts(policy.process_iter().committed) == []
    policy.insert_audio(audio[SR:])
    second = policy.process_iter()
    assert texts(second.committed) == [first] and second.partial == []
    assert policy.buffer_offset == pytest.approx(offset)
    step(policy)  # the next pass hears the buffer from the cut on
    assert backend.audio_lengths[-1] == pytest.approx(3 - offset)


def test_sentence_pause_sec_must_be_a_number_of_seconds():
    for bad in (True, "1", 0.1, 11):
        with pytest.raises(InvalidOption, match="sentence_pause_sec"):
            policy_for("a@0-1", sentence_pause_sec=bad)


@pytest.mark.parametrize(
    "prompt_pause_sec, prompts",
    [
        (None, ["alpha", "alpha bravo"]),  # off: the prompt runs across pauses
        (1.0, ["", "bravo"]),  # 1.3 s of pause before bravo, 0.6 s after it
        (0.5, ["", ""]),  # both pauses are long enough
        (2.0, ["alpha", "alpha bravo"]),  # neither is
        ("default", ["", ""]),  # 0.5 s
    ],
)
def test_prompt_pause_sec_keeps_the_prompt_within_an_utterance(prompt_pause_sec, prompts):
    options = {} if prompt_pause_sec == "default" else {"prompt_pause_sec": prompt_pause_sec}
    policy, backend = policy_for(
        "alpha@0.1-0.3",
        "alpha@0.1-0.3 bravo@1.6-1.8",  # commits alpha; the buffer is cut in the pause (0.95)
        "bravo@0.65-0.85 charlie@1.45-1.65",  # commits bravo; cut in the next pause (2.1)
        "charlie@0.3-0.5 delta@1.0-1.2",  # commits charlie
        buffer_trimming_sec=1.0,
        **options,
    )
    for _ in range(4):
        step(policy)
    assert texts(policy.committed)[-3:] == ["alpha", "bravo", "charlie"]
    assert backend.prompts[2:] == prompts


def test_prompt_pause_sec_ends_a_pause_only_when_speech_is_heard_after_it():
    # Cut after alpha with nothing heard since (behind real time): the prompt stays until a
    # pass hears bravo, 2.7 s after alpha; the pass after that one is not prompted.
    policy, backend = policy_for(
        "alpha@0.1-0.3", "alpha@0.1-0.3", "", "bravo@2.7-2.9", "bravo@2.7-2.9",
        buffer_trimming_sec=0.5, overload_trimming_sec=0.5, prompt_pause_sec=1.0,
    )  # fmt: skip
    policy.behind = True
    for _ in range(5):
        step(policy)
    assert texts(policy.committed) == ["alpha", "bravo"]
    assert backend.prompts == ["", "", "alpha", "alpha", ""]


def test_prompt_pause_sec_must_be_a_number_of_seconds():
    for bad in (True, "1", 0.1, 11):
        with pytest.raises(InvalidOption, match="prompt_pause_sec"):
            policy_for("a@0-1", prompt_pause_sec=bad)


def test_a_long_stream_keeps_only_the_committed_words_its_prompt_needs():
    # One word a second, each heard twice: the buffer (behind real time) is cut after every
    # word, and the words before it matter only to the prompt (prompt_chars=8: at most 9
    # words kept).
    hypotheses = []
    for second in range(60):
        hypotheses += [f"w{second}@0.1-0.4", f"w{second}@0.1-0.4"]
    policy, backend = policy_for(*hypotheses, buffer_trimming_sec=0.5, overload_trimming_sec=0.5, prompt_chars=8)
    policy.behind = True
    committed = []
    sizes = []
    speech = np.random.default_rng(8).normal(0, 0.1, SR // 2).astype(np.float32)  # no pause to cut in
    for _ in range(len(hypotheses)):
        policy.insert_audio(speech)
        committed += policy.process_iter().committed
        sizes.append(len(policy.committed))
    assert len(committed) == 60 and len(set(texts(committed))) == 60
    assert sizes[:4] == [0, 1, 1, 2] and max(sizes) == 9  # grows, then stays at 8 + 1
    assert backend.prompts[-2:] == ["w57 w58", "w57 w58"]  # the prompt is what it was


def test_overload_guard_keeps_the_buffer_within_max_buffer_sec_by_forcing_commits():
    # Hypotheses never agree (a model that keeps changing its mind): nothing is committed
    # by agreement, so without the guard the buffer (and compute per pass) would grow.
    policy, backend = policy_for(*[f"w{i}@0.0-0.5" for i in range(1, 13)], buffer_trimming_sec=3.0, max_buffer_sec=5.0)
    forced = []
    for _ in range(12):
        result = step(policy)
        forced += texts(result.committed)
        assert policy.buffered_seconds <= 5.0
    assert forced == ["w6", "w9", "w12"]  # whenever the buffer passed 5 s
    assert texts(policy.committed) == forced
    # The backend never sees more than max_buffer_sec plus the audio added since the last pass.
    assert max(backend.audio_lengths) <= 5.0 + 1.0


def test_a_retranscribed_committed_word_is_not_committed_twice():
    policy, _ = policy_for(
        "x@0.2-0.6 y@1.0-1.9",
        "x@0.2-0.6 y@1.0-1.9 z@2.4-2.8",  # commits x y
        "y@1.85-2.2 z@2.4-2.8 w@3.0-3.5",  # y heard again, starting just before its end
    )
    step(policy, 2.0)
    assert texts(step(policy, 2.0).committed) == ["x", "y"]
    assert texts(step(policy, 2.0).committed) == ["z"]
    assert texts(policy.committed) == ["x", "y", "z"]


def test_a_retranscribed_committed_bigram_is_not_committed_twice():
    policy, _ = policy_for(
        "x@0.2-0.6 y@1.0-1.9",
        "x@0.2-0.6 y@1.0-1.9 z@2.4-2.8",
        "x@1.82-1.86 y@1.87-1.95 z@2.4-2.8",
    )
    for _ in range(3):
        step(policy, 2.0)
    assert texts(policy.committed) == ["x", "y", "z"]


def times(ws) -> list[tuple[float, float]]:
    return [(w["start"], w["end"]) for w in ws]


def test_a_word_out_of_time_order_is_committed_once_and_the_transcript_never_goes_back_in_time():
    # The backend said "c" (1.2 s) before "b" (0.5 s) twice, then the words in time order.
    # Before: "c" was committed at 1.2-1.5 s and "b" after it at 0.5-0.9 s (back in time),
    # and once a pass heard "b" where it was, "c" after it was committed a second time.
    policy, _ = policy_for(
        "a@0.0-0.4 c@1.2-1.5 b@0.5-0.9",
        "a@0.0-0.4 c@1.2-1.5 b@0.5-0.9",
        "a@0.0-0.4 b@0.5-0.9 c@1.2-1.5 d@1.6-2.0",
        "a@0.0-0.4 b@0.5-0.9 c@1.2-1.5 d@1.6-2.0 e@2.1-2.5",
    )
    committed = [w for _ in range(4) for w in step(policy).committed] + policy.finish().committed
    assert texts(committed) == ["a", "c", "b", "d", "e"]  # as the passes that agreed said them, each once
    assert times(committed) == [(0.0, 0.4), (1.2, 1.5), (1.5, 1.5), (1.6, 2.0), (2.1, 2.5)]  # "b" where "c" ends


def test_a_word_inside_the_one_before_it_is_moved_after_it_and_a_little_overlap_is_left_as_it_is():
    policy, _ = policy_for("a@0.0-0.5 b@0.45-0.9 c@0.6-0.7 d@1.0-1.2", "a@0.0-0.5 b@0.45-0.9 c@0.6-0.7 d@1.0-1.2")
    step(policy)
    committed = step(policy).committed
    assert texts(committed) == ["a", "b", "c", "d"]
    assert times(committed) == [(0.0, 0.5), (0.45, 0.9), (0.9, 0.9), (1.0, 1.2)]


def test_a_word_the_committing_pass_ran_into_is_not_lost():
    # The pass that commits "extremo" ends it 0.2 s into "en"; the passes after it hear
    # "extremo" end where "en" starts (as base did on a Spanish FLEURS clip).
    policy, _ = policy_for(
        "clima@0.2-0.5 extremo.@0.5-1.3",
        "clima@0.2-0.5 extremo@0.5-1.5 en@1.5-1.66",  # commits "clima extremo", ending at 1.5
        "clima@0.2-0.5 extremo@0.5-1.3 en@1.3-1.66 el@1.66-1.84 área@1.84-2.1",
        "clima@0.2-0.5 extremo@0.5-1.3 en@1.3-1.66 el@1.66-1.84 área@1.84-2.1 que@2.1-2.3",
    )
    step(policy, 2.0)
    assert texts(step(policy, 2.0).committed) == ["clima", "extremo"]
    assert texts(step(policy, 2.0).committed) == ["en"]  # as the pass before heard it
    assert texts(step(policy, 2.0).committed) == ["el", "área"]
    assert texts(policy.committed) == ["clima", "extremo", "en", "el", "área"]


def test_a_word_that_straddles_the_last_commit_is_kept_from_where_it_ends():
    # The passes that commit "posa" hear "largada." after it; the passes after them hear
    # "Japão Salargado." instead, "Salargado." starting 0.12 s before "posa" ends (base on
    # a Portuguese FLEURS clip): the clip's last word must not go for good.
    policy, _ = policy_for(
        "nova@0.5-0.7 posa@0.7-1.1 larga.@1.1-1.7",
        "nova@0.5-0.7 posa@0.7-1.1 largada.@1.1-1.7",  # commits "nova posa"
        "no@0.4-0.6 Japão@0.6-0.98 Salargado.@0.98-1.7",
    )
    step(policy, 2.0)
    assert texts(step(policy, 2.0).committed) == ["nova", "posa"]
    step(policy, 2.0)
    tail = policy.finish().committed
    assert texts(tail) == ["Salargado."]
    assert tail[0]["start"] == pytest.approx(1.1), "from where the committed word ends"
    assert texts(policy.committed) == ["nova", "posa", "Salargado."]


def test_the_committed_word_heard_again_just_before_it_keeps_the_word_after_it():
    # A pass whose buffer ended inside "middle" heard "the" over the start of it; the two
    # passes agree on "even in the", committed with the late times. The next pass hears
    # "the" 0.04 s before that and "middle" over it (tiny.en, a shared FLEURS clip in a
    # long stream): "middle" is new speech, not the committed word heard again.
    agreed, tail = agreed_then_tail(
        "even@0.52-0.68 in@0.68-0.88 the@0.88-0.94 middle@0.94-0.98",
        "even@0.52-0.70 in@0.70-0.94 the@0.94-1.27",  # commits "even in the"
        "even@0.52-0.70 in@0.70-0.90 the@0.90-0.90 middle@0.90-1.14 of@1.14-1.40 a@1.40-1.52 sentence.@1.52-1.88",
        seconds=1.0,
    )
    assert agreed == ["even", "in", "the"]
    assert tail == ["middle", "of", "a", "sentence."]


@pytest.mark.parametrize("ends", [1.3, 1.45])
def test_the_committed_word_is_heard_again_only_up_to_a_tenth_of_a_second_before_it(ends):
    # "the" heard again must overlap the committed "the" or end at most 0.1 s before it
    # starts; what follows it is then new. One that ends earlier is not taken for it, and
    # the words after it count from where the committed "the" ends, as before.
    agreed, tail = agreed_then_tail(
        "over@0.5-1.0 the@1.5-1.8",
        "over@0.5-1.0 the@1.5-1.8",  # commits "over the"
        f"over@0.5-1.0 the@{ends - 0.2}-{ends} middle@{ends}-1.75 hill.@1.8-2.3",
    )
    assert agreed == ["over", "the"]
    assert tail == (["middle", "hill."] if ends > 1.4 else ["hill."])


@pytest.mark.parametrize(
    "hearing",
    [
        "world's@1.3-1.9",  # the committed word heard again, mostly after it, other letters
        "tall@1.0-1.2",  # mostly before the committed word ends
        "romantic@1.0-2.5",  # begins in the first half of the committed word: heard again
    ],
)
def test_a_word_before_the_last_commit_ends_is_dropped_unless_it_straddles_it_as_new_speech(hearing):
    agreed, tail = agreed_then_tail(
        "hello@0.2-0.6 world@0.8-1.5",
        "hello@0.2-0.6 world@0.8-1.5",  # commits "hello world"
        f"hello@0.2-0.6 {hearing}",
    )
    assert agreed == ["hello", "world"]
    assert tail == []


def test_the_rest_of_a_hyphenated_word_that_begins_with_the_committed_word_is_kept():
    # "25" committed; the passes after it hear "25-30" as one word over "25" and "to 30"
    # (tiny.en on a shared FLEURS clip): "30" is new, and "years" after it.
    policy, _ = policy_for(
        "by@0.2-0.5 25.@0.5-0.9",
        "by@0.2-0.5 25@0.5-0.9 to@0.9-1.2",  # commits "by 25"
        "by@0.2-0.5 25-30@0.5-1.5 years.@1.5-2.0",
        "by@0.2-0.5 25-30@0.5-1.5 years.@1.5-2.0",
    )
    step(policy, 2.0)
    assert texts(step(policy, 2.0).committed) == ["by", "25"]
    step(policy, 2.0)
    rest = step(policy, 2.0).committed
    assert texts(rest) == ["-30", "years."]
    assert rest[0]["start"] == pytest.approx(0.9), "from where the committed word ends"
    assert [w.get("joins", False) for w in rest] == [True, False], "the rest goes on from '25'"
    assert join_words(policy.committed) == "by 25-30 years."


def test_the_rest_of_a_closed_compound_heard_over_the_committed_word_is_kept():
    # German FLEURS (base, fleurs-de-002 after 0.75 s): two passes agreed on
    # "Unabhängigkeit", the passes after it heard "Unabhängigkeitserklärung" over it, and
    # "der Erklärung" that one pass had heard after it went for good.
    policy, _ = policy_for(
        "der@0.2-0.5 Unabhängigkeit.@0.5-1.2",
        "der@0.2-0.5 Unabhängigkeit@0.5-1.2 der@1.2-1.4 Erklärung@1.4-1.8",  # commits "der Unabhängigkeit"
        "der@0.2-0.5 Unabhängigkeitserklärung@0.5-1.8 eine@1.8-2.1 Karte.@2.1-2.5",
        "der@0.2-0.5 Unabhängigkeitserklärung@0.5-1.8 eine@1.8-2.1 Karte.@2.1-2.5",
    )
    step(policy, 2.0)
    assert texts(step(policy, 2.0).committed) == ["der", "Unabhängigkeit"]
    step(policy, 2.0)
    rest = step(policy, 2.0).committed
    assert texts(rest) == ["serklärung", "eine", "Karte."]
    assert rest[0]["start"] == pytest.approx(1.2), "from where the committed word ends"
    assert [w.get("joins", False) for w in rest] == [True, False, False]
    assert join_words(policy.committed) == "der Unabhängigkeitserklärung eine Karte."


@pytest.mark.parametrize(
    "hearing",
    [
        "into@0.5-1.4",  # a committed word of fewer than four letters
        "Unabhängigkeits@0.5-1.6",  # a rest of fewer than four letters
        "Unabhängigkeitserklärung@0.5-1.3",  # over hardly more audio: heard again, not more
    ],
)
def test_a_longer_word_over_the_committed_one_is_not_split_without_more_speech(hearing):
    committed = "in" if hearing.startswith("into") else "Unabhängigkeit"
    policy, _ = policy_for(
        f"der@0.2-0.5 {committed}@0.5-1.2",
        f"der@0.2-0.5 {committed}@0.5-1.2 was@1.2-1.4",  # commits "der" and the word
        f"der@0.2-0.5 {hearing} eine@1.8-2.1",
        f"der@0.2-0.5 {hearing} eine@1.8-2.1",
    )
    for _ in range(4):
        step(policy, 2.0)
    assert texts(policy.committed) == ["der", committed, "eine"]


def test_a_closed_compound_is_cut_where_its_text_compares_as_the_committed_word():
    from rtlab.policies.reheard import rest_of_compound

    # Casefolding "ß" gives "ss": the rest is not cut at the committed word's length.
    rest = rest_of_compound({"text": " Straßenbahnen", "start": 1.0, "end": 2.0}, {"text": "Straße", "start": 1.0, "end": 1.5})
    assert rest == {"text": "nbahnen", "start": 1.5, "end": 2.0, "joins": True}
    # A committed word that ends inside one letter's casefolding is not a start of the text.
    assert rest_of_compound({"text": " Straßenbahnen", "start": 1.0, "end": 2.0}, {"text": "Stras", "start": 1.0, "end": 1.5}) is None


def test_a_hyphenated_word_that_only_looks_like_the_committed_one_is_not_split():
    policy, _ = policy_for(
        "so@0.2-0.5 called@0.6-0.9",
        "so@0.2-0.5 called@0.6-0.9",  # commits "so called"
        "so@0.2-0.5 called@0.6-0.9 well-known@1.0-1.5 facts@1.5-2.0",
        "so@0.2-0.5 called@0.6-0.9 well-known@1.0-1.5 facts@1.5-2.0",
    )
    for _ in range(4):
        step(policy, 2.0)
    assert texts(policy.committed) == ["so", "called", "well-known", "facts"]


def test_a_later_hearing_of_the_same_word_elsewhere_is_not_taken_for_the_committed_one():
    # "de" said twice: only a hearing that overlaps the committed "de" in time stands for it.
    policy, _ = policy_for(
        "de@0.2-0.4 los@0.4-0.6",
        "de@0.2-0.4 los@0.4-0.6 otros@0.7-1.0",  # commits "de los"
        "de@0.2-0.4 los@0.4-0.6 otros@0.7-1.0 de@1.1-1.3 los@1.3-1.5",
        "de@0.2-0.4 los@0.4-0.6 otros@0.7-1.0 de@1.1-1.3 los@1.3-1.5 blogs@1.5-1.9",
    )
    for _ in range(4):
        step(policy, 2.0)
    assert texts(policy.committed) == ["de", "los", "otros", "de", "los"]


def test_finish_commits_the_tail_from_one_last_pass():
    policy, backend = policy_for("a@0.0-0.2 b@0.3-0.5 c@0.6-0.8", "a@0.0-0.2 b@0.3-0.5 d@0.6-0.9", "a@0.0-0.2 b@0.3-0.5 e@0.6-0.9 f@1.2-1.5")
    step(policy)
    step(policy)
    policy.insert_audio(np.zeros(SR // 2, np.float32))
    tail = policy.finish()
    assert texts(tail.committed) == ["e", "f"]  # the last pass over the whole buffer
    assert tail.partial == []
    assert texts(policy.committed) == ["a", "b", "e", "f"]
    assert backend.audio_lengths[-1] == 2.5


def test_finish_without_audio_commits_nothing_and_calls_no_backend():
    policy, backend = policy_for("a@0.0-0.2")
    assert policy.finish().committed == []
    assert backend.prompts == []


@pytest.mark.parametrize(
    "options",
    [dict(min_chunk=0), dict(buffer_trimming_sec=0), dict(buffer_trimming_sec=20, max_buffer_sec=10)],
)
def test_inconsistent_options_are_refused_naming_the_policy(options):
    with pytest.raises(InvalidOption, match="local-agreement"):
        LocalAgreement(ScriptedBackend(), **options)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize(
    "option",
    ["min_chunk", "buffer_trimming_sec", "max_buffer_sec", "overload_trimming_sec", "deadline_sec", "silence_factor"],
)
def test_nan_and_infinite_seconds_are_refused_naming_the_option(option, value):
    # NaN passes every range check unnoticed: a stream with min_chunk=NaN ended in
    # "ValueError: cannot convert float NaN to integer", and max_buffer_sec=NaN never trimmed.
    with pytest.raises(InvalidOption, match=f"^policy 'local-agreement'.* {option} .*not {value!r}$"):
        LocalAgreement(ScriptedBackend(), **{option: value})


def test_words_heard_in_silence_are_dropped_before_agreement():
    # 1 s of speech-like noise, then 2 s of silence in which the backend "hears" words,
    # as Whisper hallucinates "Thank you." in trailing silence.
    hypothesis = [
        {"text": "hello", "start": 0.2, "end": 0.8},
        {"text": "Thank", "start": 1.8, "end": 2.1},
        {"text": "you.", "start": 2.1, "end": 2.4},
    ]
    backend = ScriptedBackend([hypothesis])
    policy = LocalAgreement(backend, min_chunk=1.0)
    speech = np.random.default_rng(0).normal(0, 0.1, 16_000).astype(np.float32)
    policy.insert_audio(np.concatenate([speech, np.zeros(32_000, np.float32)]))
    policy.process_iter()
    committed = policy.process_iter().committed + policy.finish().committed
    assert [w["text"] for w in committed] == ["hello"]
    assert policy.dropped_silent_words >= 2


def test_the_silence_check_can_be_switched_off():
    backend = ScriptedBackend([[{"text": "ghost", "start": 1.5, "end": 1.8}]])
    policy = LocalAgreement(backend, silence_factor=0)
    policy.insert_audio(np.concatenate([np.full(8_000, 0.2, np.float32), np.zeros(24_000, np.float32)]))
    policy.process_iter()
    assert [w["text"] for w in policy.process_iter().committed] == ["ghost"]


def test_a_word_straddling_a_forced_cut_is_committed_not_lost():
    # No agreement ever (the hypotheses alternate), so only the overload guard commits.
    a = "one@0.5-1.5 two@9.9-10.3 three@19.0-19.5 four@29.0-29.4"
    b = "uno@0.5-1.5 dos@9.9-10.3 tres@19.0-19.5 cuatro@29.0-29.4"
    policy, _ = policy_for(a, b, a, b, buffer_trimming_sec=20.0, max_buffer_sec=20.0)
    committed = []
    for _ in range(4):
        committed += step(policy, 10.0).committed
    committed += policy.finish().committed
    starts = [w["start"] for w in committed]
    assert 9.9 in starts, "the word across the cut at 10.0 s must not vanish"


class Metronome:
    """A word every second of audio, at stream times: "w0" at 0.0-0.5, "w1" at 1.0-1.5..."""

    def __init__(self):
        self.policy = None

    def transcribe(self, audio, *, prompt="", language=None):
        offset = self.policy.buffer_offset
        first, last = int(offset + 0.999), int(offset + len(audio) / SR - 0.5)
        return [{"text": f"w{i}", "start": i - offset, "end": i + 0.5 - offset} for i in range(first, last + 1)]


def stream_words(backend, seconds: int, *, behind: bool) -> tuple[LocalAgreement, list]:
    """A policy over ``backend`` fed ``seconds`` one-second steps, and what it committed."""
    policy = backend.policy = LocalAgreement(
        backend, buffer_trimming_sec=15.0, overload_trimming_sec=5.0, silence_factor=0
    )
    policy.behind = behind
    committed = []
    for _ in range(seconds):
        committed += step(policy, 1.0).committed
    return policy, committed


def test_behind_real_time_the_buffer_is_trimmed_sooner():
    relaxed, relaxed_words = stream_words(Metronome(), 12, behind=False)
    behind, behind_words = stream_words(Metronome(), 12, behind=True)
    assert relaxed.buffer_offset == 0.0  # 12 s < 15 s: untouched
    assert 0 < behind.buffer_offset and behind.buffered_seconds <= 5.0 + 1.0
    assert texts(behind_words) == texts(relaxed_words)  # nothing lost by trimming sooner


class SentenceMetronome(Metronome):
    """Like Metronome, with a sentence ending at word 9 ("w9.")."""

    def transcribe(self, audio, *, prompt="", language=None):
        words = super().transcribe(audio, prompt=prompt, language=language)
        return [{**w, "text": "w9."} if w["text"] == "w9" else w for w in words]


def test_trimming_prefers_the_end_of_the_last_committed_sentence():
    backend = SentenceMetronome()
    policy = backend.policy = LocalAgreement(backend, buffer_trimming_sec=15.0, silence_factor=0)
    for _ in range(16):
        step(policy, 1.0)
    # The buffer passed 15 s with words up to w14 committed: it is cut after "w9." (in the
    # pause after it, 9.75 s), not after the last committed word, so the sentence being
    # spoken stays whole.
    assert policy.buffer_offset == 9.75


def test_a_full_stop_with_no_pause_after_it_is_no_place_to_cut():
    # Whisper ends a buffer that stops mid-sentence with a full stop ("keep it." for "keep
    # it still"); the next pass runs on into "still" with no pause: no cut there.
    policy, _ = policy_for(
        "keep@0.2-0.6 it.@0.6-1.0",
        "keep@0.2-0.6 it.@0.6-1.0 still@1.0-1.5",  # commits keep it.
        "keep@0.2-0.6 it@0.6-1.0 still@1.0-1.5 bounded.@1.5-2.2",  # commits still
        overload_trimming_sec=2.0,
    )
    policy.behind = True  # trim past 2 s, where a cut point allows
    for _ in range(3):
        step(policy)
    assert texts(policy.committed) == ["keep", "it.", "still"]
    assert policy.buffer_offset == 0.0  # 3 s > 2 s, but every committed word runs on
    assert policy._cut_points() == []


class RunningSpeech(Metronome):
    """Words with no pause between them: "w0" at 0.0-1.0, "w1" at 1.0-2.0..."""

    def transcribe(self, audio, *, prompt="", language=None):
        return [{**w, "end": w["end"] + 0.5} for w in super().transcribe(audio, prompt=prompt, language=language)]


def test_running_speech_is_not_cut_at_a_word_end_before_buffer_trimming_sec():
    policy, committed = stream_words(RunningSpeech(), 15, behind=True)
    # Behind, but no sentence end and no pause to cut in: a cut at a word end would open
    # the next buffer mid-word, so the buffer waits for buffer_trimming_sec.
    assert policy.buffer_offset == 0.0 and len(committed) >= 10
    committed += step(policy, 1.0).committed
    assert policy.buffer_offset == committed[-1]["end"]


def test_running_speech_keeps_its_buffer_whole_until_max_buffer_sec_when_not_behind():
    # On time, a buffer past buffer_trimming_sec with no pause after a committed word waits
    # for one (fleurs-en-002 lost a sentence's end to a cut inside running speech); past
    # max_buffer_sec it is cut all the same, so compute per pass stays bounded.
    backend = RunningSpeech()
    policy = backend.policy = LocalAgreement(backend, buffer_trimming_sec=4.0, max_buffer_sec=8.0, silence_factor=0)
    committed, offsets = [], []
    for _ in range(10):
        committed += step(policy, 1.0).committed
        offsets.append(policy.buffer_offset)
    assert offsets[:8] == [0.0] * 8 and offsets[8] == committed[-1]["end"] == 9.0
    assert texts(committed) == [f"w{i}" for i in range(9)]


def test_the_final_pass_drops_words_heard_in_the_closing_silence():
    backend = ScriptedBackend([[
        {"text": "hello", "start": 0.2, "end": 0.8},
        {"text": "That's", "start": 2.0, "end": 2.3},
        {"text": "it.", "start": 2.3, "end": 2.6},
    ]])  # fmt: skip
    policy = LocalAgreement(backend)
    speech = np.random.default_rng(1).normal(0, 0.1, 16_000).astype(np.float32)
    policy.insert_audio(np.concatenate([speech, np.zeros(32_000, np.float32)]))
    assert texts(policy.finish().committed) == ["hello"]


def test_a_quiet_speaker_after_a_loud_one_is_not_taken_for_silence():
    # Loud speech, a pause, then speech 40 dB quieter (as two FLEURS clips joined): the quiet
    # words stand well above the background, so they are kept.
    rng = np.random.default_rng(2)
    loud, quiet = rng.normal(0, 0.3, 32_000), rng.normal(0, 0.003, 32_000)
    pause = rng.normal(0, 0.00003, 16_000)
    audio = np.concatenate([loud, pause, quiet, pause]).astype(np.float32)
    hypothesis = [{"text": "loud", "start": 0.5, "end": 1.5}, {"text": "quiet", "start": 3.5, "end": 4.5},
                  {"text": "ghost", "start": 5.3, "end": 5.7}]  # fmt: skip
    policy = LocalAgreement(ScriptedBackend([hypothesis]))
    policy.insert_audio(audio)
    assert texts(policy.finish().committed) == ["loud", "quiet"]


def test_deadline_commits_the_newest_hearing_of_words_two_passes_keep_disagreeing_on():
    # The model flips between "world" and "world's"; LocalAgreement-2 alone commits nothing
    # after the flip, however old the words get.
    flipping = [
        "all@0.0-0.3 now@0.4-0.7 world@0.8-1.2 safe@1.3-1.6",
        "all@0.0-0.3 now@0.4-0.7 world's@0.8-1.2 safe@1.3-1.6 for@1.7-1.9",
        "world@0.8-1.2 safe@1.3-1.6 for@1.7-1.9 you@2.0-2.4",
        "world's@0.8-1.2 safe@1.3-1.6 for@1.7-1.9 you@2.0-2.4 always@2.6-2.9",
    ]
    plain, _ = policy_for(*flipping)
    assert [texts(step(plain).committed) for _ in range(4)] == [[], ["all", "now"], [], []]

    policy, _ = policy_for(*flipping, deadline_sec=1.4)
    steps = [step(policy) for _ in range(4)]
    # Pass 3 (buffer end 3.0 s) disagrees on "world" again, but "world" and "safe" end
    # 1.4 s or more before the buffer does: committed as pass 3 heard them. Pass 4 agrees
    # with pass 3 on "for you"; "always" is within the deadline and stays partial.
    assert [texts(s.committed) for s in steps] == [[], ["all", "now"], ["world", "safe"], ["for", "you"]]
    assert policy.deadline_commits == 2
    assert texts(steps[-1].partial) == ["always"]


def test_deadline_never_commits_words_only_one_pass_heard():
    # Pass 2 inserts "q r s" where pass 1 heard "b c": past the deadline, but two
    # disagreeing words in a row are a hallucination as likely as a correction.
    policy, _ = policy_for(
        "a@0.0-0.2 b@0.3-0.5 c@0.6-0.8",
        "a@0.0-0.2 q@0.3-0.4 r@0.45-0.55 s@0.6-0.8 d@1.0-1.2",
        "a@0.0-0.2 b@0.3-0.5 c@0.6-0.8 d@1.0-1.2",
        deadline_sec=0.5,
    )
    committed = [texts(step(policy).committed) for _ in range(4)]
    assert committed == [[], ["a"], [], ["b", "c", "d"]]  # LocalAgreement's own commits
    assert policy.deadline_commits == 0


def test_lookahead_holds_agreed_words_the_newest_pass_heard_too_little_audio_after():
    hypotheses = [
        "the@0.1-0.3 north@0.4-0.9",
        "the@0.1-0.3 north@0.4-1.5 pole@1.6-1.9",
        "the@0.1-0.3 northern@0.4-1.5 pole@1.6-1.9 star@2.0-2.4",
        "the@0.1-0.3 northern@0.4-1.5 pole@1.6-1.9 star@2.0-2.4 shines@2.6-3.5",
    ]
    plain, _ = policy_for(*hypotheses)
    # Buffer ends 1, 2, 3, 4 s: pass 2 agrees with pass 1's guess at its last word.
    assert [texts(step(plain).committed) for _ in range(4)] == [[], ["the", "north"], ["pole"], ["star"]]

    policy, _ = policy_for(*hypotheses, lookahead_sec=1.0)
    # "north" ends 0.5 s before pass 2's buffer does: it waits, and pass 3, which heard
    # more after it, reads "northern"; pass 4 agrees.
    steps = [step(policy) for _ in range(4)]
    assert [texts(s.committed) for s in steps] == [[], ["the"], [], ["northern", "pole", "star"]]
    assert texts(steps[-1].partial) == ["shines"]
    assert texts(policy.finish().committed) == ["shines"]


def test_onset_lookahead_holds_a_buffers_first_words_until_a_pass_heard_enough_after_them():
    hypotheses = [
        "but@0.5-0.8",
        "but@0.5-0.8 i@0.9-1.4 really@1.5-1.9",
        "the@0.5-0.8 library@0.9-1.6 opens@1.7-2.4 at@2.5-2.9",
        "the@0.5-0.8 library@0.9-1.6 opens@1.7-2.4 at@2.5-2.9 nine@3.0-3.8",
        "the@0.5-0.8 library@0.9-1.6 opens@1.7-2.4 at@2.5-2.9 nine@3.0-3.8 in@3.9-4.4",
    ]
    plain, _ = policy_for(*hypotheses)
    # Buffer ends 1, 2, 3, 4, 5 s: the first two passes agree on a guess at the first word.
    assert [texts(step(plain).committed) for _ in range(2)] == [[], ["but"]]

    policy, _ = policy_for(*hypotheses, onset_lookahead_sec=1.5)
    steps = [texts(step(policy).committed) for _ in range(5)]
    # "but" ends 1.2 s before pass 2's buffer does: it waits, and pass 3 hears "the library";
    # pass 4 agrees up to "at", which ends 1.1 s before its buffer does and waits; once a word
    # of the buffer is committed, agreement is enough again.
    assert steps == [[], [], [], ["the", "library", "opens"], ["at", "nine"]]
    assert policy.onset_lookahead_sec == 1.5 and policy.lookahead_sec == 0.0


@pytest.mark.parametrize("value", [-0.5, 6, True, "soon"])
@pytest.mark.parametrize("option", ["lookahead_sec", "onset_lookahead_sec"])
def test_lookahead_must_be_seconds_from_0_to_5(option, value):
    with pytest.raises(InvalidOption, match=option):
        policy_for("a@0.0-0.2", **{option: value})


@pytest.mark.parametrize("value", [0, -1.0, True, "soon"])
def test_deadline_must_be_a_positive_number_of_seconds(value):
    with pytest.raises(InvalidOption, match="deadline_sec"):
        policy_for("a@0.0-0.2", deadline_sec=value)


# -- the voice-activity controller (vad=True) ----------------------------------------------------


@pytest.fixture(scope="module")
def speech(data_dir) -> np.ndarray:
    pytest.importorskip("onnxruntime", reason="the voice-activity controller needs onnxruntime")
    pytest.importorskip("faster_whisper", reason="Silero VAD's model ships with faster-whisper")
    from rtlab.decoders.files import decode_audio

    return decode_audio(data_dir / "fox.ogg")  # 6.1 s of speech, trailing 0.3 s of quiet


def feed(policy: LocalAgreement, audio: np.ndarray, seconds: float = 1.0) -> list:
    """Insert ``audio`` ``seconds`` at a time, one pass after each piece; the steps."""
    piece = int(seconds * SR)
    return [
        (policy.insert_audio(audio[i : i + piece]), policy.process_iter())[1] for i in range(0, len(audio), piece)
    ]


def test_vad_skips_passes_over_silence_before_anyone_speaks():
    policy, backend = policy_for("ghost@0.1-0.4", vad=True)
    steps = feed(policy, np.zeros(4 * SR, np.float32))
    assert backend.prompts == [], "no model call over silence"
    assert all(s.committed == [] and s.partial == [] for s in steps)
    assert policy.skipped_passes == 4
    assert policy.buffered_seconds <= KEEP_SILENCE + 1e-6  # the buffer does not grow over silence


class LateVAD:
    """Stands in for Silero: no speech before ``flagged`` seconds of the stream, speech after."""

    def __init__(self, flagged: float) -> None:
        self.flagged, self.frames, self.pending = flagged, 0, 0

    def process(self, pcm: np.ndarray) -> np.ndarray:
        count, self.pending = divmod(self.pending + len(pcm), FRAME)
        times = (self.frames + np.arange(count)) * FRAME / SR
        self.frames += count
        return np.where(times >= self.flagged, 0.9, 0.0).astype(np.float32)

    def reset_state(self) -> None:
        """A script has no state to reset."""


def test_vad_keeps_the_start_of_speech_that_the_vad_flagged_late():
    # Speech starts at 3.8 s; the VAD flags it from 4.9 s, after the pass at 4 s skipped
    # the "silence" (a soft start: Silero flagged a German clip's "Für" 0.9 s after
    # Whisper put it). The first pass that hears the speech is given its start.
    policy, backend = policy_for("accident@0.8-1.3 happened@1.4-2.0 there@2.2-2.6", vad=True)
    policy.vac.activity.vad = LateVAD(flagged=4.9)
    for _ in range(5):
        step(policy)
    assert policy.skipped_passes == 4 and len(backend.audio_lengths) == 1
    assert 5.0 - backend.audio_lengths[0] <= 3.8, "the first pass over the speech was not given its start"
    assert texts(policy.finish().committed) == ["accident", "happened", "there"]


def test_vad_the_first_pass_over_an_utterance_hears_little_of_the_silence_before_it():
    # Whisper reads speech worse after more than a second of silence. The passes over the
    # silence kept KEEP_SILENCE seconds of it (they cannot know where speech will start);
    # once the VAD flags speech (at 3.5 s), the buffer keeps ONSET_LEAD seconds before it.
    policy, backend = policy_for("north@0.2-0.6 wind@0.7-1.1", "north@0.2-0.6 wind@0.7-1.1", vad=True)
    policy.vac.activity.vad = LateVAD(flagged=3.5)
    for _ in range(3):
        step(policy)
    assert policy.skipped_passes == 3 and policy.buffered_seconds == pytest.approx(KEEP_SILENCE)
    step(policy)
    assert len(backend.audio_lengths) == 1
    assert 4.0 - backend.audio_lengths[0] == pytest.approx(3.5 - ONSET_LEAD, abs=FRAME / SR)


def test_vad_commits_an_utterance_at_its_end_without_waiting_for_agreement(speech):
    # Every pass hears the utterance differently: without the controller nothing would
    # ever be committed; with it, the pause after the speech commits the last reading.
    hypotheses = [f"reading{i}@0.5-1.0 of@1.1-1.3 the@1.4-1.6 fox@2.0-2.4" for i in range(20)]
    policy, backend = policy_for(*hypotheses, vad=True, vad_silence_ms=500)
    audio = np.concatenate([speech, np.zeros(2 * SR, np.float32)])
    steps = feed(policy, audio, 0.5)
    committed = [w["text"] for s in steps for w in s.committed]
    assert committed[-4:-3][0].startswith("reading") and committed[-3:] == ["of", "the", "fox"]
    calls = len(backend.prompts)
    # The utterance ended: the buffer was cut in the pause, and the silence after it costs
    # no model call.
    assert policy.buffer_offset > len(speech) / SR - 1.0
    more = feed(policy, np.zeros(2 * SR, np.float32), 0.5)
    assert len(backend.prompts) == calls and all(s.committed == [] for s in more)


def test_vad_transcribes_again_when_speech_resumes(speech):
    policy, backend = policy_for(*[f"w{i}@0.5-0.9" for i in range(40)], vad=True)
    feed(policy, np.concatenate([speech, np.zeros(SR, np.float32)]), 0.5)
    calls = len(backend.prompts)
    feed(policy, speech[: 2 * SR], 0.5)
    assert len(backend.prompts) > calls


@pytest.mark.parametrize("options", [{"vad": "yes"}, {"vad_silence_ms": 20}, {"vad_silence_ms": True}])
def test_vad_options_are_checked(options):
    with pytest.raises(InvalidOption, match="vad"):
        LocalAgreement(ScriptedBackend(), language="en", **options)


# -- cutting only in a quiet pause -----------------------------------------------------------


@pytest.mark.parametrize("speech_in_the_gap", [False, True])
def test_the_buffer_is_cut_only_in_a_gap_the_audio_says_is_quiet(speech_in_the_gap):
    # a, b and c with gaps between them; the b-c gap of the hypothesis is quiet or has
    # speech under it (words a pass left out). Past buffer_trimming_sec, the cut goes in
    # the b-c gap only when it is quiet; else in the quiet a-b gap, keeping the speech.
    policy, _ = policy_for(
        "a@0.1-0.4",
        "a@0.1-0.4 b@1.2-1.6",
        "a@0.1-0.4 b@1.2-1.6 c@2.1-2.5",
        buffer_trimming_sec=2.0,
        max_buffer_sec=10.0,
    )
    audio = np.random.default_rng(0).normal(0, 0.1, 3 * SR).astype(np.float32)
    audio[int(0.4 * SR) : int(1.2 * SR)] = 0
    if not speech_in_the_gap:
        audio[int(1.6 * SR) : int(2.1 * SR)] = 0
    for second in range(3):
        policy.insert_audio(audio[second * SR : (second + 1) * SR])
        policy.process_iter()
    assert texts(policy.committed) == ["a", "b"]
    assert policy.buffer_offset == pytest.approx(0.8 if speech_in_the_gap else 1.85)


def past_a_sentence_end(last_word: str, *, quiet: tuple[float, float], seed: int, next_level: float = 1.0, **options):
    """A policy fed "it's over" (``last_word``) ending at 1.0 s, ``quiet`` (start, end) of
    zeros from there on, loud sound at half the speech's level from its end to 1.8 s (no
    word heard in it), silence to 3.4 s, then "To the north" at ``next_level`` of the
    speech's level, one second at a time, the buffer trimmed past 4 s."""
    said = f"it's@0.2-0.6 {last_word}@0.6-1.0"
    policy, _ = policy_for(
        said, said, f"{said} To@3.4-3.7", f"{said} To@3.4-3.7 the@3.7-3.9", f"{said} To@3.4-3.7 the@3.7-3.9 north@3.9-4.4",
        buffer_trimming_sec=4.0, **options,
    )
    audio = np.random.default_rng(seed).normal(0, 0.1, 5 * SR).astype(np.float32)
    audio[int(quiet[0] * SR) : int(quiet[1] * SR)] = 0
    audio[int(quiet[1] * SR) : int(1.8 * SR)] *= 0.5
    audio[int(1.8 * SR) : int(3.4 * SR)] = 0
    audio[int(3.4 * SR) :] *= next_level
    for second in range(5):
        policy.insert_audio(audio[second * SR : (second + 1) * SR])
        policy.process_iter()
    assert texts(policy.committed)[-2:] == ["To", "the"]
    return policy


@pytest.mark.parametrize("last_word", ["over.", "over"])
def test_after_a_sentence_a_quiet_stretch_later_in_a_long_gap_is_a_place_to_cut(last_word):
    # Whisper ends "over." at 1.0 s where the word's sound goes on to 1.3 s, a breath
    # follows, then 1.6 s of silence before the next sentence (a FLEURS clip's end in a long
    # stream). After a sentence's end, the silence is where to cut; after a word that ends
    # none, the gap may hold speech no pass transcribed, and the buffer waits for a pause
    # after a committed word (or for max_buffer_sec).
    policy = past_a_sentence_end(last_word, quiet=(1.3, 1.34), seed=3)  # the breath from 1.34 s
    if last_word.endswith("."):
        # In the silence, at the gap's middle (1.0 + 2.4 / 2), kept out of the breath.
        assert policy.buffer_offset == pytest.approx(2.2)
    else:
        assert policy.buffer_offset == 0.0


@pytest.mark.parametrize("last_word", ["over.", "over"])
def test_after_a_sentence_the_cut_skips_a_short_quiet_with_sound_after_it(last_word):
    # The long English stream: "sentence." ends at 1.0 s, three quiet frames follow, then
    # a second of the recording's end (no word heard in it) and 1.6 s of silence before
    # the next, much quieter sentence. The cut used to go in the three frames, leaving that
    # second at the head of every pass over the next sentence; after a sentence's end it
    # goes in the silence. After a word that ends no sentence, the gap may hold speech no
    # pass transcribed: the cut stays right behind the word.
    policy = past_a_sentence_end(last_word, quiet=(1.0, 1.06), seed=5, next_level=0.05, lead_silence_sec=None)
    if last_word.endswith("."):
        # In the silence, at the gap's middle (1.0 + 2.4 / 2), past the recording's end.
        assert policy.buffer_offset == pytest.approx(2.2)
    else:
        # In the three quiet frames right behind the word (at their middle).
        assert 1.0 <= policy.buffer_offset <= 1.06


def test_past_buffer_trimming_sec_the_silence_after_the_last_committed_sentence_is_cut():
    # The long English stream: "and comply." committed with its end 0.5 s early, then the
    # silence before the next clip. Kept in the buffer, the silence made later passes of
    # tiny.en hear the speech again as "and pink on.", and "on.", past the committed word's
    # end, was committed as new. The pause after the last committed sentence is a place
    # to cut once the buffer is past buffer_trimming_sec, though no word after it is heard.
    said = "Many@0.2-0.8 people@0.8-1.5 and@2.9-3.4"

    class HearsTheSpeechAgain(ScriptedBackend):
        def transcribe(self, audio, *, prompt="", language=None):
            heard = super().transcribe(audio, prompt=prompt, language=language)
            return heard if policy.buffer_offset == 0 else []  # only silence after a cut

    backend = HearsTheSpeechAgain([words(h) for h in (
        "Many@0.2-0.8", "Many@0.2-0.8 people@0.8-1.5", said, f"{said} comply.@3.4-3.8", f"{said} comply.@3.4-3.8",
        f"{said} pink@3.4-3.7 on.@3.75-4.4",
    )])  # fmt: skip
    # (lead_silence_sec off: it would go on to drop the silence after the cut but its last second)
    policy = LocalAgreement(backend, language="en", buffer_trimming_sec=4.5, lead_silence_sec=None)
    audio = np.random.default_rng(4).normal(0, 0.1, 8 * SR).astype(np.float32)
    audio[int(4.3 * SR) :] = 0
    feed(policy, audio)
    assert texts(policy.committed) == ["Many", "people", "and", "comply."]
    # In the silence, 0.6 s after the word's end (half the 1.2 s of quiet the pass heard
    # after it), not in the word's sound that goes on to 4.3 s.
    assert policy.buffer_offset == pytest.approx(4.4)


def test_a_gap_that_turns_quiet_only_later_is_no_place_to_cut():
    policy, _ = policy_for("a@0.1-0.4 b@1.5-1.9", silence_factor=0)
    audio = np.random.default_rng(1).normal(0, 0.1, 2 * SR).astype(np.float32)
    audio[int(1.0 * SR) : int(1.5 * SR)] = 0  # speech goes on for 0.6 s after a's end
    policy.insert_audio(audio)
    frames = frame_rms(policy.audio)
    assert policy._pause_cut(0.4, 1.5, frames, 0.1 * float(np.percentile(frames, 90))) is None


# -- the quiet before the buffer's speech (lead_silence_sec) -------------------------------


def speech_after(quiet: float, total: float, *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """``quiet`` seconds of room noise at RMS ``noise`` (0: digital silence), then loud
    sound ("speech") to ``total`` seconds."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, noise, int(total * SR)).astype(np.float32) if noise else np.zeros(int(total * SR), np.float32)
    audio[int(quiet * SR) :] = rng.normal(0, 0.1, len(audio) - int(quiet * SR))
    return audio


@pytest.mark.parametrize("noise", [0.0, 0.002])
def test_a_buffer_keeps_one_second_of_the_quiet_before_its_first_sound(noise):
    # A stream that opens with 3 s of silence, or of room noise: the first pass hears the
    # buffer from 1 s before the sound on (Whisper reads speech after longer silence worse).
    policy = LocalAgreement(ScriptedBackend([[]]), language="en")
    policy.insert_audio(speech_after(3.0, 4.0, noise=noise))
    policy.process_iter()
    assert policy.buffer_offset == pytest.approx(2.0, abs=0.02)
    assert policy.backend.audio_lengths == [pytest.approx(2.0, abs=0.02)]


def test_the_quiet_before_the_sound_is_bounded_by_lead_silence_sec_or_kept_when_off():
    for lead, offset in ((0.5, 2.5), (None, 0.0)):
        policy = LocalAgreement(ScriptedBackend([[]]), language="en", lead_silence_sec=lead)
        policy.insert_audio(speech_after(3.0, 4.0))
        policy.process_iter()
        assert policy.buffer_offset == pytest.approx(offset, abs=0.02)


def test_a_buffer_of_silence_alone_keeps_its_last_second():
    policy = LocalAgreement(ScriptedBackend([[], [], []]), language="en")
    for _ in range(3):
        policy.insert_audio(np.zeros(2 * SR, np.float32))
        policy.process_iter()
    assert policy.buffered_seconds == pytest.approx(1.0)
    assert policy.backend.audio_lengths == [pytest.approx(1.0)] * 3  # no pass hears more


def test_a_short_quiet_head_is_left_alone():
    policy = LocalAgreement(ScriptedBackend([[]]), language="en")
    policy.insert_audio(speech_after(0.8, 3.0))
    policy.process_iter()
    assert policy.buffer_offset == 0.0


def test_a_word_waiting_to_be_committed_before_the_sound_keeps_its_lead():
    # A soft first word the levels take for quiet (heard at 0.5 s, sound from 4 s on): the
    # buffer keeps a second before the word, not before the sound, and loses nothing.
    policy = LocalAgreement(ScriptedBackend([words("soft@0.5-0.9"), words("soft@0.5-0.9 loud@4.0-4.5")]),
                            language="en", silence_factor=0)  # fmt: skip
    audio = speech_after(4.0, 5.0)
    policy.insert_audio(audio[:SR])
    policy.process_iter()
    assert texts(policy.previous) == ["soft"] and policy.buffer_offset == 0.0
    policy.insert_audio(audio[SR:])
    assert texts(policy.process_iter().committed) == ["soft"]
    assert policy.buffer_offset == 0.0


def test_a_committed_word_in_the_buffer_keeps_the_head():
    # A quiet speaker's sentence, committed, then a loud one's after a pause: the levels
    # take the first for quiet, but it is the next sentence's context, which only
    # trimming past buffer_trimming_sec cuts.
    heard = "Hello.@0.1-0.5"
    policy = LocalAgreement(ScriptedBackend([words(heard), words(heard), words(heard)]), language="en")
    audio = speech_after(0.0, 6.0)
    audio[: int(0.6 * SR)] *= 0.05
    audio[int(0.6 * SR) : int(4.0 * SR)] = 0
    policy.insert_audio(audio[: 2 * SR])
    policy.process_iter()
    policy.process_iter()
    assert texts(policy.committed) == ["Hello."]
    policy.insert_audio(audio[2 * SR :])
    policy.process_iter()
    assert policy.buffer_offset == 0.0


def two_recordings(tail_noise: float = 0.004, tail_sec: float = 0.0) -> np.ndarray:
    """Speech to 2 s; the first recording's room noise (RMS ``tail_noise``) to 4.5 s, after
    ``tail_sec`` of loud sound (the end of the last word); digital silence to 6.5 s (a pause
    spliced in); the second recording's quieter noise, and its speech from 7 s to 10 s in
    0.2 s syllables 0.1 s apart."""
    rng = np.random.default_rng(0)
    audio = np.zeros(10 * SR, np.float32)
    audio[: 2 * SR] = rng.normal(0, 0.1, 2 * SR)
    audio[2 * SR : int(4.5 * SR)] = rng.normal(0, tail_noise, int(2.5 * SR))
    audio[2 * SR : int((2 + tail_sec) * SR)] = rng.normal(0, 0.1, int(tail_sec * SR))
    audio[int(6.5 * SR) :] = rng.normal(0, 0.0003, int(3.5 * SR))
    for syllable in range(10):
        start = int((7.0 + 0.3 * syllable) * SR)
        audio[start : start + int(0.2 * SR)] = rng.normal(0, 0.1, int(0.2 * SR))
    return audio


class StreamTimed(ScriptedBackend):
    """Scripted hypotheses in stream times: each pass gets them relative to ``policy``'s
    buffer, wherever the policy cut it."""

    policy: LocalAgreement

    def transcribe(self, audio, **options):
        offset = self.policy.buffer_offset
        return [{**w, "start": w["start"] - offset, "end": w["end"] - offset} for w in super().transcribe(audio, **options)]


def cut_behind_hello(audio: np.ndarray) -> LocalAgreement:
    """A policy that committed "Hello." (0.1-1.9 s) and was cut right behind it at 2 s, given
    ``audio`` to 7.5 s: its next pass hears "Again" at 7 s."""
    backend = StreamTimed([words("Hello.@0.1-1.9")] * 2 + [words("Again@7.0-7.4")])
    policy = backend.policy = LocalAgreement(backend, language="en")
    policy.insert_audio(audio[: int(2.5 * SR)])
    policy.process_iter()
    policy.insert_audio(audio[int(2.5 * SR) : 3 * SR])
    assert texts(policy.process_iter().committed) == ["Hello."]
    policy._cut_at(2.0)  # where the trimming rule cuts in a short quiet stretch after a word
    policy.insert_audio(audio[3 * SR : int(7.5 * SR)])
    return policy


@pytest.mark.parametrize("tail_sec", [0.0, 0.3])
def test_the_first_recordings_room_noise_is_no_sound_before_the_next_utterance(tail_sec):
    # A pause between two recordings holds the first one's room noise, louder than the
    # second's: the silence level, set by the quieter noise, takes it for sound, but it is
    # quiet beside the speech (as for the cut rule), and the end of the committed word the
    # buffer was cut behind is no sound either. The pass hears a second before "Again".
    policy = cut_behind_hello(two_recordings(tail_sec=tail_sec))
    policy.process_iter()
    assert policy.buffer_offset == pytest.approx(6.0, abs=0.05)
    assert policy.backend.audio_lengths[-1] == pytest.approx(1.5, abs=0.05)
    assert [(w["text"], w["start"]) for w in policy.previous] == [("Again", pytest.approx(7.0))]


def test_before_anything_is_committed_room_noise_louder_than_the_silence_level_is_sound():
    # At the head of a stream the lead rule judges sound by the silence level alone (judged
    # as the cut rule judges quiet, the shared clips' openings streamed worse in French and
    # Spanish): the same audio from 2 s on, nothing committed, keeps the noise.
    policy = LocalAgreement(ScriptedBackend([words("Again@5.0-5.4")]), language="en")
    policy.insert_audio(two_recordings()[2 * SR : 8 * SR])
    policy.process_iter()
    assert policy.buffer_offset == 0.0


@pytest.mark.parametrize("tail_noise, tail_sec", [(0.03, 0.0), (0.004, 0.8)])
def test_sound_before_the_next_utterance_keeps_the_head(tail_noise, tail_sec):
    # Sound a third as loud as the speech (a quiet speaker, not room noise), or a loud
    # stretch longer than a word's end: the buffer keeps it, as no pass heard it as words.
    policy = cut_behind_hello(two_recordings(tail_noise, tail_sec))
    policy.process_iter()
    assert policy.buffer_offset == pytest.approx(2.0)
    assert [(w["text"], w["start"]) for w in policy.previous] == [("Again", pytest.approx(7.0))]


def test_lead_silence_sec_must_be_seconds_or_unset():
    for bad in (True, "1", 0.05, 11):
        with pytest.raises(InvalidOption, match="lead_silence_sec"):
            policy_for("a@0-1", lead_silence_sec=bad)


# -- a pass whose model stopped short of the speech -------------------------------------------

STOPPED = "to@0.1-0.5 the@0.5-0.9 town@0.9-1.3 of@1.3-1.5 the@1.5-2.2 west.@2.2-2.2"
HEARD = "to@0.1-0.5 the@0.5-0.9 town@0.9-1.3 of@1.3-1.5 Sintra@1.5-2.0 and@2.0-2.2 which@2.2-2.5 was@2.5-2.8"


@pytest.mark.parametrize("after_west", ["speech", "quiet"])
def test_a_pass_whose_text_stops_short_of_the_speech_is_no_second_opinion(after_west):
    # tiny.en over "town of Sintra and which was made famous" (the long English stream): two
    # passes a second apart ended their text at 2.2 s with "west." squeezed to nothing and
    # speech on to their buffers' ends, and agreed on it. Set aside, the next passes, which
    # hear the name, agree instead. Followed by quiet, the squeezed word ends the speech:
    # those passes count.
    policy, _ = policy_for(
        "to@0.1-0.5 the@0.5-0.9", "to@0.1-0.5 the@0.5-0.9 town@0.9-1.3 of@1.3-1.5", STOPPED, STOPPED, HEARD, HEARD
    )
    audio = np.random.default_rng(5).normal(0, 0.1, 6 * SR).astype(np.float32)
    if after_west == "quiet":
        audio[int(2.2 * SR) :] = 0
    feed(policy, audio)
    if after_west == "speech":
        assert texts(policy.committed) == ["to", "the", "town", "of", "Sintra", "and", "which", "was"]
        assert policy.stopped_early_passes == 2
    else:
        assert texts(policy.committed)[:6] == ["to", "the", "town", "of", "the", "west."]
        assert policy.stopped_early_passes == 0


def test_a_model_that_keeps_stopping_short_still_commits_every_third_pass():
    # Every pass ends its text 0.8 s or more before its buffer with speech after it: two in
    # a row are set aside, the third counts; the sixth agrees with the third.
    policy, _ = policy_for(*[STOPPED] * 6)
    audio = np.random.default_rng(6).normal(0, 0.1, 8 * SR).astype(np.float32)
    steps = feed(policy, audio[: 3 * SR], 3.0) + feed(policy, audio[3 * SR :])
    assert [texts(s.committed) for s in steps] == [[]] * 5 + [texts(words(STOPPED))]
    assert policy.stopped_early_passes == 4


# -- language detection ----------------------------------------------------------------------


class DetectingBackend(ScriptedBackend):
    """A scripted backend that detects the scripted languages, one per call, and records
    the language each pass was asked for."""

    def __init__(self, hypotheses, detections):
        super().__init__(hypotheses)
        self.detections = list(detections)
        self.detect_calls = 0
        self.languages: list[str | None] = []

    def detect_language(self, audio):
        self.detect_calls += 1
        return self.detections.pop(0)

    def transcribe(self, audio, *, prompt="", language=None):
        self.languages.append(language)
        return super().transcribe(audio, prompt=prompt, language=language)


def test_the_first_confident_language_is_kept_for_the_rest_of_the_stream():
    backend = DetectingBackend([[], words("a@0.1-0.4")], [("en", 0.5), ("fr", 0.9), ("de", 0.99)])
    policy = LocalAgreement(backend, silence_factor=0)
    for _ in range(5):
        step(policy)
    policy.finish()
    # No detection before a pass heard words; then "en" (not sure yet), then "fr" (sure).
    assert backend.languages == [None, None, None, "fr", "fr", "fr"]
    assert backend.detect_calls == 2
    assert policy.language == "fr"


def test_a_language_never_sure_is_settled_at_the_end_as_the_most_probable():
    backend = DetectingBackend([words("a@0.1-0.4")], [("de", 0.4), ("fr", 0.6), ("de", 0.5)])
    policy = LocalAgreement(backend, silence_factor=0)
    step(policy), step(policy), step(policy)
    assert policy.language is None
    policy.finish()
    assert backend.languages == [None, None, None, "fr"]
    assert policy.language == "fr"


def test_a_language_given_is_never_detected():
    backend = DetectingBackend([words("a@0.1-0.4")], [])
    policy = LocalAgreement(backend, language="es", silence_factor=0)
    step(policy), step(policy)
    policy.finish()
    assert backend.detect_calls == 0 and set(backend.languages) == {"es"}


def test_no_language_is_reported_for_a_stream_without_words():
    backend = DetectingBackend([[]], [])
    policy = LocalAgreement(backend, silence_factor=0)
    step(policy), step(policy)
    policy.finish()
    assert backend.detect_calls == 0 and policy.language is None


class HearsWhatTheBufferHolds(ScriptedBackend):
    """Returns the scripted words that end within the buffer it is given."""

    def transcribe(self, audio, *, prompt="", language=None):
        said = super().transcribe(audio, prompt=prompt, language=language)
        return [w for w in said if w["end"] <= len(audio) / SR]


def test_vad_drops_words_heard_where_there_was_no_speech(speech):
    # The fox clip, then 3 s of silence in which the backend "hears" a word. The audio
    # level check is off: only the voice-activity controller can tell.
    audio = np.concatenate([speech, np.zeros(3 * SR, np.float32)])
    committed = {}
    for vad in (False, True):
        backend = HearsWhatTheBufferHolds([words("the@0.5-0.8 fox@2.0-2.4 ghost@7.5-7.8")])
        policy = LocalAgreement(backend, language="en", silence_factor=0, vad=vad, vad_silence_ms=5000)
        steps = feed(policy, audio, 0.5) + [policy.finish()]
        committed[vad] = [w["text"] for s in steps for w in s.committed]
    assert committed[False] == ["the", "fox", "ghost"]
    assert committed[True] == ["the", "fox"]


def test_digital_silence_beside_a_recording_is_not_its_background():
    """A pause spliced in as exact zeros (a long-form stream built from clips, a muted
    microphone) leaves the recording's own room noise below the silence level, as it is
    without the zeros."""
    from rtlab.levels import silence_level, speech_level

    rng = np.random.default_rng(0)
    noise = 0.003 * rng.standard_normal(SR).astype(np.float32)
    speech = 0.2 * rng.standard_normal(SR).astype(np.float32)
    recording = np.concatenate([noise, speech, noise])
    spliced = np.concatenate([recording, np.zeros(3 * SR, np.float32)])
    assert silence_level(spliced) == pytest.approx(silence_level(recording))
    assert speech_level(spliced) == pytest.approx(speech_level(recording))
    assert float(frame_rms(noise).max()) <= silence_level(spliced), "the room noise is silence"
    assert silence_level(np.zeros(SR, np.float32)) == pytest.approx(1e-4), "nothing but zeros: the floor"
