"""rtlab backend plugin for openai-whisper (Whisper on PyTorch).

Runs the same weights as the faster-whisper backend (the embedded CTranslate2 models,
converted once; see :mod:`.models`), with the same windowing and the same rules for
silence, prompts, loops and unaligned text, so that a table comparing the two engines
compares engines. Word times come from openai-whisper's own cross-attention alignment.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import rtlab
from rtlab.backends import Backend, Request, Word, batch_options, shared_models
from rtlab.core.scheduler import available_cores
from rtlab.errors import BackendUnavailable, InvalidOption, ModelNotFound
from rtlab.options import is_whole_number
from rtlab.policies.incremental import INCREMENTAL_DECODING
from rtlab.words import MULTILINGUAL_BEAM_SIZE as MULTILINGUAL_BEAM_SIZE  # re-exported under the plugin
from rtlab.words import (
    MAX_TOKENS_PER_SECOND, continue_from, decoding_options, default_beam_size, is_silent, merge_word_pieces,
    needs_fallback, retry_without_prompt, settle_window, token_budget, window_options,
)  # fmt: skip

from . import devices as _devices

if TYPE_CHECKING:
    from .batch import FirstWindow

__version__ = "0.4.4"

COMPUTE_TYPES = ("float32", "float16")
#: What fills an AlignAtt decoder's encoder window after the buffer's audio: ``silence``
#: (the spectrogram of digital silence, SimulStreaming's), ``zeros`` (as the last window of
#: openai-whisper's transcribe) or ``last-zeros`` (silence, but zeros on the stream's last
#: decode, once the decoder was told the audio ended; the default, by measurement).
WINDOW_PADDINGS = ("silence", "zeros", "last-zeros")
WINDOW_SECONDS = 30.0
# "buffer" windows: at most this many per pass, as rtlab-faster-whisper (see
# rtlab.words.continue_from).
MAX_WINDOWS = 2
MAX_INITIAL_TIMESTAMP = 1.0  # the first segment starts within 1 s of the window
MIN_SAMPLES = 2 * 160  # two 10 ms feature frames (the alignment needs them)
MAX_REPLICAS_OF_FASTER_WHISPER = 4  # see default_threads
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


# openai-whisper's alignment switches its attention kernel off process-wide while it runs
# (``whisper.model.disable_sdpa`` saves and restores a class attribute): two alignments at
# once, on two models, could leave it switched off for good.
_ALIGNMENT_LOCK = threading.Lock()


@dataclass
class LoadedModel:
    """One loaded openai-whisper model and the lock its users take: openai-whisper installs
    forward hooks on the model for every decode (its key/value cache, the alignment's
    attention weights), so two calls on one model at once would read each other's."""

    model: Any
    lock: threading.Lock
    source: str


