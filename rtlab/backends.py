"""The backend contract, and the process-wide cache that shares loaded models.

A backend turns 16 kHz mono float32 audio into words with times. Backends are plugins
(see ``register_backends``); a plugin author subclasses :class:`Backend`, declares its
options as keyword arguments of ``__init__`` and implements ``load`` and ``transcribe``.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any, Callable, ClassVar, TypedDict

import numpy as np

from .errors import InvalidOption

SAMPLE_RATE = 16_000


class Word(TypedDict, total=False):
    """A recognised word; times are seconds from the start of the audio passed in."""

    text: str
    start: float
    end: float
    probability: float


class Backend:
    """Base class for transcription backends.

    Subclasses set ``name`` (the registry key) and may set ``description``. ``load`` may be
    slow (it runs once, off the event loop); ``transcribe`` runs on the backend's
    scheduler thread and must not touch asyncio.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: How many ``transcribe`` calls may run at once on one instance (see Scheduler).
    #: May be set per instance in ``__init__`` or ``load``: it is read after ``load``.
    max_concurrency: int = 1
    #: CPU cores one ``transcribe`` call keeps busy; the scheduler holds that many of the
    #: process's CPU slots while it runs (0: the work runs elsewhere, e.g. on a GPU).
    cores_per_call: int = 1

    def load(self) -> None:
        """Load weights; called once before the first ``transcribe``. Default: nothing."""

    @property
    def loaded(self) -> bool:
        """Whether ``load`` has completed (a loaded model makes sessions start fast)."""
        return getattr(self, "_rtlab_loaded", False)

    def default_language(self) -> str | None:
        """Language used when the caller gives none; None means auto-detect."""
        return None

    def transcribe(
        self, audio: np.ndarray, *, prompt: str = "", language: str | None = None
    ) -> list[Word]:
        """Transcribe ``audio`` (float32, 16 kHz, mono) into words in time order."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What this instance is, for logs, ``/api/backends`` and benchmark records."""
        return {"backend": self.name}


def accepted_options(cls: type) -> dict[str, Any]:
    """Keyword options a backend, policy or decoder class accepts, with defaults."""
    params = inspect.signature(cls.__init__).parameters
    return {
        name: (None if p.default is inspect.Parameter.empty else p.default)
        for name, p in params.items()
        if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def check_options(cls: type, kind: str, options: dict[str, Any], plugin: str = "") -> None:
    """Refuse options ``cls`` does not accept, naming the option, the plugin and the choices."""
    accepted = accepted_options(cls)
    takes_any = any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        for p in inspect.signature(cls.__init__).parameters.values()
    )
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        owner = f" (plugin {plugin!r})" if plugin else ""
        raise InvalidOption(
            f"{kind} {cls.name!r}{owner} does not accept option {unknown[0]!r}; "
            f"accepted options: {', '.join(sorted(accepted)) or 'none'}"
        )


class SharedModels:
    """Process-wide cache of loaded models: one load per key, safe across threads.

    Backends call ``shared_models.get(key, loader)`` with a key such as
    ``("faster-whisper", model, device, compute_type)``; concurrent callers with the same
    key wait for the one load instead of loading twice.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple, Any] = {}
        self._loading: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple, loader: Callable[[], Any]) -> Any:
        """The model for ``key``, loading it with ``loader()`` the first time."""
        with self._lock:
            if key in self._models:
                return self._models[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = loader()
            with self._lock:
                self._models[key] = model
                self._loading.pop(key, None)
            return model

    def keys(self) -> list[tuple]:
        """Keys of the models loaded so far."""
        with self._lock:
            return list(self._models)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._models

    def clear(self) -> None:
        """Forget every model (tests use this; live sessions keep their references)."""
        with self._lock:
            self._models.clear()


shared_models = SharedModels()

_instances: dict[tuple, Backend] = {}
_instances_lock = threading.Lock()


def get_backend(name: str, **options: Any) -> Backend:
    """The shared backend instance for ``name`` and ``options`` (created, not loaded).

    Unknown names and options raise :class:`~rtlab.errors.UnknownBackend` and
    :class:`~rtlab.errors.InvalidOption`. Call ``ensure_loaded`` (off the event loop)
    before transcribing.
    """
    from .registry import get_registry

    registry = get_registry()
    cls = registry.get("backend", name)
    options = {k: v for k, v in options.items() if v is not None}
    check_options(cls, "backend", options, registry.entries["backend"][name].plugin)
    key = (name, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _instances_lock:
        backend = _instances.get(key)
        if backend is None:
            backend = _instances[key] = cls(**options)
            backend._rtlab_load_lock = threading.Lock()
        return backend


def ensure_loaded(backend: Backend) -> Backend:
    """Run ``backend.load()`` once per instance, thread-safely; blocking."""
    lock = getattr(backend, "_rtlab_load_lock", None)
    if lock is None:
        lock = backend._rtlab_load_lock = threading.Lock()
    with lock:
        if not backend.loaded:
            backend.load()
            backend._rtlab_loaded = True
    return backend
