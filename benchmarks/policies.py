"""Latency against accuracy of a streaming policy as its ``min_chunk`` grows.

Replays the corpus through one configuration per ``min_chunk`` (0.5, 1 and 2 s by
default), all at once, with :func:`rtlab.eval.bench.run_bench`; prints the table and writes
``policies.json`` and ``policies.png`` (WER against median commit latency, points joined
in ``min_chunk`` order, lines out to the p95 latency).

    python benchmarks/policies.py                                  # faster-whisper tiny.en
    python benchmarks/policies.py --backend test --corpus tests/data --min-chunk 0.25 --min-chunk 1
    python benchmarks/policies.py --option compute_type=float32 --clock wall

Default corpus: the shared English speech (``rtlab.eval.corpus.shared_speech_dir()``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="corpus folder or manifest (default: the shared English speech)")
    parser.add_argument("--backend", default="faster-whisper")
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
    args = parser.parse_args(argv)

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
    (out / "policies.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
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
    sys.exit(main())
