"""Passes of several sessions in one model call (``OpenAIWhisperBackend.transcribe_batch``).

The first window of every buffer goes through one encoder call (every window is Whisper's
30 s, so they all stack), languages not given are detected in one call, and the greedy
decode of the first windows runs as one batch per prompt length: openai-whisper's decoding
loop gives every row of a batch the same start position (``sample_begin``), so rows whose
start sequences differ in length cannot share it. The rest of each pass (a temperature
fallback, the alignment of its words, a continued window) runs as it would alone, on that
pass's own encoder output.

A row decoded in a batch gets the tokens it would get alone: greedy choices are row by row,
and a row ends at its end of text. Where the batch cannot tell, the row is decoded again
alone: a row that used up its own token budget (the batch runs to the largest budget of
its rows) and a row that Whisper's fallback rules reject (the fallback's next temperature
samples, which only the pass alone may do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtlab.backends import Request, Word
from rtlab.words import is_silent, needs_fallback

if TYPE_CHECKING:
    from . import OpenAIWhisperBackend


@dataclass
class FirstWindow:
    """A pass's first window, computed with other passes': its spectrogram and frames of
    audio, its encoder output (``[1, frames, state]``), language, tokenizer, prompt tokens
    and decoded text tokens."""

    mel: Any
    frames: int
    features: Any
    language: str
    tokenizer: Any
    previous: list[int]
    tokens: list[int]


def batchable(backend: OpenAIWhisperBackend, request: Request) -> bool:
    """Whether ``request`` can share a batch: a buffer of one 30 s window, decoded greedily
    first (beam search, sampling and ``pad_seconds`` windows run alone)."""
    from . import MIN_SAMPLES, WINDOW_SECONDS

    greedy = backend.beam_size == 1 and backend.temperatures[0] == 0
    whole = backend.window == "buffer" and backend.pad_seconds is None  # one window shape
    return greedy and whole and MIN_SAMPLES <= len(request.audio) <= WINDOW_SECONDS * 16_000


def transcribe_together(backend: OpenAIWhisperBackend, requests: list[Request]) -> list[list[Word]]:
    """The words of each of ``requests`` (all :func:`batchable`), their first windows
    encoded and decoded together; with the model's lock held, in inference mode."""
    import torch
    from whisper.audio import FRAMES_PER_SECOND, N_FRAMES, pad_or_trim

    spectrograms = [backend.log_mel(request.audio) for request in requests]
    frames = [min(count, N_FRAMES) for _, count in spectrograms]
    windows = torch.stack([pad_or_trim(mel[:, :count], N_FRAMES) for (mel, _), count in zip(spectrograms, frames)])
    features = backend.encode(windows)
    languages = backend.window_language(features, [request.language for request in requests])
    contexts = [backend.window_context(request.prompt, language) for request, language in zip(requests, languages)]
    items = [
        (previous, count / FRAMES_PER_SECOND, language) for (_, previous), count, language in zip(contexts, frames, languages)
    ]
    tokens = decode_first_windows(backend, features, items)
    return [
        backend._transcribe_window(
            request.audio, prompt=request.prompt, language=language,
            first=FirstWindow(mel, count, features[index : index + 1], language, tokenizer, previous, decoded),
        )
        for index, (request, (mel, count), language, (tokenizer, previous), decoded)
        in enumerate(zip(requests, spectrograms, languages, contexts, tokens))
    ]  # fmt: skip


def decode_first_windows(backend: OpenAIWhisperBackend, features, items: list[tuple[list[int], float, str]]) -> list[list[int]]:
    """Text tokens of each first window (``(prompt tokens, seconds, language)`` each;
    ``features`` their encoder outputs), as ``_decode`` gives them: one greedy batch per
    start-sequence length and language, a row decoded again alone where the batch cannot
    tell what it would have been (see the module docstring)."""
    options = [backend.decoding_options(previous, seconds, language, 0.0) for previous, seconds, language in items]
    groups: dict[tuple[int, str], list[int]] = {}
    for index, option in enumerate(options):
        groups.setdefault((len(option.prompt or ()), option.language), []).append(index)
    decoded: list[list[int] | None] = [None] * len(items)
    for indexes in groups.values():
        rows = _greedy_rows(backend, features[indexes], [options[i] for i in indexes])
        for index, row in zip(indexes, rows):
            if row is None:
                previous, seconds, language = items[index]
                alone = features[index : index + 1]
                decoded[index] = backend._decode(alone, previous, seconds, continued=False, language=language)
                continue
            tokens, avg_logprob, no_speech_prob = row
            decoded[index] = [] if is_silent(no_speech_prob, avg_logprob) else tokens
    return decoded  # type: ignore[return-value]


def _greedy_rows(backend: OpenAIWhisperBackend, features, options: list) -> list[tuple[list[int], float, float] | None]:
    """One greedy decode of the rows of ``features`` (their ``options`` differ only in
    prompt and token budget, prompts of one length): each row's text tokens, average log
    probability and no-speech probability, or None where the row must be decoded alone.
    ``DecodingTask.run``, with a start sequence per row instead of one for all."""
    import dataclasses

    import torch
    from whisper.decoding import DecodingTask
    from whisper.utils import compression_ratio

    model = backend.loaded_model.model
    longest = max(option.sample_len for option in options)
    task = DecodingTask(model, dataclasses.replace(options[0], sample_len=longest))
    tokenizer = task.tokenizer
    sot = list(task.sot_sequence)
    starts = [([tokenizer.sot_prev, *option.prompt] if option.prompt else []) + sot for option in options]
    task.decoder.reset()
    audio_features = task._get_audio_features(features)
    tokens = torch.tensor(starts, device=audio_features.device)
    tokens, sum_logprobs, no_speech_probs = task._main_loop(audio_features, tokens)
    fallback = len(backend.temperatures) > 1
    rows: list[tuple[list[int], float, float] | None] = []
    for row, option, logprob, no_speech in zip(tokens, options, sum_logprobs.tolist(), no_speech_probs):
        sampled = row[task.sample_begin :].tolist()
        if tokenizer.eot not in sampled or sampled.index(tokenizer.eot) >= option.sample_len:
            rows.append(None)  # alone, it would have stopped at its own budget
            continue
        sampled = sampled[: sampled.index(tokenizer.eot)]
        avg_logprob = logprob / (len(sampled) + 1)
        ratio = compression_ratio(tokenizer.decode(sampled).strip())
        if fallback and needs_fallback(ratio, avg_logprob, float(no_speech)):
            rows.append(None)  # alone, the next temperature would decode it again
            continue
        rows.append(([token for token in sampled if token < tokenizer.eot], avg_logprob, float(no_speech)))
    return rows
