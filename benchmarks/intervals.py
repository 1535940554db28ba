"""Is a WER difference bigger than the set can tell? Paired bootstrap intervals for the runs
of ``benchmarks/accuracy.py``.

With one results file, each language and configuration's streaming WER minus the offline
pass's on the same clips; with two, one configuration's streaming WER minus the other's,
per language, on the clips and shifts both ran. A clip's streams at every shift are drawn
together (:func:`rtlab.eval.metrics.paired_difference`: 95%, 2,000 resamples, seed 0).

    python benchmarks/intervals.py results/acc/accuracy.json
    python benchmarks/intervals.py results/aa/accuracy.json:alignatt results/la/accuracy.json:default

A stream's edit counts come from the file (``accuracy.py`` writes them since 2026-12-02);
for an older file they are counted again from the streamed and offline texts against the
references, ``SPEECH/LANGUAGE/CLIP.txt`` (``--speech``, default: the shared speech folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Key = tuple[str, Any]  # (clip file, shift)


def parse_source(text: str) -> tuple[Path, str | None]:
    """``FILE`` or ``FILE:CONFIGURATION``."""
    path, _, config = text.partition(":") if not Path(text).exists() else (text, "", "")
    return Path(path), config or None


class Streams:
    """One results file's streams, with their edit counts against the references."""

    def __init__(self, path: Path, speech: Path | None) -> None:
        from rtlab.eval.metrics import ErrorRate, wer

        self.path = path
        try:
            self.rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        except (ValueError, KeyError, TypeError):
            raise SystemExit(f"{path} is not a results file of benchmarks/accuracy.py (no rows)") from None
        self._ErrorRate, self._wer, self.speech = ErrorRate, wer, speech

    def groups(self) -> list[tuple[str, str]]:
        """(language, configuration) in the file's order, long-form rows left out."""
        return list(dict.fromkeys((r["language"], r["configuration"]) for r in self.rows if not r.get("long_form")))

    def streams(self, language: str, configuration: str) -> dict[Key, dict[str, Any]]:
        return {(s["file"], row.get("shift")): {**s, "normalizer": row["normalizer"], "language": language}
                for row in self.rows
                if row["language"] == language and row["configuration"] == configuration and not row.get("long_form")
                for s in row["streams"]}  # fmt: skip

    def reference(self, stream: dict[str, Any]) -> Path | None:
        """Where the stream's reference text would be (None without a speech folder)."""
        return None if self.speech is None else self.speech / stream["language"] / (Path(stream["file"]).stem + ".txt")

    def counts(self, stream: dict[str, Any], side: str) -> Any:
        """The stream's ``streamed`` or ``offline`` ErrorRate."""
        stored = stream.get("wer_counts" if side == "streamed" else "offline_wer_counts")
        if stored:
            return self._ErrorRate.from_dict(stored)
        if stream.get(side) is None:
            raise SystemExit(f"{self.path}: {stream['file']} has no {side} text to count")
        reference = self.reference(stream)
        if reference is None or not reference.is_file():
            raise SystemExit(f"{self.path} has no edit counts and the reference {reference} is not there (--speech)")
        return self._wer(reference.read_text(encoding="utf-8").strip(), stream[side], stream["normalizer"])


def add_results_arguments(parser: argparse.ArgumentParser, files: str = "accuracy.json") -> None:
    """One or two results files (``files`` names the kinds for the help), and the folder
    of their reference texts."""
    parser.add_argument("results", nargs="+", help=f"{files}, or FILE:CONFIGURATION (two: their difference)")
    parser.add_argument("--speech", default=None, help="folder of the language folders of reference texts")


def open_results(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[tuple[Path, str | None]], Path | None]:
    """The ``(path, configuration)`` of each results file given, and the folder of the
    reference texts (None where there is none)."""
    from rtlab.eval.corpus import shared_speech_dir

    if len(args.results) > 2:
        parser.error("give one results file, or two to compare")
    shared = shared_speech_dir()
    speech = Path(args.speech) if args.speech else (shared.parent if shared else None)
    sources = [parse_source(text) for text in args.results]
    for path, _ in sources:
        if not path.is_file():
            parser.error(f"no results file at {path}")
    return sources, speech


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_results_arguments(parser)
    args = parser.parse_args(argv)
    sources, speech = open_results(parser, args)
    files = [Streams(path, speech) for path, _ in sources]

    from rtlab.eval.metrics import paired_difference

    if len(files) == 1:
        (_, only), (run,) = sources[0], files
        named = sorted({configuration for _, configuration in run.groups()})
        if only and only not in named:
            print(f"{run.path} has no configuration {only!r}; it has {', '.join(map(repr, named)) or 'none'}", file=sys.stderr)
            return 1
        for language, configuration in run.groups():
            if only and configuration != only:
                continue
            streams = run.streams(language, configuration)
            if any(s.get("offline") is None and not s.get("offline_wer_counts") for s in streams.values()):
                print(f"{language} {configuration}: no offline pass to compare with")
                continue
            difference = paired_difference([run.counts(s, "streamed") for s in streams.values()],
                                           [run.counts(s, "offline") for s in streams.values()],
                                           groups=[file for file, _ in streams])  # fmt: skip
            print(f"{language} {configuration}: streaming minus offline "
                  f"{difference.describe('clips')} over {len(streams)} streams")  # fmt: skip
        return 0

    (_, first), (_, second) = sources
    if not first or not second:
        parser.error("to compare two files, name a configuration in each: FILE:CONFIGURATION")
    languages = [language for language, config in files[0].groups() if config == first]
    compared = 0
    for language in languages:
        a, b = files[0].streams(language, first), files[1].streams(language, second)
        keys = [key for key in a if key in b]
        if not keys:
            continue
        difference = paired_difference([files[0].counts(a[k], "streamed") for k in keys],
                                       [files[1].counts(b[k], "streamed") for k in keys],
                                       groups=[file for file, _ in keys])  # fmt: skip
        print(f"{language}: {first} minus {second} {difference.describe('clips')} over "
              f"{len(keys)} streams")  # fmt: skip
        compared += 1
    if not compared:
        print(f"no language has streams of both {first} and {second} on the same clips and shifts", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
