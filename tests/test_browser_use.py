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


# Counts the page's microphone streams: getUserMedia calls still waiting, and tracks live.
MICROPHONE_WATCH = """(() => {
  const devices = navigator.mediaDevices;
  window.microphones = { waiting: 0, streams: [] };
  if (!devices) return;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    window.microphones.waiting += 1;
    try {
      const stream = await getUserMedia(constraints);
      window.microphones.streams.push(stream);
      return stream;
    } finally {
      window.microphones.waiting -= 1;
    }
  };
})()"""
LIVE_TRACKS = "window.microphones.streams.flatMap((s) => s.getTracks()).filter((t) => t.readyState === 'live').length"


async def watched_page(browser, url: str, query: str = ""):
    """The demo page (``url/?query``) with MICROPHONE_WATCH, loaded up to its backend list;
    returns ``(page, sent, sockets)``: the frames the page sent, and the WebSockets it opened."""
    context = await browser.new_context()
    await context.add_init_script(MICROPHONE_WATCH)
    page = await context.new_page()
    sent: list = []
    sockets: list = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: sent.append(frame)))
    await page.goto(f"{url}/{'?' + query if query else ''}")
    await page.wait_for_function("window.rtlab.backends !== null")
    return page, sent, sockets


async def live_microphone_tracks(page) -> int:
    """Microphone tracks still recording, once no getUserMedia call is pending."""
    await page.wait_for_function("window.microphones.waiting === 0", timeout=10_000)
    return await page.evaluate(LIVE_TRACKS)


def starts_sent(sent: list) -> int:
    return sum(1 for frame in sent if isinstance(frame, str) and '"start_transcription"' in frame)


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


async def test_stop_pressed_while_connecting_is_obeyed(make_server, tmp_path, ffmpeg_children):
    """Start then Stop before the connection opens: the page does not go on to record and
    transcribe once it opens. Start, Stop and Start again at once record once, and Stop
    releases the microphone."""
    chromium = chromium_or_skip()
    from playwright.async_api import async_playwright

    running = await make_server()
    click = "(ids) => ids.forEach((id) => document.getElementById(id).click())"
    async with async_playwright() as playwright:
        browser = await launch(playwright, chromium, microphone(tmp_path))
        try:
            page, sent, sockets = await watched_page(browser, running.url)
            await page.evaluate(click, ["start", "stop"])  # one task: the socket is still connecting
            assert await wait_until(lambda: sockets, 10)
            assert await sockets_closed(sockets), "the page kept its connection after Stop"
            after_stop = (await shown(page), starts_sent(sent), await live_microphone_tracks(page))

            await page.evaluate(click, ["start", "stop"])
            await page.click("#start")  # as soon as it is enabled again
            await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
            await page.click("#stop")
            await page.wait_for_function(STOPPED, timeout=30_000)
            assert await sockets_closed(sockets)
            after_restart = (starts_sent(sent), await live_microphone_tracks(page))
        finally:
            await browser.close()
    assert after_stop == (("idle", "idle", None), 0, 0), after_stop
    assert after_restart == (1, 0), after_restart
    assert not await settle(running, ffmpeg_children)


async def test_a_refused_connection_releases_the_microphone(make_server, tmp_path, ffmpeg_children):
    """A wrong ?token= is refused (unauthorized): the page says so and does not keep
    recording; the right token starts a transcription."""
    chromium = chromium_or_skip()
    from playwright.async_api import async_playwright

    running = await make_server(token="s3cret")
    async with async_playwright() as playwright:
        browser = await launch(playwright, chromium, microphone(tmp_path))
        try:
            page, _, sockets = await watched_page(browser, running.url, "token=wrong")
            await page.click("#start")
            await page.wait_for_function("window.rtlab.state === 'failed'", timeout=30_000)
            assert await sockets_closed(sockets)
            refused = (await shown(page), await live_microphone_tracks(page))

            page, _, sockets = await watched_page(browser, running.url, "token=s3cret")
            await page.click("#start")
            await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
            await page.click("#stop")
            await page.wait_for_function(STOPPED, timeout=30_000)
            allowed = (await shown(page), await live_microphone_tracks(page))
        finally:
            await browser.close()
    (state, status, error), live = refused
    assert (state, status, live) == ("failed", "failed: unauthorized", 0), refused
    assert error.startswith("unauthorized: missing or wrong token"), refused
    assert allowed[0][0] == "idle" and allowed[0][2] is None and allowed[1] == 0, allowed
    assert not await settle(running, ffmpeg_children)
