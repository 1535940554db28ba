"""Offline passes: decode a whole file, transcribe it in one call, keep the words.

Streaming metrics need the audio time of every spoken word, and accuracy is worth
comparing with what the same model gets when it sees the whole file at once. Both come
from one *offline pass*: :func:`~rtlab.decoders.files.decode_audio` (one FFmpeg call, 16 kHz mono float32), then
the backend's own ``transcribe()`` on the whole audio. Passes are cached in memory per
(file, backend configuration, language), so that five streaming configurations of one
model share one offline pass.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import SAMPLE_RATE, Backend, Word, ensure_loaded
from ..core.instances import get_backend
from ..config import DEFAULT_BACKEND, StreamConfig
from ..decoders.files import decode_audio
from ..core.scheduler import cpu_slots, scheduler_for

__all__ = [
    "OfflineTranscript", "clear_cache", "offline_transcribe", "transcribe_samples",
]  # fmt: skip


@dataclass(frozen=True)
class OfflineTranscript:
    """One offline pass over a whole file.

    ``words`` are in audio seconds; ``compute_seconds`` is the time of the ``transcribe``
    call that produced them (a cached transcript keeps the time of its first computation).
    """

    words: list[Word] = field(default_factory=list)
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    backend: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The words joined by single spaces."""
        return " ".join(w["text"].strip() for w in self.words if w["text"].strip())

    @property
    def rtf(self) -> float | None:
        """Compute seconds per audio second; ``None`` for empty audio."""
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else None


_cache: dict[tuple, OfflineTranscript] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every cached offline transcript."""
    with _cache_lock:
        _cache.clear()


def _file_key(path: Path) -> tuple:
    # The path alone is not enough: a benchmark may rewrite a long-form file in place.
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def offline_transcribe(
    audio_path: str | os.PathLike[str],
    config: StreamConfig | str = DEFAULT_BACKEND,
    *,
    language: str | None = None,
    audio: np.ndarray | None = None,
    **settings: Any,
) -> OfflineTranscript:
    """The backend's word-timestamp transcript of the whole file (cached in memory).

    ``config`` (a :class:`~rtlab.config.StreamConfig`, or a backend name with ``settings``
    such as ``model=`` on top) names the shared backend instance as
    :class:`~rtlab.core.processor.AudioProcessor` does; only its backend part matters here.
    ``language`` defaults to the configuration's, then the backend's. ``audio`` may pass
    the already decoded samples of ``audio_path`` to skip decoding. Blocking (loads the
    model on first use): call it off the event loop. Unknown backends or options raise
    :class:`~rtlab.errors.UnknownBackend` or :class:`~rtlab.errors.InvalidOption`.
    """
    config = StreamConfig.coerce(config, **settings)
    language = language or config.language
    instance = get_backend(config)
    path = Path(audio_path)
    key = (_file_key(path), config.model_key, language)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    samples = decode_audio(path) if audio is None else audio
    transcript = transcribe_samples(instance, samples, language=language)
    with _cache_lock:
        _cache[key] = transcript
    return transcript


def transcribe_samples(
    backend: Backend, audio: np.ndarray, *, language: str | None = None
) -> OfflineTranscript:
    """One uncached offline pass of ``audio`` through a backend instance (loaded if needed)."""
    ensure_loaded(backend)
    lang = language or backend.default_language()
    # Like a streaming pass, it holds its CPU slots and one of the model's replicas: a
    # replay running meanwhile is not slowed down by it, nor it by the replay's passes.
    with cpu_slots.hold(backend.cores_per_call, gate=scheduler_for(backend).gate):
        started = time.perf_counter()
        words = backend.transcribe(audio, language=lang)
        compute = time.perf_counter() - started
    kept = [
        {"text": w["text"].strip(), "start": float(w["start"]), "end": float(w["end"])}
        for w in words
        if w["text"].strip()
    ]
    return OfflineTranscript(kept, len(audio) / SAMPLE_RATE, compute, backend.info())
