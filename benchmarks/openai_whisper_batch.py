"""openai-whisper's batched model calls against one call per session, side by side.

For N sessions (1, 2, 4, 8 by default), each with a buffer of its own (the first 5, 6, 7 ...
seconds of a clip, English, no prompt), two things are timed in one run, alternating
batched and one at a time in every repeat so that both see the same machine:

* ``transcribe``: N calls of ``transcribe`` one after another, against one
  ``transcribe_batch`` of the N requests (LocalAgreement's passes);
* ``alignatt``: for each session, ``encode`` then ``begin`` and ``--steps`` ``feed`` calls
  of its incremental decoder, one session after another, against ``encode_batch`` and
  ``step_batch`` over the N decoders (AlignAtt's decode of one chunk); the encoder and the
  steps timed apart.

Printed per row: wall seconds per session (a pass, its encoder run, or its begin and feed
steps), median over ``--repeats``, alone and batched, and their ratio; whether the batched
words (tokens) equal those alone.

    python benchmarks/openai_whisper_batch.py                        # tiny.en, CPU
    python benchmarks/openai_whisper_batch.py --sessions 2 --sessions 4 --repeats 5 --cpu-threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def buffers(count: int, clip: Path) -> list[np.ndarray]:
    from rtlab.decoders.files import decode_audio

    audio = decode_audio(clip)
    return [audio[: min(len(audio), (5 + index) * 16_000)] for index in range(count)]


def time_transcribe(backend, audio: list[np.ndarray]) -> tuple[float, float, bool]:
    from rtlab.backends import Request

    requests = [Request(a, "", "en") for a in audio]
    started = time.perf_counter()
    alone = [backend.transcribe(r.audio, prompt=r.prompt, language=r.language) for r in requests]
    middle = time.perf_counter()
    together = backend.transcribe_batch(requests)
    ended = time.perf_counter()
    same = [[w["text"] for w in words] for words in alone] == [[w["text"] for w in words] for words in together]
    return middle - started, ended - middle, same


def time_alignatt(backend, audio: list[np.ndarray], steps: int) -> dict[str, float | bool]:
    """Seconds of the encoder runs and of the steps, alone and batched, and whether the
    tokens agree."""
    from rtlab.policies.incremental import DecoderCall

    seconds = {"alone_encode": 0.0, "alone_steps": 0.0}
    alone = []
    for each in audio:
        decoder = backend.incremental_decoder(language="en")
        started = time.perf_counter()
        decoder.encode(each)
        encoded = time.perf_counter()
        tokens = [decoder.begin([], []).token]
        for _ in range(steps):
            tokens.append(decoder.feed(tokens[-1]).token)
        seconds["alone_encode"] += encoded - started
        seconds["alone_steps"] += time.perf_counter() - encoded
        decoder.close()
        alone.append(tokens)
    decoders = [backend.incremental_decoder(language="en") for _ in audio]
    kind = type(decoders[0])
    started = time.perf_counter()
    kind.encode_batch(list(zip(decoders, audio)))
    encoded = time.perf_counter()
    together = [[d.token] for d in kind.step_batch([DecoderCall(d, "begin", ([], [])) for d in decoders])]
    for _ in range(steps):
        decoded = kind.step_batch([DecoderCall(d, "feed", (tokens[-1],)) for d, tokens in zip(decoders, together)])
        for tokens, step in zip(together, decoded):
            tokens.append(step.token)
    seconds["batched_encode"] = encoded - started
    seconds["batched_steps"] = time.perf_counter() - encoded
    for decoder in decoders:
        decoder.close()
    return {**seconds, "same": alone == together}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--sessions", type=int, action="append", help="sessions per row (repeatable; default 1 2 4 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-threads", type=int, help="PyTorch threads per call (default: the backend's)")
    parser.add_argument("--steps", type=int, default=24, help="feed calls after begin, per AlignAtt decode")
    parser.add_argument("--clip", type=Path, default=REPO / "tests" / "data" / "paragraph.ogg")
    parser.add_argument("--out", type=Path, default=Path("openai_whisper_batch.json"))
    args = parser.parse_args()

    import torch

    from rtlab.backends import ensure_loaded
    from rtlab.core.instances import get_backend

    options = {"cpu_threads": args.cpu_threads} if args.cpu_threads else {}
    # Greedy: only greedy passes batch (a multilingual model would otherwise search 5 beams).
    backend = ensure_loaded(
        get_backend("openai-whisper", model=args.model, max_batch=max(args.sessions or [8]), beam_size=1, **options)
    )
    warm = buffers(2, args.clip)
    time_transcribe(backend, warm)
    time_alignatt(backend, warm, 2)
    rows = []
    print(f"{args.model} on {backend.device}, {backend.cpu_threads} thread(s), torch {torch.__version__}")
    print("| calls | sessions | alone s/pass | batched s/pass | batched/alone | same tokens |")
    print("|---|---:|---:|---:|---:|---|")
    for sessions in args.sessions or [1, 2, 4, 8]:
        audio = buffers(sessions, args.clip)
        measured: dict[str, list[float]] = {}
        same = True
        for _ in range(args.repeats):  # the three kinds of call, alone then batched, in every repeat
            alone, together, agree = time_transcribe(backend, audio)
            timed = time_alignatt(backend, audio, args.steps)
            same = same and agree and bool(timed.pop("same"))
            timed.update({"alone_transcribe": alone, "batched_transcribe": together})
            for name, value in timed.items():
                measured.setdefault(name, []).append(value / sessions)
        for name in ("transcribe", "encode", "steps"):
            alone, together = (statistics.median(measured[f"{way}_{name}"]) for way in ("alone", "batched"))
            label = name if name == "transcribe" else f"alignatt {name}"
            rows.append({
                "calls": label, "sessions": sessions, "alone_seconds_per_pass": alone, "batched_seconds_per_pass": together,
                "alone_all": measured[f"alone_{name}"], "batched_all": measured[f"batched_{name}"], "same_tokens": same,
            })  # fmt: skip
            print(
                f"| {label} | {sessions} | {alone:.3f} | {together:.3f} | {together / alone:.2f} | {'yes' if same else 'NO'} |",
                flush=True,
            )
    record = {
        "model": args.model, "device": backend.device, "cpu_threads": backend.cpu_threads,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats, "steps": args.steps, "clip": str(args.clip), "rows": rows,
    }  # fmt: skip
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
