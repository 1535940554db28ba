"""The demo page as a user meets it, in a real Chromium against a real server: stopping,
refusals, a microphone that is missing or refused, quick clicks, the keyboard.

The helpers (Chromium's flags, the fake microphone) are test_browser's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rtlab.testing import tone_words, wav_bytes
from server_support import settle
from test_browser import chromium_browser, padded_wav

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STOPPED = "window.rtlab.messages.some(m => m.type === 'transcription_stopped')"


def microphone(tmp_path: Path, text: str = "alpha bravo charlie") -> Path:
    return padded_wav(wav_bytes(tone_words(text)[0]), tmp_path / "microphone.wav")


# Watches the page from inside: its WebSockets, its getUserMedia calls still waiting, and
# the streams they gave.
PAGE_WATCH = """(() => {
  const watch = (window.watch = { sockets: [], waiting: 0, streams: [] });
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); watch.sockets.push(this); }
  };
  const devices = navigator.mediaDevices;
  if (!devices) return;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    watch.waiting += 1;
    try {
      const stream = await getUserMedia(constraints);
      watch.streams.push(stream);
      return stream;
    } finally {
      watch.waiting -= 1;
    }
  };
})()"""
LIVE_TRACKS = "window.watch.streams.flatMap((s) => s.getTracks()).filter((t) => t.readyState === 'live').length"
ALL_CLOSED = "window.watch.sockets.every((s) => s.readyState === WebSocket.CLOSED)"


async def watched_page(browser, url: str, query: str = ""):
    """The demo page (``url/?query``) with PAGE_WATCH, loaded up to its backend list;
    returns ``(page, sent)``, ``sent`` collecting the frames the page sends."""
    context = await browser.new_context()
    await context.add_init_script(PAGE_WATCH)
    page = await context.new_page()
    sent: list = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: sent.append(frame)))
    await page.goto(f"{url}/{'?' + query if query else ''}")
    await page.wait_for_function("window.rtlab.backends !== null")
    return page, sent


async def live_microphone_tracks(page) -> int:
    """Microphone tracks still recording, once no getUserMedia call is pending."""
    await page.wait_for_function("window.watch.waiting === 0", timeout=10_000)
    return await page.evaluate(LIVE_TRACKS)


def starts_sent(sent: list) -> int:
    return sum(1 for frame in sent if isinstance(frame, str) and '"start_transcription"' in frame)


async def sockets_closed(page, timeout: float = 10.0) -> bool:
    """Whether every WebSocket the page opened has closed within ``timeout`` (every
    message it received has been handled by then)."""
    from playwright.async_api import TimeoutError

    try:
        await page.wait_for_function(ALL_CLOSED, timeout=timeout * 1000)
    except TimeoutError:
        return False
    return True


async def connections(page) -> int:
    """How many WebSockets the page has opened."""
    return await page.evaluate("window.watch.sockets.length")


async def shown(page) -> tuple[str, str, str | None]:
    """What the user sees: the state, the status line and the error box (None: hidden)."""
    state, status = await page.evaluate("[window.rtlab.state, document.querySelector('#status').textContent]")
    error = None if await page.is_hidden("#error") else await page.text_content("#error")
    return state, status, error


async def test_the_page_keeps_its_summary_and_its_errors_while_it_waits(make_server, tmp_path, ffmpeg_children):
    """After Stop or a refusal the page closes its idle connection itself: the server's
    start_timeout never replaces the summary or the real error, and Start works again."""

    running = await make_server(start_timeout=1.0)
    async with chromium_browser(microphone(tmp_path)) as browser:
        page, _ = await watched_page(browser, running.url)
        await page.click("#start")
        await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
        await page.click("#stop")
        await page.wait_for_function(STOPPED, timeout=30_000)
        assert await sockets_closed(page)
        after_stop = await shown(page)

        await page.fill("#model", "not-a-model")  # the server allows its own only
        await page.click("#start")
        await page.wait_for_function("window.rtlab.state === 'failed'", timeout=30_000)
        assert await sockets_closed(page)
        after_refusal = await shown(page)

        await page.fill("#model", "")
        await page.click("#start")
        await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
        await page.click("#stop")
        await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
        errors = await page.evaluate("window.rtlab.messages.filter(m => m.error).map(m => m.error)")
    assert after_stop[0] == "idle" and after_stop[1].startswith("stopped") and after_stop[2] is None, after_stop
    assert after_refusal[:2] == ("failed", "failed: not_allowed"), after_refusal
    assert after_refusal[2].startswith("not_allowed: model \"not-a-model\" is not allowed"), after_refusal
    assert errors == ["not_allowed"], errors
    assert not await settle(running, ffmpeg_children)


async def test_stop_pressed_while_connecting_is_obeyed(make_server, tmp_path, ffmpeg_children):
    """Start then Stop before the connection opens: the page does not go on to record and
    transcribe once it opens. Start, Stop and Start again at once record once, and Stop
    releases the microphone."""

    running = await make_server()
    click = "(ids) => ids.forEach((id) => document.getElementById(id).click())"
    async with chromium_browser(microphone(tmp_path)) as browser:
        page, sent = await watched_page(browser, running.url)
        await page.evaluate(click, ["start", "stop"])  # one task: the socket is still connecting
        await live_microphone_tracks(page)  # the browser has answered
        assert await sockets_closed(page), "the page kept its connection after Stop"
        after_stop = (await shown(page), starts_sent(sent), await live_microphone_tracks(page))

        await page.evaluate(click, ["start", "stop"])
        await page.click("#start")  # as soon as it is enabled again
        await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
        await page.click("#stop")
        await page.wait_for_function(STOPPED, timeout=30_000)
        assert await sockets_closed(page)
        after_restart = (starts_sent(sent), await live_microphone_tracks(page))
    assert after_stop == (("idle", "idle", None), 0, 0), after_stop
    assert after_restart == (1, 0), after_restart
    assert not await settle(running, ffmpeg_children)


async def test_a_refused_connection_releases_the_microphone(make_server, tmp_path, ffmpeg_children):
    """A wrong ?token= is refused (unauthorized): the page says so and does not keep
    recording; the right token starts a transcription."""

    running = await make_server(token="s3cret")
    async with chromium_browser(microphone(tmp_path)) as browser:
        page, _ = await watched_page(browser, running.url, "token=wrong")
        await page.click("#start")
        await page.wait_for_function("window.rtlab.state === 'failed'", timeout=30_000)
        assert await sockets_closed(page)
        refused = (await shown(page), await live_microphone_tracks(page))

        page, _ = await watched_page(browser, running.url, "token=s3cret")
        await page.click("#start")
        await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
        await page.click("#stop")
        await page.wait_for_function(STOPPED, timeout=30_000)
        allowed = (await shown(page), await live_microphone_tracks(page))
    (state, status, error), live = refused
    assert (state, status, live) == ("failed", "failed: unauthorized", 0), refused
    assert error.startswith("unauthorized: missing or wrong token"), refused
    assert allowed[0][0] == "idle" and allowed[0][2] is None and allowed[1] == 0, allowed
    assert not await settle(running, ffmpeg_children)


MICROPHONE_PROBLEMS = {
    # case: (Chromium flags besides the usual ones, the page's host, what the page says)
    "none": ((), "127.0.0.1", "No microphone was found: connect one"),
    "refused": (("--use-fake-device-for-media-stream",), "127.0.0.1", "Microphone access was refused: allow it"),
    # A name other than localhost over http is not a secure context: no microphone at all.
    "insecure": (("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                  "--host-resolver-rules=MAP rtlab.test 127.0.0.1"), "rtlab.test",
                 "browsers offer one only to secure pages. Open it over https, or on this machine as http://localhost"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MICROPHONE_PROBLEMS))
async def test_a_missing_or_refused_microphone_is_named_and_starts_nothing(make_server, case):
    """No microphone, a refused one, or a page where the browser offers none: the page
    says which and what to do, and starts nothing on the server (no connection)."""

    flags, host, advice = MICROPHONE_PROBLEMS[case]
    running = await make_server(allowed_hosts=(host,))
    async with chromium_browser(extra=flags) as browser:
        page, _ = await watched_page(browser, running.url.replace("127.0.0.1", host))
        await page.click("#start")
        await page.wait_for_function("window.rtlab.state === 'failed'", timeout=10_000)
        assert await sockets_closed(page)
        seen = (await shown(page), await connections(page))
    (state, status, error), opened = seen
    assert (state, status) == ("failed", "failed: microphone") and advice in error, seen
    assert opened == 0, seen


@pytest.mark.parametrize("grace", [5.0, 0.0], ids=["flushed", "cut-short"])
async def test_the_page_resumes_when_the_server_comes_back(make_server, tmp_path, ffmpeg_children, grace):
    """The server stops mid-stream and starts again on the same port: the page says it is
    reconnecting, drops the provisional words it will never commit, resumes without a
    reload on the microphone it had, and Stop releases it. Whether the server had time to
    flush the utterance (transcription_stopped) or not (transcription_failed
    server_shutdown) makes no difference."""

    from rtlab.config import StreamConfig
    from rtlab.server import ServerConfig, start_server

    first = await make_server(shutdown_grace=grace)
    started = "window.rtlab.messages.filter((m) => m.type === 'transcription_started').length"
    again = None
    try:
        async with chromium_browser(microphone(tmp_path)) as browser:
            page, sent = await watched_page(browser, first.url)
            await page.click("#start")
            await page.wait_for_function("document.querySelector('#partial').textContent.trim()", timeout=30_000)
            await first.stop()
            await page.wait_for_function("window.rtlab.state === 'reconnecting'", timeout=30_000)
            status = await page.text_content("#status")
            partial = await page.text_content("#partial")
            ended = await page.evaluate(
                "window.rtlab.messages.filter((m) => m.type.startsWith('transcription_')"
                " && !['transcription_starting', 'transcription_started'].includes(m.type)).map((m) => m.error || m.type)"
            )
            again = await start_server(ServerConfig(port=first.port, stream=StreamConfig(backend="test")))
            await page.wait_for_function(f"{started} === 2 && window.rtlab.state === 'running'", timeout=30_000)
            during = (await live_microphone_tracks(page), await page.evaluate("window.watch.streams.length"))
            await page.click("#stop")
            await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
            after = (await shown(page), await live_microphone_tracks(page), starts_sent(sent))
    finally:
        if again is not None:
            await again.stop()
    assert ended == (["transcription_stopped"] if grace else ["server_shutdown"]), ended
    assert "reconnecting in" in status, status
    assert partial == "", partial  # no grey words that will never be committed
    assert during == (1, 1), during  # one microphone stream, kept through the reconnect
    assert after[0][0] == "idle" and after[0][2] is None and after[1:] == (0, 2), after
    assert not ffmpeg_children()


async def test_start_and_stop_from_the_keyboard(make_server, tmp_path, ffmpeg_children):
    """Enter on Start starts, and the focus moves to Stop, so Enter again stops; once
    stopped the focus is back on Start. The status line is announced (role status)."""

    running = await make_server()
    focused = "document.activeElement && document.activeElement.id"
    async with chromium_browser(microphone(tmp_path)) as browser:
        page, sent = await watched_page(browser, running.url)
        await page.focus("#start")
        await page.keyboard.press("Enter")
        await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
        status = await page.get_by_role("status").text_content()
        on_running = await page.evaluate(focused)
        await page.keyboard.press("Enter")
        await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
        on_idle = await page.evaluate(focused)
        await page.keyboard.press("Enter")
        await page.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
        await page.keyboard.press("Enter")
        await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
        stops = sum(1 for frame in sent if isinstance(frame, str) and '"stop_transcription"' in frame)
    assert status.startswith("listening"), status
    assert (on_running, on_idle) == ("stop", "start")
    assert (starts_sent(sent), stops) == (2, 2)
    assert not await settle(running, ffmpeg_children)


NEWEST_WORD_IN_VIEW = """() => {
  const text = document.querySelector('#committed').lastChild;
  const range = document.createRange();
  range.setStart(text, text.length - 1);
  range.setEnd(text, text.length);
  const word = range.getBoundingClientRect();
  const box = document.querySelector('#transcript').getBoundingClientRect();
  return word.bottom <= Math.min(box.bottom, window.innerHeight) && word.top >= Math.max(box.top, 0);
}"""


async def test_a_long_transcript_keeps_its_newest_words_in_view(make_server, tmp_path, ffmpeg_children):
    """On a small screen, a transcript longer than the screen scrolls inside its box and
    follows the newest words; the page does not grow with it."""

    words = " ".join(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"] * 5)
    running = await make_server()
    async with chromium_browser(microphone(tmp_path, words)) as browser:
        page, _ = await watched_page(browser, running.url)
        await page.set_viewport_size({"width": 360, "height": 480})
        await page.click("#start")
        await page.eval_on_selector("#transcript", "(box) => box.scrollIntoView()")  # the user looks at it
        page_height = await page.evaluate("document.documentElement.scrollHeight")
        await page.wait_for_function(
            "document.querySelector('#committed').textContent.endsWith('foxtrot')"
            " && document.querySelector('#committed').textContent.split(' ').length >= 30",
            timeout=60_000,
        )
        in_view = await page.evaluate(NEWEST_WORD_IN_VIEW)
        grown = await page.evaluate("document.documentElement.scrollHeight") - page_height
        await page.click("#stop")
        await page.wait_for_function(STOPPED, timeout=30_000)
    assert in_view, "the newest words are out of sight"
    assert grown < 100, grown
    assert not await settle(running, ffmpeg_children)


async def test_a_microphone_that_goes_away_ends_the_utterance(make_server, tmp_path, ffmpeg_children):
    """The browser ends the microphone mid-stream (unplugged): the page stops the
    utterance at once, keeping what was heard, and says why, instead of listening to
    nothing until the server's idle timeout."""

    running = await make_server()
    unplug = "window.watch.streams.forEach((s) => s.getTracks().forEach((t) => { t.stop(); t.dispatchEvent(new Event('ended')); }))"
    async with chromium_browser(microphone(tmp_path)) as browser:
        page, sent = await watched_page(browser, running.url)
        await page.click("#start")
        await page.wait_for_function("document.querySelector('#committed').textContent.includes('alpha')", timeout=30_000)
        await page.evaluate(unplug)
        await page.wait_for_function(STOPPED, timeout=10_000)
        assert await sockets_closed(page)
        seen = await shown(page)
        transcript = await page.text_content("#committed")
    state, status, error = seen
    assert state == "idle" and status.startswith("stopped"), seen
    assert error.startswith("The microphone stopped"), seen
    assert transcript.startswith("alpha"), transcript
    assert not await settle(running, ffmpeg_children)


