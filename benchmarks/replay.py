"""Replay several configurations together, then one at a time, and compare.

The evaluation toolkit's target: five tiny.en configurations replayed over the shared
English set (the FLEURS clips joined into one 41 s stream) on the simulated clock take
less wall time than the audio lasts, and each reports the same WER as when it runs alone.
This script runs both replays with :func:`rtlab.eval.bench.run_bench`, prints both tables and
one line per check, and writes ``replay.json``. Exit status 0 when both checks hold, 1
when one does not.

    python benchmarks/replay.py                      # the five policies below, tiny.en
    python benchmarks/replay.py --grid my-grid.toml  # any five (or more) configurations
    python benchmarks/replay.py --backend test --corpus tests/data

The default configurations are a policy sweep with ``pad_seconds=1`` (the encoder on the
buffer plus 1 s instead of Whisper's 30 s window): ``min_chunk`` 0.5, 1 and 2 s, and
``min_chunk`` 1 with ``deadline_sec=1.75``, with and without ``buffer_trimming_sec=8``.
Default corpus: the FLEURS clips of the shared English speech
(``rtlab.eval.corpus.shared_speech_dir()``), joined without gaps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

POLICIES = (
    "min_chunk=0.5",
    "min_chunk=1",
    "min_chunk=2",
    "min_chunk=1,deadline_sec=1.75",
    "min_chunk=1,deadline_sec=1.75,buffer_trimming_sec=8",
)
#: Backend options of the default configurations, per backend.
BACKEND_OPTIONS = {"faster-whisper": "model=tiny.en,pad_seconds=1"}


def fleurs_manifest(folder: Path, target: Path) -> Path | None:
    """A JSONL manifest of the ``fleurs-*`` clips in ``folder`` (in name order), or None."""
    clips = sorted(folder.glob("fleurs-*.ogg"))
    if not clips:
        return None
    with target.open("w", encoding="utf-8") as fh:
        for clip in clips:
            text = clip.with_suffix(".txt").read_text(encoding="utf-8").strip()
            fh.write(json.dumps({"audio": str(clip), "text": text, "id": clip.stem}) + "\n")
    return target


def compare(together: Any, alone: Any) -> dict[str, Any]:
    """The two checks, from the two :class:`~rtlab.eval.bench.BenchRun` results."""
    # The same WER is the same edit counts, not only the same rounded rate.
    wer_together = {s["name"]: s["wer"] for s in together.summaries}
    wer_alone = {s["name"]: s["wer"] for s in alone.summaries}
    differing = sorted(name for name in wer_together if wer_together[name] != wer_alone.get(name))
    return {
        "audio_seconds": together.audio_seconds,
        "wall_seconds_together": together.wall_seconds,
        "wall_seconds_alone": alone.wall_seconds,
        "faster_than_the_audio": together.wall_seconds < together.audio_seconds,
        "same_wer_as_alone": not differing,
        "wer_differs": {name: [wer_together[name]["value"], (wer_alone.get(name) or {}).get("value")]
                        for name in differing},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="corpus folder or manifest (default: the shared FLEURS clips)")
    parser.add_argument("--backend", default="faster-whisper", help="backend of the default configurations")
    parser.add_argument("--config", action="append", default=[], help="a configuration (repeat) instead of the defaults")
    parser.add_argument("--grid", help="a TOML grid (as rtlab bench --grid) instead of the defaults")
    parser.add_argument("--gap", type=float, default=0.0, help="seconds of silence between clips (default 0)")
    parser.add_argument("--normalizer", default="auto", help="auto, whisper-english, whisper-basic or none")
    parser.add_argument("--out", default="results", help="output folder (default: results/)")
    args = parser.parse_args(argv)

    from rtlab.eval.bench import load_grid, run_bench
    from rtlab.eval.corpus import shared_speech_dir
    from rtlab.config import StreamConfig

    if args.config or args.grid:
        configs = [StreamConfig.parse(text) for text in args.config] + (load_grid(args.grid) if args.grid else [])
    else:
        options = BACKEND_OPTIONS.get(args.backend)
        base = f"backend={args.backend}" + (f",{options}" if options else "")
        configs = [StreamConfig.parse(f"{base},{policy}") for policy in POLICIES]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtlab-replay-") as tmp:
        corpus = args.corpus
        if corpus is None:
            shared = shared_speech_dir()
            corpus = fleurs_manifest(shared, Path(tmp) / "fleurs.jsonl") if shared else None
            if corpus is None:
                parser.error("no --corpus given and the shared FLEURS clips were not found")
        runs = {}
        for mode, one_at_a_time in (("together", False), ("one at a time", True)):
            print(f"replaying {len(configs)} configurations {mode}...", file=sys.stderr, flush=True)
            runs[mode] = run_bench(corpus, configs, long_form=True, gap_seconds=args.gap,
                                   normalizer=args.normalizer, one_at_a_time=one_at_a_time,
                                   work_dir=tmp, progress=False)  # fmt: skip
            print(runs[mode].table() + "\n")
    checks = compare(runs["together"], runs["one at a time"])
    print(f"together: {checks['wall_seconds_together']:.1f} s for {checks['audio_seconds']:.1f} s of audio: "
          + ("faster than the audio" if checks["faster_than_the_audio"] else "NOT faster than the audio"))
    print("WER together and alone: " + ("the same in every configuration" if checks["same_wer_as_alone"]
          else "differs for " + "; ".join(f"{k} ({v[0]} / {v[1]})" for k, v in checks["wer_differs"].items())))  # fmt: skip
    report = {"benchmark": "replay", "checks": checks,
              **{mode.replace(" ", "_"): {**run.run_record(), "summaries": run.summaries} for mode, run in runs.items()}}  # fmt: skip
    path = out / "replay.json"
    path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(f"wrote {path}")
    return 0 if checks["faster_than_the_audio"] and checks["same_wer_as_alone"] else 1


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
