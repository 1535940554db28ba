"""Passes of concurrent sessions batched into one model call, against one call per pass.

N sessions (1, 2, 4, 8 by default) stream the same speech in real time (the wall clock)
through one shared backend instance, first with ``max_batch=1`` (every pass a model call of
its own), then with ``max_batch=N``. Printed per row: passes per second the backend served,
commit latency median and p95 (rtlab's definition: against the word ends of an offline pass
of the same audio, ``rtlab.eval.metrics.commit_latencies``), WER, the batch sizes the
batcher formed, and how long a pass waited in the batcher for its batch (median).

    python benchmarks/batching.py                                  # faster-whisper tiny.en
    python benchmarks/batching.py --sessions 1 --sessions 4 --seconds 20
    python benchmarks/batching.py --backend test -b compute_rtf=0.3 --corpus tests/data

Writes ``batching.json`` to ``--out`` and, with ``--markdown FILE``, a dated page.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def run_row(
    audio: Any, reference: str, offline_words: list, base: str, sessions: int, batch: int, wait_ms: float, normalizer: str
) -> dict:
    """One row: ``sessions`` streams of ``audio`` on the wall clock through one backend;
    ``offline_words``, an offline pass's words of ``audio``, time the commits."""
    from rtlab.config import StreamConfig
    from rtlab.core.instances import get_backend
    from rtlab.core.scheduler import scheduler_for
    from rtlab.eval.metrics import LatencyStats, commit_latencies, wer
    from rtlab.eval.replay import replay

    configs = [
        StreamConfig.parse(f"{base},max_batch={batch},batch_wait_ms={wait_ms},name=session {i}") for i in range(sessions)
    ]
    batcher = scheduler_for(get_backend(configs[0])).batcher
    before = (batcher.stats.batches, batcher.stats.passes) if batcher is not None else (0, 0)
    started = time.perf_counter()
    runs = replay(audio, configs, clock="wall")
    seconds = time.perf_counter() - started
    passes = sum(len(run.lag_samples) for run in runs)
    latencies = LatencyStats.from_values(
        latency for run in runs for latency in commit_latencies(run.events, offline_words, normalizer)
    )
    batches = batcher.stats.batches - before[0] if batcher is not None else 0
    sizes = batcher.stats.sizes[-batches:] if batches else []
    waits = batcher.stats.waits[-(batcher.stats.passes - before[1]):] if batches else []
    return {
        "sessions": sessions,
        "max_batch": batch,
        "passes": passes,
        "passes_per_second": passes / seconds,
        "wall_seconds": seconds,
        "latency_median": latencies.median,
        "latency_p95": latencies.p95,
        "wer": wer([reference] * sessions, [run.text for run in runs], normalizer).defined_value,
        "batch_sizes": {str(size): sizes.count(size) for size in sorted(set(sizes))},
        "batch_wait_median": statistics.median(waits) if waits else None,
        "errors": sum(1 for run in runs if run.error),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="folder of audio + .txt (default: the shared English speech)")
    parser.add_argument("--backend", default="faster-whisper")
    parser.add_argument("--model", default=None)
    parser.add_argument("--backend-option", "-b", action="append", default=[], help="KEY=VALUE (repeatable)")
    parser.add_argument("--sessions", type=int, action="append", help="sessions per row (repeat; default 1 2 4 8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of speech each session streams at least (whole clips)")
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    parser.add_argument("--normalizer", default="whisper-english")
    parser.add_argument("--out", default="results")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)

    import numpy as np

    from rtlab.config import StreamConfig
    from rtlab.core.instances import get_backend
    from rtlab.decoders.files import decode_audio
    from rtlab.eval.bench import hardware_summary
    from rtlab.eval.corpus import load_corpus, shared_speech_dir
    from rtlab.eval.metrics import environment_info
    from rtlab.eval.offline import transcribe_samples

    corpus = args.corpus or shared_speech_dir()
    if corpus is None:
        parser.error("no --corpus given and the shared English speech was not found")
    utterances = load_corpus(corpus)
    pieces, texts, total = [], [], 0.0
    for utterance in utterances:
        samples = decode_audio(utterance.audio)
        pieces += [samples, np.zeros(8000, np.float32)]
        texts.append(utterance.text)
        total += len(samples) / 16000 + 0.5
        if total >= args.seconds:
            break
    audio = np.concatenate(pieces)  # whole clips, so that the references match the audio
    reference = " ".join(texts)
    base = f"backend={args.backend}" + (f",model={args.model}" if args.model else "")
    base += "".join(f",backend.{option}" for option in args.backend_option)
    offline = transcribe_samples(get_backend(StreamConfig.parse(base)), audio)
    rows = []
    for sessions in args.sessions or [1, 2, 4, 8]:
        # One session with batching on: does a lone pass pay for the batch wait?
        for batch in (1, sessions if sessions > 1 else 2):
            print(f"{sessions} sessions, max_batch={batch} ...", file=sys.stderr, flush=True)
            rows.append(run_row(audio, reference, offline.words, base, sessions, batch, args.batch_wait_ms, args.normalizer))
    environment = environment_info()
    report = {"base": base, "seconds": len(audio) / 16000, "environment": environment, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batching.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    lines = [
        f"# {datetime.date.today().isoformat()}: batching passes of concurrent sessions (benchmarks/batching.py)", "",
        f"- Hardware: {hardware_summary(environment)}; clock: wall; normalizer: {args.normalizer}.",
        f"- Backend: {base}; each session streams the same {len(audio) / 16000:.1f} s of speech in real time.",
        f"- Command: `python benchmarks/batching.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
        "| sessions | max_batch | passes/s | commit latency median | p95 | WER | batches formed (size: count) | batch wait median | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in rows:
        median = "-" if row["latency_median"] is None else f"{row['latency_median']:.2f} s"
        p95 = "-" if row["latency_p95"] is None else f"{row['latency_p95']:.2f} s"
        sizes = ", ".join(f"{k}: {v}" for k, v in row["batch_sizes"].items()) or "-"
        waited = "-" if row["batch_wait_median"] is None else f"{1000 * row['batch_wait_median']:.1f} ms"
        error_rate = "-" if row["wer"] is None else f"{100 * row['wer']:.1f}%"
        lines.append(f"| {row['sessions']} | {row['max_batch']} | {row['passes_per_second']:.2f} | {median} | {p95} | "
                     f"{error_rate} | {sizes} | {waited} | {row['errors']} |")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
