"""Which words make a WER difference? The places behind the figures of benchmarks/accuracy.py
and ``rtlab bench``.

With one results file (``accuracy.json``, or ``rtlab bench``'s ``results.jsonl``): per
language and configuration, every place where a stream's words differ from the offline
pass's on the same clip (both normalized as the run was), the reference's words there, and
what the place costs in errors against the reference. The same difference at several
shifts of one clip is one row, its cost summed; the costliest rows come first. With two
(FILE:CONFIGURATION each, the same file allowed): the places where the first
configuration's streams differ from the second's, on the clips and shifts both ran.

    python benchmarks/word_diffs.py results/acc/accuracy.json
    python benchmarks/word_diffs.py results/acc/accuracy.json:default --top 40
    python benchmarks/word_diffs.py results/aa/accuracy.json:alignatt results/la/accuracy.json:default
    python benchmarks/word_diffs.py results/bench/results.jsonl:fast results/bench/results.jsonl:slow

A place's cost is the change in edits against the reference when only that place of the
base text (offline, or the second run) is replaced by the other's words. The places of a
stream usually add up to the difference of the whole texts, not always (two places can
share an edit): each header prints both. The references are ``SPEECH/LANGUAGE/CLIP.txt``
(``--speech``, default: the shared speech folder; ``results.jsonl`` carries its own);
without them the places are listed without costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intervals import Streams, add_results_arguments, open_results  # noqa: E402  (benchmarks/intervals.py: the results files)

Group = dict[tuple[str, Any], dict[str, Any]]  # (clip, shift) -> stream


@dataclass
class Place:
    """One difference of a clip's two texts, at every shift where it occurs."""

    clip: str
    difference: Any  # rtlab.eval.metrics.WordDifference (of its first occurrence)
    shifts: list[Any] = field(default_factory=list)
    cost: int | None = 0


def _quoted(words: tuple[str, ...] | None) -> str:
    return "-" if words is None else f"\"{' '.join(words)}\"" if words else "(nothing)"


def _signed(value: int) -> str:
    return f"{value:+d}"


def load(path: Path, speech: Path | None) -> dict[tuple[str, str], Group]:
    """A results file's streams by (language, configuration): each stream's ``streamed``
    and ``offline`` texts, its ``normalizer`` and its ``reference`` text (None where none
    is found). ``rtlab bench``'s ``results.jsonl`` has no language column: "" there."""
    groups: dict[tuple[str, str], Group] = {}
    if path.suffix == ".jsonl":
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line) if line.strip() else {}
                if record.get("record") != "stream":
                    continue
                groups.setdefault(("", record["config"]["name"]), {})[(record["file"], None)] = {
                    "file": record["file"], "streamed": record["hypothesis"], "offline": record.get("offline_hypothesis"),
                    "normalizer": record["normalizer"], "reference": record.get("reference") or None,
                }  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SystemExit(f"{path} is not a results.jsonl of rtlab bench") from None
        if not groups:
            raise SystemExit(f"{path} holds no streams")
        return groups
    run = Streams(path, speech)
    for language, configuration in run.groups():
        streams = run.streams(language, configuration)
        for key, stream in streams.items():
            found = run.reference(stream)
            reference = found.read_text(encoding="utf-8").strip() if found is not None and found.is_file() else None
            groups.setdefault((language, configuration), {})[key] = {**stream, "reference": reference}
    return groups


def clip_labels(clips: list[str]) -> dict[str, str]:
    """A short label per clip: its file stem, or, where stems repeat (LibriSpeech keeps a
    speaker's chapters in folders), as many of its last path parts as tell it apart."""
    labels = {}
    for clip in clips:
        parts = Path(clip).with_suffix("").parts
        for count in range(1, len(parts) + 1):
            tail = parts[-count:]
            if count == len(parts) or sum(Path(c).with_suffix("").parts[-count:] == tail for c in set(clips)) == 1:
                labels[clip] = "/".join(tail)
                break
    return labels


