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

End to end, one session's commit latency varies by about 0.1 s from run to run on a small
machine, more than batching is meant to cost it. ``--pass-pairs N`` measures that cost pass
by pass instead: the speech cut at ten lengths from 1 s to 10 s (the buffers a
LocalAgreement pass sends) goes through the scheduler and the session's view of the backend
as an AudioProcessor's pass does, on one instance with ``max_batch=1`` (no batcher) and on
one with ``max_batch=2`` (a batcher, one session alone), in N pairs of the same prefix,
alternating which goes first. Printed: passes and median pass seconds (submission to
result) of each, the median of the paired differences (batched minus unbatched) with a
seeded bootstrap 95% interval, the ratio of the medians, and how many pairs heard other
words (there should be none). The session rows run too only if ``--sessions`` is given.

    python benchmarks/batching.py --pass-pairs 60 --out results/batching-pairs

Writes ``batching.json`` to ``--out`` (the session rows under ``rows``, the pairs and
their summary under ``pass_pairs``) and, with ``--markdown FILE``, a dated page.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
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
    from rtlab.backends import ensure_loaded
    from rtlab.config import StreamConfig
    from rtlab.core.instances import get_backend
    from rtlab.core.scheduler import scheduler_for
    from rtlab.eval.metrics import LatencyStats, commit_latencies, wer
    from rtlab.eval.replay import replay

    configs = [
        StreamConfig.parse(f"{base},max_batch={batch},batch_wait_ms={wait_ms},name=session {i}") for i in range(sessions)
    ]
    batcher = scheduler_for(ensure_loaded(get_backend(configs[0]))).batcher  # its replicas known
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


def prefix_seconds(available: float, shortest: float = 1.0, longest: float = 10.0, count: int = 10) -> list[float]:
    """The lengths the speech is cut at for ``--pass-pairs``: ``count`` from ``shortest``
    to ``longest`` seconds, none past the ``available`` audio."""
    longest = min(longest, available)
    shortest = min(shortest, longest)
    return sorted({round(shortest + (longest - shortest) * i / max(1, count - 1), 2) for i in range(count)})


class PassPath:
    """One session's passes on one backend instance, sent as an AudioProcessor sends them:
    through the backend's scheduler (``Scheduler.submit``, holding CPU slots as a wall
    clock pass does) to the session's view of the backend (``SessionBackend.transcribe``,
    which joins the batcher where the backend has one)."""

    def __init__(self, config: Any) -> None:
        from rtlab.backends import ensure_loaded
        from rtlab.core.instances import SessionBackend, get_backend
        from rtlab.core.scheduler import scheduler_for

        self.backend = ensure_loaded(get_backend(config))
        self.scheduler = scheduler_for(self.backend)
        self.batcher = self.scheduler.batcher
        # The wall clock's key for a session that keeps up: no lag.
        self.session = SessionBackend(self.backend, self.batcher, time.monotonic)
        self.language = config.language

    async def timed_pass(self, audio: Any) -> dict:
        """One pass of ``audio``: wall seconds from submission to result, the compute the
        scheduler measured, the words heard, whether the pass went through a batcher, and
        how long it waited there (None if it did not)."""
        batched_before = self.batcher.stats.passes if self.batcher is not None else 0
        started = time.perf_counter()
        words, compute = await self.scheduler.submit(
            functools.partial(self.session.transcribe, audio, language=self.language), hold_cores=True
        )
        seconds = time.perf_counter() - started
        batched = self.batcher is not None and self.batcher.stats.passes > batched_before
        return {
            "seconds": seconds,
            "compute": compute,
            "words": [(w["text"], round(float(w["start"]), 3), round(float(w["end"]), 3)) for w in words],
            "through_batcher": batched,
            "batch_wait": self.batcher.stats.waits[-1] if batched else None,
        }

    def close(self) -> None:
        self.session.close()


def median_difference(differences: list[float], confidence: float = 0.95, resamples: int = 5000, seed: int = 0) -> dict:
    """The median of paired ``differences`` with a percentile bootstrap interval (the pairs
    drawn with replacement ``resamples`` times; the same ``seed`` and differences give the
    same interval). One pair: no interval (None)."""
    import numpy as np

    values = np.asarray(differences, dtype=float)
    low = high = None
    if len(values) > 1:
        draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
        tail = 100 * (1 - confidence) / 2
        low, high = (float(x) for x in np.percentile(np.median(values[draws], axis=1), [tail, 100 - tail]))
    return {"median": float(np.median(values)), "low": low, "high": high, "confidence": confidence,
            "resamples": resamples, "seed": seed}  # fmt: skip


