"""Every error rtlab raises on purpose; each message says what to do next."""

from __future__ import annotations


class RtlabError(Exception):
    """Base class for errors that rtlab explains to the user (no traceback needed)."""

    #: Short machine-readable code, used in events and protocol messages.
    code = "error"


class PluginError(RtlabError):
    """A plugin registered something invalid or clashing."""

    code = "plugin_error"


class PluginWarning(UserWarning):
    """A plugin registration was refused (invalid, or a name already taken)."""


class UnknownBackend(RtlabError):
    """No backend plugin is registered under the requested name."""

    code = "unknown_backend"


class UnknownPolicy(RtlabError):
    """No streaming policy is registered under the requested name."""

    code = "unknown_policy"


class UnknownDecoder(RtlabError):
    """No decoder is registered under the requested name."""

    code = "unknown_decoder"


class BackendUnavailable(RtlabError):
    """A backend cannot run here: a missing package, model or device."""

    code = "backend_unavailable"


class ModelNotFound(BackendUnavailable):
    """The requested model could not be resolved locally, from a package or online."""

    code = "model_not_found"


class InvalidOption(RtlabError):
    """An option was given that the named plugin does not accept, or a bad value."""

    code = "invalid_option"


class MissingCapability(InvalidOption):
    """A policy refused a backend without a capability it ``requires``, in one line.

    The message ends with the fix as every entry point takes the option,
    ``backend=NAME``: a configuration string (``"backend=openai-whisper,policy=alignatt"``),
    a keyword of :class:`~rtlab.config.StreamConfig`, a panel's editor. ``refusal`` is the
    message without its fix and ``backends`` the installed backends that have the
    capability, so that a front end with its own form of the option words the fix itself
    (the server names its ``start_transcription`` field and only the backends it allows,
    the CLI its ``--backend`` flag)."""

    def __init__(self, message: str, *, refusal: str = "", backends: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.backends = backends


class FFmpegNotFound(RtlabError):
    """No FFmpeg binary could be found."""

    code = "ffmpeg_not_found"


class DecoderError(RtlabError):
    """The decoder could not decode the input (FFmpeg's stderr is in the message)."""

    code = "decode_failed"


class ProcessorStopped(RtlabError):
    """An AudioProcessor was used after it stopped; processors are single-use."""

    code = "processor_stopped"


class ProcessorNotRunning(RtlabError):
    """Audio was sent to an AudioProcessor that has not been started."""

    code = "processor_not_running"
