"""The backend instance a stream uses (one per model key, shared by every session), and
each session's view of it."""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..backends import Backend, Request, Word
from ..config import StreamConfig
from ..registry import get_registry
from .batching import Batcher, BatchingDecoder
from .costs import add_features

_instances: dict[tuple, Backend] = {}
_instances_lock = threading.Lock()


def get_backend(config: StreamConfig | str, **options: Any) -> Backend:
    """The shared backend instance of a :class:`~rtlab.config.StreamConfig` (or of a backend
    name and its options, ``model`` among them), created, not loaded: one instance per
    :attr:`~rtlab.config.StreamConfig.model_key` and registered class.

    Unknown names and options raise :class:`~rtlab.errors.UnknownBackend` and
    :class:`~rtlab.errors.InvalidOption`. Call :func:`~rtlab.backends.ensure_loaded` (off
    the event loop) before transcribing.
    """
    if isinstance(config, str):
        model = options.pop("model", None)
        config = StreamConfig(backend=config, model=model, backend_options=options)
    elif options:
        raise TypeError("get_backend(config) takes no options besides the configuration's own")
    registry = get_registry()
    kwargs = config.backend_kwargs()
    registry.check_options("backend", config.backend, kwargs)
    cls = registry.get("backend", config.backend)
    # The class is part of the key: a name registered again (a test's inline plugin) is
    # another backend.
    key = (cls, *config.model_key)
    with _instances_lock:
        backend = _instances.get(key)
        if backend is None:
            backend = _instances[key] = cls(**kwargs)
        return backend


class SessionBackend:
    """What a session's policy sees of the shared backend: the backend itself, except that
    ``transcribe`` adds up what the calls of a pass did (:meth:`Backend.cost_features`,
    for the modeled clock and for calibration) and, on a batching backend, joins the
    batcher with the session's key (see :mod:`rtlab.core.batching`), as do the encoder runs
    and steps of its ``incremental_decoder``."""

    def __init__(self, backend: Backend, batcher: Batcher | None = None, key: Callable[[], float] | None = None) -> None:
        self._backend = backend
        self._batcher = batcher
        self._key = key
        self._features: dict[str, float] = {}

    def transcribe(self, audio: Any, *, prompt: str = "", language: str | None = None) -> list[Word]:
        request = Request(audio, prompt, language)
        if self._batcher is None:
            words = self._backend.transcribe(audio, prompt=prompt, language=language)
        else:
            words = self._batcher.transcribe(request, self._key() if self._key else 0.0)
        add_features(self._features, self._backend.cost_features(request, words))
        return words

    def incremental_decoder(self, **options: Any) -> Any:
        """The backend's ``incremental_decoder`` for this session; on a batching backend,
        wrapped so that its encoder runs and steps join the batcher's batches."""
        decoder = self._backend.incremental_decoder(**options)  # type: ignore[attr-defined]
        if self._batcher is None:
            return decoder
        return BatchingDecoder(decoder, self._batcher, self._key)

    def take_features(self) -> dict[str, float]:
        """What the calls since the last take did, summed (a session runs one pass at a time)."""
        features, self._features = self._features, {}
        return features

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)