def run_pass_pairs(audio: Any, base: str, pairs: int, wait_ms: float, warmup: int = 3) -> dict:
    """``pairs`` pairs of one session's passes over the same prefix of ``audio``, one
    through an instance of ``base`` with ``max_batch=1`` and one with ``max_batch=2``,
    alternating which goes first; ``warmup`` pairs before them are not counted."""
    from rtlab.config import StreamConfig
    from rtlab.core.scheduler import blas_threads

    paths = {
        batch: PassPath(StreamConfig.parse(f"{base},max_batch={batch},batch_wait_ms={wait_ms}")) for batch in (1, 2)
    }
    lengths = prefix_seconds(len(audio) / 16000)

    async def measure() -> list[dict]:
        measured = []
        for index in range(-warmup, pairs):
            seconds = lengths[index % len(lengths)]
            prefix = audio[: int(seconds * 16000)]
            order = (1, 2) if index % 2 == 0 else (2, 1)  # alternate, so that neither is always second
            passes = {batch: await paths[batch].timed_pass(prefix) for batch in order}
            if index >= 0:
                measured.append({"audio_seconds": seconds, "first": order[0], "unbatched": passes[1], "batched": passes[2]})
        return measured

    try:
        with blas_threads():  # as while an AudioProcessor runs: a pass holds one CPU slot
            measured = asyncio.run(measure())
    finally:
        for path in paths.values():
            path.close()
    unbatched = [pair["unbatched"]["seconds"] for pair in measured]
    batched = [pair["batched"]["seconds"] for pair in measured]
    waits = [pair["batched"]["batch_wait"] for pair in measured if pair["batched"]["batch_wait"] is not None]
    summary = {
        "pairs": len(measured),
        "prefix_seconds": lengths,
        "warmup_pairs": warmup,
        "unbatched_passes": len(unbatched),
        "batched_passes": len(batched),
        "unbatched_through_batcher": sum(pair["unbatched"]["through_batcher"] for pair in measured),
        "batched_through_batcher": sum(pair["batched"]["through_batcher"] for pair in measured),
        "unbatched_median": statistics.median(unbatched),
        "batched_median": statistics.median(batched),
        "difference": median_difference([b - u for b, u in zip(batched, unbatched)]),
        "ratio_of_medians": statistics.median(batched) / statistics.median(unbatched),
        "batch_wait_median": statistics.median(waits) if waits else None,
        "pairs_with_other_words": sum(
            [w[0] for w in p["unbatched"]["words"]] != [w[0] for w in p["batched"]["words"]] for p in measured
        ),
        "pairs_with_other_words_or_times": sum(p["unbatched"]["words"] != p["batched"]["words"] for p in measured),
    }
    return {"summary": summary, "pairs": measured}


