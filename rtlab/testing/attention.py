"""AlignAtt's test double: the tone backend with an incremental decoder whose tokens and
cross-attention are scripted by the audio.

Every tone-coded word (see :func:`rtlab.testing.tone_words`) is two tokens, its first half
with a leading space and its second half, so that a chunk can end inside a word. The
decoder "hears" every burst of tone in the buffer, the one still sounding at its end
included, and chooses the tokens in order; while it chooses a token, its attention (two
identical heads) looks at where that token is said: a word's first half at the start of
its burst, its second half at the burst's last frame. So AlignAtt stops before a word that
ends within ``frame_threshold`` frames of the end of the buffer, and the end of text comes
once every burst was decoded.

The attention is a box of :data:`BOX` frames starting on that frame, on a uniform floor,
and the tokens fed before the first one chosen look at frame 0: after AlignAtt's
normalisation over tokens and median filter, the attended frame is the box's first. A box
cannot reach past the end of the audio, so the attended frame is at most ``BOX`` frames
before it (a decode with a threshold under that runs to the end of text).

The decoder records every ``begin`` (context and tokens already emitted), for tests of the
context carry-over. It is the session's only state; the backend keeps none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..backends import SAMPLE_RATE
from ..policies.incremental import INCREMENTAL_DECODING, Decoded, IncrementalDecoder
from .tones import _BASE_HZ, _FRAME, _STEP_HZ, VOCABULARY, ToneBackend
#: Frames of the attention box (more than AlignAtt's median filter, 7, removes).
BOX = 9
_HEADS = 2
_VOICED = 0.05  # RMS of a 20 ms frame that holds tone
_SHORTEST = 4  # frames: a shorter burst is a click, not a word


def _pieces(word: str) -> tuple[str, str]:
    half = max(1, len(word) // 2)
    return " " + word[:half], word[half:]


class ToneIncrementalDecoder(IncrementalDecoder):
    """One session's scripted incremental decoder (see the module docstring)."""

    frames_per_second = SAMPLE_RATE / _FRAME
    window_seconds = 30.0

    def __init__(self, language: str | None = None) -> None:
        vocabulary = len(VOCABULARY)
        self.eot = 2 * vocabulary
        self.sot = self.eot + 1
        self.sot_prev = self.eot + 2
        self.no_timestamps = self.eot + 3
        self.max_tokens = 446  # Whisper's 448, less its start sequence
        self.language = language or "en"
        #: ``(context, forced)`` of every :meth:`begin`, oldest first.
        self.begins: list[tuple[list[int], list[int]]] = []
        #: Seconds of audio of every :meth:`encode`.
        self.encoded: list[float] = []
        #: How many :meth:`encode` calls came before :meth:`end_of_audio` (None: not called).
        self.encodes_before_end: int | None = None
        self.frames = 0
        self._heard: list[tuple[int, int]] = []  # (token, frame it is said at)
        self._position = 0

    # -- the contract ------------------------------------------------------------------------

    def encode(self, audio: np.ndarray) -> int:
        audio = np.asarray(audio, np.float32)
        self.frames = min(len(audio), int(self.window_seconds * SAMPLE_RATE)) // _FRAME
        self.encoded.append(len(audio) / SAMPLE_RATE)
        self._heard = []
        for word, first, last in self._bursts(audio[: self.frames * _FRAME]):
            index = VOCABULARY.index(word)
            self._heard += [(2 * index, first), (2 * index + 1, last)]
        return self.frames

    def begin(self, context: Sequence[int], forced: Sequence[int]) -> Decoded:
        if not self.frames:
            raise RuntimeError("begin() before encode()")
        self.begins.append((list(context), list(forced)))
        fed = ([self.sot_prev, *context] if context else []) + [self.sot, self.no_timestamps, *forced]
        rows = [self._looking_at(None) for _ in fed[: len(fed) - len(forced) - 1]]
        rows += [self._looking_at(position) for position in range(len(forced) + 1)]
        self._position = len(forced)
        return Decoded(self._choice(), np.stack(rows, axis=1))

    def feed(self, token: int) -> Decoded:
        self._position += 1
        return Decoded(self._choice(), self._looking_at(self._position)[:, None, :])

    def text_tokens(self, text: str) -> list[int]:
        words = [w for w in text.lower().split() if w in VOCABULARY]
        return [t for w in words for t in (2 * VOCABULARY.index(w), 2 * VOCABULARY.index(w) + 1)]

    def words(self, tokens: Sequence[int]) -> list[tuple[str, list[int]]]:
        found: list[tuple[str, list[int]]] = []
        for token in tokens:
            if token >= self.eot:
                continue
            piece = _pieces(VOCABULARY[token // 2])[token % 2]
            if piece.startswith(" ") or not found:
                found.append((piece, [token]))
            else:
                text, group = found[-1]
                found[-1] = (text + piece, group + [token])
        return found

    def close(self) -> None:
        self.frames = 0
        self._heard = []

    def end_of_audio(self) -> None:
        if self.encodes_before_end is None:
            self.encodes_before_end = len(self.encoded)

    # -- the script --------------------------------------------------------------------------

    def _choice(self) -> int:
        return self._heard[self._position][0] if self._position < len(self._heard) else self.eot

    def _looking_at(self, position: int | None) -> np.ndarray:
        """Attention ``[heads, frames]`` while choosing the token at ``position`` of what is
        heard: on the frame it is said at (the end once everything was said; frame 0 for
        None, the start sequence)."""
        if position is None:
            first = 0
        else:
            first = self._heard[position][1] if position < len(self._heard) else self.frames
        first = max(0, min(first, self.frames - BOX))
        row = np.ones(self.frames, np.float32)
        row[first : first + BOX] += 10.0
        return np.repeat((row / row.sum())[None, :], _HEADS, axis=0)

    @staticmethod
    def _bursts(audio: np.ndarray) -> list[tuple[str, int, int]]:
        """``(word, first frame, last frame)`` of each burst of tone, the one still
        sounding at the end of ``audio`` included."""
        frames = len(audio) // _FRAME
        if frames == 0:
            return []
        energy = np.sqrt(np.mean(audio[: frames * _FRAME].reshape(frames, _FRAME) ** 2, axis=1))
        voiced = np.append(energy > _VOICED, False)
        found = []
        start = None
        for index, is_voiced in enumerate(voiced):
            if is_voiced and start is None:
                start = index
            elif not is_voiced and start is not None:
                if index - start >= _SHORTEST:
                    burst = audio[start * _FRAME : index * _FRAME]
                    spectrum = np.abs(np.fft.rfft(burst * np.hanning(len(burst))))
                    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(burst)
                    word = VOCABULARY[min(max(int(round((peak_hz - _BASE_HZ) / _STEP_HZ)), 0), len(VOCABULARY) - 1)]
                    found.append((word, start, index - 1))
                start = None
        return found


class ToneAttentionBackend(ToneBackend):
    """The tone backend with the ``incremental-decoding`` capability (AlignAtt's test
    double): ``transcribe`` as the ``test`` backend, and a scripted
    :class:`ToneIncrementalDecoder` per session."""

    name = "test-attention"
    description = "the test backend with a scripted incremental decoder, for AlignAtt's tests"
    capabilities = (INCREMENTAL_DECODING,)

    def incremental_decoder(self, *, language: str | None = None) -> ToneIncrementalDecoder:
        """A new decoder for one session; the backend keeps no reference to it."""
        return ToneIncrementalDecoder(language)
