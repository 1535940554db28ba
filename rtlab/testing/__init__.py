"""Deterministic pieces for tests and platform benchmarks (registered as a built-in plugin).

* :class:`ToneBackend` (``"test"``) "recognises" tone-coded words: each word of
  :data:`VOCABULARY` is a sine burst at its own frequency, and :func:`tone_words` writes
  such audio. The words survive real FFmpeg and lossy codecs (opus, mp3), so the whole
  pipeline runs without Whisper weights and gives exact, known transcripts
  (:mod:`rtlab.testing.tones`).
* :class:`ToneAttentionBackend` (``"test-attention"``) adds an incremental decoder whose
  tokens and cross-attention are scripted by the tones, for AlignAtt's tests
  (:mod:`rtlab.testing.attention`).
* :class:`ToneVAD` hears tone-coded words as speech where Silero VAD hears none: within
  :func:`tone_vad` it stands in for Silero, so that a policy's ``vad=true`` runs on tones.
* :class:`ScriptedBackend` returns scripted hypotheses call by call and records its
  prompts, for unit tests of policies.
* :func:`check_backend` and :func:`check_policy` check a backend or policy plugin against
  rtlab's contract, from the plugin's own tests (see :mod:`rtlab.testing.conformance`).
"""

from __future__ import annotations

import numpy as np

from ..backends import SAMPLE_RATE, Backend, Word
from ..hookspecs import hookimpl
from .attention import ToneAttentionBackend, ToneIncrementalDecoder
from .conformance import (
    SPEECH_CLIP,
    SPEECH_CLIP_TEXT,
    BackendReport,
    PolicyReport,
    batch_requests,
    check_backend,
    check_batch_equivalence,
    check_policy,
)
from .tones import (
    TONE_CLIPS,
    VOCABULARY,
    ToneBackend,
    ToneVAD,
    tone_frequency,
    tone_vad,
    tone_words,
    wav_bytes,
    write_tone_corpus,
)

__all__ = [
    "SPEECH_CLIP", "SPEECH_CLIP_TEXT", "TONE_CLIPS", "VOCABULARY", "BackendReport", "PolicyReport",
    "ScriptedBackend", "ToneAttentionBackend", "ToneBackend", "ToneIncrementalDecoder", "ToneVAD", "batch_requests",
    "blas_thread_counts", "check_backend", "check_batch_equivalence", "check_policy",
    "tone_frequency", "tone_vad", "tone_words", "wav_bytes", "write_tone_corpus",
]  # fmt: skip


def blas_thread_counts() -> list[int]:
    """Threads of each BLAS library numpy and others loaded (``threadpoolctl``)."""
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


class ScriptedBackend(Backend):
    """Returns ``hypotheses[i]`` on the i-th call (the last one repeats); records prompts."""

    name = "scripted"
    cores_per_call = 0

    def __init__(self, hypotheses: list[list[Word]] | None = None) -> None:
        self.hypotheses = hypotheses or [[]]
        self.prompts: list[str] = []
        self.audio_lengths: list[float] = []

    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        self.prompts.append(prompt)
        self.audio_lengths.append(len(audio) / SAMPLE_RATE)
        index = min(len(self.prompts) - 1, len(self.hypotheses) - 1)
        return [dict(w) for w in self.hypotheses[index]]


@hookimpl
def register_backends(register):
    register(ToneBackend)
    register(ToneAttentionBackend)
