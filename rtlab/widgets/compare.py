"""ComparePanel: several configurations on the same audio, side by side, live."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import StreamConfig
from ..core.clock import check_clock
from ..core.events import join_words
from ..core.feeding import check_chunk_seconds
from ..options import is_number
from .configs import as_config, cost_model_for, label_of
from .panel import Panel
from .sources import audio_source, finish_in_thread
from .state import StreamState

__all__ = ["Column", "ComparePanel"]

ConfigLike = StreamConfig | str | Mapping[str, Any]


@dataclass
class Column:
    """One configuration of the panel: what it was given as, the checked configuration
    (None when it does not parse or validate: ``state.error`` says why), and its stream."""

    entry: Any
    config: StreamConfig | None
    state: StreamState
    view: Any = None


class ComparePanel(Panel):
    """Several configurations on the same audio, side by side and live: one column per
    configuration with its text (partial in grey), a live commit-latency chart, and when
    the stream ends a table of WER, median and p95 commit latency, first text and RTF per
    configuration with the WER–latency plot.

    >>> panel = ComparePanel("tests/data/fox.ogg", ["min_chunk=0.5", "min_chunk=1"], clock="wall")
    >>> panel.start(); panel        # in a notebook: shows it; the kernel stays free
    >>> await panel.wait()
    >>> panel.results               # pandas DataFrame, one row per configuration
    >>> panel.save("results/")      # results.jsonl as rtlab bench writes it, and plots

    Every configuration streams at once through :func:`rtlab.eval.replay.replay_async`:
    the audio is decoded once, every configuration gets the same samples on the same clock,
    and the streams are scored as ``rtlab bench`` scores them (:mod:`rtlab.widgets.scoring`).

    :param audio: a file path, a corpus utterance, or a 1-D NumPy array of 16 kHz samples.
    :param configs: StreamConfigs, ``"KEY=VALUE,..."`` strings or flat mappings. In Jupyter,
        the panel's dropdowns (filled from the plugin registry) add or change them before a
        run; from code, :meth:`add`, :meth:`replace` and :meth:`remove`.
    :param clock: ``"simulated"`` (default: as fast as compute allows, latency on a virtual
        clock that counts measured compute), ``"wall"`` (real time, as from a microphone),
        ``"modeled"`` (compute predicted by ``cost_model``: the same events on every run) or
        ``"unaware"`` (compute takes no time); see :mod:`rtlab.core.clock`.
    :param cost_model: the ``modeled`` clock's cost model (a
        :class:`~rtlab.core.costs.CostModel` or its file; default: the one rtlab ships).
    :param reference: the reference transcript for WER (default: the utterance's, or a
        same-name ``.txt`` beside the file; without one, WER is left out).
    :param normalizer: how WER normalizes text (``"auto"``, see ``rtlab bench``).
    :param chunk_seconds: audio per chunk fed to the streams.
    :param view: ``"auto"``, ``"widgets"`` or ``"text"``.
    :param max_redraws_per_second: the redraw throttle.
    :param chart_seconds: the live chart is drawn (in a worker thread) at most this often.

    A configuration that does not parse or validate, or whose model fails to load, shows
    its one-line error in its column; the others go on. A missing or unreadable audio file
    shows its error in every column.
    """

    def __init__(
        self,
        audio: Any,
        configs: Iterable[ConfigLike] = (),
        *,
        clock: str = "simulated",
        reference: str | None = None,
        normalizer: str = "auto",
        chunk_seconds: float = 0.1,
        view: str = "auto",
        max_redraws_per_second: float = 10.0,
        chart_seconds: float = 1.0,
        cost_model: Any = None,
    ) -> None:
        check_clock(clock)
        check_chunk_seconds(chunk_seconds)
        if not is_number(chart_seconds) or chart_seconds < 0:
            raise ValueError(f"chart_seconds must be a number of seconds >= 0, not {chart_seconds!r}")
        if isinstance(configs, (str, Mapping, StreamConfig)):
            configs = [configs]  # one configuration, not its characters or keys
        self.source = audio_source(audio, reference)
        self.clock = clock
        self.cost_model = cost_model
        self.normalizer = normalizer
        self.chunk_seconds = chunk_seconds
        self.chart_seconds = chart_seconds
        self._entries: list[Any] = list(configs)
        #: One column per configuration, in order.
        self.columns: list[Column] = []
        self._processed = 0.0
        self._duration: float | None = None
        self._chart_dirty = False
        self._chart_at = 0.0
        self._chart_future: asyncio.Future | None = None
        super().__init__(view=view, max_redraws_per_second=max_redraws_per_second)
        self._make_columns()

    # -- configurations -------------------------------------------------------------------

    @property
    def configs(self) -> list[Any]:
        """The configurations as given (a copy; change them with add, replace, remove)."""
        return list(self._entries)

    def add(self, config: ConfigLike) -> Column:
        """Add a configuration (a new column) before a run; returns its column."""
        self._refuse_while_running()
        self._entries.append(config)
        self._make_columns()
        return self.columns[-1]

    def replace(self, index: int, config: ConfigLike) -> Column:
        """Change the configuration of column ``index`` (0-based) before a run."""
        self._refuse_while_running()
        self._entries[index] = config
        self._make_columns()
        return self.columns[index]

    def remove(self, index: int) -> None:
        """Remove column ``index`` (0-based) before a run."""
        self._refuse_while_running()
        del self._entries[index]
        self._make_columns()

    def _refuse_while_running(self) -> None:
        if self.running:
            raise RuntimeError("the panel is running: stop it (panel.stop()) before changing its configurations")

    def _make_columns(self) -> None:
        """Check every configuration into a column; a label used twice gets a number."""
        columns, seen = [], set()
        for entry in self._entries:
            try:
                config: StreamConfig | None = as_config(entry)
            except Exception as error:  # noqa: BLE001 - shown in its column, the others go on
                state = StreamState(label_of(entry))
                state.fail(error)
                columns.append(Column(entry, None, state))
                continue
            label, number = config.label, 1
            while label in seen:
                number += 1
                label = f"{config.label} ({number})"
            if label != config.label:
                config = config.replace(name=label)
            seen.add(label)
            columns.append(Column(entry, config, StreamState(label)))
        self.columns = columns
        if self._widget is not None:
            self._show_columns()

    # -- the run ------------------------------------------------------------------------

    def _prepare(self) -> None:
        self._make_columns()
        for column in self._valid():
            column.state.status = "waiting" if self._predecessor is not None else "loading"
        self._processed = 0.0
        self._chart_dirty = False
        if self._widget is not None:
            self._chart.value, self._chart.layout.display = b"", "none"
            self._plot.value, self._plot.layout.display = b"", "none"
            self._table.value = ""
        self._print(f"comparing {_configurations(len(self.columns))} on {self.source.label} ({self.clock} clock)")
        for number, column in enumerate(self.columns, start=1):
            self._print(f"[{number}] {column.state.label}" + (f": {column.state.error}" if column.state.error else ""))

    def _valid(self) -> list[Column]:
        return [c for c in self.columns if c.config is not None]

    def _fail(self, columns: Iterable[Column], error: BaseException | str) -> None:
        for column in columns:
            column.state.fail(error)
            self._print(f"[{self.columns.index(column) + 1}] error: {column.state.error}")

    async def _run(self) -> None:
        from ..backends import ensure_loaded
        from ..core.instances import get_backend
        from ..core.startup import build_policy
        from ..eval.replay import replay_async
        from .scoring import ScoredStream, score_to_end

        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        valid = self._valid()
        for column in valid:
            column.state.status = "loading"
        self._request_redraw()
        if not valid:
            return
        try:
            cost_model = cost_model_for(self.clock, self.cost_model)
            samples = await finish_in_thread(self.source.decode)
        except Exception as error:  # noqa: BLE001 - the audio and the clock are every column's
            self._fail(valid, error)
            return
        self._duration = len(samples) / 16000
        # Models load before the replay, one per backend instance: one that fails to load
        # fails its own columns, and the replay goes on with the others.
        groups: dict[tuple, list[Column]] = {}
        for column in valid:
            groups.setdefault(column.config.model_key, []).append(column)
        loaded = await asyncio.gather(
            *(loop.run_in_executor(None, lambda c=g[0].config: ensure_loaded(get_backend(c))) for g in groups.values()),
            return_exceptions=True,
        )
        for group, outcome in zip(groups.values(), loaded):
            if isinstance(outcome, Exception):
                self._fail(group, outcome)
        # What a stream's start refuses (a language the loaded model does not transcribe, a
        # capability its policy needs, an option value) fails its own column, checked by the
        # processor's own start-up function: once the replay starts, it would fail every column.
        for column in valid:
            if not column.state.error:
                try:
                    build_policy(column.config, get_backend(column.config))
                except Exception as error:  # noqa: BLE001 - a plugin policy's own refusal too
                    self._fail([column], error)
        runnable = [c for c in valid if not c.state.error]
        if not runnable:
            return
        for column in runnable:
            column.state.status = "streaming"
        self._request_redraw()

        def on_event(index: int, event: dict[str, Any]) -> None:
            self._on_event(runnable[index], event)

        replay_started = time.perf_counter()
        try:
            runs = await replay_async(
                samples, [c.config for c in runnable], clock=self.clock, chunk_seconds=self.chunk_seconds,
                progress=self._on_progress, on_event=on_event, cost_model=cost_model,
            )  # fmt: skip
        except Exception as error:  # noqa: BLE001 - a stream that could not start: shown, not raised
            self._fail(runnable, error)
            return
        replay_seconds = time.perf_counter() - replay_started
        for column in runnable:
            if not column.state.error:
                column.state.status = "scoring"
        self._request_redraw()
        self._scored = streams = [ScoredStream(c.config, run.events, run.lag_samples) for c, run in zip(runnable, runs)]
        self.bench = await score_to_end(
            self.source, streams, clock=self.clock, normalizer=self.normalizer,
            wall_seconds=time.perf_counter() - started, replay_wall_seconds=replay_seconds, cost_model=cost_model,
        )  # fmt: skip
        for column in runnable:
            column.state.end()
        if self.view == "text":
            from ..eval.bench import format_table

            print(format_table(self.bench.summaries), flush=True)
        elif self._widget is not None:
            if self._chart_future is not None:  # a live chart still drawing would hide the final one
                await asyncio.wait({self._chart_future})
            self._draw_results()

    def _on_event(self, column: Column, event: dict[str, Any]) -> None:
        column.state.add(event)
        if event["type"] == "commit" and event["words"]:
            self._chart_dirty = True
            number = self.columns.index(column) + 1
            self._print(f"[{number}] {event['emitted_at']:6.2f} s  " + join_words(event["words"]))
        elif event["type"] == "error":
            self._print(f"[{self.columns.index(column) + 1}] error: {column.state.error}")
        self._request_redraw()

    def _on_progress(self, seconds: float) -> None:
        self._processed = seconds
        self._request_redraw()

    def _mark_stopped(self) -> None:
        for column in self.columns:
            if column.config is not None and not column.state.finished:
                column.state.status = "stopped"
                column.state.partial = ""
        self._print("stopped")

    def _fail_run(self, message: str) -> None:
        self._fail([c for c in self._valid() if not c.state.finished], message)

    def _print(self, line: str) -> None:
        if self.view == "text":
            print(line, flush=True)

    # -- showing ------------------------------------------------------------------------

    def describe(self) -> str:
        """The panel as text: one block per configuration (figures, text, error), and the
        results table once the streams have been scored."""
        lines = [f"ComparePanel · {self.source.label} · {self.clock} clock · {_configurations(len(self.columns))}"]
        lines += [f"[{n}] {c.state.describe()}" for n, c in enumerate(self.columns, start=1)]
        if self.bench is not None:
            from ..eval.bench import format_table

            lines.append(format_table(self.bench.summaries))
        return "\n".join(lines)

    def _build(self) -> Any:
        import ipywidgets as widgets

        from .editor import ConfigEditor

        reference = "with a reference" if self.source.reference else "no reference (no WER)"
        header = widgets.HTML(
            f"<b>Comparing configurations</b> <span style='color:#666'>· {html.escape(self.source.label)} · "
            f"{self.clock} clock · {reference}</span>"
        )
        self._editor = ConfigEditor(self)
        self._start_button = widgets.Button(description="Start", icon="play", button_style="success")
        self._stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger")
        self._start_button.on_click(lambda _: self.start())
        self._stop_button.on_click(lambda _: self.stop())
        self._progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="240px"))
        self._progress_label = widgets.Label()
        controls = widgets.HBox([self._start_button, self._stop_button, self._progress, self._progress_label],
                                layout=widgets.Layout(align_items="center"))  # fmt: skip
        self._columns_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap", align_items="stretch"))
        self._chart = widgets.Image(format="png", layout=widgets.Layout(display="none", max_width="100%"))
        self._table = widgets.HTML()
        self._plot = widgets.Image(format="png", layout=widgets.Layout(display="none", max_width="640px"))
        self._timeline = widgets.Image(format="png", layout=widgets.Layout(display="none", max_width="100%"))
        self._differences = widgets.HTML()
        box = widgets.VBox(
            [header, self._editor.box, controls, self._columns_box, self._chart, self._table, self._plot,
             self._timeline, self._differences]
        )  # fmt: skip
        box.add_class("rtlab-compare-panel")
        self._widget = box
        self._show_columns()
        if self.bench is not None and not self.running:  # shown after the run ended
            self._draw_results()
        return box

    def _tinted(self) -> list[tuple[Column, str]]:
        """Each column with a configuration, and its colour: the one rtlab's plots give it
        among that many configurations (a column without one is grey)."""
        from .charts import color

        valid = self._valid()
        return [(column, color(index, len(valid))) for index, column in enumerate(valid)]

    def _show_columns(self) -> None:
        from .views import StreamView

        tints = {id(column): tint for column, tint in self._tinted()}
        for column in self.columns:
            column.view = StreamView(column.state, color=tints.get(id(column), "#999999"), in_row=True)
        self._columns_box.children = [c.view.box for c in self.columns]
        self._editor.refresh_targets()

    def _redraw(self) -> None:
        for column in self.columns:
            if column.view is not None:
                column.view.refresh()
        running = self.running
        self._start_button.disabled = running or not self._valid()
        self._stop_button.disabled = not running
        self._editor.set_enabled(not running)
        if self._duration:
            self._progress.value = min(1.0, self._processed / self._duration)
            self._progress_label.value = f"{self._processed:.1f} / {self._duration:.1f} s of audio"
        if self.running and self._chart_dirty and self._chart_future is None:
            if time.monotonic() - self._chart_at >= self.chart_seconds:
                self._render_chart()

    def _chart_series(self) -> list[tuple[str, str, list[tuple[float, float]]]]:
        return [(c.state.label, tint, list(c.state.latencies)) for c, tint in self._tinted()]

    def _render_chart(self) -> asyncio.Future:
        from .charts import latency_chart_png

        self._chart_dirty = False
        self._chart_at = time.monotonic()
        series = self._chart_series()
        future = asyncio.get_running_loop().run_in_executor(None, lambda: latency_chart_png(series, clock=self.clock))
        self._chart_future = future

        def show(done: asyncio.Future) -> None:
            self._chart_future = None
            if not done.cancelled() and done.exception() is None:
                self._chart.value, self._chart.layout.display = done.result(), None

        future.add_done_callback(show)
        return future

    def _draw_results(self) -> None:
        """The final chart, the results table, the WER–latency plot, the commit timeline and
        the differences (once, at the end)."""
        from .charts import latency_chart_png, timeline_png, wer_latency_png
        from .views import differences_html, summary_table_html

        if any(c.state.latencies for c in self._valid()):
            self._chart.value = latency_chart_png(self._chart_series(), clock=self.clock)
            self._chart.layout.display = None
        summaries = self.bench.summaries
        tints = {c.config.label: tint for c, tint in self._tinted()}
        failures = [(c.state.label, c.state.error or "") for c in self.columns
                    if c.config is None or c.config.label not in {s["name"] for s in summaries}]  # fmt: skip
        self._table.value = summary_table_html(summaries, [tints[s["name"]] for s in summaries], failures)
        if any(s["wer"]["value"] is not None and s["latency"]["median"] is not None for s in summaries):
            self._plot.value, self._plot.layout.display = wer_latency_png(summaries, [tints[s["name"]] for s in summaries]), None
        lanes = self._timeline_lanes()
        self._timeline.value = timeline_png(lanes, clock=self.clock, colors=[tints[label] for label, _ in lanes])
        self._timeline.layout.display = None
        self._differences.value = differences_html([(label, tints[label], places)
                                                    for label, places in self.differences().items()])  # fmt: skip

    def differences(self) -> dict[str, list[Any] | None]:
        """After a run, per configuration: the places where its stream's words differ from
        its model's offline pass on the same audio (:func:`rtlab.eval.metrics.word_differences`,
        with their cost against the reference when the panel has one); None for a stream
        without an offline pass."""
        from ..eval.metrics import word_differences

        if self.bench is None:
            return {}
        return {
            stream.config["name"]: None if stream.offline_hypothesis is None else word_differences(
                stream.offline_hypothesis, stream.hypothesis, stream.reference or None, stream.normalizer)
            for stream in self.bench.streams
        }  # fmt: skip


def _configurations(count: int) -> str:
    return f"{count} configuration{'s' * (count != 1)}"
