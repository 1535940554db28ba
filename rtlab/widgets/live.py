"""LivePanel: one stream, live, in a notebook (or as text anywhere else)."""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import Mapping
from typing import Any

from ..config import StreamConfig
from ..core.clock import check_clock
from ..core.events import join_words
from ..core.feeding import check_chunk_seconds
from ..core.processor import AudioProcessor
from .configs import as_config, cost_model_for, label_of, min_chunk_of
from .panel import Panel
from .sources import AudioSource, audio_source, finish_in_thread
from .state import StreamState

__all__ = ["LivePanel"]

# How often the lag gauge and the audio counter are read while nothing else changes.
_TICK_SECONDS = 0.25


class LivePanel(Panel):
    """One stream, live: committed text, the partial text in grey, a lag gauge, a
    commit-latency sparkline, and Start and Stop buttons.

    >>> panel = LivePanel("tests/data/fox.ogg", "backend=faster-whisper,min_chunk=0.5")
    >>> panel.start(); panel        # in a notebook: shows the panel, the kernel stays free
    >>> await panel.wait()          # later, if a cell needs the end
    >>> panel.results               # a pandas DataFrame, one row

    :param source: a file path (its encoded bytes go through the configuration's decoder,
        FFmpeg by default, as a client's would), a corpus utterance, a 1-D NumPy array of
        16 kHz samples, or an :class:`~rtlab.core.processor.AudioProcessor` that you start
        and feed yourself (the panel shows its events; Stop cleans it up).
    :param config: a :class:`~rtlab.config.StreamConfig`, a ``"KEY=VALUE,..."`` string or a
        flat mapping (default: faster-whisper tiny.en under LocalAgreement-2). Ignored for
        a processor, which has its own.
    :param clock: ``"wall"`` (real time, as from a microphone), or a virtual clock:
        ``"simulated"``, ``"modeled"`` (with ``cost_model``) or ``"unaware"`` (see
        :mod:`rtlab.core.clock`).
    :param cost_model: the ``modeled`` clock's cost model (a
        :class:`~rtlab.core.costs.CostModel` or its file; default: the one rtlab ships).
    :param reference: the reference transcript for WER (default: the utterance's, or a
        same-name ``.txt`` beside the file).
    :param normalizer: how WER normalizes text (``"auto"``, see ``rtlab bench``).
    :param view: ``"auto"``, ``"widgets"`` or ``"text"`` (see :data:`rtlab.widgets.panel.VIEWS`).
    :param max_redraws_per_second: the redraw throttle.

    A bad configuration, a missing file or a model that fails to load shows its one-line
    error in the panel instead of raising. When the stream ends it is scored as
    ``rtlab bench`` scores it (an offline pass gives the words' audio times): see
    :attr:`results` and :meth:`save`.
    """

    def __init__(
        self,
        source: Any,
        config: StreamConfig | str | Mapping[str, Any] | None = None,
        *,
        clock: str = "wall",
        reference: str | None = None,
        chunk_seconds: float = 0.1,
        normalizer: str = "auto",
        view: str = "auto",
        max_redraws_per_second: float = 10.0,
        cost_model: Any = None,
    ) -> None:
        self.processor: AudioProcessor | None = None
        self._given_processor: AudioProcessor | None = None
        if isinstance(source, AudioProcessor):
            self._given_processor = source
            self.source = AudioSource("processor", reference=reference)
            config, clock, cost_model = source.config, source.clock.mode, source.cost_model
        else:
            self.source = audio_source(source, reference)
        check_clock(clock)
        check_chunk_seconds(chunk_seconds)
        self.config = config
        self.clock = clock
        self.cost_model = cost_model
        self.chunk_seconds = chunk_seconds
        self.normalizer = normalizer
        try:
            label = as_config(config).label
        except Exception:  # noqa: BLE001 - a bad configuration shows its error when the panel runs
            label = label_of(config)
        #: What the stream has shown so far.
        self.state = StreamState(label)
        super().__init__(view=view, max_redraws_per_second=max_redraws_per_second)

    # -- the run ------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.state.reset()
        self.state.status = "waiting" if self._predecessor is not None else "loading"
        self._print(f"{self.state.label} · {self.source.label} · {self.clock} clock")

    async def _run(self) -> None:
        state = self.state
        state.status = "loading"
        self._request_redraw()
        processor = self._given_processor
        samples = cost_model = None
        try:
            config = processor.config if processor else as_config(self.config)
            state.label = config.label
            cost_model = cost_model_for(self.clock, self.cost_model)
            if processor is None:
                samples = await finish_in_thread(self.source.decode)
                if self.source.path is None:  # NumPy audio: raw samples, no FFmpeg
                    config = config.replace(decoder="pcm_s16le", decoder_options={})
                processor = AudioProcessor(config, clock=self.clock, cost_model=cost_model)
            self.processor = processor
            events = await processor.create_tasks()
        except Exception as error:  # noqa: BLE001 - shown in the panel, like a stream's error
            state.fail(error)
            self._print(f"  error: {state.error}")
            if processor is not None:
                await processor.cleanup()
            return
        state.status = "streaming"
        feeder = None if self._given_processor else asyncio.create_task(self._feed(processor, samples))
        ticker = asyncio.create_task(self._tick(processor))
        try:
            async for event in events:
                self._on_event(event)
                state.lag, state.audio_seconds = processor.lag, processor.audio_seconds
            if feeder is not None:
                with contextlib.suppress(Exception):
                    await feeder
        finally:
            for task in (feeder, ticker):
                if task is not None:
                    task.cancel()
            await processor.cleanup()
        state.lag = None
        if not state.error:
            state.status = "scoring"
            self._request_redraw()
        from .scoring import ScoredStream, score_to_end

        stream = ScoredStream(config, list(state.events), [(float(t), float(v)) for t, v in processor.lag_samples])
        self._scored = [stream]
        self.bench = await score_to_end(self.source, [stream], clock=self.clock, normalizer=self.normalizer,
                                        cost_model=cost_model)  # fmt: skip
        state.end()
        if state.status == "stopped":
            self._print(f"  stopped before the end of the stream (no summary came: its processor was cleaned up): {state.text}")
        if self.view == "text":
            from ..eval.bench import format_table

            print(format_table(self.bench.summaries), flush=True)

    async def _feed(self, processor: AudioProcessor, samples: Any) -> None:
        from ..core.feeding import feed_bytes, feed_file

        realtime = self.clock == "wall"
        duration = len(samples) / 16000
        try:
            if self.source.path is not None:
                await feed_file(processor, self.source.path, realtime=realtime,
                                chunk_seconds=self.chunk_seconds, duration=duration)  # fmt: skip
            else:
                from ..decoders.files import to_pcm16

                await feed_bytes(processor, to_pcm16(samples), realtime=realtime,
                                 chunk_seconds=self.chunk_seconds, duration=duration)  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the source broke: it ends the stream, as its last event
            await processor.fail(error)

    async def _tick(self, processor: AudioProcessor) -> None:
        # Between events the lag may still grow (a slow pass): read it a few times a second.
        while True:
            await asyncio.sleep(_TICK_SECONDS)
            self.state.lag, self.state.audio_seconds = processor.lag, processor.audio_seconds
            self._request_redraw()

    def _on_event(self, event: dict[str, Any]) -> None:
        self.state.add(event)
        if self.view == "text":
            if event["type"] == "commit" and event["words"]:
                self._print(f"  {event['emitted_at']:6.2f} s  " + join_words(event["words"]))
            elif event["type"] == "error":
                self._print(f"  error: {self.state.error}")
        self._request_redraw()

    def _mark_stopped(self) -> None:
        if not self.state.finished:
            self.state.status = "stopped"
            self.state.partial = ""
            self.state.lag = None
        self._print(f"  stopped: {self.state.text}")

    def _fail_run(self, message: str) -> None:
        self.state.fail(message)

    def _print(self, line: str) -> None:
        if self.view == "text":
            print(line, flush=True)

    # -- showing ------------------------------------------------------------------------

    def describe(self) -> str:
        """The panel as text: the stream's label, figures and text; the results table once
        it has been scored."""
        text = f"LivePanel · {self.source.label} · {self.clock} clock\n{self.state.describe()}"
        if self.bench is not None:
            from ..eval.bench import format_table

            text += "\n" + format_table(self.bench.summaries)
        return text

    def _build(self) -> Any:
        import ipywidgets as widgets

        from .charts import color
        from .views import StreamView

        min_chunk = None
        with contextlib.suppress(Exception):
            min_chunk = min_chunk_of(as_config(self.config))
        self._view = StreamView(self.state, color=color(0), min_chunk=min_chunk or 1.0)
        self._start_button = widgets.Button(description="Start", icon="play", button_style="success")
        self._stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger")
        self._start_button.on_click(lambda _: self.start())
        self._stop_button.on_click(lambda _: self.stop())
        self._table = widgets.HTML()
        header = widgets.HTML(
            f"<span style='color:#666'>{html.escape(self.source.label)} · {self.clock} clock</span>"
        )
        controls = widgets.HBox([self._start_button, self._stop_button, header],
                                layout=widgets.Layout(align_items="center"))  # fmt: skip
        box = widgets.VBox([controls, self._view.box, self._table])
        box.add_class("rtlab-live-panel")
        return box

    def _redraw(self) -> None:
        from .charts import color
        from .views import summary_table_html

        self._view.refresh()
        running = self.running
        self._start_button.disabled = running or (self._given_processor is not None and self._task is not None)
        self._stop_button.disabled = not running
        self._table.value = summary_table_html(self.bench.summaries, [color(0)]) if self.bench else ""

