"""The compute kernels the engines pick by CPU, and how to pin them so that a replay hears
the same words on another machine.

CTranslate2 computes int8 with Intel MKL on Intel CPUs and with oneDNN elsewhere, each at
the widest vector instructions the CPU has (AVX2, AVX-512, AVX-512 VNNI); PyTorch picks its
ATen, MKL and oneDNN kernels the same way. The words a model hears can change with them:
tiny.en hears a synthetic clip as "the lazy nog" on one CPU and "the lady nog" on another.
The modeled and unaware clocks make a replay repeat on one machine; with the *portable*
kernels it repeats on the x86-64 CPUs with AVX2 tried (an AMD EPYC, an emulated Haswell),
at some cost in speed where the CPU has more, though not on an Intel Xeon with AMX, where
CTranslate2's encoder computed otherwise (docs/evaluation.md, "Which CPU computed"). NumPy
(which computes the log-mel features) and its OpenBLAS choose theirs too, and so does
FFmpeg, which decodes the audio: its decoders and resampler run SIMD code chosen by CPU,
and two FFmpeg builds compute differently, each enough to change a word. Portable
decoding is the imageio-ffmpeg wheel's FFmpeg (one build, pinned in constraints.txt) with
its C code only. The variables must be set before NumPy is imported and before the first
model computes: the libraries read them once per process (``rtlab --kernels`` and the
benchmark scripts' option set them first).

    rtlab --kernels portable transcribe talk.wav --clock unaware
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import sys
from pathlib import Path

from .errors import RtlabError

#: ``auto``: each library picks the fastest kernels for this CPU; ``portable``: :data:`PORTABLE_KERNELS`.
KERNEL_CHOICES = ("auto", "portable")



def _numpy_avx512_targets() -> str:
    """NumPy's names for its AVX-512 dispatch targets, from its version (read without
    importing it): NumPy 2.4 groups them into the x86-64-v4 level."""
    try:
        version = [int(part) for part in re.findall(r"\d+", importlib.metadata.version("numpy"))[:2]]
    except (importlib.metadata.PackageNotFoundError, ValueError):
        version = []
    if version >= [2, 4]:
        return "X86_V4 AVX512_ICL AVX512_SPR"
    return "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"


#: What ``portable`` sets: oneDNN rather than MKL for CTranslate2 on every CPU, and every
#: library's kernels at AVX2 (MKL's conditional numerical reproducibility for PyTorch's;
#: NumPy's own loops without their AVX-512 variants; OpenBLAS's Haswell kernels); FFmpeg
#: from the imageio-ffmpeg wheel, without SIMD (see :func:`rtlab.decoders.ffmpeg.global_args`).
PORTABLE_KERNELS = {
    "CT2_USE_MKL": "0",
    "CT2_FORCE_CPU_ISA": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "NPY_DISABLE_CPU_FEATURES": _numpy_avx512_targets(),
    "OPENBLAS_CORETYPE": "Haswell",
    "RTLAB_FFMPEG": "imageio-ffmpeg",
    "RTLAB_FFMPEG_CPUFLAGS": "0",
}
#: Of :data:`PORTABLE_KERNELS`, the variables read when NumPy is imported (not when a model loads).
READ_AT_NUMPY_IMPORT = ("NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE")

#: Every environment variable that chooses kernels or their threads, recorded with results.
KERNEL_VARIABLES = (
    *PORTABLE_KERNELS, "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS",
)

#: The vector extensions that decide which kernels run, as /proc/cpuinfo names them.
VECTOR_EXTENSIONS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


class KernelsError(RtlabError):
    """The kernels asked for cannot be pinned here, or not any more in this process."""


def cpu_description() -> tuple[str | None, list[str]]:
    """The CPU's model name and which of :data:`VECTOR_EXTENSIONS` it has (from
    /proc/cpuinfo; elsewhere the processor string and no extensions)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return platform.processor() or None, []
    lines = text.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return model, [name for name in VECTOR_EXTENSIONS if name in flags]


def numpy_imported() -> bool:
    """Whether NumPy is imported in this process (it read its variables then)."""
    return "numpy" in sys.modules


