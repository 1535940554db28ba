"""Tone backends with a behaviour of their own that several test modules stream through."""

from __future__ import annotations

from rtlab.testing import ToneBackend


class CompoundTones(ToneBackend):
    """A tone backend that hears "charlie" and "delta" as one word, "charliedelta", once
    both are in a pass's audio (as Whisper hears a German compound whole once it is said)."""

    name = "compound-tones"

    def transcribe(self, audio, *, prompt="", language=None):
        words = super().transcribe(audio, prompt=prompt, language=language)
        texts = [w["text"].strip() for w in words]
        for i in range(len(words) - 1):
            if texts[i : i + 2] == ["charlie", "delta"]:
                whole = {**words[i], "text": " charliedelta", "end": words[i + 1]["end"]}
                return [*words[:i], whole, *words[i + 2 :]]
        return words
