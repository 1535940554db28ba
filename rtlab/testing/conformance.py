"""Conformance checks for backend and policy plugins, to call from the plugin's own tests.

.. code-block:: python

    from rtlab.testing import check_backend
    from rtlab_echo import EchoBackend


    def test_echo_keeps_the_backend_contract():
        check_backend(EchoBackend, options={"word": "hi"}, expect=["hi"])

:func:`check_policy` does the same for a streaming policy, on rtlab's tone backends.
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
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from ..backends import SAMPLE_RATE, Backend, Request, ensure_loaded
from ..decoders.files import decode_audio, to_pcm16
from ..errors import InvalidOption, PluginError, PluginWarning
from ..hookspecs import hookimpl
from ..options import is_number
from ..plugins import pm
from ..registry import Registration, get_registry
from .tones import tone_vad

#: A 6-second English sentence shipped with rtlab: the clip ``check_backend`` transcribes.
SPEECH_CLIP = Path(__file__).parent / "data" / "fox.ogg"
SPEECH_CLIP_TEXT = "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."

#: Seconds a word may reach outside the audio (codec padding, loose word alignments).
TIME_TOLERANCE = 0.2
#: An option no backend accepts: it must be refused.
UNKNOWN_OPTION = "no_such_option"


@dataclass
class Report:
    """What a check of a plugin's class found: the checks that passed, and why the others
    failed. ``subject`` is the class's name."""

    subject: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: What the checks could not reach, and why (neither passed nor failed).
    unchecked: list[str] = field(default_factory=list)
    #: What kind of plugin class was checked, for the report's first line.
    kind: ClassVar[str] = "plugin"

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
            lines = [f"{self.subject}: {len(self.failed)} of {total} rtlab {self.kind} checks failed"]
        else:
            lines = [f"{self.subject}: all {total} rtlab {self.kind} checks passed"]
        if self.unchecked:
            lines[0] += f"; {len(self.unchecked)} part{'s' * (len(self.unchecked) != 1)} not checked"
        lines += [f"  FAILED {failure}" for failure in self.failed]
        lines += [f"  NOT CHECKED {item}" for item in self.unchecked]
        lines += [f"  passed {name}" for name in self.passed]
        return "\n".join(lines)


class BackendReport(Report):
    """What :func:`check_backend` found."""

    kind = "backend"

    @property
    def backend(self) -> str:
        """The backend class's name."""
        return self.subject


class PolicyReport(Report):
    """What :func:`check_policy` found."""

    kind = "policy"

    @property
    def policy(self) -> str:
        """The policy class's name."""
        return self.subject


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

    def checks(registration: Registration) -> None:
        _check_registered(report, registration, options, clip, expect or [])

    return _checked(report, backend_class, checks)


def _checked(report: Report, plugin_class: type, checks: Callable[[Registration], None]) -> Report:
    """Run ``checks`` on ``plugin_class``'s registration as a ``report.kind`` (registered
    for the duration when it is not yet); the report, or AssertionError listing every
    failed check."""
    try:
        with registered(plugin_class, report.kind) as registration:
            report.passed.append(f"registers as {report.kind} {registration.name!r} (plugin {registration.plugin!r})")
            checks(registration)
    except PluginError as refused:
        report.failed.append(f"registers as a {report.kind}: {refused}")
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
    report.check("says which languages it transcribes (a list of codes, or None)", _languages, backend)
    words = report.check("transcribes the clip", _transcribe, backend, clip)
    if expect and words is not None:
        report.check(f"hears {', '.join(expect)}", _hears, words, expect)
    report.check("transcribes 1 s of silence", _transcribe, backend, np.zeros(SAMPLE_RATE, np.float32))
    report.check("transcribes empty audio", _transcribe, backend, np.zeros(0, np.float32))
    report.check("streams the clip through an AudioProcessor", _stream, registration.name, options, clip)
    if getattr(backend, "max_batch", 1) > 1:
        report.check("gives a batch of passes the words of each pass alone", check_batch_equivalence,
                     backend, batch_requests(clip))  # fmt: skip


