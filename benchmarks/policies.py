"""Latency against accuracy of a streaming policy as its ``min_chunk`` grows.

Replays the corpus through one configuration per ``min_chunk`` (0.5, 1 and 2 s by
default), all at once, with :func:`rtlab.eval.bench.run_bench`; prints the table and writes
``policies.json`` and ``policies.png`` (WER against median commit latency, points joined
in ``min_chunk`` order, lines out to the p95 latency).

    python benchmarks/policies.py                                  # faster-whisper tiny.en
    python benchmarks/policies.py --backend test --corpus tests/data --min-chunk 0.25 --min-chunk 1
    python benchmarks/policies.py --option compute_type=float32 --clock wall

Default corpus: the shared English speech (``rtlab.eval.corpus.shared_speech_dir()``).

``--compare`` runs LocalAgreement-2 and AlignAtt side by side on the same converted weights
(backend openai-whisper, each policy with its defaults): tiny.en on the shared English
speech, base on the shared multilingual sets beside it (``de``, ``fr``, ``es``, ``pt``,
with Whisper's basic normalizer), on each ``--clock`` given (default: unaware, then
simulated with one configuration at a time). Per language and policy it prints WER, the
offline pass's WER, the words kept against the offline pass, median and p95 commit
latency, median first-text latency and RTF, and each other row's WER minus
LocalAgreement-2's with a paired bootstrap interval over the clips (on five clips a
difference of a few points is often not told from none); ``--markdown FILE`` writes the
dated page.

    python benchmarks/policies.py --compare --markdown docs/benchmarks/DATE-policies-alignatt.md
    python benchmarks/policies.py --compare --languages en --clock unaware

``--variant NAME=OPTIONS`` adds a row beside the two defaults (say, AlignAtt with shorter
encoder windows and chunks: ``--variant fast=policy=alignatt,pad_seconds=3,min_chunk=0.6``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

#: The policies ``--compare`` puts side by side, each with its defaults.
COMPARED = ("local-agreement", "alignatt")
#: The shared multilingual sets, in folders beside the English one.
MULTILINGUAL = ("de", "fr", "es", "pt")


def words_kept(streams: list[Any]) -> float | None:
    """The offline pass's words that the streams kept, as a fraction of the offline pass's
    words, pooled over files (:func:`rtlab.eval.metrics.words_kept` on each stream's two
    texts: the word sequences aligned with the fewest edits)."""
    from rtlab.eval.metrics import WordsKept
    from rtlab.eval.metrics import words_kept as kept

    if not streams or any(stream.offline_hypothesis is None for stream in streams):
        return None
    return WordsKept.pool(kept(s.offline_hypothesis, s.hypothesis, s.normalizer) for s in streams).fraction


def compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Both policies on every language and clock asked for; prints the tables and writes
    ``policies-alignatt.json`` (and the page with ``--markdown``)."""
    from rtlab.backends import written_whole
    from rtlab.config import StreamConfig
    from rtlab.eval.bench import hardware_summary, run_bench
    from rtlab.eval.corpus import language_corpora, shared_speech_dir
    from rtlab.eval.metrics import LoadSampler

    english = Path(args.corpus) if args.corpus else shared_speech_dir()
    if english is None:
        parser.error("no --corpus given and the shared speech folder was not found")
    try:
        corpora = language_corpora(english, args.languages)
    except ValueError as error:
        parser.error(f"--languages: {error}")
    backend = args.backend or "openai-whisper"
    clocks = args.clocks or ["unaware", "simulated"]
    variants = []
    for text in args.variants:
        name, _, options = text.partition("=")
        if not name.strip() or not options.strip() or name.strip() in COMPARED:
            parser.error(f"--variant takes NAME=OPTIONS (a new name, and policy or backend options), not {text!r}")
        variants.append((name.strip(), options.strip()))
    out = Path(args.out)
    load = LoadSampler()
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for language, corpus in corpora.items():
        model = args.english_model if language == "en" else args.multilingual_model
        normalizer = "whisper-english" if language == "en" else "whisper-basic"
        extra = "".join("," + option for option in args.option)
        configs = [
            StreamConfig.parse(f"backend={backend},model={model},language={language},policy={policy}{extra},name={policy}")
            for policy in COMPARED
        ] + [
            StreamConfig.parse(f"backend={backend},model={model},language={language}{extra},{options},name={name}")
            for name, options in variants
        ]  # fmt: skip
        for clock in clocks:
            # On the simulated and wall clocks a pass's compute is part of its latency: one
            # configuration at a time (one stream), so that neither policy's passes share
            # the cores.
            run = run_bench(corpus, configs, clock=clock, normalizer=normalizer, language=language,
                            one_at_a_time=clock in ("simulated", "wall"), work_dir=out / language / clock)  # fmt: skip
            print(f"\n{language} ({model}), clock {clock}")
            print(run.table())
            run.write(out / language / clock, plots=False)  # results.jsonl: every stream's words
            runs.append({"language": language, "model": model, **run.run_record(), "summaries": run.summaries})
            for config, summary in zip(configs, run.summaries):
                streams = [s for s in run.streams if s.config["name"] == config.label]
                offline = summary.get("offline_wer") or {}
                rows.append({
                    "language": language, "model": model, "clock": clock, "policy": config.label,
                    "options": config.to_dict(), "beam_size": run.backends.get(config.label, {}).get("beam_size"),
                    "files": summary["files"], "audio_seconds": summary["audio_seconds"], "normalizer": normalizer,
                    "wer": summary["wer"]["value"], "offline_wer": offline.get("value"),
                    "reference_words": summary["wer"].get("reference_words"),
                    "kept": words_kept(streams), "latency_median": summary["latency"]["median"],
                    "latency_p95": summary["latency"]["p95"], "first_text": summary["first_text_latency"]["median"],
                    "rtf": summary["rtf"], "errors": summary["errors"],
                })  # fmt: skip
            # The first configuration is LocalAgreement-2: each other row against it.
            differences = dict(run.differences())
            for row in rows[-len(configs):]:
                difference = differences.get(row["policy"])
                row["minus_local_agreement"] = difference.to_dict() if difference else None
                if difference:
                    print(f"{language} ({clock}): {row['policy']} minus {COMPARED[0]} "
                          f"{difference.describe('clips')}")  # fmt: skip
    environment = runs[0]["environment"] if runs else {}
    report = {
        "benchmark": "policies-alignatt", "date": datetime.date.today().isoformat(), "backend": backend, "rows": rows,
        "variants": dict(variants), "runs": runs, "environment": environment, "hardware": hardware_summary(environment) if environment else None,
        "load_average": load.stop(), "wall_seconds": time.perf_counter() - started,
    }  # fmt: skip
    print("\n" + format_rows(rows))
    out.mkdir(parents=True, exist_ok=True)
    with written_whole(out / "policies-alignatt.json") as partial:
        partial.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    written = [out / "policies-alignatt.json"]
    if args.markdown:
        command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if args.argv is None else args.argv)])
        with written_whole(Path(args.markdown)) as partial:
            partial.write_text(markdown(report, command), encoding="utf-8")
        written.append(Path(args.markdown))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


