"""Promises of rtlab.widgets: the panels' state, throttling, stopping, errors, results and
text form, checked without a browser (widgets are built outside a kernel, which ipywidgets
allows), and once in a real Jupyter kernel (a re-run cell stops its panel)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rtlab
from rtlab.config import StreamConfig
from rtlab.errors import InvalidOption
from rtlab.policies.local_agreement import LocalAgreement
from rtlab.eval.replay import replay
from rtlab.registry import get_registry
from rtlab.testing.conformance import registered
from rtlab.testing import ScriptedBackend, ToneAttentionBackend, ToneBackend, tone_words, wav_bytes
from rtlab.widgets import ComparePanel, LivePanel
from rtlab.widgets.sources import audio_source
from rtlab.widgets.throttle import Throttle

pytest.importorskip("ipywidgets", reason="pip install -e '.[test]' (ipywidgets)")

TEXT = "alpha bravo charlie delta echo"


@pytest.fixture(scope="module")
def tones() -> np.ndarray:
    return tone_words(TEXT)[0]


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    """A tone clip as a WAV file with its reference beside it (the corpus layout)."""
    path = tmp_path / "tones.wav"
    path.write_bytes(wav_bytes(tone_words(TEXT)[0]))
    path.with_suffix(".txt").write_text(TEXT + "\n")
    return path


async def until(condition, timeout: float = 60.0) -> None:
    """Wait (on the event loop) until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def rtlab_tasks() -> list[asyncio.Task]:
    """Processor tasks still alive on this loop (orphans, once a panel has stopped)."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("rtlab-") and not t.done()
            and t is not asyncio.current_task()]  # fmt: skip


# --------------------------------------------------------------------------- the replay's live hook


def test_replay_reports_each_event_live_with_its_configuration_index(tones):
    configs = [StreamConfig.parse("backend=test,min_chunk=0.5"), StreamConfig.parse("backend=test,min_chunk=1")]
    seen: list[tuple[int, dict]] = []
    runs = replay(tones, configs, on_event=lambda index, event: seen.append((index, event)))
    for index, run in enumerate(runs):
        assert [e for i, e in seen if i == index] == run.events
    assert {i for i, _ in seen} == {0, 1}


# --------------------------------------------------------------------------- throttling


async def test_a_thousand_requests_in_one_second_make_at_most_ten_redraws_and_the_last():
    now = [0.0]
    drawn: list[float] = []
    throttle = Throttle(lambda: drawn.append(now[0]), per_second=10, clock=lambda: now[0])
    for step in range(1000):  # 1 ms apart on the throttle's clock, without yielding
        now[0] = step / 1000
        throttle.request()
    assert throttle.redraws == len(drawn) == 10
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(drawn, drawn[1:]))
    assert throttle.pending  # the latest state is still to be drawn...
    await throttle.settle()
    assert throttle.redraws == 11 and not throttle.pending  # ...and is, once


async def test_a_request_after_a_quiet_interval_redraws_at_once():
    now = [0.0]
    throttle = Throttle(lambda: None, per_second=10, clock=lambda: now[0])
    throttle.request()
    now[0] = 5.0
    throttle.request()
    assert throttle.redraws == 2 and not throttle.pending


async def test_a_panel_redraws_far_less_often_than_events_arrive(tones):
    panel = ComparePanel(tones, ["backend=test,min_chunk=0.1", "backend=test,min_chunk=0.2"], view="widgets")
    panel.widget  # shown: redraws happen
    redraws = []
    panel._throttle._redraw = lambda: redraws.append(panel._throttle._clock())
    await panel.start()
    events = sum(len(c.state.events) for c in panel.columns)
    assert events > 20
    assert 1 <= len(redraws) < events
    # The throttle's own clock: never two redraws closer than a tenth of a second.
    assert all(b - a >= 0.1 - 1e-6 for a, b in zip(redraws, redraws[1:]))


# --------------------------------------------------------------------------- widget state


async def test_live_panel_shows_committed_text_and_the_partial_in_grey_from_a_scripted_backend():
    hello, world, again = ({"text": t, "start": s, "end": s + 0.3}
                           for t, s in (("hello", 0.1), ("world", 0.5), ("again", 0.9)))  # fmt: skip
    script = [[hello], [hello, world], [hello, world, again], [hello, world, again]]
    with registered(ScriptedBackend):
        # silence_factor=0: the scripted words need no sound under them.
        config = StreamConfig(backend="scripted", backend_options={"hypotheses": script}, decoder="pcm_s16le",
                              policy_options={"min_chunk": 0.5, "silence_factor": 0}, name="scripted")  # fmt: skip
        processor = rtlab.AudioProcessor(config, clock="simulated")
        panel = LivePanel(processor, view="widgets", max_redraws_per_second=float("inf"))  # every state
        shown: list[str] = []
        panel.widget
        panel._view.text.observe(lambda change: shown.append(change["new"]), names="value")
        await processor.create_tasks()
        panel.start()
        from rtlab.core.feeding import feed_bytes
        from rtlab.decoders.files import to_pcm16

        await feed_bytes(processor, to_pcm16(np.zeros(16000 * 3, np.float32)), realtime=False)
        await panel.wait()
    state = panel.state
    assert state.text == "hello world again" and state.status == "done"
    assert [e["type"] for e in state.events][-1] == "summary"
    # Provisional text was shown in grey after the committed words, then committed.
    grey = [v for v in shown if "rtlab-partial" in v and "color:#8a8a8a'>world<" in v]
    assert grey and "<span class='rtlab-committed'>hello</span>" in grey[0]
    assert "<span class='rtlab-committed'>hello world again</span>" in panel._view.text.value
    assert "done" in panel._view.figures.value and "first text" in panel._view.figures.value
    assert "commit latency" in panel._view.sparkline.value and "<polyline" in panel._view.sparkline.value
    assert panel._start_button.disabled  # a processor streams once
    assert panel._stop_button.disabled
    assert len(panel.results) == 1 and panel.results.loc[0, "hypothesis"] == "hello world again"


async def test_a_stream_its_owner_cleaned_up_before_the_end_shows_stopped_not_done(tones):
    from rtlab.decoders.files import to_pcm16

    processor = rtlab.AudioProcessor("backend=test,min_chunk=0.5", decoder="pcm_s16le", clock="simulated")
    panel = LivePanel(processor, view="widgets")
    panel.widget
    await processor.create_tasks()
    panel.start()
    await processor.process_audio(to_pcm16(tones))  # the input never ends: the owner cleans up instead
    await until(lambda: panel.state.committed)
    await processor.cleanup()
    await panel.wait()
    state = panel.state
    assert state.summary is None and state.error is None and state.committed
    # Before: "done", as if the stream had ended, with its last partial text still shown.
    assert state.status == "stopped" and state.partial == ""
    assert "stopped" in panel._view.figures.value and "done" not in panel._view.figures.value


async def test_live_panel_streams_a_file_through_ffmpeg_with_a_lag_gauge(tone_wav, no_ffmpeg_left):
    panel = LivePanel(tone_wav, "backend=test,min_chunk=0.5", clock="simulated", view="widgets")
    panel.widget
    await panel.start()
    assert panel.state.text == TEXT and panel.state.status == "done"
    assert panel._view.lag is not None and panel._view.lag.max == pytest.approx(2.0)  # 4 min_chunks
    result = panel.results.iloc[0]
    assert result["wer.value"] == 0.0 and result["reference"] == TEXT  # the .txt beside the file
    assert result["latency.median"] is not None and result["latency.median"] > 0
    assert "rtlab-results" in panel._table.value


async def test_compare_panel_fills_one_column_per_configuration_then_the_table_and_plots(tones):
    configs = ["backend=test,min_chunk=0.5", StreamConfig.parse("backend=test,min_chunk=1")]
    panel = ComparePanel(tones, configs, reference=TEXT, view="widgets")
    panel.widget
    await panel.start()
    assert [c.state.text for c in panel.columns] == [TEXT, TEXT]
    assert all(c.state.status == "done" for c in panel.columns)
    for column in panel.columns:
        assert f"<span class='rtlab-committed'>{TEXT}</span>" in column.view.text.value
        assert "first text" in column.view.figures.value
    assert bytes(panel._chart.value).startswith(b"\x89PNG") and panel._chart.layout.display is None
    assert bytes(panel._plot.value).startswith(b"\x89PNG")
    assert bytes(panel._timeline.value).startswith(b"\x89PNG") and panel._timeline.layout.display is None
    assert [label for label, _ in panel._timeline_lanes()] == [c.config.label for c in panel.columns]
    assert [sum(len(e["words"]) for e in events if e["type"] == "commit") for _, events in panel._timeline_lanes()] \
        == [len(TEXT.split())] * 2  # fmt: skip
    table = panel._table.value
    assert table.count("<tr>") == 3 and "0.0%" in table and "min_chunk=0.5" in table
    assert "median and p95 commit latency over every word" in table  # what each statistic is over
    # Both streams heard what the offline pass heard, word for word.
    assert list(panel.differences().values()) == [[], []]
    assert panel._differences.value.count("the same words as the offline pass") == 2
    assert panel._progress.value == pytest.approx(1.0)
    assert not panel._start_button.disabled and panel._stop_button.disabled


def test_the_differences_list_puts_the_costliest_place_first():
    from rtlab.eval.metrics import word_differences
    from rtlab.widgets.views import differences_html

    offline, streamed = "Für die besten Aussichten auf Hongkong.", "Für die besten Aussichten auf Hong Kong!"
    places = word_differences(offline, streamed, "Für die besten Aussichten auf Hongkong", "whisper-basic")
    page = differences_html([("default", "#1f77b4", places), ("other", "#ff7f0e", None), ("third", "#2ca02c", [])])
    assert "1 place where the stream differs from the offline pass, +2 errors against the reference" in page
    assert "offline «hongkong» → streamed «hong kong», reference «hongkong», <b>+2</b>" in page
    assert "other</b>: no offline pass to compare with" in page and "the same words as the offline pass" in page
    many = word_differences("a b c d e f", "x b y d z f", "a b c d e f", "none")
    listed = differences_html([("p", "#000", many)], most=2)
    assert listed.count("→") == 2 and "… 1 more" in listed and "+3 errors against the reference" in listed


async def test_a_panel_shown_after_its_run_shows_the_results(tones):
    panel = ComparePanel(tones, ["backend=test,min_chunk=0.5"], reference=TEXT, view="widgets")
    await panel.start()  # never shown while it ran
    assert "rtlab-results" in panel.widget.children[5].value
    assert panel.columns[0].view.text.value.count(TEXT) == 1


async def test_a_panel_whose_widget_was_closed_mid_run_shows_a_new_one_that_goes_on(tones):
    panel = ComparePanel(tones, ["backend=test,min_chunk=0.5"], clock="wall", reference=TEXT, view="widgets")
    closed = panel.widget
    panel.start()
    await until(lambda: panel.columns[0].state.committed)
    closed.close()  # as widget.close() or Widget.close_all() in a cell; displaying it again raised a TypeError
    bundle = panel._repr_mimebundle_()
    assert panel.widget is not closed and bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert panel.running and panel._stop_button.disabled is False
    await panel.wait()
    assert TEXT in panel.columns[0].view.text.value and "rtlab-results" in panel._table.value


async def test_panel_start_returns_at_once_and_the_loop_stays_free(tones):
    panel = ComparePanel(tones, ["backend=test,min_chunk=0.5"], clock="wall", view="widgets")
    panel.widget
    task = panel.start()
    assert panel.running and not task.done() and not panel.columns[0].state.events
    assert panel.start() is task  # starting a running panel returns the run in progress
    ticks = 0
    while panel.running:  # another "cell" runs while the panel streams
        ticks += 1
        await asyncio.sleep(0.05)
    assert ticks > 1
    assert panel.columns[0].state.text == TEXT


# --------------------------------------------------------------------------- bad input


class UnloadableBackend(ToneBackend):
    name = "unloadable"

    def load(self) -> None:
        raise rtlab.errors.ModelNotFound("unloadable: no such model 'nowhere'; give a folder with model.bin")


async def test_bad_configurations_show_their_one_line_error_and_the_others_go_on(tones):
    with registered(UnloadableBackend):
        panel = ComparePanel(tones, [
            "backend=test,min_chunk=0.5", "backend=nope", "backend=test,wrong_option=1", "backend=unloadable",
        ], reference=TEXT, view="widgets")  # fmt: skip
        panel.widget
        # Configurations that do not validate show their error before any run.
        assert "unknown backend 'nope'" in panel.columns[1].state.error
        await panel.start()
    good, unknown, option, unloadable = panel.columns
    assert good.state.status == "done" and good.state.text == TEXT
    assert unknown.state.status == "failed" and "installed backends:" in unknown.state.error
    assert "option 'wrong_option'" in option.state.error
    assert unloadable.state.error == "unloadable: no such model 'nowhere'; give a folder with model.bin"
    for column in (unknown, option, unloadable):
        assert "\n" not in column.state.error
        assert "rtlab-error" in column.view.error.value
    assert list(panel.results["config.name"]) == [good.config.label]
    assert panel._table.value.count("rtlab-results") == 1 and "no such model" in panel._table.value


async def test_each_configuration_keeps_its_colour_in_every_plot_when_one_before_it_fails(tones, monkeypatch):
    from rtlab.widgets import charts

    drawn = {}
    monkeypatch.setattr(charts, "wer_latency_png", lambda summaries, colors=None: drawn.setdefault("plot", colors) and b"")
    monkeypatch.setattr(charts, "timeline_png", lambda lanes, clock, colors=None: drawn.setdefault("timeline", colors) and b"")
    with registered(UnloadableBackend):
        panel = ComparePanel(tones, ["backend=unloadable", "backend=test,min_chunk=0.5", "backend=test,min_chunk=1"],
                             reference=TEXT, view="widgets")  # fmt: skip
        panel.widget
        await panel.start()
    failed, first, second = panel.columns
    assert failed.state.status == "failed" and first.state.status == second.state.status == "done"
    tints = [first.view.color, second.view.color]
    assert len(set(tints + [failed.view.color])) == 3
    assert drawn == {"plot": tints, "timeline": tints}


class EnglishOnlyBackend(ToneBackend):
    """A backend whose model transcribes English alone, as a ``.en`` Whisper does."""

    name = "english-only"

    def languages(self) -> list[str]:
        return ["en"]


async def test_a_language_one_backend_refuses_fails_its_own_column_and_the_others_go_on(tones):
    with registered(EnglishOnlyBackend):
        panel = ComparePanel(tones, ["backend=english-only,language=xx,min_chunk=0.5",
                                     "backend=test,language=xx,min_chunk=0.5"], view="widgets")  # fmt: skip
        panel.widget
        await panel.start()
    refused, free = panel.columns
    assert refused.state.status == "failed" and "does not transcribe language 'xx'" in refused.state.error
    assert "\n" not in refused.state.error
    # The test backend takes any language (Backend.languages() is None), as it does in the CLI.
    # Before, the refusal of the first configuration failed this column too, with its message.
    assert free.state.status == "done" and free.state.error is None and free.state.text == TEXT


class AttentiveBackend(ToneAttentionBackend):
    """A backend of an installed plugin that AlignAtt can run on."""

    name = "attentive"


async def test_alignatt_on_a_backend_without_attention_names_the_fix_as_a_panel_takes_it(tones):
    with registered(AttentiveBackend):
        with pytest.raises(rtlab.errors.InvalidOption, match="use backend=attentive"):
            StreamConfig.parse("backend=test,policy=alignatt")  # every entry point's words since ee50d95
        panel = ComparePanel(tones, ["backend=test,policy=alignatt"], view="widgets")
        panel.widget
        editor = panel._editor
        editor.backend.value, editor.policy.value, editor.options.value = "test", "alignatt", ""
        editor.apply.click()
        live = LivePanel(tones, "backend=test,policy=alignatt", view="text")
        await live.start()
    for message in (panel.columns[0].state.error, html.unescape(editor.message.value), live.state.error):
        assert "capability 'incremental-decoding'" in message
        assert "use backend=attentive" in message and "--backend" not in message  # before: "use --backend attentive"


def test_one_configuration_string_is_one_column_and_bad_panel_arguments_are_refused(tones):
    # Before, a lone string was iterated: one column per character, each with an error.
    panel = ComparePanel(tones, "backend=test,min_chunk=0.5", view="text")
    assert [c.config.label for c in panel.columns] == [StreamConfig.parse("backend=test,min_chunk=0.5").label]
    with pytest.raises(ValueError, match="^chunk_seconds must be a number of seconds > 0, not 0$"):
        ComparePanel(tones, ["backend=test"], chunk_seconds=0)
    with pytest.raises(ValueError, match="^chart_seconds must be a number of seconds >= 0, not -1$"):
        ComparePanel(tones, ["backend=test"], chart_seconds=-1)
    with pytest.raises(TypeError, match="^reference must be the text said in the audio"):
        LivePanel(tones, "backend=test", reference=5)


async def test_a_reference_of_only_whitespace_is_no_reference(tones, tone_wav):
    panel = ComparePanel(tones, ["backend=test,min_chunk=0.5"], reference=" \n\t ", view="widgets")
    header = panel.widget.children[0].value
    assert "no reference (no WER)" in header and "with a reference" not in header  # before: "with a reference"
    await panel.start()
    assert panel.results.loc[0, "reference"] == ""
    # As an empty reference is: given, it is not looked for beside the file.
    assert audio_source(tone_wav, "   ").reference == audio_source(tone_wav, "").reference == ""
    assert audio_source(tone_wav).reference == TEXT


def test_the_panels_palette_is_the_plots_palette_for_any_number_of_configurations():
    from matplotlib.colors import to_hex

    from rtlab.eval.plots import _colors
    from rtlab.widgets.charts import color

    for count in (1, 10, 11, 20):
        assert [color(i, count) for i in range(count)] == [to_hex(c) for c in _colors(count)]
    assert len({color(i, 20) for i in range(20)}) == 20
    with pytest.raises(ValueError, match="2 given for 3 configurations"):
        _colors(3, ["red", "blue"])


async def test_a_stream_that_fails_midway_keeps_its_error_and_the_others_finish(tones):
    # A model name of its own: a fresh backend instance, whose calls are counted from zero.
    failing_config = "backend=test,model=fails-in-test-widgets,fail_after=3,min_chunk=0.5"
    panel = ComparePanel(tones, ["backend=test,min_chunk=0.5", failing_config], view="widgets")
    panel.widget
    await panel.start()
    good, failing = panel.columns
    assert good.state.status == "done" and failing.state.status == "failed"
    assert failing.state.error == "RuntimeError: test backend failing on call 3, as configured"
    assert panel.results.set_index("config.name").loc[failing.config.label, "error"]


async def test_virtual_clocks_stream_and_a_cost_model_that_cannot_load_shows_its_error(tones, tmp_path):
    unaware = ComparePanel(tones, ["backend=test,min_chunk=0.5"], clock="unaware", view="text")
    await unaware.start()
    assert unaware.columns[0].state.text == TEXT and unaware.bench.clock == "unaware"
    missing = tmp_path / "costs.json"
    modeled = ComparePanel(tones, ["backend=test,min_chunk=0.5"], clock="modeled", cost_model=missing, view="text")
    await modeled.start()
    (column,) = modeled.columns
    assert column.state.status == "failed" and str(missing) in column.state.error and "\n" not in column.state.error
    # A cost model given with another clock fails the panel in a line, not silently unused.
    for panel in (ComparePanel(tones, ["backend=test"], clock="unaware", cost_model=missing, view="text"),
                  LivePanel(tones, "backend=test", clock="simulated", cost_model=missing)):  # fmt: skip
        await panel.start()
        (column,) = panel.columns if isinstance(panel, ComparePanel) else (panel,)
        assert column.state.status == "failed", column.state.error
        assert column.state.error.endswith("add clock='modeled', or leave cost_model out")
    with pytest.raises(ValueError, match="unknown clock mode"):
        LivePanel(tones, "backend=test", clock="sundial")


async def test_a_missing_calibration_names_the_panels_argument_and_keeps_the_shell_command(tones):
    """rtlab's own cost model has no calibration for the test backend: the fix is a
    calibration into a file of the user's, then cost_model='FILE' (the CLI says --cost-model);
    the quoted `rtlab calibrate` command keeps its shell flags."""
    panel = LivePanel(tones, "backend=test,min_chunk=0.5", clock="modeled", view="text")
    await panel.start()
    assert panel.state.status == "failed"
    assert "rtlab calibrate --backend test " in panel.state.error
    assert panel.state.error.endswith(", then pass cost_model='rtlab-costs.json'")  # before: --cost-model rtlab-costs.json


class GermanBackend(ToneBackend):
    """A multilingual backend that detects German in whatever it hears."""

    name = "german"

    def default_language(self) -> str | None:
        return None

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        return "de", 0.99


async def test_a_detected_language_is_scored_with_its_own_normalizer(tones, tone_corpus):
    """No language asked for and none known of the audio: the streams' detected German is
    scored with Whisper's basic normalizer. Before, the unknown language counted as English
    and German was scored with the English normalizer (which rewrites numbers and spellings)."""
    from rtlab.eval.bench import run_bench_async as run_bench

    with registered(GermanBackend):
        panel = ComparePanel(tones, ["backend=german,min_chunk=0.5"], view="text")
        await panel.start()
        bench = await run_bench(tone_corpus, [StreamConfig.parse("backend=german")], clock="unaware", progress=False)
    assert panel.columns[0].state.summary["language"] == "de"
    assert panel.bench.normalizer == "whisper-basic"
    assert {s.language for s in bench.streams} == {"de"} and bench.normalizer == "whisper-basic"
    assert {s.normalizer for s in bench.streams} == {"whisper-basic"}
    english = await run_bench(tone_corpus, [StreamConfig.parse("backend=test")], clock="unaware", progress=False)
    assert english.normalizer == "whisper-english"


def test_a_backend_name_alone_is_a_configuration():
    """As stream_file and AudioProcessor take it (before: "expected KEY=VALUE, got 'test'")."""
    from rtlab.widgets.configs import as_config

    assert as_config("test") == StreamConfig(backend="test").validate()


async def test_a_missing_file_shows_its_error_in_every_column(tmp_path):
    missing = tmp_path / "nowhere.ogg"
    panel = ComparePanel(missing, ["backend=test", "backend=test,min_chunk=2"], view="widgets")
    panel.widget
    await panel.start()
    assert [c.state.error for c in panel.columns] == [f"audio file not found: {missing}"] * 2
    with pytest.raises(RuntimeError, match="no results"):
        panel.results
    live = LivePanel(missing, "backend=test", view="text")
    await live.start()
    assert live.state.status == "failed" and "audio file not found" in live.state.error


# --------------------------------------------------------------------------- stopping


async def test_stopping_a_live_panel_mid_stream_ends_its_ffmpeg(tone_wav, ffmpeg_children, no_ffmpeg_left):
    panel = LivePanel(tone_wav, "backend=test,min_chunk=0.5", clock="wall", view="widgets")
    panel.widget
    panel.start()
    await until(lambda: panel.state.committed)
    assert len(ffmpeg_children()) == 1  # one session, one FFmpeg
    await panel.stop()
    assert ffmpeg_children() == []
    assert panel.state.status == "stopped" and not panel.running
    assert panel.state.text and panel.state.text != TEXT
    assert not rtlab_tasks()
    assert not panel._start_button.disabled and panel._stop_button.disabled
    with pytest.raises(RuntimeError, match="stopped before the end"):
        panel.results


async def test_the_stop_button_ends_every_stream_of_a_compare_panel(tone_wav, no_ffmpeg_left):
    panel = ComparePanel(tone_wav, ["backend=test,min_chunk=0.5", "backend=test,min_chunk=1"], clock="wall",
                         view="widgets")  # fmt: skip
    panel.widget
    panel.start()
    await until(lambda: any(c.state.committed for c in panel.columns))
    panel._stop_button.click()
    await panel.wait()
    assert [c.state.status for c in panel.columns] == ["stopped", "stopped"]
    assert not rtlab_tasks()
    assert panel.stop() is not None  # stopping twice is harmless


@pytest.mark.parametrize("kind", [LivePanel, ComparePanel])
async def test_stopping_a_panel_while_it_scores_waits_for_the_scores_and_keeps_them(tones, monkeypatch, kind):
    import threading

    from rtlab.widgets import scoring

    release, scored = threading.Event(), threading.Event()

    def held_scoring(*args, **options):
        release.wait(60)
        try:
            return real(*args, **options)
        finally:
            scored.set()

    real = scoring.score_streams
    monkeypatch.setattr(scoring, "score_streams", held_scoring)
    panel = kind(tones, "backend=test,min_chunk=0.5", reference=TEXT, clock="simulated", view="text")
    panel.start()
    state = panel.state if kind is LivePanel else panel.columns[0].state  # a run makes new columns
    await until(lambda: state.status == "scoring")
    stopping = panel.stop()
    for _ in range(50):  # before, the stop was over in a few turns of the loop, the scoring thread still going
        await asyncio.sleep(0)
    assert not stopping.done()
    release.set()
    await stopping
    assert scored.is_set()  # no thread left scoring after the stop
    assert state.status == "done" and panel.results.loc[0, "wer.value"] == 0.0


@pytest.mark.parametrize("kind", [LivePanel, ComparePanel])
async def test_stop_then_start_in_one_cell_runs_anew_once_the_stopped_run_has_ended(kind, tone_wav, no_ffmpeg_left):
    panel = kind(tone_wav, "backend=test,min_chunk=0.5", clock="wall", view="widgets")
    panel.widget

    def state():
        return panel.state if kind is LivePanel else panel.columns[0].state  # a run makes new columns

    old = panel.start()
    await until(lambda: state().committed)
    stopping = panel.stop()
    new = panel.start()
    assert new is not old and panel.running  # before, start() gave back the run being stopped, and none followed
    await stopping
    assert old.done() and panel.running
    await panel.wait()
    assert state().status == "done" and state().text == TEXT
    assert panel.results.loc[0, "wer.value"] == 0.0
    # Stopped again while it waits for the stopped run, the new run ends after that one.
    panel.start()
    await until(lambda: state().committed)
    first = panel._task
    panel.stop()
    second = panel.start()
    await panel.stop()
    assert first.done() and second.done() and not panel.running
    assert state().status == "stopped" and not rtlab_tasks()


async def test_a_new_panel_from_the_same_cell_stops_the_old_one_first(tone_wav, monkeypatch, ffmpeg_children,
                                                                      no_ffmpeg_left):  # fmt: skip
    monkeypatch.setattr("rtlab.widgets.panel.cell_key", lambda: "cell 7")
    old = LivePanel(tone_wav, "backend=test,min_chunk=0.5", clock="wall", view="text")
    old.start()
    await until(lambda: old.state.committed)
    new = LivePanel(tone_wav, "backend=test,min_chunk=0.5", clock="wall", view="text")
    assert new.state.status == "idle"
    new.start()
    assert new.state.status == "waiting"
    await until(lambda: new.state.committed)
    assert old.state.status == "stopped" and not old.running
    assert len(ffmpeg_children()) == 1
    await new.stop()


@contextlib.contextmanager
def kernel_cells():
    """A real Jupyter kernel; yields ``run(code)``, which runs one cell and returns its output."""
    jupyter_client = pytest.importorskip("jupyter_client.manager", reason="pip install -e '.[test]' (ipykernel)")
    manager, client = jupyter_client.start_new_kernel(kernel_name="python3")
    try:
        def run(code: str) -> str:
            out: list[str] = []
            reply = client.execute_interactive(code, timeout=60, output_hook=lambda m: out.append(
                m["content"].get("text", "") if m["msg_type"] == "stream" else
                "ERROR " + m["content"]["evalue"] if m["msg_type"] == "error" else ""))  # fmt: skip
            assert reply["content"]["status"] == "ok", "".join(out)
            return "".join(out)

        yield run
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_rerunning_a_cell_in_a_kernel_stops_the_streams_its_panel_left_running(tmp_path, ffmpeg_children):
    clip = tmp_path / "long.wav"
    clip.write_bytes(wav_bytes(tone_words(" ".join([TEXT] * 4))[0]))  # 10 s: still streaming when re-run
    with kernel_cells() as run:
        cell = f"panel = LivePanel({str(clip)!r}, 'backend=test,min_chunk=0.5', clock='wall'); panel.start()"
        run("from rtlab.widgets import LivePanel")
        run(cell)
        run("import asyncio\nwhile not panel.state.committed: await asyncio.sleep(0.05)\nfirst = panel")
        assert len(ffmpeg_children()) == 1
        run(cell)  # the same cell again
        out = run("await first.wait()\nprint(first.state.status, first.running, panel.state.status)")
        assert out.split() == ["stopped", "False", "waiting"] or out.split()[:2] == ["stopped", "False"]
        run("while not panel.state.committed: await asyncio.sleep(0.05)")
        assert len(ffmpeg_children()) == 1  # the new stream's; the old one's has ended
        assert run("await panel.stop(); print(panel.state.status)").strip() == "stopped"
        assert ffmpeg_children() == []


def test_rerunning_a_cell_that_made_several_panels_stops_every_one_of_them(tmp_path, ffmpeg_children):
    clip = tmp_path / "long.wav"
    clip.write_bytes(wav_bytes(tone_words(" ".join([TEXT] * 4))[0]))
    with kernel_cells() as run:
        # Before, only the cell's last panel was remembered: the others streamed on, FFmpeg and all.
        cell = (f"panels = [LivePanel({str(clip)!r}, f'backend=test,min_chunk={{c}}', clock='wall', view='text') "
                "for c in (0.5, 1)]\nfor p in panels: p.start()")  # fmt: skip
        run("import asyncio\nfrom rtlab.widgets import LivePanel")
        run(cell)
        run("while not all(p.state.committed for p in panels): await asyncio.sleep(0.05)\nfirst = panels")
        assert len(ffmpeg_children()) == 2
        run(cell)
        out = run("for p in first: await p.wait()\nprint(*[p.state.status for p in first])")
        assert out.split()[-2:] == ["stopped", "stopped"]
        run("while not all(p.state.committed for p in panels): await asyncio.sleep(0.05)")
        assert len(ffmpeg_children()) == 2  # the new panels' streams only
        run("for p in panels: await p.stop()")
        assert ffmpeg_children() == []


# --------------------------------------------------------------------------- results


async def test_without_a_reference_no_stream_gets_a_wer_not_even_one_that_heard_nothing(tones):
    panel = ComparePanel(tones, ["backend=test", "backend=test,fail_after=1"], view="widgets")
    panel.widget
    await panel.start()
    heard, failed = panel.columns
    assert heard.state.text == TEXT and failed.state.status == "failed" and failed.state.text == ""
    # Before: the failed stream, which committed nothing, scored a WER of 0.0% against no
    # reference words (the stream that heard every word: "–").
    assert [s["wer"]["value"] for s in panel.bench.summaries] == [None, None]
    assert [s["offline_wer"]["value"] for s in panel.bench.summaries if s["offline_wer"]] == [None]
    assert panel.results["wer.value"].isna().all()
    wer_cells = re.findall(r"<tr><td[^>]*>.*?</td><td[^>]*>(.*?)</td>", panel._table.value.split("<tbody>")[1])
    assert wer_cells == ["–", "–"]
    assert panel._plot.layout.display == "none"  # no WER to plot against latency


async def test_results_are_a_dataframe_and_save_as_rtlab_bench_writes_them(tone_corpus, tmp_path):
    from rtlab.eval.bench import run_bench_async
    from rtlab.eval.corpus import load_corpus

    utterance = load_corpus(tone_corpus)[0]
    configs = ["backend=test,min_chunk=0.5", "backend=test,min_chunk=1"]
    panel = ComparePanel(utterance, configs, view="text")
    await panel.start()
    frame = panel.results
    assert list(frame["config.name"]) == [c.label for c in (StreamConfig.parse(c) for c in configs)]
    assert {"hypothesis", "wer.value", "latency.median", "latency.p95", "first_text_latency", "rtf"} <= set(frame)
    assert list(frame["hypothesis"]) == [utterance.text] * 2
    written = panel.save(tmp_path / "panel")
    assert [p.name for p in written] == ["results.jsonl", "wer_vs_latency.png", "latency_cdf.png", "lag.png",
                                         "timeline.png"]  # fmt: skip
    mine = [json.loads(line) for line in (tmp_path / "panel" / "results.jsonl").read_text().splitlines()]
    bench = await run_bench_async(tone_corpus, [StreamConfig.parse(c) for c in configs])
    theirs = bench.records()
    assert [r["record"] for r in mine] == ["run", "stream", "stream", "summary", "summary"]
    for kind in ("run", "stream", "summary"):
        assert {tuple(sorted(r)) for r in mine if r["record"] == kind} == \
               {tuple(sorted(r)) for r in theirs if r["record"] == kind}  # fmt: skip


def test_audio_can_be_int16_samples_or_an_utterance(tones, tone_corpus):
    from rtlab.eval.corpus import load_corpus
    from rtlab.widgets.sources import audio_source

    pcm = (tones * 32767).astype(np.int16)
    source = audio_source(pcm, reference=TEXT)
    assert source.samples.dtype == np.float32 and np.allclose(source.samples, tones, atol=1e-4)
    utterance = load_corpus(tone_corpus)[0]
    assert audio_source(utterance).reference == utterance.text
    with pytest.raises(ValueError, match="mono"):
        audio_source(np.zeros((2, 100), np.float32))
    with pytest.raises(TypeError, match="file path, a corpus Utterance or a 1-D NumPy array"):
        audio_source(42)


# --------------------------------------------------------------------------- the editor


async def applied(editor) -> str:
    """Click the editor's Add/Apply, wait for its check (a model load, in a worker thread)
    and return the message shown under the fields, as text."""
    editor.apply.click()
    await until(lambda: "loading its model" not in message_text(editor))
    return message_text(editor)


def message_text(editor) -> str:
    """The message under the editor's fields, as the user reads it (no markup)."""
    return html.unescape(re.sub(r"<[^>]+>", "", editor.message.value))