def _languages(backend: Backend) -> list[str] | None:
    known = backend.languages()
    if known is None:
        return None
    assert isinstance(known, list) and known and all(isinstance(c, str) and c for c in known), (
        f"languages() returned {known!r}; return a non-empty list of language codes, or None"
    )
    language = backend.default_language()
    assert language is None or language in known, (
        f"default_language() is {language!r}, which languages() does not list ({', '.join(known)})"
    )
    return known


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


#: rtlab's tone backends (exact transcripts of tone-coded words, no model weights): the
#: backends :func:`check_policy` streams on, the first that has what the policy requires.
TONE_BACKENDS = ("test", "test-attention")
#: Clips of :func:`check_policy`: tone-coded sentences (each word 0.3 s, 0.2 s apart).
POLICY_CLIPS = ("alpha bravo charlie delta echo foxtrot golf hotel", "one two three four five six seven eight nine")
#: Seconds of the long tone stream (sentences and pauses) on which a policy's buffer must
#: stay within ``max_buffered_seconds``.
LONG_STREAM_SECONDS = 90.0
#: The option that turns on a policy's voice-activity path (rtlab's controller,
#: :mod:`rtlab.policies.vac`, on LocalAgreement and AlignAtt).
VAD_OPTION = "vad"


def check_policy(
    policy_class: type, *, options: dict[str, Any] | None = None, max_buffered_seconds: float = 35.0
) -> PolicyReport:
    """Check that ``policy_class`` keeps rtlab's policy contract, streamed through real
    ``AudioProcessor``s on rtlab's tone backends (:data:`TONE_BACKENDS`: exact transcripts,
    no model weights) on the ``unaware`` clock.

    It must register (a :class:`~rtlab.policies.Policy` subclass with a ``name``), refuse
    an option it does not accept, be refused a backend without a capability it requires
    when rtlab builds it (in one line naming the capability), and, with ``options``:

    - return a :class:`~rtlab.policies.Step` from ``process_iter`` and ``finish``;
    - commit valid words (see :func:`word_problems`), each after the audio of the words
      committed before it (a committed word is final: never committed again);
    - keep every word of a clip the backend hears exactly, and end with a summary whose
      text is the committed text;
    - hold at most ``max_buffered_seconds`` of audio (``buffered_seconds``) over a
      :data:`LONG_STREAM_SECONDS` stream of sentences and pauses;
    - keep sessions apart: two streams at once on one backend each commit their own words.

    A policy with a ``vad`` option (:data:`VAD_OPTION`) is checked on both of its paths:
    with ``options`` (``vad`` at its default where they leave it out) and with the other
    value (those checks say "with vad=true" or "with vad=false"): the same checks, and, where
    ``vad`` is on, every word of two sentences with a pause between them that ends an
    utterance. Silero VAD hears no speech in tones, so a
    :class:`~rtlab.testing.tones.ToneVAD` stands in for it throughout
    (:func:`~rtlab.testing.tones.tone_vad`). A policy whose ``vad=true`` never asks rtlab's
    VAD (one with a detector of its own) is not checked there: the report lists it as NOT
    CHECKED, and a warning says so.

    A class that is not registered yet is registered for the duration.

    :return: the report, when every check passed; otherwise raises AssertionError listing
        every failed check.
    """
    options = dict(options or {})
    report = PolicyReport(getattr(policy_class, "__name__", repr(policy_class)))

    def checks(registration: Registration) -> None:
        _check_registered_policy(report, registration, options, max_buffered_seconds)

    try:
        return _checked(report, policy_class, checks)
    finally:
        for item in report.unchecked:
            warnings.warn(f"check_policy({report.subject}): not checked: {item}", UserWarning, stacklevel=2)