def report(name: str, pairs: list[tuple[tuple[str, Any], dict, str, str]], top: int, base_name: str,
           other_name: str) -> list[str]:  # fmt: skip
    """The lines for one group: ``pairs`` of (key, stream, base text, other text)."""
    from rtlab.eval.metrics import wer, word_differences

    rows: dict[tuple, Place] = {}
    differing = whole = places_sum = 0
    references = [stream["reference"] for _, stream, _, _ in pairs]
    costed = all(reference is not None for reference in references)
    labels = clip_labels([clip for (clip, _), _, _, _ in pairs])
    for ((clip, shift), stream, base, other), reference in zip(pairs, references):
        normalizer = stream["normalizer"]
        differences = word_differences(base or "", other or "", reference if costed else None, normalizer)
        if not differences:  # the same normalized words
            continue
        differing += 1
        for difference in differences:
            place = rows.setdefault((clip, difference.base, difference.other),
                                    Place(labels[clip], difference, cost=0 if costed else None))  # fmt: skip
            place.shifts.append(shift)
            if costed:
                place.cost += difference.cost
                places_sum += difference.cost
        if costed:
            whole += wer(reference, other or "", normalizer).errors - wer(reference, base or "", normalizer).errors
    places = f"{len(rows)} place{'s' * (len(rows) != 1)}"
    lines = [f"{name}: {differing} of {len(pairs)} streams differ from {base_name} in {places}"
             + (f"; {_signed(whole)} errors against the reference ({_signed(places_sum)} place by place)" if costed else
                "; no references, no costs")]  # fmt: skip
    ordered = sorted(rows.values(), key=lambda p: (-(p.cost or 0), -len(p.shifts), p.clip))
    for place in ordered[:top]:
        counts = dict.fromkeys(place.shifts, 0)
        for shift in place.shifts:
            counts[shift] += 1
        where = ", ".join(f"{s:g}" + (f" (x{n})" if n > 1 else "") for s, n in counts.items() if s is not None)
        unshifted = counts.get(None, 0)
        where = f" (shift {where} s)" if where else (f" (x{unshifted})" if unshifted > 1 else "")
        cost = "" if place.cost is None else f"{_signed(place.cost):>4}  "
        difference = place.difference
        lines.append(f"  {cost}{place.clip}{where}: {base_name} {_quoted(difference.base)} -> "
                     f"{other_name} {_quoted(difference.other)}, reference {_quoted(difference.reference)}")  # fmt: skip
    if len(ordered) > top:
        lines.append(f"  ... {len(ordered) - top} more (--top)")
    return lines


def print_lines(lines: list[str]) -> None:
    """Print ``lines``. A reader that stops early (``| head``) ends the script quietly, with
    status 1 as the rtlab CLI (click) ends then, not with a BrokenPipeError traceback."""
    try:
        print("\n".join(lines))
        sys.stdout.flush()  # here, not at exit, where the error would be printed as ignored
    except BrokenPipeError:
        # Python flushes stdout once more at exit: into /dev/null, so that it says nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_results_arguments(parser, "accuracy.json or rtlab bench's results.jsonl")
    parser.add_argument("--top", type=int, default=15, help="rows per language and configuration (default 15)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")
    sources, speech = open_results(parser, args)
    files = [load(path, speech) for path, _ in sources]

    def title(language: str, name: str) -> str:
        return f"{language} {name}" if language else name

    lines: list[str] = []
    if len(files) == 1:
        (_, only), (groups,) = sources[0], files
        named = sorted({configuration for _, configuration in groups})
        if only and only not in named:
            print(f"{sources[0][0]} has no configuration {only!r}; it has {', '.join(map(repr, named)) or 'none'}",
                  file=sys.stderr)  # fmt: skip
            return 1
        for (language, configuration), streams in groups.items():
            if only and configuration != only:
                continue
            pairs = [(key, s, s["offline"], s["streamed"]) for key, s in streams.items() if s.get("offline") is not None]
            if not pairs:
                lines.append(f"{title(language, configuration)}: no offline pass to compare with")
                continue
            lines += report(title(language, configuration), pairs, args.top, "offline", "streamed")
    else:
        (_, first), (_, second) = sources
        if not first or not second:
            parser.error("to compare two files, name a configuration in each: FILE:CONFIGURATION")
        # Runs of one configuration name in two files are told apart by what was given.
        names = (first, second) if first != second else tuple(args.results)
        for language in [language for language, configuration in files[0] if configuration == first]:
            a, b = files[0][(language, first)], files[1].get((language, second), {})
            pairs = [(key, a[key], b[key]["streamed"], a[key]["streamed"]) for key in a if key in b]
            if pairs:
                lines += report(title(language, f"{names[0]} against {names[1]}"), pairs, args.top, names[1], names[0])
        if not lines:
            print(f"no language has streams of both {first} and {second} on the same clips and shifts", file=sys.stderr)
            return 1
    print_lines(lines)
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