async def test_the_editor_adds_and_changes_configurations_from_registry_dropdowns(tones):
    panel = ComparePanel(tones, ["backend=test,min_chunk=1"], view="widgets")
    panel.widget
    editor = panel._editor
    assert set(editor.backend.options) == set(get_registry().names("backend"))
    assert set(editor.policy.options) == set(get_registry().names("policy"))
    editor.backend.value, editor.options.value = "test", "min_chunk=0.5"
    await applied(editor)
    assert [c.config.label for c in panel.columns] == ["test local-agreement min_chunk=1",
                                                        "test local-agreement min_chunk=0.5"]  # fmt: skip
    assert len(panel._columns_box.children) == 2
    editor.target.value = 0
    assert editor.options.value == "min_chunk=1" and editor.apply.description == "Apply"
    editor.options.value = "min_chunk=2, compute_rtf=0"
    await applied(editor)
    assert panel.columns[0].config.policy_options == {"min_chunk": 2}
    editor.target.value = -1
    editor.options.value = "no_such_option=1"
    editor.apply.click()
    assert "no_such_option" in editor.message.value and len(panel.columns) == 2
    editor.target.value = 1
    editor.delete.click()
    assert len(panel.columns) == 1
    task = panel.start()
    with pytest.raises(RuntimeError, match="stop it"):
        panel.add("backend=test")
    assert editor.apply.disabled
    await task


