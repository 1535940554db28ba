"""Replay one audio through several configurations at once, in one process, on one clock.

A configuration is a :class:`~rtlab.config.StreamConfig`. :func:`replay_async` starts one
:class:`~rtlab.core.processor.AudioProcessor` per configuration, feeds all of them the same
decoded audio concurrently, collects every event and the lag samples of each, and returns
one :class:`StreamRun` per configuration.

Clock modes (see :mod:`rtlab.core.clock`):

* ``simulated`` (default): audio is fed as fast as the processors take it. Each processor
  keeps its own virtual clock, which counts audio time plus *its own* measured compute.
  Every configuration streams at once; the scheduler's CPU slots (one per core, see
  :mod:`rtlab.core.scheduler`) let no more passes run at a time than there are cores, so that
  no pass is slowed down by another's threads and each pass's measured compute is what it
  would be alone, while a two-core machine runs two configurations' passes side by side.
  The configuration furthest behind in the audio gets the next free core, so all of them
  move through the audio at about the same pace and no core idles at the end.
* ``modeled`` and ``unaware``: fed like ``simulated``, but a pass advances its clock by
  the compute a cost model predicts (``cost_model``: a :class:`~rtlab.core.costs.CostModel`
  or its file; default: rtlab's reference CPU), or by nothing. No measured time counts, so
  passes hold no CPU slot and use every core, and every run gives the same events (but for
  ``measured_compute_seconds``).
* ``wall``: every configuration streams at once; one pacing loop starts all feeders at the
  same instant and sends each chunk of ``chunk_seconds`` when its audio starts, in real
  time. Latencies then include the waiting of sessions queued behind each other on a
  shared backend and the CPU they share, as on a server.

Determinism: with a deterministic backend whose compute per pass stays below the policy's
``min_chunk``, two simulated replays, or one configuration alone and among others, commit
the same words at the same points of the audio; ``emitted_at`` still carries each pass's
measured compute, so it varies by that jitter (microseconds to milliseconds). When a pass
takes longer than ``min_chunk``, the next pass starts when the clock says the last one
ended, so the chunking, and with it the transcript, follows the measured compute time:
the ``modeled`` clock is the one whose words do not move.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import MAX_BATCH, SAMPLE_RATE
from ..config import StreamConfig
from ..core.clock import MEASURED_MODES, check_clock
from ..core.costs import load_cost_model
from ..core.events import join_words
from ..core.feeding import check_chunk_seconds
from ..core.memo import PassMemo
from ..core.processor import AudioProcessor
from ..errors import RtlabError
from ..options import is_whole_number
from ..registry import get_registry

__all__ = ["StreamRun", "replay", "replay_async"]


# --------------------------------------------------------------------------- replay


@dataclass
class StreamRun:
    """What one configuration produced on one replayed audio.

    ``events`` is every event in order (the last one is the summary, or an error);
    ``lag_samples`` the processor's ``(emitted_at, lag seconds)`` samples; ``error`` the
    error event's message when the stream failed.
    """

    configuration: StreamConfig
    clock: str
    events: list[dict[str, Any]] = field(default_factory=list)
    lag_samples: list[tuple[float, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def text(self) -> str:
        """The committed text (from the summary event, or the commits when it failed)."""
        summary = self.summary
        if summary is not None:
            return str(summary.get("text", ""))
        return join_words(w for e in self.events if e["type"] == "commit" for w in e["words"])

    @property
    def summary(self) -> dict[str, Any] | None:
        """The summary event, or ``None`` when the stream did not end normally."""
        last = self.events[-1] if self.events else None
        return last if last is not None and last.get("type") == "summary" else None


def _as_samples(audio: str | os.PathLike[str] | np.ndarray) -> np.ndarray:
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (1-D) 16 kHz float32 samples, got shape {audio.shape}")
        return audio.astype(np.float32, copy=False)
    from ..decoders.files import decode_audio

    return decode_audio(Path(audio))


async def replay_async(
    audio: str | os.PathLike[str] | np.ndarray,
    configurations: Iterable[StreamConfig],
    *,
    clock: str = "simulated",
    chunk_seconds: float = 0.1,
    progress: Callable[[float], None] | None = None,
    isolate_backends: bool = False,
    on_event: Callable[[int, dict[str, Any]], None] | None = None,
    cost_model: Any = None,
    reuse_passes: bool | PassMemo = True,
    batch: int | None = None,
) -> list[StreamRun]:
    """Stream ``audio`` (a file path, or 16 kHz mono float32 samples) through every
    configuration concurrently; one :class:`StreamRun` per configuration, in order.

    The file is decoded once (one FFmpeg call) and fed to each processor as raw PCM in
    chunks of ``chunk_seconds``. ``progress``, if given, is called with the seconds of
    audio processed so far (the mean over the configurations) about four times a second.
    ``on_event``, if given, is called on the event loop with the configuration's index and
    each of its events as it arrives, for a live view (:mod:`rtlab.widgets`); an exception
    it raises ends the replay. A configuration whose stream fails keeps its error in its
    run; the others go on. Starting fails as a whole: if any model cannot load, every
    processor is cleaned up and the error is raised.

    ``isolate_backends`` replays the configurations of one backend instance together, and
    one instance after another (default: off; every configuration streams at the same
    time, as sessions on a server would, and the CPU slots keep their passes from
    slowing each other down).

    ``reuse_passes`` (``modeled`` and ``unaware`` clocks only): a backend call that another
    configuration already made with the same audio, prompt and language is answered with
    its words instead of running the model again (see :mod:`rtlab.core.memo`; the events
    are the same). True: one :class:`~rtlab.core.memo.PassMemo` for this replay; a
    ``PassMemo``: that one (its ``hits`` and ``misses`` count the calls); False: none.

    ``batch`` (``modeled`` and ``unaware`` clocks only): the configurations whose backend
    batches (takes a ``max_batch`` option) and that set no ``max_batch`` of their own run
    with ``max_batch=batch``: passes of the replay's streams that wait at the same time
    share one model call (see :mod:`rtlab.core.batching`). The replay takes less CPU; the
    events are the same as without, for a backend whose batched calls give the words its
    single calls give (:func:`rtlab.testing.conformance.check_backend` checks that on its
    inputs). The runs keep the configurations as given.
    """
    check_clock(clock)
    _check_batch(batch, clock)
    if clock == "modeled":
        cost_model = load_cost_model(cost_model)  # once for every configuration
    check_chunk_seconds(chunk_seconds)
    configs = list(configurations)
    if not configs:
        raise ValueError("replay needs at least one configuration")
    samples = _as_samples(audio)
    from ..decoders.files import to_pcm16

    pcm = to_pcm16(samples)
    step = max(2, int(chunk_seconds * SAMPLE_RATE) * 2)
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    # The audio is decoded once and fed as raw PCM, whatever decoder the configuration names.
    memo = None
    if clock not in MEASURED_MODES and reuse_passes is not False:
        memo = reuse_passes if isinstance(reuse_passes, PassMemo) else PassMemo()
    processors = [
        AudioProcessor(_as_run(c, batch), clock=clock, cost_model=cost_model, pass_memo=memo) for c in configs
    ]
    runs = [StreamRun(c, clock) for c in configs]
    groups = _backend_groups(configs) if isolate_backends else [list(range(len(configs)))]
    reporter = None
    if progress is not None:
        reporter = asyncio.create_task(_report_progress(processors, progress))
    try:
        for group in groups:
            await _stream_together(
                [processors[i] for i in group], [runs[i] for i in group], chunks, clock,
                group, on_event,
            )  # fmt: skip
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        await asyncio.gather(*(p.cleanup() for p in processors), return_exceptions=True)
    if progress is not None:
        progress(_mean_processed(processors))
    for processor, run in zip(processors, runs):
        run.lag_samples = [(float(t), float(lag)) for t, lag in processor.lag_samples]
        error = next((e for e in run.events if e.get("type") == "error"), None)
        if error is not None:
            run.error = f"{error.get('error')}: {error.get('message')}"
    return runs


def _check_batch(batch: int | None, clock: str) -> None:
    if batch is None:
        return
    if not is_whole_number(batch) or not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch must be a whole number from 1 to {MAX_BATCH}, not {batch!r}")
    if clock in MEASURED_MODES:
        raise ValueError(
            f"batch={batch} needs an unmeasured clock (modeled or unaware): on the {clock} clock a "
            "pass's measured compute is its latency, and a batch's compute is not one pass's "
            "(give the backend a max_batch option to batch on purpose)"
        )


def _as_run(config: StreamConfig, batch: int | None) -> StreamConfig:
    """``config`` as its processor runs it: fed raw PCM, and with ``max_batch=batch`` where
    its backend batches and it sets no ``max_batch`` itself."""
    config = config.replace(decoder="pcm_s16le", decoder_options={})
    if batch is None or "max_batch" in config.backend_options:
        return config
    if "max_batch" not in get_registry().accepted_options("backend", config.backend):
        return config
    return config.replace(backend_options={**config.backend_options, "max_batch": batch})


def _backend_groups(configs: Sequence[StreamConfig]) -> list[list[int]]:
    """Indexes of the configurations grouped by shared backend instance, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(config.model_key, []).append(index)
    return list(groups.values())


