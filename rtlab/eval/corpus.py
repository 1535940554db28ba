"""Speech corpora: load reference transcripts next to audio, and build long-form streams.

Three layouts are understood by :func:`load_corpus`:

- a folder of audio files, each with a same-name ``.txt`` reference beside it
  (``clip.ogg`` + ``clip.txt``) — the layout of the shared speech folder;
- the LibriSpeech layout: ``*.trans.txt`` files (``UTTID TEXT...`` lines) with
  ``UTTID.flac`` beside them, found recursively;
- a JSONL manifest: one ``{"audio", "text", "language"?, "id"?}`` object per line, audio
  paths relative to the manifest's folder or absolute.
"""

from __future__ import annotations

import json
import os
import warnings
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import written_whole
from ..decoders.files import decode_file

__all__ = [
    "AUDIO_EXTENSIONS",
    "Utterance",
    "audio_files",
    "concatenate",
    "language_corpora",
    "load_corpus",
    "shared_speech_dir",
]

#: Audio file suffixes recognised in folder layouts (compared case-insensitively).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".ogg", ".opus", ".mp3", ".flac", ".webm", ".m4a")

SAMPLE_RATE = 16000

_FOLDER_LAYOUT_HELP = (
    "expected one of: audio files ({exts}) each with a same-name .txt reference beside it "
    "(clip.wav + clip.txt); LibriSpeech *.trans.txt files with UTTID.flac beside them; "
    "or a .jsonl manifest file"
).format(exts=" ".join(AUDIO_EXTENSIONS))


@dataclass
class Utterance:
    """One audio file and its reference transcript.

    ``segments`` is set for long-form streams built by :func:`concatenate`: one
    ``(start_seconds, end_seconds, text)`` per source clip, in stream time.
    """

    id: str
    audio: Path
    text: str
    language: str | None = None
    segments: list[tuple[float, float, str]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the manifest format (plus ``segments`` when set)."""
        d: dict[str, Any] = {
            "id": self.id,
            "audio": str(self.audio),
            "text": self.text,
            "language": self.language,
        }
        if self.segments is not None:
            d["segments"] = [list(s) for s in self.segments]
        return d


# --------------------------------------------------------------------------- loading


def load_corpus(path: str | os.PathLike[str], language: str | None = None) -> list[Utterance]:
    """Load the utterances found at ``path`` (a folder, a ``.jsonl`` manifest or a
    LibriSpeech ``*.trans.txt`` file).

    ``language`` is given to utterances that do not name their own (folder layouts never
    do). Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for a folder or
    file that holds no corpus in a known layout.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"corpus path does not exist: {root}")
    if root.is_file():
        name = root.name.lower()
        if name.endswith(".jsonl"):
            utterances = _load_manifest(root, language)
            expected = '{"audio": ..., "text": ...} lines'
        elif name.endswith(".trans.txt"):
            utterances = _load_librispeech_transcript(root, language)
            expected = "'UTTID TEXT...' lines, UTTID.flac beside it"
        else:
            raise ValueError(f"not a corpus file: {root}; give a folder or a .jsonl manifest")
        if not utterances:
            raise ValueError(f"no utterances found in {root}: expected {expected}")
    elif any(root.rglob("*.trans.txt")):
        utterances = _load_librispeech(root, language)
    else:
        utterances = _load_audio_folder(root, language)
    if not utterances:
        raise ValueError(f"no utterances found in {root}: {_FOLDER_LAYOUT_HELP}")
    return utterances