def _check_registered_policy(
    report: PolicyReport, registration: Registration, options: dict[str, Any], max_buffered_seconds: float
) -> None:
    from ..policies import missing_capabilities

    registry = get_registry()
    policy = registration.cls
    report.check("refuses an unknown option", _refuses_unknown_option, registration)
    able = [name for name in TONE_BACKENDS if not missing_capabilities(policy, registry.get("backend", name))]
    if not able:
        report.failed.append(f"streams on a tone backend: none of {', '.join(TONE_BACKENDS)} provides "
                             f"{', '.join(policy.requires)}")  # fmt: skip
        return
    backend = able[0]
    lacking = [name for name in TONE_BACKENDS if missing_capabilities(policy, registry.get("backend", name))]
    if lacking:
        report.check(f"refuses backend {lacking[0]!r}, which lacks {', '.join(policy.requires)}",
                     _refuses_backend, registration, lacking[0], options)  # fmt: skip
    variants = [("", options)]
    declared = registry.accepted_options("policy", registration.name)
    if VAD_OPTION in declared:
        options = {VAD_OPTION: declared[VAD_OPTION], **options}  # the default named: the path "" runs
        other = options[VAD_OPTION] is not True  # the voice-activity path the options leave out
        variants = [("", options), (f"with {VAD_OPTION}={str(other).lower()}: ", {**options, VAD_OPTION: other})]
    with tone_vad() as vads:
        for prefix, variant in variants:
            config = {"backend": backend, "policy": registration.name, "policy_options": variant}
            heard_before = vads.frames
            found = PolicyReport(report.subject)
            built = _check_streams(found, prefix, config, max_buffered_seconds)
            if built and variant.get(VAD_OPTION) is True and vads.frames == heard_before:
                report.unchecked.append(
                    f"its voice-activity path ({VAD_OPTION}=true): it never asked rtlab.vad's detector, where check_policy "
                    f"puts a tone VAD in Silero VAD's place (Silero hears no speech in tones)"
                )
                if prefix:  # checks of what was not reached say nothing: left out
                    continue
            report.passed += found.passed
            report.failed += found.failed
            if not built:
                break  # the options as given do not build: with the other vad value they say the same


def _check_streams(report: PolicyReport, prefix: str, config: dict[str, Any], max_buffered_seconds: float) -> bool:
    """The stream checks of one set of options, each named after ``prefix``; whether the
    policy built with them (without, nothing streams)."""
    options = config["policy_options"]
    if report.check(f"{prefix}builds with its options on backend {config['backend']!r}", _build_policy, config) is None:
        return False
    report.check(f"{prefix}returns a Step from process_iter and finish", _returns_steps, config)
    for text in POLICY_CLIPS:
        report.check(f"{prefix}commits every word of {text.split()[0]} ... {text.split()[-1]}, once each",
                     _keeps_every_word, config, text)  # fmt: skip
    if options.get(VAD_OPTION) is True:  # an utterance ends in the pause: the controller commits it
        pause = _utterance_pause(config)
        report.check(f"{prefix}commits every word of two sentences {pause:g} s apart, once each",
                     _keeps_every_word, config, " ".join(POLICY_CLIPS), pause)  # fmt: skip
    report.check(f"{prefix}holds at most {max_buffered_seconds:g} s of audio over a {LONG_STREAM_SECONDS:g} s stream",
                 _bounded_buffer, config, max_buffered_seconds)  # fmt: skip
    report.check(f"{prefix}keeps two sessions at once apart", _sessions_apart, config)
    return True


def _utterance_pause(config: dict[str, Any]) -> float:
    """Seconds of a pause that ends an utterance under ``config`` (a second more than its
    ``vad_silence_ms``, or the policy's default for it; 500 ms where it has none)."""
    declared = get_registry().accepted_options("policy", config["policy"]).get("vad_silence_ms")
    silence_ms = config["policy_options"].get("vad_silence_ms", declared)
    return 1.0 + (silence_ms if is_number(silence_ms) else 500) / 1000


# -- the checks: each raises AssertionError saying what is wrong ------------------------------


def _refuses_unknown_option(registration: Registration) -> None:
    try:
        get_registry().check_options(registration.kind, registration.name, {UNKNOWN_OPTION: 1})
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
    _ended_or_raise(events)
    committed = [word for event in events if event["type"] == "commit" for word in event["words"]]
    problems = word_problems(committed, len(clip) / SAMPLE_RATE)
    assert not problems, "committed " + _summarise(problems)