async def _stream_together(
    processors: Sequence[AudioProcessor],
    runs: Sequence[StreamRun],
    chunks: Sequence[bytes],
    clock: str,
    indexes: Sequence[int],
    on_event: Callable[[int, dict[str, Any]], None] | None,
) -> None:
    """Start ``processors``, feed each every chunk, collect their events until they end;
    ``indexes`` are the configurations' places in the replay (what ``on_event`` gets)."""
    started = await asyncio.gather(*(p.create_tasks() for p in processors), return_exceptions=True)
    failures = [s for s in started if isinstance(s, BaseException)]
    if failures:
        raise failures[0]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    chunk_seconds = len(chunks[0]) / 2 / SAMPLE_RATE if chunks else 0.0
    if clock == "wall":
        # Chunk i holds the audio of [i, i+1) * chunk_seconds: like a microphone, it is sent
        # once that audio has been played, and every clock starts at the shared instant t0.
        for processor in processors:
            processor.clock.start()

    async def feed(processor: AudioProcessor) -> None:
        for index, chunk in enumerate(chunks):
            if clock == "wall":
                # Every feeder paces against the same start instant: one clock for all.
                delay = t0 + (index + 1) * chunk_seconds - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                await processor.process_audio(chunk)
            except RtlabError:
                return  # the processor failed; its error event ends its stream
        await processor.finish()

    async def collect(processor: AudioProcessor, run: StreamRun, index: int) -> None:
        async for event in processor.events:
            run.events.append(event)
            if on_event is not None:
                on_event(index, event)

    tasks = [asyncio.create_task(feed(p)) for p in processors]
    tasks += [asyncio.create_task(collect(p, r, i)) for p, r, i in zip(processors, runs, indexes)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def _mean_processed(processors: Sequence[AudioProcessor]) -> float:
    return sum(p.audio_seconds for p in processors) / len(processors)


async def _report_progress(processors: Sequence[AudioProcessor], progress: Callable[[float], None]) -> None:
    while True:
        progress(_mean_processed(processors))
        await asyncio.sleep(0.25)


def replay(
    audio: str | os.PathLike[str] | np.ndarray,
    configurations: Iterable[StreamConfig],
    *,
    clock: str = "simulated",
    chunk_seconds: float = 0.1,
    progress: Callable[[float], None] | None = None,
    isolate_backends: bool = False,
    on_event: Callable[[int, dict[str, Any]], None] | None = None,
    cost_model: Any = None,
    reuse_passes: bool | PassMemo = True,
    batch: int | None = None,
) -> list[StreamRun]:
    """Blocking :func:`replay_async` for scripts. In a notebook (where an event loop is
    already running) use ``await replay_async(...)`` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("an event loop is running here (a notebook?): use 'await replay_async(...)'")
    return asyncio.run(
        replay_async(audio, configurations, clock=clock, chunk_seconds=chunk_seconds,
                     progress=progress, isolate_backends=isolate_backends, on_event=on_event,
                     cost_model=cost_model, reuse_passes=reuse_passes, batch=batch)
    )
