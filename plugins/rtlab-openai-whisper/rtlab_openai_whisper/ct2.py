"""CTranslate2's ``model.bin``, read and written without CTranslate2.

The format (CTranslate2's ``ModelSpec._serialize``, binary version 6; little-endian)::

    uint32 binary version
    string spec name (e.g. "WhisperSpec")          string = uint16 length (with the NUL),
    uint32 spec revision                                    the UTF-8 bytes, a NUL byte
    uint32 number of variables, then each:
        string name ("encoder/layer_0/self_attention/linear_0/weight")
        uint8 rank, then rank x uint32 dimensions
        uint8 dtype id (float32, int8, int16, int32, float16, bfloat16: 0 to 5)
        uint32 size in bytes, then the bytes (C order)
    uint32 number of aliases, then each: string alias, string variable name

An int8 weight ``X/weight`` comes with ``X/weight_scale``, one float per row (a convolution
is flattened to rows first): the weight is ``X/weight / X/weight_scale``. int16 has one
scale for the whole weight.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtlab.errors import ModelNotFound

#: CTranslate2's DataType enum, in order: a variable's dtype id is an index here.
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
#: Binary versions this reader knows: 4 added dtype ids, 6 is CTranslate2 4.x's.
VERSIONS = (4, 5, 6)
WRITTEN_VERSION = 6
MAX_RANK = 8
MAX_STRING = 4096


@dataclass
class ModelBin:
    """The contents of one ``model.bin``: its spec, variables (numpy arrays) and aliases."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    version: int = WRITTEN_VERSION

    def get(self, name: str) -> np.ndarray | None:
        """The variable ``name``, following an alias; None when there is none."""
        return self.variables.get(self.aliases.get(name, name))

    def float32(self, name: str) -> np.ndarray:
        """The variable ``name`` as float32, dequantized when it is stored as int8 or int16."""
        value = self.variables[name]
        if value.dtype.kind == "f":
            return value.astype(np.float32)
        if value.dtype == np.uint16:  # bfloat16, kept as its raw 16 bits
            return (value.astype(np.uint32) << 16).view(np.float32)
        scale = self.variables.get(name + "_scale")
        if scale is None:
            raise KeyError(f"{name} is stored as {value.dtype} without {name}_scale")
        scale = np.asarray(scale, dtype=np.float32)
        if scale.ndim == 0:
            return value.astype(np.float32) / scale
        rows = value.reshape(value.shape[0], -1).astype(np.float32) / scale[:, None]
        return rows.reshape(value.shape)


