"""A corpus of many distinct synthetic clips, spoken by espeak-ng, for benchmarks that need more
clips than the shared speech holds.

Writes one 16 kHz mono WAV file per sentence of ``benchmarks/sentences/LANGUAGE.txt`` (or
``--sentences FILE``, one sentence per line) with its reference beside it as a ``.txt`` file,
the folder layout every rtlab corpus reader takes. Each clip has its own seeded voice (the
language's espeak-ng voices and variants), speed and pitch, so that the clips do not all sound
alike; ``voices.json`` says which each one got, with espeak-ng's version. The same seed writes
the same files.

A synthetic voice is not a person: Whisper's errors on it are not its errors on speech, and the
clips are clean, so use them where the number of distinct clips matters more than how real
each one is (a long stream's WER against its clips alone, whose interval draws the clips):

    python benchmarks/synthetic_corpus.py --out results/synthetic-en
    python benchmarks/long_form.py --corpus results/synthetic-en --configuration default
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SENTENCES = Path(__file__).resolve().parent / "sentences"
#: espeak-ng voices per language and the variants drawn for them.
VOICES = {
    "en": ["en-us", "en-gb", "en-gb-x-rp"],
}
VARIANTS = ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4"]
SPEED = (140, 175)  # words per minute
PITCH = (35, 65)  # espeak-ng's 0-99


def espeak_version(espeak: str) -> str:
    result = subprocess.run([espeak, "--version"], capture_output=True, text=True, timeout=30)
    return result.stdout.strip()


def read_sentences(path: Path) -> list[str]:
    """The non-empty lines of ``path``."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def voice_plan(language: str, count: int, seed: int) -> list[dict[str, object]]:
    """The voice, variant, speed and pitch of each of ``count`` clips, drawn with ``seed``."""
    pick = random.Random(seed)
    return [
        {"voice": f"{pick.choice(VOICES[language])}+{pick.choice(VARIANTS)}",
         "speed": pick.randint(*SPEED), "pitch": pick.randint(*PITCH)}
        for _ in range(count)
    ]  # fmt: skip


def speak(espeak: str, text: str, plan: dict[str, object], target: Path) -> None:
    """``text`` spoken as ``plan`` says, written to ``target`` as 16 kHz mono 16-bit WAV."""
    from rtlab.decoders.files import decode_audio
    from rtlab.testing.tones import wav_bytes

    with tempfile.TemporaryDirectory(prefix="rtlab-espeak-") as folder:
        raw = Path(folder) / "raw.wav"
        command = [espeak, "-v", str(plan["voice"]), "-s", str(plan["speed"]), "-p", str(plan["pitch"]), "-w", str(raw), text]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0 or not raw.exists():
            raise RuntimeError(f"espeak-ng failed on {target.name}: {result.stderr.strip() or result.returncode}")
        target.write_bytes(wav_bytes(decode_audio(raw)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--language", default="en", choices=sorted(VOICES))
    parser.add_argument("--sentences", type=Path, help="one sentence per line (default: benchmarks/sentences/LANGUAGE.txt)")
    parser.add_argument("--count", type=int, help="the first COUNT sentences only (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the voices, speeds and pitches (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the clips to (made if missing)")
    args = parser.parse_args(argv)
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        parser.error("espeak-ng was not found on PATH (Debian: apt-get install espeak-ng)")
    path = args.sentences or SENTENCES / f"{args.language}.txt"
    try:
        sentences = read_sentences(path)
    except (OSError, UnicodeDecodeError) as error:
        parser.error(f"cannot read the sentences: {error}")
    if args.count is not None:
        if args.count < 1:
            parser.error(f"--count must be at least 1, not {args.count}")
        sentences = sentences[: args.count]
    if not sentences:
        parser.error(f"no sentences in {path}")
    if args.out.exists() and any(args.out.glob("*.wav")):
        parser.error(f"{args.out} already holds clips: give a new folder")
    args.out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    plans = voice_plan(args.language, len(sentences), args.seed)
    clips = []
    with tqdm(total=len(sentences), desc="espeak-ng", unit="clip", file=sys.stderr, disable=None) as bar:
        for index, (text, plan) in enumerate(zip(sentences, plans)):
            name = f"synthetic-{args.language}-{index:03d}"
            speak(espeak, text, plan, args.out / f"{name}.wav")
            (args.out / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
            clips.append({"clip": name, **plan})
            bar.update(1)
    manifest = {"language": args.language, "seed": args.seed, "sentences": str(path), "espeak_ng": espeak_version(espeak),
                "clips": clips}  # fmt: skip
    (args.out / "voices.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    print(f"wrote {len(clips)} clips to {args.out} ({manifest['espeak_ng']})")
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