_HEADER = ("language", "clock", "policy", "WER", "offline WER", "kept", "median latency", "p95 latency", "first text", "RTF")


def describe(difference: dict[str, Any]) -> str:
    """``+3.4 points (95% CI -1.6 to +10.6, 5 clips)``."""
    from rtlab.eval.metrics import RateDifference

    return RateDifference(**difference).describe("clips")


def _cells(row: dict[str, Any]) -> list[str]:
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    return [
        f"{row['language']} ({row['model']})", row["clock"], row["policy"], percent(row["wer"]),
        percent(row["offline_wer"]), percent(row["kept"]), seconds(row["latency_median"]),
        seconds(row["latency_p95"]), seconds(row["first_text"]),
        "-" if row["rtf"] is None else f"{row['rtf']:.3f}",
    ] + ([f"{row['errors']} failed"] if row["errors"] else [])  # fmt: skip


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Every row as a plain-text table."""
    table = [list(_HEADER)] + [_cells(r)[: len(_HEADER)] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_HEADER))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def decoding(rows: list[dict[str, Any]]) -> str:
    """How each model decoded, from the rows' loaded ``beam_size``: ``tiny.en greedy, base 5
    beams`` (the backend's default: beam search on a multilingual model); rows of reports
    written before the field say nothing."""
    sizes: dict[str, set[int]] = {}
    for row in rows:
        if row.get("beam_size") is not None:
            sizes.setdefault(row["model"], set()).add(row["beam_size"])
    said = [
        f"{model} " + " or ".join("greedy" if size == 1 else f"{size} beams" for size in sorted(found))
        for model, found in sorted(sizes.items())
    ]
    return ", ".join(said) if said else "the backend's decoding"


def markdown(report: dict[str, Any], command: str) -> str:
    """The dated page for docs/benchmarks/."""
    environment = report["environment"]
    packages = {**environment.get("packages", {}), **report.get("packages", {})}  # reports before 2026-12-07 kept the engines apart
    software = ", ".join(f"{name} {version}" for name, version in packages.items() if version)
    hardware = f"{environment.get('cpu_count')} CPU cores ({environment.get('machine')}), " + (
        f"{environment.get('memory_total_bytes', 0) / 2**30:.1f} GiB, no GPU"
    )
    load = report.get("load_average")
    if load:
        hardware += f"; load average (1 min) {load['min']:.1f} to {load['max']:.1f} during the run"
    corpora = []
    for run in report["runs"]:
        line = f"{run['language']}: {run['corpus']} ({run['files']} files, {run['audio_seconds']:.1f} s)"
        if line not in corpora:
            corpora.append(line)
    models = sorted({f"{r['model']} ({r['language']})" for r in report["rows"]})
    clocks = sorted({r["clock"] for r in report["rows"]}, key=["unaware", "simulated", "wall"].index)
    lines = [
        f"# `benchmarks/policies.py --compare`: LocalAgreement-2 and AlignAtt, {report['date']}",
        "",
        f"The same weights through both policies (backend {report['backend']}, {decoding(report['rows'])};",
        "one thread per pass), each with its defaults: LocalAgreement-2 (`min_chunk` 1 s, a word",
        "committed once two passes agree) and AlignAtt (`min_chunk` 1.2 s, `frame_threshold` 25",
        "frames, one decode per chunk, committed at once). The unaware clock counts no compute (every",
        "pass sees the same audio on every run: the policies' own latency and words); the simulated",
        "clock counts each pass's measured compute, one configuration at a time. *kept*: the offline",
        "pass's words the stream committed, aligned by word sequence.",
        "",
        "| | |",
        "|---|---|",
        f"| date | {report['date']} |",
        f"| hardware | {hardware} |",
        f"| software | {software} |",
        f"| models | {', '.join(models)} |",
        f"| clocks | {', '.join(clocks)} |",
        "| normalizer | `whisper-english` for English, `whisper-basic` for the others |",
        f"| corpora | {'; '.join(corpora)} |",
        f"| command | `{command}` |",
        f"| wall time | {report['wall_seconds'] / 60:.1f} min |",
        "",
        "| " + " | ".join(_HEADER) + " |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in _HEADER[3:]) + " |",
    ]
    lines += ["| " + " | ".join(_cells(r)[: len(_HEADER)]) + " |" for r in report["rows"]]
    differences = [r for r in report["rows"] if r.get("minus_local_agreement")]
    if differences:
        lines += ["", "WER minus LocalAgreement-2's on the same clips (paired bootstrap interval over the clips):", ""]
        lines += [f"- {r['language']}, {r['clock']}, {r['policy']}: {describe(r['minus_local_agreement'])}" for r in differences]
    if report.get("variants"):
        lines += ["", "Variants (rows named so, beside each policy's defaults):", ""]
        lines += [f"- `{name}`: `{options}`" for name, options in report["variants"].items()]
    failed = [r for r in report["rows"] if r["errors"]]
    if failed:
        lines += ["", "Failed streams: " + "; ".join(f"{r['language']} {r['clock']} {r['policy']}: {r['errors']}" for r in failed)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="corpus folder or manifest (default: the shared English speech)")
    parser.add_argument("--backend", default=None, help="default: faster-whisper (--compare: openai-whisper)")
    parser.add_argument("--model", default=None, help="default: the backend's (tiny.en for faster-whisper)")
    parser.add_argument("--policy", default="local-agreement")
    parser.add_argument("--min-chunk", type=float, action="append", dest="min_chunks",
                        help="seconds (repeat); default 0.5, 1 and 2")  # fmt: skip
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE for the backend or policy")
    parser.add_argument("--clock", choices=["simulated", "wall"], default="simulated")
    parser.add_argument("--normalizer", default="auto", help="auto, whisper-english, whisper-basic or none")
    parser.add_argument("--language", default=None, help="language of corpus files that name none")
    parser.add_argument("--long-form", action="store_true", help="join the corpus into one stream")
    parser.add_argument("--out", default="results", help="output folder (default: results/)")
    parser.add_argument("--compare", action="store_true",
                        help="LocalAgreement-2 and AlignAtt side by side on openai-whisper (see above)")  # fmt: skip
    parser.add_argument("--languages", default=None,
                        help="--compare: languages to run (default: en,de,fr,es,pt)")  # fmt: skip
    parser.add_argument("--clocks", action="append", choices=["unaware", "simulated", "wall"],
                        help="--compare: clock (repeat; default: unaware and simulated)")  # fmt: skip
    parser.add_argument("--variant", action="append", default=[], dest="variants", metavar="NAME=OPTIONS",
                        help="--compare: one more row per language and clock, e.g. "
                             "fast=policy=alignatt,pad_seconds=3,min_chunk=0.6")  # fmt: skip
    parser.add_argument("--english-model", default="tiny.en", help="--compare: the model for English")
    parser.add_argument("--multilingual-model", default="base", help="--compare: the model for the other languages")
    parser.add_argument("--markdown", default=None, help="--compare: also write the dated page for docs/benchmarks/ here")
    args = parser.parse_args(argv)
    args.argv = argv
    compare_only = [flag for flag, given in (("--languages", args.languages), ("--clocks", args.clocks),
                                             ("--variant", args.variants), ("--markdown", args.markdown)) if given]  # fmt: skip
    if compare_only and not args.compare:
        parser.error(f"{', '.join(compare_only)} go with --compare (without it: a min_chunk sweep of --policy)")
    args.languages = args.languages or "en," + ",".join(MULTILINGUAL)
    if args.compare:
        return compare(args, parser)
    args.backend = args.backend or "faster-whisper"

    from rtlab.backends import written_whole
    from rtlab.eval.bench import run_bench
    from rtlab.eval.corpus import shared_speech_dir
    from rtlab.config import StreamConfig

    corpus = args.corpus or shared_speech_dir()
    if corpus is None:
        parser.error("no --corpus given and the shared speech folder was not found")
    base = f"backend={args.backend},policy={args.policy}"
    if args.model:
        base += f",model={args.model}"
    extra = "".join("," + option for option in args.option)
    chunks = args.min_chunks or [0.5, 1.0, 2.0]
    configs = [StreamConfig.parse(f"{base}{extra},min_chunk={c},name=min_chunk={c:g} s") for c in chunks]
    run = run_bench(corpus, configs, clock=args.clock, normalizer=args.normalizer,
                    language=args.language, long_form=args.long_form, work_dir=args.out)  # fmt: skip
    model = run.backends[configs[0].label].get("model") or configs[0].model or "(backend default)"
    print(f"backend: {args.backend}   model: {model}   policy: {args.policy}   options: {args.option or '-'}")
    print(run.table())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "policies", **run.run_record(), "summaries": run.summaries,
              "streams": [s.to_dict() for s in run.streams]}  # fmt: skip
    with written_whole(out / "policies.json") as partial:
        partial.write_text(json.dumps(report, indent=2), encoding="utf-8")
    written = [out / "policies.json"]
    try:
        from rtlab.eval.plots import plot_wer_vs_latency

        title = f"{args.policy} on {args.backend} {model}: min_chunk sweep"
        written.append(plot_wer_vs_latency(run.summaries, out / "policies.png", connect=True, title=title))
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'rtlab[plots]')", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