# --------------------------------------------------------------------------- outside Jupyter


SCRIPT = """
from rtlab.testing import tone_words
from rtlab.widgets import ComparePanel, LivePanel
audio = tone_words("alpha bravo charlie")[0]
panel = ComparePanel(audio, ["backend=test,min_chunk=0.5", "backend=nope"], reference="alpha bravo charlie")
assert panel.view == "text" and panel.widget is None
panel.run()
print("=== describe ===")
print(panel)
print(panel._repr_mimebundle_()["text/plain"] == str(panel))
"""


def test_outside_jupyter_panels_print_a_readable_text_form():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    streamed, _, described = result.stdout.partition("=== describe ===\n")
    assert "comparing 2 configurations on array (1.8 s) (simulated clock)" in streamed
    assert "[2] backend=nope: unknown backend 'nope'" in streamed
    assert "alpha" in streamed and "WER" in streamed and "0.0%" in streamed
    assert "[1] test local-agreement min_chunk=0.5: done" in described
    assert "    alpha bravo charlie" in described
    assert "error: unknown backend 'nope'" in described
    assert described.rstrip().endswith("True")


def test_importing_the_widgets_loads_no_heavy_module():
    code = (
        "import sys, rtlab; rtlab.widgets; from rtlab.widgets import ComparePanel, LivePanel; "
        "print(','.join(m for m in ('ipywidgets', 'matplotlib', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_run_refuses_a_running_event_loop_and_start_needs_one(tones):
    panel = ComparePanel(tones, ["backend=test"], view="text")
    with pytest.raises(RuntimeError, match="panel.run()"):
        panel.start()

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="await panel.wait"):
            panel.run()

    asyncio.run(inside())


# --------------------------------------------------------------------------- the editor's checks


class LoadsOnCue(ToneBackend):
    """A tone backend whose model is English-only, says so only once loaded (as Whisper's
    do), and loads when the test lets it; a model named "missing" is not found."""

    name = "loads-on-cue"
    cue = None  # a threading.Event the load waits for, when set

    def load(self) -> None:
        if LoadsOnCue.cue is not None:
            assert LoadsOnCue.cue.wait(30)
        if self.model == "missing":
            raise rtlab.errors.ModelNotFound("loads-on-cue: no model 'missing'; use model=tones")

    def languages(self) -> list[str] | None:
        return ["en"] if self.loaded else None


async def test_the_editor_says_ready_only_once_the_model_loaded_and_transcribes_the_language(tones):
    import threading

    LoadsOnCue.cue = threading.Event()
    try:
        with registered(LoadsOnCue):
            panel = ComparePanel(tones, ["backend=test"], view="widgets")
            panel.widget
            editor = panel._editor
            editor.backend.value, editor.options.value = "loads-on-cue", "language=xx"
            editor.apply.click()
            # While the model loads: not ready, not applied, the fields locked.
            assert message_text(editor) == "loads-on-cue local-agreement language=xx: loading its model to check it …"
            assert len(panel.columns) == 1 and editor.apply.disabled and editor.options.disabled
            panel._redraw()  # the panel's redraw between runs does not unlock them
            assert editor.apply.disabled and editor.checking is not None
            LoadsOnCue.cue.set()
            await until(lambda: editor.checking is None)
            message = message_text(editor)
            # Before: "loads-on-cue local-agreement language=xx: ready", and the run failed at start.
            assert "does not transcribe language 'xx'" in message and "ready" not in message
            assert len(panel.columns) == 1 and not editor.apply.disabled
            editor.options.value = "language=en"
            assert (await applied(editor)).endswith("language=en: ready") and len(panel.columns) == 2
            editor.target.value, editor.options.value = -1, "model=missing"
            message = await applied(editor)
            assert message == "loads-on-cue: no model 'missing'; use model=tones" and len(panel.columns) == 2
    finally:
        LoadsOnCue.cue.set()  # a load still waiting (the test failed) ends
        LoadsOnCue.cue = None


async def test_the_editor_says_that_a_decoder_and_its_options_are_not_used_by_the_panel(tones):
    panel = ComparePanel(tones, [], view="widgets")
    panel.widget
    editor = panel._editor
    editor.backend.value, editor.options.value = "test", "stop_timeout=1"
    # Before: "test local-agreement stop_timeout=1: ready", and the replay ignored it.
    assert (await applied(editor)) == (
        "test local-agreement stop_timeout=1: ready; its decoder 'ffmpeg' and decoder options are not used here: "
        "the panel decodes the audio once and feeds every stream raw PCM"
    )
    editor.options.value = "min_chunk=0.5"
    assert (await applied(editor)) == "test local-agreement min_chunk=0.5: ready"
    assert len(panel.columns) == 2


async def test_the_editor_refuses_a_language_tiny_en_does_not_transcribe_on_faster_whisper(tones):
    if "faster-whisper" not in get_registry().names("backend"):
        pytest.skip("the faster-whisper plugin is not installed")
    panel = ComparePanel(tones, [], view="widgets")
    panel.widget
    editor = panel._editor
    editor.backend.value, editor.options.value = "faster-whisper", "language=xx"
    message = await applied(editor)
    # Before: "faster-whisper local-agreement language=xx: ready".
    assert message == ("faster-whisper model 'tiny.en' is English-only and does not transcribe language 'xx'; "
                       "use a multilingual model (e.g. base), or language en")  # fmt: skip
    editor.options.value = "language=German"
    assert "does not transcribe language 'de'" in await applied(editor)
    editor.model.value, editor.options.value = "no-such-model", ""
    assert "could not load model 'no-such-model'" in await applied(editor)
    assert panel.columns == []
    editor.model.value, editor.options.value = "tiny.en", "language=English"
    assert await applied(editor) == "faster-whisper:tiny.en local-agreement language=en: ready"
    assert [c.config.language for c in panel.columns] == ["en"]


def test_the_editor_reads_a_list_value_it_shows(tones):
    # Before, its options were split at every comma: "temperature=[0, 0.2]", the editor's
    # own text for such a column, was refused ("expected KEY=VALUE, got ' 0.2]'").
    pytest.importorskip("rtlab_faster_whisper")
    config = StreamConfig.parse("backend=faster-whisper,temperature=[0, 0.2],min_chunk=1")
    panel = ComparePanel(tones, [config], view="widgets")
    panel.widget
    editor = panel._editor
    editor.target.value = 0
    assert "temperature=[0, 0.2]" in editor.options.value
    assert StreamConfig.from_mapping(editor.mapping()) == config


def test_a_panel_whose_only_stream_failed_before_measuring_still_gives_a_table():
    """A stream that failed before its summary has unknown audio seconds (None); before,
    the panel's run took them as the run's audio and its table raised a TypeError."""
    import types

    from rtlab.widgets.scoring import ScoredStream, score_streams

    source = types.SimpleNamespace(path=None, label="mic", samples=None, reference="hello world", language="en")
    failed = [{"type": "error", "message": "backend failed", "emitted_at": 1.0}]
    run = score_streams(source, [ScoredStream(StreamConfig.parse("backend=test").validate(), failed)], clock="unaware")
    assert run.streams[0].audio_seconds is None and run.audio_seconds == 0.0
    assert "no RTF, no stream measured its audio and compute seconds" in run.table()


