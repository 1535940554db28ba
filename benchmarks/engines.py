"""Offline speed, accuracy and memory of each engine: backend x model x compute type.

For every configuration a fresh Python process loads the model and transcribes every
file of the corpus in one offline pass (``backend.transcribe`` on the whole file, as in
:mod:`rtlab.eval.offline`), so that its peak memory (``ru_maxrss``) belongs to that
configuration alone. Prints a table and writes ``engines.json`` and ``engines.png``.

    python benchmarks/engines.py                       # tiny.en int8/float32, base int8
    python benchmarks/engines.py --config backend=faster-whisper,model=base,compute_type=float32
    python benchmarks/engines.py --corpus path/to/corpus --out results/

Default corpus: the shared English speech (``rtlab.eval.corpus.shared_speech_dir()``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_CONFIGS = (
    "backend=faster-whisper,model=tiny.en,compute_type=int8",
    "backend=faster-whisper,model=tiny.en,compute_type=float32",
    "backend=faster-whisper,model=base,compute_type=int8",
)
WORKER_TIMEOUT_S = 1800


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


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process; returns the measurements (JSON-ready)."""
    import numpy as np

    from rtlab.core.instances import get_backend
    from rtlab.eval.corpus import load_corpus
    from rtlab.eval.metrics import wer
    from rtlab.decoders.files import decode_audio
    from rtlab.eval.offline import transcribe_samples

    utterances = load_corpus(spec["corpus"], language=spec.get("language"))
    audio = [decode_audio(u.audio) for u in utterances]
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
    return {
        "backend_info": backend.info(),
        "load_and_warmup_seconds": load_and_warmup,
        "audio_seconds": seconds,
        "compute_seconds": compute,
        "rtf": compute / seconds if seconds else None,
        "wer": error_rate.to_dict(),
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline,
        "hypotheses": {u.id: h for u, h in zip(utterances, hypotheses)},
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


def format_table(records: list[dict[str, Any]]) -> str:
    """One row per configuration: load, RTF, WER, peak memory and what the model added."""
    columns = ("configuration", "load+warm-up", "RTF", "WER", "peak RSS", "RSS over baseline")
    rows = [list(columns)]
    for r in records:
        m = r["result"]
        if "error" in m:
            rows.append([r["name"], "failed: " + m["error"], "", "", "", ""])
            continue
        over = m["peak_rss_bytes"] - m["baseline_rss_bytes"] if m["baseline_rss_bytes"] else None
        rows.append([
            r["name"], f"{m['load_and_warmup_seconds']:.1f} s", f"{m['rtf']:.3f}",
            f"{100 * m['wer']['value']:.1f}%", _mib(m["peak_rss_bytes"]), _mib(over),
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    from rtlab.eval.bench import hardware_summary, resolve_normalizer
    from rtlab.eval.corpus import load_corpus, shared_speech_dir
    from rtlab.eval.metrics import environment_info
    from rtlab.config import StreamConfig

    corpus = args.corpus or shared_speech_dir()
    if corpus is None:
        parser.error("no --corpus given and the shared speech folder was not found")
    utterances = load_corpus(corpus, language=args.language)
    normalizer = resolve_normalizer(args.normalizer, [u.language for u in utterances])
    configs = [StreamConfig.parse(text) for text in (args.config or DEFAULT_CONFIGS)]
    environment = environment_info()
    records = []
    for config in configs:
        # The policy plays no part offline: name the engine only.
        name = config.name or " ".join(
            [f"{config.backend}:{config.model or 'default'}"]
            + [f"{k}={v}" for k, v in sorted(config.backend_options.items())]
        )
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        spec = {"corpus": str(corpus), "backend": config.backend, "options": config.backend_kwargs(),
                "language": args.language, "normalizer": normalizer}  # fmt: skip
        records.append({"name": name, "config": config.to_dict(), "result": run_configuration(spec)})
    audio = sum(r["result"].get("audio_seconds", 0) for r in records[:1])
    subtitle = (f"{len(utterances)} files, {audio:.1f} s · normalizer: {normalizer} · clock: none (offline) · "
                f"{hardware_summary(environment)}")  # fmt: skip
    print(f"corpus: {corpus}\n{subtitle}")
    print(format_table(records))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "engines", "corpus": str(corpus), "normalizer": normalizer,
              "clock": "offline", "environment": environment, "configurations": records}  # fmt: skip
    (out / "engines.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    written = [out / "engines.json"]
    try:
        written.append(plot(records, out / "engines.png", subtitle))
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'rtlab[plots]')", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0 if all("error" not in r["result"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
