"""Does a stream keep what an offline pass keeps? Per language and configuration.

For every language asked for, this runs the configurations below over that language's
shared speech with :func:`rtlab.eval.bench.run_bench` and prints one row each: the offline
pass's WER (the same model and decoding options, on the whole clip), the streaming WER, the offline
pass's words the streams kept (pooled over the clips, and the lowest clip), median and p95
commit latency and RTF, with the normalizer named (Whisper's English normalizer for
English, its basic normalizer otherwise). Other languages than English run twice: with
``language`` given, and with the language detected (the row names the languages the
streams' summaries reported).

    python benchmarks/accuracy.py                               # en, de, fr, es, pt
    python benchmarks/accuracy.py --languages en --clock simulated
    python benchmarks/accuracy.py --long-form 10 --languages en # + one >= 10 min stream
    python benchmarks/accuracy.py --backend test --corpus tests/data/tones --languages en

Configurations (``--configuration NAME``, repeatable, or ``NAME:OPTIONS`` for another;
default the first three):

* ``default``: the policy's and backend's defaults (Whisper's 30 s encoder windows;
  faster-whisper decodes a multilingual model with beam search, an English-only one
  greedily);
* ``vad``: ``vad=true``, the voice-activity controller;
* ``no-vad``: ``vad=false``, the controller named off (whatever the policy's default);
* ``many-sessions``: the options the server guide recommends for many sessions on few
  cores (``pad_seconds=1``, ``deadline_sec=1.75``, ``buffer_trimming_sec=8``, ``vad=true``;
  pages before 2026-12-06's many-sessions-controller page ran it without ``vad=true``);
* ``beam``: ``beam_size=5``, beam search (a Whisper backend's option);
* ``greedy``: ``beam_size=1``, greedy decoding (the offline pass the accuracy issue's
  targets name).

A configuration that decodes with beam search (its backend's ``beam_size`` as loaded, given
or chosen by the backend) has an offline pass with beam search too;
when a greedy configuration ran beside it (``greedy``, else ``default``, else the first), its line per language also
gives streaming minus *that* configuration's offline WER, the greedy offline pass, clip
for clip, and the lowest clip's share of that pass's words the stream kept (a beam-search
offline pass can hear words the greedy one does not, and the other way round). Beside the
lowest clip's words kept, the lines give the lowest ratio of a clip's streamed word count
to its offline pass's, the measure the accuracy issue's target names ("no clip below 95%
of its offline word count"): a word heard as two or two as one moves it, where words kept
counts a word the stream left out however the rest was heard.

English uses ``--english-model`` (tiny.en) on ``--corpus`` (default: the shared English
speech); the other languages ``--multilingual-model`` (base) on the folders beside it
(``../shared/data/speech/{de,fr,es,pt}``). The default clock is ``unaware`` (passes as if
they took no time): its words are the same on every machine. ``--clock simulated`` makes
latencies count measured compute, which on a shared machine depends on what else runs;
``--clock modeled`` counts the compute a cost model predicts (``--cost-model FILE``,
default rtlab's reference CPU): latencies like the simulated clock's, and the same words
on every run; ``--clock wall`` streams in real time (every configuration at once,
sharing the cores).
``--long-form MINUTES`` adds one stream of the language's clips, repeated in order and
joined with pauses of 0.5-3 s (seeded), at least that long; its row reports the lag's
maximum too. ``--shifts N`` streams every clip N times, the k-th time after k/N s of
digital silence (k = 0 .. N-1): LocalAgreement passes fall a second apart, so the shifts
place them at N phases of the speech, and a clip's streamed words move with where its
passes fall; one row per shift, and a line per language and configuration with the mean
and the range of the WER over the shifts. Streaming minus offline WER is printed with a
95% paired bootstrap interval over the clips (a clip's shifts drawn together): on sets of
a hundred words, a difference whose interval holds 0 is not told from none. Writes
``accuracy.json`` to ``--out`` after every run (a language at one placement), with
``"complete": false`` until the last: a run stopped with Ctrl-C, or killed, keeps the runs
it finished; ``--resume`` runs what such a report lacks (the same command with
``--resume`` added: the same backend, clock, configurations and machine, or it refuses)
and keeps the runs it has. ``--results FILE`` prints a saved one again.

The lowest clip's line also gives the share of the offline words *the reference confirms*
that the stream kept (:func:`rtlab.eval.metrics.confirmed_words_kept`): where the offline
pass hears one word as several that the reference does not have (``fleurs-fr-002``'s
"dépassent" heard "n'est pas à ce que"), a stream that hears it right has a lower word
count, and keeps every confirmed word; speech the stream dropped lowers both.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from rtlab.kernels import add_kernels_argument, pin_kernels_argument

#: Policy and backend options of each configuration.
CONFIGURATIONS = {
    "default": "",
    "no-vad": "vad=false",
    "vad": "vad=true",
    "many-sessions": "pad_seconds=1,deadline_sec=1.75,buffer_trimming_sec=8,vad=true",
    "beam": "beam_size=5",
    "greedy": "beam_size=1",
}
#: What runs without --configuration (every backend takes them; beam_size is a Whisper option).
DEFAULT_CONFIGURATIONS = ("default", "vad", "many-sessions")
LANGUAGES = ("en", "de", "fr", "es", "pt")
PAUSES = (0.5, 3.0)  # seconds of silence between the clips of a long-form stream


def parse_configurations(parser: argparse.ArgumentParser, given: list[str]) -> dict[str, str]:
    """``--configuration`` values (a name of ``CONFIGURATIONS``, or ``NAME:OPTIONS``) as
    name -> options; an unknown name is the parser's error."""
    configurations = {}
    for item in given:
        name, _, options = item.partition(":")
        if not options and name not in CONFIGURATIONS:
            parser.error(f"unknown configuration {name!r}: one of {', '.join(CONFIGURATIONS)}, or NAME:OPTIONS")
        configurations[name] = options if options else CONFIGURATIONS[name]
    return configurations


