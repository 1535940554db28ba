"""The four clocks side by side on one corpus, and whether the modeled one reproduces.

1. One configuration (default: faster-whisper tiny.en, LocalAgreement-2) over the corpus
   on the wall, simulated, modeled and unaware clocks: WER, median and p95 commit latency,
   first text, and how far each virtual clock's latencies are from the wall clock's.
2. The modeled clock ``--repeats`` times: are the committed words byte-identical?
3. A sweep of five configurations (the policy sweep of benchmarks/replay.py) on the
   simulated clock and on the modeled clock, ``--repeats`` times each, and once more on
   the modeled clock without reused backend calls (see rtlab.core.memo): wall time,
   whether every rerun gives the same WER, and how many calls were reused.

    python benchmarks/clocks.py                                   # the shared English set
    python benchmarks/clocks.py --cost-model my-costs.json        # after rtlab calibrate
    python benchmarks/clocks.py --corpus tests/data --backend test --skip-wall
    python benchmarks/clocks.py --corpus ../shared/data/speech/fr --config model=base,language=fr \
        --only-modeled --skip-sweep                                # do three modeled runs reproduce?

Writes ``clocks.json`` to ``--out`` and, with ``--markdown FILE``, the tables as a dated
page for docs/benchmarks/.
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

from rtlab.kernels import add_kernels_argument, pin_kernels_argument

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay import POLICIES  # noqa: E402  (benchmarks/replay.py: the five-policy sweep)


def check_calibrations(costs: Any, configs: list[Any]) -> None:
    """Raise the modeled clock's one-line error now if ``costs`` lacks a calibration one of
    ``configs`` needs (as a stream finds it when it starts), not after the wall and
    simulated runs have taken their minutes. Loads each configuration's model (the shared
    instance the runs use)."""
    from rtlab.backends import ensure_loaded
    from rtlab.core.costs import key_for
    from rtlab.core.instances import get_backend

    for config in configs:
        costs.find(key_for(config, ensure_loaded(get_backend(config))))


def committed_words(run: Any) -> list[str]:
    """Every stream's committed text, in order (what "the same words" compares)."""
    return [stream.hypothesis for stream in run.streams]


