"""Subtitles from committed words: where cues break and how srt and vtt write them
(``rtlab transcribe --format srt|vtt`` is in test_cli.py)."""

from __future__ import annotations

import pytest

from rtlab.subtitles import Cue, Cues, cue_text, subtitles, timestamp


def w(text: str, start: float, end: float) -> dict:
    return {"text": text, "start": start, "end": end}


def test_a_cue_ends_with_its_sentence():
    cues = Cues()
    assert cues.add([w("Hello", 0.0, 0.4), w("there.", 0.5, 0.9)]) == [Cue(0.0, 0.9, "Hello there.")]
    assert cues.add([w("And", 1.0, 1.2)]) == []
    assert cues.flush() == [Cue(1.0, 1.2, "And")]
    assert cues.flush() == []


def test_a_pause_a_long_cue_and_many_characters_each_start_a_new_cue():
    paused = Cues(max_gap=1.0)
    assert paused.add([w("one", 0.0, 0.3), w("two", 1.3, 1.6)]) == [Cue(0.0, 0.3, "one")]
    long = Cues(max_seconds=2.0)
    assert long.add([w("a", 0.0, 0.5), w("b", 0.6, 1.5), w("c", 1.6, 2.1)]) == [Cue(0.0, 1.5, "a b")]
    wide = Cues(max_chars=10)
    assert wide.add([w("abcd", 0.0, 0.1), w("efgh", 0.2, 0.3), w("ijkl", 0.4, 0.5)]) == [Cue(0.0, 0.3, "abcd efgh")]
    assert wide.flush() == [Cue(0.4, 0.5, "ijkl")]


def test_words_arrive_over_several_commits_and_blank_words_are_skipped():
    cues = Cues()
    assert cues.add([w(" The", 0.1, 0.3)]) == []
    assert cues.add([w(" ", 0.3, 0.3), w(" end!", 0.4, 0.8), w("Next", 1.0, 1.2)]) == [Cue(0.1, 0.8, "The end!")]


@pytest.mark.parametrize("option", ["max_chars", "max_seconds", "max_gap"])
@pytest.mark.parametrize("value", [0, -1, "7", None])
def test_cue_limits_are_checked(option, value):
    with pytest.raises(ValueError, match=f"{option} must be a number above 0"):
        Cues(**{option: value})


def test_timestamps_and_cues_in_both_formats():
    assert timestamp(3725.0456, "srt") == "01:02:05,046"
    assert timestamp(3725.0456, "vtt") == "01:02:05.046"
    assert timestamp(-0.01, "srt") == "00:00:00,000"
    cue = Cue(1.5, 2.25, "a --> b\nc")
    assert cue_text(cue, 3, "srt") == "3\n00:00:01,500 --> 00:00:02,250\na -> b c\n\n"
    assert cue_text(cue, 3, "vtt") == "00:00:01.500 --> 00:00:02.250\na -> b c\n\n"


def test_subtitles_of_a_stream_s_events():
    events = [
        {"type": "partial", "text": "Hi"},
        {"type": "commit", "words": [w("Hi", 0.0, 0.3), w("all.", 0.4, 0.7)]},
        {"type": "commit", "words": [w("Bye", 2.0, 2.3)]},
        {"type": "summary", "text": "Hi all. Bye"},
    ]
    assert subtitles(events, "vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:00.700\nHi all.\n\n00:00:02.000 --> 00:00:02.300\nBye\n\n"
    )
    assert subtitles(events, "srt").startswith("1\n00:00:00,000 --> 00:00:00,700\nHi all.\n\n2\n")
    with pytest.raises(ValueError, match="format must be one of srt, vtt"):
        subtitles(events, "ass")


def test_a_joining_word_stays_in_the_cue_of_the_word_before_it():
    cues = Cues(max_chars=20)  # "der Unabhängigkeit" fits, with its rest it does not
    finished = cues.add([{"text": "der", "start": 0.0, "end": 0.3}, {"text": "Unabhängigkeit", "start": 0.3, "end": 1.0}])
    finished += cues.add([{"text": "serklärung", "start": 1.0, "end": 1.6, "joins": True}, {"text": "eine", "start": 1.6, "end": 2.0}])
    finished += cues.flush()
    assert [cue.text for cue in finished] == ["der Unabhängigkeitserklärung", "eine"]


def test_a_cue_starts_no_earlier_than_the_cue_before_it_ends():
    # Word times overlap by a frame or two (base, German FLEURS: a cue ended at 10.64 s and
    # the next began at 10.62 s); a player would show both cues at once for that while.
    cues = Cues()
    finished = cues.add([{"text": "Schatzkarte.", "start": 9.9, "end": 10.64}, {"text": "gezeichnet", "start": 10.62, "end": 11.2}])
    finished += cues.flush()
    assert [(cue.start, cue.end) for cue in finished] == [(9.9, 10.64), (10.64, 11.2)]
