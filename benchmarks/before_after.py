"""Two versions of rtlab side by side: the figures of streaming_vs_offline.py and replay.py.

Run both benchmarks with each version, each writing into its own folder (``--out``), then
write one Markdown table of the two::

    python benchmarks/streaming_vs_offline.py --out results/before     # on the old checkout
    python benchmarks/replay.py --out results/before
    python benchmarks/streaming_vs_offline.py --out results/after      # on the new one
    python benchmarks/replay.py --out results/after
    python benchmarks/before_after.py results/before results/after \\
        --before-label b62b5db --after-label HEAD --out docs/benchmarks/2026-11-30-before-after.md

Each table row puts a figure of the first version beside the second's. Timings on a shared
machine move from run to run: compare WER and edit counts exactly, latencies and wall
times as the noisy medians they are.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(before: str, after: str) -> str:
    return f"{before} / {after}"


def _environment(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    memory = env.get("memory_total_bytes")
    packages = env.get("packages", {})
    # rtlab's own version is the label's (a git revision): both checkouts share one install.
    versions = ", ".join(f"{k} {v}" for k, v in sorted(packages.items()) if v and k != "rtlab") or "not recorded"
    return (
        f"{env.get('cpu_count')} CPUs ({env.get('machine')}), "
        + (f"{memory / 2**30:.1f} GiB, " if memory else "")
        + f"Python {env.get('python', '?')}; {versions}"
    )


def streaming_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Pooled figures per min_chunk, before / after."""
    lines = [
        "| min_chunk | offline WER | streaming WER | commit latency median | p95 | first text (median) | RTF | first PCM (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs_after = {run["min_chunk"]: run for run in after["runs"]}
    for run in before["runs"]:
        other = runs_after.get(run["min_chunk"])
        if other is None:
            continue
        a, b = run["summary"], other["summary"]
        lines.append("| " + " | ".join([
            f"{run['min_chunk']:g} s",
            _pair(_pct(a["offline_wer"]["value"]), _pct(b["offline_wer"]["value"])),
            _pair(_pct(a["wer"]["value"]), _pct(b["wer"]["value"])),
            _pair(_s(a["latency"]["median"]), _s(b["latency"]["median"])),
            _pair(_s(a["latency"]["p95"]), _s(b["latency"]["p95"])),
            _pair(_s(a["first_text_latency"]["median"]), _s(b["first_text_latency"]["median"])),
            _pair(_num(a["rtf"]), _num(b["rtf"])),
            _pair(f"{1000 * a['first_pcm_latency_median']:.0f} ms", f"{1000 * b['first_pcm_latency_median']:.0f} ms"),
        ]) + " |")  # fmt: skip
    return lines


def _edits(wer: dict[str, Any]) -> str:
    return f"{wer.get('substitutions')}S {wer.get('deletions')}D {wer.get('insertions')}I"


def replay_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Per configuration, together and one at a time, before / after."""
    lines = [
        "| configuration | WER together | WER alone | edits together | median latency | p95 latency | RTF together |",
        "|---|---|---|---|---|---|---|",
    ]
    alone_before = {s["name"]: s for s in before["one_at_a_time"]["summaries"]}
    alone_after = {s["name"]: s for s in after["one_at_a_time"]["summaries"]}
    together_after = {s["name"]: s for s in after["together"]["summaries"]}
    for a in before["together"]["summaries"]:
        name = a["name"]
        b = together_after.get(name)
        if b is None:
            continue
        lines.append("| " + " | ".join([
            name,
            _pair(_pct(a["wer"]["value"]), _pct(b["wer"]["value"])),
            _pair(_pct(alone_before[name]["wer"]["value"]), _pct(alone_after[name]["wer"]["value"])),
            _pair(_edits(a["wer"]), _edits(b["wer"])),
            _pair(_s(a["latency"]["median"]), _s(b["latency"]["median"])),
            _pair(_s(a["latency"]["p95"]), _s(b["latency"]["p95"])),
            _pair(_num(a["rtf"]), _num(b["rtf"])),
        ]) + " |")  # fmt: skip
    checks_a, checks_b = before["checks"], after["checks"]
    lines += [
        "",
        f"- Audio: {checks_a['audio_seconds']:.1f} s / {checks_b['audio_seconds']:.1f} s.",
        f"- Wall time together: {checks_a['wall_seconds_together']:.1f} s / {checks_b['wall_seconds_together']:.1f} s; "
        f"one at a time: {checks_a['wall_seconds_alone']:.1f} s / {checks_b['wall_seconds_alone']:.1f} s.",
        f"- Faster than the audio: {checks_a['faster_than_the_audio']} / {checks_b['faster_than_the_audio']}; "
        f"the same WER together as alone: {checks_a['same_wer_as_alone']} / {checks_b['same_wer_as_alone']}.",
    ]
    return lines


def report(before_dir: Path, after_dir: Path, labels: tuple[str, str], commands: list[str]) -> str:
    """The Markdown page."""
    date = datetime.date.today().isoformat()
    lines = [f"# {date}: before and after ({labels[0]} / {labels[1]})", ""]
    lines += [f"Each cell is **{labels[0]} / {labels[1]}**, measured one after the other on one machine.", ""]
    streaming = (_load(before_dir, "streaming_vs_offline.json"), _load(after_dir, "streaming_vs_offline.json"))
    replayed = (_load(before_dir, "replay.json"), _load(after_dir, "replay.json"))
    if commands:
        lines += ["Commands:", "", "```", *commands, "```", ""]
    if all(streaming):
        first = streaming[0]
        lines += [
            "## benchmarks/streaming_vs_offline.py", "",
            f"- Hardware and versions ({labels[0]}): {_environment(first)}.",
            f"- Hardware and versions ({labels[1]}): {_environment(streaming[1])}.",
            f"- Backend {first['backend']}, model {first['model']}, clock {first['clock']}, input "
            f"{first['input']}, normalizer {first['normalizer']}; pooled over every file.", "",
            *streaming_table(*streaming), "",
        ]  # fmt: skip
    if all(replayed):
        together = replayed[0]["together"]
        lines += [
            "## benchmarks/replay.py", "",
            f"- Hardware and versions ({labels[0]}): {_environment(together)}.",
            f"- Hardware and versions ({labels[1]}): {_environment(replayed[1]['together'])}.",
            f"- Corpus {together['corpus']} (long form), clock {together['clock']}, normalizer "
            f"{together['normalizer']}.", "",
            *replay_table(*replayed), "",
        ]  # fmt: skip
    if not any(streaming) and not any(replayed):
        raise SystemExit(f"no streaming_vs_offline.json or replay.json in both {before_dir} and {after_dir}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="folder with the first version's JSON")
    parser.add_argument("after", type=Path, help="folder with the second version's JSON")
    parser.add_argument("--before-label", default="before")
    parser.add_argument("--after-label", default="after")
    parser.add_argument("--command", action="append", default=[], help="a command that was run (repeat)")
    parser.add_argument("--out", type=Path, help="Markdown file to write (default: print)")
    args = parser.parse_args(argv)
    text = report(args.before, args.after, (args.before_label, args.after_label), args.command)
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
