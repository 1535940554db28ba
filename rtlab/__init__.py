"""rtlab: a research platform for real-time speech transcription.

>>> import rtlab
>>> processor = rtlab.AudioProcessor()          # faster-whisper tiny.en, LocalAgreement-2

Heavy modules load on first use, so ``import rtlab`` and ``rtlab --help`` stay instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.4.11"

from .hookspecs import hookimpl  # noqa: E402

_LAZY = {
    "AudioProcessor": "rtlab.core.processor",
    "StreamConfig": "rtlab.config",
    "State": "rtlab.core.state",
    "FFmpegDecoder": "rtlab.decoders",
    "PCMDecoder": "rtlab.decoders",
    "Backend": "rtlab.backends",
    "Policy": "rtlab.policies",
    "Decoder": "rtlab.decoders",
    "stream_file": "rtlab.core.feeding",
    "stream_reader": "rtlab.core.feeding",
    "errors": "rtlab.errors",
    "widgets": "rtlab.widgets",
}

__all__ = ["hookimpl", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rtlab' has no attribute {name!r}")
    imported = importlib.import_module(module)
    return imported if module.endswith(name) else getattr(imported, name)
