"""Decoders turn the bytes a client sends into 16 kHz mono float32 PCM.

Each session owns one decoder. Decoders are plugins (``register_decoders``); the
built-in ones are :class:`FFmpegDecoder` (``"ffmpeg"``, any format FFmpeg reads from a
pipe) and :class:`PCMDecoder` (``"pcm_s16le"``, raw PCM, no process).
"""

from __future__ import annotations

from .base import Decoder
from .ffmpeg import FFmpegDecoder, find_ffmpeg
from .pcm import PCMDecoder

__all__ = ["Decoder", "FFmpegDecoder", "PCMDecoder", "find_ffmpeg"]
