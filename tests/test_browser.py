"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, with its
fake microphone playing a WAV file into the demo page, against a real server and FFmpeg.

Screenshots are saved under ``artifacts/`` (git-ignored) as test artefacts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import wave
from pathlib import Path

import pytest

from rtlab.registry import get_registry
from rtlab.testing import tone_words, wav_bytes
from server_support import settle

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = os.environ.get("RTLAB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
DATA = Path(__file__).parent / "data"


def chromium_or_skip() -> str:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright (no browser download needed)")
    if not (shutil.which(CHROMIUM) or os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set RTLAB_CHROMIUM")
    return CHROMIUM


def padded_wav(audio_wav: bytes, path: Path, before: float = 1.0, after: float = 2.0) -> Path:
    """The WAV with silence around it: the fake microphone starts before the page records."""
    import io

    with wave.open(io.BytesIO(audio_wav)) as source:
        rate, frames = source.getframerate(), source.readframes(source.getnframes())
        assert source.getsampwidth() == 2 and source.getnchannels() == 1
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(before * rate) + frames + b"\0\0" * int(after * rate))
    return path


def words_of(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


CASES = {
    # backend: (clip builder, words that must be committed, words the page must show before
    # Stop (committed or partial), words committed at least once the stream stopped)
    "test": (lambda: wav_bytes(tone_words("alpha bravo charlie delta echo")[0]),
             "alpha bravo charlie", "delta echo", 5),
    # tiny.en hears "jumps over the lazy dog" in this espeak voice in several ways ("jump
    # sober nadezi dog"), so the page waits for the clip's last words, "sea shore", which it
    # hears every time, written as one word or two depending on where the passes fall
    # (0.7 s of lead-in and 1 s passes give "seashore"), so words are matched on their
    # letters alone; and its last pass over the whole buffer may hear a sentence
    # differently from the partial text shown before, so the final check counts words.
    "faster-whisper": (lambda: (DATA / "fox.wav").read_bytes(), "quick brown", "sea shore", 8),
}  # fmt: skip


@pytest.mark.parametrize("backend", list(CASES))
async def test_demo_page_transcribes_the_fake_microphone(make_server, tmp_path, ffmpeg_children, backend):
    chromium = chromium_or_skip()
    if backend not in get_registry().names("backend"):
        pytest.skip(f"backend {backend!r} is not installed: pip install -e plugins/rtlab-{backend}")
    from playwright.async_api import async_playwright

    build, early_words, final_words, committed_count = CASES[backend]
    microphone = padded_wav(build(), tmp_path / "microphone.wav")
    running = await make_server(backend=backend)
    await running.server.preload_task  # a warm model, as a running service would have
    ARTIFACTS.mkdir(exist_ok=True)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}%noloop",
            ],
        )  # fmt: skip
        try:
            page = await browser.new_page()
            console = []
            page.on("console", lambda message: console.append(message.text))
            await page.goto(running.url + "/")
            await page.wait_for_function("window.rtlab.backends !== null")
            assert await page.input_value("#backend") == backend
            await page.click("#start")
            shows = (  # letters alone: "sea shore", "seashore" and "sea-shore" are one reading
                "([selector, words]) => document.querySelector(selector).textContent.toLowerCase()"
                ".replace(/[^a-z]+/g, '').includes(words.replace(/ /g, ''))"
            )
            await page.wait_for_function(shows, arg=["#committed", early_words], timeout=60_000)
            # Let the microphone play to the end of the clip (partial text counts) before Stop.
            await page.wait_for_function(shows, arg=["#transcript", final_words], timeout=60_000)
            await page.click("#stop")
            await page.wait_for_function(
                "window.rtlab.messages.some(m => m.type === 'transcription_stopped')", timeout=60_000
            )
            await page.screenshot(path=str(ARTIFACTS / f"browser-{backend}.png"), full_page=True)
            transcript = words_of(await page.text_content("#committed"))
            status = await page.text_content("#status")
            messages = await page.evaluate("window.rtlab.messages")
            error = await page.text_content("#error")
        finally:
            await browser.close()

    types = [m["type"] for m in messages]
    assert types[:3] == ["transcription_starting", "model_loading_started", "transcription_started"], types
    assert "transcript" in types and types[-1] == "transcription_stopped"
    assert early_words.replace(" ", "") in transcript.replace(" ", ""), (transcript, console)
    assert len(transcript.split()) >= committed_count, (transcript, console)
    if backend == "test":  # exact by construction
        assert final_words in transcript, (transcript, console)
    assert "stopped" in status and not error.strip()
    assert not await settle(running, ffmpeg_children)


