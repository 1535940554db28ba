"""The backend instance a stream uses (one per model key, shared by every session), and
each session's view of it."""

from __future__ import annotations

import functools
import math
import numbers
import threading
from typing import Any, Callable

from ..backends import Backend, Request, Word
from ..config import StreamConfig
from ..errors import PluginError
from ..registry import get_registry
from .batching import Batcher, BatchingDecoder
from .costs import add_features
from .memo import PassMemo

_instances: dict[tuple, Backend] = {}
_instances_lock = threading.Lock()


def get_backend(config: StreamConfig | str, **options: Any) -> Backend:
    """The shared backend instance of a :class:`~rtlab.config.StreamConfig` (or of a backend
    name and its options, ``model`` among them), created, not loaded: one instance per
    :attr:`~rtlab.config.StreamConfig.model_key` and registered class.

    Unknown names and options raise :class:`~rtlab.errors.UnknownBackend` and
    :class:`~rtlab.errors.InvalidOption`. Call :func:`~rtlab.backends.ensure_loaded` (off
    the event loop) before transcribing.
    """
    if isinstance(config, str):
        model = options.pop("model", None)
        config = StreamConfig(backend=config, model=model, backend_options=options)
    elif options:
        raise TypeError("get_backend(config) takes no options besides the configuration's own")
    registry = get_registry()
    kwargs = config.backend_kwargs()
    registry.check_options("backend", config.backend, kwargs)
    cls = registry.get("backend", config.backend)
    # The class is part of the key: a name registered again (a test's inline plugin) is
    # another backend.
    key = (cls, *config.model_key)
    with _instances_lock:
        backend = _instances.get(key)
        if backend is None:
            backend = _instances[key] = registry.create("backend", config.backend, **kwargs)
        return backend


class SessionBackend:
    """What a session's policy sees of the shared backend: the backend itself, except that
    ``transcribe`` adds up what the calls of a pass did (:meth:`Backend.cost_features`,
    for the modeled clock and for calibration) and, on a batching backend, joins the
    batcher with the session's key (see :mod:`rtlab.core.batching`), as do the encoder runs
    and steps of its ``incremental_decoder``. With a :class:`~rtlab.core.memo.PassMemo`
    (a replay on an unmeasured clock), a call that another stream of the replay already
    made is answered from it."""

    def __init__(
        self,
        backend: Backend,
        batcher: Batcher | None = None,
        key: Callable[[], float] | None = None,
        memo: PassMemo | None = None,
    ) -> None:
        self._backend = backend
        self._batcher = batcher
        self._key = key
        self._memo = memo
        self._features: dict[str, float] = {}
        self._reused_seconds = 0.0
        # Counted by the batcher from the session's first transcribe pass until close(); a
        # pass of a closing session (one past its deadline) must not count it again.
        self._counted = self._closed = False
        self._counting = threading.Lock()

    def close(self) -> None:
        """The session sends no more passes: its batcher stops counting on it. Idempotent."""
        with self._counting:
            if self._counted and self._batcher is not None:
                self._batcher.session_ended()
            self._counted, self._closed = False, True

    def transcribe(self, audio: Any, *, prompt: str = "", language: str | None = None) -> list[Word]:
        request = Request(audio, prompt, language)
        words = self._once(request, lambda: self._call(request))
        _check_words(self._backend, words)
        self._add_features(self._backend.cost_features(request, words))
        return words

    def _once(self, request: Request, compute: Callable[[], Any], kind: str = "transcribe") -> Any:
        """``compute()``, or with a memo its result for ``request`` if another stream of the
        replay asked it already (crediting what that call cost)."""
        if self._memo is None:
            return compute()
        result, credit = self._memo.call(self._backend, request, compute, kind)
        self._reused_seconds += credit
        return result

    def _call(self, request: Request) -> list[Word]:
        if self._batcher is None:
            return self._backend.transcribe(request.audio, prompt=request.prompt, language=request.language)
        with self._counting:  # a session that sends no transcribe pass (AlignAtt's) is not waited for
            if not (self._counted or self._closed):
                self._counted = True
                self._batcher.session_started()
        return self._batcher.transcribe(request, self._key() if self._key else 0.0)

    def incremental_decoder(self, **options: Any) -> Any:
        """The backend's ``incremental_decoder`` for this session; on a batching backend,
        wrapped so that its encoder runs and steps join the batcher's batches."""
        decoder = self._backend.incremental_decoder(**options)  # type: ignore[attr-defined]
        if self._batcher is not None:
            decoder = BatchingDecoder(decoder, self._batcher, self._key)
        return CountingDecoder(decoder, self._add_features)

    def _add_features(self, features: dict[str, float]) -> None:
        add_features(self._features, features)

    def take_reused_seconds(self) -> float:
        """Compute of the calls since the last take that the memo answered (what they took
        when they ran, less the time spent waiting for them here)."""
        seconds, self._reused_seconds = self._reused_seconds, 0.0
        return seconds

    def take_features(self) -> dict[str, float]:
        """What the calls since the last take did, summed (a session runs one pass at a time)."""
        features, self._features = self._features, {}
        return features

    def _detect_language(self, detect: Callable[[Any], Any], audio: Any) -> Any:
        # A pass that asks for the language runs the encoder once more: a cost feature too.
        found = self._once(Request(audio, "", None), lambda: detect(audio), kind="detect_language")
        if found is not None:  # (None: an English-only model, or too little audio: no run)
            self._add_features({"language_detections": 1.0})
        return found

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._backend, name)
        if name == "detect_language":  # optional (see rtlab.policies.local_agreement)
            return functools.partial(self._detect_language, attribute)
        return attribute