def normalizer_name(language: str) -> str:
    """Whisper's English normalizer for English, its basic one for any other language."""
    return "whisper-english" if language == "en" else "whisper-basic"


def kept_of(streams: list[Any]) -> tuple[float | None, float | None]:
    """The offline pass's words the streams kept, pooled, and the lowest stream's fraction
    (:func:`rtlab.eval.metrics.words_kept` on each stream's two texts)."""
    from rtlab.eval.metrics import WordsKept, words_kept

    if not streams or any(s.offline_hypothesis is None for s in streams):
        return None, None
    counts = [words_kept(s.offline_hypothesis, s.hypothesis, s.normalizer) for s in streams]
    fractions = [c.fraction for c in counts if c.fraction is not None]
    return WordsKept.pool(counts).fraction, min(fractions) if fractions else None


def long_form_stream(corpus: Path, minutes: float, seed: int = 0) -> tuple[Any, list[tuple[float, float, str]], list]:
    """One stream of at least ``minutes`` of the corpus's clips, repeated in order and joined
    with seeded pauses of ``PAUSES`` seconds: its 16 kHz samples, each clip's ``(start,
    end, text)`` in it, and the distinct clips as ``(samples, text)``."""
    import numpy as np

    from rtlab.decoders.files import decode_audio
    from rtlab.eval.corpus import load_corpus

    clips = [(decode_audio(u.audio), u.text.strip()) for u in load_corpus(corpus)]
    if not clips:
        raise ValueError(f"no clips in {corpus}")
    pick = random.Random(seed)
    pieces, segments, seconds = [], [], 0.0
    while seconds < minutes * 60:
        for audio, text in clips:
            pause = np.zeros(int(pick.uniform(*PAUSES) * 16_000), np.float32)
            pieces += [audio, pause]
            segments.append((seconds, seconds + len(audio) / 16_000, text))
            seconds += (len(audio) + len(pause)) / 16_000
    return np.concatenate(pieces), segments, clips


