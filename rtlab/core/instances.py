"""The backend instance a stream uses: one per model key, shared by every session."""

from __future__ import annotations

import threading
from typing import Any

from ..backends import Backend
from ..config import StreamConfig
from ..registry import get_registry

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
