"""The demo page over a long stretch of use, in a real Chromium against a real server: a
backend list that goes stale, earlier sessions' transcripts, audio recorded while the
connection is down, and a transcript that outgrows what the page shows or keeps.

The helpers (Chromium's flags, the fake microphone) are test_browser's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from rtlab.config import StreamConfig
from rtlab.server import ServerConfig, start_server
from rtlab.server.session import TranscriptionSession
from rtlab.testing import tone_words, wav_bytes
from server_support import settle
from test_browser import chromium_browser, open_demo_page, padded_wav

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STOPPED = "window.rtlab.messages.some(m => m.type === 'transcription_stopped')"
OFFERED = "(selector) => Array.from(document.querySelectorAll(selector + ' option'), (o) => o.value)"


def microphone(tmp_path: Path, text: str = "alpha bravo charlie") -> Path:
    return padded_wav(wav_bytes(tone_words(text)[0]), tmp_path / "microphone.wav")


async def lose_the_server(page, server, seconds: float) -> None:
    """Start transcribing on ``page``; once "bravo" is committed, stop ``server`` under it,
    and wait until the page is reconnecting and ``seconds`` more (the page retries after
    0.5 s, 1 s, 2 s, then 4 s)."""
    await page.click("#start")
    await page.wait_for_function("document.querySelector('#committed').textContent.includes('bravo')", timeout=30_000)
    await server.stop()
    await page.wait_for_function("window.rtlab.state === 'reconnecting'", timeout=30_000)
    await asyncio.sleep(seconds)


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


async def test_every_script_of_the_page_loads_and_runs(make_server):
    """The page's script is app.js and the modules it imports: Chromium loads every one of
    them from the server and runs them without an uncaught error, and window.rtlab offers
    the bounds a user or a test may change, with their defaults."""
    from rtlab.server.app import STATIC_DIR

    running = await make_server()
    async with chromium_browser() as browser:
        page = await browser.new_page()
        loaded, errors = {}, []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("requestfailed", lambda request: errors.append(f"{request.url}: {request.failure}"))
        page.on("response", lambda response: loaded.__setitem__(response.url.rsplit("/", 1)[-1], response.status)
                if response.request.resource_type == "script" else None)  # fmt: skip
        await page.goto(running.url + "/")
        await page.wait_for_function("window.rtlab.backends !== null", timeout=10_000)
        bounds = await page.evaluate(
            "[rtlab.maxMessages, rtlab.maxShownChars, rtlab.maxKeptChars, rtlab.maxHeldSeconds, rtlab.maxResendSpeed, rtlab.backendRetryMs]"
        )
    assert loaded == {file.name: 200 for file in STATIC_DIR.glob("*.js")}, loaded
    assert errors == []
    assert bounds == [1000, 20000, 1000000, 30, 2, [1000, 2000, 4000, 8000, 15000]], bounds


async def download_text(page) -> str:
    """What the Download button saves."""
    async with page.expect_download() as started:
        await page.click("#download")
    download = await started.value
    return Path(await download.path()).read_text()


async def test_earlier_sessions_stay_on_the_page_until_clear(make_server, tmp_path, ffmpeg_children):
    """Start after Stop keeps the finished session's words above the new one (before, Start
    erased them); Download and Copy give both sessions, and Clear empties the page."""

    running = await make_server()
    started = "window.rtlab.messages.filter((m) => m.type === 'transcription_started').length"
    stopped = "window.rtlab.messages.filter((m) => m.type === 'transcription_stopped').length"
    async with chromium_browser(microphone(tmp_path)) as browser:
        context = await browser.new_context()
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=running.url)
        page = await context.new_page()
        await page.goto(running.url + "/")
        await page.wait_for_function("window.rtlab.backends !== null")
        for count in (1, 2):  # the fake microphone plays its clip again for each Start
            await page.click("#start")
            await page.wait_for_function(f"{started} === {count}", timeout=30_000)
            await page.wait_for_function("document.querySelector('#committed').textContent.includes('charlie')", timeout=30_000)
            await page.click("#stop")
            await page.wait_for_function(f"{stopped} === {count}", timeout=30_000)
        box = await page.inner_text("#transcript")
        assert box.count("alpha bravo charlie") == 2 and "Session 1 · started" in box, box
        earlier = await page.evaluate("Array.from(document.querySelectorAll('#history .session'), (s) => s.innerText)")
        current = (await page.inner_text("#session-title"), await page.text_content("#committed"))
        saved = await download_text(page)
        await page.click("#copy")
        await page.wait_for_function("document.querySelector('#transcript-note').textContent === 'Copied.'")
        copied = await page.evaluate("navigator.clipboard.readText()")
        await page.click("#clear")
        cleared = (await page.inner_text("#transcript"), await page.text_content("#word-count"), await download_text(page))
    assert len(earlier) == 1 and earlier[0].startswith("Session 1 · started"), earlier
    assert earlier[0].endswith("alpha bravo charlie"), earlier
    assert current[0].startswith("Session 2 · started") and current[1] == "alpha bravo charlie", current
    blocks = saved.strip().split("\n\n")
    assert [b.split("\n")[1] for b in blocks] == ["alpha bravo charlie"] * 2, saved
    assert [b.split(" · ")[0] for b in blocks] == ["Session 1", "Session 2"], saved
    assert copied == saved
    assert cleared == ("", "0", "\n"), cleared
    assert not await settle(running, ffmpeg_children)


LONG_TEXT = " ".join(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"] * 3)


async def test_a_long_transcript_is_bounded_on_the_page_and_in_what_it_keeps(make_server, tmp_path, ffmpeg_children):
    """The box shows at most rtlab.maxShownChars of transcript (the earlier session leaves
    first, then the oldest words) and says how many words it no longer shows; Download has
    at most rtlab.maxKeptChars and says how many words it dropped (before, every word of
    every session stayed in the page)."""

    running = await make_server()
    async with chromium_browser(microphone(tmp_path, LONG_TEXT)) as browser:
        page, _ = await open_demo_page(browser, running.url)
        await page.evaluate("window.rtlab.maxShownChars = 60; window.rtlab.maxKeptChars = 150")
        await page.click("#start")  # a first session of a few words
        await page.wait_for_function("document.querySelector('#committed').textContent.includes('charlie')", timeout=30_000)
        await page.click("#stop")
        await page.wait_for_function(STOPPED, timeout=30_000)
        await page.click("#start")  # then the whole clip
        await page.wait_for_function(
            "window.rtlab.messages.filter((m) => m.type === 'transcript').flatMap((m) => m.committed).length"
            f" >= {len(LONG_TEXT.split()) + 3}",
            timeout=60_000,
        )
        await page.click("#stop")
        await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
        messages = await page.evaluate("window.rtlab.messages")
        box = await page.inner_text("#transcript")
        committed = await page.text_content("#committed")
        words = [w["text"] for m in messages if m["type"] == "transcript" for w in m["committed"]]
        assert "Session 1" not in box and len(committed) <= 60, box  # the bound, before the rest
        note = await page.text_content("#trimmed")
        saved = await download_text(page)
    assert committed.split() == words[-len(committed.split()):], (committed, words)
    hidden = len(words) - len(committed.split())
    assert note.startswith(f"{hidden} earlier words are not shown here; Copy and Download have all but the first "), note
    first_line, *blocks = saved.strip().split("\n\n")
    dropped = int(first_line.split()[2])
    assert first_line == f"[the first {dropped} words are not here: the page keeps the latest 150 characters]", saved
    assert len(blocks) == 1 and blocks[0].startswith("Session 2 · started"), saved
    kept = blocks[0].split("\n")[1].split()
    assert len(saved) <= 150 + 120 and kept == words[dropped:], (saved, words)
    assert f"all but the first {dropped} " in note, note
    assert not await settle(running, ffmpeg_children)


OUTAGE_TEXT = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa"
HELD = "document.querySelector('#held')?.textContent"
GAP = """() => Array.from(document.querySelectorAll('#committed .gap'), (g) => [g.textContent, g.dataset.lostSeconds])"""


async def committed_words(page) -> list[str]:
    return await page.evaluate(
        "window.rtlab.messages.filter((m) => m.type === 'transcript').flatMap((m) => m.committed.map((w) => w.text))"
    )


@pytest.mark.parametrize("held", [30, 1])
async def test_audio_recorded_while_the_connection_is_down_is_sent_after_the_reconnect(make_server, tmp_path, ffmpeg_children, held):
    """The server goes away mid-sentence and comes back seconds later: the page records
    meanwhile and sends what it held once it transcribes again, so the words said during
    the outage are transcribed; the transcript marks the break with the seconds of audio
    lost there (what the old server had not transcribed, and what was over
    rtlab.maxHeldSeconds). Before, everything said while the connection was down was
    lost, and nothing said so."""

    first = await make_server(shutdown_grace=0.0)
    again = None
    try:
        async with chromium_browser(microphone(tmp_path, OUTAGE_TEXT)) as browser:
            page, _ = await open_demo_page(browser, first.url)
            await page.evaluate(f"window.rtlab.maxHeldSeconds = {held}")
            await lose_the_server(page, first, 2.5)
            again = await start_server(ServerConfig(port=first.port, stream=StreamConfig(backend="test")))
            await page.wait_for_function("document.querySelector('#committed').textContent.includes('papa')", timeout=60_000)
            await page.click("#stop")
            await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
            gaps = await page.evaluate(GAP)
            words = await committed_words(page)
    finally:
        if again is not None:
            await again.stop()
    assert len(gaps) == 1, gaps
    (text, lost), = gaps
    after = float(text.split(" for ", 1)[1].split(" s:")[0])
    assert text == f"[connection lost for {after:.1f} s: about {lost} s of audio is missing here]", text
    spoken = OUTAGE_TEXT.split()
    assert words == [w for w in spoken if w in words], words  # in order, none twice
    missing = [w for w in spoken if w not in words]
    assert after >= 2.5, text
    if held == 30:  # the outage was held: only what the old server had not transcribed is lost
        assert float(lost) <= after - 1.0 and len(missing) <= 2 * float(lost) + 1, (text, missing)
    else:  # held for a second at most: the rest of the outage is lost
        assert after - 1.0 - 1.0 <= float(lost) <= after + 2.0, text
        assert len(missing) >= 2 * (after - 2.0), (text, missing)
    assert not ffmpeg_children()


async def test_audio_held_during_an_outage_is_sent_paced_not_in_one_burst(make_server, tmp_path, ffmpeg_children, monkeypatch):
    """After a reconnect the page sends the audio it held at most rtlab.maxResendSpeed (2)
    times faster than real time, the live audio queued behind it, and shows how much it
    still holds until it has caught up; every word said during the outage is transcribed.
    Before, the held audio (up to rtlab.maxHeldSeconds, 30 s) went out at once: a burst
    that the server takes in one pass, its lag jumping by the whole outage.

    The server records when each audio frame arrives. Pacing only ever delays frames, so
    the bounds below are lower bounds on time, far from what pacing gives."""

    arrivals: list[tuple[object, float]] = []
    receive = TranscriptionSession.receive

    async def recorded(self, frame):
        if isinstance(frame, bytes):
            arrivals.append((self.server, time.monotonic()))
        await receive(self, frame)

    monkeypatch.setattr(TranscriptionSession, "receive", recorded)
    first = await make_server(shutdown_grace=0.0)
    again = None
    wav = padded_wav(wav_bytes(tone_words(OUTAGE_TEXT)[0]), tmp_path / "microphone.wav", after=12.0)
    try:
        async with chromium_browser(wav) as browser:
            page, _ = await open_demo_page(browser, first.url)
            await lose_the_server(page, first, 4.0)  # about 7.5 s held
            holding = await page.evaluate(HELD)
            again = await start_server(ServerConfig(port=first.port, stream=StreamConfig(backend="test")))
            await page.wait_for_function("document.querySelector('#committed').textContent.includes('papa')", timeout=60_000)
            await page.wait_for_function(f"{HELD} === '–'", timeout=60_000)  # caught up
            await asyncio.sleep(1.0)
            await page.click("#stop")
            await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
            words = await committed_words(page)
    finally:
        if again is not None:
            await again.stop()
    times = [at for server, at in arrivals if again is not None and server is again.server]
    # Slices come every 250 ms or more: over 7 s held, then live ones.
    assert len(times) >= 28, len(times)
    busiest = max(sum(1 for other in times if at <= other < at + 1.0) for at in times)
    # At 2x real time a second brings 8 slices; a burst brought every held one at once.
    assert busiest <= 16, (busiest, [round(at - times[0], 2) for at in times])
    # 24 slices are 6 s of audio: 3 s at 2x; a burst took a few milliseconds.
    assert times[23] - times[0] >= 1.5, [round(at - times[0], 2) for at in times]
    assert holding is not None and holding.endswith(" s") and float(holding[:-2]) >= 3.0, holding
    spoken = OUTAGE_TEXT.split()
    # In order, none twice; the last words were said during the outage, and none of them
    # is lost (those the old server had not transcribed when it went may be).
    assert words == [w for w in spoken if w in words] and set(spoken[-6:]) <= set(words), words
    assert not ffmpeg_children()


async def test_stop_while_the_page_catches_up_sends_what_it_still_holds(make_server, tmp_path, ffmpeg_children):
    """Stop pressed while held audio still waits for its turn: the rest goes out before
    stop_transcription, and the server transcribes it in its flush (pacing must not lose
    the words said during the outage)."""

    first = await make_server(shutdown_grace=0.0)
    again = None
    started = "window.rtlab.messages.filter((m) => m.type === 'transcription_started').length"
    try:
        async with chromium_browser(microphone(tmp_path, OUTAGE_TEXT)) as browser:
            page, _ = await open_demo_page(browser, first.url)
            await page.evaluate("window.rtlab.maxResendSpeed = 1.1")  # 3.5 s held: 35 s to catch up
            await lose_the_server(page, first, 2.5)
            again = await start_server(ServerConfig(port=first.port, stream=StreamConfig(backend="test")))
            await page.wait_for_function(f"{started} === 2", timeout=30_000)
            holding = await page.evaluate(HELD)
            await page.click("#stop")
            await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
            messages = await page.evaluate("window.rtlab.messages")
            after = await page.evaluate(HELD)
    finally:
        if again is not None:
            await again.stop()
    resumed = [i for i, m in enumerate(messages) if m["type"] == "transcription_started"][1]
    words = [w["text"] for m in messages[resumed:] if m["type"] == "transcript" for w in m["committed"]]
    assert float(holding.removesuffix(" s")) >= 2.0 and after == "–", (holding, after)
    # Over 3.5 s held, a word every 0.5 s; at 1.1x, the half second before Stop sent one.
    assert len(words) >= 4, words
    assert not ffmpeg_children()


async def test_stop_during_an_outage_marks_the_audio_lost(make_server, tmp_path, ffmpeg_children):
    """Stop while the page waits for the server to come back: the transcript says how much
    audio no server got (before, the gap was not marked at all)."""

    first = await make_server(shutdown_grace=0.0)
    async with chromium_browser(microphone(tmp_path, OUTAGE_TEXT)) as browser:
        page, _ = await open_demo_page(browser, first.url)
        await lose_the_server(page, first, 2.0)
        await page.click("#stop")
        await page.wait_for_function("window.rtlab.state === 'idle'", timeout=30_000)
        gaps = await page.evaluate(GAP)
        kept = await download_text(page)
    assert len(gaps) == 1, gaps
    (text, lost), = gaps
    assert text == f"[connection lost: about {lost} s of audio is missing here]" and float(lost) >= 2.0, text
    assert text in kept, kept
    assert not ffmpeg_children()


#: Before the page's own scripts: every microphone stream it opens, to see its tracks end.
TRACK_STREAMS = """
window.__streams = [];
const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const media = await open(constraints);
  window.__streams.push(media);
  return media;
};
"""
LIVE_TRACKS = "window.__streams.flatMap(m => m.getTracks()).filter(t => t.readyState === 'live').length"


async def test_a_connection_closed_for_good_without_a_message_releases_the_microphone(make_server, tmp_path):
    """A close the page does not retry (1008) with no transcription_failed before it: the
    page goes idle and the microphone is released (before, the page stayed wanting to run,
    so the microphone stayed on while the page read idle)."""

    running = await make_server()
    async with chromium_browser(microphone(tmp_path)) as browser:
        page = await browser.new_page()
        await page.add_init_script(TRACK_STREAMS)

        async def refuse_after_start(ws):
            ws.on_message(lambda message: asyncio.ensure_future(ws.close(code=1008, reason="policy")))

        await page.route_web_socket("**/ws/transcribe*", refuse_after_start)
        await page.goto(running.url + "/")
        await page.wait_for_function("window.rtlab.backends !== null")
        await page.click("#start")
        await page.wait_for_function("window.__streams.length === 1", timeout=10_000)
        await page.wait_for_function("window.rtlab.state === 'idle'", timeout=10_000)
        await page.wait_for_function(f"{LIVE_TRACKS} === 0", timeout=5_000)
        status = await page.text_content("#status")
        await asyncio.sleep(1.5)  # no reconnect is scheduled: still idle, no new microphone
        state, opened = await page.evaluate("[window.rtlab.state, window.__streams.length]")
    assert "code 1008" in status, status
    assert (state, opened) == ("idle", 1)


async def test_a_word_that_joins_the_one_before_goes_on_it_on_the_page_and_in_the_download(make_server):
    """The rest of a word heard over a committed one ("joins") is written on to it: in the
    transcript shown and in what Download saves, also when it comes in a later message."""
    running = await make_server()
    async with chromium_browser() as browser:
        page = await browser.new_page()
        await page.goto(running.url + "/")
        await page.wait_for_function("window.rtlab.backends !== null", timeout=10_000)
        await page.evaluate(
            """async () => {
                const transcript = await import("/static/transcript.js");  // the page's own module
                transcript.beginSession();
                const word = (text, start, joins) => ({ text, start, end: start + 0.3, ...(joins ? { joins } : {}) });
                const message = (committed) => ({ type: "transcript", committed, partial: "", emitted_at: 1, lag: 0 });
                transcript.showTranscript(message([word("der", 0), word("Unabhängigkeit", 0.3)]));
                transcript.showTranscript(message([word("serklärung", 0.6, true), word("von", 0.9), word("25", 1.2)]));
                transcript.showTranscript(message([word("-30", 1.5, true), word("Jahren.", 1.8)]));
            }"""
        )
        # A partial text that goes on from the last committed word is shown on to it.
        partial = """(joins) => import("/static/transcript.js").then((transcript) => transcript.showTranscript(
                       { type: "transcript", committed: [], partial: joins ? "s" : "alt", emitted_at: 2, lag: 0,
                         ...(joins ? { partial_joins: true } : {}) }))"""
        await page.evaluate(partial, True)
        on_it = await page.evaluate("() => document.getElementById('committed').textContent + document.getElementById('partial').textContent")
        await page.evaluate(partial, False)
        after_it = await page.evaluate("() => document.getElementById('committed').textContent + document.getElementById('partial').textContent")
        assert on_it.endswith("Jahren.s") and after_it.endswith("Jahren. alt"), (on_it, after_it)
        await page.evaluate("""() => import("/static/transcript.js").then((t) => t.clearPartial())""")
        shown = await page.text_content("#committed")
        count = await page.text_content("#word-count")
        saved = await download_text(page)
    assert shown == "der Unabhängigkeitserklärung von 25-30 Jahren.", shown
    assert count == "5", count
    assert saved.splitlines()[1] == shown, saved