def kernel_overrides() -> dict[str, str]:
    """The :data:`KERNEL_VARIABLES` set in this process's environment."""
    return {name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ}


def portable_kernels_refusal() -> str | None:
    """Why this CPU cannot run the portable kernels, or None when it can."""
    machine = platform.machine()
    if machine.lower() not in ("x86_64", "amd64"):
        return f"the portable kernels are x86-64 AVX2 kernels and this CPU is {machine or 'unknown'}"
    _, extensions = cpu_description()
    if "avx2" not in extensions:
        return "the portable kernels need AVX2 and this CPU does not list it"
    return None


def pin_kernels(choice: str) -> dict[str, str]:
    """Set this process's environment so that models loaded from now on (and subprocesses)
    compute with ``choice``'s kernels (one of :data:`KERNEL_CHOICES`).

    A variable already set is kept as it is (a researcher pinning one library differently
    means it) and reported: the return value maps each variable of the choice whose value
    differs from the choice's to the value kept. Raises :class:`KernelsError` naming what
    to do when the CPU cannot run the portable kernels, or when a model has already loaded
    or NumPy has been imported in this process without its variables (the library has read
    them by then).
    """
    if choice not in KERNEL_CHOICES:
        raise KernelsError(f"unknown kernels {choice!r}; choose one of {', '.join(KERNEL_CHOICES)}")
    if choice == "auto":
        return {}
    refusal = portable_kernels_refusal()
    if refusal:
        raise KernelsError(f"cannot pin portable kernels: {refusal}; use --kernels auto")
    # Models are shared through rtlab.backends: not imported yet, none has loaded (and it
    # is not imported here: it imports NumPy).
    backends = sys.modules.get(f"{__package__}.backends")
    loaded = backends.shared_models.keys() if backends is not None else []
    if loaded:
        raise KernelsError(
            f"pin the kernels before the first model loads: {loaded[0][0]} model {loaded[0][1]!r} has "
            "already computed with the kernels its library chose (start a new process)"
        )
    late = [name for name in READ_AT_NUMPY_IMPORT if name not in os.environ]
    if late and numpy_imported():
        raise KernelsError(
            f"pin the kernels before NumPy is imported: it has chosen its own kernels in this process "
            f"({', '.join(late)} not set when it was imported); start a new process, or set them first"
        )
    kept = {}
    for name, value in PORTABLE_KERNELS.items():
        current = os.environ.setdefault(name, value)
        if current != value:
            kept[name] = current
    return kept


def describe_kernels(overrides: dict[str, str]) -> str:
    """``"portable kernels (AVX2)"``, ``"kernels pinned: CT2_FORCE_CPU_ISA=AVX512"`` or
    ``"kernels as the libraries chose"``, for a table's header."""
    if all(overrides.get(name) == value for name, value in PORTABLE_KERNELS.items()):
        return "portable kernels (AVX2)"
    pinned = {name: value for name, value in overrides.items() if name != "OMP_NUM_THREADS"}
    if pinned:
        return "kernels pinned: " + ", ".join(f"{name}={value}" for name, value in pinned.items())
    return "kernels as the libraries chose"


def add_kernels_argument(parser: argparse.ArgumentParser) -> None:
    """Give a script's argument parser ``--kernels {auto,portable}`` (the benchmark scripts;
    the CLI has ``rtlab --kernels``)."""
    parser.add_argument("--kernels", choices=KERNEL_CHOICES, default="auto",
                        help="portable: the same compute kernels on x86-64 CPUs with AVX2, so that the words "
                             "repeat on another machine (rtlab.kernels, which names the CPUs where they do not; "
                             "default auto: the fastest for this CPU)")  # fmt: skip


def pin_kernels_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """:func:`pin_kernels` for the parsed ``--kernels``; a refusal is the parser's error."""
    try:
        kept = pin_kernels(args.kernels)
    except KernelsError as error:
        parser.error(str(error))
    for name, value in kept.items():
        print(f"{parser.prog}: {name}={value} is set in the environment and kept", file=sys.stderr)
