"""AudioProcessor: one session = one processor = one decoder (one FFmpeg process).

State machine: IDLE → RUNNING → STOPPED. ``create_tasks()`` is idempotent while RUNNING
and refused once STOPPED (processors are single-use); ``cleanup()`` is idempotent.
Models are shared: every processor whose configuration has the same
:attr:`~rtlab.config.StreamConfig.model_key` uses one loaded model.

Two tasks run while RUNNING: the reader moves decoded PCM from the decoder into an
:class:`~rtlab.core.pacing.AudioBuffer`; the transcriber asks the clock's pacer when a
pass is due, submits it to the backend's scheduler, and turns what the policy returns into
events.

A processor that is never cleaned up still leaves no FFmpeg behind: when its event loop
shuts down (``asyncio.run`` returning cancels every task), its tasks clean it up and warn
with :class:`CleanupSkipped`.

``KeyboardInterrupt`` and ``SystemExit`` end the stream by where they are raised. In a pass,
on a scheduler thread (the backend's transcribe, the policy's step), they are a plugin's
failure like any other: the stream's last event is an error, and they go no further. No
Ctrl-C is ever delivered there (signals reach the main thread only), and on a thread of its
own ``sys.exit()`` ends that thread, not the process: carried to the event loop, one
plugin's exit would stop a server with every other session, or a CLI without a word. On the
event loop's thread (the second Ctrl-C of ``rtlab transcribe``, a ``sys.exit()`` there), they
stop the program as anywhere else in it: a task of the processor that they interrupt stops
FFmpeg, ends the stream with an ``interrupted`` error, and lets them go on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import time
import warnings
from typing import Any, Callable

from ..backends import SAMPLE_RATE, ensure_loaded
from ..config import DEFAULT_BACKEND, StreamConfig
from ..errors import InvalidOption, ProcessorNotRunning, ProcessorStopped, RtlabError, UnknownBackend
from ..options import is_finite_number, is_whole_number
from .clock import MEASURED_MODES, SessionClock
from .costs import CostModel, key_for, load_cost_model
from .events import EventQueue, commit_event, error_event, partial_event
from .instances import SessionBackend, get_backend
from .memo import PassMemo
from .pacing import AudioBuffer, pacer_for
from .scheduler import JobCancelled, blas_threads, scheduler_for
from .startup import build_policy
from .state import State

# A pass that took in more than this many min_chunks of new audio means the stream is behind.
BEHIND_FACTOR = 1.5


class _RaisedInPass(Exception):
    """What a pass raised that is not an Exception (SystemExit, KeyboardInterrupt, ...),
    carried from its scheduler thread to the event loop as one (see the module docstring)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def _in_pass(step: Callable[[], Any]) -> Any:
    """``step()`` (a policy's process_iter or finish) on a scheduler thread."""
    try:
        return step()
    except Exception:
        raise
    except BaseException as error:
        raise _RaisedInPass(error) from error


class CleanupSkipped(RuntimeWarning):
    """An AudioProcessor was still running when its event loop shut down: ``cleanup()``
    (or ``finish()``) was never awaited. Its FFmpeg process was stopped then."""


async def _wait_through_cancellation(tasks: list[asyncio.Future]) -> bool:
    """Wait until every one of ``tasks`` is done, also when the caller is cancelled
    meanwhile (the tasks are not); whether it was, for the caller to raise once its work
    is done. ``asyncio.shield`` alone would let the caller go on before the tasks end."""
    cancelled = False
    while pending := [task for task in tasks if not task.done()]:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


