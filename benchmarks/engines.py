"""Offline speed, accuracy and memory of each engine, side by side on the same weights.

For every configuration a fresh Python process loads the model and transcribes every
file of the corpus in one offline pass (``backend.transcribe`` on the whole file, as in
:mod:`rtlab.eval.offline`), so that its peak memory (``ru_maxrss``, and PyTorch's peak on
a GPU) belongs to that configuration alone. The defaults put both engines on the embedded
tiny.en: faster-whisper int8 and float32, and openai-whisper float32 on the same weights
converted. Prints a table per engine, device and compute type, and writes
``engines.json`` and ``engines.png``; ``--markdown FILE`` also writes the dated page for
docs/benchmarks/ (hardware, software, model, normalizer, the command, the table).

    python benchmarks/engines.py --language en --streaming --markdown docs/benchmarks/DATE-engines.md
    python benchmarks/engines.py --config backend=openai-whisper,model=base,name=ow-base
    python benchmarks/engines.py --corpus path/to/corpus --out results/

``--streaming`` also streams every file through LocalAgreement-2 (the default policy) on
the simulated clock (each pass costs its measured compute, so a slower engine's passes see
longer buffers) and on the unaware clock (compute takes no time: both engines get the same
passes over the same buffers), and reports the streaming WER of each.

Default corpus: the shared English speech (``rtlab.eval.corpus.shared_speech_dir()``).
16 kHz mono 16-bit WAV files are read without FFmpeg (a machine without one can run it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_CONFIGS = (
    "backend=faster-whisper,model=tiny.en,compute_type=int8",
    "backend=faster-whisper,model=tiny.en,compute_type=float32",
    "backend=openai-whisper,model=tiny.en,compute_type=float32",
)
WORKER_TIMEOUT_S = 1800
STREAMING_CLOCKS = ("simulated", "unaware")


def _rss_bytes() -> int | None:
    """Resident memory of this process now, from /proc (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gpu_memory() -> dict[str, Any]:
    """PyTorch's peak GPU memory in this process, and the GPU's name, when it used CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"gpu": torch.cuda.get_device_name(), "peak_gpu_bytes": int(torch.cuda.max_memory_allocated())}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process; returns the measurements (JSON-ready)."""
    import numpy as np

    from rtlab.core.instances import get_backend
    from rtlab.decoders.files import read_audio
    from rtlab.eval.corpus import load_corpus
    from rtlab.eval.metrics import wer
    from rtlab.eval.offline import transcribe_samples

    utterances = load_corpus(spec["corpus"], language=spec.get("language"))
    audio = [read_audio(u.audio) for u in utterances]
    baseline = _rss_bytes()
    backend = get_backend(spec["backend"], **spec["options"])
    started = time.perf_counter()
    transcribe_samples(backend, np.zeros(16000, np.float32))  # loads, then warms up
    load_and_warmup = time.perf_counter() - started
    hypotheses, compute, seconds = [], 0.0, 0.0
    for utt, samples in zip(utterances, audio):
        result = transcribe_samples(backend, samples, language=utt.language)
        hypotheses.append(result.text)
        compute += result.compute_seconds
        seconds += result.audio_seconds
    # ru_maxrss is in kilobytes on Linux: the peak over the whole process life.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    error_rate = wer([u.text for u in utterances], hypotheses, spec["normalizer"])
    streaming = {clock: stream(spec, utterances, clock) for clock in STREAMING_CLOCKS} if spec.get("streaming") else {}
    # ru_maxrss again: streaming may have raised the peak.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "backend_info": backend.info(),
        "load_and_warmup_seconds": load_and_warmup,
        "audio_seconds": seconds,
        "compute_seconds": compute,
        "rtf": compute / seconds if seconds else None,
        "wer": error_rate.to_dict(),
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline,
        **_gpu_memory(),
        "hypotheses": {u.id: h for u, h in zip(utterances, hypotheses)},
        "streaming": streaming,
    }


def stream(spec: dict[str, Any], utterances: list, clock: str) -> dict[str, Any]:
    """Every file streamed through the default policy on ``clock``: WER and RTF."""
    import asyncio

    from rtlab.config import StreamConfig
    from rtlab.core.feeding import stream_file
    from rtlab.eval.metrics import wer

    options = dict(spec["options"])
    config = StreamConfig(backend=spec["backend"], model=options.pop("model", None), backend_options=options)
    summaries = [asyncio.run(stream_file(u.audio, config, clock=clock, language=u.language))[-1] for u in utterances]
    failed = [s for s in summaries if s["type"] != "summary"]
    if failed:
        return {"error": failed[0].get("message", str(failed[0]))}
    audio = sum(s["audio_seconds"] for s in summaries)
    return {
        "wer": wer([u.text for u in utterances], [s["text"] for s in summaries], spec["normalizer"]).to_dict(),
        "rtf": sum(s["compute_seconds"] for s in summaries) / audio if audio else None,
        "hypotheses": {u.id: s["text"] for u, s in zip(utterances, summaries)},
    }