def long_form_manifest(corpus: Path, minutes: float, target: Path, seed: int = 0) -> Path:
    """:func:`long_form_stream` written beside ``target`` as a WAV file; its one-line JSONL
    manifest (the reference: the clips' texts joined by spaces)."""
    from rtlab.testing.tones import wav_bytes

    samples, segments, _ = long_form_stream(corpus, minutes, seed)
    wav = target.with_suffix(".wav")
    wav.write_bytes(wav_bytes(samples, float32=True))
    text = " ".join(text for _, _, text in segments)
    target.write_text(json.dumps({"audio": wav.name, "text": text, "id": wav.stem}) + "\n", encoding="utf-8")
    return target


def shift_seconds(shifts: int) -> list[float]:
    """Where each of ``shifts`` streams of a clip starts: after 0, 1/``shifts``, ... s of
    digital silence."""
    return [round(k / shifts, 3) for k in range(shifts)]


def after_silence(samples: Any, seconds: float) -> Any:
    """``samples`` (float32, 16 kHz) after ``seconds`` of digital silence."""
    import numpy as np

    return np.concatenate([np.zeros(int(round(seconds * 16_000)), np.float32), np.asarray(samples, np.float32)])


def shifted_manifests(corpus: Path, shifts: int, folder: Path) -> list[tuple[float, Path]]:
    """The corpus's clips after 0, 1/``shifts``, ... s of digital silence, as WAV files in
    ``folder/SHIFT/`` with a JSONL manifest ``folder/SHIFT.jsonl`` per shift (each clip is
    decoded once); ``(shift, manifest)`` pairs."""
    from rtlab.decoders.files import decode_audio
    from rtlab.eval.corpus import load_corpus
    from rtlab.testing.tones import wav_bytes

    clips = [(utterance, decode_audio(utterance.audio)) for utterance in load_corpus(corpus)]
    manifests = []
    for shift in shift_seconds(shifts):
        target = folder / f"{shift:g}.jsonl"
        clip_folder = target.with_suffix("")
        clip_folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for utterance, samples in clips:
            wav = clip_folder / (Path(utterance.audio).stem + ".wav")
            wav.write_bytes(wav_bytes(after_silence(samples, shift), float32=True))
            lines.append(json.dumps({**utterance.to_dict(), "audio": f"{clip_folder.name}/{wav.name}"}))  # beside the manifest
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        manifests.append((shift, target))
    return manifests


def shift_summaries(rows: list[dict[str, Any]], configurations: dict[str, str] | None = None) -> list[str]:
    """Per language and configuration run at several shifts: the streaming and offline WER's
    mean and range over the shifts (the offline pass hears the shifted clips too), and the
    lowest clip's words kept at any shift. A configuration that decodes with beam search
    (the rows' ``beam_size``, else ``configurations``' options: name -> options) is also set
    against the offline pass of a greedy one run beside it (:func:`greedy_beside`)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("shift") is not None and row["wer"] is not None:
            groups.setdefault((row["language"], row["language_option"], row["configuration"]), []).append(row)

    def spread(values: list[float]) -> str:
        return f"mean {100 * sum(values) / len(values):.1f}%, range {100 * min(values):.1f}% to {100 * max(values):.1f}%"

    lines = []
    for (language, option, config), group in groups.items():
        if len(group) < 2:
            continue
        line = f"{language} ({option}) {config}: WER over {len(group)} shifts: {spread([r['wer'] for r in group])}"
        offline = [r["offline_wer"] for r in group if r["offline_wer"] is not None]
        if len(offline) == len(group):
            line += f"; offline {spread(offline)}"
        lowest = [r["kept_lowest"] for r in group if r["kept_lowest"] is not None]
        if lowest:
            line += f"; lowest clip kept {100 * min(lowest):.1f}%"
            counted = lowest_clip(group)
            if counted is not None:
                line += f" (word count {100 * counted[1]:.1f}% of offline{confirmed_part(counted)})"
        difference = against_offline(group)
        if difference is not None:
            line += f"; streaming minus offline {difference.describe('clips')}"
        greedy = greedy_beside(config, beam_sizes([r for r in rows if r["language"] == language], configurations))
        if greedy is not None and (language, option, greedy) in groups:
            difference = against_offline(group, offline_rows=groups[(language, option, greedy)])
            if difference is not None:
                line += f"; streaming minus {greedy}'s greedy offline {difference.describe('clips')}"
            counted = lowest_clip(group, offline_rows=groups[(language, option, greedy)])
            if counted is not None:
                line += (f"; lowest clip kept of {greedy}'s greedy offline words {100 * counted[0]:.1f}% "
                         f"(word count {100 * counted[1]:.1f}%{confirmed_part(counted)})")  # fmt: skip
        lines.append(line)
    return lines


def confirmed_part(counted: tuple[float, float, float | None]) -> str:
    """``; of the words the reference confirms 100.0%`` for :func:`lowest_clip`'s third
    value, nothing without it."""
    return "" if counted[2] is None else f"; of the words the reference confirms {100 * counted[2]:.1f}%"


def given_beam_size(options: str) -> int | None:
    """The ``beam_size`` a configuration's options give; None when they leave it unset."""
    from rtlab.config import parse_pairs, split_pairs

    size = parse_pairs([p for p in split_pairs(options) if p.strip()]).get("beam_size")
    return size if isinstance(size, int) else None


