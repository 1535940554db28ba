"""Incremental decoding on an openai-whisper model, with the alignment heads' cross-attention
(rtlab's ``incremental-decoding`` capability, which the AlignAtt policy needs).

The decoder runs openai-whisper's text decoder step by step with its own key/value cache,
computing each layer from the model's weights (``torch.nn.functional``) instead of calling
its modules. openai-whisper reads cross-attention through forward hooks it installs on the
shared model for each decode (and keeps its cache the same way), and switches its
attention kernel off process-wide to get the weights; calling no module, this decoder
neither sees another session's hooks nor needs the model's lock, and computes the weights
of the alignment heads itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rtlab.policies.incremental import Decoded, IncrementalDecoder

#: Languages Whisper writes without spaces: each character is a word there.
NO_SPACE_LANGUAGES = ("zh", "ja", "th", "lo", "my", "yue")


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

    def __init__(self, backend: Any, language: str | None = None) -> None:
        from whisper.tokenizer import get_tokenizer

        self._backend = backend
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
        self._cross: list[tuple[Any, Any]] | None = None
        self._cache: list[tuple[Any, Any] | None] = []
        self._length = 0

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
        import torch
        from whisper.audio import N_FRAMES, N_SAMPLES, pad_or_trim

        backend = self._backend
        with torch.inference_mode():
            self._threads()
            mel, frames = backend.log_mel(np.asarray(audio[:N_SAMPLES], np.float32))
            features = backend.encode(pad_or_trim(mel, N_FRAMES)[None])
            count = self._model.dims.n_text_head
            self._cross = [
                (_heads(_linear(features, block.cross_attn.key), count), _heads(_linear(features, block.cross_attn.value), count))
                for block in self._model.decoder.blocks
            ]  # fmt: skip
        self._reset_cache()
        self.frames = min(frames, N_FRAMES) // 2  # two spectrogram frames per encoder frame
        return self.frames

    def begin(self, context: Sequence[int], forced: Sequence[int]) -> Decoded:
        if self._cross is None:
            raise RuntimeError("begin() before encode()")
        if self.language is None:
            self.language = self._detect_language()
        start = list(self.tokenizer.sot_sequence_including_notimestamps)
        tokens = ([self._sot_prev, *context] if context else []) + start + list(forced)
        self._reset_cache()
        return self._step(tokens, first=True)

    def feed(self, token: int) -> Decoded:
        return self._step([token], first=False)

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
        logits, _ = self._forward([self._sot])
        self._reset_cache()
        ids = [token for token, _ in self._languages]
        best = int(np.argmax(logits[ids]))
        return self._languages[best][1]

    def _step(self, tokens: list[int], *, first: bool) -> Decoded:
        logits, attention = self._forward(tokens)
        logits[self.eot + 1 :] = -np.inf  # special tokens and timestamps: text only
        if first:  # as Whisper at a segment start: no blank, no end of text
            logits[self._blank + [self.eot]] = -np.inf
        return Decoded(int(logits.argmax()), attention)

    def _forward(self, tokens: list[int]):
        """Logits after ``tokens`` (appended to the cache) and the alignment heads' attention
        rows of each, ``[heads, len(tokens), frames]``."""
        import torch
        import torch.nn.functional as F

        decoder = self._model.decoder
        count = self._model.dims.n_text_head
        offset = self._length
        rows = []
        with torch.inference_mode():
            self._threads()
            ids = torch.tensor([tokens], device=decoder.token_embedding.weight.device)
            dtype = self._cross[0][0].dtype
            x = (F.embedding(ids, decoder.token_embedding.weight) + decoder.positional_embedding[offset : offset + len(tokens)]).to(dtype)
            mask = None
            if len(tokens) > 1:  # each new token sees the cache and the new tokens up to itself
                keys = torch.arange(offset + len(tokens), device=x.device)
                queries = torch.arange(offset, offset + len(tokens), device=x.device)
                mask = keys[None, :] <= queries[:, None]
            for layer, block in enumerate(decoder.blocks):
                h = _layer_norm(x, block.attn_ln)
                q = _heads(_linear(h, block.attn.query), count)
                k = _heads(_linear(h, block.attn.key), count)
                v = _heads(_linear(h, block.attn.value), count)
                cached = self._cache[layer]
                if cached is not None:
                    k, v = torch.cat([cached[0], k], dim=2), torch.cat([cached[1], v], dim=2)
                self._cache[layer] = (k, v)
                x = x + _linear(_merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), block.attn.out)
                h = _layer_norm(x, block.cross_attn_ln)
                q = _heads(_linear(h, block.cross_attn.query), count)
                keys, values = self._cross[layer]
                weights = torch.softmax((q @ keys.transpose(-1, -2)).float() * q.shape[-1] ** -0.5, dim=-1)
                x = x + _linear(_merge(weights.to(dtype) @ values), block.cross_attn.out)
                for head in self._alignment_heads[layer]:
                    rows.append(weights[0, head, :, : self.frames])
                h = _layer_norm(x, block.mlp_ln)
                x = x + _linear(F.gelu(_linear(h, block.mlp[0])), block.mlp[2])
            self._length = offset + len(tokens)
            x = _layer_norm(x[:, -1:], decoder.ln)
            logits = (x @ decoder.token_embedding.weight.to(dtype).T).float()[0, -1].cpu().numpy().copy()
            attention = torch.stack(rows).cpu().numpy().astype(np.float32, copy=False)
        return logits, attention
