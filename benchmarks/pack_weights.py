"""Whisper weights packed small enough to travel, and restored on arrival.

A machine that takes at most 64 MiB of files per call cannot receive tiny.en as it is
embedded (75.5 MB of float16), and float16 weights compress by a sixth at best. Packed,
every weight matrix (linear, convolution, embedding) is held as 10-bit integers with one
float16 step per group of 64 values of a row (``q = round(w / step)``, ``step =
max|group| / 511``), stored as two byte planes that zlib compresses (the high plane holds
two bits); biases, norms and position encodings stay float16. That is about 45 MB for
tiny.en. Coarser packings change words: int8 with one scale per row (CTranslate2's own
int8) and int8 per group of 64 each changed a word of the shared English speech, where
10 bits changed none (tests/test_openai_whisper.py checks that restored weights give the
same transcripts as the original ones).

    python benchmarks/pack_weights.py pack tiny.en artifacts/gpu-check/tiny.en-packed
    python benchmarks/pack_weights.py restore artifacts/gpu-check/tiny.en-packed /tmp/tiny.en-restored

``pack`` takes a CTranslate2 Whisper folder or an embedded model's name (tiny.en, base);
``restore`` writes a CTranslate2 folder again (float32 weights), which faster-whisper runs
as it is and the openai-whisper backend takes as its model (converted into its cache on
first use). Both write their folder whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Files of a CTranslate2 Whisper folder besides model.bin, copied when present.
COMPANIONS = ("config.json", "vocabulary.txt", "vocabulary.json", "tokenizer.json", "preprocessor_config.json")
GROUP = 64
BITS = 10
FORMAT = "rtlab-packed-whisper"
VERSION = 1
WEIGHTS, MANIFEST = "weights.npz", "packed.json"


def source_of(name_or_folder: str):
    """The CTranslate2 model ``name_or_folder``: a folder, or an embedded model's name."""
    from rtlab_openai_whisper.models import conversion_source

    return conversion_source(name_or_folder)


def packed_names(variables: dict[str, np.ndarray]) -> list[str]:
    """The variables stored quantized: every float weight matrix."""
    return sorted(
        name for name, value in variables.items()
        if name.endswith("/weight") and value.ndim >= 2 and value.dtype.kind == "f"
    )  # fmt: skip


def quantize(weight: np.ndarray, group: int = GROUP, bits: int = BITS) -> tuple[np.ndarray, np.ndarray]:
    """``weight`` as ``bits``-bit integers ``[rows, padded columns]`` (int16) and float16
    steps ``[rows, groups]`` (a convolution is flattened to rows first)."""
    levels = 2 ** (bits - 1) - 1
    rows = weight.reshape(weight.shape[0], -1).astype(np.float32)
    padded = np.pad(rows, ((0, 0), (0, (-rows.shape[1]) % group))).reshape(rows.shape[0], -1, group)
    step = (np.abs(padded).max(axis=2) / levels).astype(np.float16)
    divisor = step.astype(np.float32)[..., None]
    values = np.rint(np.divide(padded, divisor, out=np.zeros_like(padded), where=divisor > 0))
    return np.clip(values, -levels, levels).astype(np.int16).reshape(rows.shape[0], -1), step