def beam_sizes(rows: list[dict[str, Any]], configurations: dict[str, str] | None = None) -> dict[str, int]:
    """Each configuration's beam size: as its backend was loaded (the rows' ``beam_size``,
    which the backend chooses when the options leave it unset), else as
    ``configurations``' options give it (rows written before the field), else 1."""
    sizes = {name: given_beam_size(options) or 1 for name, options in (configurations or {}).items()}
    for row in rows:
        if row.get("beam_size") is not None:
            sizes[row["configuration"]] = row["beam_size"]
    return sizes


def greedy_beside(config: str, sizes: dict[str, int]) -> str | None:
    """For a beam-search configuration (``sizes``: name -> beam size, :func:`beam_sizes`),
    the greedy one to set its streams against (``greedy`` if it ran, else ``default``,
    else the first greedy one); None otherwise."""
    if sizes.get(config, 1) <= 1:
        return None
    greedy = [name for name, size in sizes.items() if size <= 1]
    return next((name for name in ("greedy", "default") if name in greedy), next(iter(greedy), None))


def offline_by_clip(rows: list[dict[str, Any]], field: str) -> dict[tuple[Any, str], Any]:
    """The rows' streams' ``field`` (their offline pass's text or error counts) by
    ``(shift, clip file)``, where :func:`against_offline` and :func:`lowest_clip` find the
    offline pass of a clip, their own or another configuration's."""
    return {(row.get("shift"), s["file"]): s.get(field) for row in rows for s in row["streams"]}


def against_offline(rows: list[dict[str, Any]], offline_rows: list[dict[str, Any]] | None = None) -> Any:
    """Streaming WER minus offline WER over the rows' streams, with a paired bootstrap
    interval in which a clip's streams at every shift are drawn together
    (:func:`rtlab.eval.metrics.paired_difference`); None without every stream's counts.
    ``offline_rows`` (another configuration's rows of the same clips and shifts) gives the
    offline passes instead of the rows' own, clip for clip."""
    from rtlab.eval.metrics import ErrorRate, paired_difference

    streams = [(row.get("shift"), s) for row in rows for s in row["streams"]]
    offline = offline_by_clip(rows if offline_rows is None else offline_rows, "offline_wer_counts")
    pairs = [(s.get("wer_counts"), offline.get((shift, s["file"]))) for shift, s in streams]
    if not pairs or any(not streamed or not heard for streamed, heard in pairs):
        return None
    return paired_difference([ErrorRate.from_dict(streamed) for streamed, _ in pairs],
                             [ErrorRate.from_dict(heard) for _, heard in pairs],
                             groups=[s["file"] for _, s in streams])  # fmt: skip


