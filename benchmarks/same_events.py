"""Does this machine hear what the reference machines heard? Events of the portable kernels,
compared across machines.

Issue 17 promises that a modeled or unaware replay gives the same events on every machine
(``rtlab --kernels portable``: the same compute kernels on every x86-64 CPU with AVX2).
This script streams a few clips with ``rtlab --kernels portable transcribe CLIP --clock
unaware|modeled --format jsonl`` (each in a fresh process, no kernel variable inherited)
and hashes every event but the measured compute: on the unaware clock ``compute_seconds``
and ``rtf`` are measured too and left out; on the modeled clock they are the cost model's
(rtlab's shipped one) and count. It compares the hashes with the ones recorded in
``benchmarks/same-events.json`` and names the machines those were recorded on. It also
hashes each clip's audio as the portable kernels' FFmpeg decodes it (the imageio-ffmpeg
wheel's, its C code only), so that a difference says whether the decoded audio differed
already or the same audio was heard differently.

    python benchmarks/same_events.py                     # compare this machine
    python benchmarks/same_events.py --clips tests/data/fox.ogg --clocks unaware
    python benchmarks/same_events.py --record            # add this machine (its events must match)
    python benchmarks/same_events.py --record --replace  # new reference events (after a software change)
    python benchmarks/same_events.py --record --divergent  # this kind of CPU hears otherwise: say so

The portable kernels do not give the reference's events on every CPU: on an Intel Xeon with
AMX (2026-12-06) the log-mel features and Silero's probabilities were the same as on an
emulated Haswell, bit for bit, and CTranslate2's encoder output was not, with oneDNN at AVX2
on both. Such a machine's events are recorded apart, as a *divergent* set named by its CPU
(``--record --divergent``): a clip that differs from the reference but gives the events
recorded for this machine's kind of CPU is reported as that known divergence, not as a
change, so that the check still catches an event-changing commit on that kind of CPU.

Clips: the repository's English test clips and, where the shared speech is found
(``RTLAB_SPEECH_DIR`` or ../shared/data/speech/en), its clips. The embedded tiny.en on
faster-whisper int8, LocalAgreement-2 at its defaults. Exit status: 0 when every clip
compared gave the reference's events (or, on a kind of CPU recorded as divergent, that
kind's events), 1 when one did not, 2 for bad arguments or a machine the portable kernels
do not run on.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "same-events.json"
CLOCKS = ("unaware", "modeled")
REPO_CLIPS = ("tests/data/fox.ogg", "tests/data/en-pause.ogg", "tests/data/paragraph.ogg")
#: Packages whose version changes what a stream hears; a reference recorded with others is not
#: comparable. imageio-ffmpeg's is the FFmpeg build that decodes with the portable kernels.
SOFTWARE = ("faster-whisper", "ctranslate2", "numpy", "imageio-ffmpeg")
#: Measured, so left out of the hash: always, and on the unaware clock the compute too.
MEASURED = {"unaware": ("measured_compute_seconds", "compute_seconds", "rtf"), "modeled": ("measured_compute_seconds",)}
#: The portable kernels' variables that choose the FFmpeg decoding and its CPU flags.
FFMPEG_VARIABLES = ("RTLAB_FFMPEG", "RTLAB_FFMPEG_CPUFLAGS")


def clip_names(given: list[str] | None) -> list[tuple[str, Path]]:
    """``(name, path)`` of the clips: a repository clip is named by its path in the
    repository, a shared one as ``shared:en/FILE``."""
    from rtlab.eval.corpus import audio_files, shared_speech_dir

    shared = shared_speech_dir()
    if given:
        clips = []
        for text in given:
            path = Path(text).resolve()
            if shared is not None and path.parent == shared.resolve():
                clips.append((f"shared:en/{path.name}", path))
            else:
                clips.append((os.path.relpath(path, REPO) if path.is_relative_to(REPO) else text, path))
        return clips
    clips = [(name, REPO / name) for name in REPO_CLIPS]
    if shared is not None:
        clips += [(f"shared:en/{path.name}", path) for path in audio_files(shared)]
    return clips


def canonical(events: list[dict[str, Any]], clock: str) -> str:
    """The events as the hash reads them: one sorted JSON object a line, measured fields left out."""
    left_out = MEASURED[clock]
    return "".join(json.dumps({k: v for k, v in e.items() if k not in left_out}, sort_keys=True) + "\n" for e in events)


def stream(path: Path, clock: str) -> list[dict[str, Any]]:
    """The events of ``rtlab --kernels portable transcribe PATH --clock CLOCK`` in a fresh process."""
    from rtlab.kernels import KERNEL_VARIABLES

    env = {name: value for name, value in os.environ.items() if name not in KERNEL_VARIABLES}
    command = [sys.executable, "-m", "rtlab", "--kernels", "portable", "transcribe", str(path), "--clock", clock,
               "--format", "jsonl"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{path}: rtlab transcribe failed: {done.stderr.strip().splitlines()[-1:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def software(environment: dict[str, Any]) -> dict[str, str | None]:
    """The versions of :data:`SOFTWARE` in ``environment`` (:func:`~rtlab.eval.metrics.environment_info`'s)."""
    packages = environment["packages"]
    return {name: packages.get(name) for name in SOFTWARE}


def audio_digest(path: Path) -> str:
    """sha256 of ``path`` decoded to 16 kHz float32 by the portable kernels' FFmpeg."""
    from unittest import mock

    from rtlab.decoders.files import decode_file
    from rtlab.kernels import PORTABLE_KERNELS

    with mock.patch.dict(os.environ, {name: PORTABLE_KERNELS[name] for name in FFMPEG_VARIABLES}):
        return hashlib.sha256(decode_file(path)).hexdigest()


def machine(environment: dict[str, Any]) -> dict[str, Any]:
    """This machine as the reference file names it: its CPU, from ``environment``, and today."""
    return {**{key: environment[key] for key in ("cpu_model", "cpu_vector_extensions", "cpu_count", "machine")},
            "date": datetime.date.today().isoformat()}  # fmt: skip


def why(recorded: dict[str, Any], audio: str) -> str:
    """What a difference from ``recorded`` comes from, as far as the audio hash tells."""
    if "audio_sha256" not in recorded:
        return "no audio hash recorded"
    if recorded["audio_sha256"] != audio:
        return "the decoded audio differs: FFmpeg"
    return "the same decoded audio: the model's kernels"


def cpu_kind(machine: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """What decides the kernels a library picks: the CPU model and its vector extensions."""
    return machine["cpu_model"], tuple(machine["cpu_vector_extensions"])


def divergent_set(reference: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any] | None:
    """The events recorded apart for this machine's kind of CPU, if any."""
    here = cpu_kind(environment)
    return next((d for d in reference["divergent"] if any(cpu_kind(m) == here for m in d["machines"])), None)


def load_reference(path: Path) -> dict[str, Any]:
    reference = json.loads(path.read_text()) if path.exists() else {"software": None, "events": {}, "machines": []}
    reference.setdefault("divergent", [])
    return reference


def describe(machine: dict[str, Any]) -> str:
    return (f"{machine['date']}: {machine['cpu_model']} ({', '.join(machine['cpu_vector_extensions']) or 'no listed extensions'}), "
            f"{machine['cpu_count']} cores")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--clips", nargs="+", help="clips to stream (default: the repository's and the shared English ones)")
    parser.add_argument("--clocks", default=",".join(CLOCKS), help="comma-separated, of unaware and modeled (default: both)")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the recorded events (default: %(default)s)")
    parser.add_argument("--record", action="store_true", help="add this machine to the reference file")
    parser.add_argument("--replace", action="store_true", help="with --record: make this machine's events the reference")
    parser.add_argument("--divergent", action="store_true",
                        help="with --record: record this machine's events apart, as its kind of CPU's (they differ from the reference)")  # fmt: skip
    args = parser.parse_args(argv)
    clocks = [c.strip() for c in args.clocks.split(",") if c.strip()]
    if not clocks or any(c not in CLOCKS for c in clocks):
        parser.error(f"--clocks: each of {', '.join(CLOCKS)}, not {args.clocks!r}")
    if (args.replace or args.divergent) and not args.record:
        parser.error(f"--{'replace' if args.replace else 'divergent'} goes with --record")
    if args.replace and args.divergent:
        parser.error("--replace or --divergent, not both")
    clips = clip_names(args.clips)
    missing = [name for name, path in clips if not path.is_file()]
    if missing:
        parser.error(f"no such clip: {', '.join(missing)}")

    from rtlab.kernels import portable_kernels_refusal

    refusal = portable_kernels_refusal()
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2

    from rtlab.eval.metrics import environment_info

    environment = environment_info()  # once: it runs FFmpeg for its version, among others
    reference = load_reference(args.reference)
    here = software(environment)
    comparable = reference["software"] in (None, here)
    if not comparable:
        print(f"note: the reference was recorded with {reference['software']}, this machine has {here}: "
              "events may differ for that reason alone", file=sys.stderr)  # fmt: skip
    known = divergent_set(reference, environment)
    results: dict[str, dict[str, Any]] = {}
    differ = compared = diverged = 0
    print(f"{'clip':40} {'clock':8} {'events':>6}  {'sha256':12}  against the reference")
    for name, path in clips:
        audio = audio_digest(path)
        for clock in clocks:
            key = f"{name} {clock}"
            events = stream(path, clock)
            digest = hashlib.sha256(canonical(events, clock).encode()).hexdigest()
            results[key] = {"events": len(events), "sha256": digest, "audio_sha256": audio,
                            "words": events[-1].get("text", "")}  # fmt: skip
            recorded = reference["events"].get(key)
            if recorded is None:
                verdict = "not recorded"
            else:
                compared += 1
                same = recorded["sha256"] == digest
                as_known = not same and known is not None and known["events"].get(key, {}).get("sha256") == digest
                differ += not same and not as_known
                diverged += as_known
                verdict = "same" if same else f"DIFFERENT (recorded {recorded['events']} events, {recorded['sha256'][:12]}; {why(recorded, audio)})"
                if as_known:
                    verdict += "; as recorded for this kind of CPU"
            print(f"{name:40} {clock:8} {len(events):>6}  {digest[:12]}  {verdict}", flush=True)

    machines = reference["machines"]
    print(f"\n{compared - differ - diverged} of {compared} compared clips and clocks gave the recorded events; "
          f"recorded on {len(machines)} machine{'s' * (len(machines) != 1)}:")  # fmt: skip
    for m in machines:
        print(f"  {describe(m)}")
    if diverged:
        print(f"{diverged} gave the events recorded apart for this kind of CPU, where the portable kernels "
              f"diverge from the reference: {'; '.join(describe(m) for m in known['machines'])}")  # fmt: skip
    if args.record:
        return record(args, reference, results, environment, here, mismatch=bool(differ or diverged) or not comparable)
    return 1 if differ else 0


def record(args: argparse.Namespace, reference: dict[str, Any], results: dict[str, dict[str, Any]],
           environment: dict[str, Any], here: dict[str, str | None], mismatch: bool) -> int:  # fmt: skip
    """Write this machine's ``results`` into the reference file: as the reference's (they must
    match it, unless ``--replace``) or, with ``--divergent``, apart as its kind of CPU's."""
    this = machine(environment)
    if args.divergent:
        if not mismatch:
            print("error: not recorded apart: this machine gives the reference's events; --record adds it there",
                  file=sys.stderr)  # fmt: skip
            return 1
        kind = cpu_kind(this)
        reference["divergent"] = [d for d in reference["divergent"] if all(cpu_kind(m) != kind for m in d["machines"])]
        reference["divergent"].append({"machines": [this], "software": here, "events": results})
    else:
        if mismatch and not args.replace:
            print("error: not recorded: this machine's events differ from the reference (or its software does); "
                  "--record --replace makes them the reference, --record --divergent records them apart",
                  file=sys.stderr)  # fmt: skip
            return 1
        if args.replace:
            reference = {"software": here, "events": {}, "machines": [], "divergent": reference["divergent"]}
        reference["software"] = here
        reference["events"].update(results)
        if this not in reference["machines"]:  # a second run on one machine and day is one entry
            reference["machines"].append(this)
    args.reference.write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    print(f"recorded this machine{' apart, as its kind of CPU' if args.divergent else ''} in {args.reference}")
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
