"""Incremental decoding on an openai-whisper model, with the alignment heads' cross-attention
(rtlab's ``incremental-decoding`` capability, which the AlignAtt policy needs).

The decoder runs openai-whisper's text decoder step by step with its own key/value cache,
computing each layer from the model's weights (``torch.nn.functional``) instead of calling
its modules. openai-whisper reads cross-attention through forward hooks it installs on the
shared model for each decode (and keeps its cache the same way), and switches its
attention kernel off process-wide to get the weights; calling no module, this decoder
neither sees another session's hooks nor needs the model's lock, and computes the weights
of the alignment heads itself.

Decoders of several sessions batch (:meth:`WhisperIncrementalDecoder.encode_batch`,
:meth:`~WhisperIncrementalDecoder.step_batch`): their buffers go through one encoder call
(every window is Whisper's 30 s; with the backend's ``pad_seconds``, one call per window
length), and their steps through one decoder pass whose position-wise layers (projections,
feed-forward, the output over the vocabulary) take every session's new tokens at once,
while each session's self- and cross-attention runs on its own cache and encoder output,
as it would alone. Nothing of a session is kept across calls outside its decoder.

Beam search (:meth:`~WhisperIncrementalDecoder.feed_beams`) keeps one cache row per
hypothesis: each step copies every new hypothesis's row from the one it continues, then
feeds the hypotheses' tokens as one session's rows (their cross-attention shares the
session's one encoder output).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtlab.policies.incremental import Decoded, DecoderCall, IncrementalDecoder

#: Languages Whisper writes without spaces: each character is a word there.
NO_SPACE_LANGUAGES = ("zh", "ja", "th", "lo", "my", "yue")
#: The spectrogram's transform runs over at least this many samples (1 s): on fewer frames
#: its matrix product rounds differently from the padded one's (measured below 4,000).
MIN_TRANSFORM_SAMPLES = 16_000


def _linear(x, module):
    import torch.nn.functional as F

    bias = None if module.bias is None else module.bias.to(x.dtype)
    return F.linear(x, module.weight.to(x.dtype), bias)


def _layer_norm(x, module):
    import torch.nn.functional as F

    return F.layer_norm(x.float(), module.normalized_shape, module.weight.float(), module.bias.float(), module.eps).to(x.dtype)


def _heads(x, count: int):
    """``[batch, tokens, state]`` as ``[batch, heads, tokens, state / heads]``."""
    return x.view(*x.shape[:2], count, -1).permute(0, 2, 1, 3)


def _merge(x):
    return x.permute(0, 2, 1, 3).flatten(start_dim=2)


class WhisperIncrementalDecoder(IncrementalDecoder):
    """One session's decoder state on a shared openai-whisper model: the encoder output of
    the buffer (as each layer's cross-attention keys and values), the self-attention cache
    of the tokens fed since :meth:`begin`, and the language. Created by
    ``OpenAIWhisperBackend.incremental_decoder``; the backend keeps no reference to it."""

    frames_per_second = 50.0
    window_seconds = 30.0
    beam_search = True

    def __init__(self, backend: Any, language: str | None = None) -> None:
        from whisper.tokenizer import get_tokenizer

        self._backend = backend
        self.beam_size = backend.beam_size
        model = backend.loaded_model.model
        self._model = model
        self._multilingual = model.is_multilingual
        self.language = language if self._multilingual else "en"
        self._tokenizer = None
        probe = get_tokenizer(self._multilingual, num_languages=model.num_languages, language=self.language or "en")
        self.eot = probe.eot
        self._blank = probe.encode(" ")
        self._sot = probe.sot
        self._sot_prev = probe.sot_prev
        self._languages = list(zip(probe.all_language_tokens, probe.all_language_codes)) if self._multilingual else []
        # The start sequence and the previous-text marker leave this many tokens of context.
        self.max_tokens = model.dims.n_text_ctx - len(probe.sot_sequence_including_notimestamps) - 1
        heads = model.alignment_heads.to_dense() if model.alignment_heads.is_sparse else model.alignment_heads
        self._alignment_heads = [[int(h) for h in np.flatnonzero(layer.cpu().numpy())] for layer in heads]
        self.frames = 0
        #: Seconds of the last encoder input, with the backend's ``pad_seconds`` (else None).
        self.encoder_seconds: float | None = None
        self._cross: list[tuple[Any, Any]] | None = None
        self._cache: list[tuple[Any, Any] | None] = []
        self._length = 0
        self._audio_ended = False

    @property
    def tokenizer(self):
        """openai-whisper's tokenizer for the decoded language (known once detected)."""
        from whisper.tokenizer import get_tokenizer

        if self._tokenizer is None:
            model = self._model
            self._tokenizer = get_tokenizer(
                self._multilingual, num_languages=model.num_languages, language=self.language or "en", task="transcribe"
            )
        return self._tokenizer

    # -- the contract ------------------------------------------------------------------------

    def encode(self, audio: np.ndarray) -> int:
        return self.encode_batch([(self, audio)])[0]

    @classmethod
    def encode_batch(cls, calls: list[tuple[WhisperIncrementalDecoder, np.ndarray]]) -> list[int]:
        """The buffers of several sessions' decoders (on one model) through one encoder call."""
        import torch
        from whisper.audio import N_SAMPLES

        backend = calls[0][0]._backend
        with torch.inference_mode():
            calls[0][0]._threads()
            spectrograms = [decoder._window_log_mel(np.asarray(audio[:N_SAMPLES], np.float32)) for decoder, audio in calls]
            # One encoder call per input length (all 30 s, unless the backend has pad_seconds).
            shapes: dict[int, list[int]] = {}
            for index, (_, frames) in enumerate(spectrograms):
                shapes.setdefault(backend.encoder_frames(frames), []).append(index)
            for length, members in shapes.items():
                features = backend.encode(torch.stack([spectrograms[i][0][:, :length] for i in members]))
                for row, index in enumerate(members):
                    calls[index][0]._set_features(features[row : row + 1], spectrograms[index][1])
        return [decoder.frames for decoder, _ in calls]

    def _window_log_mel(self, audio: np.ndarray):
        """The spectrogram of the encoder window holding ``audio`` and its frames of audio:
        :func:`window_log_mel` on CPU; elsewhere openai-whisper's on the device, padded.
        The frames after the audio are the spectrogram of digital silence (SimulStreaming's),
        or 0, as in the last window of openai-whisper's ``transcribe``: with the backend's
        ``window_padding`` ``zeros`` always, with ``last-zeros`` once the stream's audio has
        ended (:meth:`end_of_audio`)."""
        from whisper.audio import N_FRAMES, pad_or_trim

        if self._backend.device == "cpu":
            window, frames = window_log_mel(self._model, audio)
        else:
            mel, frames = self._backend.log_mel(audio)
            window = pad_or_trim(mel, N_FRAMES)
        padding = self._backend.window_padding
        if padding == "zeros" or (padding == "last-zeros" and self._audio_ended):
            window[:, frames:] = 0.0
        return window, frames

    def end_of_audio(self) -> None:
        self._audio_ended = True

    def _set_features(self, features, frames: int) -> None:
        """The encoder output of this session's buffer (``[1, frames, state]``), as each
        layer's cross-attention keys and values; the cache is forgotten."""
        from whisper.audio import N_FRAMES

        count = self._model.dims.n_text_head
        self._cross = [
            (_heads(_linear(features, block.cross_attn.key), count), _heads(_linear(features, block.cross_attn.value), count))
            for block in self._model.decoder.blocks
        ]  # fmt: skip
        self._reset_cache()
        self.frames = min(frames, N_FRAMES) // 2  # two spectrogram frames per encoder frame
        if self._backend.pad_seconds is not None:  # a cost feature (see rtlab.core.instances.CountingDecoder)
            self.encoder_seconds = features.shape[1] / self.frames_per_second

    def begin(self, context: Sequence[int], forced: Sequence[int]) -> Decoded:
        return self.step_batch([DecoderCall(self, "begin", (context, forced))])[0]

    def feed(self, token: int) -> Decoded:
        return self.step_batch([DecoderCall(self, "feed", (token,))])[0]

    def feed_beams(self, tokens: Sequence[int], sources: Sequence[int]) -> list[Decoded]:
        return self.step_batch([DecoderCall(self, "feed_beams", (tokens, sources))])[0]

    @classmethod
    def step_batch(cls, calls: list[DecoderCall]) -> list[Any]:
        """The ``begin``, ``feed`` or ``feed_beams`` of several sessions' decoders (on one
        model), their new tokens through one decoder pass (see the module docstring)."""
        fed = []
        for call in calls:
            decoder: WhisperIncrementalDecoder = call.decoder  # type: ignore[assignment]
            if call.method == "begin":
                fed.append(_Fed(decoder, [decoder._start(*call.args)], first=True))
            elif call.method == "feed":
                fed.append(_Fed(decoder, [[int(call.args[0])]]))
            elif call.method == "feed_beams":
                tokens, sources = call.args
                if len(tokens) != len(sources) or not tokens:
                    raise ValueError("openai-whisper: feed_beams needs one source per token, and at least one")
                fed.append(_Fed(decoder, [[int(t)] for t in tokens], [int(s) for s in sources]))
            else:
                raise ValueError(f"openai-whisper: no decoder step {call.method!r} (begin, feed or feed_beams)")
        outputs = _forward(fed)
        found: list[Any] = []
        for call, each, (logits, attention) in zip(calls, fed, outputs):
            decoded = [each.decoder._choose(logits[row], attention[row], each.first) for row in range(len(each.rows))]
            found.append(decoded if call.method == "feed_beams" else decoded[0])
        return found

    def _start(self, context: Sequence[int], forced: Sequence[int]) -> list[int]:
        """What ``begin`` feeds: the start sequence after the context, then ``forced``; the
        cache is forgotten (and the language detected first, when not known)."""
        if self._cross is None:
            raise RuntimeError("begin() before encode()")
        if self.language is None:
            self.language = self._detect_language()
        start = list(self.tokenizer.sot_sequence_including_notimestamps)
        self._reset_cache()
        return ([self._sot_prev, *context] if context else []) + start + list(forced)

    def text_tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(" " + text.strip()) if text.strip() else []

    def words(self, tokens: Sequence[int]) -> list[tuple[str, list[int]]]:
        text_tokens = [t for t in tokens if t < self.eot]
        if not text_tokens:
            return []
        pieces, groups = self.tokenizer.split_tokens_on_unicode(text_tokens)
        if self.language in NO_SPACE_LANGUAGES:
            return [(piece, list(group)) for piece, group in zip(pieces, groups)]
        found: list[tuple[str, list[int]]] = []
        for piece, group in zip(pieces, groups):
            if piece.startswith(" ") or not found:
                found.append((piece, list(group)))
            else:  # a word's continuation, or the punctuation after it
                text, held = found[-1]
                found[-1] = (text + piece, held + list(group))
        return found

    def close(self) -> None:
        self._cross = None
        self._reset_cache()
        self.frames = 0

    # -- the decoder, layer by layer -----------------------------------------------------------

    def _threads(self) -> None:
        import torch

        if self._backend.device == "cpu":
            torch.set_num_threads(self._backend.cpu_threads)

    def _reset_cache(self) -> None:
        self._cache = [None] * len(self._model.decoder.blocks)
        self._length = 0

    def _detect_language(self) -> str:
        """The most probable language token after the start of transcript, on this buffer."""
        self._reset_cache()
        ((logits, _),) = _forward([_Fed(self, [[self._sot]])])
        self._reset_cache()
        ids = [token for token, _ in self._languages]
        best = int(np.argmax(logits[0][ids]))
        return self._languages[best][1]

    def _choose(self, logits: np.ndarray, attention: np.ndarray, first: bool) -> Decoded:
        logits[self.eot + 1 :] = -np.inf  # special tokens and timestamps: text only
        if first:  # as Whisper at a segment start: no blank, no end of text
            logits[self._blank + [self.eot]] = -np.inf
        return Decoded(int(logits.argmax()), attention, logits)


@dataclass
class _Fed:
    """One session's part of a decoder pass: the tokens of each hypothesis (``rows``, all
    of one length), and for beams the current hypothesis each one continues (``sources``:
    the cache is reordered so first; None: the cache's one row)."""

    decoder: WhisperIncrementalDecoder
    rows: list[list[int]]
    sources: list[int] | None = None
    first: bool = False  #: a decode's first choice (begin)


def _forward(fed: list[_Fed]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each session's part (decoders on one model, one part each): the logits after
    each hypothesis's tokens (appended to that decoder's cache), ``[rows, vocabulary]``,
    and the alignment heads' attention rows of each token, ``[rows, heads, tokens,
    frames]``. Every session's tokens go through the position-wise layers together;
    attention runs per session on its own cache (one row per hypothesis) and encoder
    output."""
    import torch
    import torch.nn.functional as F

    first = fed[0].decoder
    model = first._model
    decoder = model.decoder
    count = model.dims.n_text_head
    offsets = [part.decoder._length for part in fed]
    sizes = [len(part.rows[0]) for part in fed]  # tokens per hypothesis
    bounds = np.cumsum([0, *(len(part.rows) * size for part, size in zip(fed, sizes))]).tolist()
    found: list[list[list[Any]]] = [[] for _ in fed]  # per part, per head: [rows, tokens, frames]
    with torch.inference_mode():
        first._threads()
        device = decoder.token_embedding.weight.device
        dtype = first._cross[0][0].dtype
        x = torch.cat(
            [
                F.embedding(torch.tensor([row], device=device), decoder.token_embedding.weight)
                + decoder.positional_embedding[offset : offset + len(row)]
                for part, offset in zip(fed, offsets)
                for row in part.rows
            ],
            dim=1,
        ).to(dtype)
        masks = []
        for offset, size in zip(offsets, sizes):
            mask = None
            if size > 1:  # each new token sees the cache and the new tokens up to itself
                keys = torch.arange(offset + size, device=x.device)
                queries = torch.arange(offset, offset + size, device=x.device)
                mask = keys[None, :] <= queries[:, None]
            masks.append(mask)
        sources = [None if part.sources is None else torch.tensor(part.sources, device=device) for part in fed]
        for layer, block in enumerate(decoder.blocks):
            h = _layer_norm(x, block.attn_ln)
            q, k, v = _linear(h, block.attn.query), _linear(h, block.attn.key), _linear(h, block.attn.value)
            mixed = []
            for index, part in enumerate(fed):
                window = slice(bounds[index], bounds[index + 1])
                rows, session = len(part.rows), part.decoder
                q_, k_, v_ = (_heads(t[:, window].reshape(rows, sizes[index], -1), count) for t in (q, k, v))
                cached = session._cache[layer]
                if cached is not None:
                    if sources[index] is not None:  # each hypothesis continues its source's cache
                        cached = (cached[0].index_select(0, sources[index]), cached[1].index_select(0, sources[index]))
                    k_, v_ = torch.cat([cached[0], k_], dim=2), torch.cat([cached[1], v_], dim=2)
                session._cache[layer] = (k_, v_)
                attended = F.scaled_dot_product_attention(q_, k_, v_, attn_mask=masks[index])
                mixed.append(_merge(attended).reshape(1, rows * sizes[index], -1))
            x = x + _linear(_cat(mixed), block.attn.out)
            h = _layer_norm(x, block.cross_attn_ln)
            q = _linear(h, block.cross_attn.query)
            mixed = []
            for index, part in enumerate(fed):
                rows, session = len(part.rows), part.decoder
                q_ = _heads(q[:, bounds[index] : bounds[index + 1]].reshape(rows, sizes[index], -1), count)
                keys, values = session._cross[layer]  # one row, shared by the hypotheses
                weights = torch.softmax((q_ @ keys.transpose(-1, -2)).float() * q_.shape[-1] ** -0.5, dim=-1)
                mixed.append(_merge(weights.to(dtype) @ values).reshape(1, rows * sizes[index], -1))
                for head in session._alignment_heads[layer]:
                    found[index].append(weights[:, head, :, : session.frames])
            x = x + _linear(_cat(mixed), block.cross_attn.out)
            h = _layer_norm(x, block.mlp_ln)
            x = x + _linear(F.gelu(_linear(h, block.mlp[0])), block.mlp[2])
        for part, offset, size in zip(fed, offsets, sizes):
            part.decoder._length = offset + size
        ends = [  # each hypothesis's last token
            bounds[index] + (row + 1) * size - 1
            for index, (part, size) in enumerate(zip(fed, sizes))
            for row in range(len(part.rows))
        ]
        last = _layer_norm(x[:, ends], decoder.ln)
        logits = (last @ decoder.token_embedding.weight.to(dtype).T).float()[0].cpu().numpy()
        results = []
        row = 0
        for index, part in enumerate(fed):
            attention = torch.stack(found[index], dim=1).cpu().numpy().astype(np.float32, copy=False)
            results.append((logits[row : row + len(part.rows)].copy(), attention))
            row += len(part.rows)
        return results


def window_log_mel(model: Any, audio: np.ndarray) -> tuple[Any, int]:
    """The log-Mel spectrogram of one encoder window (``[n_mels, 3000]``) holding ``audio``
    (at most 30 s), and its number of frames of audio: ``pad_or_trim`` of what
    ``backend.log_mel`` gives, the same numbers, without the short-time Fourier transform
    of the 30 s of silence openai-whisper appends (most of its cost on a short buffer).
    Under the portable kernels on an Intel CPU, MKL's AVX2 reproducibility mode rounds the
    mel filters' matrix product by its size, and a value may then differ in its last bit.

    A frame all of whose samples are padding is 0 before the logarithm, so the same
    constant after it (the floor: the largest value less 8, or the clamp's -10); the
    transform runs over the audio and at least :data:`MIN_TRANSFORM_SAMPLES` samples with
    one window's zeros after it (every frame that reads audio sees what it sees in the
    padded signal). CPU only: another device's transform may round otherwise."""
    import torch
    import torch.nn.functional as F
    from whisper.audio import HOP_LENGTH, N_FFT, N_FRAMES, mel_filters

    samples = torch.from_numpy(audio)
    frames = len(samples) // HOP_LENGTH
    samples = F.pad(samples, (0, max(N_FFT, MIN_TRANSFORM_SAMPLES - len(samples))))
    stft = torch.stft(samples, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    mel = (mel_filters(samples.device, model.dims.n_mels) @ (stft[..., :-1].abs() ** 2)).clamp(min=1e-10).log10()
    floor = mel.max() - 8.0
    window = torch.maximum(floor, torch.tensor(-10.0)).expand(mel.shape[0], N_FRAMES).clone()
    shown = min(mel.shape[-1], N_FRAMES)
    window[:, :shown] = torch.maximum(mel[:, :shown], floor)
    return (window + 4.0) / 4.0, frames


def _cat(parts: list[Any]):
    import torch

    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