async def test_the_page_offers_the_policies_the_chosen_backend_can_run(make_server, tmp_path, ffmpeg_children):
    """/api/backends says which policies each backend can run: AlignAtt only where the
    backend has incremental decoding. The page streams with the policy chosen."""
    chromium = chromium_or_skip()
    from playwright.async_api import async_playwright

    text = "alpha bravo charlie delta echo"
    microphone = padded_wav(wav_bytes(tone_words(text)[0]), tmp_path / "microphone.wav")
    running = await make_server(backend="test-attention", policy="alignatt", allow_backends=("*",), allow_policies=("*",))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}%noloop",
            ],
        )  # fmt: skip
        try:
            page = await browser.new_page()
            sent = []
            page.on("websocket", lambda socket: socket.on("framesent", lambda frame: sent.append(frame)))
            await page.goto(running.url + "/")
            await page.wait_for_function("window.rtlab.backends !== null")
            offered = "Array.from(document.querySelectorAll('#policy option'), (o) => o.value)"
            assert await page.input_value("#backend") == "test-attention"
            assert await page.evaluate(offered) == ["alignatt", "local-agreement"]
            assert await page.input_value("#policy") == "alignatt"
            assert "cross-attention" in await page.text_content("#policy-description")
            await page.select_option("#backend", "test")
            assert await page.evaluate(offered) == ["local-agreement"]
            assert await page.input_value("#policy") == "local-agreement"
            await page.select_option("#backend", "test-attention")
            await page.select_option("#policy", "alignatt")
            await page.click("#start")
            await page.wait_for_function(
                "document.querySelector('#committed').textContent.includes('charlie')", timeout=60_000
            )
            await page.click("#stop")
            await page.wait_for_function(
                "window.rtlab.messages.some(m => m.type === 'transcription_stopped')", timeout=60_000
            )
            transcript = words_of(await page.text_content("#committed"))
            messages = await page.evaluate("window.rtlab.messages")
        finally:
            await browser.close()
    assert transcript == text, transcript
    assert [m["type"] for m in messages][-1] == "transcription_stopped"
    starts = [json.loads(frame) for frame in sent if isinstance(frame, str) and "start_transcription" in frame]
    assert [(m["backend"], m["policy"]) for m in starts] == [("test-attention", "alignatt")]
    assert not await settle(running, ffmpeg_children)


async def test_the_page_offers_only_what_the_server_allows_clients_to_name(make_server):
    """A server without allow-lists lets clients name only its own backend, model and
    policy: the page offers nothing else (a choice the server would refuse)."""
    chromium = chromium_or_skip()
    from playwright.async_api import async_playwright

    running = await make_server(allow_models=("alt",))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = await browser.new_page()
            await page.goto(running.url + "/")
            await page.wait_for_function("window.rtlab.backends !== null")
            values = "(selector) => Array.from(document.querySelectorAll(selector), (o) => o.value)"
            assert await page.evaluate(values, "#backend option") == ["test"]
            assert await page.evaluate(values, "#policy option") == ["local-agreement"]
            assert await page.evaluate(values, "#models option") == ["tones", "alt"]
        finally:
            await browser.close()