def dequantize(values: np.ndarray, step: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 weight of shape ``shape`` back from :func:`quantize`'s output."""
    rows = values.reshape(values.shape[0], step.shape[1], -1).astype(np.float32) * step.astype(np.float32)[..., None]
    columns = int(np.prod(shape[1:]))
    return rows.reshape(values.shape[0], -1)[:, :columns].reshape(shape)


def split_bytes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int16 values as their low and high byte planes (the high one compresses well)."""
    raw = values.view(np.uint16)
    return (raw & 0xFF).astype(np.uint8), (raw >> 8).astype(np.uint8)


def join_bytes(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The int16 values :func:`split_bytes` split."""
    return (low.astype(np.uint16) | (high.astype(np.uint16) << 8)).view(np.int16)


def _written_whole(dest: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Run ``write(folder)`` on a temporary folder beside ``dest``, then rename it to ``dest``."""
    target = Path(dest)
    if target.exists():
        raise SystemExit(f"{target} already exists; remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        write(temporary)
        os.rename(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target


def _key(name: str) -> str:
    return name.replace("/", "|")  # a variable's name as an .npz member


def pack(source: str, dest: str | os.PathLike[str], group: int = GROUP, bits: int = BITS) -> dict[str, Any]:
    """Write ``source`` (folder or embedded name) packed at ``dest``; returns the sizes."""
    from rtlab_openai_whisper.ct2 import read_model_bin

    origin = source_of(source)
    model = read_model_bin(origin.parts)
    names = set(packed_names(model.variables))

    def write(folder: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for name, value in model.variables.items():
            if name in names:
                values, arrays[_key(name) + "::step"] = quantize(value, group, bits)
                arrays[_key(name) + "::low"], arrays[_key(name) + "::high"] = split_bytes(values)
            else:
                arrays[_key(name)] = np.asarray(value)
        np.savez_compressed(folder / WEIGHTS, **arrays)
        manifest = {
            "format": FORMAT, "version": VERSION, "group": group, "bits": bits, "spec": model.spec, "revision": model.revision,
            "aliases": model.aliases, "shapes": {n: list(model.variables[n].shape) for n in sorted(names)},
            "order": list(model.variables),
        }  # fmt: skip
        (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        for companion in COMPANIONS:
            if (origin.folder / companion).is_file():
                shutil.copyfile(origin.folder / companion, folder / companion)

    target = _written_whole(dest, write)
    return {
        "source": str(origin.folder),
        "packed": str(target),
        "source_bytes": origin.fingerprint()["bytes"],
        "packed_bytes": sum(p.stat().st_size for p in target.iterdir()),
        "quantized_variables": len(names),
        "bits": bits,
        "group": group,
    }


def restore(packed: str | os.PathLike[str], dest: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the packed folder ``packed`` as a CTranslate2 folder (float32 weights) at ``dest``."""
    from rtlab_openai_whisper.ct2 import ModelBin, write_model_bin

    folder = Path(packed)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise SystemExit(f"restore: {folder} is not a folder written by pack_weights.py (format {FORMAT} {VERSION})")

    def write(target: Path) -> None:
        variables: dict[str, np.ndarray] = {}
        with np.load(folder / WEIGHTS) as arrays:
            for name in manifest["order"]:
                if name in manifest["shapes"]:
                    shape = tuple(manifest["shapes"][name])
                    values = join_bytes(arrays[_key(name) + "::low"], arrays[_key(name) + "::high"])
                    variables[name] = dequantize(values, arrays[_key(name) + "::step"], shape)
                else:
                    variables[name] = arrays[_key(name)]
        write_model_bin(target / "model.bin", ModelBin(manifest["spec"], manifest["revision"], variables, manifest["aliases"]))
        for companion in COMPANIONS:
            if (folder / companion).is_file():
                shutil.copyfile(folder / companion, target / companion)

    target = _written_whole(dest, write)
    return {"restored": str(target), "bytes": (target / "model.bin").stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="CTranslate2 folder or embedded name -> packed folder")
    packing.add_argument("source")
    packing.add_argument("dest")
    packing.add_argument("--group", type=int, default=GROUP, help=f"values per float16 step (default {GROUP})")
    packing.add_argument("--bits", type=int, default=BITS, choices=range(2, 17), metavar="2..16",
                         help=f"bits per value (default {BITS})")
    restoring = commands.add_parser("restore", help="packed folder -> CTranslate2 folder")
    restoring.add_argument("packed")
    restoring.add_argument("dest")
    args = parser.parse_args(argv)
    result = pack(args.source, args.dest, args.group, args.bits) if args.command == "pack" else restore(args.packed, args.dest)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
