"""The server against hostile and careless clients: what a client may make it load, flood
and hold, what the operator is told, and a shutdown that never waits on a stuck pass.

Every case is bounded in count and time and runs on 127.0.0.1 with the tone backend and
real FFmpeg; the fuzz test (hypothesis) checks that every message gets a well-formed reply
and that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading

import psutil
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClosedError, websocket_connect

from rtlab.cli import cli
from rtlab.backends import Backend
from rtlab.config import StreamConfig
from rtlab.core.instances import get_backend
from rtlab.core.scheduler import scheduler_for
from rtlab.errors import BackendUnavailable
from rtlab.server.client import TranscriptionClient
from server_support import settle, split, wait_until

pytestmark = pytest.mark.timeout(90)


async def fetch(url: str, **headers: str):
    return await AsyncHTTPClient().fetch(HTTPRequest(url, headers=headers), raise_error=False)


async def start_reply(client: TranscriptionClient, **fields) -> dict:
    """``start_transcription`` with ``fields``; the reply that decides it."""
    await client.start(**fields)
    return await client.wait_for("transcription_started", "transcription_failed")


# -- 1. what a client may choose -------------------------------------------------------


async def test_model_names_outside_the_allow_list_are_refused_and_load_nothing(server):
    """A client spraying model names (paths, hub names, made-up ones) gets not_allowed
    naming what is allowed, and the server creates no backend for them."""
    client = await TranscriptionClient.connect(server.ws_url)
    names = ["tiny.en", "/etc", "../models", "Systran/faster-whisper-large-v3"] + [f"m{i}" for i in range(20)]
    for name in names:
        refusal = await start_reply(client, model=name)
        assert refusal["type"] == "transcription_failed" and refusal["error"] == "not_allowed", refusal
        assert "allowed: tones" in refusal["message"] and "--allow-models" in refusal["message"]
    assert not [m for m in client.messages if m["type"] == "model_loading_started"]
    health = json.loads((await fetch(server.url + "/healthz")).body)
    assert [m["model"] for m in health["loaded_models"]] == ["tones"]
    await client.close()


async def test_another_backend_or_policy_is_refused_unless_allowed(make_server):
    running = await make_server()
    client = await TranscriptionClient.connect(running.ws_url)
    # faster-whisper on a test-backend server: refused before anything is imported or loaded.
    assert (await start_reply(client, backend="faster-whisper"))["error"] == "not_allowed"
    assert (await start_reply(client, policy="vad-utterance"))["error"] == "not_allowed"
    await client.close()


async def test_allowed_names_are_served_and_a_wildcard_reaches_the_registry(make_server, clip):
    running = await make_server(allow_models=("alt",), allow_backends=("*",), allow_policies=("*",))
    client = await TranscriptionClient.connect(running.ws_url)
    started = await start_reply(client, model="alt", format="pcm_s16le")
    assert started["type"] == "transcription_started" and started["model"] == "alt"
    for chunk in split(clip.pcm):
        await client.send_audio(chunk)
    await client.stop()
    assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
    assert (await start_reply(client, backend="nope"))["error"] == "unknown_backend"
    assert (await start_reply(client, policy="nope"))["error"] == "unknown_policy"
    assert (await start_reply(client, model="other"))["error"] == "not_allowed"
    allowed = json.loads((await fetch(running.url + "/api/backends")).body)["allowed"]
    assert allowed == {"backends": ["test", "*"], "models": ["tones", "alt"], "policies": ["local-agreement", "*"]}
    await client.close()


@pytest.mark.parametrize("field", ["backend", "model", "language", "policy", "format"])
async def test_a_huge_start_field_is_refused_without_being_echoed(make_server, field, ffmpeg_children):
    """Error messages quote a field back (the registry's unknown_backend, a backend's
    language check): a 100 000-character one is refused in a short line instead."""
    running = await make_server(allow_backends=("*",), allow_policies=("*",))
    client = await TranscriptionClient.connect(running.ws_url)
    refusal = await start_reply(client, **{field: "x" * 100_000})
    assert refusal["type"] == "transcription_failed" and refusal["error"] == "invalid_message", refusal["error"]
    assert len(refusal["message"]) < 300 and "at most 256" in refusal["message"]
    assert (await start_reply(client, format="pcm_s16le"))["type"] == "transcription_started"
    await client.close()
    assert not await settle(running, ffmpeg_children)


async def test_naming_the_default_model_shares_the_loaded_one(server):
    client = await TranscriptionClient.connect(server.ws_url)
    assert (await start_reply(client, model="tones"))["type"] == "transcription_started"
    [session] = server.server.sessions
    [utterance] = session.utterances
    assert utterance.processor.backend is get_backend(server.server.config.stream)
    await client.close()


@pytest.mark.parametrize(
    "flags, message",
    [(["--allow-models", "*"], "not '*'"), (["--allow-backends", "test,nope"], "nope"),
     (["--allow-policies", "nope"], "nope")],
)  # fmt: skip
def test_serve_refuses_bad_allow_lists_at_start_up(flags, message):
    result = CliRunner().invoke(cli, ["serve", "--port", "0", "--backend", "test", *flags])
    assert result.exit_code == 2 and message in result.output, result.output


# -- 2. rate and queue bounds ------------------------------------------------------------


async def test_a_start_stop_flood_queues_one_utterance_then_the_connection_is_closed(
    make_server, ffmpeg_children
):
    running = await make_server()
    client = await TranscriptionClient.connect(running.ws_url)
    with pytest.raises(WebSocketClosedError):
        for _ in range(5000):  # control messages in one burst, until the server closes
            await client.start()
            await client.stop()
            await asyncio.sleep(0)
    await client.wait_closed(timeout=30)
    assert client.close_code == 1008
    messages = client.messages
    codes = [m.get("error") for m in messages if m["type"] in ("error", "transcription_failed")]
    assert "queue_full" in codes and "rate_limited" in codes
    assert messages[-1] == {"type": "transcription_failed", "error": "rate_limited", "message": messages[-1]["message"]}
    # Starts are control messages: the rate limit bounds how many utterances a flood makes.
    assert sum(m["type"] == "model_loading_started" for m in messages) <= running.server.config.control_burst
    assert await wait_until(lambda: not running.server.sessions)
    assert not await settle(running, ffmpeg_children)


async def test_a_third_utterance_is_refused_while_two_are_pending(server, clip):
    client = await TranscriptionClient.connect(server.ws_url)
    for _ in range(2):
        await client.start()
        await client.send_audio(clip.webm)
        await client.stop()
    await client.start()
    refused = await client.wait_for("transcription_failed")
    assert refused["error"] == "queue_full" and "transcription_stopped" in refused["message"]
    first = await client.wait_for("transcription_stopped")
    second = await client.wait_for("transcription_stopped")
    assert first["text"] == second["text"] == clip.text
    await client.close()


# -- 3. secrets are never logged ----------------------------------------------------------


async def test_the_access_log_never_shows_the_token(make_server, caplog):
    running = await make_server(token="s3cret-t0ken")
    caplog.set_level(logging.DEBUG)
    good = await TranscriptionClient.connect(running.ws_url + "?token=s3cret-t0ken")
    await good.ping()
    await good.wait_for("pong")
    bad = await TranscriptionClient.connect(running.ws_url + "?token=s3cret-t0ken-wrong")
    await bad.wait_closed()
    for path in ("/?token=s3cret-t0ken", "/healthz?token=s3cret-t0ken", "/nowhere?token=s3cret-t0ken"):
        await fetch(running.url + path)
    await good.close()
    logged = [record.getMessage() for record in caplog.records]
    assert any("/ws/transcribe" in line for line in logged), logged
    assert not [line for line in logged if "s3cret" in line]


# -- 4. slots that cannot be held hostage ---------------------------------------------------


async def test_a_connection_without_a_transcription_is_closed_after_the_start_timeout(make_server, clip):
    running = await make_server(start_timeout=0.5)
    client = await TranscriptionClient.connect(running.ws_url)

    async def ping_for(seconds: float) -> None:  # an active client: only the start timeout applies
        for _ in range(int(seconds / 0.1)):
            if client.closed:
                return
            await client.ping()
            await asyncio.sleep(0.1)

    await client.start(format="pcm_s16le")
    await client.wait_for("transcription_started")
    await ping_for(1.2)  # transcribing: kept open
    assert not client.closed
    await client.send_audio(clip.pcm)
    await client.stop()
    assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
    await ping_for(5.0)  # the clock runs again once the utterance has ended
    closing = await client.wait_for("transcription_failed")
    assert closing["error"] == "start_timeout"
    await client.wait_closed()
    assert client.close_code == 1000
    assert await wait_until(lambda: not running.server.sessions)


async def test_a_silent_connection_frees_its_slot(make_server):
    running = await make_server(start_timeout=0.3, max_connections=1)
    holder = await TranscriptionClient.connect(running.ws_url)
    await holder.wait_closed()
    assert holder.messages[-1]["error"] == "start_timeout"
    assert await wait_until(lambda: not running.server.sessions)
    newcomer = await TranscriptionClient.connect(running.ws_url)
    await newcomer.ping()
    assert (await newcomer.wait_for("pong", "transcription_failed"))["type"] == "pong"
    await newcomer.close()


@pytest.mark.parametrize(
    "unfinished",
    [b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # headers never end (slowloris)
     b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nabc"],  # a body that never comes
    ids=["headers", "body"],
)  # fmt: skip
async def test_unfinished_http_requests_are_closed(make_server, unfinished):
    running = await make_server(http_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(unfinished)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server, no answer
    writer.close()


async def test_a_foreign_host_is_refused_even_with_a_matching_origin(make_server):
    running = await make_server()
    foreign = {"Host": "rebound.example", "Origin": "http://rebound.example"}
    assert (await fetch(running.url + "/healthz", **foreign)).code == 403
    assert (await fetch(running.url + "/", **foreign)).code == 403
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(HTTPRequest(running.ws_url, headers=foreign))
    assert refused.value.code == 403
    assert (await fetch(running.url + "/healthz", Host=f"localhost:{running.port}")).code == 200
    named = await make_server(allowed_hosts=("rebound.example",))
    assert (await fetch(named.url + "/healthz", **foreign)).code == 200


# -- 5. a pass that hangs ------------------------------------------------------------------


@pytest.fixture
def hung_backend(monkeypatch):
    """A backend instance of its own (model "hung") whose passes block until released."""
    backend = get_backend(StreamConfig(backend="test", model="hung"))
    release = threading.Event()

    def transcribe(audio, *, prompt="", language=None):
        release.wait(60)
        return []

    monkeypatch.setattr(backend, "transcribe", transcribe)
    yield backend
    release.set()


async def test_a_hung_pass_is_abandoned_with_backend_timeout_and_reported(make_server, hung_backend, clip):
    running = await make_server(model="hung", pass_deadline=0.5)
    client = await TranscriptionClient.connect(running.ws_url)
    await client.start(format="pcm_s16le")
    await client.wait_for("transcription_started")
    await client.send_audio(clip.pcm)
    await client.stop()  # the flush waits for the hung pass: no longer than its deadline
    failed = await client.wait_for("transcription_failed", "transcription_stopped", timeout=20)
    assert failed["type"] == "transcription_failed" and failed["error"] == "backend_timeout", failed
    response = await fetch(running.url + "/healthz")
    health = json.loads(response.body)
    assert response.code == 503 and health["status"] == "degraded"
    assert health["stuck_passes"] == 1 and "pass deadline" in health["problems"][0]
    assert "rtlab_stuck_passes 1.0" in running.server.metrics.exposition().decode()
    await client.ping()
    await client.wait_for("pong")  # the connection still serves
    await client.close()


class _OneReplica(Backend):
    name = "one-replica"
    cores_per_call = 0

    def transcribe(self, audio, *, prompt="", language=None):
        return []


async def test_the_scheduler_abandons_a_pass_past_its_deadline_and_counts_it_until_it_returns():
    from rtlab.core.scheduler import BackendTimeout, Scheduler, pass_deadline

    scheduler = Scheduler(_OneReplica())  # shared by every session of a backend, in a server
    release = threading.Event()
    token = pass_deadline.set(0.2)
    try:
        with pytest.raises(BackendTimeout, match="did not finish a pass"):
            await scheduler.submit(release.wait, 30)
        assert scheduler.abandoned == 1
        # The stuck call keeps the only replica: the next pass gets no turn in time either.
        with pytest.raises(BackendTimeout, match="no turn"):
            await scheduler.submit(lambda: "late")
    finally:
        pass_deadline.reset(token)
        release.set()
    assert await wait_until(lambda: scheduler.abandoned == 0)
    assert (await scheduler.submit(lambda: "after"))[0] == "after"  # no deadline in this context


def serve_command(*flags: str) -> list[str]:
    return [sys.executable, "-c", "from rtlab.cli import cli; cli()", "serve", "--port", "0",
            "--backend", "test", "--log-level", "warning", *flags]  # fmt: skip


async def start_serve(*flags: str) -> tuple[subprocess.Popen, str, str]:
    process = subprocess.Popen(serve_command(*flags), stdout=subprocess.PIPE, text=True)
    line = await asyncio.get_running_loop().run_in_executor(None, process.stdout.readline)
    found = re.search(r"on (http://\S+)/ \(WebSocket (ws://\S+)\)", line)
    if not found:
        process.kill()
        pytest.fail(f"rtlab serve did not start: {line!r}")
    return process, found.group(1), found.group(2)


@pytest.mark.parametrize("abandoned", [True, False], ids=["after_the_deadline", "before_the_deadline"])
async def test_sigterm_ends_the_process_even_with_a_stuck_backend_thread(clip, abandoned):
    # compute_rtf=1000: a pass over 1 s of audio sleeps 1000 s in a backend thread.
    deadline = "1" if abandoned else "600"
    process, url, ws_url = await start_serve("-b", "compute_rtf=1000", "--pass-deadline", deadline,
                                             "--shutdown-timeout", "3")  # fmt: skip
    try:
        client = await TranscriptionClient.connect(ws_url)
        await client.start()
        await client.wait_for("transcription_started")
        for chunk in split(clip.webm):
            await client.send_audio(chunk)
        if abandoned:
            assert (await client.wait_for("transcription_failed", timeout=30))["error"] == "backend_timeout"
            assert (await fetch(url + "/healthz")).code == 503
        else:
            await asyncio.sleep(1.5)  # a pass is running, and will for 1000 s
        ffmpeg = [p for p in psutil.Process(process.pid).children() if "ffmpeg" in p.name()]
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.get_running_loop().run_in_executor(None, process.wait, 30)
        assert returncode == 0
        if not abandoned:
            assert len(ffmpeg) == 1
            assert (await client.wait_for("transcription_failed"))["error"] == "server_shutdown"
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ffmpeg)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- 6. errors that tell the operator ------------------------------------------------------


async def test_deep_json_gets_invalid_json_and_the_transcription_goes_on(server, clip):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start()
    await client.wait_for("transcription_started")
    chunks = split(clip.webm)
    for chunk in chunks[:4]:
        await client.send_audio(chunk)
    await client.send_text("[" * 100_000 + "]" * 100_000)
    await client.send_text('{"type": "start_transcription", "model": ' + "[" * 50_000 + "]" * 50_000 + "}")
    assert (await client.wait_for("error"))["error"] == "invalid_json"
    assert (await client.wait_for("error"))["error"] == "invalid_json"
    for chunk in chunks[4:]:
        await client.send_audio(chunk)
    await client.stop()
    assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
    await client.close()


async def test_a_backend_exception_is_logged_with_its_traceback_and_session(make_server, clip, caplog):
    running = await make_server(backend_options={"fail_after": 1})
    client = await TranscriptionClient.connect(running.ws_url)
    await client.start(format="pcm_s16le")
    await client.wait_for("transcription_started")
    await client.send_audio(clip.pcm)
    await client.stop()
    failed = await client.wait_for("transcription_failed")
    assert failed["error"] == "internal_error" and "RuntimeError" in failed["message"]
    [record] = [r for r in caplog.records if r.name == "rtlab.server" and "internal_error" in r.getMessage()]
    assert record.levelno == logging.ERROR and "session" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is RuntimeError
    await client.close()


async def test_healthz_is_degraded_while_the_default_model_cannot_load(make_server, monkeypatch):
    backend = get_backend(StreamConfig(backend="test", model="unloadable"))

    def fail_to_load() -> None:
        raise BackendUnavailable("the weights of 'unloadable' are missing: run rtlab models pull")

    monkeypatch.setattr(backend, "load", fail_to_load)
    running = await make_server(model="unloadable")
    await running.server.preload_task
    response = await fetch(running.url + "/healthz")
    health = json.loads(response.body)
    assert response.code == 503 and health["status"] == "degraded"
    assert "weights of 'unloadable' are missing" in health["problems"][0]
    client = await TranscriptionClient.connect(running.ws_url)
    assert (await start_reply(client))["error"] == "backend_unavailable"
    monkeypatch.undo()  # the weights are back: the next session loads the model
    assert (await start_reply(client))["type"] == "transcription_started"
    response = await fetch(running.url + "/healthz")
    assert response.code == 200 and json.loads(response.body)["status"] == "ok"
    await client.close()


async def test_reports_polled_while_the_model_loads_leave_the_backend_all_its_replicas(make_server, monkeypatch):
    # A backend learns how many replicas it has as it loads (rtlab-faster-whisper: two on
    # two cores). /healthz and /metrics polled meanwhile (benchmarks/concurrency.py waits
    # for the model so; so does a liveness probe) once made the backend's scheduler then,
    # gated to the one replica an unloaded backend declares: every session after ran its
    # passes one at a time, the cores half idle.
    backend = get_backend(StreamConfig(backend="test", model="two-replicas"))
    loading, go_on = threading.Event(), threading.Event()
    load = backend.load

    def load_two_replicas() -> None:
        loading.set()
        go_on.wait(10)
        backend.max_concurrency = 2
        load()

    monkeypatch.setattr(backend, "load", load_two_replicas)
    running = await make_server(model="two-replicas")
    await asyncio.get_running_loop().run_in_executor(None, loading.wait, 10)
    assert (await fetch(running.url + "/healthz")).code == 200
    assert (await fetch(running.url + "/metrics")).code == 200
    go_on.set()
    await running.server.preload_task
    client = await TranscriptionClient.connect(running.ws_url)
    assert (await start_reply(client))["type"] == "transcription_started"
    assert scheduler_for(backend).gate.capacity == 2
    await client.close()


@pytest.mark.parametrize("path, code", [("/static/app.js%00.txt", 400), ("/static/%00", 400),
                                        ("/static/" + "a" * 5000, 404), ("/%00", 404)])  # fmt: skip
async def test_bad_static_paths_get_400_or_404_without_a_traceback(server, caplog, path, code):
    assert (await fetch(server.url + path)).code == code
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_no_invalid_state_error_when_a_client_leaves_while_its_utterance_flushes(server, clip, caplog):
    """Leaving at every step of the flush, one event-loop iteration apart."""
    for steps in range(0, 40, 2):
        connection = _Discard()
        session = server.server.open_session(connection)
        await session.receive(json.dumps({"type": "start_transcription", "format": "webm"}))
        await wait_until(lambda: session.utterance.state.name == "RUNNING")
        await session.receive(clip.webm)
        await session.receive(json.dumps({"type": "stop_transcription"}))
        for _ in range(steps):
            await asyncio.sleep(0)
        server.server.close_session(session)
        await server.server.wait_closed()
    await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if "InvalidStateError" in r.getMessage() + str(r.exc_info)]


class _Discard:
    """A WebSocket that drops what it is sent."""

    async def write_message(self, message: str, binary: bool = False) -> None:
        pass

    def close(self, code=None, reason=None) -> None:
        pass


async def test_stop_without_audio_is_an_empty_utterance(server, ffmpeg_children):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start()
    await client.wait_for("transcription_started")
    await client.stop()
    stopped = await client.wait_for("transcription_stopped", "transcription_failed")
    assert stopped["type"] == "transcription_stopped" and stopped["text"] == ""
    assert stopped["summary"]["audio_seconds"] == 0.0
    await client.close()
    assert not await settle(server, ffmpeg_children)


# -- 7. a processor nobody cleaned up -------------------------------------------------------


def test_a_processor_never_cleaned_up_stops_its_ffmpeg_when_the_loop_closes(clip, ffmpeg_children):
    from rtlab.core.processor import AudioProcessor, CleanupSkipped

    async def forgetful() -> None:
        processor = AudioProcessor("test")
        await processor.create_tasks()
        await processor.process_audio(clip.webm[:4000])
        assert await wait_until(lambda: len(ffmpeg_children()) == 1)
        # returns without finish() or cleanup()

    with pytest.warns(CleanupSkipped, match="cleanup"):
        asyncio.run(forgetful())
    assert ffmpeg_children() == []


# -- 8. protocol fuzz -----------------------------------------------------------------------

KNOWN_TYPES = {"transcription_starting", "model_loading_started", "transcription_started", "transcript",
               "transcription_stopped", "transcription_failed", "error", "pong"}  # fmt: skip
DIRECT_REPLIES = {"pong", "error", "transcription_starting", "transcription_started", "transcription_failed"}

names = st.one_of(st.none(), st.text(max_size=12), st.integers(), st.lists(st.integers(), max_size=2))
start_messages = st.fixed_dictionaries(
    {"type": st.just("start_transcription")},
    optional={
        "backend": st.one_of(names, st.sampled_from(["test", "faster-whisper", "nope"])),
        "model": st.one_of(names, st.sampled_from(["tones", "tiny.en", "/tmp", "../x"])),
        "policy": st.one_of(names, st.sampled_from(["local-agreement", "nope"])),
        "format": st.one_of(names, st.sampled_from(["auto", "webm", "wav", "pcm_s16le", "ffmpeg", "aiff"])),
        "language": st.one_of(names, st.just("en")),
    },
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
text_frames = st.one_of(
    start_messages.map(json.dumps),
    st.sampled_from([{"type": "stop_transcription"}, {"type": "ping"}]).map(json.dumps),
    json_values.map(json.dumps),
    st.dictionaries(st.just("type"), json_values, min_size=1).map(json.dumps),
    st.text(max_size=30),
    st.integers(1, 20_000).map(lambda depth: "[" * depth + "]" * depth),
)
audio_frames = st.one_of(st.binary(max_size=3000), st.sampled_from(["clip-webm", "clip-pcm"]))
frame_lists = st.lists(st.one_of(text_frames, audio_frames), min_size=1, max_size=6)


def client_type(frame: str | bytes) -> str | None:
    """The ``type`` the server reads in a text frame (None: audio, or no valid type)."""
    if not isinstance(frame, str) or frame.startswith("clip-"):
        return None
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    return message.get("type") if isinstance(message, dict) and isinstance(message.get("type"), str) else None


def well_formed(message: dict) -> bool:
    kind = message.get("type")
    if kind not in KNOWN_TYPES:
        return False
    if kind in ("error", "transcription_failed"):
        return isinstance(message.get("error"), str) and isinstance(message.get("message"), str) and message["message"]
    if kind == "transcript":
        return set(message) == {"type", "committed", "partial", "emitted_at", "lag"}
    if kind == "transcription_stopped":
        return isinstance(message.get("text"), str) and isinstance(message.get("summary"), dict)
    if kind == "model_loading_started":
        return {"backend", "model", "cached"} <= set(message)
    return True


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(frames=frame_lists)
async def test_protocol_fuzz_gets_well_formed_replies_and_leaves_nothing(fuzz_server, clip, ffmpeg_children, frames):
    running = fuzz_server
    client = await TranscriptionClient.connect(running.ws_url)
    pongs = 0
    for frame in frames:
        before = len(client.messages)
        if frame == "clip-webm":
            await client.send_audio(clip.webm[:6000])
        elif frame == "clip-pcm":
            await client.send_audio(clip.pcm[:16000])
        elif isinstance(frame, bytes):
            await client.send_audio(frame)
        else:
            await client.send_text(frame)
        kind = client_type(frame)
        pongs += 1 + (kind == "ping")
        await client.ping()
        while sum(m["type"] == "pong" for m in client.messages) < pongs:
            await client.wait_for("pong", timeout=15)
        replies = client.messages[before:]
        assert all(well_formed(m) for m in replies), replies
        if isinstance(frame, str) and not frame.startswith("clip-") and kind != "stop_transcription":
            # Everything but a stop and audio gets an answer before the next message's.
            assert any(m["type"] in DIRECT_REPLIES for m in replies[:-1]), (frame, replies)
    await client.stop()
    [session] = running.server.sessions
    assert await wait_until(lambda: not session.utterances, 30)
    await client.ping()
    await client.wait_for("pong")
    assert not client.closed
    loading = sum(m["type"] == "model_loading_started" for m in client.messages)
    ended = sum(m["type"] in ("transcription_stopped", "transcription_failed") for m in client.messages)
    assert loading <= ended
    await client.close()
    assert await wait_until(lambda: not running.server.sessions)
    assert not await settle(running, ffmpeg_children)
    assert running.server.health()["transcribing"] == 0


@pytest.fixture
async def fuzz_server(make_server):
    return await make_server(max_pending_audio_bytes=64 * 1024)


async def test_threads_left_after_churn_are_idle_workers_of_bounded_pools(server, clip, ffmpeg_children):
    """Honest sessions beside abrupt drops, twice: the threads that stay are asyncio's
    default executor and the scheduler's pass pool, each within its size, and a second
    round adds none to the pass pool (what benchmarks/chaos.py saw settle at 9 threads
    against 4)."""
    async def honest() -> None:
        client = await TranscriptionClient.connect(server.ws_url)
        await client.start()
        for chunk in split(clip.webm):
            await client.send_audio(chunk)
        await client.stop()
        assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
        await client.close()

    async def abrupt() -> None:
        client = await TranscriptionClient.connect(server.ws_url)
        await client.start()
        await client.send_audio(split(clip.webm)[0])
        client.abort()

    before = {thread.ident for thread in threading.enumerate()}
    after_rounds = []
    for _ in range(2):
        await asyncio.gather(*(honest() for _ in range(6)), *(abrupt() for _ in range(12)))
        assert not await settle(server, ffmpeg_children)
        await wait_until(lambda: not [t for t in threading.enumerate() if "-wait" in t.name], timeout=10)
        after_rounds.append([t for t in threading.enumerate() if t.ident not in before])
    executor_cap = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor's documented size
    backend = get_backend(server.server.config.stream)
    for new in after_rounds:
        names = [t.name for t in new]
        assert all(n.startswith(("asyncio_", f"rtlab-{backend.name}_")) for n in names), names
        assert sum(n.startswith("asyncio_") for n in names) <= executor_cap, names
    # asyncio's executor starts a worker whenever none is idle, up to its size, and keeps
    # it: the second round may add some of those (a full local run on a loaded machine saw
    # 4, then 5), and nothing else.
    pool = [[t for t in new if not t.name.startswith("asyncio_")] for new in after_rounds]
    assert len(pool[1]) <= len(pool[0]), (after_rounds[0], after_rounds[1])
