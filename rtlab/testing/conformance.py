"""Conformance checks for backend plugins, to call from the plugin's own tests.

.. code-block:: python

    from rtlab.testing import check_backend
    from rtlab_echo import EchoBackend


    def test_echo_keeps_the_backend_contract():
        check_backend(EchoBackend, options={"word": "hi"}, expect=["hi"])

Every check runs, also after one has failed, and one AssertionError lists every failure.
The checks go through rtlab's own entry points (the registry, ``ensure_loaded``, an
``AudioProcessor``), so a backend that passes them works the way users will call it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..backends import SAMPLE_RATE, Request, ensure_loaded
from ..decoders.files import decode_audio, to_pcm16
from ..errors import InvalidOption, PluginError, PluginWarning
from ..hookspecs import hookimpl
from ..plugins import pm
from ..registry import Registration, get_registry

#: A 6-second English sentence shipped with rtlab: the clip ``check_backend`` transcribes.
SPEECH_CLIP = Path(__file__).parent / "data" / "fox.ogg"
SPEECH_CLIP_TEXT = "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."

#: Seconds a word may reach outside the audio (codec padding, loose word alignments).
TIME_TOLERANCE = 0.2
#: An option no backend accepts: it must be refused.
UNKNOWN_OPTION = "no_such_option"


@dataclass
class BackendReport:
    """What :func:`check_backend` found: the checks that passed, and why the others failed."""

    backend: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def check(self, name: str, function: Callable[..., Any], *args: Any) -> Any:
        """Run one check: ``function(*args)`` fails by raising (an AssertionError says why).

        Returns what ``function`` returned, or None when the check failed.
        """
        try:
            result = function(*args)
        except AssertionError as failure:
            self.failed.append(f"{name}: {failure}")
        except Exception as error:  # noqa: BLE001 - a crash fails this check, the others still run
            self.failed.append(f"{name}: raised {type(error).__name__}: {error}")
        else:
            self.passed.append(name)
            return result
        return None

    def __str__(self) -> str:
        total = len(self.passed) + len(self.failed)
        if self.failed:
            lines = [f"{self.backend}: {len(self.failed)} of {total} rtlab backend checks failed"]
        else:
            lines = [f"{self.backend}: all {total} rtlab backend checks passed"]
        lines += [f"  FAILED {failure}" for failure in self.failed]
        lines += [f"  passed {name}" for name in self.passed]
        return "\n".join(lines)


def check_backend(
    backend_class: type,
    *,
    options: dict[str, Any] | None = None,
    audio: str | os.PathLike[str] | np.ndarray | None = None,
    expect: list[str] | None = None,
) -> BackendReport:
    """Check that ``backend_class`` keeps rtlab's backend contract.

    It must register (a :class:`~rtlab.backends.Backend` subclass with a ``name``), refuse
    an option it does not accept, build with ``options``, load (twice, harmlessly),
    transcribe the clip, one second of silence and empty audio into valid words (see
    :func:`word_problems`), and stream the clip through a real ``AudioProcessor`` to a
    summary. A backend built with ``max_batch`` above 1 must also give a batch of passes
    the words each gets alone (:func:`check_batch_equivalence`). A class that is not
    registered yet is registered for the duration.

    :param options: backend options, as a user would pass them.
    :param audio: the clip: a path (any format FFmpeg reads) or float32 16 kHz mono samples;
        default :data:`SPEECH_CLIP`.
    :param expect: words the transcript of the clip must contain (case-insensitive).
    :return: the report, when every check passed; otherwise raises AssertionError listing
        every failed check.
    """
    options = dict(options or {})
    clip = load_clip(audio)
    report = BackendReport(getattr(backend_class, "__name__", repr(backend_class)))
    try:
        with registered(backend_class) as registration:
            report.passed.append(f"registers as backend {registration.name!r} (plugin {registration.plugin!r})")
            _check_registered(report, registration, options, clip, expect or [])
    except PluginError as refused:
        report.failed.append(f"registers as a backend: {refused}")
    if report.failed:
        raise AssertionError(str(report))
    return report


def _check_registered(
    report: BackendReport, registration: Registration, options: dict[str, Any], clip: np.ndarray, expect: list[str]
) -> None:
    report.check("refuses an unknown option", _refuses_unknown_option, registration)
    backend = report.check("builds with its options", _build, registration, options)
    if backend is not None:
        backend = report.check("loads, and loads again harmlessly", _load_twice, backend)
    if backend is None:
        return  # nothing to transcribe with
    words = report.check("transcribes the clip", _transcribe, backend, clip)
    if expect and words is not None:
        report.check(f"hears {', '.join(expect)}", _hears, words, expect)
    report.check("transcribes 1 s of silence", _transcribe, backend, np.zeros(SAMPLE_RATE, np.float32))
    report.check("transcribes empty audio", _transcribe, backend, np.zeros(0, np.float32))
    report.check("streams the clip through an AudioProcessor", _stream, registration.name, options, clip)
    if getattr(backend, "max_batch", 1) > 1:
        report.check("gives a batch of passes the words of each pass alone", check_batch_equivalence,
                     backend, batch_requests(clip))  # fmt: skip


def batch_requests(clip: np.ndarray, prompt: str = "Hello there.") -> list[Request]:
    """Passes of several sessions on ``clip`` as :meth:`~rtlab.backends.Backend.transcribe_batch`
    takes them: the whole clip and its first half, unprompted and prompted, and audio too
    short to hear a word (at most 30 s each)."""
    clip = clip[: 30 * SAMPLE_RATE]
    half = clip[: max(len(clip) // 2, SAMPLE_RATE // 2)]
    return [Request(clip), Request(half), Request(half, prompt), Request(clip, prompt), Request(clip[:100])]


def check_batch_equivalence(backend: Any, requests: list[Request]) -> list[list]:
    """``backend.transcribe_batch(requests)`` gives each request the words, times and
    probabilities ``transcribe`` gives it alone (the promise of batching); raises
    AssertionError naming the first request that differs. Returns the words alone."""
    language = backend.default_language()
    if language is not None:
        requests = [r if r.language else Request(r.audio, r.prompt, language) for r in requests]
    alone = [backend.transcribe(r.audio, prompt=r.prompt, language=r.language) for r in requests]
    together = backend.transcribe_batch(requests)
    assert len(together) == len(requests), f"{len(together)} results for {len(requests)} requests"
    for index, (request, mine, batched) in enumerate(zip(requests, alone, together)):
        assert list(batched) == list(mine), (
            f"request {index} ({len(request.audio) / SAMPLE_RATE:.2f} s, prompt {request.prompt!r}) "
            f"batched gave {_text(batched)!r}, alone {_text(mine)!r}"
        )
    return alone


def _text(words: list) -> str:
    return " ".join(str(word.get("text", "")) for word in words)


# -- the checks: each raises AssertionError saying what is wrong ------------------------------


def _refuses_unknown_option(registration: Registration) -> None:
    try:
        get_registry().check_options("backend", registration.name, {UNKNOWN_OPTION: 1})
    except InvalidOption as error:
        assert UNKNOWN_OPTION in str(error), f"the refusal does not name the option: {error}"
        return
    raise AssertionError(f"option {UNKNOWN_OPTION!r} was accepted")


def _build(registration: Registration, options: dict[str, Any]) -> Any:
    get_registry().check_options("backend", registration.name, options)
    return registration.cls(**options)


def _load_twice(backend: Any) -> Any:
    ensure_loaded(backend)  # as rtlab loads a backend
    backend.load()  # a second load must not fail or break the first
    assert backend.loaded, "`loaded` is False after load()"
    return backend


def _transcribe(backend: Any, audio: np.ndarray) -> list:
    words = backend.transcribe(audio, prompt="", language=backend.default_language())
    problems = word_problems(words, len(audio) / SAMPLE_RATE)
    assert not problems, _summarise(problems)
    return words


def _hears(words: list, expect: list[str]) -> None:
    heard = _tokens(" ".join(str(word["text"]) for word in words))
    missing = [word for word in expect if not set(_tokens(word)) <= set(heard)]
    assert not missing, f"{', '.join(map(repr, missing))} not in the transcript {' '.join(heard)!r}"


def _stream(name: str, options: dict[str, Any], clip: np.ndarray) -> None:
    events = _run(_stream_events(name, options, clip))
    last = events[-1] if events else None
    if last is None or last["type"] != "summary":
        ended = last.get("message", last) if last else "no events at all"
        raise AssertionError(f"the stream did not end with a summary: {ended}")
    committed = [word for event in events if event["type"] == "commit" for word in event["words"]]
    problems = word_problems(committed, len(clip) / SAMPLE_RATE)
    assert not problems, "committed " + _summarise(problems)


# -- helpers ------------------------------------------------------------------------------------


def word_problems(words: Any, duration: float) -> list[str]:
    """What breaks the word contract in ``words`` for audio of ``duration`` seconds: a list
    of dicts with a str ``text`` and numbers ``start`` <= ``end`` within the audio, in time
    order (starts never go back). Empty when nothing does."""
    if not isinstance(words, list):
        return [f"returned {type(words).__name__}, not a list of words"]
    problems = []
    previous_start = None
    for index, word in enumerate(words):
        where = f"word {index} {word!r}"
        missing = [key for key in ("text", "start", "end") if not isinstance(word, dict) or key not in word]
        if missing:
            problems.append(f"{where} has no {', '.join(map(repr, missing))}")
            continue
        if not isinstance(word["text"], str):
            problems.append(f"{where}: 'text' is not a str")
        try:
            start, end = float(word["start"]), float(word["end"])
        except (TypeError, ValueError):
            problems.append(f"{where}: 'start' and 'end' must be numbers of seconds")
            continue
        if start > end:
            problems.append(f"{where} ends before it starts")
        if start < -TIME_TOLERANCE or end > duration + TIME_TOLERANCE:
            problems.append(f"{where} lies outside the audio (0 to {duration:.2f} s)")
        if previous_start is not None and start < previous_start:
            problems.append(f"{where} starts before the word before it: words must be in time order")
        previous_start = start
    return problems


def load_clip(audio: str | os.PathLike[str] | np.ndarray | None = None) -> np.ndarray:
    """Float32 16 kHz mono samples of ``audio``: a path (decoded by FFmpeg), samples
    (returned as float32), or None for :data:`SPEECH_CLIP`."""
    if isinstance(audio, np.ndarray):
        return audio.astype(np.float32, copy=False)
    return decode_audio(SPEECH_CLIP if audio is None else audio)


@contextlib.contextmanager
def registered(backend_class: type) -> Iterator[Registration]:
    """``backend_class``'s registration; a class that is not registered yet is registered
    by an inline plugin for the duration (then unregistered, and the registry rebuilt).

    Raises :class:`~rtlab.errors.PluginError` when the registry refuses it (an invalid
    class, or a name another plugin has).
    """
    name = getattr(backend_class, "name", None)
    found = get_registry().entries["backend"].get(name) if isinstance(name, str) else None
    if found is not None and found.cls is backend_class:
        yield found
        return

    class InlinePlugin:
        @hookimpl
        def register_backends(self, register):
            register(backend_class)

    plugin = f"check_backend({getattr(backend_class, '__name__', backend_class)})"
    pm.register(InlinePlugin(), name=plugin)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PluginWarning)  # a clash is reported below
            registry = get_registry(refresh=True)
        for refused in registry.rejected:
            if refused["plugin"] == plugin:
                raise PluginError(refused["reason"])
        yield registry.entries["backend"][name]
    finally:
        pm.unregister(name=plugin)
        get_registry(refresh=True)


async def _stream_events(name: str, options: dict[str, Any], clip: np.ndarray) -> list[dict]:
    """Every event of ``clip`` streamed as raw PCM through an AudioProcessor, simulated clock."""
    # Imported here: rtlab.testing loads with the plugins, and `rtlab plugins` must not
    # import the streaming core.
    from ..core.feeding import feed_bytes
    from ..core.processor import AudioProcessor

    processor = AudioProcessor(backend=name, backend_options=options, decoder="pcm_s16le", clock="simulated")
    try:
        events = await processor.create_tasks()
        feeding = asyncio.ensure_future(feed_bytes(processor, to_pcm16(clip), realtime=False))
        received = [event async for event in events]
        await feeding
        return received
    finally:
        await processor.cleanup()


def _run(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end, also when called from a running event loop (an async test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _tokens(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def _summarise(problems: list[str]) -> str:
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more
