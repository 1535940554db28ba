"""The demo page over a long stretch of use, in a real Chromium against a real server: a
backend list that goes stale, earlier sessions' transcripts, audio recorded while the
connection is down, and a transcript that outgrows what the page shows or keeps.

The helpers (Chromium's flags, the fake microphone) are test_browser's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rtlab.config import StreamConfig
from rtlab.server import ServerConfig, start_server
from rtlab.testing import tone_words, wav_bytes
from test_browser import chromium_browser, open_demo_page, padded_wav

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STOPPED = "window.rtlab.messages.some(m => m.type === 'transcription_stopped')"
OFFERED = "(selector) => Array.from(document.querySelectorAll(selector + ' option'), (o) => o.value)"


def microphone(tmp_path: Path, text: str = "alpha bravo charlie") -> Path:
    return padded_wav(wav_bytes(tone_words(text)[0]), tmp_path / "microphone.wav")


async def test_the_backend_list_is_fetched_again_after_a_reconnect(make_server, tmp_path, ffmpeg_children):
    """The server restarts with other backends allowed while the page transcribes: once
    the page has reconnected it offers the new list, and the backend and policy the user
    chose stay chosen (before, the list loaded with the page stayed until a reload)."""

    first = await make_server(shutdown_grace=0.0, allow_backends=("test-attention",))
    again = None
    try:
        async with chromium_browser(microphone(tmp_path)) as browser:
            page, _ = await open_demo_page(browser, first.url)
            before = await page.evaluate(OFFERED, "#backend")
            await page.select_option("#backend", "test-attention")
            await page.click("#start")
            await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
            await first.stop()
            await page.wait_for_function("window.rtlab.state === 'reconnecting'", timeout=30_000)
            again = await start_server(ServerConfig(port=first.port, stream=StreamConfig(backend="test"),
                                                    allow_backends=("*",), allow_policies=("*",)))  # fmt: skip
            await page.wait_for_function(
                "document.querySelectorAll('#backend option').length === 4 && window.rtlab.state === 'running'",
                timeout=30_000,
            )
            after = await page.evaluate(OFFERED, "#backend")
            chosen = (await page.input_value("#backend"), await page.input_value("#policy"))
            policies = await page.evaluate(OFFERED, "#policy")
            await page.click("#stop")
            await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
    finally:
        if again is not None:
            await again.stop()
    assert before == ["test", "test-attention"], before
    assert after == ["faster-whisper", "openai-whisper", "test", "test-attention"], after
    assert chosen == ("test-attention", "local-agreement"), chosen
    assert policies == ["alignatt", "local-agreement"], policies
    assert not ffmpeg_children()


async def test_a_failed_backend_list_is_fetched_again(make_server):
    """The first /api/backends fails: the page says so, tries again by itself, and once the
    list loads offers it and takes its error away (before, it stayed empty until a
    reload)."""

    running = await make_server()
    async with chromium_browser() as browser:
        page = await browser.new_page()
        fetches = []

        async def fail_once(route):
            fetches.append(route.request.url)
            if len(fetches) == 1:
                await route.fulfill(status=503, body="restarting")
            else:
                await route.continue_()

        await page.route("**/api/backends", fail_once)
        await page.goto(running.url + "/")
        await page.wait_for_function("!document.querySelector('#error').hidden", timeout=10_000)
        error = await page.text_content("#error")
        await page.wait_for_function("window.rtlab.backends !== null", timeout=10_000)
        offered = await page.evaluate(OFFERED, "#backend")
        hidden = await page.is_hidden("#error")
    assert error.startswith("Could not load the backend list (HTTP 503)") and "Trying again in 1.0 s" in error, error
    assert offered == ["test"] and hidden and len(fetches) == 2, (offered, hidden, fetches)


async def test_a_backend_list_that_keeps_failing_is_tried_a_bounded_number_of_times(make_server):
    """A server whose /api/backends keeps failing is asked again rtlab.backendRetryMs
    times, then no more, and the page says to reload."""

    running = await make_server()
    async with chromium_browser() as browser:
        page = await browser.new_page()
        fetches = []

        async def fail(route):
            fetches.append(route.request.url)
            await route.fulfill(status=503, body="down")

        await page.route("**/api/backends", fail)
        await page.goto(running.url + "/")
        await page.evaluate("window.rtlab.backendRetryMs = [1000, 100, 100]")  # the first wait is under way
        await page.wait_for_function("document.querySelector('#error').textContent.includes('Reload')", timeout=10_000)
        given_up = len(fetches)
        await asyncio.sleep(2.0)  # longer than any wait left: no fetch may follow
        error = await page.text_content("#error")
    assert given_up == 4 and len(fetches) == 4, fetches
    assert error.endswith("is the server running? Reload the page to try again."), error
