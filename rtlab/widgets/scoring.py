"""A panel's streams scored the way ``rtlab bench`` scores them, into a :class:`BenchRun`.

The same offline reference passes (:mod:`rtlab.eval.offline`), the same
:func:`~rtlab.eval.results.evaluate_stream` and :func:`~rtlab.eval.results.summarize`, and
the same record: a panel's ``results.jsonl`` is a one-file ``rtlab bench`` run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import StreamConfig
from ..eval.bench import BenchRun, resolve_normalizer
from .sources import AudioSource

__all__ = ["ScoredStream", "score_streams", "score_to_end"]


@dataclass
class ScoredStream:
    """What one configuration produced: its events and its processor's lag samples."""

    config: StreamConfig
    events: list[dict[str, Any]]
    lag_samples: list[tuple[float, float]] = field(default_factory=list)


def score_streams(
    source: AudioSource,
    streams: Sequence[ScoredStream],
    *,
    clock: str,
    normalizer: str = "auto",
    wall_seconds: float = 0.0,
    replay_wall_seconds: float = 0.0,
    cost_model: Any = None,
) -> BenchRun:
    """Score ``streams`` (all on ``source``) into a one-file :class:`BenchRun`. Blocking:
    the offline passes transcribe the whole audio once per backend instance.

    Per-word commit latencies need the decoded audio (``source.samples``) and an offline
    pass that succeeds; without them (a processor fed by someone else, a backend that
    fails) WER, first text and RTF are still scored. ``cost_model`` is the ``modeled``
    clock's :class:`~rtlab.core.costs.CostModel`, recorded as ``rtlab bench`` records it.
    Without a reference (``source.reference`` empty) WER is left out (None), not scored
    against no words.
    """
    import time

    from ..core.instances import get_backend
    from ..eval.metrics import environment_info
    from ..eval.offline import offline_transcribe, transcribe_samples
    from ..eval.results import detected_language, evaluate_stream, summarize

    configs = [s.config for s in streams]
    # A stream that detected its language (none asked for, none known of the source) is
    # scored with that language's normalizer, not English's.
    norm = resolve_normalizer(
        normalizer, [s.config.language or source.language or detected_language(s.events) for s in streams]
    )
    run = BenchRun(str(source.path or source.label), configs, clock, norm, False, environment=environment_info(),
                   cost_model=cost_model.describe() if cost_model is not None else None)
    samples = source.samples
    run.audio_seconds = len(samples) / 16000 if samples is not None else 0.0
    started = time.perf_counter()
    offline: dict[tuple, Any] = {}
    for config in configs:
        language = config.language or source.language
        key = (config.model_key, language)
        if samples is None or key in offline:
            continue
        try:
            if source.path is not None:
                offline[key] = offline_transcribe(source.path, config, language=language, audio=samples)
            else:
                offline[key] = transcribe_samples(get_backend(config), samples, language=language)
        except Exception:  # noqa: BLE001 - a backend that failed its stream may fail here too
            offline[key] = None  # that stream is scored without word times
    run.offline_wall_seconds = time.perf_counter() - started
    for stream in streams:
        reference = offline.get((stream.config.model_key, stream.config.language or source.language))
        run.streams.append(evaluate_stream(
            file=str(source.path or source.label), reference=source.reference or "", events=stream.events,
            reference_words=reference.words if reference else None, config=stream.config.to_dict(),
            offline_hypothesis=reference.text if reference else None, normalizer=norm, clock=clock,
            lag_samples=stream.lag_samples,
        ))  # fmt: skip
        if not run.audio_seconds and run.streams[-1].audio_seconds is not None:
            run.audio_seconds = run.streams[-1].audio_seconds  # a failed stream measured none
    for config in configs:
        run.backends[config.label] = get_backend(config).info()
        mine = [s for s in run.streams if s.config["name"] == config.label]
        run.summaries.append({"name": config.label, "config": config.to_dict(), **summarize(mine)})
    if not source.reference:
        _leave_out_wer(run)
    run.replay_wall_seconds = replay_wall_seconds
    run.wall_seconds = wall_seconds + run.offline_wall_seconds
    return run


def _leave_out_wer(run: BenchRun) -> None:
    """Mark every WER of ``run`` undefined: scored against no reference words, a stream
    that committed nothing (one that failed at once, or on silence) gets 0.0%, the best
    WER there is, beside a stream that heard every word at "no WER"."""
    for stream in run.streams:
        stream.wer = dataclasses.replace(stream.wer, value=math.inf)  # undefined: written as None
        if stream.offline_wer is not None:
            stream.offline_wer = dataclasses.replace(stream.offline_wer, value=math.inf)
    for summary in run.summaries:
        for key in ("wer", "offline_wer"):
            if summary.get(key):
                summary[key]["value"] = None


async def score_to_end(source: AudioSource, streams: Sequence[ScoredStream], **options: Any) -> BenchRun:
    """:func:`score_streams` in a worker thread, carried to the end even when the run is
    stopped meanwhile: the streams are over, so stopping waits for their scores and keeps
    them, and leaves no thread scoring behind it (an offline pass cannot be interrupted)."""
    future = asyncio.get_running_loop().run_in_executor(None, lambda: score_streams(source, streams, **options))
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.cancelled():
                raise
            asyncio.current_task().uncancel()
