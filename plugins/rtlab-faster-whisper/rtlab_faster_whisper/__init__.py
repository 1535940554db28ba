"""rtlab backend plugin for faster-whisper (CTranslate2 Whisper)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import rtlab
from rtlab.backends import Backend, Word, shared_models
from rtlab.errors import BackendUnavailable, InvalidOption, ModelNotFound

from .models import not_found_message, resolve_model

__version__ = "0.1.0"


class FasterWhisperBackend(Backend):
    """Whisper through faster-whisper, with word timestamps and probabilities."""

    name = "faster-whisper"
    description = "Whisper on CTranslate2 (faster-whisper); int8 on CPU, float16 on CUDA"

    def __init__(
        self,
        *,
        model: str = "tiny.en",
        device: str = "auto",
        compute_type: str | None = None,
        beam_size: int = 1,
        cpu_threads: int | None = None,
        temperature: float | list[float] = 0.0,
        max_tokens_per_second: float = 8.0,
    ) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise InvalidOption(f"faster-whisper: device must be auto, cpu or cuda, not {device!r}")
        if int(beam_size) < 1:
            raise InvalidOption(f"faster-whisper: beam_size must be >= 1, not {beam_size!r}")
        self.model_name = model
        self.requested_device = device
        self.requested_compute_type = compute_type
        self.beam_size = int(beam_size)
        self.temperature = temperature
        self.max_tokens_per_second = float(max_tokens_per_second)
        self.cpu_threads = cpu_threads if cpu_threads is not None else (os.cpu_count() or 1)
        self.model = None
        self.device = None
        self.compute_type = None
        self.model_path = None

    def default_language(self) -> str | None:
        return "en" if self.model_name.endswith(".en") else None

    def _device(self) -> str:
        if self.requested_device != "auto":
            return self.requested_device
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"

    def load(self) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise BackendUnavailable(
                "faster-whisper is not installed: pip install -e plugins/rtlab-faster-whisper"
            ) from error
        self.device = self._device()
        self.compute_type = self.requested_compute_type or ("float16" if self.device == "cuda" else "int8")
        self.model_path = resolve_model(self.model_name)

        def loader():
            try:
                return WhisperModel(
                    self.model_path,
                    device=self.device,
                    compute_type=self.compute_type,
                    cpu_threads=self.cpu_threads,
                )
            except Exception as error:  # offline hub lookups, bad folders, missing CUDA
                raise ModelNotFound(not_found_message(self.model_name, error)) from error

        key = (self.name, self.model_path, self.device, self.compute_type)
        self.model = shared_models.get(key, loader)

    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        # Bounded work per pass: one decode (no temperature fallback, which re-decodes up to
        # five times) and a token budget for the audio's length. A decoder stuck repeating
        # itself once took 11 s on a 10 s buffer; this caps it near the normal pass time.
        seconds = min(len(audio) / 16_000, 30.0)
        segments, _ = self.model.transcribe(
            audio,
            language=language,
            initial_prompt=prompt or None,
            beam_size=self.beam_size,
            temperature=self.temperature,
            max_new_tokens=int(16 + self.max_tokens_per_second * seconds),
            word_timestamps=True,
            condition_on_previous_text=True,
            vad_filter=False,
        )
        return merge_word_pieces(w for segment in segments for w in (segment.words or []))

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_path": self.model_path,
            "device": self.device or self.requested_device,
            "compute_type": self.compute_type or self.requested_compute_type,
            "beam_size": self.beam_size,
            "temperature": self.temperature,
        }


def merge_word_pieces(pieces) -> list[Word]:
    """Whisper words as rtlab words: a piece that continues the previous word without a
    space and starts with punctuation ("-fark", "'s") is glued to it, so joining words with
    single spaces gives back Whisper's text ("round-fark", "it's")."""
    words: list[Word] = []
    for piece in pieces:
        text = piece.word
        if not text:
            continue
        glued = words and not text[0].isspace() and not text[0].isalnum()
        if not glued and not any(character.isalnum() for character in text):
            continue  # " ." on its own: what a decoder stuck in a loop emits
        if glued:
            last = words[-1]
            last["text"] += text.strip()
            last["end"] = piece.end
            last["probability"] = min(last["probability"], piece.probability)
        else:
            words.append(
                {"text": text.strip(), "start": piece.start, "end": piece.end, "probability": piece.probability}
            )
    return words


@rtlab.hookimpl
def register_backends(register):
    register(FasterWhisperBackend)
