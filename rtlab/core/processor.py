"""AudioProcessor: one session = one processor = one decoder (one FFmpeg process).

State machine: IDLE → RUNNING → STOPPED. ``create_tasks()`` is idempotent while RUNNING
and refused once STOPPED (processors are single-use); ``cleanup()`` is idempotent.
Models are shared: every processor with the same backend options uses one loaded model.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

import numpy as np

from ..backends import SAMPLE_RATE, check_options, ensure_loaded, get_backend
from .clock import SessionClock
from ..errors import ProcessorNotRunning, ProcessorStopped, RtlabError, UnknownBackend
from .events import EventStream, commit_event, error_event, join_words, partial_event
from ..policies import Step
from ..registry import get_registry
from .scheduler import blas_threads, scheduler_for

DEFAULT_BACKEND = "faster-whisper"
DEFAULT_POLICY = "local-agreement"
# How long a pass waits for the event loop to hand it the audio that arrived while it queued.
LATE_TAKE_TIMEOUT = 1.0
# A pass that took in more than this many min_chunks of new audio means the stream is behind.
BEHIND_FACTOR = 1.5


class AudioProcessor:
    """Streams encoded audio of one session through a decoder, a policy and a backend.

    >>> processor = AudioProcessor()                 # faster-whisper, tiny.en, LocalAgreement-2
    >>> events = await processor.create_tasks()      # IDLE -> RUNNING
    >>> await processor.process_audio(chunk)         # any number of times, any chunk size
    >>> await processor.finish()                     # flush: tail commit, summary, end
    >>> async for event in events: ...               # consume concurrently

    :param backend: registered backend name. :param model: the backend's ``model`` option.
    :param policy: registered policy name. :param language: None = the backend's default.
    :param decoder: ``"ffmpeg"`` for encoded audio, ``"pcm_s16le"`` for raw PCM.
    :param clock: ``"wall"`` or ``"simulated"`` (see :mod:`rtlab.core.clock`).
    :param max_buffered_seconds: decoded audio waiting for the policy, at most.
    """

    def __init__(
        self,
        backend: str = DEFAULT_BACKEND,
        *,
        model: str | None = None,
        policy: str = DEFAULT_POLICY,
        language: str | None = None,
        decoder: str = "ffmpeg",
        clock: str = "wall",
        backend_options: dict[str, Any] | None = None,
        policy_options: dict[str, Any] | None = None,
        decoder_options: dict[str, Any] | None = None,
        max_events: int = 1000,
        max_buffered_seconds: float = 30.0,
    ) -> None:
        registry = get_registry()
        try:
            backend_cls = registry.get("backend", backend)
        except UnknownBackend as error:
            if backend == DEFAULT_BACKEND:
                raise UnknownBackend(
                    f"{error} Install the default backend: pip install -e plugins/rtlab-faster-whisper"
                ) from None
            raise
        self.backend_name = backend
        self.backend_options = dict(backend_options or {})
        if model is not None:
            self.backend_options["model"] = model
        # Every name and option is checked here, before any work starts (get_backend
        # checks backend options again, ignoring None values as it does here).
        check_options(
            backend_cls, "backend", {k: v for k, v in self.backend_options.items() if v is not None},
            registry.entries["backend"][backend].plugin,
        )
        self.policy_cls = registry.get("policy", policy)
        self.policy_options = dict(policy_options or {})
        check_options(
            self.policy_cls, "policy", {**self.policy_options, "language": language},
            registry.entries["policy"][policy].plugin,
        )
        self.decoder_cls = registry.get("decoder", decoder)
        self.decoder_options = dict(decoder_options or {})
        check_options(
            self.decoder_cls, "decoder", self.decoder_options, registry.entries["decoder"][decoder].plugin
        )
        self.language = language
        self.clock = SessionClock(clock)
        self.max_buffered_samples = int(max_buffered_seconds * SAMPLE_RATE)
        self.state = "IDLE"
        self._holds_blas = False
        self.backend = None
        self.policy = None
        self.decoder = None
        self.events = EventStream(max_events)
        self._start_lock = asyncio.Lock()
        self._cleanup_lock = asyncio.Lock()
        self._final_event: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task] = []
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._audio_changed = asyncio.Condition()
        self._input_ended = False
        self._received_samples = 0
        self._processed_samples = 0
        self._processed_at_last_pass = 0
        self.compute_seconds = 0.0
        self.lag_samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=10_000)
        self.committed_words: list[dict] = []
        self._last_partial = ""
        self.error: RtlabError | Exception | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def create_tasks(self) -> EventStream:
        """Load the model (shared), start the decoder and the tasks; return the events.

        Idempotent while RUNNING (the same iterator, nothing new started). Raises
        :class:`~rtlab.errors.ProcessorStopped` once the processor has stopped.
        """
        async with self._start_lock:
            if self.state == "RUNNING":
                return self.events
            if self.state == "STOPPED":
                raise ProcessorStopped(
                    "this AudioProcessor has stopped; create a new AudioProcessor for a new stream"
                )
            try:
                self.backend = get_backend(self.backend_name, **self.backend_options)
                await asyncio.get_running_loop().run_in_executor(None, ensure_loaded, self.backend)
                self._refuse_if_cleaned_up()
                language = self.language or self.backend.default_language()
                self.policy = self.policy_cls(self.backend, language=language, **self.policy_options)
                self.decoder = self.decoder_cls(**self.decoder_options)
                await self.decoder.start()
                self._refuse_if_cleaned_up()
            except BaseException:
                await self.cleanup()
                raise
            self.scheduler = scheduler_for(self.backend)
            self.state = "RUNNING"
            blas_threads.acquire()  # one BLAS thread per pass (see rtlab.core.scheduler)
            self._holds_blas = True
            self._tasks = [
                asyncio.create_task(self._read_pcm(), name="rtlab-read-pcm"),
                asyncio.create_task(self._transcribe(), name="rtlab-transcribe"),
            ]
            return self.events

    def _refuse_if_cleaned_up(self) -> None:
        # cleanup() may run while create_tasks() awaits (a client that disconnects while
        # the model loads): going on would start a decoder nobody will ever stop.
        if self.state == "STOPPED":
            raise ProcessorStopped(
                "this AudioProcessor was cleaned up while it was starting; "
                "create a new AudioProcessor for a new stream"
            )

    async def process_audio(self, data: bytes) -> None:
        """Feed encoded audio (chunks of any size); waits when the pipeline is full.

        After a decoding failure the processor is STOPPED and the failure is the last
        event of the stream; feeding more raises :class:`~rtlab.errors.ProcessorStopped`.
        """
        if self.state == "IDLE":
            raise ProcessorNotRunning("call 'await processor.create_tasks()' before sending audio")
        if self.state == "STOPPED":
            raise ProcessorStopped("this AudioProcessor has stopped; create a new one")
        self.clock.start()
        try:
            await self.decoder.write(data)
        except RtlabError as error:
            await self._fail(error)

    async def finish(self) -> None:
        """End of input: the policy commits the tail, a summary follows, the stream ends."""
        if self.state == "STOPPED":
            await self.cleanup()  # returns once a cleanup in progress (after a failure) is done
        if self.state != "RUNNING":
            return
        self.clock.start()
        with contextlib.suppress(RtlabError):
            await self.decoder.end_input()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.cleanup()

    async def cleanup(self) -> None:
        """Cancel the tasks, stop the decoder, release buffers. Idempotent.

        When it returns, everything is released, also when another cleanup (e.g. after a
        failure inside a task) was already in progress.
        """
        self.state = "STOPPED"
        async with self._cleanup_lock:
            await self._release()

    async def _release(self) -> None:
        current = asyncio.current_task()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.decoder is not None:
            await self.decoder.stop()
        if self._holds_blas:
            self._holds_blas = False
            blas_threads.release()
        self._pending = []
        self._pending_samples = 0
        self.policy = None
        # After a failure the error is the final event: published only now, so that a
        # consumer who sees the end of the stream finds everything already stopped.
        await self.events.close(self._final_event)

    # -- the two tasks --------------------------------------------------------------

    async def _read_pcm(self) -> None:
        try:
            while self.state == "RUNNING":
                pcm = await self.decoder.read()
                async with self._audio_changed:
                    if pcm is None:
                        self._input_ended = True
                        self._audio_changed.notify_all()
                        return
                    # Backpressure: stop reading (FFmpeg then stops reading its input).
                    await self._audio_changed.wait_for(
                        lambda: self._pending_samples < self.max_buffered_samples
                        or self.state != "RUNNING"
                    )
                    self._pending.append(pcm)
                    self._pending_samples += len(pcm)
                    self._received_samples += len(pcm)
                    self._audio_changed.notify_all()
        except Exception as error:  # RtlabError, or a decoder bug: report it, never hang
            await self._fail(error)

    async def _transcribe(self) -> None:
        try:
            while self.state == "RUNNING":
                if self.clock.simulated:
                    pcm = await self._next_audio()
                    if pcm is None:
                        break
                    self.policy.insert_audio(pcm)
                    if self._input_ended and self._pending_samples == 0:
                        break  # the last audio: one final pass in finish() instead of two
                    # The configuration furthest behind in the audio goes first (see
                    # rtlab.core.scheduler): in a replay they all keep pace, and no core idles.
                    step, seconds = await self.scheduler.submit(
                        self.policy.process_iter, priority=self.audio_seconds
                    )
                else:
                    if not await self._audio_due():
                        break
                    if self._input_ended:
                        pcm = await self._take_due()
                        if pcm is not None:
                            self.policy.insert_audio(pcm)
                        break  # the last audio: one final pass in finish() instead of two
                    loop = asyncio.get_running_loop()
                    step, seconds = await self.scheduler.submit(self._late_pass, loop)
                await self._emit(step, seconds)
            if self.state == "RUNNING":
                priority = self.audio_seconds if self.clock.simulated else None
                step, seconds = await self.scheduler.submit(self.policy.finish, priority=priority)
                await self._emit(step, seconds)
                await self.events.close(self._summary())
        except asyncio.CancelledError:
            raise
        except RtlabError as error:
            await self._fail(error)
        except Exception as error:  # a backend or policy bug: report it, never hang
            await self._fail(error)

    def _late_pass(self, loop: asyncio.AbstractEventLoop):
        """A pass that takes its audio when it starts, on the backend's thread.

        Sessions take turns on one model: a pass may wait in the scheduler's queue for
        other sessions' passes. Audio that arrives meanwhile goes into this pass rather
        than the next one, so words are seen one queue wait sooner. (Wall clock only: on
        the simulated clock a queue wait is not time.)"""
        future = asyncio.run_coroutine_threadsafe(self._take_due(), loop)
        try:
            pcm = future.result(timeout=LATE_TAKE_TIMEOUT)
        except Exception:  # the loop is busy, closing or gone: pass over what is there
            future.cancel()
            pcm = None
        if self.state != "RUNNING":
            return Step(committed=[], partial=[])  # stopped while it queued: no pass wasted
        if pcm is not None:
            self.policy.insert_audio(pcm)
        return self.policy.process_iter()

    async def _audio_due(self) -> bool:
        """Wall clock: wait until ``min_chunk`` seconds of new audio arrived (or a full
        buffer, or the end); False when the processor stopped or nothing is left."""
        target = self._processed_samples + int(self.policy.min_chunk * SAMPLE_RATE)
        async with self._audio_changed:
            await self._audio_changed.wait_for(lambda: self._audio_arrived(target))
            return self.state == "RUNNING" and self._pending_samples > 0

    def _audio_arrived(self, target: int) -> bool:
        """Whether a pass is due: ``target`` samples received, a full PCM buffer, the end of
        the input, or a stopped processor. A full buffer counts as a chunk: _read_pcm stops
        at max_buffered_samples, so waiting for more (min_chunk > max_buffered_seconds)
        would deadlock."""
        return (
            self._received_samples >= target
            or self._pending_samples >= self.max_buffered_samples
            or self._input_ended
            or self.state != "RUNNING"
        )

    async def _take_due(self) -> np.ndarray | None:
        """Wall clock: everything received and not yet taken."""
        async with self._audio_changed:
            if self.state != "RUNNING" or self._pending_samples == 0:
                return None
            return self._take(self._pending_samples)

    def _take(self, samples: int) -> np.ndarray:
        """The first ``samples`` of the pending audio (call with ``_audio_changed`` held)."""
        pcm = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        taken, rest = pcm[:samples], pcm[samples:]
        self._pending = [rest] if len(rest) else []
        self._pending_samples = len(rest)
        self._processed_samples += len(taken)
        self._audio_changed.notify_all()
        return taken

    async def _next_audio(self) -> np.ndarray | None:
        """Simulated clock: wait for ``min_chunk`` seconds of new audio (or the end), then
        take the audio up to the virtual time, which first idles forward to when the chunk
        would have arrived."""
        min_chunk = int(self.policy.min_chunk * SAMPLE_RATE)
        target = max(self._processed_samples + min_chunk, int(self.clock.now() * SAMPLE_RATE))
        async with self._audio_changed:
            await self._audio_changed.wait_for(lambda: self._audio_arrived(target))
            if self.state != "RUNNING" or self._pending_samples == 0:
                return None
            arrived = min(target, self._received_samples)
            self.clock.wait_for_audio(arrived / SAMPLE_RATE)
            return self._take(arrived - self._processed_samples)

    async def _emit(self, step, compute_seconds: float) -> None:
        self.compute_seconds += compute_seconds
        self.clock.add_compute(compute_seconds)
        now = self.clock.now()
        arrived = self._received_samples if not self.clock.simulated else min(
            self._received_samples, int(now * SAMPLE_RATE)
        )
        lag = max(0.0, (arrived - self._processed_samples) / SAMPLE_RATE)
        self.lag_samples.append((now, lag))
        if self.policy is not None:
            # Behind: audio is waiting, or this pass had to take in much more than
            # min_chunk because it waited its turn behind other sessions' passes (a
            # pass that takes its audio late leaves no lag, but the words still waited).
            # The policy then keeps its buffer short, so that every pass costs less.
            taken = (self._processed_samples - self._processed_at_last_pass) / SAMPLE_RATE
            self.policy.behind = lag > self.policy.min_chunk or taken > BEHIND_FACTOR * self.policy.min_chunk
        self._processed_at_last_pass = self._processed_samples
        if step.committed:
            event = commit_event(step.committed, now)
            self.committed_words.extend(event["words"])
            await self.events.put(event)
        partial = join_words(step.partial)
        if partial != self._last_partial:
            self._last_partial = partial
            await self.events.put(partial_event(step.partial, now))

    async def fail(self, error: Exception) -> None:
        """Stop the session with ``error`` as the last event (e.g. the audio source broke)."""
        await self._fail(error)

    async def _fail(self, error: Exception) -> None:
        if self.state == "STOPPED":
            return  # already stopping: cleaned up on purpose, or an earlier failure wins
        self.error = error
        code = getattr(error, "code", "internal_error")
        message = str(error) if isinstance(error, RtlabError) else f"{type(error).__name__}: {error}"
        self._final_event = error_event(code, message, self.clock.now())
        self.state = "STOPPED"
        async with self._audio_changed:
            self._audio_changed.notify_all()
        await self.cleanup()

    # -- measurements -----------------------------------------------------------------

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio transcribed so far."""
        return self._processed_samples / SAMPLE_RATE

    @property
    def lag(self) -> float:
        """Audio received but not yet transcribed, in seconds (latest sample)."""
        return self.lag_samples[-1][1] if self.lag_samples else 0.0

    def _summary(self) -> dict[str, Any]:
        return {
            "type": "summary",
            "text": join_words(self.committed_words),
            "audio_seconds": round(self.audio_seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "rtf": round(self.compute_seconds / self.audio_seconds, 4) if self.audio_seconds else None,
            "emitted_at": round(self.clock.now(), 4),
        }

    @property
    def metrics(self) -> dict[str, Any]:
        """Per-processor measurements: audio, compute, RTF, lag, decoder start-up."""
        return {
            "state": self.state,
            "audio_seconds": self.audio_seconds,
            "compute_seconds": self.compute_seconds,
            "rtf": self.compute_seconds / self.audio_seconds if self.audio_seconds else None,
            "lag": self.lag,
            "lag_samples": list(self.lag_samples),
            "dropped_partials": self.events.dropped_partials,
            "first_pcm_latency": getattr(self.decoder, "first_pcm_latency", None),
        }