def _read_text(path: Path) -> str:
    """A reference, transcript or manifest file's text; ``ValueError`` naming it when it
    is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None


def _read_reference(path: Path) -> str:
    # References may be wrapped over several lines; the transcript is one string.
    return " ".join(_read_text(path).split())


def audio_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The audio files in ``folder`` (by :data:`AUDIO_EXTENSIONS`), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _load_audio_folder(root: Path, language: str | None) -> list[Utterance]:
    utterances: list[Utterance] = []
    seen: dict[str, Path] = {}
    for audio in audio_files(root):
        reference = audio.with_suffix(".txt")
        if not reference.is_file():
            warnings.warn(f"skipping {audio}: no {reference.name} beside it", stacklevel=3)
            continue
        if audio.stem in seen:
            # Two encodings of one clip would share one reference and one id.
            warnings.warn(
                f"skipping {audio}: {seen[audio.stem].name} already uses {reference.name}",
                stacklevel=3,
            )
            continue
        seen[audio.stem] = audio
        utterances.append(Utterance(audio.stem, audio, _read_reference(reference), language))
    return utterances


def _load_librispeech(root: Path, language: str | None) -> list[Utterance]:
    utterances: list[Utterance] = []
    for transcript in sorted(root.rglob("*.trans.txt")):
        utterances.extend(_load_librispeech_transcript(transcript, language))
    return utterances


def _load_librispeech_transcript(transcript: Path, language: str | None) -> list[Utterance]:
    utterances: list[Utterance] = []
    lines = _read_text(transcript).splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{transcript}:{lineno}: expected 'UTTID TEXT...', got {line!r}")
        utt_id, text = parts
        audio = _find_audio(transcript.parent, utt_id)
        if audio is None:
            warnings.warn(f"skipping {utt_id}: no audio file beside {transcript}", stacklevel=4)
            continue
        utterances.append(Utterance(utt_id, audio, " ".join(text.split()), language))
    return utterances


def _find_audio(folder: Path, stem: str) -> Path | None:
    # LibriSpeech ships .flac; converted copies are usually .wav. Prefer that order.
    for ext in (".flac", ".wav", *AUDIO_EXTENSIONS):
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _load_manifest(manifest: Path, language: str | None) -> list[Utterance]:
    utterances: list[Utterance] = []
    ids: dict[str, int] = {}
    lines = _read_text(manifest).splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        for key in ("audio", "text"):
            if not isinstance(entry.get(key), str):
                raise ValueError(f"{where}: missing or non-string {key!r}")
        lang = entry.get("language", language)
        if lang is not None and not isinstance(lang, str):
            raise ValueError(f"{where}: 'language' must be a string")
        audio = Path(entry["audio"])
        if not audio.is_absolute():
            audio = manifest.parent / audio
        if not audio.is_file():
            raise ValueError(f"{where}: audio file not found: {audio}")
        utt_id = str(entry.get("id") or audio.stem)
        if utt_id in ids:
            raise ValueError(f"{where}: duplicate id {utt_id!r} (first on line {ids[utt_id]})")
        ids[utt_id] = lineno
        utterances.append(Utterance(utt_id, audio, " ".join(entry["text"].split()), lang))
    return utterances


# --------------------------------------------------------------------------- long-form streams


def concatenate(
    utterances: Sequence[Utterance],
    out_path: str | os.PathLike[str],
    gap_seconds: float = 0.0,
) -> Utterance:
    """Join ``utterances`` into one long-form 16 kHz mono 16-bit WAV at ``out_path``,
    written whole or not at all (a clip that cannot be decoded leaves no file).

    ``gap_seconds`` of silence separate consecutive clips. The returned utterance's text is
    the references joined by spaces, its ``segments`` give each clip's place in the stream,
    and its language is the clips' common language (``None`` when they differ).
    Raises :class:`~rtlab.errors.DecoderError` for a clip ffmpeg cannot decode.
    """
    if not utterances:
        raise ValueError("concatenate() needs at least one utterance")
    if gap_seconds < 0:
        raise ValueError(f"gap_seconds must be >= 0, got {gap_seconds}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    gap = b"\x00\x00" * round(gap_seconds * SAMPLE_RATE)
    segments: list[tuple[float, float, str]] = []
    samples_written = 0
    with written_whole(out) as partial, wave.open(str(partial), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        for index, utt in enumerate(utterances):
            if index and gap:
                wav.writeframes(gap)
                samples_written += len(gap) // 2
            pcm = decode_file(utt.audio, "s16le")
            start = samples_written / SAMPLE_RATE
            wav.writeframes(pcm)
            samples_written += len(pcm) // 2
            segments.append((start, samples_written / SAMPLE_RATE, utt.text))
    languages = {u.language for u in utterances}
    return Utterance(
        id=out.stem,
        audio=out,
        text=" ".join(u.text for u in utterances if u.text),
        language=languages.pop() if len(languages) == 1 else None,
        segments=segments,
    )


# --------------------------------------------------------------------------- shared data


def shared_speech_dir() -> Path | None:
    """The shared English speech folder, or ``None`` when it is not there.

    ``RTLAB_SPEECH_DIR`` wins when set; otherwise ``../shared/data/speech/en`` is tried
    relative to the repository root (the folder above the ``rtlab`` package) and then
    relative to the current working directory.
    """
    configured = os.environ.get("RTLAB_SPEECH_DIR")
    if configured:
        path = Path(configured)
        return path if path.is_dir() else None
    relative = Path("..") / "shared" / "data" / "speech" / "en"
    repo_root = Path(__file__).resolve().parents[2]
    for base in (repo_root, Path.cwd()):
        candidate = (base / relative).resolve()
        if candidate.is_dir():
            return candidate
    return None


def language_corpora(english: str | os.PathLike[str], languages: str | Iterable[str]) -> dict[str, Path]:
    """The speech folder of each of ``languages`` (comma-separated, or a list) in the shared
    layout: ``english`` for ``en``, its sibling folder named by the code for the others
    (``speech/en``, ``speech/de``, ...). Raises ``ValueError`` naming the languages that
    have no folder and those that have, before any work starts."""
    english = Path(english)
    codes = [code.strip() for code in (languages.split(",") if isinstance(languages, str) else languages)]
    codes = list(dict.fromkeys(code for code in codes if code))
    if not codes:
        raise ValueError("no language given: name at least one, e.g. en or en,de")
    folders = {code: english if code == "en" else english.parent / code for code in codes}
    missing = [code for code, folder in folders.items() if not folder.is_dir()]
    if missing:
        found = sorted(p.name for p in english.parent.iterdir() if p.is_dir()) if english.parent.is_dir() else []
        raise ValueError(
            f"no speech folder for {', '.join(missing)} beside {english} (languages there: "
            f"{', '.join(found) or 'none'})"
        )
    return folders