def _refuses_backend(registration: Registration, backend: str, options: dict[str, Any]) -> None:
    registry = get_registry()
    instance = registry.get("backend", backend)()  # unloaded, as when a configuration is checked
    try:
        # Built as rtlab builds a policy: rtlab refuses a backend that lacks what the policy
        # requires before its __init__ runs (a policy need not check its own requires).
        registry.create("policy", registration.name, instance, language=None, **options)
    except InvalidOption as error:
        named = [c for c in registration.cls.requires if c in str(error)]
        assert named, f"the refusal does not name the capability: {error}"
        assert "\n" not in str(error).strip(), f"the refusal is not one line: {error!r}"
        return
    raise AssertionError("it was built on a backend without the capabilities it requires")


def _build_policy(config: dict[str, Any]) -> Any:
    from ..config import StreamConfig

    return StreamConfig(**config).validate()


def _returns_steps(config: dict[str, Any]) -> None:
    """Called directly, so that a wrong return type is named here, not found by the processor
    as an AttributeError."""
    from ..policies import Step
    from .tones import tone_words

    registry = get_registry()
    backend = ensure_loaded(registry.create("backend", config["backend"]))
    policy = registry.create("policy", config["policy"], backend, language=None, **config["policy_options"])
    policy.insert_audio(tone_words(POLICY_CLIPS[0])[0])
    for method in ("process_iter", "finish"):
        step = getattr(policy, method)()
        assert isinstance(step, Step), (
            f"{method}() returned {type(step).__name__}, not a Step: "
            f"return rtlab.policies.Step(committed=[...], partial=[...])"
        )


def _keeps_every_word(config: dict[str, Any], text: str, pause: float | None = None) -> None:
    """Every word of ``text`` committed once; with ``pause``, the sentences of
    :data:`POLICY_CLIPS` (``text``) said with that many seconds of silence after each."""
    from .tones import tone_words

    if pause is None:
        audio, _ = tone_words(text)
    else:
        silence = np.zeros(int(pause * SAMPLE_RATE), np.float32)
        audio = np.concatenate([piece for clip in POLICY_CLIPS for piece in (tone_words(clip)[0], silence)])
    events = _run(_policy_stream_events(config, [audio]))[0]
    committed = _committed_or_raise(events, len(audio) / SAMPLE_RATE)
    heard = " ".join(_tokens(" ".join(str(w["text"]) for w in committed)))
    assert heard == text, f"committed {heard!r} for {text!r}"
    summary = _tokens(str(events[-1].get("text", "")))
    assert summary == heard.split(), f"the summary says {' '.join(summary)!r}, the commits {heard!r}"


def _bounded_buffer(config: dict[str, Any], limit: float) -> None:
    from .tones import tone_words

    pieces, seconds, index = [], 0.0, 0
    while seconds < LONG_STREAM_SECONDS:
        sentence, _ = tone_words(POLICY_CLIPS[index % len(POLICY_CLIPS)])
        pause = np.zeros(int(SAMPLE_RATE * (0.5 + index % 3)), np.float32)  # 0.5, 1.5, 2.5 s
        pieces += [sentence, pause]
        seconds += (len(sentence) + len(pause)) / SAMPLE_RATE
        index += 1
    audio = np.concatenate(pieces)
    held: list[float] = []
    events = _run(_policy_stream_events(config, [audio], held))[0]
    _ended_or_raise(events)
    most = max(held, default=0.0)
    assert most <= limit, f"it held {most:.1f} s of audio (at {held.index(most)} of {len(held)} events)"


def _sessions_apart(config: dict[str, Any]) -> None:
    from .tones import tone_words

    clips = [tone_words(text)[0] for text in POLICY_CLIPS]
    for events, text, clip in zip(_run(_policy_stream_events(config, clips)), POLICY_CLIPS, clips):
        heard = " ".join(_tokens(" ".join(str(w["text"]) for w in _committed_or_raise(events, len(clip) / SAMPLE_RATE))))
        assert heard == text, f"the session of {text!r} committed {heard!r}"


