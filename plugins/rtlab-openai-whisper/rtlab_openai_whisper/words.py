"""Whisper's words as rtlab words, with the rules that keep a streaming pass honest.

These are the rules of ``rtlab-faster-whisper`` (its README explains each), applied the
same way here so that the two engines differ by their engine and not by their
post-processing when they are compared under the same streaming policy.
"""

from __future__ import annotations

import numpy as np

from rtlab.backends import Word
from rtlab.levels import frame_rms, silence_level

MIN_WORD_SECONDS = 0.02  # one alignment frame: a word said in less was not aligned to audio
UNALIGNED_RUN = 3  # this many such words in a row: text the audio lacks (see cut_unaligned)
LOOP_REPEATS = 3  # the same words this many times in a row: the decoder is looping


def key(text: str) -> str:
    """A word as compared between passes: no surrounding punctuation, case-folded."""
    return text.strip(" .,!?;:\"'").casefold()


def cut_repetition(words: list[tuple], times: int = LOOP_REPEATS, longest: int = 4) -> tuple[list[tuple], bool]:
    """``words`` up to the first run of one to ``longest`` words said ``times`` times in a
    row, keeping one of them; and whether there was such a run. Without the temperature
    fallback a decoder can loop ("loud, loud, loud, ..."), and two passes agree on a loop
    as readily as on speech."""
    keys = [key(word[0]) for word in words]
    for start in range(len(keys)):
        for size in range(1, longest + 1):
            gram = keys[start : start + size]
            if len(gram) < size:
                break
            if all(keys[start + k * size : start + (k + 1) * size] == gram for k in range(1, times)):
                return words[: start + size], True
    return words, False


def cut_unaligned(words: list[tuple], shortest: float = MIN_WORD_SECONDS, run: int = UNALIGNED_RUN) -> list[tuple]:
    """``words`` without text the alignment found no audio for: a run of ``run`` or more
    words in a row that each last less than ``shortest`` seconds. A run inside the window
    ends it (what follows repeats what came before); a run the window opens with is
    dropped on its own."""
    index = 0
    while index < len(words):
        end = index
        while end < len(words) and words[end][2] - words[end][1] < shortest:
            end += 1
        if end - index >= run:
            if index > 0:
                return words[:index]
            words = words[end:]
            continue
        index = max(end, index + 1)
    return words


def is_quiet_after(audio: np.ndarray, seconds: float) -> bool:
    """Whether every 20 ms frame of ``audio`` from ``seconds`` on is silence by the buffer's
    own level (``rtlab.levels.silence_level``, the rule LocalAgreement drops words by)."""
    frames = frame_rms(audio[int(seconds * 16_000) :])
    level = silence_level(audio)
    return level is not None and len(frames) > 0 and float(frames.max()) <= level


def merge_word_pieces(pieces) -> list[Word]:
    """Whisper words, given as ``(text, start, end, probability)``, as rtlab words.

    A piece that continues the previous word without a space and starts with punctuation
    ("-fark", "'s") is glued to it, so that joining words with single spaces gives back
    Whisper's text; a piece of punctuation alone (" .", what a looping decoder emits) is
    dropped."""
    words: list[Word] = []
    for text, start, end, probability in pieces:
        if not text:
            continue
        glued = words and not text[0].isspace() and not text[0].isalnum()
        if not glued and not any(character.isalnum() for character in text):
            continue
        if glued:
            last = words[-1]
            last["text"] += text.strip()
            last["end"] = end
            last["probability"] = min(last["probability"], probability)
        else:
            words.append({"text": text.strip(), "start": start, "end": end, "probability": probability})
    return words