class AudioProcessor:
    """Streams encoded audio of one session through a decoder, a policy and a backend.

    >>> processor = AudioProcessor()                 # faster-whisper, tiny.en, LocalAgreement-2
    >>> events = await processor.create_tasks()      # IDLE -> RUNNING
    >>> await processor.process_audio(chunk)         # any number of times, any chunk size
    >>> await processor.finish()                     # flush: tail commit, summary, end
    >>> async for event in events: ...               # consume concurrently

    :param config: a :class:`~rtlab.config.StreamConfig`, a backend name, or
        ``"backend=test,min_chunk=0.5"`` (:meth:`~rtlab.config.StreamConfig.parse`); ``settings``
        (StreamConfig field names: ``model``, ``policy``, ``policy_options``, ``decoder``,
        ``language``, ...) are applied on top. Names and options are checked here, before
        any work starts.
    :param clock: ``"wall"``, ``"simulated"``, ``"modeled"`` or ``"unaware"`` (see
        :mod:`rtlab.core.clock`).
    :param cost_model: the ``modeled`` clock's :class:`~rtlab.core.costs.CostModel`, or
        the path of its file (default: the one rtlab ships for its reference CPU).
    :param max_events: events waiting for the consumer, at most (see :class:`EventQueue`).
    :param max_buffered_seconds: decoded audio waiting for the policy, at most.
    :param pass_memo: a :class:`~rtlab.core.memo.PassMemo` shared with other processors of
        one replay on the ``modeled`` or ``unaware`` clock: backend calls another stream
        already made are not made again (refused on the measured clocks).
    :param pace_input: on the wall clock, decoded audio enters the stream no faster than
        real time: the second ``t`` of audio not before ``t`` seconds after the first byte.
        For a source that may send faster than it plays (a file piped in, see
        :func:`~rtlab.core.feeding.stream_reader`); a live source is never held. The
        decoder's output waits, and so, through its pipe, does the input.
    """

    def __init__(
        self,
        config: StreamConfig | str | None = None,
        *,
        clock: str = "wall",
        cost_model: CostModel | str | os.PathLike[str] | None = None,
        max_events: int = 1000,
        max_buffered_seconds: float = 30.0,
        pass_memo: PassMemo | None = None,
        pace_input: bool = False,
        **settings: Any,
    ) -> None:
        # Checked first, like the stream's options: a bad bound fails here with its name,
        # not as int()'s ValueError, nor (0 or below) as a one-sample buffer that runs a
        # pass per FFmpeg read.
        if not is_finite_number(max_buffered_seconds) or max_buffered_seconds <= 0:
            raise InvalidOption(
                f"max_buffered_seconds must be a number of seconds above 0, not {max_buffered_seconds!r}"
            )
        if not is_whole_number(max_events) or max_events < 1:
            raise InvalidOption(f"max_events must be a whole number of events >= 1, not {max_events!r}")
        if not isinstance(pace_input, bool):
            raise InvalidOption(f"pace_input must be True or False, not {pace_input!r}")
        config = StreamConfig.coerce(config, **settings)
        try:
            self.config = config.validate()
        except UnknownBackend as error:
            if config.backend == DEFAULT_BACKEND:
                raise UnknownBackend(
                    f"{error} Install the default backend: pip install -e plugins/rtlab-faster-whisper"
                ) from None
            raise
        self.clock = SessionClock(clock)
        if pass_memo is not None and self.clock.mode in MEASURED_MODES:
            raise ValueError(f"a pass memo needs an unmeasured clock (modeled or unaware), not {clock!r}")
        self.pass_memo = pass_memo
        self.pace_input = pace_input and not self.clock.simulated
        self._cut_at: int | None = None  # samples: where cut_input() ended the input
        self.cost_model: CostModel | None = None
        if self.clock.mode == "modeled":
            self.cost_model = load_cost_model(cost_model)
        self._calibration = None
        self.session_backend: SessionBackend | None = None
        self.state = State.IDLE
        self.backend = None
        self.policy = None
        self.decoder = None
        self.scheduler = None
        self.events = EventQueue(max_events)
        self.buffer = AudioBuffer(int(max_buffered_seconds * SAMPLE_RATE))
        self.pacer = pacer_for(self.buffer, self.clock, lambda: self.policy.min_chunk)
        self._holds_blas = False
        self._start_lock = asyncio.Lock()
        self._cleanup_lock = asyncio.Lock()
        self._final_event: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task] = []
        self._taken_at_last_pass = 0
        self.compute_seconds = 0.0
        self.measured_compute_seconds = 0.0
        #: ``(features, measured seconds)`` of each pass, for calibration.
        self.pass_costs: collections.deque[tuple[dict[str, float], float]] = collections.deque(maxlen=10_000)
        self.lag_samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=10_000)
        #: The committed words' texts, for the summary: a day-long stream keeps its text,
        #: not every word's times and probability (several times as much memory). A word
        #: marked ``joins`` goes on the last one.
        self.committed_texts: list[str] = []
        self._last_partial = ("", False)  # the text and whether it joins the last committed word
        self.error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def create_tasks(self) -> EventQueue:
        """Load the model (shared), start the decoder and the tasks; return the events.

        Idempotent while RUNNING (the same iterator, nothing new started). Raises
        :class:`~rtlab.errors.ProcessorStopped` once the processor has stopped.
        """
        async with self._start_lock:
            if self.state is State.RUNNING:
                return self.events
            if self.state is State.STOPPED:
                raise ProcessorStopped(
                    "this AudioProcessor has stopped; create a new AudioProcessor for a new stream"
                )
            from ..registry import get_registry

            registry = get_registry()
            config = self.config
            try:
                self.backend = get_backend(config)
                await asyncio.get_running_loop().run_in_executor(None, ensure_loaded, self.backend)
                self._refuse_if_cleaned_up()
                self.policy = build_policy(config, self.backend, self._backend_for_policy)
                self.decoder = registry.create("decoder", config.decoder, **config.decoder_options)
                await self.decoder.start()
                self._refuse_if_cleaned_up()
            except BaseException:
                await self.cleanup()
                raise
            self.state = State.RUNNING
            blas_threads.acquire()  # a pass holds one CPU slot: numpy's BLAS must not use more
            self._holds_blas = True
            self._tasks = [
                asyncio.create_task(self._read_pcm(), name="rtlab-read-pcm"),
                asyncio.create_task(self._transcribe(), name="rtlab-transcribe"),
            ]
            return self.events

    def _backend_for_policy(self) -> SessionBackend:
        """This session's view of the backend: it adds up what a pass's calls did, and on a
        batching backend gives each pass its key (how far behind the session is; see
        :mod:`rtlab.core.batching`). Made by :func:`~rtlab.core.startup.build_policy` once
        the backend has passed the language check, with what the session takes of the
        backend besides: the modeled clock's calibration and the backend's scheduler."""
        if self.cost_model is not None:
            self._calibration = self.cost_model.find(key_for(self.config, self.backend))
        self.scheduler = scheduler_for(self.backend)
        if self.clock.simulated:
            key = lambda: self.pacer.priority  # noqa: E731
        else:
            key = lambda: time.monotonic() - self.lag  # noqa: E731
        self.session_backend = SessionBackend(self.backend, self.scheduler.batcher, key, self.pass_memo)
        return self.session_backend

    def _refuse_if_cleaned_up(self) -> None:
        # cleanup() may run while create_tasks() awaits (a client that disconnects while
        # the model loads): going on would start a decoder nobody will ever stop.
        if self.state is State.STOPPED:
            raise ProcessorStopped(
                "this AudioProcessor was cleaned up while it was starting; "
                "create a new AudioProcessor for a new stream"
            )

    async def process_audio(self, data: bytes) -> None:
        """Feed encoded audio (chunks of any size); waits when the pipeline is full.

        After a decoding failure the processor is STOPPED and the failure is the last
        event of the stream; feeding more raises :class:`~rtlab.errors.ProcessorStopped`.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            # bytes(5) would be five zero bytes of "audio"; a str has no sample format.
            raise TypeError(f"process_audio takes bytes (encoded audio, or s16le PCM for the PCM decoder), "
                            f"not {type(data).__name__}")  # fmt: skip
        if self.state is State.IDLE:
            raise ProcessorNotRunning("call 'await processor.create_tasks()' before sending audio")
        if self.state is State.STOPPED:
            raise ProcessorStopped("this AudioProcessor has stopped; create a new one")
        self.clock.start()
        try:
            await self.decoder.write(bytes(data))
        except RtlabError as error:
            await self._fail(error)

    async def __aenter__(self) -> AudioProcessor:
        """``async with AudioProcessor(config) as processor:`` starts it (:meth:`create_tasks`;
        its events are :attr:`events`) and cleans it up when the block ends, also on an
        error or a cancellation: no FFmpeg is left. Call :meth:`finish` in the block for the
        tail and the summary; a block that ends without it stops the stream where it is."""
        await self.create_tasks()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cleanup()

    def cut_input(self) -> None:
        """With ``pace_input``: the input ends at this moment of the clock; decoded audio
        after it (sent, not yet played) is dropped from now on, also while a write is still
        waiting for the decoder. :meth:`finish` follows. Later calls do nothing."""
        if self.pace_input and self.state is State.RUNNING and self._cut_at is None:
            self._cut_at = int(self.clock.now() * SAMPLE_RATE)

    async def finish(self) -> None:
        """End of input: the policy commits the tail, a summary follows, the stream ends.
        (To end it at this moment of the clock, dropping audio sent but not yet played,
        call :meth:`cut_input` first: what Ctrl-C on a piped file means.)"""
        if self.state is State.STOPPED:
            await self.cleanup()  # returns once a cleanup in progress (after a failure) is done
        if self.state is not State.RUNNING:
            return
        self.clock.start()
        try:
            with contextlib.suppress(RtlabError):
                await self.decoder.end_input()
            if self._tasks:
                # asyncio.wait, not gather: a caller that gives up (cancels this finish)
                # must not cancel the tasks while the processor still runs, which reads as
                # an event loop shutting down (CleanupSkipped); it stops them here instead.
                await asyncio.wait(self._tasks)
        finally:
            await self.cleanup()

    async def cleanup(self) -> None:
        """Cancel the tasks, stop the decoder, release buffers. Idempotent.

        When it returns, everything is released, also when another cleanup (e.g. after a
        failure inside a task) was already in progress. A caller cancelled while the
        release runs gets its ``CancelledError`` once everything is released.
        """
        self.state = State.STOPPED
        self.buffer.close()
        async with self._cleanup_lock:
            await self._release()

    async def _release(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        self._tasks = []
        for task in tasks:
            task.cancel()
        # The caller may be cancelled meanwhile (a server closing a session, Ctrl-C): the
        # release goes on to the end, FFmpeg stopped, and the cancellation is raised after it.
        cancelled = await _wait_through_cancellation(tasks)
        for task in tasks:  # their errors were reported as events; retrieved, not logged again
            if not task.cancelled():
                task.exception()
        if self.decoder is not None:
            stopping = asyncio.ensure_future(self.decoder.stop())
            cancelled = await _wait_through_cancellation([stopping]) or cancelled
            stopping.result()
        if self._holds_blas:
            self._holds_blas = False
            blas_threads.release()
        if self.session_backend is not None:
            self.session_backend.close()
        self.policy = None
        # After a failure the error is the final event: published only now, so that a
        # consumer who sees the end of the stream finds everything already stopped.
        await self.events.close(self._final_event)
        if cancelled:
            raise asyncio.CancelledError

    # -- the two tasks --------------------------------------------------------------

    async def _read_pcm(self) -> None:
        try:
            while self.state is State.RUNNING:
                pcm = await self.decoder.read()
                if pcm is None:
                    self.buffer.end()
                    return
                if self.pace_input and self._cut_at is None:  # not before its last sample has been played
                    ahead = (self.buffer.received + len(pcm)) / SAMPLE_RATE - self.clock.now()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if self._cut_at is not None:  # cut_input(): what comes after the cut is dropped
                    pcm = pcm[: max(0, self._cut_at - self.buffer.received)]
                    if not len(pcm):
                        continue
                await self.buffer.put(pcm)
        except asyncio.CancelledError:
            await self._cleanup_if_abandoned()
            raise
        except (KeyboardInterrupt, SystemExit) as error:
            await self._interrupted(error)
            raise
        except Exception as error:  # RtlabError, or a decoder bug: report it, never hang
            await self._fail(error)

    async def _transcribe(self) -> None:
        pacer = self.pacer
        try:
            while self.state is State.RUNNING:
                if not await pacer.wait():
                    break
                if pacer.last:
                    self._insert(pacer.take())
                    break  # the last audio: one final pass below instead of two
                step, seconds = await self.scheduler.submit(
                    functools.partial(_in_pass, self.policy.process_iter), priority=pacer.priority,
                    before=self._start_pass, hold_cores=self._holds_cores,
                )
                await self._emit(step, seconds)
            if self.state is State.RUNNING:
                step, seconds = await self.scheduler.submit(
                    functools.partial(_in_pass, self.policy.finish), priority=pacer.priority,
                    hold_cores=self._holds_cores,
                )
                await self._emit(step, seconds)
                await self.events.close(self._summary())
        except asyncio.CancelledError:
            await self._cleanup_if_abandoned()
            raise
        except JobCancelled:
            pass  # stopped while the pass waited for its turn
        except _RaisedInPass as raised:
            await self._fail(raised.error, (
                f"{raised.error!r} was raised in a transcription pass (backend {self.config.backend!r}, "
                f"policy {self.config.policy!r}); the stream ended there, the process goes on"
            ))  # fmt: skip
        except (KeyboardInterrupt, SystemExit) as error:
            await self._interrupted(error)
            raise
        except Exception as error:  # RtlabError, or a backend or policy bug: report it, never hang
            await self._fail(error)

    async def _cleanup_if_abandoned(self) -> None:
        """A task of ours was cancelled while RUNNING: not by cleanup(), which stops the
        processor first, so by the event loop shutting down (``asyncio.run`` cancels every
        task when its coroutine returns). Stop FFmpeg now, or it outlives the loop."""
        if self.state is not State.RUNNING:
            return
        warnings.warn(
            "an AudioProcessor was still running when its event loop shut down; its FFmpeg "
            "process was stopped now. Call 'await processor.cleanup()' (or finish()) when "
            "a stream ends.",
            CleanupSkipped,
            stacklevel=1,
        )
        await self.cleanup()

    def _start_pass(self) -> bool:
        """Runs on the event loop when the scheduler admits a pass: give the policy the
        pass's audio, or decline the pass when the processor stopped while it waited."""
        if self.state is not State.RUNNING:
            return False
        self._insert(self.pacer.take())
        return True

    def _insert(self, pcm) -> None:
        if pcm is not None and len(pcm):
            self.policy.insert_audio(pcm)

    @property
    def _holds_cores(self) -> bool:
        # A measured pass holds CPU slots, so that its compute among others is what it is
        # alone; a modeled or unaware one counts no measured time and runs on every core.
        return self.clock.mode in MEASURED_MODES

    async def _emit(self, step, measured: float) -> None:
        features = {}
        if self.session_backend is not None:
            features = self.session_backend.take_features()
            measured += self.session_backend.take_reused_seconds()  # calls another stream ran
        self.pass_costs.append((features, measured))
        modeled = None
        if self._calibration is not None:
            modeled = self._calibration.predict(features, policy=self.config.policy)
        self.clock.add_compute(measured, modeled)
        # The compute a run reports: the model's prediction on the modeled clock (the same
        # on every run), else what was measured (also on the unaware clock, which counts
        # none of it as time).
        self.compute_seconds += measured if modeled is None else modeled
        self.measured_compute_seconds += measured
        now = self.clock.now()
        lag = self.pacer.lag()
        self.lag_samples.append((now, lag))
        taken = self.buffer.taken
        if self.policy is not None:
            # Behind: audio is waiting, or this pass had to take in much more than
            # min_chunk because it waited its turn behind other sessions' passes (a pass
            # that takes its audio late leaves no lag, but the words still waited). The
            # policy then keeps its buffer short, so that every pass costs less.
            seconds_taken = (taken - self._taken_at_last_pass) / SAMPLE_RATE
            min_chunk = self.policy.min_chunk
            self.policy.behind = lag > min_chunk or seconds_taken > BEHIND_FACTOR * min_chunk
        self._taken_at_last_pass = taken
        if step.committed:
            event = commit_event(step.committed, now)
            for word in event["words"]:
                if word.get("joins") and self.committed_texts:
                    self.committed_texts[-1] += word["text"]
                elif word["text"]:
                    self.committed_texts.append(word["text"])
            await self.events.put(event)
        partial = partial_event(step.partial, now)
        shown = (partial["text"], "joins" in partial)
        if shown != self._last_partial:
            self._last_partial = shown
            await self.events.put(partial)

    async def fail(self, error: BaseException | str) -> None:
        """Stop the session with ``error`` as the last event (e.g. the audio source broke).

        ``error`` is an exception, or a message: ``fail("the microphone was unplugged")``
        ends the stream with an error event of that message as it is (code ``"error"``, as
        an :class:`~rtlab.errors.RtlabError` of it, which :attr:`error` then holds).
        Anything else is refused with ``TypeError``."""
        if isinstance(error, str):
            error = RtlabError(error)
        elif not isinstance(error, BaseException):
            raise TypeError(f"fail() takes an exception or a message (str), not {type(error).__name__}")
        await self._fail(error)

    async def _interrupted(self, error: KeyboardInterrupt | SystemExit) -> None:
        """A task of ours was interrupted on the event loop's thread: the program is being
        stopped (see the module docstring). FFmpeg is stopped before the interruption goes
        on; the stream ends with an error, so that its consumer does not wait for more."""
        message = f"{error!r} stopped the program while the stream ran; the stream ended there"
        # asyncio raises it out of the event loop and keeps it on the task too, which nobody
        # awaits: retrieved here, it is not reported a second time as "never retrieved".
        current = asyncio.current_task()
        if current is not None:
            current.add_done_callback(lambda task: task.cancelled() or task.exception())
        await self._fail(error, message, code="interrupted")

    async def _fail(self, error: BaseException, message: str | None = None, *, code: str | None = None) -> None:
        if self.state is State.STOPPED:
            return  # already stopping: cleaned up on purpose, or an earlier failure wins
        self.error = error
        # Only rtlab's errors give their code: SystemExit's is its exit status, and another
        # library's (an HTTPError's 404) is no code of this contract either.
        code = code or (error.code if isinstance(error, RtlabError) else "internal_error")
        if message is None:
            message = str(error) if isinstance(error, RtlabError) else f"{type(error).__name__}: {error}"
        self._final_event = error_event(code, message, self.clock.now())
        await self.cleanup()

    # -- measurements -----------------------------------------------------------------

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio transcribed so far."""
        return self.buffer.taken / SAMPLE_RATE

    @property
    def lag(self) -> float:
        """Audio received but not yet transcribed, in seconds (latest sample)."""
        return self.lag_samples[-1][1] if self.lag_samples else 0.0

    def _summary(self) -> dict[str, Any]:
        return {
            "type": "summary",
            "text": " ".join(self.committed_texts),
            "audio_seconds": round(self.audio_seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "measured_compute_seconds": round(self.measured_compute_seconds, 3),
            "rtf": round(self.compute_seconds / self.audio_seconds, 4) if self.audio_seconds else None,
            # The language transcribed: the one asked for, the backend's, or the one the
            # policy detected (None when it found none, e.g. no speech).
            "language": getattr(self.policy, "language", None),
            "emitted_at": round(self.clock.now(), 4),
        }

    @property
    def metrics(self) -> dict[str, Any]:
        """Per-processor measurements: audio, compute, RTF, lag, decoder start-up."""
        return {
            "state": self.state,
            "audio_seconds": self.audio_seconds,
            "compute_seconds": self.compute_seconds,
            "measured_compute_seconds": self.measured_compute_seconds,
            "rtf": self.compute_seconds / self.audio_seconds if self.audio_seconds else None,
            "lag": self.lag,
            "lag_samples": list(self.lag_samples),
            "dropped_partials": self.events.dropped_partials,
            "first_pcm_latency": getattr(self.decoder, "first_pcm_latency", None),
        }