def _check_words(backend: Backend, words: Any) -> None:
    """Refuse what a policy cannot use as words, naming the backend and the word: a list of
    dicts with a str ``text`` and ``start`` and ``end`` in finite seconds. Without this
    the stream ends in the policy with "cannot convert float NaN to integer", or a NaN
    reaches the events (which JSON cannot carry)."""
    if not isinstance(words, list):
        raise PluginError(
            f"backend {getattr(backend, 'name', '?')!r} returned {type(words).__name__} from transcribe, "
            "not a list of words ({'text': str, 'start': seconds, 'end': seconds})"
        )
    for word in words:
        if not (
            isinstance(word, dict)
            and isinstance(word.get("text"), str)
            and all(_is_seconds(word.get(time)) for time in ("start", "end"))
        ):
            raise PluginError(
                f"backend {getattr(backend, 'name', '?')!r} returned the word {word!r}; a word is "
                "{'text': str, 'start': seconds, 'end': seconds}, its times finite numbers"
            )


def _is_seconds(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class CountingDecoder:
    """A session's incremental decoder that adds up what its calls did, as the cost
    features of the pass they belong to (for the modeled clock and calibration): encoder
    runs (and their input's seconds, where the decoder reports ``encoder_seconds``: shorter
    windows than Whisper's 30 s), decodes begun and the tokens each began with (the start
    sequence is the same for every decode: ``begins`` carries it), single-token steps, and
    a beam search's hypotheses per step.
    Everything else is the decoder's own."""

    def __init__(self, decoder: Any, add: Callable[[dict[str, float]], None]) -> None:
        self.decoder = decoder
        self._add = add

    def encode(self, audio: Any) -> int:
        frames = self.decoder.encode(audio)
        self._add({"encoder_runs": 1.0})
        seconds = getattr(self.decoder, "encoder_seconds", None)
        if seconds is not None:  # a decoder whose encoder input varies says how long it was
            self._add({"encoder_seconds": float(seconds)})
        return frames

    def begin(self, context: Any, forced: Any) -> Any:
        decoded = self.decoder.begin(context, forced)
        self._add({"begins": 1.0, "begin_tokens": float(len(context) + len(forced))})
        return decoded

    def feed(self, token: int) -> Any:
        decoded = self.decoder.feed(token)
        self._add({"steps": 1.0})
        return decoded

    def feed_beams(self, tokens: Any, sources: Any) -> Any:
        decoded = self.decoder.feed_beams(tokens, sources)
        self._add({"steps": 1.0, "beam_hypotheses": float(len(tokens))})
        return decoded

    def __getattr__(self, name: str) -> Any:
        return getattr(self.decoder, name)