def _ended_or_raise(events: list[dict]) -> None:
    last = events[-1] if events else None
    if last is None or last["type"] != "summary":
        ended = last.get("message", last) if last else "no events at all"
        raise AssertionError(f"the stream did not end with a summary: {ended}")


def _committed_or_raise(events: list[dict], duration: float) -> list[dict]:
    """The committed words of a stream that ended with a summary, checked: valid words,
    each after the audio of the words before it."""
    _ended_or_raise(events)
    committed = [word for event in events if event["type"] == "commit" for word in event["words"]]
    problems = word_problems(committed, duration)
    assert not problems, "committed " + _summarise(problems)
    for before, word in zip(committed, committed[1:]):
        assert float(word["start"]) >= float(before["end"]) - TIME_TOLERANCE, (
            f"committed {word['text']!r} ({word['start']}-{word['end']} s) over the audio of "
            f"{before['text']!r} ({before['start']}-{before['end']} s), committed before it"
        )
    return committed


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
        if not isinstance(word, dict):
            problems.append(f"{where} is a {type(word).__name__}, not a dict {{'text': str, 'start': s, 'end': s}}")
            continue
        missing = [key for key in ("text", "start", "end") if key not in word]
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
def registered(plugin_class: type, kind: str = "backend") -> Iterator[Registration]:
    """``plugin_class``'s registration as a ``kind`` (``backend`` or ``policy``); a class
    that is not registered yet is registered by an inline plugin for the duration (then
    unregistered, and the registry rebuilt).

    Raises :class:`~rtlab.errors.PluginError` when the registry refuses it (an invalid
    class, or a name another plugin has).
    """
    if kind not in ("backend", "policy"):
        raise ValueError(f"kind must be 'backend' or 'policy', not {kind!r}")
    name = getattr(plugin_class, "name", None)
    found = get_registry().entries[kind].get(name) if isinstance(name, str) else None
    if found is not None and found.cls is plugin_class:
        yield found
        return

    class InlinePlugin:
        if kind == "backend":
            @hookimpl
            def register_backends(self, register):
                register(plugin_class)
        else:
            @hookimpl
            def register_policies(self, register):
                register(plugin_class)

    plugin = f"check_{kind}({getattr(plugin_class, '__name__', plugin_class)})"
    pm.register(InlinePlugin(), name=plugin)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PluginWarning)  # a clash is reported below
            registry = get_registry(refresh=True)
        for refused in registry.rejected:
            if refused["plugin"] == plugin:
                raise PluginError(refused["reason"])
        yield registry.entries[kind][name]
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


async def _policy_stream_events(
    config: dict[str, Any], clips: list[np.ndarray], held: list[float] | None = None
) -> list[list[dict]]:
    """Every event of each of ``clips``, streamed at once as raw PCM through an
    AudioProcessor per clip (``config``'s backend, policy and options), unaware clock.
    ``held`` gets the first session's ``buffered_seconds`` after each of its events."""
    from ..config import StreamConfig
    from ..core.feeding import feed_bytes
    from ..core.processor import AudioProcessor

    processors = [AudioProcessor(StreamConfig(**config, decoder="pcm_s16le"), clock="unaware") for _ in clips]

    async def events_of(index: int, processor: AudioProcessor, clip: np.ndarray) -> list[dict]:
        events = await processor.create_tasks()
        feeding = asyncio.ensure_future(feed_bytes(processor, to_pcm16(clip), realtime=False))
        received = []
        async for event in events:
            received.append(event)
            if held is not None and index == 0 and processor.policy is not None:
                held.append(float(processor.policy.buffered_seconds))
        await feeding
        return received

    try:
        return list(await asyncio.gather(*(events_of(i, p, c) for i, (p, c) in enumerate(zip(processors, clips)))))
    finally:
        for processor in processors:
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
