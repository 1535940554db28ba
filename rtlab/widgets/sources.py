"""The audio a panel streams: a file, a corpus utterance, or NumPy samples."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..backends import SAMPLE_RATE

__all__ = ["AudioSource", "audio_source", "finish_in_thread"]

T = TypeVar("T")


@dataclass
class AudioSource:
    """One audio and what is known about it.

    ``path`` is set for a file (streamed as its encoded bytes, or decoded once for a
    replay); ``samples`` for NumPy audio (16 kHz mono float32). ``reference`` is the
    reference transcript when there is one, ``language`` its language when known.
    """

    label: str
    path: Path | None = None
    samples: np.ndarray | None = None
    reference: str | None = None
    language: str | None = None

    def decode(self) -> np.ndarray:
        """The audio as 16 kHz mono float32 samples (one FFmpeg call for a file). Blocking.

        Raises ``FileNotFoundError`` for a missing file and
        :class:`~rtlab.errors.DecoderError` for one FFmpeg cannot read.
        """
        if self.samples is None:
            from ..decoders.files import decode_audio

            self.samples = decode_audio(self.path)
        return self.samples


def audio_source(audio: Any, reference: str | None = None) -> AudioSource:
    """An :class:`AudioSource` from what a panel was given.

    * a path (``str`` or ``os.PathLike``): its reference is ``reference``, else the text of
      a same-name ``.txt`` beside it (the corpus folder layout), when there is one;
    * a corpus utterance (:class:`rtlab.eval.corpus.Utterance`: its audio, text and language);
    * a 1-D NumPy array of 16 kHz mono samples: float (-1..1) or int16.

    A reference that is empty or only whitespace is no reference (WER is left out), as an
    empty ``.txt`` beside the file is. The file is not opened here: a missing one is
    reported when the panel runs.
    """
    if reference is not None and not isinstance(reference, str):
        raise TypeError(f"reference must be the text said in the audio (a str) or None, not {type(reference).__name__}")
    reference = _blank_as_empty(reference)  # given and blank: not looked for beside the file either
    if isinstance(audio, np.ndarray):
        return AudioSource(f"array ({len(audio) / SAMPLE_RATE:.1f} s)", samples=_as_float32(audio), reference=reference)
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        if reference is None:
            beside = path.with_suffix(".txt")
            if beside.is_file():
                reference = " ".join(beside.read_text(encoding="utf-8").split())
        return AudioSource(path.name, path=path, reference=reference)
    if hasattr(audio, "audio") and hasattr(audio, "text"):  # a corpus Utterance
        return AudioSource(
            str(getattr(audio, "id", Path(audio.audio).name)), path=Path(audio.audio),
            reference=_blank_as_empty(audio.text) if reference is None else reference,
            language=getattr(audio, "language", None),
        )  # fmt: skip
    raise TypeError(
        f"audio must be a file path, a corpus Utterance or a 1-D NumPy array of 16 kHz samples, "
        f"not {type(audio).__name__}"
    )


def _blank_as_empty(text: str | None) -> str | None:
    """``text``, or "" (no reference) when it has nothing but whitespace."""
    return "" if isinstance(text, str) and not text.strip() else text


def _as_float32(samples: np.ndarray) -> np.ndarray:
    if samples.ndim != 1:
        raise ValueError(f"audio must be mono (1-D) 16 kHz samples, got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"audio samples must be float (-1..1) or int16, not {samples.dtype}")
    return samples.astype(np.float32, copy=False)


async def finish_in_thread(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a worker thread. Cancelled, it still waits for the call to end
    before re-raising: a call that runs FFmpeg leaves no process behind a stopped panel."""
    future = asyncio.get_running_loop().run_in_executor(None, func, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise
