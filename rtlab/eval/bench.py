"""``rtlab bench CORPUS``: replay a corpus through several configurations and score them.

For every file of the corpus: decode it once, run one offline pass per distinct backend
configuration (reference word times and offline WER, see :mod:`rtlab.eval.offline`), replay it
through all configurations at once (:mod:`rtlab.eval.replay`), and score each stream
(:func:`rtlab.eval.results.evaluate_stream`). Then pool per configuration
(:func:`rtlab.eval.results.summarize`), write ``results.jsonl``, print a table and save plots.

Library use (a script or a notebook cell)::

    from rtlab import StreamConfig
    from rtlab.eval.bench import run_bench
    run = run_bench("speech/", [StreamConfig.parse("backend=test,min_chunk=0.5")])
    print(run.table())
    run.write("results/")
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import StreamConfig
from ..core.clock import MEASURED_MODES, check_clock
from ..core.costs import cost_model_summary, load_cost_model
from ..core.memo import PassMemo
from ..core.scheduler import available_cores
from ..errors import RtlabError
from ..kernels import describe_kernels


__all__ = [
    "BenchInterrupted", "BenchRun", "format_table", "hardware_summary", "load_grid", "resolve_normalizer",
    "run_bench", "run_bench_async",
]  # fmt: skip

_TABLE_COLUMNS = (
    "configuration", "WER", "offline WER", "kept", "median latency", "p95 latency", "median first text", "RTF",
)  # fmt: skip
#: The progress bar is drawn at most this often (seconds).
REDRAW_SECONDS = 0.5
#: Under the table: what each column's figure is, and over what.
_TABLE_LEGEND = (
    "pooled over the files (counts and seconds summed): WER, offline WER, kept (of the offline pass's words), RTF; "
    "median and p95 latency: commit latency over every word of every file; median first text: over the streams"
)


# --------------------------------------------------------------------------- configurations


def load_grid(path: str | os.PathLike[str]) -> list[StreamConfig]:
    """StreamConfigs described by a TOML file.

    Top-level keys are defaults for every configuration. A ``[grid]`` table maps keys to
    lists of values: one configuration per combination (the cartesian product). Each
    ``[[config]]`` table adds one configuration (over the defaults). With neither, the
    defaults are the one configuration::

        backend = "faster-whisper"
        model = "tiny.en"

        [grid]
        compute_type = ["int8", "float32"]
        min_chunk = [0.5, 1, 2]

        [[config]]
        name = "base, 1 s"
        model = "base"
        min_chunk = 1

    Raises ``ValueError`` for a file that is not valid TOML or not of this shape, and the
    errors of :meth:`StreamConfig.from_mapping` for unknown plugins or options.
    """
    import tomllib

    source = Path(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML ({exc})") from exc
    grid = data.pop("grid", None)
    explicit = data.pop("config", None)
    defaults = data
    for key, value in defaults.items():
        if isinstance(value, (dict, list)):
            raise ValueError(
                f"{source}: top-level {key!r} must be a single value (a default); "
                f"put lists of values under [grid]"
            )
    combos: list[dict[str, Any]] = []
    if grid is not None:
        if not isinstance(grid, dict) or not grid:
            raise ValueError(f"{source}: [grid] must be a table of key = [values]")
        keys = list(grid)
        values = [v if isinstance(v, list) else [v] for v in grid.values()]
        if any(not v for v in values):
            raise ValueError(f"{source}: every [grid] key needs at least one value")
        combos += [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    if explicit is not None:
        if not isinstance(explicit, list) or not all(isinstance(c, dict) for c in explicit):
            raise ValueError(f"{source}: [[config]] entries must be tables")
        combos += explicit
    if not combos:
        combos = [{}]
    return [StreamConfig.from_mapping({**defaults, **combo}) for combo in combos]


def resolve_normalizer(normalizer: str, languages: Sequence[str | None]) -> str:
    """The normalizer name to score with: ``"auto"`` picks Whisper's English normalizer when
    every language is English (or unknown) and the basic one otherwise."""
    from .metrics import NORMALIZERS, normalizer_for_language

    if normalizer != "auto":
        if normalizer not in NORMALIZERS:
            raise ValueError(f"unknown normalizer {normalizer!r}; choose auto, {', '.join(NORMALIZERS)}")
        return normalizer
    names = {normalizer_for_language(lang) for lang in languages} or {"whisper-english"}
    return names.pop() if len(names) == 1 else "whisper-basic"


# --------------------------------------------------------------------------- running


@dataclass
class BenchRun:
    """The outcome of one benchmark: per-stream results and per-configuration summaries.

    ``streams`` holds one :class:`~rtlab.eval.results.StreamResult` per (file, configuration);
    ``summaries`` one dict per configuration (``name``, ``config`` and the fields of
    :func:`~rtlab.eval.results.summarize`), in the order the configurations were given;
    ``backends`` what each configuration's backend reported about itself (``info()``:
    the model, device and compute type it actually used).
    """

    corpus: str
    configurations: list[StreamConfig]
    clock: str
    normalizer: str
    long_form: bool
    streams: list[Any] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    replay_wall_seconds: float = 0.0
    offline_wall_seconds: float = 0.0
    #: "together" (every configuration at once) or "one at a time".
    replay_mode: str = "together"
    #: The modeled clock's cost model: its file, hash and hardware (None on other clocks).
    cost_model: dict[str, Any] | None = None
    #: On the modeled and unaware clocks, backend calls of the replay made once and then
    #: reused by other configurations (see :mod:`rtlab.core.memo`); both 0 otherwise.
    model_calls: int = 0
    reused_calls: int = 0
    #: On the modeled and unaware clocks, passes of the replay batched up to this many per
    #: model call where a backend batches (``run_bench(batch=...)``); None: not batched.
    batch: int | None = None
    #: The run was stopped (Ctrl-C) before every clip was done: it holds the clips that
    #: were (``files`` of ``files_planned``); see :class:`BenchInterrupted`.
    interrupted: bool = False
    files_planned: int | None = None
    #: ``(partial, target)``: the joined long-form WAV, still under its partial name, that
    #: :meth:`write` renames to ``target`` (the file the streams name) along with
    #: ``results.jsonl`` (``run_bench(place_long_form=False)``); None otherwise.
    long_form_pending: tuple[Path, Path] | None = None

    def run_record(self) -> dict[str, Any]:
        """The first line of ``results.jsonl``: what was run, where, and how long it took."""
        return {
            "record": "run",
            "corpus": self.corpus,
            "files": len({s.file for s in self.streams}),
            "audio_seconds": self.audio_seconds,
            "configurations": [c.to_dict() for c in self.configurations],
            "backends": self.backends,
            "clock": self.clock,
            "normalizer": self.normalizer,
            "long_form": self.long_form,
            "replay_mode": self.replay_mode,
            "cost_model": self.cost_model,
            "wall_seconds": self.wall_seconds,
            "replay_wall_seconds": self.replay_wall_seconds,
            "offline_wall_seconds": self.offline_wall_seconds,
            "model_calls": self.model_calls,
            "reused_calls": self.reused_calls,
            "batch": self.batch,
            "interrupted": self.interrupted,
            "files_planned": self.files_planned,
            "environment": self.environment,
        }

    def records(self) -> list[dict[str, Any]]:
        """Every line of ``results.jsonl``: the run, one per stream, one per configuration.

        Each line names its clock mode, normalizer and environment (hardware, versions).
        """
        common = {"clock": self.clock, "cost_model": self.cost_model, "normalizer": self.normalizer,
                  "environment": self.environment}
        lines = [self.run_record()]
        lines += [{"record": "stream", **s.to_dict(), "environment": self.environment} for s in self.streams]
        lines += [{"record": "summary", **s, **common} for s in self.summaries]
        return lines

    def write(self, out_dir: str | os.PathLike[str], plots: bool = True) -> list[Path]:
        """Write ``results.jsonl`` into ``out_dir``, put a pending long-form WAV into place
        beside it (see :attr:`long_form_pending`), then the PNG plots (:meth:`write_plots`;
        ``ImportError`` without matplotlib, after the results are written); returns the
        paths written.

        The results and the WAV are written whole or not at all: when either fails (a full
        disk, a second Ctrl-C), neither is left, the pending WAV is removed, and an earlier
        run's results.jsonl and long-form.wav stay as they were."""
        from ..backends import written_whole

        out = Path(out_dir)
        path = out / "results.jsonl"
        written = [path]
        try:
            out.mkdir(parents=True, exist_ok=True)
            with written_whole(path) as partial, partial.open("w", encoding="utf-8") as fh:
                for record in self.records():
                    fh.write(json.dumps(record, default=_json_default) + "\n")
                if self.long_form_pending is not None:
                    # Renamed in the same folder once the results are on disk, so the two
                    # arrive together: results.jsonl never names another run's audio.
                    fh.flush()
                    joined, target = self.long_form_pending
                    os.replace(joined, target)
                    self.long_form_pending = None
                    written.append(target)
        except BaseException:
            self.discard_long_form()
            raise
        if plots:
            written += self.write_plots(out)
        return written

    def write_plots(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """The PNG plots of :func:`~rtlab.eval.plots.save_bench_plots` in ``out_dir``;
        returns their paths. ``ImportError`` without matplotlib. When one cannot be written
        (``OSError``), none of them is left in ``out_dir``: a part-written one, or an
        earlier run's, would show other results than ``results.jsonl`` beside them."""
        from . import plots as plotting

        out = Path(out_dir)
        try:
            return plotting.save_bench_plots(self.summaries, [s.to_dict() for s in self.streams], out)
        except OSError:
            for name in plotting.FILES.values():
                (out / name).unlink(missing_ok=True)
            raise

    def discard_long_form(self) -> None:
        """Remove a pending long-form WAV (see :attr:`long_form_pending`) that will not be
        written; nothing happens without one."""
        if self.long_form_pending is not None:
            self.long_form_pending[0].unlink(missing_ok=True)
            self.long_form_pending = None

    def table(self) -> str:
        """The summary table with a header naming corpus, clock, normalizer and hardware."""
        hardware = hardware_summary(self.environment)
        files = len({s.file for s in self.streams})
        header = [
            f"corpus: {self.corpus} ({files} file{'s' * (files != 1)}, {self.audio_seconds:.1f} s of audio"
            + (", long-form" if self.long_form else "") + ")",
            f"clock: {self.clock} ({self.replay_mode})   normalizer: {self.normalizer}   hardware: {hardware}",
            *([f"cost model: {cost_model_summary(self.cost_model)}"] if self.cost_model else []),
            f"wall time: {self.wall_seconds:.1f} s (replay {self.replay_wall_seconds:.1f} s, "
            f"offline passes {self.offline_wall_seconds:.1f} s "
            + ("before it)" if self.replay_mode == "one at a time" else "alongside it)")
            + (f"; {self.reused_calls} of {self.model_calls + self.reused_calls} backend calls reused"
               if self.reused_calls else "")
            + (f"; passes batched up to {self.batch} per model call" if self.batch else ""),
        ]
        return "\n".join([*header, format_table(self.summaries), *self._difference_lines()])

    def _difference_lines(self) -> list[str]:
        """A line per configuration after the first: its WER minus the first's, or why there
        is none (a failed stream, other files), so that no configuration goes unmentioned."""
        if len(self.summaries) < 2 or self.long_form:
            return []
        first = self.summaries[0]["name"]
        compared = dict(self.differences())
        failed = {s.config["name"] for s in self.streams if s.error}
        referenced = any(s.wer.reference_words for s in self.streams)
        lines = []
        for summary in self.summaries[1:]:
            name = summary["name"]
            if name in compared:
                lines.append(f"WER of {name} minus {first}: {compared[name].describe('files')}")
                continue
            why = "not on the same files"
            if failed & {first, name}:
                why = f"a stream of {first if first in failed else name} failed"
            elif not referenced:
                why = "no file has reference words"
            lines.append(f"WER of {name} minus {first}: not compared ({why})")
        return lines

    def differences(self) -> list[tuple[str, Any]]:
        """Each other configuration's WER minus the first's on the same files, with a 95%
        paired bootstrap interval over the files (:func:`~rtlab.eval.metrics.paired_difference`):
        whether the corpus can tell the two apart. A configuration with a failed stream, or
        not on every file of the first, is left out; empty with one configuration, and when
        no file has reference words (there is no WER to compare)."""
        from .metrics import paired_difference

        if len(self.summaries) < 2 or self.long_form:
            return []

        def streams(name: str) -> dict[str, Any] | None:
            mine = [s for s in self.streams if s.config["name"] == name]
            return None if any(s.error for s in mine) else {s.file: s.wer for s in mine}

        first = streams(self.summaries[0]["name"])
        if not first or not any(rate.reference_words for rate in first.values()):
            return []
        out = []
        for summary in self.summaries[1:]:
            other = streams(summary["name"])
            if other is None or set(other) != set(first):
                continue
            files = list(first)
            out.append((summary["name"], paired_difference([other[f] for f in files], [first[f] for f in files])))
        return out


async def _reference_passes(
    utterance: Any, samples: Any, configs: Sequence[StreamConfig]
) -> tuple[list[Any], tuple[float, float]]:
    """The offline pass of ``samples`` for each configuration (one per backend instance),
    all at once; returns the transcripts and when they started and the last one ended
    (``time.perf_counter()``).

    The reference hears what the streams hear: the samples as the 16-bit PCM a replay
    feeds them, with numpy's BLAS on one thread as while streams run (either difference
    alone moves Whisper's features by rounding, and with them some words)."""
    from ..core.scheduler import blas_threads
    from ..decoders.files import from_pcm16, to_pcm16
    from .offline import offline_transcribe

    streamed = from_pcm16(to_pcm16(samples))

    def transcribe(config: StreamConfig) -> Any:
        return offline_transcribe(utterance.audio, config, language=config.language or utterance.language, audio=streamed)

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    # Held on the event loop's thread, as the processors hold it: the limit is process-wide,
    # and holders on one thread let go in any order (see OneBlasThread).
    with blas_threads():
        transcripts = await asyncio.gather(*(loop.run_in_executor(None, transcribe, c) for c in configs))
    return list(transcripts), (started, time.perf_counter())


def hardware_summary(environment: Mapping[str, Any]) -> str:
    """``"2 CPUs, 23.5 GiB, x86_64, portable kernels (AVX2), FFmpeg 5.1.9"`` from
    :func:`~rtlab.eval.metrics.environment_info` output (the kernels and FFmpeg parts only
    where the environment records them; FFmpeg's CPU flags where they were set)."""
    memory = environment.get("memory_total_bytes")
    text = f"{environment.get('cpu_count')} CPUs" + (f", {memory / 2**30:.1f} GiB" if memory else "")
    text += f", {environment.get('machine')}"
    if "kernel_overrides" in environment:
        extensions = environment.get("cpu_vector_extensions") or []
        text += f" ({extensions[-1].upper().replace('_', ' ')})" if extensions else ""
        text += f", {describe_kernels(environment['kernel_overrides'])}"
    ffmpeg = environment.get("ffmpeg")
    if ffmpeg:
        text += f", FFmpeg {ffmpeg.get('version') or 'of unknown version'}"
        text += f" (-cpuflags {ffmpeg['cpuflags']})" if ffmpeg.get("cpuflags") else ""
    return text


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def format_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """One row per configuration: pooled WER, the offline pass's pooled WER, the words of the
    offline pass the streams kept (pooled), median and p95 commit latency over every word,
    the median over streams of first-text latency, and RTF (total compute over total
    audio; on the modeled clock the cost model's, with the measured RTF under the table); a
    legend under the rows says so. Streams that failed, that committed no word
    (left out of the median first text), that have no reference words or that measured no
    audio and compute seconds (left out of the RTF) are counted under the table."""
    rows = [list(_TABLE_COLUMNS)]
    failed = []
    for s in summaries:
        kept = (s.get("words_kept") or {}).get("fraction")
        rows.append([
            str(s["name"]),
            _percent(s["wer"]["value"]),
            _percent((s.get("offline_wer") or {}).get("value")),
            _percent(kept),
            _seconds(s["latency"]["median"]),
            _seconds(s["latency"]["p95"]),
            _seconds(s["first_text_latency"]["median"]),
            "-" if s["rtf"] is None else f"{s['rtf']:.3f}",
        ])  # fmt: skip
        if s.get("errors"):
            failed.append(f"{s['name']}: {s['errors']} of {s['files']} streams failed (see results.jsonl)")
        failed += _unreferenced_note(s)
        failed += _untimed_note(s)
        if "modeled" in (s.get("clock") or ()) and s.get("measured_rtf") is not None:
            failed.append(f"{s['name']}: RTF is the cost model's (modeled clock); "
                          f"measured on this machine {s['measured_rtf']:.3f}")  # fmt: skip
        said = s["first_text_latency"]["count"]
        if not said:
            failed.append(f"{s['name']}: no first text, no stream committed a word")
        elif said < s["files"]:
            failed.append(f"{s['name']}: median first text over {said} of {s['files']} streams "
                          f"({s['files'] - said} committed no word)")  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join([*lines, _TABLE_LEGEND, *failed])


def _untimed_note(summary: Mapping[str, Any]) -> list[str]:
    """Over which streams a configuration's RTF is, when some measured no audio and compute
    seconds (they failed before their summary): left out of it, not counted as 0.0."""
    without, files = summary.get("files_without_seconds") or 0, summary["files"]
    if not without:
        return []
    if without == files:
        return [f"{summary['name']}: no RTF, no stream measured its audio and compute seconds "
                "(each failed before its summary)"]
    return [f"{summary['name']}: RTF over {files - without} of {files} streams "
            f"({without} failed before measuring their audio and compute seconds)"]  # fmt: skip


def _unreferenced_note(summary: Mapping[str, Any]) -> list[str]:
    """Why a configuration's WER is missing, or what it holds, when some of its files have
    no reference words (an empty reference: such a file has no WER of its own)."""
    without, files = summary.get("files_without_reference") or 0, summary["files"]
    if not without:
        return []
    words = summary.get("words_without_reference") or 0
    if without == files:
        return [f"{summary['name']}: no WER, no file has reference words ({words} words committed against none)"]
    return [f"{summary['name']}: {without} of {files} files without reference words (no WER of their own): "
            f"the pooled WER counts their {words} committed words as insertions"]  # fmt: skip


class BenchInterrupted(RtlabError):
    """A benchmark stopped (Ctrl-C) before its last clip; ``run`` holds the clips that were
    done, scored and summarized as usual, with ``run.interrupted`` set."""

    def __init__(self, run: BenchRun) -> None:
        super().__init__(f"interrupted after {len({s.file for s in run.streams})} of {run.files_planned} clips")
        self.run = run


async def run_bench_async(
    corpus: str | os.PathLike[str],
    configurations: Sequence[StreamConfig],
    *,
    clock: str = "simulated",
    normalizer: str = "auto",
    language: str | None = None,
    long_form: bool = False,
    gap_seconds: float = 0.5,
    work_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    one_at_a_time: bool = False,
    cost_model: Any = None,
    reuse_passes: bool = True,
    clips_at_once: int | None = None,
    batch: int | None = None,
    keep_partial: bool = False,
    place_long_form: bool = True,
) -> BenchRun:
    """Benchmark ``configurations`` on the corpus at ``corpus`` (any layout
    :func:`~rtlab.eval.corpus.load_corpus` reads); see the module docstring.

    ``long_form`` joins every clip into one stream (``gap_seconds`` of silence between
    clips), kept as ``work_dir``/long-form.wav, the file its results name (default: in a
    temporary folder, removed after the run); written there only once the run has ended,
    so a run that fails leaves no file, and an earlier run's stays. ``progress``: a tqdm bar
    on stderr (``None``: only when stderr is a terminal). ``one_at_a_time`` replays one
    configuration after another instead of all at once: slower, but no pass shares the
    CPU with another configuration's (side by side, caches and memory bandwidth are
    shared, so a pass may measure a little more compute than alone, which the simulated
    clock turns into latency). The offline reference passes run alongside the replay, or
    before it one at a time. ``cost_model`` is the ``modeled`` clock's (a
    :class:`~rtlab.core.costs.CostModel` or its file; default: rtlab's reference CPU);
    results record its file, hash and hardware. ``reuse_passes``: on the modeled and
    unaware clocks, configurations replayed together share the backend calls they make
    alike (see :func:`~rtlab.eval.replay.replay_async`; the results are the same, and
    the run records how many calls were reused). ``clips_at_once``: how many clips replay
    side by side (default: one on the wall and simulated clocks, whose passes must not
    share the cores with another clip's; on the modeled and unaware clocks, where a clip's
    events do not depend on what else runs, as many as there are cores, at least two, so
    that the cores stay busy through each clip's end). ``batch``: on the modeled and
    unaware clocks, the passes of configurations whose backend batches share model calls,
    up to this many per call (see :func:`~rtlab.eval.replay.replay_async`; the results are
    the same, the run takes less CPU). ``keep_partial``: when the run is cancelled (Ctrl-C
    in ``run_bench``) after some clips are done, raise :class:`BenchInterrupted` holding
    a run of those clips, marked ``interrupted``, instead of losing them.
    ``place_long_form=False`` leaves the joined WAV under its partial name for
    :meth:`BenchRun.write` to put into place with ``results.jsonl`` (or
    :meth:`BenchRun.discard_long_form` to remove), so that a run whose results cannot be
    written leaves no long-form.wav over an earlier run's. Raises
    ``FileNotFoundError`` or ``ValueError`` for a bad corpus, and :class:`~rtlab.errors.RtlabError` subclasses when
    a backend, model or FFmpeg is missing.
    """
    import tempfile

    from tqdm.auto import tqdm  # a widget in a notebook, text on a terminal

    from ..backends import partial_path
    from ..core.instances import get_backend
    from .corpus import concatenate, load_corpus
    from .metrics import environment_info
    from ..decoders.files import decode_audio
    from .replay import _check_batch, replay_async
    from .results import detected_language, evaluate_stream, summarize

    configs = list(configurations)
    if not configs:
        raise ValueError("run_bench needs at least one configuration")
    for config in configs:
        config.validate()
    check_clock(clock)
    _check_batch(batch, clock)
    if clips_at_once is not None and clips_at_once < 1:
        raise ValueError(f"clips_at_once must be >= 1, got {clips_at_once}")
    clip_by_clip = one_at_a_time or clock in MEASURED_MODES  # a pass's compute is its latency
    if (clips_at_once or 1) > 1 and clip_by_clip:
        raise ValueError(
            f"clips_at_once={clips_at_once} needs an unmeasured clock (modeled or unaware) replaying "
            f"its configurations together: on the {clock} clock a pass's compute is its latency, "
            "and clips side by side would slow each other's passes down"
        )
    if clock == "modeled":
        cost_model = load_cost_model(cost_model)
    utterances = load_corpus(corpus, language=language)
    norm = resolve_normalizer(normalizer, [c.language or u.language for u in utterances for c in configs])
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    # The long-form WAV is written under a partial name and renamed into place once the run
    # has ended (interrupted with results included): a run that fails leaves none behind,
    # and an earlier run's long-form.wav, which its results.jsonl names, stays as it was.
    joined: Path | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="rtlab-bench-") as tmp:
            target = Path(work_dir or tmp) / "long-form.wav"
            if long_form:
                joined = partial_path(target)
                whole = await loop.run_in_executor(None, concatenate, utterances, joined, gap_seconds)
                utterances = [dataclasses.replace(whole, id=target.stem)]
            run = BenchRun(str(corpus), configs, clock, norm, long_form, environment=environment_info(),
                           replay_mode="one at a time" if one_at_a_time else "together",
                           cost_model=cost_model.describe() if clock == "modeled" else None, batch=batch)
            decoded = []
            for utt in utterances:
                decoded.append(await loop.run_in_executor(None, decode_audio, utt.audio))
            run.audio_seconds = sum(len(a) for a in decoded) / 16000
            bar = tqdm(total=round(run.audio_seconds, 1), unit="s", desc="bench", file=sys.stderr,
                       disable=(not progress) if progress is not None else None, mininterval=REDRAW_SECONDS,
                       bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}]")  # fmt: skip
            # On the modeled and unaware clocks a clip's events do not depend on what else
            # runs, so several clips replay at once: the cores stay busy through each clip's
            # end, where its last configuration would otherwise run alone.
            at_once = clips_at_once or (1 if clip_by_clip else max(2, available_cores()))
            shown = [0.0] * len(decoded)
            replaying: list[tuple[float, float]] = []  # (start, end) of each clip's replay

            async def bench_clip(index: int, utt: Any, samples: Any, turn: asyncio.Semaphore) -> tuple:
                async with turn:
                    # One reference pass per backend instance. Together, they run alongside
                    # the replay: each holds a CPU slot like a streaming pass (and goes before
                    # the replay's passes), so it fills the cores the replay leaves idle
                    # without slowing its passes down. One at a time, they run first.
                    firsts: dict[tuple, StreamConfig] = {}
                    for config in configs:
                        firsts.setdefault(_offline_key(config), config)
                    passes = asyncio.ensure_future(_reference_passes(utt, samples, list(firsts.values())))
                    if one_at_a_time:
                        bar.set_description(f"{utt.id} offline")
                        await asyncio.shield(passes)
                    bar.set_description(f"{utt.id} replay" if at_once == 1 else "replay")

                    def show(seconds: float) -> None:
                        shown[index] = seconds
                        # tqdm's update redraws at most every mininterval: called on every
                        # chunk of every stream, a redraw each time filled a notebook cell
                        # with hundreds of outputs.
                        bar.update(round(min(sum(shown), run.audio_seconds), 1) - bar.n)

                    t = time.perf_counter()
                    memo = PassMemo() if reuse_passes and clock not in MEASURED_MODES else False
                    try:
                        if one_at_a_time:
                            streams = []
                            for position, config in enumerate(configs):
                                def one(seconds: float, _position: int = position) -> None:
                                    show((_position * len(samples) / 16000 + seconds) / len(configs))

                                streams += await replay_async(
                                    samples, [config], clock=clock, progress=one, cost_model=cost_model,
                                    reuse_passes=memo, batch=batch,
                                )  # fmt: skip
                        else:
                            streams = await replay_async(
                                samples, configs, clock=clock, progress=show, cost_model=cost_model,
                                reuse_passes=memo, batch=batch,
                            )  # fmt: skip
                    except BaseException:
                        passes.cancel()  # a pass already running ends on its own thread
                        raise
                    replaying.append((t, time.perf_counter()))
                    transcripts, offline_span = await passes
                    show(len(samples) / 16000)
                    return streams, dict(zip(firsts, transcripts)), offline_span, memo

            try:
                turn = asyncio.Semaphore(at_once)
                clips = [asyncio.ensure_future(bench_clip(i, u, s, turn)) for i, (u, s) in enumerate(zip(utterances, decoded))]
                try:
                    done = list(zip(utterances, await asyncio.gather(*clips)))
                except BaseException as error:
                    for clip in clips:
                        clip.cancel()
                    await asyncio.gather(*clips, return_exceptions=True)
                    finished = [c.done() and not c.cancelled() and c.exception() is None for c in clips]
                    if not (keep_partial and isinstance(error, asyncio.CancelledError) and any(finished)):
                        raise
                    done = [(utt, clip.result()) for utt, clip, ok in zip(utterances, clips, finished) if ok]
                    run.interrupted, run.files_planned = True, len(clips)
                    run.audio_seconds = sum(len(s) for s, ok in zip(decoded, finished) if ok) / 16000
                run.replay_wall_seconds = _covered_seconds(replaying)
                # A stream that detected its language (none asked for, none known of its clip)
                # is scored with that language's normalizer, not English's.
                norm = run.normalizer = resolve_normalizer(normalizer, [
                    c.language or utt.language or detected_language(stream.events)
                    for utt, (streams, *_) in done for c, stream in zip(configs, streams)
                ] or [c.language or u.language for u in utterances for c in configs])  # fmt: skip
                # Clips side by side run their offline passes at the same time: wall
                # seconds during which one was under way, not the sum of their lengths.
                run.offline_wall_seconds = _covered_seconds([span for _, (_, _, span, _) in done])
                for utt, (streams, offline, _, memo) in done:
                    if memo:
                        run.model_calls += memo.misses
                        run.reused_calls += memo.hits
                    for config, stream in zip(configs, streams):
                        reference = offline[_offline_key(config)]
                        run.streams.append(evaluate_stream(
                            file=str(target if long_form else utt.audio), reference=utt.text, events=stream.events,
                            reference_words=reference.words, config=config.to_dict(),
                            offline_hypothesis=reference.text, normalizer=norm, clock=clock,
                            lag_samples=stream.lag_samples,
                        ))  # fmt: skip
            finally:
                bar.close()
        run.wall_seconds = time.perf_counter() - started
        for config in configs:
            run.backends[config.label] = get_backend(config).info()
        for config in configs:
            mine = [s for s in run.streams if s.config["name"] == config.label]
            run.summaries.append({"name": config.label, "config": config.to_dict(), **summarize(mine)})
    except BaseException:
        if joined is not None:
            joined.unlink(missing_ok=True)
        raise
    if joined is not None and work_dir is not None:
        if place_long_form:
            os.replace(joined, target)
        else:
            run.long_form_pending = (joined, target)
    if run.interrupted:
        raise BenchInterrupted(run)
    return run


def _covered_seconds(spans: Sequence[tuple[float, float]]) -> float:
    """Seconds during which at least one of ``spans`` (start, end) was under way."""
    total, reached = 0.0, float("-inf")
    for begin, end in sorted(spans):
        if end > reached:
            total += end - max(begin, reached)
            reached = end
    return total


def _offline_key(config: StreamConfig) -> tuple:
    return (config.model_key, config.language)


def run_bench(corpus: str | os.PathLike[str], configurations: Sequence[StreamConfig], **options: Any) -> BenchRun:
    """Blocking :func:`run_bench_async` (same arguments); in a notebook, ``await`` that one."""
    return asyncio.run(run_bench_async(corpus, configurations, **options))