def test_a_streams_text_writes_a_joining_word_on_to_the_word_before():
    from rtlab.widgets.state import StreamState

    state = StreamState("de")
    state.add({"type": "commit", "words": [{"text": "Unabhängigkeit", "start": 0.3, "end": 1.0}], "emitted_at": 1.5})
    state.add({"type": "commit", "words": [{"text": "serklärung", "start": 1.0, "end": 1.5, "joins": True}], "emitted_at": 2.0})
    assert state.text == "Unabhängigkeitserklärung"
    # A partial whose first word is the rest of the last committed one goes on from it too.
    from rtlab.widgets.views import text_html

    state.add({"type": "partial", "text": "s Ziel", "joins": True, "emitted_at": 2.1})
    assert "Unabhängigkeitserklärung[s Ziel]" in state.describe()
    assert "Unabhängigkeitserklärung</span><span class='rtlab-partial'" in text_html(state)
    state.add({"type": "partial", "text": "das Ziel", "emitted_at": 2.2})
    assert "Unabhängigkeitserklärung [das Ziel]" in state.describe()
    assert "Unabhängigkeitserklärung</span> <span class='rtlab-partial'" in text_html(state)



class RefusesLoadedModels(LocalAgreement):
    """A plugin policy that refuses the model once it is loaded (as AlignAtt refuses a
    loaded openai-whisper set to beam search): a refusal that only a stream's start can
    make, not the configuration's check, which builds the policy on an unloaded backend."""

    name = "refuses-loaded-models"

    def __init__(self, backend, **options):
        if backend.loaded:
            raise InvalidOption("refuses-loaded-models: the loaded model has no incremental decoder")
        super().__init__(backend, **options)


async def test_a_policy_that_refuses_the_loaded_model_fails_its_own_column_and_the_others_go_on(tones):
    # Before, the panel checked only the language ahead of the replay; a policy's refusal
    # at the stream's start failed the replay, and with it every column.
    with registered(RefusesLoadedModels, "policy"):
        panel = ComparePanel(tones, ["backend=test,policy=refuses-loaded-models", "backend=test,min_chunk=0.5"], view="widgets")
        panel.widget
        await panel.start()
    refused, free = panel.columns
    assert refused.state.status == "failed", refused.state.status
    assert "refuses-loaded-models: the loaded model has no incremental decoder" in refused.state.error
    assert free.state.status == "done" and free.state.error is None and free.state.text == TEXT