def pass_pair_lines(result: dict, base: str) -> list[str]:
    """The ``--pass-pairs`` summary as markdown lines, and a table by prefix length."""
    summary = result["summary"]
    difference = summary["difference"]
    interval = ("no interval" if difference["low"] is None else
                f"{100 * difference['confidence']:.0f}% CI {1000 * difference['low']:+.1f} to {1000 * difference['high']:+.1f} ms")  # fmt: skip
    waited = "-" if summary["batch_wait_median"] is None else f"{1000 * summary['batch_wait_median']:.2f} ms"
    lines = [
        "## One session's passes, paired: max_batch=2 (batcher, alone) against max_batch=1", "",
        f"- Backend: {base}; prefixes of the speech at {', '.join(f'{s:g}' for s in summary['prefix_seconds'])} s, "
        f"in turn; {summary['warmup_pairs']} warm-up pairs not counted; the order alternates within pairs.",
        f"- Passes: {summary['unbatched_passes']} unbatched, {summary['batched_passes']} batched "
        f"(through a batcher: {summary['unbatched_through_batcher']} and {summary['batched_through_batcher']}; "
        f"median wait in it {waited}).",
        f"- Median pass (submission to result): unbatched {summary['unbatched_median']:.4f} s, "
        f"batched {summary['batched_median']:.4f} s; ratio of medians {summary['ratio_of_medians']:.4f}.",
        f"- Batched minus unbatched, median of {summary['pairs']} paired differences: "
        f"{1000 * difference['median']:+.1f} ms ({interval}, bootstrap seed {difference['seed']}).",
        f"- Pairs whose words differ: {summary['pairs_with_other_words']} of {summary['pairs']} "
        f"(words or their times differ in {summary['pairs_with_other_words_or_times']}).", "",
        "| audio | pairs | unbatched median | batched median | median difference |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for seconds in summary["prefix_seconds"]:
        pairs = [p for p in result["pairs"] if p["audio_seconds"] == seconds]
        if not pairs:
            continue
        unbatched = statistics.median(p["unbatched"]["seconds"] for p in pairs)
        batched = statistics.median(p["batched"]["seconds"] for p in pairs)
        diff = statistics.median(p["batched"]["seconds"] - p["unbatched"]["seconds"] for p in pairs)
        lines.append(f"| {seconds:g} s | {len(pairs)} | {unbatched:.4f} s | {batched:.4f} s | {1000 * diff:+.1f} ms |")
    return lines


def whole_number_of_pairs(text: str) -> int:
    """``--pass-pairs``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of pairs (1 or more), not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of pairs (1 or more), not {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="folder of audio + .txt (default: the shared English speech)")
    parser.add_argument("--backend", default="faster-whisper")
    parser.add_argument("--model", default=None)
    parser.add_argument("--backend-option", "-b", action="append", default=[], help="KEY=VALUE (repeatable)")
    parser.add_argument("--sessions", type=int, action="append",
                        help="sessions per row (repeat; default 1 2 4 8, none with --pass-pairs)")
    parser.add_argument("--pass-pairs", type=whole_number_of_pairs, metavar="N",
                        help="time N pairs of one session's passes over the same audio, through max_batch=1 "
                             "and max_batch=2 (a batcher), alternating; the session rows then run only "
                             "if --sessions is given")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of speech each session streams at least (whole clips)")
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    parser.add_argument("--normalizer", default="whisper-english")
    parser.add_argument("--out", default="results")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)

    import numpy as np

    from rtlab.backends import written_whole
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
    pairs = None
    if args.pass_pairs:
        print(f"{args.pass_pairs} pass pairs, max_batch=1 against max_batch=2 ...", file=sys.stderr, flush=True)
        pairs = run_pass_pairs(audio, base, args.pass_pairs, args.batch_wait_ms)
    rows = []
    row_sessions = args.sessions or ([] if args.pass_pairs else [1, 2, 4, 8])
    if row_sessions:
        offline = transcribe_samples(get_backend(StreamConfig.parse(base)), audio)
    for sessions in row_sessions:
        # One session with batching on: does a lone pass pay for the batch wait?
        for batch in (1, sessions if sessions > 1 else 2):
            print(f"{sessions} sessions, max_batch={batch} ...", file=sys.stderr, flush=True)
            rows.append(run_row(audio, reference, offline.words, base, sessions, batch, args.batch_wait_ms, args.normalizer))
    environment = environment_info()
    report = {"base": base, "seconds": len(audio) / 16000, "environment": environment, "rows": rows}
    if pairs is not None:
        report["pass_pairs"] = pairs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with written_whole(out / "batching.json") as partial:
        partial.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    lines = [
        f"# {datetime.date.today().isoformat()}: batching passes of concurrent sessions (benchmarks/batching.py)", "",
        f"- Hardware: {hardware_summary(environment)}; clock: wall; normalizer: {args.normalizer}.",
        f"- Command: `python benchmarks/batching.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
    ]  # fmt: skip
    if rows:
        lines += [
            f"- Backend: {base}; each session streams the same {len(audio) / 16000:.1f} s of speech in real time.",
            "", "| sessions | max_batch | passes/s | commit latency median | p95 | WER | batches formed (size: count) "
            "| batch wait median | errors |", "|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
    for row in rows:
        median = "-" if row["latency_median"] is None else f"{row['latency_median']:.2f} s"
        p95 = "-" if row["latency_p95"] is None else f"{row['latency_p95']:.2f} s"
        sizes = ", ".join(f"{k}: {v}" for k, v in row["batch_sizes"].items()) or "-"
        waited = "-" if row["batch_wait_median"] is None else f"{1000 * row['batch_wait_median']:.1f} ms"
        error_rate = "-" if row["wer"] is None else f"{100 * row['wer']:.1f}%"
        lines.append(f"| {row['sessions']} | {row['max_batch']} | {row['passes_per_second']:.2f} | {median} | {p95} | "
                     f"{error_rate} | {sizes} | {waited} | {row['errors']} |")  # fmt: skip
    if pairs is not None:
        lines += ["", *pass_pair_lines(pairs, base)]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with written_whole(Path(args.markdown)) as partial:
            partial.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
