"""Does the decoded audio depend on which FFmpeg decodes, and on the CPU it runs on?

Every clip is decoded to 16 kHz mono float32 (rtlab's decoding) by each FFmpeg found (the
one on PATH and the imageio-ffmpeg wheel's), with the SIMD code FFmpeg picks for this CPU,
with SIMD held below AVX2 (``-cpuflags -avx2``: what it runs on a CPU without AVX2), and
with its C code only (``-cpuflags 0``: the portable kernels' decoding, see rtlab.kernels).
Each is compared with the portable decoding (the wheel's FFmpeg, C code only): the same
samples, or how many samples differ and by how much at most.

    python benchmarks/ffmpeg_decoding.py                 # the repository's clips and the shared speech
    python benchmarks/ffmpeg_decoding.py --clips a.ogg b.wav
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parent.parent
REPO_CLIPS = ("tests/data/fox.ogg", "tests/data/en-pause.ogg", "tests/data/paragraph.ogg")
#: (column, -cpuflags value or None for FFmpeg's own choice)
FLAGS = (("auto", None), ("below AVX2", "-avx2"), ("C only", "0"))


def decode(binary: str, path: Path, cpuflags: str | None) -> np.ndarray:
    """``path`` as rtlab decodes it (:func:`rtlab.decoders.files.decode_audio`), by
    ``binary`` with ``-cpuflags CPUFLAGS`` if given."""
    from rtlab.decoders.files import decode_audio

    with mock.patch.dict(os.environ, {"RTLAB_FFMPEG": binary}):
        os.environ.pop("RTLAB_FFMPEG_CPUFLAGS", None)
        if cpuflags is not None:
            os.environ["RTLAB_FFMPEG_CPUFLAGS"] = cpuflags
        return decode_audio(path)


def compare(samples: np.ndarray, portable: np.ndarray) -> str:
    """"same", or how the samples differ from the portable decoding's."""
    if len(samples) != len(portable):
        return f"{len(samples)} samples, not {len(portable)}"
    differ = samples != portable
    if not differ.any():
        return "same"
    return f"{int(differ.sum())} differ, max {float(np.abs(samples - portable).max()):.1e}"


def clips(given: list[str] | None) -> list[Path]:
    """The clips to decode: ``given``, else the repository's and every shared language's."""
    if given:
        return [Path(text) for text in given]
    from rtlab.eval.corpus import audio_files, shared_speech_dir

    found = [REPO / name for name in REPO_CLIPS]
    shared = shared_speech_dir()
    if shared is not None:
        languages = sorted(folder for folder in shared.parent.iterdir() if folder.is_dir())  # en's and beside it
        found += [clip for folder in languages for clip in audio_files(folder)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", help="clips to decode (default: the repository's and the shared speech)")
    args = parser.parse_args(argv)
    paths = clips(args.clips)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such clip: {', '.join(missing)}")
    try:
        import imageio_ffmpeg

        wheel = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as error:  # ImportError, or no binary for this platform
        parser.error(f"the imageio-ffmpeg wheel's FFmpeg is needed (the portable decoding): {error}")
    from rtlab.decoders.ffmpeg import ffmpeg_version
    from rtlab.kernels import cpu_description

    binaries = [("wheel", wheel)] + ([("PATH", shutil.which("ffmpeg"))] if shutil.which("ffmpeg") else [])
    model, extensions = cpu_description()
    print(f"CPU: {model} ({', '.join(extensions) or 'no listed extensions'})")
    for name, binary in binaries:
        print(f"FFmpeg {name}: {ffmpeg_version(binary)} ({binary})")
    columns = [(name, binary, label, flags) for name, binary in binaries for label, flags in FLAGS]
    print("\nAgainst the portable decoding (the wheel's FFmpeg, C code only):\n")
    print("| clip | " + " | ".join(f"{name}, {label}" for name, _, label, _ in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    differing = [0] * len(columns)
    for path in paths:
        portable = decode(wheel, path, "0")
        cells = [compare(decode(binary, path, flags), portable) for _, binary, _, flags in columns]
        differing = [count + (cell != "same") for count, cell in zip(differing, cells)]
        where = path.resolve()
        label = where.relative_to(REPO) if where.is_relative_to(REPO) else Path(path.parent.name) / path.name
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    print("| clips that differ | " + " | ".join(f"{count} of {len(paths)}" for count in differing) + " |")
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