def lowest_clip(
    rows: list[dict[str, Any]], offline_rows: list[dict[str, Any]] | None = None
) -> tuple[float, float, float | None] | None:
    """Over the rows' streams, the lowest share of their offline pass's words a stream kept
    (:func:`rtlab.eval.metrics.words_kept`: aligned, a word heard otherwise counts as kept)
    and the lowest ratio of a stream's word count to the offline pass's (what the accuracy
    issue's target names: a word heard as two, or two as one, moves it, a dropped word
    lowers it, an added one raises it), with the row's normalizer. ``offline_rows``
    (another configuration's rows of the same clips and shifts) gives the offline passes
    instead of the rows' own, clip for clip. The third value is the lowest share a stream
    kept of the offline words its reference confirms
    (:func:`rtlab.eval.metrics.confirmed_words_kept`: speech the offline pass got right and
    the stream dropped; None for rows written without the references). None when a stream
    or its offline text is missing, or no offline pass heard a word."""
    from rtlab.eval.metrics import confirmed_words_kept, words_kept

    offline = offline_by_clip(rows if offline_rows is None else offline_rows, "offline")
    counts, confirmed = [], []
    for row in rows:
        for s in row["streams"]:
            heard = offline.get((row.get("shift"), s["file"]))
            if heard is None or s.get("streamed") is None:
                return None
            counts.append(words_kept(heard, s["streamed"], row["normalizer"]))
            if s.get("reference") is not None:
                confirmed.append(confirmed_words_kept(heard, s["streamed"], s["reference"], row["normalizer"]))
    counts = [c for c in counts if c.offline_words]
    if not counts:
        return None
    fractions = [c.fraction for c in confirmed if c.fraction is not None]
    lowest_confirmed = min(fractions) if fractions and len(confirmed) == sum(len(r["streams"]) for r in rows) else None
    return (min(c.fraction for c in counts), min((c.kept + c.added) / c.offline_words for c in counts),
            lowest_confirmed)  # fmt: skip


def run_language(
    args: argparse.Namespace, language: str, corpus: Path, detect: bool, long_form: bool, shift: float | None = None
) -> list[dict[str, Any]]:
    """The configurations on one language's corpus; one row each."""
    from rtlab.config import StreamConfig
    from rtlab.eval.bench import run_bench

    model = args.english_model if language == "en" else args.multilingual_model
    normalizer = normalizer_name(language)
    spoken = None if detect else language
    configs = []
    for name, extra in args.configurations.items():
        options = ",".join(o for o in (f"backend={args.backend}", f"model={model}", extra) if o)
        configs.append(StreamConfig.parse(options + (f",language={spoken}" if spoken else "") + f",name={name}"))
    work = Path(args.out) / language / ("detected" if detect else "given") / ("long-form" if long_form else "clips")
    if shift is not None:
        work = work / f"shift-{shift:g}"
    # progress=None: a bar on a terminal, none in a log
    run = run_bench(corpus, configs, clock=args.clock, normalizer=normalizer, language=spoken, work_dir=work,
                    progress=None, cost_model=args.costs)  # fmt: skip
    rows = []
    for config, summary in zip(configs, run.summaries):
        streams = [s for s in run.streams if s.config["name"] == config.label]
        backend = run.backends.get(config.label) or {}
        pooled, lowest = kept_of(streams)
        rows.append({
            "language": language, "model": model, "language_option": "detected" if detect else "given",
            "detected": sorted({str(s.language) for s in streams}) if detect else None,
            "configuration": config.label, "beam_size": backend.get("beam_size"), "clock": args.clock,
            "normalizer": normalizer,
            "long_form": long_form, "shift": shift, "files": summary["files"], "audio_seconds": summary["audio_seconds"],
            "offline_wer": (summary.get("offline_wer") or {}).get("value"), "wer": summary["wer"]["value"],
            "kept": pooled, "kept_lowest": lowest, "latency_median": summary["latency"]["median"],
            "latency_p95": summary["latency"]["p95"], "rtf": summary["rtf"], "errors": summary["errors"],
            "lag_max": (summary.get("lag") or {}).get("max"),
            "streams": [{"file": Path(s.file).name, "wer": s.wer.defined_value, "kept": kept_of([s])[0], "language": s.language,
                         "streamed": s.hypothesis, "offline": s.offline_hypothesis, "reference": s.reference, "wer_counts": s.wer.to_dict(),
                         "offline_wer_counts": s.offline_wer.to_dict() if s.offline_wer else None} for s in streams],
        })  # fmt: skip
    return rows


