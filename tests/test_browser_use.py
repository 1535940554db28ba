"""The demo page as a user meets it, in a real Chromium against a real server: stopping,
refusals, a microphone that is missing or refused, quick clicks, the keyboard.

The helpers (Chromium's flags, the fake microphone) are test_browser's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rtlab.testing import tone_words, wav_bytes
from server_support import settle, wait_until
from test_browser import chromium_or_skip, launch, open_demo_page, padded_wav

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STOPPED = "window.rtlab.messages.some(m => m.type === 'transcription_stopped')"


def microphone(tmp_path: Path, text: str = "alpha bravo charlie") -> Path:
    return padded_wav(wav_bytes(tone_words(text)[0]), tmp_path / "microphone.wav")


async def sockets_closed(sockets: list, timeout: float = 10.0) -> bool:
    """Whether every WebSocket the page opened has closed (every message it received has
    been handled by then)."""
    return await wait_until(lambda: all(s.is_closed() for s in sockets), timeout)


async def shown(page) -> tuple[str, str, str | None]:
    """What the user sees: the state, the status line and the error box (None: hidden)."""
    state, status = await page.evaluate("[window.rtlab.state, document.querySelector('#status').textContent]")
    error = None if await page.is_hidden("#error") else await page.text_content("#error")
    return state, status, error


async def test_the_page_keeps_its_summary_and_its_errors_while_it_waits(make_server, tmp_path, ffmpeg_children):
    """After Stop or a refusal the page closes its idle connection itself: the server's
    start_timeout never replaces the summary or the real error, and Start works again."""
    chromium_or_skip()
    from playwright.async_api import async_playwright

    running = await make_server(start_timeout=1.0)
    async with async_playwright() as playwright:
        browser = await launch(playwright, chromium_or_skip(), microphone(tmp_path))
        try:
            page, _ = await open_demo_page(browser, running.url)
            sockets: list = []
            page.on("websocket", lambda socket: sockets.append(socket))
            await page.click("#start")
            await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
            await page.click("#stop")
            await page.wait_for_function(STOPPED, timeout=30_000)
            assert await sockets_closed(sockets)
            after_stop = await shown(page)

            await page.fill("#model", "not-a-model")  # the server allows its own only
            await page.click("#start")
            await page.wait_for_function("window.rtlab.state === 'failed'", timeout=30_000)
            assert await sockets_closed(sockets)
            after_refusal = await shown(page)

            await page.fill("#model", "")
            await page.click("#start")
            await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
            await page.click("#stop")
            await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
            errors = await page.evaluate("window.rtlab.messages.filter(m => m.error).map(m => m.error)")
        finally:
            await browser.close()
    assert after_stop[0] == "idle" and after_stop[1].startswith("stopped") and after_stop[2] is None, after_stop
    assert after_refusal[:2] == ("failed", "failed: not_allowed"), after_refusal
    assert after_refusal[2].startswith("not_allowed: model \"not-a-model\" is not allowed"), after_refusal
    assert errors == ["not_allowed"], errors
    assert not await settle(running, ffmpeg_children)