def summary_row(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "clock": name,
        "wer": summary["wer"]["value"],
        "median": summary["latency"]["median"],
        "p95": summary["latency"]["p95"],
        "first_text": summary["first_text_latency"]["median"],
        "rtf": summary["rtf"],
        "errors": summary.get("errors", 0),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _off(value: float | None, wall: float | None) -> str:
    if value is None or not wall:
        return "-"
    return f"{100 * (value - wall) / wall:+.0f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="corpus folder or manifest (default: the shared English speech)")
    parser.add_argument("--backend", default="faster-whisper")
    parser.add_argument("--config", default=None, help="the configuration of part 1 (default: the backend's defaults)")
    parser.add_argument("--cost-model", default=None, help="cost-model file (default: rtlab's reference CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="modeled reruns (parts 2 and 3)")
    parser.add_argument("--skip-wall", action="store_true", help="leave out the wall clock (it takes the audio's length)")
    parser.add_argument("--only-modeled", action="store_true",
                        help="part 1 on the modeled clock alone (with part 2: whether modeled runs reproduce)")  # fmt: skip
    parser.add_argument("--skip-sweep", action="store_true", help="leave out part 3")
    parser.add_argument("--batch", type=int, default=1,
                        help="part 3's modeled sweep: passes batched up to this many per model call (default 1: not "
                             "batched; on two CPU cores batching bought the sweep nothing)")
    parser.add_argument("--normalizer", default="auto")
    parser.add_argument("--out", default="results")
    parser.add_argument("--markdown", default=None, help="also write the tables to this Markdown file")
    add_kernels_argument(parser)
    args = parser.parse_args(argv)
    from rtlab.backends import MAX_BATCH

    if not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must be from 1 (not batched) to {MAX_BATCH}, not {args.batch}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    pin_kernels_argument(parser, args)

    from rtlab.config import StreamConfig
    from rtlab.core.costs import cost_model_summary, load_cost_model
    from rtlab.eval.bench import hardware_summary, run_bench
    from rtlab.eval.corpus import shared_speech_dir

    corpus = args.corpus or shared_speech_dir()
    if corpus is None:
        parser.error("no --corpus given and the shared English speech was not found")
    costs = load_cost_model(args.cost_model)
    config = StreamConfig.parse(args.config or f"backend={args.backend}")
    head = f"backend={config.backend}" + (f",model={config.model}" if config.model else "")
    sweep = [] if args.skip_sweep else [StreamConfig.parse(f"{head},{policy}") for policy in POLICIES]
    check_calibrations(costs, [config, *sweep])
    report: dict[str, Any] = {"corpus": str(corpus), "config": config.to_dict(), "cost_model": costs.describe()}

    def bench(configs: list[StreamConfig], clock: str, reuse: bool = True, batch: int | None = None) -> tuple[Any, float]:
        started = time.perf_counter()
        run = run_bench(corpus, configs, clock=clock, cost_model=costs, normalizer=args.normalizer, progress=False,
                        reuse_passes=reuse, batch=batch)  # fmt: skip
        return run, time.perf_counter() - started

    # 1. the clocks side by side
    rows, runs = [], {}
    for clock in ("wall", "simulated", "modeled", "unaware"):
        if (clock == "wall" and args.skip_wall) or (args.only_modeled and clock != "modeled"):
            continue
        print(f"{clock} clock ...", file=sys.stderr, flush=True)
        runs[clock], _ = bench([config], clock)
        rows.append(summary_row(clock, runs[clock].summaries[0]))
    report["clocks"] = rows
    report["environment"] = next(iter(runs.values())).environment
    report["normalizer"] = next(iter(runs.values())).normalizer

    # 2. modeled reruns
    words = [committed_words(runs["modeled"])]
    for _ in range(args.repeats - 1):
        words.append(committed_words(bench([config], "modeled")[0]))
    report["modeled_runs_identical"] = all(w == words[0] for w in words)

    # 3. the sweep
    if sweep:
        sweeps: dict[str, Any] = {}
        # The modeled clock once more without reusing calls or batching: how much of its
        # speed is passes run side by side without CPU slots, and how much calls made once
        # (and whether the words are the same without them).
        batch = args.batch if args.batch > 1 else None
        report["sweep_batch"] = batch
        for name, clock, reuse, batched, repeats in (
            ("simulated", "simulated", True, None, args.repeats),
            ("modeled", "modeled", True, batch, args.repeats),
            ("modeled, no reused calls", "modeled", False, None, 1),
        ):
            times, wers, reused = [], [], []
            for _ in range(repeats):
                print(f"sweep, {name} ...", file=sys.stderr, flush=True)
                run, seconds = bench(sweep, clock, reuse, batched)
                times.append(seconds)
                wers.append([s["wer"] for s in run.summaries])
                reused.append((run.reused_calls, run.model_calls + run.reused_calls))
            sweeps[name] = {"wall_seconds": times, "same_wer_every_run": all(w == wers[0] for w in wers),
                            "wer": [w["value"] for w in wers[0]], "reused_calls": reused}  # fmt: skip
        report["sweep"] = sweeps

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from rtlab.backends import written_whole

    with written_whole(out / "clocks.json") as partial:
        partial.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")

    wall = next((r for r in rows if r["clock"] == "wall"), None)
    lines = [
        f"# {datetime.date.today().isoformat()}: the four clocks (benchmarks/clocks.py)", "",
        f"- Hardware: {hardware_summary(report['environment'])}; normalizer {report['normalizer']}.",
        f"- Corpus: {corpus}; configuration: {config.label}.",
        f"- Cost model: {cost_model_summary(costs.describe())}.",
        f"- Command: `python benchmarks/clocks.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
        "| clock | WER | commit latency median | p95 | first text | RTF | median vs wall | p95 vs wall | failed streams |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['clock']} | {_pct(row['wer'])} | {_s(row['median'])} | {_s(row['p95'])} | "
            f"{_s(row['first_text'])} | {'-' if row['rtf'] is None else format(row['rtf'], '.3f')} | "
            f"{_off(row['median'], wall and wall['median'])} | {_off(row['p95'], wall and wall['p95'])} | {row['errors']} |"
        )
    lines += ["", f"- {args.repeats} modeled runs give byte-identical committed words: {report['modeled_runs_identical']}."]
    if "sweep" in report:
        for name, sweep_result in report["sweep"].items():
            times = ", ".join(f"{t:.1f} s" for t in sweep_result["wall_seconds"])
            reused, calls = sweep_result["reused_calls"][0]
            batched = f" (passes batched up to {report['sweep_batch']} per call)" if name == "modeled" and report["sweep_batch"] else ""
            if name == "modeled, no reused calls" and report["sweep_batch"]:
                name += ", not batched"
            lines.append(f"- Five-configuration sweep, {name}{batched}: {times}; the same WER on every run: "
                         f"{sweep_result['same_wer_every_run']}"
                         + (f"; {reused} of {calls} backend calls reused." if calls else "."))  # fmt: skip
        simulated, modeled, alone = (
            min(report["sweep"][c]["wall_seconds"]) for c in ("simulated", "modeled", "modeled, no reused calls")
        )
        wer_same = report["sweep"]["modeled"]["wer"] == report["sweep"]["modeled, no reused calls"]["wer"]
        medians = [statistics.median(report["sweep"][c]["wall_seconds"]) for c in ("simulated", "modeled")]
        lines.append(f"- Modeled sweep faster than simulated: {simulated / modeled:.2f}x (fastest runs; "
                     f"{medians[0] / medians[1]:.2f}x between the medians); without reused calls "
                     f"{simulated / alone:.2f}x; WER the same with and without: {wer_same}.")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with written_whole(Path(args.markdown)) as partial:
            partial.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
