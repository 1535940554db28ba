"""rtlab backend plugin for faster-whisper (CTranslate2 Whisper)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import rtlab
from rtlab.backends import Backend, Request, Word, batch_options, shared_models
from rtlab.core.scheduler import available_cores
from rtlab.errors import BackendUnavailable, InvalidOption, ModelNotFound
from rtlab.options import is_whole_number
from rtlab.words import MULTILINGUAL_BEAM_SIZE as MULTILINGUAL_BEAM_SIZE  # re-exported under the plugin
from rtlab.words import (
    COMPRESSION_RATIO_THRESHOLD, MAX_TOKENS_PER_SECOND, continue_from, decoding_options, default_beam_size, is_silent,
    merge_word_pieces, needs_fallback, retry_without_prompt, settle_window, token_budget, window_options,
)  # fmt: skip

from . import devices as _devices
from .models import not_found_message, resolve_model

__version__ = "0.6.5"

WINDOW_SECONDS = 30.0
# "buffer" windows: at most this many per pass (see rtlab.words.continue_from).
MAX_WINDOWS = 2
#: CTranslate2's compute types (which of them a device runs is checked when the model loads).
COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
                 "float32", "auto", "default")  # fmt: skip
MAX_INITIAL_TIMESTAMP_INDEX = 50  # the first segment starts within 1 s of the window
MAX_WORKERS = 4  # default on CPU: up to this many model replicas, the cores split between them
MIN_SAMPLES = 2 * 160  # two 10 ms feature frames
SEEK_MAX_NEW_TOKENS = 448 - (448 // 2 - 1) - 5  # decoder context minus the longest seek prompt
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


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
        beam_size: int | None = None,
        cpu_threads: int | None = None,
        workers: int | None = None,
        temperature: float | list[float] = 0.0,
        max_tokens_per_second: float = MAX_TOKENS_PER_SECOND,
        window: str = "buffer",
        pad_seconds: float | None = None,
        max_batch: int = 1,
        batch_wait_ms: float = 10.0,
    ) -> None:
        self.max_batch, self.batch_wait_ms = batch_options("faster-whisper", max_batch, batch_wait_ms)
        if device not in ("auto", "cpu", "cuda"):
            raise InvalidOption(f"faster-whisper: device must be auto, cpu or cuda, not {device!r}")
        if compute_type is not None and compute_type not in COMPUTE_TYPES:
            raise InvalidOption(
                f"faster-whisper: compute_type must be one of {', '.join(COMPUTE_TYPES)} (or unset: int8 on CPU, "
                f"float16 on CUDA), not {compute_type!r}"
            )
        for option, value, unset in (("beam_size", beam_size, True), ("cpu_threads", cpu_threads, True),
                                     ("workers", workers, True)):  # fmt: skip
            if not (unset and value is None) and (not is_whole_number(value) or value < 1):
                raise InvalidOption(f"faster-whisper: {option} must be a whole number >= 1, not {value!r}")
        self.temperatures, self.max_tokens_per_second = decoding_options(
            "faster-whisper", temperature, max_tokens_per_second
        )
        self.window, self.pad_seconds = window_options("faster-whisper", window, pad_seconds)
        self.model_name = model
        self.requested_device = device
        self.requested_compute_type = compute_type
        self.requested_beam_size = beam_size
        self.beam_size = beam_size  # resolved at load when unset (default_beam_size)
        self.temperature = temperature
        self.requested_cpu_threads = cpu_threads
        self.requested_workers = workers
        self.cpu_threads = None
        self.workers = None
        self.model = None
        self.device = None
        self.compute_type = None
        self.model_path = None

    @classmethod
    def local_models(cls) -> list[dict[str, Any]]:
        """The embedded models, joined ones in rtlab's cache and faster-whisper's downloads
        (see ``rtlab models list``)."""
        from .models import local_models

        return local_models()

    def default_language(self) -> str | None:
        return "en" if self.model_name.endswith(".en") else None

    def languages(self) -> list[str] | None:
        """The loaded model's languages (faster-whisper's ``supported_languages``)."""
        return list(self.model.supported_languages) if self.model is not None else None

    @classmethod
    def devices(cls) -> list[str]:
        """``["cuda", "cpu"]`` where CTranslate2 sees a GPU and its CUDA libraries load,
        ``["cpu"]`` otherwise (nothing imported without an NVIDIA driver)."""
        return _devices.available()

    def load(self) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise BackendUnavailable(
                "faster-whisper is not installed: pip install -e plugins/rtlab-faster-whisper"
            ) from error
        self.device = _devices.resolve(self.requested_device)
        self.compute_type = self.requested_compute_type or ("float16" if self.device == "cuda" else "int8")
        _devices.check_compute_type(self.device, self.compute_type)
        self.model_path = resolve_model(self.model_name)
        self.workers, self.cpu_threads = self._threading()
        # Each worker is a model replica that runs one pass at a time on its own threads;
        # the scheduler runs that many passes at once and holds their cores.
        self.max_concurrency = self.workers
        self.cores_per_call = self.cpu_threads if self.device == "cpu" else 0

        def loader():
            try:
                return WhisperModel(
                    self.model_path,
                    device=self.device,
                    compute_type=self.compute_type,
                    cpu_threads=self.cpu_threads,
                    num_workers=self.workers,
                )
            except Exception as error:  # offline hub lookups, bad folders, missing CUDA
                raise ModelNotFound(not_found_message(self.model_name, error)) from error

        key = (self.name, self.model_path, self.device, self.compute_type, self.cpu_threads, self.workers)
        self.model = shared_models.get(key, loader)
        if self.requested_beam_size is None:
            self.beam_size = default_beam_size(self.model.model.is_multilingual)

    def _threading(self) -> tuple[int, int]:
        """(workers, threads per worker). On CPU the default splits the cores between up to
        ``MAX_WORKERS`` one-thread replicas: a short pass gains little from a second thread,
        so sessions served side by side finish sooner than one after another on a
        multi-threaded replica (the plugin README links the measurements). On CUDA one
        worker, and CTranslate2's threads."""
        cores = available_cores()
        if self.device != "cpu":
            return self.requested_workers or 1, self.requested_cpu_threads or cores
        workers = self.requested_workers
        if workers is None:
            threads = self.requested_cpu_threads
            workers = min(MAX_WORKERS, cores) if threads is None else max(1, cores // threads)
        threads = self.requested_cpu_threads or max(1, cores // workers)
        return workers, threads

    def detect_language(self, audio: np.ndarray) -> tuple[str, float] | None:
        """The language spoken in ``audio`` (its first 30 s, one encoder run on Whisper's
        30 s window) and Whisper's probability for it; None for an English-only model or
        audio too short to hear a word. A policy given no language asks this until it is
        sure, then passes the language it found to every pass."""
        if not self.model.model.is_multilingual or len(audio) < MIN_SAMPLES:
            return None
        language, probability, _ = self.model.detect_language(audio=audio[: int(WINDOW_SECONDS * 16_000)])
        return language, float(probability)

    def transcribe_batch(self, requests: list[Request]) -> list[list[Word]]:
        """Passes of several sessions: the first window of every buffer that fits one goes
        through one encoder call and one decoding call (greedy, or ``beam_size`` beams) per
        encoder input length (a batch holds windows of one shape; with ``pad_seconds``
        shapes follow the buffers' lengths); the rest of each pass (a temperature fallback,
        the alignment, a continued window) runs as it would alone, on that pass's own
        encoder output."""
        results: list[list[Word] | None] = [None] * len(requests)
        groups: dict[int, list[tuple[int, np.ndarray, np.ndarray, int]]] = {}
        for index, request in enumerate(requests):
            audio = request.audio
            if self.window != "buffer" or not MIN_SAMPLES <= len(audio) <= WINDOW_SECONDS * 16_000:
                results[index] = self.transcribe(audio, prompt=request.prompt, language=request.language)
                continue
            features = self.model.feature_extractor(audio)
            frames = min(features.shape[-1] - 1, self.model.feature_extractor.nb_max_frames)
            padded = self._padded(features[:, :frames])
            groups.setdefault(padded.shape[-1], []).append((index, features, padded, frames))
        for members in groups.values():
            for (index, *_), words in zip(members, self._first_windows(requests, members)):
                results[index] = words
        return results  # type: ignore[return-value]

    def _first_windows(self, requests: list[Request], members: list[tuple]) -> list[list[Word]]:
        """The passes of ``members`` (``(index, features, encoder input, frames)``, one encoder
        input shape), their first windows encoded and decoded as one batch."""
        model = self.model
        encoded = _host(model.encode(np.stack([padded for _, _, padded, _ in members])))
        outputs = [_view(encoded[i : i + 1]) for i in range(len(members))]
        contexts = [
            self._window_context(output, requests[index].prompt, requests[index].language)
            for (index, *_), output in zip(members, outputs)
        ]
        seconds = [frames / model.frames_per_second for *_, frames in members]
        first = self._decode_batch(encoded, [(*context, s) for context, s in zip(contexts, seconds)])
        return [
            self._transcribe_window(requests[index].audio, prompt=requests[index].prompt,
                                    language=requests[index].language,
                                    first=(features, frames, output, tokenizer, previous, tokens))
            for (index, features, _, frames), output, (tokenizer, previous), tokens in zip(members, outputs, contexts, first)
        ]  # fmt: skip

    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        if len(audio) < MIN_SAMPLES:
            return []  # too short to hear a word (and the alignment needs two feature frames)
        if self.window == "buffer" and len(audio) <= WINDOW_SECONDS * 16_000:
            return self._transcribe_window(audio, prompt=prompt, language=language)
        return self._transcribe_seek(audio, prompt=prompt, language=language)

    def _transcribe_seek(self, audio: np.ndarray, *, prompt: str, language: str | None) -> list[Word]:
        """faster-whisper's long-form loop: 30 s windows, each moved to the last word the
        model finished. Needed past 30 s; on a shorter buffer it often decodes the tail a
        second time (a second 30 s encoder pass) after a timestamp the model stopped at."""
        segments, _ = self.model.transcribe(
            audio,
            language=language,
            initial_prompt=prompt or None,
            beam_size=self.beam_size,
            temperature=self.temperature,
            # faster-whisper prompts each window with up to half the decoder's context of
            # the text before it: the budget must fit in the other half, or it refuses.
            max_new_tokens=min(token_budget(self.max_tokens_per_second, len(audio) / 16_000), SEEK_MAX_NEW_TOKENS),
            word_timestamps=True,
            condition_on_previous_text=True,
            vad_filter=False,
        )
        segments = list(segments)
        words = merge_word_pieces(
            (w.word, w.start, w.end, w.probability) for segment in segments for w in (segment.words or [])
        )
        # One 30 s encoder run per window the loop decoded (a window without text leaves
        # no segment: the count is what the output shows, the same on every run).
        return Words(words, encoder_seconds=WINDOW_SECONDS * max(1, len({s.seek for s in segments})))

    def _transcribe_window(
        self, audio: np.ndarray, *, prompt: str, language: str | None, first: tuple | None = None
    ) -> list[Word]:
        """A streaming buffer of at most 30 s as one window: one encoder run, one decode,
        word times from the cross-attention alignment.

        Whisper sometimes ends its text early (at a sentence end, with more speech after
        it). When the last word ends more than a second before the buffer does, one more
        window is decoded from that word on, prompted with the text so far (see
        :func:`rtlab.words.continue_from`; each window's words go through the rules of
        :func:`rtlab.words.settle_window`).
        faster-whisper's own loop ("seek") moves on to the last word after every window and
        decodes what follows, however short: on a prompted streaming pass that is a second
        30 s encoder run most of the time, and a tail of a few frames is where tiny.en
        starts repeating itself ("the entrance to the entrance to ...").

        ``first`` is a first window computed with other passes' (``transcribe_batch``):
        its features, frames, encoder output, tokenizer, prompt tokens and decoded tokens."""
        model = self.model
        if first is None:
            features = model.feature_extractor(audio)
            frames = min(features.shape[-1] - 1, model.feature_extractor.nb_max_frames)
        else:
            features, frames = first[0], first[1]
        seconds = frames / model.frames_per_second
        tokenizer = None
        previous = []
        seek = 0
        pieces: list[tuple[str, float, float, float]] = []
        encoder_seconds = 0.0  # what the encoder ran on, for cost_features
        for window in range(MAX_WINDOWS):
            offset = seek / model.frames_per_second
            encoder_seconds += self._encoder_input_seconds(frames - seek)
            if window == 0 and first is not None:
                encoder_output, tokenizer, previous, tokens = first[2:]
            else:
                encoder_output = model.encode(self._padded(features[:, seek:frames]))
                if tokenizer is None:
                    tokenizer, previous = self._window_context(encoder_output, prompt, language)
                tokens = self._decode(encoder_output, tokenizer, previous, seconds - offset, continued=seek > 0)
            if not tokens:
                break
            segment = {"seek": 0, "start": 0.0, "end": seconds - offset, "tokens": tokens}
            model.add_word_timestamps(
                [[segment]], tokenizer, encoder_output, frames - seek, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, 0.0
            )
            words = [
                (w["word"], offset + float(w["start"]), offset + float(min(w["end"], seconds - offset)), float(w["probability"]))
                for w in segment["words"]
            ]
            window = settle_window(pieces, words, audio, continued=seek > 0)
            pieces = window.pieces
            end = continue_from(window, audio, seconds)
            if end is None:
                break
            next_seek = int(round(end * model.frames_per_second))
            if next_seek <= seek:
                break
            seek = next_seek
            previous = previous + window.prompt_tokens(tokens, tokenizer.encode)
        return Words(merge_word_pieces(pieces), encoder_seconds=encoder_seconds)

    def _padded(self, features: np.ndarray) -> np.ndarray:
        """The encoder's input: Whisper's 30 s window, or with ``pad_seconds`` the features
        followed by that much padding, rounded up to a whole second (at most 30 s).

        The encoder's cost grows with its input, and a streaming buffer is rarely longer
        than 15 s. Whisper was trained on 30 s windows only: shorter ones cost accuracy."""
        from faster_whisper.transcribe import pad_or_trim

        if self.pad_seconds is None:
            return pad_or_trim(features)
        seconds = self._encoder_input_seconds(features.shape[-1])
        return pad_or_trim(features, int(seconds * self.model.frames_per_second))

    def _encoder_input_seconds(self, frames: int) -> float:
        """The length of the encoder's input for ``frames`` feature frames (see ``_padded``)."""
        if self.pad_seconds is None:
            return float(WINDOW_SECONDS)
        per_second = self.model.frames_per_second
        return float(min(WINDOW_SECONDS, math.ceil((frames + self.pad_seconds * per_second) / per_second)))

    def _window_context(self, encoder_output, prompt: str, language: str | None):
        """The tokenizer of a pass (its language detected on its first window when none is
        given and the model is multilingual) and its prompt's tokens."""
        from faster_whisper.tokenizer import Tokenizer

        model = self.model
        if language is None and model.model.is_multilingual:
            language = model.model.detect_language(encoder_output)[0][0][0][2:-2]
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language or "en")
        return tokenizer, (tokenizer.encode(" " + prompt.strip()) if prompt.strip() else [])

    def _generate(self, encoder_output, tokenizer, prompts: list[list[int]], max_length: int, temperature: float):
        """One ``generate`` call for a batch of windows (the prompts' sequences)."""
        from faster_whisper.transcribe import get_suppressed_tokens

        sampling = (
            {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
            if temperature > 0
            else {"beam_size": self.beam_size}
        )
        return self.model.model.generate(
            encoder_output,
            prompts,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
            **sampling,
        )

    def _judge(self, result, tokenizer) -> tuple[list[int], float, float]:
        """A generation's text tokens, their average log probability (faster-whisper's:
        over every generated token, timestamps included, and one for the end), and its
        text's compression ratio."""
        from faster_whisper.transcribe import get_compression_ratio

        generated = result.sequences_ids[0]
        tokens = [token for token in generated if token < tokenizer.eot]
        avg_logprob = result.scores[0] * len(generated) / (len(generated) + 1)
        return tokens, avg_logprob, get_compression_ratio(tokenizer.decode(tokens).strip())

    def _max_length(self, sequence: list[int], seconds: float) -> int:
        return min(len(sequence) + token_budget(self.max_tokens_per_second, seconds), self.model.max_length)

    def _decode(self, encoder_output, tokenizer, previous: list[int], seconds: float, continued: bool) -> list[int]:
        """Text tokens for one window, with Whisper's temperature fallback and no-speech
        check; [] when the window holds no speech. A window that fails at every temperature
        with a prompt (a loop, or text too unlikely) is decoded again without it
        (:func:`rtlab.words.retry_without_prompt`)."""
        sequence = self.model.get_prompt(tokenizer, previous, without_timestamps=False)
        tried = []
        for temperature in self.temperatures:
            result = self._generate(encoder_output, tokenizer, [sequence], self._max_length(sequence, seconds), temperature)[0]
            tokens, avg_logprob, ratio = self._judge(result, tokenizer)
            if not needs_fallback(ratio, avg_logprob, result.no_speech_prob):
                break
            tried.append((ratio, avg_logprob, tokens, result))
        else:
            # Every temperature failed: faster-whisper keeps the likeliest generation whose
            # text is not too repetitive, or the likeliest of all.
            ratio, avg_logprob, tokens, result = max(tried, key=lambda t: (t[0] <= COMPRESSION_RATIO_THRESHOLD, t[1]))
            if retry_without_prompt(previous, ratio, avg_logprob):
                return self._decode(encoder_output, tokenizer, [], seconds, continued)
        return [] if is_silent(result.no_speech_prob, avg_logprob, continued=continued) else tokens

    def _decode_batch(self, encoded: np.ndarray, items: list[tuple[Any, list[int], float]]) -> list[list[int]]:
        """:meth:`_decode` of several first windows (``(tokenizer, prompt tokens, seconds)``
        each; ``encoded`` their encoder outputs) with one call (greedy or beam search). A
        window that needs the temperature fallback, or that used up its own token budget (the
        batch runs to the largest budget), is decoded again on its own, as it would have been
        alone."""
        sequences = [self.model.get_prompt(tokenizer, previous, without_timestamps=False) for tokenizer, previous, _ in items]
        limits = [self._max_length(sequence, seconds) for sequence, (_, _, seconds) in zip(sequences, items)]
        temperature = self.temperatures[0]
        decoded: list[list[int] | None] = [None] * len(items)
        # CTranslate2 decodes a batch whose prompts put the start-of-transcript token at one
        # position: windows whose prompts have the same length go together.
        by_length: dict[int, list[int]] = {}
        for index, sequence in enumerate(sequences):
            by_length.setdefault(len(sequence), []).append(index)
        for indexes in by_length.values():
            results = self._generate(
                _view(encoded[indexes]), items[indexes[0]][0], [sequences[i] for i in indexes],
                max(limits[i] for i in indexes), temperature,
            )  # fmt: skip
            for index, result in zip(indexes, results):
                tokenizer, previous, seconds = items[index]
                tokens, avg_logprob, ratio = self._judge(result, tokenizer)
                settled = not needs_fallback(ratio, avg_logprob, result.no_speech_prob)
                if settled and len(sequences[index]) + len(result.sequences_ids[0]) < limits[index]:
                    decoded[index] = [] if is_silent(result.no_speech_prob, avg_logprob) else tokens
                else:
                    decoded[index] = self._decode(_view(encoded[index : index + 1]), tokenizer, previous, seconds, continued=False)
        return decoded  # type: ignore[return-value]

    def cost_features(self, request: Request, words: list[Word]) -> dict[str, float]:
        """What a call cost, for the modeled clock: a fixed part, the encoder's input summed
        over the windows the call ran (30 s each, or with ``pad_seconds`` the buffer and
        its padding; a continued window is a second run), and the tokens decoded and read
        as the prompt. The window count comes with the words (:class:`Words`)."""
        tokenizer = self.model.hf_tokenizer
        text = " ".join(w["text"] for w in words)
        return {
            "calls": 1.0,
            "encoder_seconds": float(getattr(words, "encoder_seconds", 0.0)),
            "tokens": float(len(tokenizer.encode(text, add_special_tokens=False).ids) if text else 0),
            "prompt_tokens": float(len(tokenizer.encode(request.prompt, add_special_tokens=False).ids) if request.prompt else 0),
        }

    def resolved_options(self) -> dict[str, Any]:
        """``beam_size`` as the loaded model chose it when it was left unset."""
        return {"beam_size": self.beam_size} if self.beam_size is not None else {}

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_path": self.model_path,
            "device": self.device or self.requested_device,
            "compute_type": self.compute_type or self.requested_compute_type,
            "beam_size": self.beam_size,
            "cpu_threads": self.cpu_threads or self.requested_cpu_threads,
            "workers": self.workers or self.requested_workers,
            "temperature": self.temperature,
            "window": self.window,
            "pad_seconds": self.pad_seconds,
        }


def _host(view) -> np.ndarray:
    """A CTranslate2 StorageView's values as a NumPy array (copied from a GPU if need be)."""
    import ctranslate2

    if view.device != "cpu":
        view = view.to_device(ctranslate2.Device.cpu)
    return np.array(view)


def _view(array: np.ndarray):
    """A NumPy array as a CTranslate2 StorageView (CTranslate2 moves it to the model's device)."""
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))


class Words(list):
    """The words of one ``transcribe`` call, which also say how many seconds of input the
    encoder ran on (windows times their length): a continued window costs a second
    encoder run, and only the call knows whether it made one. ``cost_features`` reads it;
    to everyone else this is the list of words."""

    def __init__(self, words, *, encoder_seconds: float) -> None:
        super().__init__(words)
        self.encoder_seconds = encoder_seconds


@rtlab.hookimpl
def register_backends(register):
    register(FasterWhisperBackend)
