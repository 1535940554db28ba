"""What a decode of a buffer adds to the words already committed from it.

A policy that decodes its whole buffer again (LocalAgreement-2 on every pass, AlignAtt with
``decode_afresh``) hears the words it committed from that audio a second time, not always
alike and not always at the same times. :func:`after_committed` drops them and keeps what
the decode heard after them. Words are rtlab words (``text``, ``start``, ``end`` in stream
seconds); other keys a policy puts on them are kept.
"""

from __future__ import annotations

import difflib
from typing import Sequence

from ..backends import Word
from ..words import key

#: A word that starts before the last committed word ends and is this alike to it (difflib's
#: ratio of their keys) or more is taken for that word heard again (see straddles).
REHEARD_SIMILARITY = 0.6
#: A decode's new word may start this long before the last commit ends: word times are loose
#: by a frame or a few.
START_SLACK = 0.1
#: The committed tail a decode may repeat at its start: up to this many words, when its first
#: new word starts within ``_REPEAT_WITHIN`` seconds of the last commit's end.
_REPEAT_LONGEST = 5
_REPEAT_WITHIN = 1.0
#: A closed compound heard over the last committed word ("Unabhängigkeit" committed,
#: "Unabhängigkeitserklärung" heard): the committed word and the rest each have at least
#: this many letters, ...
COMPOUND_LETTERS = 4
#: ... and the heard word goes on at least this long after the committed word ends.
COMPOUND_SECONDS = 0.3


def _key(word: Word) -> str:
    """Comparison key (:func:`rtlab.words.key`): "Dog." and "dog" agree."""
    return key(word["text"])


def rest_of_compound(word: Word, last: Word) -> Word | None:
    """What ``word`` adds to the committed ``last`` when a pass heard the two as one word:
    hyphenated ("25" committed, "25-30" heard: "-30"), or closed, the way German joins
    nouns ("Unabhängigkeit" committed from passes whose buffers ended inside the word,
    "Unabhängigkeitserklärung" heard over it: "serklärung"), the rest from where ``last``
    ends, marked ``joins`` so that text goes on from ``last`` without a space
    (:func:`rtlab.core.events.join_words`: "Unabhängigkeitserklärung" again). A closed compound counts only when both parts have ``COMPOUND_LETTERS`` letters
    or more and ``word`` goes on ``COMPOUND_SECONDS`` or more after ``last`` ends: "in"
    heard again as "into" is the same audio heard otherwise, not more of it. None
    otherwise. Without this, a later pass's one word over the committed one is taken for
    it heard again, and the rest of what was said is dropped for good."""
    head = _key(last)
    whole = _key(word)
    stripped = word["text"].strip()
    if whole.startswith(head + "-"):
        rest = "-" + stripped.split("-", head.count("-") + 1)[-1]
    elif (
        len(head) >= COMPOUND_LETTERS
        and whole.startswith(head)
        and len(whole) - len(head) >= COMPOUND_LETTERS
        and word["end"] - last["end"] >= COMPOUND_SECONDS
    ):
        # The shortest start of the text that compares as the committed word: casefolding
        # can change lengths ("ß" / "ss"), so the rest is not cut at len(head).
        cut = next((i for i in range(1, len(stripped) + 1) if key(stripped[:i]) == head), None)
        if cut is None:  # the committed word ends inside one letter's casefolding
            return None
        rest = stripped[cut:]
    else:
        return None
    if not key(rest):
        return None
    return {**word, "text": rest, "start": max(word["start"], last["end"]), "joins": True}


def straddles(word: Word, last: Word) -> bool:
    """Whether ``word``, which starts before the committed ``last`` ends, is new speech
    all the same: it starts in the second half of ``last``, most of it comes after ``last``
    ends, and it is not ``last`` heard again with other letters (their keys less than
    ``REHEARD_SIMILARITY`` alike). A pass that commits "posa" can end it where a later
    pass starts "Salargado." (Portuguese FLEURS, base): a rule on start times alone drops
    the clip's last word for good. A word that starts earlier is ``last`` heard again,
    over more audio ("Homem" committed, "Romatismo" heard from before it starts on)."""
    if word["start"] <= (last["start"] + last["end"]) / 2:
        return False
    if word["end"] - last["end"] <= last["end"] - word["start"]:
        return False
    return difflib.SequenceMatcher(None, _key(word), _key(last), autojunk=False).ratio() < REHEARD_SIMILARITY


def after_committed(words: list[Word], committed: Sequence[Word]) -> list[Word]:
    """``words`` (a decode of a buffer, stream times, in order) without what ``committed``
    (the words committed so far, oldest first; the last few are enough) already holds.

    Where the decode heard the last committed word again (the same word, overlapping it in
    time or ending at most ``START_SLACK`` before it starts, or the first part of a
    compound, :func:`rest_of_compound`), what follows that hearing is new, however the two
    decodes placed the boundary between them: the decode that committed "extremo" may have
    ended it 0.2 s into the next word, "en", which a later one starts there, and a rule on
    times alone would drop "en" for good. A pass whose buffer ended inside "middle" heard
    "the" over the start of it (19.94-20.27 s); the next pass heard "the" at 19.90-19.90
    and "middle" after it: that "the" is the committed one heard again.
    Without such a hearing: keep only what starts after the last commit, and a word that
    straddles its end with most of its time after it and does not sound like it
    (:func:`straddles`: kept from where the commit ends); then remove an n-gram that
    repeats the committed tail."""
    if committed and _key(committed[-1]):
        last = committed[-1]
        for index in range(len(words) - 1, -1, -1):
            word = words[index]
            if not (word["start"] < last["end"] and word["end"] > last["start"] - START_SLACK):
                continue
            if _key(word) == _key(last):
                return words[index + 1 :]
            rest = rest_of_compound(word, last)
            if rest is not None:
                return [rest, *words[index + 1 :]]
    last_end = committed[-1]["end"] if committed else 0.0
    cutoff = last_end - START_SLACK
    words = [
        w if w["start"] > cutoff else {**w, "start": last_end}
        for w in words
        if w["start"] > cutoff or (committed and straddles(w, committed[-1]))
    ]  # fmt: skip
    if not words or not committed or abs(words[0]["start"] - last_end) >= _REPEAT_WITHIN:
        return words
    for n in range(min(_REPEAT_LONGEST, len(words), len(committed)), 0, -1):
        if [_key(w) for w in committed[-n:]] == [_key(w) for w in words[:n]]:
            return words[n:]
    return words