# Records what changes in the page's live regions, as a screen reader is told of it.
LIVE_REGION_WATCH = """() => {
  window.announced = [];
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      const region = (m.target.nodeType === Node.TEXT_NODE ? m.target.parentElement : m.target).closest('[aria-live]');
      if (!region || region.id === 'status') continue;
      const added = Array.from(m.addedNodes, (n) => n.textContent).join('');
      window.announced.push({ kind: m.type, removed: m.removedNodes.length, text: m.type === 'characterData' ? m.target.data : added });
    }
  }).observe(document.body, { childList: true, characterData: true, subtree: true });
}"""


async def test_screen_readers_are_told_the_new_committed_words_only(make_server, tmp_path, ffmpeg_children):
    """The transcript's live region gets each commit's new words as an addition: the
    provisional text, which changes several times a second, is outside it, and committed
    text is never rewritten (which would have the whole transcript read again)."""

    running = await make_server()
    async with chromium_browser(microphone(tmp_path, "alpha bravo charlie delta echo")) as browser:
        page, _ = await watched_page(browser, running.url)
        await page.evaluate(LIVE_REGION_WATCH)
        await page.click("#start")
        await page.wait_for_function("document.querySelector('#committed').textContent.includes('charlie')", timeout=30_000)
        await page.click("#stop")
        await page.wait_for_function(STOPPED, timeout=30_000)
        announced = await page.evaluate("window.announced")
        committed = await page.text_content("#committed")
        partials = await page.evaluate("window.rtlab.messages.filter((m) => m.type === 'transcript' && m.partial).length")
    assert partials, "the page had no provisional text to keep quiet"
    assert announced and all(a["kind"] == "childList" and not a["removed"] for a in announced), announced
    assert "".join(a["text"] for a in announced) == committed, (announced, committed)
    assert not await settle(running, ffmpeg_children)


