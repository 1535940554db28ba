"""The hooks a plugin can implement. Each one receives a ``register`` callback.

A class that does not subclass its kind's base, has no name or leaves one of the base's
methods undefined stops the registry with a
:class:`~rtlab.errors.PluginError` naming the plugin and the fix.

All registration hooks run synchronously, on the thread that first asks the registry for
plugins (usually the main thread, before any event loop work); they run again only when
the registry is rebuilt (``get_registry(refresh=True)``). Documented in docs/plugins.md.
"""

from __future__ import annotations

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("rtlab")
hookimpl = HookimplMarker("rtlab")


@hookspec
def register_backends(register):
    """Register transcription backends.

    :param register: call ``register(backend_class)`` once per backend. The class must
        subclass :class:`rtlab.backends.Backend`, have a unique non-empty ``name`` and
        implement ``transcribe(audio, *, prompt, language)``, returning words; its options
        are the keyword arguments of its ``__init__``.
    :return: nothing; the return value is ignored.

    Runs on the thread that builds the registry, never on an event loop; it must be quick
    and must not import heavy libraries (do that in ``Backend.load``).
    """


@hookspec
def register_policies(register):
    """Register streaming policies (what to commit, and when).

    :param register: call ``register(policy_class)`` once per policy. The class must
        subclass :class:`rtlab.policies.Policy` and have a unique non-empty ``name``.
    :return: nothing; the return value is ignored.

    Runs on the thread that builds the registry, never on an event loop.
    """


@hookspec
def register_decoders(register):
    """Register audio decoders (bytes in, 16 kHz mono float32 PCM out).

    :param register: call ``register(decoder_class)`` once per decoder. The class must
        subclass :class:`rtlab.decoders.Decoder` and have a unique non-empty ``name``.
    :return: nothing; the return value is ignored.

    Runs on the thread that builds the registry, never on an event loop.
    """
