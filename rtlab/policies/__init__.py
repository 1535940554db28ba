"""Streaming policies decide what to commit, and when.

A policy is per-session state around a shared backend. The processor feeds it PCM with
``insert_audio`` and, every ``min_chunk`` seconds of new audio, calls ``process_iter``
(on the backend's scheduler thread); at the end of the stream it calls ``finish``.
Policies are plugins (``register_policies``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..backends import Backend, Word


@dataclass
class Step:
    """What one policy iteration produced: newly committed words and the partial tail.

    Word times are absolute: seconds from the start of the stream.
    """

    committed: list[Word] = field(default_factory=list)
    partial: list[Word] = field(default_factory=list)


class Policy:
    """The policy contract (see :class:`~rtlab.policies.local_agreement.LocalAgreement`).

    A subclass declares its options as keyword arguments of its own ``__init__``, after
    ``backend`` and ``language``: the processor passes those two itself, so they are not
    options (see :func:`rtlab.backends.accepted_options`).
    """

    #: The arguments the processor passes to every policy's ``__init__``; not options.
    processor_arguments: ClassVar[tuple[str, ...]] = ("backend", "language")

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Capabilities the policy needs from its backend (names in
    #: :attr:`rtlab.backends.Backend.capabilities`); a policy checks them when it is built.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Seconds of new audio to gather before the next ``process_iter``.
    min_chunk: float = 1.0
    #: Set by the processor after each pass: True when more than ``min_chunk`` of audio
    #: waits, or the pass had to take in more than 1.5 × ``min_chunk`` (compute or queueing
    #: is slower than real time). A policy should then degrade (shorter buffers, cheaper
    #: passes) so that latency stays bounded.
    behind: bool = False

    def __init__(self, backend: Backend, *, language: str | None = None) -> None:
        self.backend = backend
        self.language = language

    def insert_audio(self, pcm: np.ndarray) -> None:
        """Append float32 16 kHz PCM to the session's audio."""
        raise NotImplementedError

    def process_iter(self) -> Step:
        """Transcribe what is buffered and return what to commit now."""
        raise NotImplementedError

    def finish(self) -> Step:
        """End of stream: commit everything that is left."""
        raise NotImplementedError

    @property
    def buffered_seconds(self) -> float:
        """Seconds of audio held in the policy's buffer now (bounded by the policy)."""
        return 0.0


def missing_capabilities(policy: type[Policy] | Policy, backend: type[Backend] | Backend) -> list[str]:
    """The capabilities ``policy`` requires that ``backend`` (a class or an instance, or a
    session's view of one) does not declare, in the policy's order."""
    provided = set(getattr(backend, "capabilities", ()) or ())
    return [name for name in policy.requires if name not in provided]


#: What a capability rtlab knows lets a policy do, for refusals ("needs a backend with ...").
CAPABILITIES = {"incremental-decoding": "incremental decoding and cross-attention"}
#: Where to get a backend with a capability rtlab knows, when none is installed.
PROVIDERS = {"incremental-decoding": "pip install -e plugins/rtlab-openai-whisper"}