_HEADER = ("language", "model", "config", "normalizer", "offline WER", "WER", "kept", "lowest", "median", "p95", "RTF")


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width table (long-form rows add the lag's maximum)."""

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    table = [list(_HEADER)]
    for row in rows:
        language = row["language"] + (" (detected: " + ",".join(row["detected"]) + ")" if row["detected"] else "")
        config = row["configuration"] + (f" long-form, lag max {seconds(row['lag_max'])}" if row["long_form"] else "")
        if row.get("shift") is not None:
            config += f" +{row['shift']:g} s"
        table.append([
            language, row["model"], config, row["normalizer"], percent(row["offline_wer"]), percent(row["wer"]),
            percent(row["kept"]), percent(row["kept_lowest"]), seconds(row["latency_median"]),
            seconds(row["latency_p95"]), "-" if row["rtf"] is None else f"{row['rtf']:.2f}",
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(_HEADER))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in table)


def print_report(rows: list[dict[str, Any]], configurations: dict[str, str] | None) -> None:
    """The table, the per-row differences and the per-shift lines of a run's rows."""
    print(format_rows(rows))
    for row in rows:
        difference = against_offline([row]) if row.get("shift") is None else None
        if difference is not None:
            long_form = " long form" if row["long_form"] else ""
            print(f"{row['language']} ({row['language_option']}){long_form} {row['configuration']}: streaming minus "
                  f"offline {difference.describe('clips')}")  # fmt: skip
    for line in shift_summaries(rows, configurations):
        print(line)


def print_saved(parser: argparse.ArgumentParser, path: Path, english: Path | None) -> int:
    """``--results FILE``: a saved run printed again. Streams saved without their reference
    (runs before the field) take it from the speech folder's ``LANGUAGE/CLIP.txt`` (the
    shared speech, or the folder above ``--corpus``), where it is found."""
    from rtlab.eval.corpus import shared_speech_dir

    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        rows = report["rows"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        parser.error(f"--results: {path} is not an accuracy.json ({error})")
    english = english or shared_speech_dir()
    for row in rows:
        for stream in row["streams"]:
            found = english.parent / row["language"] / f"{Path(stream['file']).stem}.txt" if english else None
            if stream.get("reference") is None and found is not None and found.is_file():
                stream["reference"] = found.read_text(encoding="utf-8").strip()
    unfinished = " (incomplete: the rows of the runs done when it was written; the run was stopped, or is still going)" if report.get("complete") is False else ""
    print(f"{path}: clock {report.get('clock')}, run on {report.get('date')}{unfinished}")
    print_report(rows, report.get("configurations"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="English corpus folder (default: the shared English speech)")
    parser.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated (default: en,de,fr,es,pt)")
    parser.add_argument("--backend", default="faster-whisper")
    parser.add_argument("--english-model", default="tiny.en")
    parser.add_argument("--multilingual-model", default="base")
    parser.add_argument("--configuration", action="append",
                        help=f"one of {', '.join(CONFIGURATIONS)}, or NAME:OPTIONS for another (repeat; default: "
                             f"{', '.join(DEFAULT_CONFIGURATIONS)})")  # fmt: skip
    parser.add_argument("--clock", default="unaware", choices=["unaware", "simulated", "modeled", "wall"])
    parser.add_argument("--cost-model", metavar="FILE",
                        help="the modeled clock's cost model (rtlab calibrate --out FILE; default: rtlab's reference CPU)")  # fmt: skip
    parser.add_argument("--language-option", default="both", choices=["given", "detected", "both"],
                        help="other languages than English: language given, detected, or both runs (default)")  # fmt: skip
    parser.add_argument("--long-form", type=float, metavar="MINUTES", help="add one stream at least this long")
    parser.add_argument("--shifts", type=int, default=1, metavar="N",
                        help="stream each clip N times, after 0, 1/N, ... (N-1)/N s of silence (default 1: as it is)")  # fmt: skip
    parser.add_argument("--out", default="results/accuracy", help="output folder (default: results/accuracy)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the incomplete accuracy.json in --out: keep its runs, run the rest")  # fmt: skip
    parser.add_argument("--results", metavar="FILE",
                        help="print the table and lines of a saved run (its accuracy.json) and run nothing")  # fmt: skip
    add_kernels_argument(parser)
    args = parser.parse_args(argv)
    if args.results:
        return print_saved(parser, Path(args.results), Path(args.corpus) if args.corpus else None)
    args.configurations = parse_configurations(parser, args.configuration or list(DEFAULT_CONFIGURATIONS))
    if not 1 <= args.shifts <= 20:
        parser.error(f"--shifts must be from 1 to 20, not {args.shifts}")
    pin_kernels_argument(parser, args)

    from rtlab.backends import written_whole
    from rtlab.core.costs import CostModelError, cost_model_for_clock, cost_model_summary
    from rtlab.eval.bench import hardware_summary
    from rtlab.eval.corpus import language_corpora, shared_speech_dir
    from rtlab.eval.metrics import environment_info

    try:
        args.costs = cost_model_for_clock(args.clock, args.cost_model)  # before any work
    except CostModelError as error:
        parser.error(str(error))

    english = Path(args.corpus) if args.corpus else shared_speech_dir()
    if english is None:
        parser.error("no --corpus given and the shared speech folder was not found")
    try:
        corpora = language_corpora(english, args.languages)
    except ValueError as error:
        parser.error(f"--languages: {error}")
    out = Path(args.out)
    started = time.perf_counter()
    environment = environment_info()
    cost_model = args.costs.describe() if args.costs else None
    rows: list[dict[str, Any]] = []
    earlier_seconds = 0.0
    if args.resume:  # checked before the plan writes its clips into --out
        try:
            rows, earlier_seconds = resumed_rows(out / "accuracy.json", args, cost_model, environment,
                                                 planned_runs(args, corpora, out, write=False))  # fmt: skip
        except ValueError as error:
            parser.error(f"--resume: {error}")
    out.mkdir(parents=True, exist_ok=True)
    runs = planned_runs(args, corpora, out)
    planned, place = len(runs), {key: index for index, (_, key, _) in enumerate(runs)}
    if args.resume:
        done = {run_key(row) for row in rows}
        print(f"resuming {out / 'accuracy.json'}: {len(done)} of {len(runs)} runs done", file=sys.stderr)
        runs = [run for run in runs if run[1] not in done]

    def save(complete: bool) -> Path:
        """accuracy.json with the rows so far: written after every run, so that a run
        stopped or failed hours in keeps what it measured (``"complete": false``)."""
        report = {
            "benchmark": "accuracy", "date": datetime.date.today().isoformat(), "backend": args.backend,
            "clock": args.clock, "cost_model": cost_model, "configurations": args.configurations,
            "rows": rows, "environment": environment, "wall_seconds": earlier_seconds + time.perf_counter() - started,
            "complete": complete,
        }  # fmt: skip
        path = out / "accuracy.json"
        # A reader never finds half a file; a full disk or a second Ctrl-C leaves the last report.
        with written_whole(path) as partial:
            partial.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        return path

    try:
        for number, (label, _, run) in enumerate(runs, planned - len(runs) + 1):
            print(f"[{number}/{planned}, {time.perf_counter() - started:.0f} s] {label}...", file=sys.stderr, flush=True)
            rows += run()
            rows.sort(key=lambda row: place[run_key(row)])  # a resumed run's rows in the plan's order
            save(complete=False)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {save(complete=False)} keeps the {len(rows)} rows done "
              f"(--results prints them)", file=sys.stderr)  # fmt: skip
        return 130
    print(f"\nclock {args.clock}" + (f" (cost model {cost_model_summary(cost_model)})" if cost_model else "")
          + f"; hardware: {hardware_summary(environment)}; {time.perf_counter() - started:.0f} s wall")  # fmt: skip
    print_report(rows, args.configurations)
    print(f"wrote {save(complete=True)}")
    return 0


def planned_runs(
    args: argparse.Namespace, corpora: dict[str, Path], out: Path, write: bool = True
) -> list[tuple[str, tuple, Any]]:
    """Every run of the benchmark, in order, as (what it is, its :func:`run_key`, a function
    returning its rows): per language, each language option, each placement of the clips,
    then the long stream. The shifted clips and the long stream are written into ``out``
    first; with ``write=False`` nothing is, and the functions are not to be called (the
    plan's labels and keys only)."""
    runs: list[tuple[str, tuple, Any]] = []
    for language, corpus in corpora.items():
        modes = {"given": (False,), "detected": (True,), "both": (False, True)}[args.language_option]
        if args.shifts <= 1:
            shifted = []
        elif write:
            shifted = shifted_manifests(corpus, args.shifts, out / "shifted" / language)
        else:
            shifted = [(shift, None) for shift in shift_seconds(args.shifts)]
        for detect in modes if language != "en" else (False,):
            label = f"{language}{' (language detected)' if detect else ''}"
            option = "detected" if detect else "given"
            if not shifted:
                runs.append((label, (language, option, False, None),
                             functools.partial(run_language, args, language, corpus, detect, long_form=False)))  # fmt: skip
            for shift, manifest in shifted:
                runs.append((f"{label} after {shift:g} s of silence", (language, option, False, shift),
                             functools.partial(run_language, args, language, manifest, detect, long_form=False, shift=shift)))  # fmt: skip
        if args.long_form:
            manifest = long_form_manifest(corpus, args.long_form, out / f"long-form-{language}.jsonl") if write else None
            runs.append((f"{language} long form ({args.long_form:g} min)", (language, "given", True, None),
                         functools.partial(run_language, args, language, manifest, False, long_form=True)))  # fmt: skip
    return runs


def run_key(row: dict[str, Any]) -> tuple:
    """Which run of :func:`planned_runs` a row is of: language, language option, long form,
    shift."""
    return row["language"], row["language_option"], row["long_form"], row.get("shift")


#: What a resumed run's machine must share with the report's (not its memory or OS build),
#: besides the versions of the packages both record.
_SAME_MACHINE = ("machine", "cpu_model", "cpu_vector_extensions", "kernel_overrides", "cpu_count", "python")


def resumed_rows(
    path: Path, args: argparse.Namespace, cost_model: Any, environment: dict[str, Any], runs: list[tuple[str, tuple, Any]]
) -> tuple[list[dict[str, Any]], float]:
    """``--resume``: the rows of the incomplete report at ``path`` whose runs are whole (a
    row for every configuration) and the wall seconds it took. ValueError, naming what
    differs, where the report is complete, or was measured otherwise (backend, clock, cost
    model, configurations, models, machine), or has a run this one would not make."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        saved = report["rows"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"no report to resume in {path.parent} ({error})") from None
    if report.get("complete") is not False:
        raise ValueError(f"{path} is complete: nothing to resume (another --out starts a new run)")
    ours = {"backend": args.backend, "clock": args.clock, "cost_model": cost_model, "configurations": args.configurations}
    differ = [name for name, value in ours.items() if report.get(name) != value]
    theirs = report.get("environment") or {}
    differ += [f"the machine's {name}" for name in _SAME_MACHINE if theirs.get(name) != environment.get(name)]
    recorded, installed = theirs.get("packages") or {}, environment.get("packages") or {}
    # Those both record (rtlab records more packages than it once did).
    differ += [f"{name} {recorded[name]} (now {installed[name]})" for name in recorded
               if name in installed and recorded[name] != installed[name]]  # fmt: skip
    planned = {key for _, key, _ in runs}
    for row in saved:
        model = args.english_model if row["language"] == "en" else args.multilingual_model
        if run_key(row) not in planned:
            differ.append(f"a run this one would not make ({row['language']}, {row['language_option']}"
                          f"{', long form' if row['long_form'] else ''}, shift {row.get('shift')})")  # fmt: skip
        elif row["model"] != model:
            differ.append(f"the model ({row['model']}, not {model})")
    if differ:
        raise ValueError(f"{path} differs from this run in: {'; '.join(dict.fromkeys(differ))} "
                         "(resume it with the options it ran with, or give another --out)")  # fmt: skip
    whole = {key for key in map(run_key, saved)
             if {r["configuration"] for r in saved if run_key(r) == key} == set(args.configurations)}  # fmt: skip
    return [row for row in saved if run_key(row) in whole], float(report.get("wall_seconds") or 0.0)


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
