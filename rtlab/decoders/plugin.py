"""Registers the built-in decoders as an ordinary plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import FFmpegDecoder, PCMDecoder


@hookimpl
def register_decoders(register):
    register(FFmpegDecoder)
    register(PCMDecoder)