async def test_a_busy_server_is_retried_ever_less_often(make_server, tmp_path, ffmpeg_children):
    """A server at --max-connections refuses each retry (server_busy): the page waits
    longer each time (0.5 s, 1 s, 2 s, ...), says so, and Stop ends the retries."""

    running = await make_server(max_connections=1)
    refusals = "window.rtlab.messages.filter((m) => m.error === 'server_busy').length"
    async with chromium_browser(microphone(tmp_path)) as browser:
        holder, _ = await watched_page(browser, running.url)
        await holder.click("#start")
        await holder.wait_for_function("window.rtlab.state === 'running'", timeout=30_000)
        page, _ = await watched_page(browser, running.url)
        await page.click("#start")
        waits = []
        for count in (1, 2, 3):
            await page.wait_for_function(f"{refusals} === {count} && window.rtlab.state === 'reconnecting'", timeout=10_000)
            waits.append(await page.text_content("#status"))
        error = await page.text_content("#error")
        await page.click("#stop")
        await page.wait_for_function("window.rtlab.state === 'idle'", timeout=10_000)
        assert await sockets_closed(page)
        live = await live_microphone_tracks(page)
        await holder.click("#stop")
        await holder.wait_for_function(STOPPED, timeout=30_000)
    assert [w.rsplit("reconnecting in ", 1)[-1] for w in waits] == ["0.5 s", "1.0 s", "2.0 s"], waits
    assert error.startswith("server_busy: the server already has 1 sessions"), error
    assert live == 0
    assert not await settle(running, ffmpeg_children)
