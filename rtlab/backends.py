"""The backend contract, and the process-wide cache that shares loaded models.

A backend turns 16 kHz mono float32 audio into words with times. Backends are plugins
(see ``register_backends``); a plugin author subclasses :class:`Backend`, declares its
options as keyword arguments of ``__init__`` and implements ``load`` and ``transcribe``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, TypedDict

import numpy as np

from .errors import InvalidOption
from .options import is_number, is_whole_number

SAMPLE_RATE = 16_000


class Word(TypedDict, total=False):
    """A recognised word; times are seconds from the start of the audio passed in."""

    text: str
    start: float
    end: float
    probability: float
    #: Goes on from the word before it, without a space (set by a policy on the rest of a
    #: word heard over a committed one; see :func:`rtlab.core.events.join_words`).
    joins: bool


@dataclass(frozen=True)
class Request:
    """One pass's call of :meth:`Backend.transcribe`, as :meth:`Backend.transcribe_batch` takes it."""

    audio: np.ndarray
    prompt: str = ""
    language: str | None = None


class Backend:
    """Base class for transcription backends.

    Subclasses set ``name`` (the registry key) and may set ``description``. ``load`` may be
    slow (it runs once, off the event loop); ``transcribe`` runs on the backend's
    scheduler thread and must not touch asyncio.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: How many ``transcribe`` calls may run at once on one instance (see Scheduler).
    #: May be set per instance in ``__init__`` or ``load``: it is read after ``load``.
    max_concurrency: int = 1
    #: CPU cores one ``transcribe`` call keeps busy; the scheduler holds that many of the
    #: process's CPU slots while it runs (0: the work runs elsewhere, e.g. on a GPU).
    cores_per_call: int = 1
    #: Passes of concurrent sessions that one :meth:`transcribe_batch` call may take. A
    #: backend that batches sets it from a ``max_batch`` option (see :func:`batch_options`);
    #: 1 means every pass is a call of its own.
    max_batch: int = 1
    #: Milliseconds a batch waits for more passes after its first one arrived.
    batch_wait_ms: float = 0.0
    #: What the backend can do beyond ``transcribe``, by name, for the policies that need
    #: more (a policy's ``requires``; ``/api/backends`` lists both). rtlab knows
    #: ``"incremental-decoding"``: the backend creates a session's decoder with
    #: ``incremental_decoder(language=...)``, the contract of
    #: :class:`rtlab.policies.incremental.IncrementalDecoder` (AlignAtt needs it). Default:
    #: none.
    capabilities: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        """Subclasses declare their options as keyword arguments of their own ``__init__``;
        a backend without one accepts no options (see :func:`accepted_options`)."""

    def load(self) -> None:
        """Load weights; called once before the first ``transcribe``. Default: nothing."""

    @property
    def loaded(self) -> bool:
        """Whether ``load`` has completed (a loaded model makes sessions start fast)."""
        return getattr(self, "_rtlab_loaded", False)

    def default_language(self) -> str | None:
        """Language used when the caller gives none; None means auto-detect."""
        return None

    def languages(self) -> list[str] | None:
        """The language codes the loaded model transcribes (``["en"]`` for an English-only
        Whisper); None when it takes any or does not say. A stream whose ``language`` is
        not among them is refused in one line before it starts (:func:`check_language`)."""
        return None

    def transcribe(
        self, audio: np.ndarray, *, prompt: str = "", language: str | None = None
    ) -> list[Word]:
        """Transcribe ``audio`` (float32, 16 kHz, mono) into words in time order."""
        raise NotImplementedError

    def transcribe_batch(self, requests: list[Request]) -> list[list[Word]]:
        """The words of each request, in order: one model call for passes of several
        sessions (see :attr:`max_batch`). Runs on a scheduler thread, like ``transcribe``,
        and must give each request the words ``transcribe`` would. Default: one
        ``transcribe`` after another."""
        return [self.transcribe(r.audio, prompt=r.prompt, language=r.language) for r in requests]

    def cost_features(self, request: Request, words: list[Word]) -> dict[str, float]:
        """What one ``transcribe`` call did, as the ``modeled`` clock's cost model sees it
        (see :mod:`rtlab.core.costs`): a deterministic function of the call's input and
        output. Default: the call itself, the seconds of audio, the words returned and the
        words of the prompt. A backend may report finer features (encoder windows, decoded
        tokens); calibrations fitted before such a change must be fitted again."""
        return {
            "calls": 1.0,
            "audio_seconds": len(request.audio) / SAMPLE_RATE,
            "words": float(len(words)),
            "prompt_words": float(len(request.prompt.split())),
        }

    def info(self) -> dict[str, Any]:
        """What this instance is, for logs, ``/api/backends`` and benchmark records."""
        return {"backend": self.name}

    def resolved_options(self) -> dict[str, Any]:
        """Options left unset (None) whose value the loaded backend chose, by name (a
        Whisper backend's ``beam_size`` follows the model, for example). A cost model keys
        its calibrations by the chosen value, so that an option left unset and the same
        value given are one calibration. Default: none."""
        return {}

    # Class-level capabilities, asked without an instance or a loaded model. A backend that
    # turns another engine's model files into its own format also provides the classmethod
    # ``convert_model(source, dest) -> dict`` (what it wrote), which ``rtlab models
    # convert`` calls; the base class has none, so that the command finds who can convert.

    @classmethod
    def devices(cls) -> list[str] | None:
        """The devices this backend can compute on here, best first (``["cuda", "cpu"]``),
        for ``rtlab plugins`` and ``/api/backends``. A cheap probe: no model is loaded and,
        where it can be avoided, no engine imported (``load`` checks the device for real).
        None (the default): the backend does not say."""
        return None

    @classmethod
    def local_models(cls) -> list[dict[str, Any]]:
        """The models this backend finds on this machine without a download, for ``rtlab
        models list``: one dict per model with ``name``, ``kind`` (``embedded``: shipped in
        a package; ``converted``: made from another engine's files; ``cached``: downloaded
        before), ``path`` and ``bytes``, and optionally ``format`` and ``note``. Default: []."""
        return []


#: The largest ``max_batch`` :func:`batch_options` accepts.
MAX_BATCH = 512


def check_language(backend: Backend, language: str | None) -> None:
    """Refuse, with :class:`~rtlab.errors.InvalidOption`, a ``language`` the loaded
    ``backend`` does not transcribe (see :meth:`Backend.languages`); None (detect) passes."""
    if language is None:
        return
    known = backend.languages()
    if known is None or language in known:
        return
    model = getattr(backend, "model_name", None)
    what = f"{backend.name} model {model!r}" if isinstance(model, str) else f"backend {backend.name!r}"
    if list(known) == ["en"]:
        raise InvalidOption(
            f"{what} is English-only and does not transcribe language {language!r}; use a multilingual "
            f"model (e.g. base), or language en"
        )
    raise InvalidOption(
        f"{what} does not know language {language!r}; it transcribes: {', '.join(known)} (codes, or "
        f"their English names; or leave the language unset to detect it)"
    )


def batch_options(backend: str, max_batch: int, batch_wait_ms: float) -> tuple[int, float]:
    """Checked values of a backend's ``max_batch`` (1 to :data:`MAX_BATCH` passes per model
    call) and ``batch_wait_ms`` (0 to 1000 ms); :class:`~rtlab.errors.InvalidOption`
    naming the backend, the option and the range otherwise."""
    if not is_whole_number(max_batch) or not 1 <= max_batch <= MAX_BATCH:
        raise InvalidOption(f"{backend}: max_batch must be a whole number from 1 to {MAX_BATCH}, not {max_batch!r}")
    if not is_number(batch_wait_ms) or not 0 <= batch_wait_ms <= 1000:
        raise InvalidOption(f"{backend}: batch_wait_ms must be a number of milliseconds from 0 to 1000, not {batch_wait_ms!r}")
    return max_batch, float(batch_wait_ms)


def accepted_options(cls: type) -> dict[str, Any]:
    """The options a backend, policy or decoder class accepts, with their defaults.

    They are the keyword parameters of its ``__init__``, following the MRO: a class without
    an ``__init__`` of its own has its parent's options, and a ``**kwargs`` parameter means
    "forwarded to the parent", so the parent's options are accepted too. The contract bases
    accept none, and the arguments the processor passes itself (a policy's ``backend`` and
    ``language``, its ``processor_arguments``) are not options. A required option's default
    is None.
    """
    passed_by_rtlab = set(getattr(cls, "processor_arguments", ()))
    options: dict[str, Any] = {}
    for owner in cls.__mro__[:-1]:  # object's (*args, **kwargs) is not an option
        init = vars(owner).get("__init__")
        if init is None:
            continue
        parameters = list(inspect.signature(init).parameters.values())[1:]  # after self
        for p in parameters:
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in passed_by_rtlab:
                options.setdefault(p.name, None if p.default is p.empty else p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return options


def check_options(cls: type, kind: str, options: dict[str, Any], plugin: str = "") -> None:
    """Refuse an option ``cls`` does not accept with :class:`~rtlab.errors.InvalidOption`,
    in one format for every kind and entry point:
    ``backend 'echo' (plugin 'rtlab_echo') does not accept option 'wrod'; it accepts: word``.
    """
    accepted = accepted_options(cls)
    for option in options:
        if option not in accepted:
            owner = f" (plugin {plugin!r})" if plugin else ""
            choices = f"it accepts: {', '.join(sorted(accepted))}" if accepted else "it accepts no options"
            raise InvalidOption(f"{kind} {cls.name!r}{owner} does not accept option {option!r}; {choices}")


class SharedModels:
    """Process-wide cache of loaded models: one load per key, safe across threads.

    Backends call ``shared_models.get(key, loader)`` with a key such as
    ``("faster-whisper", model, device, compute_type)``; concurrent callers with the same
    key wait for the one load instead of loading twice.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple, Any] = {}
        self._loading: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple, loader: Callable[[], Any]) -> Any:
        """The model for ``key``, loading it with ``loader()`` the first time."""
        with self._lock:
            if key in self._models:
                return self._models[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = loader()
            with self._lock:
                self._models[key] = model
                self._loading.pop(key, None)
            return model

    def keys(self) -> list[tuple]:
        """Keys of the models loaded so far."""
        with self._lock:
            return list(self._models)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._models

    def clear(self) -> None:
        """Forget every model (tests use this; live sessions keep their references)."""
        with self._lock:
            self._models.clear()


shared_models = SharedModels()

_load_locks_lock = threading.Lock()


def ensure_loaded(backend: Backend) -> Backend:
    """Run ``backend.load()`` once per instance, thread-safely; blocking."""
    with _load_locks_lock:
        lock = backend.__dict__.setdefault("_rtlab_load_lock", threading.Lock())
    with lock:
        if not backend.loaded:
            backend.load()
            backend._rtlab_loaded = True
    return backend


# -- model caches ----------------------------------------------------------------------------

_PARTIAL = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.partial$")


def partial_path(target: str | os.PathLike[str]) -> Path:
    """Where to write ``target`` before renaming it into place: a hidden name beside it
    that carries this process's id (``.NAME.PID.RANDOM.partial``), so that
    :func:`remove_abandoned_partials` can tell a write still going on from one whose
    process died (killed in the middle of a conversion or a download)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")


@contextlib.contextmanager
def written_whole(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Write ``target`` whole or not at all: the block writes the path this yields (a
    :func:`partial_path` beside ``target``), which is renamed into place when the block
    ends. If the block fails (a full disk, Ctrl-C, a killed conversion's exception), the
    partial file is removed and an earlier ``target`` stays as it was; a reader, another
    process included, never finds half a file::

        with written_whole(path) as partial:
            partial.write_text(text, encoding="utf-8")
    """
    partial = partial_path(target)
    try:
        yield partial
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def folders_removed_on_failure(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Within the block, ``folder`` and the folders above it that do not exist yet may be
    made; if the block fails, those of them still empty are removed again (the deepest
    first), so a failed command or conversion leaves no empty folder behind. A folder that existed
    before, or one holding a file, is left as it is."""
    target = Path(folder)
    made = [path for path in (target, *target.parents) if not path.exists()]
    try:
        yield
    except BaseException:
        for path in made:
            with contextlib.suppress(OSError):  # not empty (something was written), or gone
                path.rmdir()
        raise


def remove_abandoned_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove what :func:`partial_path` names in ``folder`` whose process is gone; returns
    what was removed. A backend calls it before it writes into its cache, so that a killed
    process leaves nothing behind for long."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True