class _Parts:
    """Several files read as one stream (a model.bin shipped in parts)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.files = [open(path, "rb") for path in self.paths]  # noqa: SIM115 - closed in close()
        self.index = 0
        self.offset = 0

    def read(self, size: int) -> bytes:
        chunks = []
        while size > 0 and self.index < len(self.files):
            chunk = self.files[self.index].read(size)
            if not chunk:
                self.index += 1
                continue
            chunks.append(chunk)
            size -= len(chunk)
        data = b"".join(chunks)
        self.offset += len(data)
        return data

    def close(self) -> None:
        for file in self.files:
            file.close()


def read_model_bin(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> ModelBin:
    """Read a ``model.bin`` (or its parts, in order) into a :class:`ModelBin`.

    Raises :class:`~rtlab.errors.ModelNotFound` with one line naming the file, what is
    wrong and where, for a truncated, corrupt or unknown file.
    """
    files = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    label = str(files[0]) if len(files) == 1 else f"{files[0]} (+{len(files) - 1} parts)"
    stream = _Parts(files)
    try:
        return _read(stream, label)
    finally:
        stream.close()


def _read(stream: _Parts, label: str) -> ModelBin:
    def fail(problem: str) -> ModelNotFound:
        return ModelNotFound(f"{label} is not a readable CTranslate2 model.bin: {problem} (at byte {stream.offset})")

    def take(size: int, what: str) -> bytes:
        data = stream.read(size)
        if len(data) != size:
            raise fail(f"truncated in {what}: {size} bytes expected, {len(data)} left")
        return data

    def number(fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt), what))[0]

    def string(what: str) -> str:
        size = number("H", what)
        if not 1 <= size <= MAX_STRING:
            raise fail(f"{what} of {size} bytes")
        data = take(size, what)
        if data[-1] != 0:
            raise fail(f"{what} does not end with a NUL byte")
        try:
            return data[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise fail(f"{what} is not UTF-8") from None

    version = number("I", "the header")
    if version not in VERSIONS:
        newer = "a newer CTranslate2 than this converter knows" if version > VERSIONS[-1] else "an old CTranslate2"
        raise fail(f"binary version {version}, written by {newer} (known: {VERSIONS[0]} to {VERSIONS[-1]})")
    model = ModelBin(spec=string("the spec name"), revision=number("I", "the spec revision"), version=version)
    count = number("I", "the variable count")
    for index in range(count):
        name = string(f"the name of variable {index}")
        rank = number("B", name)
        if rank > MAX_RANK:
            raise fail(f"variable {name!r} has rank {rank}")
        shape = tuple(number("I", name) for _ in range(rank))
        type_id = number("B", name)
        if type_id >= len(DTYPES):
            raise fail(f"variable {name!r} has an unknown dtype id {type_id}")
        dtype = np.dtype("<u2") if DTYPES[type_id] == "bfloat16" else np.dtype(DTYPES[type_id]).newbyteorder("<")
        size = number("I", name)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != expected:
            raise fail(f"variable {name!r} of shape {shape} ({DTYPES[type_id]}) says {size} bytes, not {expected}")
        model.variables[name] = np.frombuffer(take(size, f"variable {name!r}"), dtype=dtype).reshape(shape)
    for _ in range(number("I", "the alias count")):
        alias = string("an alias")
        model.aliases[alias] = string(f"the target of alias {alias!r}")
    if stream.read(1):
        raise fail("bytes after the last alias")
    unknown = sorted(target for target in model.aliases.values() if target not in model.variables)
    if unknown:
        raise fail(f"alias to a missing variable {unknown[0]!r}")
    return model


def write_model_bin(path: str | os.PathLike[str], model: ModelBin) -> None:
    """Write ``model`` as a ``model.bin`` of binary version 6 (the format above)."""

    def string(text: str) -> bytes:
        data = text.encode("utf-8")
        return struct.pack("<H", len(data) + 1) + data + b"\0"

    with open(path, "wb") as out:
        out.write(struct.pack("<I", WRITTEN_VERSION) + string(model.spec) + struct.pack("<II", model.revision, len(model.variables)))
        for name, value in model.variables.items():
            value = np.asarray(value, order="C")  # (not ascontiguousarray: it makes a scalar 1-d)
            type_id = DTYPES.index("bfloat16" if value.dtype == np.uint16 else value.dtype.name)
            out.write(string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape))
            out.write(struct.pack("<BI", type_id, value.nbytes))
            out.write(value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())
        out.write(struct.pack("<I", len(model.aliases)))
        for alias, target in model.aliases.items():
            out.write(string(alias) + string(target))


def quantize_int8(model: ModelBin, names: Iterable[str]) -> ModelBin:
    """A copy of ``model`` with the float variables ``names`` stored as CTranslate2 stores
    int8 weights: per row (a convolution flattened to rows), ``round(w * 127 / max|row|)``
    with the float32 scale ``127 / max|row|`` beside it as ``NAME_scale``."""
    variables = dict(model.variables)
    for name in names:
        value = model.float32(name)
        rows = value.reshape(value.shape[0], -1)
        amax = np.abs(rows).max(axis=1)
        amax[amax == 0] = 127.0
        scale = (127.0 / amax).astype(np.float32)
        variables[name] = np.rint(rows * scale[:, None]).astype(np.int8).reshape(value.shape)
        variables[name + "_scale"] = scale
    ordered = {name: variables[name] for name in sorted(variables)}  # as CTranslate2 writes them
    return ModelBin(model.spec, model.revision, ordered, dict(model.aliases))