class OpenAIWhisperBackend(Backend):
    """Whisper through openai-whisper (PyTorch), with word timestamps and probabilities."""

    name = "openai-whisper"
    description = "Whisper on PyTorch (openai-whisper); float32 on CPU, float16 on CUDA"
    #: AlignAtt's capability: see :meth:`incremental_decoder`.
    capabilities = (INCREMENTAL_DECODING,)

    def __init__(
        self,
        *,
        model: str = "tiny.en",
        device: str = "auto",
        compute_type: str | None = None,
        beam_size: int | None = None,
        temperature: float | list[float] = 0.0,
        cpu_threads: int | None = None,
        max_tokens_per_second: float = MAX_TOKENS_PER_SECOND,
        window: str = "buffer",
        pad_seconds: float | None = None,
        max_batch: int = 1,
        batch_wait_ms: float = 10.0,
        window_padding: str = "last-zeros",
    ) -> None:
        prefix = "openai-whisper:"
        if not isinstance(model, str) or not model.strip():
            raise InvalidOption(f"{prefix} model must be a model name or a path, not {model!r}")
        if device not in _devices.CHOICES:
            raise InvalidOption(f"{prefix} device must be auto, cpu or cuda, not {device!r}")
        if compute_type is not None and compute_type not in COMPUTE_TYPES:
            raise InvalidOption(f"{prefix} compute_type must be float32 or float16 (or unset), not {compute_type!r}")
        if device == "cpu" and compute_type == "float16":
            raise InvalidOption(f"{prefix} compute_type=float16 needs device=cuda (openai-whisper runs float32 on CPU)")
        if beam_size is not None and (not is_whole_number(beam_size) or beam_size < 1):
            raise InvalidOption(f"{prefix} beam_size must be a whole number >= 1 (or unset), not {beam_size!r}")
        if cpu_threads is not None and (not is_whole_number(cpu_threads) or cpu_threads < 1):
            raise InvalidOption(f"{prefix} cpu_threads must be a whole number >= 1, not {cpu_threads!r}")
        if window_padding not in WINDOW_PADDINGS:
            raise InvalidOption(f"{prefix} window_padding must be silence, zeros or last-zeros, not {window_padding!r}")
        self.model_name = model
        self.requested_device = device
        self.requested_compute_type = compute_type
        self.requested_beam_size = beam_size
        self.beam_size = beam_size  # resolved at load when unset (default_beam_size)
        self.temperature = temperature
        self.temperatures, self.max_tokens_per_second = decoding_options(
            "openai-whisper", temperature, max_tokens_per_second
        )
        self.requested_cpu_threads = cpu_threads
        self.window, self.pad_seconds = window_options("openai-whisper", window, pad_seconds)
        self.max_batch, self.batch_wait_ms = batch_options("openai-whisper", max_batch, batch_wait_ms)
        self.window_padding = window_padding
        self.device: str | None = None
        self.compute_type: str | None = None
        self.cpu_threads: int | None = None
        self.loaded_model: LoadedModel | None = None

    # -- capabilities (classmethods: no model is loaded) --------------------------------------

    @classmethod
    def devices(cls) -> list[str]:
        """``["cuda", "cpu"]`` where PyTorch is a CUDA build and an NVIDIA driver is present,
        ``["cpu"]`` otherwise, ``[]`` without PyTorch or openai-whisper; PyTorch is asked
        only when already imported (``load`` checks the device for real)."""
        return _devices.available()

    @classmethod
    def local_models(cls) -> list[dict[str, Any]]:
        """Embedded CTranslate2 models (converted on first use), converted ones in rtlab's
        cache, and openai-whisper's own downloads (see ``rtlab models list``)."""
        from .models import local_models

        return local_models()

    @classmethod
    def convert_model(cls, source: str, dest: str) -> dict[str, Any]:
        """Convert a CTranslate2 Whisper folder (or an embedded model's name) into the
        openai-whisper checkpoint ``dest`` (``rtlab models convert``); returns its summary."""
        from .convert import convert
        from .models import conversion_source

        origin = conversion_source(source)
        target = Path(dest).expanduser()
        if target.exists():
            raise ModelNotFound(f"openai-whisper: {target} already exists; remove it or give another destination")
        return {"path": str(target), **convert(origin, target, label=source)}

    # -- loading -------------------------------------------------------------------------------

    def default_language(self) -> str | None:
        """English for an English-only model (a ``.en`` name, or a checkpoint whose
        vocabulary has no language tokens once loaded); None (detect) otherwise."""
        if self.loaded_model is not None:
            return None if self.loaded_model.model.is_multilingual else "en"
        return "en" if self.model_name.endswith(".en") else None

    def languages(self) -> list[str] | None:
        """The loaded model's languages: English alone, or as many of Whisper's as its
        vocabulary has language tokens for."""
        if self.loaded_model is None:
            return None
        model = self.loaded_model.model
        if not model.is_multilingual:
            return ["en"]
        from whisper.tokenizer import LANGUAGES

        return list(LANGUAGES)[: model.num_languages]

    def load(self) -> None:
        try:
            import torch  # noqa: F401
            import whisper  # noqa: F401
        except ImportError as error:
            raise BackendUnavailable(
                f"openai-whisper is not installed ({error.name} is missing): "
                f"pip install -c constraints.txt -e plugins/rtlab-openai-whisper"
            ) from error
        from .models import resolve

        self.device = _devices.resolve(self.requested_device)
        self.compute_type = self.requested_compute_type or ("float16" if self.device == "cuda" else "float32")
        if self.device == "cpu" and self.compute_type == "float16":
            raise BackendUnavailable(
                "openai-whisper: compute_type=float16 needs CUDA, and device=auto found none: "
                "leave compute_type unset (float32 on CPU) or run on a GPU"
            )
        self.cpu_threads = self.requested_cpu_threads or default_threads()
        # One call at a time per loaded model (see LoadedModel); on CPU it keeps this many cores busy.
        self.cores_per_call = self.cpu_threads if self.device == "cpu" else 0
        resolved = resolve(self.model_name)
        source = str(resolved.checkpoint or resolved.download)
        key = (self.name, source, self.device)
        self.loaded_model = shared_models.get(key, lambda: self._load_model(resolved))
        if self.requested_beam_size is None:
            self.beam_size = default_beam_size(self.loaded_model.model.is_multilingual)

    def _load_model(self, resolved) -> LoadedModel:
        import torch
        import whisper
        from whisper.model import ModelDimensions, Whisper

        from .models import cache_dir, check_size, not_found_message

        if resolved.download is not None:
            try:
                model = whisper.load_model(resolved.download, device=self.device)
            except Exception as error:  # offline downloads, a broken cache file
                raise ModelNotFound(not_found_message(resolved.download, error)) from error
            return LoadedModel(model, threading.Lock(), resolved.download)
        path = resolved.checkpoint
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            dims = ModelDimensions(**checkpoint["dims"])
            state = checkpoint["model_state_dict"]
        except Exception as error:  # a truncated file, another format
            # PyTorch's first sentence says what failed; the rest is advice on unsafe loading.
            detail = " ".join(str(error).split()).split(". ")[0][:200]
            fix = (
                "convert it again (rtlab models convert) or delete it"
                if Path(path).resolve().is_relative_to(cache_dir().resolve())
                else "give a checkpoint that openai-whisper or 'rtlab models convert' wrote (dims and model_state_dict), "
                "a CTranslate2 Whisper folder, or a model name"
            )
            raise ModelNotFound(
                f"openai-whisper: {path} is not a readable openai-whisper checkpoint ({type(error).__name__}: "
                f"{detail}); {fix}"
            ) from None
        check_size(checkpoint, resolved, Path(path))
        model = Whisper(dims)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ModelNotFound(f"openai-whisper: {path} does not fit its own dimensions: {str(error).splitlines()[0]}") from None
        heads = checkpoint.get("alignment_heads")
        if heads:
            mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
            for layer, head in heads:
                mask[layer, head] = True
            model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
        return LoadedModel(model.to(self.device).eval(), threading.Lock(), str(path))

    # -- incremental decoding (the AlignAtt policy) ---------------------------------------------

    def incremental_decoder(self, *, language: str | None = None):
        """A new :class:`~.incremental.WhisperIncrementalDecoder` for one session, on the
        loaded model: steps with the alignment heads' cross-attention (see
        :mod:`rtlab.policies.incremental`), searching ``beam_size`` beams. The backend
        keeps no reference to it."""
        from .incremental import WhisperIncrementalDecoder

        if self.loaded_model is None:
            raise BackendUnavailable("openai-whisper: load the model (ensure_loaded) before creating a decoder")
        unused = self._options_incremental_decoding_ignores()
        if unused:
            raise InvalidOption(
                f"openai-whisper: {' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used by incremental "
                "decoding (the alignatt policy's), which decodes at temperature 0 with its own token budget; leave "
                f"{'it' if len(unused) == 1 else 'them'} out, or use policy=local-agreement"
            )
        return WhisperIncrementalDecoder(self, language)

    def _options_incremental_decoding_ignores(self) -> list[str]:
        """This backend's decoding options, as set, that :meth:`incremental_decoder` would
        not honour (``name=value``): a stream must not say it used them."""
        unused = []
        if list(self.temperatures) != [0.0]:
            unused.append(f"temperature={self.temperature!r}")
        if self.max_tokens_per_second != MAX_TOKENS_PER_SECOND:  # AlignAtt's own budget
            unused.append(f"max_tokens_per_second={self.max_tokens_per_second!r}")
        return unused

    # -- transcribing --------------------------------------------------------------------------

    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        if len(audio) < MIN_SAMPLES:
            return []  # too short to hear a word (and the alignment needs two feature frames)
        import torch

        loaded = self.loaded_model
        with loaded.lock, torch.inference_mode():
            if self.device == "cpu":
                torch.set_num_threads(self.cpu_threads)
            if self.window == "buffer" and len(audio) <= WINDOW_SECONDS * 16_000:
                return self._transcribe_window(audio, prompt=prompt, language=language)
            return self._transcribe_seek(audio, prompt=prompt, language=language)

    def transcribe_batch(self, requests: list[Request]) -> list[list[Word]]:
        """Passes of several sessions: the first window of every buffer of one window goes
        through one encoder call and one greedy decode per prompt length (see
        :mod:`.batch`); the rest of each pass runs as it would alone. Beam search, a first
        temperature above 0, ``window=seek`` and buffers past 30 s run one pass at a time."""
        from .batch import batchable, transcribe_together

        results: list[list[Word] | None] = [None] * len(requests)
        together = [index for index, request in enumerate(requests) if batchable(self, request)]
        for index, request in enumerate(requests):
            if index not in together:
                results[index] = self.transcribe(request.audio, prompt=request.prompt, language=request.language)
        if together:
            import torch

            with self.loaded_model.lock, torch.inference_mode():
                if self.device == "cpu":
                    torch.set_num_threads(self.cpu_threads)
                words = transcribe_together(self, [requests[index] for index in together])
            for index, each in zip(together, words):
                results[index] = each
        return results  # type: ignore[return-value]

    def log_mel(self, audio: np.ndarray):
        """The log-Mel spectrogram of ``audio`` and its number of frames of audio (the
        rest is the 30 s of padding openai-whisper appends), on the model's device."""
        from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram

        model = self.loaded_model.model
        mel = log_mel_spectrogram(audio.astype(np.float32), model.dims.n_mels, padding=N_SAMPLES, device=self.device)
        return mel, mel.shape[-1] - N_FRAMES

    def encode(self, windows):
        """The encoder on a batch of log-Mel windows (``[batch, n_mels, frames]``: Whisper's
        3000 frames, or fewer with ``pad_seconds``), in the compute type: one encoder run
        for many passes (what a batched call builds on)."""
        import torch
        from whisper.audio import N_FRAMES

        dtype = torch.float16 if self.compute_type == "float16" else torch.float32
        encoder = self.loaded_model.model.encoder
        windows = windows.to(self.device, dtype)
        if windows.shape[-1] == N_FRAMES:
            return encoder(windows)
        return encode_short(encoder, windows)

    def encoder_frames(self, frames: int) -> int:
        """Spectrogram frames of the encoder's input for a window with ``frames`` frames of
        audio: Whisper's 3000 (30 s), or with ``pad_seconds`` the audio and that much
        padding, rounded up to a whole second (at most 30 s), as rtlab-faster-whisper's
        option of the same name. The encoder's cost grows with its input; Whisper was
        trained on 30 s windows only, so shorter ones cost accuracy."""
        from whisper.audio import FRAMES_PER_SECOND, N_FRAMES

        if self.pad_seconds is None:
            return N_FRAMES
        seconds = math.ceil((frames + self.pad_seconds * FRAMES_PER_SECOND) / FRAMES_PER_SECOND)
        return int(min(N_FRAMES, max(1, seconds) * FRAMES_PER_SECOND))

    def _transcribe_window(
        self, audio: np.ndarray, *, prompt: str, language: str | None, first: FirstWindow | None = None
    ) -> list[Word]:
        """A streaming buffer of at most 30 s as one window: one encoder run, one decode,
        word times from the cross-attention alignment on that encoder output. When the
        model stopped more than a second before the buffer's end, one more window is
        decoded from its last word, prompted with the text so far (the
        rtlab-faster-whisper README explains why, and why not openai-whisper's own loop).
        Each window's words go through the rules rtlab-faster-whisper's go through
        (:func:`rtlab.words.settle_window`), so that the two engines differ by their
        engine alone.

        ``first`` is the first window computed with other passes' (``transcribe_batch``)."""
        from whisper.audio import FRAMES_PER_SECOND, N_FRAMES, pad_or_trim
        from whisper.timing import add_word_timestamps

        model = self.loaded_model.model
        mel, frames = self.log_mel(audio) if first is None else (first.mel, first.frames)
        frames = min(frames, N_FRAMES)
        seconds = frames / FRAMES_PER_SECOND
        tokenizer = None
        previous: list[int] = []
        seek = 0
        pieces: list[tuple[str, float, float, float]] = []
        for _ in range(MAX_WINDOWS):
            offset = seek / FRAMES_PER_SECOND
            if first is not None and seek == 0:
                features, language, tokenizer, previous, tokens = (
                    first.features, first.language, first.tokenizer, first.previous, first.tokens
                )
            else:
                features = self.encode(pad_or_trim(mel[:, seek:frames], self.encoder_frames(frames - seek))[None])
                if tokenizer is None:
                    language = self.window_language(features, [language])[0]
                    tokenizer, previous = self.window_context(prompt, language)
                tokens = self._decode(features, previous, seconds - offset, continued=seek > 0, language=language)
            if not tokens:
                break
            segment = {"seek": 0, "start": 0.0, "end": seconds - offset, "tokens": tokens}
            with _ALIGNMENT_LOCK:
                add_word_timestamps(
                    segments=[segment], model=_OnFeatures(model), tokenizer=tokenizer, mel=features[0],
                    num_frames=frames - seek, prepend_punctuations=PREPEND_PUNCTUATIONS,
                    append_punctuations=APPEND_PUNCTUATIONS, last_speech_timestamp=0.0,
                )  # fmt: skip
            words = [
                (w["word"], offset + float(w["start"]), offset + float(min(w["end"], seconds - offset)), float(w["probability"]))
                for w in segment["words"]
            ]
            window = settle_window(pieces, words, audio, continued=seek > 0)
            pieces = window.pieces
            end = continue_from(window, audio, seconds)
            if end is None:
                break
            next_seek = int(round(end * FRAMES_PER_SECOND))
            if next_seek <= seek:
                break
            seek = next_seek
            previous = previous + window.prompt_tokens(tokens, tokenizer.encode)
        return merge_word_pieces(pieces)

    def window_language(self, features, languages: list[str | None]) -> list[str]:
        """The language of each window of ``features`` (``[windows, frames, state]``): the
        one given, English on an English-only model, else detected on that window."""
        from whisper.decoding import detect_language
        from whisper.tokenizer import get_tokenizer

        model = self.loaded_model.model
        if not model.is_multilingual:
            return ["en"] * len(languages)  # an English-only model has no language to detect
        unknown = [index for index, language in enumerate(languages) if language is None]
        found = list(languages)
        if unknown:
            probe = get_tokenizer(True, num_languages=model.num_languages)
            detect = detect_language if features.shape[1] == model.dims.n_audio_ctx else detect_language_short
            _, probabilities = detect(model, features[unknown], probe)
            for index, each in zip(unknown, probabilities):
                found[index] = max(each, key=each.get)
        return found  # type: ignore[return-value]

    def window_context(self, prompt: str, language: str):
        """The tokenizer of a pass in ``language`` and its prompt's tokens."""
        from whisper.tokenizer import get_tokenizer

        model = self.loaded_model.model
        tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages, language=language, task="transcribe")
        return tokenizer, (tokenizer.encode(" " + prompt.strip()) if prompt.strip() else [])

    def decoding_options(self, previous: list[int], seconds: float, language: str, temperature: float):
        """openai-whisper's ``DecodingOptions`` of one window: ``previous`` as its prompt
        (cut as both engines cut it) and a token budget for ``seconds`` of audio."""
        from whisper.decoding import DecodingOptions

        model = self.loaded_model.model
        prompt = previous[-(model.dims.n_text_ctx // 2 - 1) :]
        initial = len(prompt) + (1 if prompt else 0) + (3 if model.is_multilingual else 1)
        sample_len = max(1, min(token_budget(self.max_tokens_per_second, seconds), model.dims.n_text_ctx - initial))
        return DecodingOptions(
            task="transcribe", language=language, temperature=temperature, sample_len=sample_len,
            beam_size=self.beam_size if self.beam_size > 1 and temperature == 0 else None,
            prompt=prompt or None, fp16=self.compute_type == "float16", without_timestamps=False,
            max_initial_timestamp=MAX_INITIAL_TIMESTAMP,
        )  # fmt: skip

    def _decode(self, features, previous: list[int], seconds: float, *, continued: bool, language: str | None) -> list[int]:
        """Text tokens for one window, with Whisper's temperature fallback and no-speech
        check; [] when the window holds no speech. A continued window is speculative (it
        may hold only the silence after a sentence), so the no-speech probability alone
        rules it out there. As in ``whisper.transcribe``, a window the model finds silent
        (no-speech probability high, text unlikely) is not decoded again hotter. A window
        that fails at every temperature with a prompt (a loop, or text too unlikely) is
        decoded again without it (:func:`rtlab.words.retry_without_prompt`)."""
        model = self.loaded_model.model
        for temperature in self.temperatures:
            result = features_task(model, self.decoding_options(previous, seconds, language, temperature)).run(features)[0]
            if not needs_fallback(result.compression_ratio, result.avg_logprob, result.no_speech_prob):
                break
        else:
            if retry_without_prompt(previous, result.compression_ratio, result.avg_logprob):
                return self._decode(features, [], seconds, continued=continued, language=language)
        if is_silent(result.no_speech_prob, result.avg_logprob, continued=continued):
            return []
        eot = _eot(model)  # text tokens come before it, timestamps after it
        return [token for token in result.tokens if token < eot]

    def _transcribe_seek(self, audio: np.ndarray, *, prompt: str, language: str | None) -> list[Word]:
        """openai-whisper's own long-form loop (``whisper.transcribe``): 30 s windows, each
        moved on to where the model's text ended. Needed past 30 s."""
        import whisper

        if not self.loaded_model.model.is_multilingual:
            language = "en"
        result = whisper.transcribe(
            self.loaded_model.model, audio.astype(np.float32), verbose=None, language=language,
            temperature=tuple(self.temperatures), initial_prompt=prompt.strip() or None,
            word_timestamps=True, condition_on_previous_text=True, fp16=self.compute_type == "float16",
            beam_size=self.beam_size if self.beam_size > 1 else None,
            sample_len=token_budget(self.max_tokens_per_second, len(audio) / 16_000),
            prepend_punctuations=PREPEND_PUNCTUATIONS, append_punctuations=APPEND_PUNCTUATIONS,
        )  # fmt: skip
        return merge_word_pieces(
            (w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
            for segment in result["segments"] for w in segment.get("words", [])
        )  # fmt: skip

    def cost_features(self, request: Request, words: list[Word]) -> dict[str, float]:
        """The default features (:meth:`Backend.cost_features`) and, with ``pad_seconds``,
        the seconds of the first window's encoder input, which then follow the buffer's
        length (with Whisper's 30 s windows it is the same on every call, and calibrations
        fitted without it stay valid)."""
        features = super().cost_features(request, words)
        if self.pad_seconds is not None:
            from whisper.audio import FRAMES_PER_SECOND, HOP_LENGTH, N_FRAMES

            frames = min(len(request.audio) // HOP_LENGTH, N_FRAMES)
            features["encoder_seconds"] = self.encoder_frames(frames) / FRAMES_PER_SECOND
        return features

    def resolved_options(self) -> dict[str, Any]:
        """``beam_size`` as the loaded model chose it when it was left unset."""
        return {"beam_size": self.beam_size} if self.beam_size is not None else {}

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_path": self.loaded_model.source if self.loaded_model else None,
            "device": self.device or self.requested_device,
            "compute_type": self.compute_type or self.requested_compute_type,
            "beam_size": self.beam_size,
            "cpu_threads": self.cpu_threads or self.requested_cpu_threads,
            "temperature": self.temperature,
            "window": self.window,
            "pad_seconds": self.pad_seconds,
            "max_batch": self.max_batch,
            "batch_wait_ms": self.batch_wait_ms,
            "window_padding": self.window_padding,
        }


def default_threads() -> int:
    """Threads of one pass on CPU: what one rtlab-faster-whisper replica gets by default
    (the cores split between up to four), so that a pass has the same cores in both
    engines. On a small CPU one thread is also the fastest: a decoder step is too small to
    share, and threads that wait for each other lose most when other work takes a core."""
    cores = available_cores()
    return max(1, cores // min(MAX_REPLICAS_OF_FASTER_WHISPER, cores))


def encode_short(encoder, windows):
    """openai-whisper's ``AudioEncoder.forward`` on a window shorter than 30 s (it
    accepts only 3000 frames): the positional embedding of the frames it has."""
    import torch.nn.functional as F

    x = F.gelu(encoder.conv2(F.gelu(encoder.conv1(windows)))).permute(0, 2, 1)
    x = (x + encoder.positional_embedding[: x.shape[1]]).to(x.dtype)
    for block in encoder.blocks:
        x = block(x)
    return encoder.ln_post(x)


def detect_language_short(model, features, tokenizer):
    """``whisper.decoding.detect_language`` on encoder output of a window shorter than
    30 s (which that function would encode again): the language tokens' probabilities
    after the start of transcript; returns (the most probable tokens, the probabilities
    by language code), as it does."""
    import torch

    with torch.inference_mode():
        start = torch.tensor([[tokenizer.sot]] * features.shape[0], device=features.device)
        logits = model.logits(start, features)[:, 0]
        allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        allowed[list(tokenizer.all_language_tokens)] = True
        logits[:, ~allowed] = -float("inf")
        best = logits.argmax(dim=-1)
        probabilities = logits.softmax(dim=-1).cpu()
    codes = list(zip(tokenizer.all_language_tokens, tokenizer.all_language_codes))
    return best, [{code: float(row[token]) for token, code in codes} for row in probabilities]


def features_task(model, options):
    """openai-whisper's ``DecodingTask`` for ``model`` and ``options`` that also takes
    encoder output of fewer frames than Whisper's 1500 (``pad_seconds``), which
    ``DecodingTask`` would take for a spectrogram and encode again."""
    return _features_task_class()(model, options)


@functools.cache
def _features_task_class():
    from whisper.decoding import DecodingTask

    class FeaturesTask(DecodingTask):
        def _get_audio_features(self, mel):
            dims = self.model.dims
            if mel.ndim == 3 and mel.shape[-1] == dims.n_audio_state and mel.shape[1] != dims.n_audio_ctx:
                return mel
            return super()._get_audio_features(mel)

    return FeaturesTask


def _eot(model) -> int:
    from whisper.tokenizer import get_tokenizer

    return get_tokenizer(model.is_multilingual, num_languages=model.num_languages).eot


class _OnFeatures:
    """An openai-whisper model as its alignment (``whisper.timing.find_alignment``) calls
    it, on encoder output computed once: given the features where it expects a
    spectrogram, it runs the decoder only, so a pass runs the encoder once, as
    faster-whisper's alignment does."""

    def __init__(self, model) -> None:
        self.model = model
        self.dims = model.dims
        self.decoder = model.decoder
        self.alignment_heads = model.alignment_heads
        self.device = model.device

    def __call__(self, features, tokens):
        return self.model.decoder(tokens, features)


@rtlab.hookimpl
def register_backends(register):
    register(OpenAIWhisperBackend)
