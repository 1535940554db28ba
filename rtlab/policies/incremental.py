"""The capability AlignAtt needs from a backend: incremental greedy decoding with the
cross-attention of the alignment heads (and, where the decoder offers it, beam search).

A backend that has it lists :data:`INCREMENTAL_DECODING` in its
:attr:`~rtlab.backends.Backend.capabilities` and creates, per session, an
:class:`IncrementalDecoder` with ``backend.incremental_decoder(language=...)``. The decoder
is the session's decoder state on the shared model: the encoder output of the current
audio buffer, the key/value cache of the tokens fed since the last :meth:`~IncrementalDecoder.begin`,
and the language. It belongs to the policy that created it; nothing of it stays in the
backend, so it is freed with the policy when the session ends.

One chunk of audio is decoded as: :meth:`~IncrementalDecoder.encode` the buffer,
:meth:`~IncrementalDecoder.begin` with the context and the tokens already emitted for
this buffer (the cache is rebuilt: the encoder output changed), then
:meth:`~IncrementalDecoder.feed` one chosen token after another, each call returning the
greedy choice for the next token and the attention rows of what was fed.
Before the stream's last decode the policy calls :meth:`~IncrementalDecoder.end_of_audio`:
no audio will follow the buffer's.

A decoder that can search beams (:attr:`IncrementalDecoder.beam_search`) also gives each
step's scores over the vocabulary (:attr:`Decoded.logits`) and takes several hypotheses
at once: :meth:`~IncrementalDecoder.feed_beams` continues each new hypothesis from one of
the current ones (its key/value cache copied), one token each. The policy keeps the
hypotheses' tokens and scores; the decoder keeps only their caches.

On a batching backend (``max_batch`` above 1) the encoder runs and steps of concurrent
sessions' decoders go through the backend's batcher (see :mod:`rtlab.core.batching`), which
calls the decoder class's :meth:`~IncrementalDecoder.encode_batch` and
:meth:`~IncrementalDecoder.step_batch` with several sessions' calls at once. The defaults
run them one after another; a decoder that can stack them overrides them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

#: The capability's name, in :attr:`rtlab.backends.Backend.capabilities`.
INCREMENTAL_DECODING = "incremental-decoding"


@dataclass
class Decoded:
    """What one :meth:`IncrementalDecoder.begin` or :meth:`~IncrementalDecoder.feed` call
    computed.

    ``token`` is the greedy choice for the token after those fed (special tokens other
    than :attr:`IncrementalDecoder.eot` suppressed). ``attention`` holds, for each token
    fed by the call, the cross-attention weights of the model's alignment heads over the
    frames of audio in the buffer: float32, ``[heads, tokens fed, frames]`` (the softmax
    over the whole encoder window, cut to the frames that hold audio).
    """

    token: int
    attention: np.ndarray
    #: The scores over the vocabulary ``token`` was chosen from, the suppressed tokens at
    #: ``-inf`` (a decoder that can search beams gives them; else None).
    logits: np.ndarray | None = None

    def log_probs(self) -> np.ndarray:
        """The log-probabilities of the next token (from :attr:`logits`)."""
        if self.logits is None:
            raise ValueError("this decoder gives no scores over the vocabulary (it cannot search beams)")
        top = float(np.max(self.logits))
        return self.logits - (top + np.log(np.sum(np.exp(self.logits - top))))


@dataclass
class DecoderCall:
    """One session's decoder step in a batch: ``decoder.begin(*args)``,
    ``decoder.feed(*args)`` or ``decoder.feed_beams(*args)`` (``method``)."""

    decoder: IncrementalDecoder
    method: str
    args: tuple


class IncrementalDecoder:
    """One session's incremental decoder on a shared model (the contract; see the module
    docstring). Methods run on the scheduler's thread, one call at a time per decoder."""

    #: Encoder frames per second of audio (Whisper: 50, one per 20 ms).
    frames_per_second: ClassVar[float] = 50.0
    #: The end-of-text token: the model says the buffer holds nothing more.
    eot: int = -1
    #: Tokens one decode may hold after its fixed start: context, the tokens already
    #: emitted for the buffer and the new ones, together.
    max_tokens: int = 0
    #: The language decoded (a code), once known; None until a multilingual model that was
    #: given none has detected it.
    language: str | None = None
    #: Whether the decoder searches beams: gives :attr:`Decoded.logits` and has
    #: :meth:`feed_beams`.
    beam_search: ClassVar[bool] = False
    #: Whether every :class:`Decoded` has :attr:`~Decoded.logits` (implied by
    #: :attr:`beam_search`): AlignAtt's ``onset_logprob`` needs them.
    scores: ClassVar[bool] = False
    #: Hypotheses the policy's beam search keeps (the backend's ``beam_size``; 1: greedy).
    beam_size: int = 1

    def encode(self, audio: np.ndarray) -> int:
        """Encode ``audio`` (float32 16 kHz mono, the whole buffer, at most one encoder
        window) for the decodes that follow; forget the cache. Returns the number of
        encoder frames that hold audio."""
        raise NotImplementedError

    def begin(self, context: Sequence[int], forced: Sequence[int]) -> Decoded:
        """Start decoding the encoded buffer: the model's start sequence, with ``context``
        (text tokens of what came before the buffer, possibly empty) as the previous text,
        then ``forced`` (the tokens already emitted for the buffer). Blank output and the
        end of text are suppressed for the first token, as Whisper does at a segment start."""
        raise NotImplementedError

    def feed(self, token: int) -> Decoded:
        """Append ``token`` to what was fed; the next greedy choice and its attention row."""
        raise NotImplementedError

    def feed_beams(self, tokens: Sequence[int], sources: Sequence[int]) -> list[Decoded]:
        """Beam search's step: the new hypothesis ``i`` is the current hypothesis
        ``sources[i]`` (after :meth:`begin` there is one, 0) followed by ``tokens[i]``.
        Returns each new hypothesis's next greedy choice, scores and attention row, in
        order; the hypotheses not named are forgotten. One hypothesis fed ``token`` from 0
        is :meth:`feed`."""
        raise NotImplementedError(f"{type(self).__name__} cannot search beams")

    def text_tokens(self, text: str) -> list[int]:
        """``text`` as text tokens (for a prompt), as it would follow earlier text."""
        raise NotImplementedError

    def words(self, tokens: Sequence[int]) -> list[tuple[str, list[int]]]:
        """``tokens`` split into words, in order: ``(text, tokens)`` each, where a word
        starts at a space (or, in languages written without spaces, at each character) and
        keeps the punctuation that follows it. Joined, the tokens are ``tokens``."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the encoder output and the cache now (they are freed with the decoder
        anyway); the decoder can be used again after another :meth:`encode`."""

    def end_of_audio(self) -> None:
        """The stream's audio has ended: every buffer encoded from now on ends where the
        audio ends, and nothing follows it (AlignAtt calls it before the stream's last
        decode). A decoder may fill the encoder window after such a buffer differently
        (openai-whisper's pads it with zeros, as the last window of an offline pass).
        Default: nothing changes."""

    @classmethod
    def encode_batch(cls, calls: list[tuple[IncrementalDecoder, np.ndarray]]) -> list[int]:
        """:meth:`encode` of several sessions' decoders (of this class, on one model) with
        their audio: what each returns, in order. Runs on the thread of one of those
        sessions, with the backend's cores held. Default: one after another."""
        return [decoder.encode(audio) for decoder, audio in calls]

    @classmethod
    def step_batch(cls, calls: list[DecoderCall]) -> list[Decoded | list[Decoded]]:
        """The :meth:`begin`, :meth:`feed` or :meth:`feed_beams` of several sessions'
        decoders (of this class, on one model; at most one call per decoder): what each
        returns, in order, as it would alone. Runs as :meth:`encode_batch` does. Default:
        one after another."""
        return [getattr(call.decoder, call.method)(*call.args) for call in calls]
