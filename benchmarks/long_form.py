"""Does a long stream stay as good as its clips? WER per clip over time, memory and lag.

Builds one stream of at least ``--minutes`` of a corpus's clips (repeated in order, joined
with seeded pauses of 0.5-3 s, as ``benchmarks/accuracy.py --long-form`` does), replays it
through each configuration (:func:`rtlab.eval.replay.replay`, one configuration after
another), streams the same clips one by one for comparison, and prints per configuration:

* WER of the long stream (every committed word goes to the clip its time span overlaps most), of
  the clips streamed one by one, and of the long stream's segments streamed one by one,
  each with the pauses around it ("segments alone"), pooled and per source clip. A clip's
  WER depends on where the passes fall in its speech, which the pause before it moves:
  the segments alone are the clips as the long stream has them, without the stream
  before them, the baseline that tells what the long stream itself costs. The clips
  alone are streamed ``--clip-shifts`` times (default 4), the k-th time after k/N s of
  digital silence as ``benchmarks/accuracy.py --shifts`` does: their WER pooled over
  the placements, and its range (one placement is one draw of where the passes fall);
* the long stream's WER minus the clips' alone and minus the segments' alone, each with a
  95% bootstrap interval that draws the source clips (a corpus of six clips repeated
  eleven times is six pieces of evidence, not sixty-six): an interval that holds 0 means
  the stream cannot be told from its clips on this corpus;
* drift: the long stream's WER over the first and the second half of the repetitions;
* memory: this process's resident set (children included: FFmpeg, when a decoder runs),
  sampled every half second of the stream's clock as its events arrive: at the start and
  end of the stream, its peak and median in each quarter of the stream, and the slope of
  a line fit over its second half in MiB per hour;
  with glibc, also what its ``malloc`` has in use and what it holds free (resident until
  trimmed, see :mod:`rtlab.core.memory`; ``RTLAB_TRIM_SECONDS=0`` runs without trims);
* lag (how far the stream is behind the audio when a pass ends): maximum and at the end;
* whether the summary is right: its audio seconds are the stream's, its text is the
  commits joined, its word count theirs.

    python benchmarks/long_form.py                                 # 10 min, default and vad
    python benchmarks/long_form.py --minutes 4 --configuration vad --clock simulated
    python benchmarks/long_form.py --offline                       # + Whisper offline on it
    python benchmarks/long_form.py --backend test --corpus DIR --minutes 0.5
    python benchmarks/long_form.py --minutes 20 --stream-only       # memory: the stream alone
    python benchmarks/long_form.py --kernels portable              # words that repeat elsewhere
    python benchmarks/long_form.py --seed 1 --stream-only --clips-alone results/long-form/long_form.json

The default clock is ``unaware`` (its words are the same on every run); memory and lag
mean most on ``simulated``, ``modeled`` or ``wall``. ``--offline`` adds one offline pass
of the whole long stream (Whisper's own 30 s windows, the same model) and one of each
segment with its pauses (what the segments alone would give offline). With ``--kernels
portable`` (as ``benchmarks/accuracy.py``), the words repeat on another x86-64 machine with
AVX2; the header names the kernels. ``--clips-alone FILE`` takes the clips alone from an
earlier run instead of streaming them again (a ``long_form.json``, or the ``accuracy.json``
of the same clips with the language given, at its placements): another draw of the pauses
then costs only its stream. The earlier run must be of the same clips, backend, model,
language, configuration options, clock and kernels, or the script says which differs; the report
and the header name the file and the rtlab version that made it. Writes
``long_form.json``, ``long_form.md`` and ``long_form.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import (  # noqa: E402
    CONFIGURATIONS, after_silence, long_form_stream, normalizer_name, parse_configurations, shift_seconds,
)

from rtlab.kernels import add_kernels_argument, pin_kernels_argument  # noqa: E402

MIB = 1024 * 1024


def assign_words(words: list[dict[str, Any]], segments: list[tuple[float, float, str]]) -> list[str]:
    """The committed text of each segment: a word belongs to the segment its time span
    overlaps most, and one in a pause to the nearer segment (ties to the earlier). Whisper
    stretches the first word after a pause back into the pause, by a second or more at
    times: by its middle, such a word would count for the clip before."""
    from rtlab.core.events import join_words

    assigned: list[list[dict[str, Any]]] = [[] for _ in segments]
    for word in words:
        start, end = float(word["start"]), float(word["end"])

        def closeness(i: int) -> tuple[float, float]:
            first, last, _ = segments[i]
            return -max(0.0, min(end, last) - max(start, first)), max(0.0, first - end, start - last)

        assigned[min(range(len(segments)), key=closeness)].append(word)
    return [join_words(segment) for segment in assigned]


class MemorySampler:
    """Resident set of this process and its children over a stream, as ``(stream seconds,
    MiB)`` pairs: the replay's event callback, sampling at most every ``every`` seconds of
    the events' ``emitted_at`` (the stream's clock)."""

    def __init__(self, every: float = 0.5) -> None:
        import psutil

        from rtlab.core.memory import malloc_usage

        self._process = psutil.Process()
        self._malloc_usage = malloc_usage
        self.every = every
        self.samples: list[tuple[float, float]] = []
        #: ``(stream seconds, MiB in use, MiB free)`` of glibc's malloc at the same moments
        #: (empty with another C library): what the resident set holds.
        self.malloc: list[tuple[float, float, float]] = []

    def rss_mib(self) -> float:
        total = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # a child that ended between listing and reading
                continue
        return total / MIB

    def __call__(self, index: int, event: dict[str, Any]) -> None:
        at = event.get("emitted_at")
        if at is None or (self.samples and float(at) - self.samples[-1][0] < self.every):
            return
        self.samples.append((float(at), self.rss_mib()))
        usage = self._malloc_usage()
        if usage is not None:
            self.malloc.append((float(at), usage["in_use"], usage["free"]))


def memory_summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    """Start (the first tenth's median), end (the last tenth's), peak, the peak and the
    median of each quarter of the stream, and the slope of a least-squares line over the
    second half, in MiB per audio hour. A pass's working buffers move the resident set up
    and down by tens of MiB within seconds: flat memory shows as quarters that peak alike
    and whose medians do not climb (freed memory kept between trims shows in the medians,
    not the peaks)."""
    import numpy as np

    if len(samples) < 4:
        return {"samples": len(samples), "start_mib": None, "end_mib": None, "peak_mib": None, "slope_mib_per_hour": None,
                "quarter_peaks_mib": None, "quarter_medians_mib": None}  # fmt: skip
    seconds = np.array([s for s, _ in samples])
    mib = np.array([m for _, m in samples])
    tenth = max(1, len(samples) // 10)
    half = seconds >= seconds[-1] / 2
    quarters = [mib[(seconds >= q * seconds[-1] / 4) & (seconds <= (q + 1) * seconds[-1] / 4)] for q in range(4)]
    slope = None
    if half.sum() >= 2 and np.ptp(seconds[half]) > 0:
        slope = float(np.polyfit(seconds[half], mib[half], 1)[0] * 3600)
    return {
        "samples": len(samples), "start_mib": float(np.median(mib[:tenth])), "end_mib": float(np.median(mib[-tenth:])),
        "peak_mib": float(mib.max()), "slope_mib_per_hour": slope,
        "quarter_peaks_mib": [float(part.max()) for part in quarters],
        "quarter_medians_mib": [float(np.median(part)) for part in quarters],
    }  # fmt: skip


def malloc_summary(samples: list[tuple[float, float, float]]) -> dict[str, Any]:
    """glibc's malloc at the start and end of the stream (medians of the first and last
    tenth), in use and held free, in MiB; empty without glibc's figures."""
    import numpy as np

    if len(samples) < 4:
        return {}
    values = np.array([(in_use, free) for _, in_use, free in samples])
    tenth = max(1, len(samples) // 10)
    start, end = np.median(values[:tenth], axis=0), np.median(values[-tenth:], axis=0)
    return {"in_use_start_mib": float(start[0]), "in_use_end_mib": float(end[0]),
            "free_start_mib": float(start[1]), "free_end_mib": float(end[1])}  # fmt: skip


def summary_check(run: Any, stream_seconds: float, language: str) -> dict[str, Any]:
    """Whether the stream's summary event agrees with the stream and its commits."""
    from rtlab.core.events import join_words

    summary = run.summary or {}
    words = [w for e in run.events if e.get("type") == "commit" for w in e["words"]]
    audio = summary.get("audio_seconds")
    checks = {
        "present": bool(summary),
        "audio_seconds": audio is not None and abs(float(audio) - stream_seconds) < 0.1,
        "text": summary.get("text") == join_words(words),
        "language": summary.get("language") == language,
    }
    return {**checks, "ok": all(checks.values()), "summary_audio_seconds": audio, "committed_words": len(words)}


def segment_audio(stream: Any, segments: list[tuple[float, float, str]]) -> list[Any]:
    """Each segment of the long stream with the pauses around it: from the end of the clip
    before it (the stream's start for the first) to the start of the clip after it (the
    stream's end for the last)."""
    pieces = []
    for index, (start, end, _) in enumerate(segments):
        begin = segments[index - 1][1] if index else 0.0
        finish = segments[index + 1][0] if index + 1 < len(segments) else len(stream) / 16_000
        pieces.append(stream[int(round(begin * 16_000)) : int(round(finish * 16_000))])
    return pieces


class AudioBar:
    """A progress bar in seconds of audio on standard error (shown on a terminal only) for
    replays run one after another: ``at`` is a replay's ``progress`` callback (seconds of
    its audio so far), ``done`` adds a finished replay's seconds."""

    def __init__(self, seconds: float, description: str) -> None:
        from tqdm import tqdm

        self.before = 0.0
        self.bar = tqdm(total=round(seconds, 1), desc=description, unit="s", file=sys.stderr, disable=None,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")  # fmt: skip

    def at(self, seconds: float) -> None:
        self.bar.n = round(min(self.before + seconds, self.bar.total), 1)
        self.bar.refresh()

    def done(self, seconds: float) -> None:
        self.before += seconds
        self.at(0.0)

    def __enter__(self) -> AudioBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def per_clip(references: list[str], hypotheses: list[str], clips: int, normalizer: str) -> list[float | None]:
    """Pooled WER of each source clip over its repetitions (segment ``i`` is clip ``i % clips``);
    None for a clip whose reference has no words but whose hypothesis has some."""
    from rtlab.eval.metrics import wer

    return [wer(references[k::clips], hypotheses[k::clips], normalizer=normalizer).defined_value for k in range(clips)]


def against_alone(references: list[str], hypotheses: list[str], clip_texts: list[str], alone: list[list[str]],
                  segments_alone: list[str], normalizer: str) -> dict[str, dict[str, Any] | None]:
    """The long stream's WER minus its clips' alone (each side pooled over its own runs of a
    clip) and minus its segments' alone (segment by segment), with 95% bootstrap intervals
    that draw the source clips: the repetitions of one clip are not independent evidence."""
    from rtlab.eval.metrics import grouped_difference, paired_difference, wer

    clips = len(clip_texts)
    streamed = [wer(ref, hyp, normalizer=normalizer) for ref, hyp in zip(references, hypotheses)]
    keys = [i % clips for i in range(len(streamed))]
    differences: dict[str, dict[str, Any] | None] = {"minus_clips_alone": None, "minus_segments_alone": None}
    if alone:
        clip_runs = [wer(clip_texts[i], text, normalizer=normalizer) for texts in alone for i, text in enumerate(texts)]
        differences["minus_clips_alone"] = grouped_difference(
            streamed, keys, clip_runs, [i for texts in alone for i in range(len(texts))]).to_dict()
    if segments_alone:
        alone_rates = [wer(ref, hyp, normalizer=normalizer) for ref, hyp in zip(references, segments_alone)]
        differences["minus_segments_alone"] = paired_difference(streamed, alone_rates, groups=keys).to_dict()
    return differences  # fmt: skip


class EarlierRunError(ValueError):
    """An earlier run's clips alone that cannot stand in for this run's."""


def clips_alone_from(path: Path, args: argparse.Namespace, configs: dict[str, Any], clip_list: list[dict[str, str]],
                     corpus: Path) -> tuple[dict[str, tuple[list[float], list[list[str]]]], dict[str, Any]]:
    """The clips alone of an earlier run (``long_form.json``, or ``accuracy.json`` of the short
    clips with the language given), per configuration name: their placements and, per
    placement, each clip's text in this corpus's order; and where they came from. The earlier
    run must be of the same clips, backend, model, language, configuration options and clock:
    anything else is :class:`EarlierRunError`, said in one line."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EarlierRunError(f"--clips-alone {path}: cannot read it: {error}") from error
    kind = report.get("benchmark") if isinstance(report, dict) else None
    if kind not in ("long_form", "accuracy"):
        raise EarlierRunError(f"--clips-alone {path}: not a long_form.json or accuracy.json report")
    if report.get("clock") != args.clock:
        raise EarlierRunError(f"--clips-alone {path}: its clock is {report.get('clock')}, this run's {args.clock}")
    from rtlab.kernels import describe_kernels, kernel_overrides

    theirs, ours = (report.get("environment") or {}).get("kernel_overrides") or {}, kernel_overrides()
    if theirs != ours:
        said = [describe_kernels(theirs), describe_kernels(ours)]
        if said[0] == said[1]:  # they differ in the thread count only
            said = [str(theirs), str(ours)]
        raise EarlierRunError(f"--clips-alone {path}: it ran with {said[0]}, this run with {said[1]} (--kernels)")
    wanted_costs = args.costs.describe() if args.costs else None
    if json.dumps(report.get("cost_model"), sort_keys=True) != json.dumps(wanted_costs, sort_keys=True, default=str):
        raise EarlierRunError(f"--clips-alone {path}: its cost model is not this run's")
    found = {}
    for name, config in configs.items():
        if kind == "long_form":
            found[name] = _alone_of_long_form(report, name, config, clip_list, corpus)
        else:
            found[name] = _alone_of_accuracy(report, args, name, config, clip_list)
        if not found[name][0]:
            raise EarlierRunError(f"--clips-alone {path}: its {name!r} run has no clips alone")
    source = report.get("clips_alone_source") or {
        "file": str(path), "benchmark": kind, "date": report.get("date"),
        "rtlab": (report.get("environment") or {}).get("packages", {}).get("rtlab")}  # fmt: skip
    return found, source


def _alone_of_long_form(report: dict[str, Any], name: str, config: Any, clip_list: list[dict[str, str]],
                        corpus: Path) -> tuple[list[float], list[list[str]]]:
    rows = {row.get("configuration"): row for row in report.get("rows", [])}
    if name not in rows:
        raise EarlierRunError(f"--clips-alone: no configuration {name!r} in it (it has: {', '.join(map(str, rows)) or 'none'})")
    row = rows[name]
    if row.get("options") != str(config):
        theirs = str(row.get("options")).split(", ")
        ours = [part for part in str(config).split(", ") if part not in theirs]
        raise EarlierRunError(f"--clips-alone: its {name!r} ran with other options ({', '.join(ours)} in this run)")
    if "clips" in report:
        if report["clips"] != clip_list:
            raise EarlierRunError("--clips-alone: its clips are not this corpus's (names or references differ)")
    elif Path(report.get("corpus", "")).resolve() != corpus.resolve():  # a report from before "clips" was written
        raise EarlierRunError(f"--clips-alone: its corpus is {report.get('corpus')}, this run's {corpus}")
    shifts = row.get("clips_alone_shifts") or []
    if any(len(s["texts"]) != len(clip_list) for s in shifts):
        raise EarlierRunError(f"--clips-alone: it has another number of clips than this corpus's {len(clip_list)}")
    return [s["shift"] for s in shifts], [list(s["texts"]) for s in shifts]


def _alone_of_accuracy(report: dict[str, Any], args: argparse.Namespace, name: str, config: Any,
                       clip_list: list[dict[str, str]]) -> tuple[list[float], list[list[str]]]:
    if report.get("backend") != args.backend:
        raise EarlierRunError(f"--clips-alone: its backend is {report.get('backend')}, this run's {args.backend}")
    options = (report.get("configurations") or {}).get(name)
    if options is None:
        raise EarlierRunError(f"--clips-alone: no configuration {name!r} in it")
    if options != args.configurations[name]:
        raise EarlierRunError(f"--clips-alone: its {name!r} is {options!r}, this run's {args.configurations[name]!r}")
    rows = [row for row in report.get("rows", []) if row.get("configuration") == name and row.get("language") == config.language
            and row.get("language_option") == "given" and not row.get("long_form")]  # fmt: skip
    if not rows:
        raise EarlierRunError(f"--clips-alone: no short clips of {name!r} in {config.language!r} with the language given in it")
    if {row.get("model") for row in rows} != {args.model}:
        raise EarlierRunError(f"--clips-alone: its model is {rows[0].get('model')}, this run's {args.model}")
    if any(row.get("errors") for row in rows):
        raise EarlierRunError(f"--clips-alone: some of its {name!r} streams failed")
    shifts, alone = [], []
    for row in sorted(rows, key=lambda row: row.get("shift") or 0.0):
        streams = {Path(s["file"]).stem: s for s in row.get("streams", [])}
        if len(streams) != len(clip_list):
            raise EarlierRunError(f"--clips-alone: its clips are not this corpus's ({len(streams)} clips at "
                                  f"+{row.get('shift') or 0:g} s, this corpus {len(clip_list)})")  # fmt: skip
        texts = []
        for clip in clip_list:
            stream = streams.get(clip["id"])
            if stream is None or stream.get("reference", "").strip() != clip["text"]:
                raise EarlierRunError(f"--clips-alone: its clips are not this corpus's ({clip['id']} missing or with "
                                      f"another reference at +{row.get('shift') or 0:g} s)")  # fmt: skip
            texts.append(stream["streamed"])
        shifts.append(row.get("shift") or 0.0)
        alone.append(texts)
    return shifts, alone


def run_configuration(args: argparse.Namespace, config: Any, stream: Any, segments: list, clips: list) -> dict[str, Any]:
    """The long stream and the clips one by one through one configuration."""
    import numpy as np

    from rtlab.eval.metrics import lag_series, wer
    from rtlab.eval.replay import replay

    normalizer = args.normalizer
    references = [text for _, _, text in segments]
    from rtlab.core import memory as process_memory

    sampler = MemorySampler()
    trim_interval, trims_before = process_memory.interval, process_memory.trims
    started = time.perf_counter()
    with AudioBar(len(stream) / 16_000, f"{config.label}: long stream") as bar:
        (run,) = replay(stream, [config], clock=args.clock, cost_model=args.costs, on_event=sampler, progress=bar.at)
    wall = time.perf_counter() - started
    trims_after = process_memory.trims
    if run.error:
        raise SystemExit(f"{config.label}: the long stream failed: {run.error}")
    words = [w for e in run.events if e.get("type") == "commit" for w in e["words"]]
    hypotheses = assign_words(words, segments)
    repetitions = len(segments) // len(clips)
    half = (repetitions // 2) * len(clips)
    shifts = shift_seconds(args.clip_shifts)
    alone: list[list[str]] = []  # per shift, per clip
    segments_alone: list[str] = []
    if args.earlier_alone:  # an earlier run's clips alone
        shifts, alone = args.earlier_alone[config.label]
    if not args.stream_only:
        pieces = segment_audio(stream, segments)
        clip_seconds = sum(len(audio) for audio, _ in clips) / 16_000
        own_shifts = [] if args.earlier_alone else shifts
        total = sum(shift * len(clips) + clip_seconds for shift in own_shifts) + sum(len(audio) for audio in pieces) / 16_000
        with AudioBar(total, f"{config.label}: clips and segments alone") as bar:
            for shift in own_shifts:
                alone.append([])
                for audio, _ in clips:
                    shifted = after_silence(audio, shift)
                    (clip_run,) = replay(shifted, [config], clock=args.clock, cost_model=args.costs, progress=bar.at)
                    alone[-1].append(clip_run.text)
                    bar.done(len(shifted) / 16_000)
            for audio in pieces:
                (segment_run,) = replay(audio, [config], clock=args.clock, cost_model=args.costs, progress=bar.at)
                segments_alone.append(segment_run.text)
                bar.done(len(audio) / 16_000)
    clip_texts = [text for _, text in clips]
    pooled_references = clip_texts * len(alone)  # every placement's clips, in order
    pooled = [text for texts in alone for text in texts]
    lag = lag_series(run.lag_samples).to_dict()
    stream_seconds = len(stream) / 16_000
    return {
        "configuration": config.label, "options": str(config), "clock": args.clock, "normalizer": normalizer,
        "stream_seconds": stream_seconds, "segments": len(segments), "repetitions": repetitions, "wall_seconds": wall,
        "wer": wer(references, hypotheses, normalizer=normalizer).to_dict(),
        "wer_first_half": wer(references[:half], hypotheses[:half], normalizer=normalizer).defined_value if half else None,
        "wer_second_half": wer(references[half:], hypotheses[half:], normalizer=normalizer).defined_value if half else None,
        "per_clip": per_clip(references, hypotheses, len(clips), normalizer),
        "clips_alone_wer": wer(pooled_references, pooled, normalizer=normalizer).to_dict() if alone else None,
        "clips_alone_shifts": [{"shift": shift, "wer": wer(clip_texts, texts, normalizer=normalizer).defined_value,
                                "texts": texts} for shift, texts in zip(shifts, alone)],
        "clips_alone_per_clip": [wer([ref] * len(alone), [texts[i] for texts in alone], normalizer=normalizer).defined_value
                                 for i, ref in enumerate(clip_texts)] if alone else [],
        "clips_alone_source": args.alone_source,
        "segments_alone_wer": wer(references, segments_alone, normalizer=normalizer).to_dict() if segments_alone else None,
        "segments_alone_per_clip": per_clip(references, segments_alone, len(clips), normalizer) if segments_alone else [],
        **against_alone(references, hypotheses, clip_texts, alone, segments_alone, normalizer),
        "per_segment": [
            {"clip": i % len(clips), "start": start, "end": end, "wer": wer(ref, hyp, normalizer=normalizer).defined_value,
             "hypothesis": hyp,
             **({"alone": segments_alone[i], "wer_alone": wer(ref, segments_alone[i], normalizer=normalizer).defined_value}
                if segments_alone else {})}
            for i, ((start, end, ref), hyp) in enumerate(zip(segments, hypotheses))
        ],
        "memory": {**memory_summary(sampler.samples), **malloc_summary(sampler.malloc),
                   "series": sampler.samples[:: max(1, len(sampler.samples) // 600)],
                   "malloc_series": sampler.malloc[:: max(1, len(sampler.malloc) // 600)],
                   "trim_seconds": trim_interval, "trims": trims_after - trims_before},
        "lag": {"max": lag["stats"]["max"] if lag.get("stats") else None,
                "final": run.lag_samples[-1][1] if run.lag_samples else None,
                "series": [(float(t), float(v)) for t, v in run.lag_samples][:: max(1, len(run.lag_samples) // 600)]},
        "summary_check": summary_check(run, stream_seconds, config.language),
        "mean_lag": float(np.mean([v for _, v in run.lag_samples])) if run.lag_samples else None,
    }  # fmt: skip


def offline_row(args: argparse.Namespace, config: Any, stream: Any, segments: list, clips: list) -> dict[str, Any]:
    """One offline pass of the whole long stream with the configuration's backend, and one
    of each of its segments (with the pauses around it, as the segments alone stream them)."""
    from rtlab.core.instances import get_backend
    from rtlab.eval.metrics import wer
    from rtlab.eval.offline import transcribe_samples

    backend = get_backend(config)
    transcript = transcribe_samples(backend, stream, language=config.language)
    hypotheses = assign_words(transcript.words, segments)
    references = [text for _, _, text in segments]
    alone = [transcribe_samples(backend, audio, language=config.language) for audio in segment_audio(stream, segments)]
    segment_texts = [t.text for t in alone]
    return {
        "wer": wer(references, hypotheses, normalizer=args.normalizer).to_dict(),
        "per_clip": per_clip(references, hypotheses, len(clips), args.normalizer),
        "compute_seconds": transcript.compute_seconds,
        "segments_wer": wer(references, segment_texts, normalizer=args.normalizer).to_dict(),
        "segments_per_clip": per_clip(references, segment_texts, len(clips), args.normalizer),
        "segments_compute_seconds": sum(t.compute_seconds for t in alone),
        "segments_texts": segment_texts,
    }


def format_table(rows: list[dict[str, Any]], offline: dict[str, Any] | None) -> str:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    def num(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:.1f}{unit}"

    def per_clip(values: list[float | None]) -> str:
        return " / ".join("-" if v is None else f"{100 * v:.0f}" for v in values)

    def span(start: float | None, end: float | None) -> str:
        return "-" if start is None or end is None else f"{start:.0f} → {end:.0f} MiB"

    def placements(row: dict[str, Any]) -> str:
        """The clips alone: pooled over their placements, and the range over them."""
        values = [s["wer"] for s in row.get("clips_alone_shifts", []) if s["wer"] is not None]
        pooled = pct((row["clips_alone_wer"] or {}).get("value"))
        return pooled if len(values) < 2 else f"{pooled} ({100 * min(values):.1f}-{100 * max(values):.1f})"

    head = ["configuration", "WER", "clips alone", "segments alone", "1st half", "2nd half", "per clip", "RSS start", "RSS end",
            "slope MiB/h", "RSS peak per quarter", "RSS median per quarter", "malloc in use", "malloc free", "lag max", "lag end", "summary"]  # fmt: skip
    table = [head]
    for row in rows:
        memory = row["memory"]
        table.append([
            row["configuration"], pct(row["wer"]["value"]), placements(row),
            pct((row["segments_alone_wer"] or {}).get("value")),
            pct(row["wer_first_half"]), pct(row["wer_second_half"]),
            per_clip(row["per_clip"]), num(memory["start_mib"], " MiB"),
            num(memory["end_mib"], " MiB"), num(memory["slope_mib_per_hour"]),
            *(" / ".join(f"{v:.0f}" for v in memory[key]) if memory.get(key) else "-"
              for key in ("quarter_peaks_mib", "quarter_medians_mib")),
            span(memory.get("in_use_start_mib"), memory.get("in_use_end_mib")),
            span(memory.get("free_start_mib"), memory.get("free_end_mib")), num(row["lag"]["max"], " s"),
            num(row["lag"]["final"], " s"), "ok" if row["summary_check"]["ok"] else "WRONG",
        ])  # fmt: skip
    if offline is not None:
        table.append(["offline (whole stream)", pct(offline["wer"]["value"]), "", "", "", "",
                      per_clip(offline["per_clip"]), *[""] * (len(head) - 7)])  # fmt: skip
        table.append(["offline (each segment)", "", "", pct(offline["segments_wer"]["value"]), "", "",
                      per_clip(offline["segments_per_clip"]), *[""] * (len(head) - 7)])  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths)) + " |" for r in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def difference_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Each configuration's stream against its clips and segments alone, with the intervals
    (none with ``--stream-only``)."""
    from rtlab.eval.metrics import RateDifference

    lines = []
    for row in rows:
        said = [f"minus its {what} alone {RateDifference(**row[key]).describe('clips')}"
                for what, key in (("clips", "minus_clips_alone"), ("segments", "minus_segments_alone")) if row.get(key)]  # fmt: skip
        if said:
            lines.append(f"{row['configuration']}: the stream's WER " + "; ".join(said))
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Memory and lag against the audio streamed, and each repetition's WER, per configuration."""
    from rtlab.eval.plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for row in rows:
        label = row["configuration"]
        series = row["memory"]["series"]
        line, = axes[0].plot([s / 60 for s, _ in series], [m for _, m in series], label=f"{label}: resident")
        malloc = row["memory"].get("malloc_series") or []
        if malloc:
            axes[0].plot([s / 60 for s, _, _ in malloc], [m for _, m, _ in malloc], "--", color=line.get_color(),
                         label=f"{label}: malloc in use")  # fmt: skip
        lag = row["lag"]["series"]
        axes[1].plot([t / 60 for t, _ in lag], [v for _, v in lag], label=label)
        segs = row["per_segment"]
        segs = [s for s in segs if s["wer"] is not None]  # no reference words there, some heard
        axes[2].plot([s["start"] / 60 for s in segs], [100 * s["wer"] for s in segs], ".", label=label, alpha=0.7)
    axes[0].set_ylabel("memory (MiB)")
    axes[1].set_ylabel("lag (s)")
    axes[2].set_ylabel("clip WER (%)")
    axes[2].set_xlabel("audio streamed (min)")
    axes[0].set_title(f"long-form stream, {rows[0]['clock']} clock")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    return _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="folder of clips (default: the shared English speech)")
    parser.add_argument("--minutes", type=float, default=10.0, help="at least this long (default 10)")
    parser.add_argument("--backend", default="faster-whisper")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--language", default="en")
    parser.add_argument("--configuration", action="append",
                        help=f"one of {', '.join(CONFIGURATIONS)}, or NAME:OPTIONS (repeat; default: default and vad)")  # fmt: skip
    parser.add_argument("--clock", default="unaware", choices=["unaware", "simulated", "modeled", "wall"])
    parser.add_argument("--cost-model", metavar="FILE",
                        help="the modeled clock's cost model (rtlab calibrate --out FILE; default: rtlab's reference CPU)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the pauses (default 0)")
    parser.add_argument("--clip-shifts", type=int, default=4, metavar="N",
                        help="stream the clips alone N times, the k-th after k/N s of silence (default 4)")  # fmt: skip
    parser.add_argument("--offline", action="store_true", help="add an offline pass of the whole stream and of each segment")
    parser.add_argument("--offline-only", action="store_true", help="the offline passes alone, no stream")
    parser.add_argument("--stream-only", action="store_true",
                        help="the long stream alone: leave out the clips and the segments streamed one by one")  # fmt: skip
    parser.add_argument("--clips-alone", metavar="FILE", type=Path,
                        help="take the clips alone from an earlier run's long_form.json or accuracy.json (the same "
                             "clips, model, options and clock) instead of streaming them again")  # fmt: skip
    parser.add_argument("--out", default="results/long-form", help="output folder (default: results/long-form)")
    add_kernels_argument(parser)
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be > 0, got {args.minutes:g}")
    if not 1 <= args.clip_shifts <= 20:
        parser.error(f"--clip-shifts must be from 1 to 20, not {args.clip_shifts}")
    configurations = parse_configurations(parser, args.configuration or ["default", "vad"])
    if args.clips_alone and args.offline_only:
        parser.error("--clips-alone compares a stream with its clips: it has no use with --offline-only")
    args.configurations = configurations
    pin_kernels_argument(parser, args)  # before any model is loaded
    args.normalizer = normalizer_name(args.language)

    from rtlab.config import StreamConfig
    from rtlab.core.costs import CostModelError, cost_model_for_clock, cost_model_summary
    from rtlab.eval.bench import hardware_summary
    from rtlab.eval.corpus import load_corpus, shared_speech_dir
    from rtlab.eval.metrics import environment_info

    corpus = Path(args.corpus) if args.corpus else shared_speech_dir()
    if corpus is None or not corpus.is_dir():
        parser.error("no --corpus given and the shared speech folder was not found")
    try:
        args.costs = cost_model_for_clock(args.clock, args.cost_model)  # before any work
    except CostModelError as error:
        parser.error(str(error))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip_list = [{"id": u.id, "text": u.text.strip()} for u in load_corpus(corpus)]
    configs = {}
    for name, extra in configurations.items():
        options = ",".join(o for o in (f"backend={args.backend}", f"model={args.model}", extra) if o)
        configs[name] = StreamConfig.parse(f"{options},language={args.language},name={name}")
    args.earlier_alone, args.alone_source = {}, None
    if args.clips_alone:
        try:
            args.earlier_alone, args.alone_source = clips_alone_from(args.clips_alone, args, configs, clip_list, corpus)
        except EarlierRunError as error:
            parser.error(str(error))
        print(f"clips alone from {args.clips_alone} (rtlab {args.alone_source['rtlab']}, {args.alone_source['date']})",
              file=sys.stderr, flush=True)  # fmt: skip
    stream, segments, clips = long_form_stream(corpus, args.minutes, seed=args.seed)
    print(f"{len(stream) / 16_000 / 60:.1f} min stream of {len(segments)} clips ({len(clips)} distinct)",
          file=sys.stderr, flush=True)  # fmt: skip
    rows = []
    config = None
    for name, config in configs.items():
        if args.offline_only:
            break
        print(f"{name} ({args.clock} clock)...", file=sys.stderr, flush=True)
        rows.append(run_configuration(args, config, stream, segments, clips))
    wants_offline = args.offline or args.offline_only
    offline = offline_row(args, config, stream, segments, clips) if wants_offline and config is not None else None
    environment = environment_info()
    table = format_table(rows, offline)
    header = (f"{len(stream) / 16_000 / 60:.1f} min stream ({len(segments)} clips of {corpus.name}, seed {args.seed}); "
              f"{args.backend} {args.model}; clock {args.clock}"
              + (f" (cost model {cost_model_summary(args.costs.describe())})" if args.costs else "")
              + f"; normalizer {args.normalizer}; "
              f"hardware: {hardware_summary(environment)}"
              + (f"; clips alone from {source['file']} (rtlab {source['rtlab']}, {source['date']})"
                 if (source := args.alone_source) else ""))  # fmt: skip
    differences = difference_lines(rows)
    print("\n" + header)
    print(table)
    print("\n".join(differences))
    report = {
        "benchmark": "long_form", "date": datetime.date.today().isoformat(), "corpus": str(corpus),
        "minutes": args.minutes, "seed": args.seed, "backend": args.backend, "model": args.model,
        "clock": args.clock, "cost_model": args.costs.describe() if args.costs else None,
        "normalizer": args.normalizer, "configurations": configurations, "clips": clip_list,
        "clips_alone_source": args.alone_source, "rows": rows, "offline": offline, "environment": environment,
    }  # fmt: skip
    from rtlab.backends import written_whole

    with written_whole(out / "long_form.json") as partial:
        partial.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    with written_whole(out / "long_form.md") as partial:
        partial.write_text(header + "\n\n" + table + "\n" + "".join(f"\n{line}\n" for line in differences), encoding="utf-8")
    if rows:
        plot(rows, out / "long_form.png")
    print(f"wrote {out / 'long_form.json'}, long_form.md" + (", long_form.png" if rows else ""))
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