def run_configuration(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration in a subprocess; failures become an ``error`` field."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT_S} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {last}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


COLUMNS = ("configuration", "engine", "device", "compute type", "threads", "load+warm-up", "RTF", "WER",
           "peak RSS", "RSS over baseline", "peak GPU")  # fmt: skip
STREAMING_COLUMNS = tuple(f"WER streaming ({clock})" for clock in STREAMING_CLOCKS)


def columns(records: list[dict[str, Any]]) -> tuple[str, ...]:
    """The table's columns: the streaming WERs too when any configuration streamed."""
    streamed = any(r["result"].get("streaming") for r in records)
    return COLUMNS + (STREAMING_COLUMNS if streamed else ())


def rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """The table's cells: one row per configuration."""
    cells = []
    width = len(columns(records))
    for r in records:
        m = r["result"]
        if "error" in m:
            cells.append([r["name"], "failed: " + m["error"]] + [""] * (width - 2))
            continue
        info = m["backend_info"]
        over = m["peak_rss_bytes"] - m["baseline_rss_bytes"] if m["baseline_rss_bytes"] else None
        threads = info.get("cpu_threads") if info.get("device") == "cpu" else None
        cells.append([
            r["name"], info.get("backend", ""), str(info.get("device", "")), str(info.get("compute_type", "")),
            "-" if threads is None else str(threads), f"{m['load_and_warmup_seconds']:.1f} s", f"{m['rtf']:.3f}",
            f"{100 * m['wer']['value']:.1f}%", _mib(m["peak_rss_bytes"]), _mib(over), _mib(m.get("peak_gpu_bytes")),
        ])  # fmt: skip
        for clock in STREAMING_CLOCKS if width > len(COLUMNS) else ():
            streamed = m.get("streaming", {}).get(clock, {})
            cells[-1].append(f"{100 * streamed['wer']['value']:.1f}%" if "wer" in streamed else streamed.get("error", "-"))
    return cells


def format_table(records: list[dict[str, Any]]) -> str:
    """One row per configuration: engine, device, compute type, load, RTF, WER, memory."""
    table = [list(columns(records))] + rows(records)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])
             for row in table]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(report: dict[str, Any], command: str, subtitle: str) -> str:
    """The dated page for docs/benchmarks/: what was run, where, and the table."""
    environment = report["environment"]
    packages = {**environment.get("packages", {}), **report.get("engine_packages", {})}  # reports before 2026-12-07 kept the engines apart
    software = ", ".join(f"{name} {version}" for name, version in packages.items() if version)
    gpus = sorted({r["result"].get("gpu") for r in report["configurations"] if r["result"].get("gpu")})
    hardware = f"{environment.get('cpu_count')} CPU cores ({environment.get('machine')}), " + (
        f"{environment.get('memory_total_bytes', 0) / 2**30:.1f} GiB, " + (", ".join(gpus) if gpus else "no GPU used")
    )
    load = report.get("load_average")
    if load:
        hardware += f"; load average (1 min) {load['min']:.1f} to {load['max']:.1f} during the run"
    models = sorted({f"{r['result']['backend_info'].get('model')}" for r in report["configurations"] if "error" not in r["result"]})
    lines = [
        f"# `benchmarks/engines.py`, engines side by side, {report['date']}",
        "",
        "One offline pass per file, one fresh process per configuration, greedy decoding: load and",
        "warm-up time, RTF, WER, peak resident memory and memory over the baseline before loading",
        "(and PyTorch's peak GPU memory on a GPU). The engines run the same weights: openai-whisper's",
        "checkpoint is converted from the CTranslate2 model faster-whisper runs (`rtlab models convert`).",
        *([
            "Streaming: every file through LocalAgreement-2 with its defaults, on the simulated clock (a",
            "pass costs its measured compute, so a slower engine's passes see longer buffers) and on the",
            "unaware clock (compute takes no time: both engines get the same passes over the same buffers).",
        ] if report.get("streaming") else []),
        "",
        "| | |",
        "|---|---|",
        f"| date | {report['date']} |",
        f"| hardware | {hardware}{'; ' + report['load_note'] if report.get('load_note') else ''} |",
        f"| software | {software} |",
        f"| model | {', '.join(models)} |",
        "| clock | " + ("offline passes; streaming: LocalAgreement-2 defaults on the simulated and unaware clocks"
                        if report.get("streaming") else "none (offline passes)") + " |",
        f"| normalizer | `{report['normalizer']}` |",
        f"| corpus | {report['corpus_note']} |",
        f"| command | `{command}` |",
        "",
        "| " + " | ".join(columns(report["configurations"])) + " |",
        "| --- | " + " | ".join("---:" if i > 4 else "---" for i in range(1, len(columns(report["configurations"])))) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(report["configurations"])]
    lines += ["", subtitle, ""]
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path, subtitle: str) -> Path:
    """Three bar charts side by side: RTF, WER and peak memory per configuration."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ok = [r for r in records if "error" not in r["result"]]
    names = [r["name"] for r in ok]
    panels = [
        ("RTF (offline, lower is faster)", [r["result"]["rtf"] for r in ok], "{:.3f}"),
        ("WER [%]", [100 * r["result"]["wer"]["value"] for r in ok], "{:.1f}"),
        ("peak RSS [MiB]", [r["result"]["peak_rss_bytes"] / 2**20 for r in ok], "{:.0f}"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 1.6 + 0.55 * max(1, len(ok))), dpi=110, sharey=True)
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(ok))]
    for ax, (title, values, fmt) in zip(axes, panels):
        bars = ax.barh(range(len(ok)), values, color=colors)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=3, fontsize="small")
        ax.set_title(title, fontsize="medium")
        ax.set_xlim(0, max(values + [1e-9]) * 1.3)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(ok)), names, fontsize="small")
    axes[0].invert_yaxis()
    fig.suptitle(f"Engines, one offline pass per file\n{subtitle}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="corpus folder or manifest (default: the shared English speech)")
    parser.add_argument("--config", action="append", help="backend=...,model=...,compute_type=... (repeat)")
    parser.add_argument("--out", default="results", help="output folder (default: results/)")
    parser.add_argument("--normalizer", default="auto", help="auto, whisper-english, whisper-basic or none")
    parser.add_argument("--language", default=None, help="language of corpus files that name none")
    parser.add_argument("--markdown", default=None, help="also write the dated page for docs/benchmarks/ here")
    parser.add_argument("--streaming", action="store_true",
                        help="also stream every file (simulated and unaware clocks) and report the streaming WER")
    parser.add_argument("--load-note", default=None, help="what else ran on the machine, for the page's hardware row")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    from rtlab.backends import written_whole
    from rtlab.config import StreamConfig
    from rtlab.eval.bench import hardware_summary, resolve_normalizer
    from rtlab.eval.corpus import load_corpus, shared_speech_dir
    from rtlab.eval.metrics import LoadSampler, environment_info

    corpus = args.corpus or shared_speech_dir()
    if corpus is None:
        parser.error("no --corpus given and the shared speech folder was not found")
    utterances = load_corpus(corpus, language=args.language)
    normalizer = resolve_normalizer(args.normalizer, [u.language for u in utterances])
    configs = [StreamConfig.parse(text) for text in (args.config or DEFAULT_CONFIGS)]
    environment = environment_info()
    load = LoadSampler()
    records = []
    for config in configs:
        # The policy plays no part offline: name the engine only.
        name = config.name or " ".join(
            [f"{config.backend}:{config.model or 'default'}"]
            + [f"{k}={v}" for k, v in sorted(config.backend_options.items())]
        )
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        spec = {"corpus": str(corpus), "backend": config.backend, "options": config.backend_kwargs(),
                "language": args.language, "normalizer": normalizer, "streaming": args.streaming}  # fmt: skip
        records.append({"name": name, "config": config.to_dict(), "result": run_configuration(spec)})
    load_average = load.stop()
    audio = next((r["result"]["audio_seconds"] for r in records if "audio_seconds" in r["result"]), 0.0)
    words = next((r["result"]["wer"]["reference_words"] for r in records if "wer" in r["result"]), None)
    clocks = "none (offline)" + (", streaming: " + " and ".join(STREAMING_CLOCKS) if args.streaming else "")
    subtitle = (f"{len(utterances)} files, {audio:.1f} s · normalizer: {normalizer} · clock: {clocks} · "
                f"{hardware_summary(environment)}")  # fmt: skip
    print(f"corpus: {corpus}\n{subtitle}")
    print(format_table(records))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "engines", "date": datetime.date.today().isoformat(), "corpus": str(corpus),
              "corpus_note": f"{corpus}: {len(utterances)} files, {audio:.1f} s, {words} reference words (normalized)",
              "load_average": load_average,
              "normalizer": normalizer, "clock": "offline", "streaming": args.streaming, "environment": environment,
              "configurations": records}  # fmt: skip
    if args.load_note:
        report["load_note"] = args.load_note
    with written_whole(out / "engines.json") as partial:
        partial.write_text(json.dumps(report, indent=2), encoding="utf-8")
    written = [out / "engines.json"]
    try:
        written.append(plot(records, out / "engines.png", subtitle))
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'rtlab[plots]')", file=sys.stderr)
    if args.markdown:
        command = "python benchmarks/engines.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        with written_whole(Path(args.markdown)) as partial:
            partial.write_text(markdown(report, command.strip(), subtitle), encoding="utf-8")
        written.append(Path(args.markdown))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0 if all("error" not in r["result"] for r in records) else 1


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
