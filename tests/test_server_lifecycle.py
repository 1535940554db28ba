"""Server lifecycle: disconnects at every stage, churn, limits, access, slow clients, shutdown.

Every test that ends connections counts the FFmpeg children of the test process (the
server runs in it) once the server has released the sessions.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from click.testing import CliRunner
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

import rtlab.core.processor
import rtlab.errors
from rtlab.core.instances import get_backend
from rtlab.cli import cli
from rtlab.server import protocol
from rtlab.server.client import TranscriptionClient
from server_support import Clip, make_clip, settle, split, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def slow_model_load(monkeypatch):
    """Model loading takes 0.8 s (in the executor thread, as a real load would)."""
    original = rtlab.core.processor.ensure_loaded

    def slow(backend):
        time.sleep(0.8)
        return original(backend)

    monkeypatch.setattr(rtlab.core.processor, "ensure_loaded", slow)


@pytest.fixture
def slow_backend(monkeypatch):
    """The shared tone backend computes at 0.3 x real time, so a flush takes a while."""
    monkeypatch.setattr(get_backend("test"), "compute_rtf", 0.3)


async def drive_to(stage: str, client: TranscriptionClient, clip: Clip, ffmpeg_children) -> None:
    """Bring a fresh connection to ``stage`` of a session's life."""
    if stage == "before_start":
        await client.ping()
        await client.wait_for("pong")
        return
    await client.start()
    if stage == "while_loading":
        await client.wait_for("model_loading_started")
        await client.send_audio(clip.webm[:2000])
        return
    await client.wait_for("transcription_started")
    if stage == "after_failure":
        await client.send_audio(os.urandom(30_000))
        await client.stop()
        await client.wait_for("transcription_failed")
        return
    chunks = split(clip.webm)
    for chunk in chunks[: len(chunks) // 2]:
        await client.send_audio(chunk)
    if stage == "mid_stream":
        await client.wait_for("transcript")
        assert len(ffmpeg_children()) == 1
        return
    for chunk in chunks[len(chunks) // 2 :]:
        await client.send_audio(chunk)
    await client.stop()
    if stage == "after_stop":
        await client.wait_for("transcription_stopped")
    # "while_stopping": leave before the flush has finished


STAGES = ["before_start", "while_loading", "mid_stream", "while_stopping", "after_stop", "after_failure"]


@pytest.mark.parametrize("abrupt", [False, True], ids=["close", "drop"])
@pytest.mark.parametrize("stage", STAGES)
async def test_disconnect_at_any_stage_leaves_no_ffmpeg(
    request, server, clip, ffmpeg_children, stage, abrupt
):
    if stage == "while_loading":
        request.getfixturevalue("slow_model_load")
    if stage == "while_stopping":
        request.getfixturevalue("slow_backend")
    client = await TranscriptionClient.connect(server.ws_url)
    await drive_to(stage, client, clip, ffmpeg_children)
    if abrupt:
        client.abort()
    else:
        await client.close()
    assert await wait_until(lambda: not server.server.sessions)
    assert not await settle(server, ffmpeg_children)
    if stage == "while_loading":
        await asyncio.sleep(1.0)  # the load finishes after the client left: still no FFmpeg
        assert ffmpeg_children() == []
    assert server.server.health()["transcribing"] == 0


async def test_connect_disconnect_churn_leaves_nothing_behind(server, clip, ffmpeg_children):
    """60 connections in waves of 10, each dropped or closed at a random stage."""
    rng = random.Random(7)
    fds_before = psutil.Process().num_fds()

    async def one_cycle(stage: str, abrupt: bool) -> None:
        client = await TranscriptionClient.connect(server.ws_url)
        await drive_to(stage, client, clip, ffmpeg_children=lambda: [None])
        client.abort() if abrupt else await client.close()

    stages = ["before_start", "mid_stream", "while_stopping", "after_stop", "after_failure"]
    for _ in range(6):
        await asyncio.gather(
            *(one_cycle(rng.choice(stages), rng.random() < 0.5) for _ in range(10))
        )
    assert await wait_until(lambda: not server.server.sessions)
    assert not await settle(server, ffmpeg_children)
    assert psutil.Process().num_fds() <= fds_before + 10  # pipes and sockets are closed


async def test_start_stop_start_while_the_model_loads_gives_two_utterances(
    server, clip, second_clip, slow_model_load, ffmpeg_children
):
    client = await TranscriptionClient.connect(server.ws_url)
    for utterance in (clip, second_clip):
        await client.start()
        for chunk in split(utterance.webm):
            await client.send_audio(chunk)
        await client.stop()
    first_stop = await client.wait_for("transcription_stopped")
    second_stop = await client.wait_for("transcription_stopped")
    assert (first_stop["text"], second_stop["text"]) == (clip.text, second_clip.text)
    await client.close()
    assert not await settle(server, ffmpeg_children)


async def test_audio_after_a_stop_while_the_model_loads_is_refused(server, clip, slow_model_load):
    """As while transcribing: the stop ends the utterance at the audio sent before it."""
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start()
    await client.wait_for("model_loading_started")
    await client.stop()
    for chunk in split(clip.webm):
        await client.send_audio(chunk)
    assert (await client.wait_for("error"))["error"] == "not_started"
    assert (await client.wait_for("transcription_stopped"))["text"] == ""
    await client.close()


# -- limits and access -----------------------------------------------------------------


async def test_connections_past_the_limit_are_refused_with_1013(make_server):
    running = await make_server(max_connections=2)
    first = await TranscriptionClient.connect(running.ws_url)
    second = await TranscriptionClient.connect(running.ws_url)
    third = await TranscriptionClient.connect(running.ws_url)
    refusal = await third.wait_for("transcription_failed")
    assert refusal["error"] == "server_busy" and "--max-connections 2" in refusal["message"]
    await third.wait_closed()
    assert third.close_code == 1013
    await first.close()
    assert await wait_until(lambda: len(running.server.sessions) == 1)
    fourth = await TranscriptionClient.connect(running.ws_url)
    await fourth.ping()
    await fourth.wait_for("pong")
    assert 'rtlab_rejected_connections_total{reason="server_busy"} 1.0' in running.server.metrics.exposition().decode()
    await second.close()
    await fourth.close()


@pytest.mark.parametrize("how", ["missing", "wrong", "query", "header"])
async def test_token_is_required_when_configured(make_server, how):
    running = await make_server(token="s3cret")
    url = running.ws_url + ("?token=s3cret" if how == "query" else "?token=nope" if how == "wrong" else "")
    client = await TranscriptionClient.connect(url, token="s3cret" if how == "header" else None)
    if how in ("missing", "wrong"):
        refusal = await client.wait_for("transcription_failed")
        assert refusal["error"] == "unauthorized" and "token" in refusal["message"]
        await client.wait_closed()
        assert client.close_code == 1008
    else:
        await client.ping()
        await client.wait_for("pong")
        await client.close()


@pytest.mark.parametrize(
    "origin, allowed, accepted",
    [
        ("http://evil.example", (), False),
        ("http://app.example", ("http://app.example",), True),
        ("http://evil.example", ("*",), True),
        ("same", (), True),
    ],
)
async def test_browser_origins_are_checked(make_server, origin, allowed, accepted):
    running = await make_server(allowed_origins=allowed)
    if origin == "same":
        origin = running.url
    request = HTTPRequest(running.ws_url, headers={"Origin": origin})
    if accepted:
        connection = await websocket_connect(request)
        connection.close()
    else:
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(request)
        assert refused.value.code == 403


async def test_idle_connections_are_closed_with_a_reason(make_server, ffmpeg_children):
    running = await make_server(idle_timeout=0.5)
    client = await TranscriptionClient.connect(running.ws_url)
    await client.start()
    await client.wait_for("transcription_started")
    failed = await client.wait_for("transcription_failed", timeout=10)
    assert failed["error"] == "idle_timeout"
    await client.wait_closed()
    assert client.close_code == 1000
    assert not await settle(running, ffmpeg_children)


# -- slow clients ----------------------------------------------------------------------


class StalledConnection:
    """A WebSocket whose client does not read until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[dict] = []
        self.closed_with = None

    async def write_message(self, message: str, binary: bool = False) -> None:
        await self.gate.wait()
        self.sent.append(json.loads(message))

    def close(self, code=None, reason=None) -> None:
        self.closed_with = (code, reason)


async def test_slow_client_is_bounded_and_never_loses_committed_text(make_server):
    running = await make_server(max_queued_messages=4, max_events=8)
    words = " ".join(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"] * 20)
    long_clip = make_clip(words)  # 80 s of audio, more than the pipeline holds
    connection = StalledConnection()
    session = running.server.open_session(connection)
    # So that 4 queued messages hold at most 16 words.
    session.outbox.merge = functools.partial(protocol.merge_transcripts, max_words=4)
    await session.receive(json.dumps({"type": "start_transcription", "format": "pcm_s16le"}))

    chunks = split(long_clip.pcm, 800)  # 0.1 s each
    fed = 0

    async def feed() -> None:  # one frame after the other, as Tornado delivers them
        nonlocal fed
        for chunk in chunks:
            await session.receive(chunk)
            fed += 1
            await asyncio.sleep(0.005)  # 20 x real time: the processor runs many passes

    feeding = asyncio.ensure_future(feed())
    largest, last_fed, still_since = 0, -1, time.monotonic()
    while time.monotonic() - still_since < 0.5 and not feeding.done():  # until input stalls
        largest = max(largest, len(session.outbox))
        if fed != last_fed:
            last_fed, still_since = fed, time.monotonic()
        await asyncio.sleep(0.01)
    assert fed < len(chunks), "backpressure should reach the audio input"
    assert largest <= 4
    connection.gate.set()
    await feeding
    await session.receive(json.dumps({"type": "stop_transcription"}))
    assert await wait_until(lambda: any(m["type"] == "transcription_stopped" for m in connection.sent), 30)
    committed = [w["text"] for m in connection.sent if m["type"] == "transcript" for w in m["committed"]]
    stopped = next(m for m in connection.sent if m["type"] == "transcription_stopped")
    # Every word the processor committed reached the client. (Compared with the summary,
    # not the source words: after a 30 s backlog the policy's overload guard may cut a word.)
    assert " ".join(committed) == stopped["text"]
    assert len(committed) >= len(words.split()) - 2
    running.server.close_session(session)


# -- shutdown --------------------------------------------------------------------------


async def test_stopping_the_server_tells_clients_and_leaves_no_ffmpeg(make_server, clip, ffmpeg_children):
    running = await make_server()
    streaming = await TranscriptionClient.connect(running.ws_url)
    idle = await TranscriptionClient.connect(running.ws_url)
    await streaming.start()
    await streaming.wait_for("transcription_started")
    for chunk in split(clip.webm)[:5]:
        await streaming.send_audio(chunk)
    await streaming.wait_for("transcript")
    await running.stop()
    assert (await streaming.wait_for("transcription_stopped", "transcription_failed"))["type"] == "transcription_stopped"
    assert (await idle.wait_for("transcription_failed"))["error"] == "server_shutdown"
    for client in (streaming, idle):
        await client.wait_closed()
        assert client.close_code == 1001
    assert ffmpeg_children() == []


def test_serve_command_is_registered():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--host", "--port", "--backend", "--model", "--max-connections", "--token", "--allowed-origin"):
        assert flag in result.output


async def test_sigterm_flushes_sessions_and_leaves_no_ffmpeg(clip):
    command = [sys.executable, "-c", "from rtlab.cli import cli; cli()",
               "serve", "--port", "0", "--backend", "test", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.get_running_loop().run_in_executor(None, process.stdout.readline)
        url = re.search(r"\(WebSocket (ws://\S+)\)", line).group(1)
        streaming = await TranscriptionClient.connect(url)
        idle = await TranscriptionClient.connect(url)
        await streaming.start()
        await streaming.wait_for("transcription_started")
        for chunk in split(clip.webm)[:5]:
            await streaming.send_audio(chunk)
        await streaming.wait_for("transcript")
        children = [p for p in psutil.Process(process.pid).children() if "ffmpeg" in p.name()]
        assert len(children) == 1
        process.send_signal(signal.SIGTERM)
        assert (await streaming.wait_for("transcription_stopped", "transcription_failed"))["type"] == "transcription_stopped"
        assert (await idle.wait_for("transcription_failed"))["error"] == "server_shutdown"
        await streaming.wait_closed()
        assert streaming.close_code == 1001
        returncode = await asyncio.get_running_loop().run_in_executor(None, process.wait, 20)
        assert returncode == 0
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["-p", "bogus=1"], "does not accept option 'bogus'"),
        (["--policy-option", "deadline_sec=-1"], "deadline_sec must be a number of seconds > 0"),
        (["-p", "min_chunk=0"], "needs min_chunk > 0"),
        (["--backend-option", "nope=2"], "does not accept option 'nope'"),
        (["--policy", "no-such-policy"], "no-such-policy"),
        (["--port", "99999"], "99999 is not in the range 0<=x<=65535"),  # bound 99999 % 65536 before
        (["--token", " "], "the token is empty (is RTLAB_TOKEN set to nothing?)"),  # was: no token at all
    ],
)
def test_serve_refuses_bad_policy_and_backend_options_at_start_up(flags, message):
    result = CliRunner().invoke(cli, ["serve", "--port", "0", "--backend", "test", *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_serve_refuses_an_empty_rtlab_token_variable():
    # Click drops an empty environment variable, which made RTLAB_TOKEN= a server without a token.
    result = CliRunner().invoke(cli, ["serve", "--port", "0", "--backend", "test"], env={"RTLAB_TOKEN": ""})
    assert result.exit_code == 2, result.output
    assert "the token is empty (is RTLAB_TOKEN set to nothing?)" in result.output


def test_a_server_open_to_the_network_without_a_token_is_told_apart():
    from rtlab.server.config import ServerConfig

    assert ServerConfig(host="0.0.0.0").open_to_the_network
    assert not ServerConfig(host="0.0.0.0", token="s3cret").open_to_the_network
    assert not any(ServerConfig(host=host).open_to_the_network for host in ("127.0.0.1", "localhost", "::1"))
    with pytest.raises(rtlab.errors.InvalidOption, match="port must be a whole number from 0"):
        ServerConfig(port=65536)
