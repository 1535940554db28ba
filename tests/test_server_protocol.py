"""The WebSocket protocol against a real server on 127.0.0.1 with real FFmpeg."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from rtlab.server.client import TranscriptionClient, stream_file
from rtlab.server.metrics import ServerMetrics
from server_support import settle, split, wait_until

pytestmark = pytest.mark.timeout(60)


async def stream_clip(client: TranscriptionClient, data: bytes) -> None:
    for chunk in split(data):
        await client.send_audio(chunk)


async def test_protocol_flow_from_start_to_stopped(server, clip, ffmpeg_children):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start(backend="test")
    assert (await client.wait_for("transcription_starting"))["type"] == "transcription_starting"
    loading = await client.wait_for("model_loading_started")
    assert loading["model"] == "tones" and loading["cached"] in (True, False)
    await client.wait_for("transcription_started")
    assert ffmpeg_children() == []  # FFmpeg starts with the first bytes
    chunks = split(clip.webm)
    await client.send_audio(chunks[0])
    assert await wait_until(lambda: len(ffmpeg_children()) == 1)
    for chunk in chunks[1:]:
        await client.send_audio(chunk)
    await client.stop()
    stopped = await client.wait_for("transcription_stopped")
    assert stopped["text"] == clip.text
    assert set(stopped["summary"]) >= {"text", "audio_seconds", "compute_seconds", "rtf", "emitted_at"}

    types = [m["type"] for m in client.messages]
    assert types[:3] == ["transcription_starting", "model_loading_started", "transcription_started"]
    assert types[-1] == "transcription_stopped"
    transcripts = [m for m in client.messages if m["type"] == "transcript"]
    assert transcripts and all(
        set(m) == {"type", "committed", "partial", "emitted_at", "lag"} for m in transcripts
    )
    committed = [w for m in transcripts for w in m["committed"]]
    assert [w["text"] for w in committed] == clip.text.split()
    assert all(set(w) == {"text", "start", "end"} and w["end"] > w["start"] for w in committed)
    await client.close()
    assert not await settle(server, ffmpeg_children)


async def test_old_client_that_ignores_unknown_types_works(server, clip):
    """A client written for the original protocol: three reply types, others ignored."""
    known = {"model_loading_started", "transcription_started", "transcription_stopped"}
    connection = await websocket_connect(server.ws_url)
    seen = []

    async def next_known() -> dict:
        while True:
            message = json.loads(await connection.read_message())
            if message["type"] in known:
                seen.append(message["type"])
                return message

    await connection.write_message(json.dumps({"type": "start_transcription"}))
    assert (await next_known())["type"] == "model_loading_started"
    assert (await next_known())["type"] == "transcription_started"
    for chunk in split(clip.webm):
        await connection.write_message(chunk, binary=True)
    await connection.write_message(json.dumps({"type": "stop_transcription"}))
    stopped = await next_known()
    assert stopped["type"] == "transcription_stopped" and stopped["text"] == clip.text
    assert seen == ["model_loading_started", "transcription_started", "transcription_stopped"]
    connection.close()


async def test_start_while_running_is_idempotent(server, clip, ffmpeg_children):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start()
    await client.wait_for("transcription_started")
    chunks = split(clip.webm)
    await client.send_audio(chunks[0])  # FFmpeg starts with the first bytes
    assert await wait_until(lambda: len(ffmpeg_children()) == 1)
    pids = {p.pid for p in ffmpeg_children()}
    await client.start()
    await client.wait_for("transcription_started")  # sent again
    assert {p.pid for p in ffmpeg_children()} == pids and len(pids) == 1
    for chunk in chunks[1:]:
        await client.send_audio(chunk)
    await client.stop()
    assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
    assert [m["type"] for m in client.messages].count("model_loading_started") == 1
    await client.close()


async def test_start_after_stop_begins_a_new_utterance(server, clip, second_clip, ffmpeg_children):
    client = await TranscriptionClient.connect(server.ws_url)
    texts, pids = [], []
    for utterance in (clip, second_clip):
        await client.start()
        await client.wait_for("transcription_started")
        chunks = split(utterance.webm)
        await client.send_audio(chunks[0])  # FFmpeg starts with the first bytes
        assert await wait_until(lambda: len(ffmpeg_children()) == 1)
        pids.append({p.pid for p in ffmpeg_children()})
        for chunk in chunks[1:]:
            await client.send_audio(chunk)
        await client.stop()
        texts.append((await client.wait_for("transcription_stopped"))["text"])
    assert texts == [clip.text, second_clip.text]
    assert pids[0] != pids[1], "each utterance has its own FFmpeg process"
    await client.close()
    assert not await settle(server, ffmpeg_children)


async def test_start_right_after_stop_keeps_both_utterances_in_order(server, clip, second_clip):
    """No waiting at all: start, audio, stop, start, audio, stop in one burst."""
    client = await TranscriptionClient.connect(server.ws_url)
    for utterance in (clip, second_clip):
        await client.start()
        await stream_clip(client, utterance.webm)
        await client.stop()
    first = await client.wait_for("transcription_stopped")
    second = await client.wait_for("transcription_stopped")
    assert (first["text"], second["text"]) == (clip.text, second_clip.text)
    types = [m["type"] for m in client.messages]
    assert types.index("transcription_stopped") < types.index("transcription_started", types.index("transcription_started") + 1)
    await client.close()


async def test_stop_without_start_gets_an_error_and_the_connection_stays_open(server):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.stop()
    error = await client.wait_for("error")
    assert error["error"] == "not_started" and "start_transcription" in error["message"]
    await client.ping()
    await client.wait_for("pong")
    await client.close()


async def test_a_stop_before_any_audio_sends_a_full_summary(server, clip):
    """docs/server.md: the summary of transcription_stopped always has every field,
    ``language`` included (the one asked for), also for an utterance without audio."""
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start(backend="test", language="de")
    await client.wait_for("transcription_started")
    await client.stop()
    empty = (await client.wait_for("transcription_stopped"))["summary"]
    await client.start(backend="test", language="de")
    await client.wait_for("transcription_started")
    await stream_clip(client, clip.webm)
    await client.stop()
    full = (await client.wait_for("transcription_stopped"))["summary"]
    assert set(empty) == set(full)
    assert empty["language"] == full["language"] == "de"
    await client.close()


async def test_ping_gets_pong(server):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.ping()
    assert await client.wait_for("pong") == {"type": "pong"}
    await client.close()


async def test_raw_pcm_format_needs_no_ffmpeg(server, clip, ffmpeg_children):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start(format="pcm_s16le")
    await client.wait_for("transcription_started")
    assert ffmpeg_children() == []
    await stream_clip(client, clip.pcm)
    await client.stop()
    assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
    await client.close()


async def test_stop_while_the_model_loads_still_transcribes_the_held_audio(server, clip):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start()
    await stream_clip(client, clip.webm)  # no wait for transcription_started
    await client.stop()
    assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
    await client.close()


async def test_stream_file_client_collects_events_and_latencies(server, clip):
    result = await stream_file(server.ws_url, clip.webm, speed=0, backend="test")
    assert result.error is None and result.text == clip.text
    assert result.start_latency is not None and result.start_latency >= 0
    assert [w["text"] for w in result.committed_words()] == clip.text.split()
    assert len(result.commit_latencies(clip.words)) == len(clip.words)


# -- bad input -------------------------------------------------------------------------

BAD_TEXT_FRAMES = [
    ("not json {", "error", "invalid_json"),
    ("[1, 2, 3]", "error", "invalid_message"),
    ('"start_transcription"', "error", "invalid_message"),
    ('{"backend": "test"}', "error", "invalid_message"),
    ('{"type": 7}', "error", "invalid_message"),
    ('{"type": "dance"}', "error", "unknown_type"),
    ('{"type": "start_transcription", "backend": 5}', "transcription_failed", "invalid_message"),
    ('{"type": "start_transcription", "model": ["tiny"]}', "transcription_failed", "invalid_message"),
    ('{"type": "start_transcription", "format": "aiff"}', "transcription_failed", "invalid_message"),
    # Names outside the operator's allow-lists (by default the server's own) are refused
    # before the registry is asked (test_server_chaos.py has the allow-list cases).
    ('{"type": "start_transcription", "backend": "nope"}', "transcription_failed", "not_allowed"),
    ('{"type": "start_transcription", "policy": "nope"}', "transcription_failed", "not_allowed"),
    ('{"type": "start_transcription", "model": "../../etc"}', "transcription_failed", "not_allowed"),
]


@pytest.mark.parametrize("frame, reply, code", BAD_TEXT_FRAMES)
async def test_bad_text_frame_gets_a_clear_error(server, ffmpeg_children, frame, reply, code):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.send_text(frame)
    message = await client.wait_for(reply)
    assert message["error"] == code and len(message["message"]) > 20
    await client.ping()
    await client.wait_for("pong")  # still connected, still serving
    await client.close()
    assert not await settle(server, ffmpeg_children)


async def test_a_huge_unknown_type_is_not_echoed_back(server):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.send_json({"type": "x" * 100_000})
    error = await client.wait_for("error")
    assert error["error"] == "unknown_type" and len(error["message"]) < 200
    await client.close()


async def test_audio_before_start_is_refused_once(server):
    client = await TranscriptionClient.connect(server.ws_url)
    for _ in range(3):
        await client.send_audio(b"\x00" * 1000)
    await client.ping()
    await client.wait_for("pong")
    errors = [m for m in client.messages if m["type"] == "error"]
    assert [e["error"] for e in errors] == ["not_started"]
    await client.close()


async def test_binary_garbage_fails_the_decoder_then_a_new_start_works(server, clip, ffmpeg_children):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start()
    await client.wait_for("transcription_started")
    garbage = os.urandom(48_000)
    for chunk in split(garbage):
        await client.send_audio(chunk)
    await client.stop()
    failed = await client.wait_for("transcription_failed")
    assert failed["error"] == "decode_failed" and "FFmpeg" in failed["message"]
    assert not await settle(server, ffmpeg_children)
    await client.start()
    await client.wait_for("transcription_started")
    await stream_clip(client, clip.webm)
    await client.stop()
    assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
    await client.close()


async def test_oversized_frame_is_refused_and_the_session_goes_on(make_server, clip):
    running = await make_server(max_message_bytes=64 * 1024)
    client = await TranscriptionClient.connect(running.ws_url)
    await client.start()
    await client.wait_for("transcription_started")
    await client.send_audio(b"\x00" * (100 * 1024))
    error = await client.wait_for("error")
    assert error["error"] == "message_too_large" and "65536" in error["message"]
    await stream_clip(client, clip.webm)
    await client.stop()
    assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
    await client.close()


async def test_the_frame_limit_counts_the_bytes_of_a_text_frame(make_server):
    running = await make_server(max_message_bytes=64 * 1024)
    client = await TranscriptionClient.connect(running.ws_url)
    await client.send_text('"' + "\u00e9" * 40_000 + '"')  # 40 002 characters, 80 002 bytes
    error = await client.wait_for("error")
    assert error["error"] == "message_too_large" and "80002" in error["message"]
    await client.close()


async def test_frame_over_the_hard_limit_closes_with_1009(make_server):
    running = await make_server(max_message_bytes=16 * 1024)
    client = await TranscriptionClient.connect(running.ws_url)
    await client.send_audio(b"\x00" * (running.server.config.hard_message_bytes + 1))
    await client.wait_closed()
    assert client.close_code == 1009


class RawSocket:
    """A WebSocket client written by hand, to send frames a library client would not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, running) -> RawSocket:
        reader, writer = await asyncio.open_connection(running.host, running.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws/transcribe HTTP/1.1\r\nHost: {running.host}:{running.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes, masked: bool = True) -> None:
        """One final frame (payloads under 126 bytes)."""
        assert len(payload) < 126
        mask = os.urandom(4) if masked else b""
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if masked else payload
        self.writer.write(bytes([0x80 | opcode, (0x80 if masked else 0) | len(payload)]) + mask + body)

    async def receive(self) -> tuple[int, bytes]:
        """The opcode and payload of the server's next frame (the server does not mask)."""
        first, length = await self.reader.readexactly(2)
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        return first & 0x0F, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def test_a_text_frame_that_is_not_utf8_closes_with_1007(server):
    raw = await RawSocket.connect(server)
    raw.send(0x1, b'{"type": "ping", "x": "\xff\xfe"}')
    opcode, payload = await raw.receive()  # before the fix: the socket closed without a frame
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1007, payload
    assert payload[2:] == b"text frame is not valid UTF-8"
    raw.close()
    assert await wait_until(lambda: not server.server.sessions)


@pytest.mark.parametrize("opcode, payload", [(0x1, b'{"type": "ping"}'), (0x2, b"\x00" * 64), (0x9, b"hi")])
async def test_an_unmasked_client_frame_closes_with_1002(server, opcode, payload):
    raw = await RawSocket.connect(server)
    raw.send(opcode, payload, masked=False)
    opcode, payload = await raw.receive()  # before the fix: a pong, or nothing for audio
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1002, (opcode, payload)
    assert payload[2:] == b"client frames must be masked"
    raw.close()
    assert await wait_until(lambda: not server.server.sessions)


async def test_valid_text_frames_still_reach_the_session(server):
    raw = await RawSocket.connect(server)
    raw.send(0x1, json.dumps({"type": "ping", "note": "\u00e9t\u00e9"}).encode())
    opcode, payload = await raw.receive()
    assert opcode == 0x1 and json.loads(payload) == {"type": "pong"}
    raw.close()


# -- HTTP endpoints --------------------------------------------------------------------


async def fetch(url: str):
    return await AsyncHTTPClient().fetch(url, raise_error=False)


async def test_demo_page_and_every_script_it_loads_are_served(server):
    """Every script the page names, and every module those import, is served as JavaScript
    (a browser refuses a module of another type), and every script in rtlab/static is one
    of them: a file missing or left behind would leave the page without its controls."""
    import re  # only this test reads HTML and JavaScript

    from rtlab.server.app import STATIC_DIR

    page = await fetch(server.url + "/")
    assert page.code == 200 and b'id="transcript"' in page.body
    pending = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page.body.decode())
    assert pending == ["static/app.js"]
    served: dict[str, bytes] = {}
    while pending:
        path = pending.pop()
        if path in served:
            continue
        script = await fetch(f"{server.url}/{path}")
        assert script.code == 200, path
        assert "javascript" in script.headers["Content-Type"], (path, script.headers["Content-Type"])
        served[path] = script.body
        folder = path.rsplit("/", 1)[0]
        pending += [f"{folder}/{name}" for name in re.findall(r'(?:from|import)\s*"\./([^"]+)"', script.body.decode())]
    assert set(served) == {f"static/{file.name}" for file in STATIC_DIR.glob("*.js")}
    assert any(b"MediaRecorder" in body for body in served.values())


async def test_api_backends_lists_what_the_registry_offers(server):
    response = await fetch(server.url + "/api/backends")
    info = json.loads(response.body)
    names = [b["name"] for b in info["backends"]]
    assert "test" in names
    assert info["default"]["backend"] == "test"
    assert info["formats"] == ["auto", "webm", "ogg", "wav", "mp3", "flac", "ffmpeg", "pcm_s16le"]
    assert [d["name"] for d in info["decoders"]] == ["ffmpeg", "pcm_s16le"]
    assert any(p["name"] == "local-agreement" for p in info["policies"])
    test = next(b for b in info["backends"] if b["name"] == "test")
    assert test["description"] and "model" in test["options"] and test["plugin"]


async def test_healthz_counts_sessions_ffmpeg_and_models(server, clip, ffmpeg_children):
    client = await TranscriptionClient.connect(server.ws_url)
    await client.start()
    await client.wait_for("transcription_started")
    await client.send_audio(split(clip.webm)[0])  # FFmpeg starts with the first bytes
    assert await wait_until(lambda: len(ffmpeg_children()) == 1)
    health = json.loads((await fetch(server.url + "/healthz")).body)
    assert health["status"] == "ok" and health["sessions"] == 1
    assert health["ffmpeg_processes"] == 1 and health["transcribing"] == 1
    assert {"backend": "test", "model": "tones", "compute_rtf": 0.0} in health["loaded_models"]
    await client.close()


async def test_healthz_counts_stuck_passes_once_for_its_problems_and_its_field(server, monkeypatch):
    counts = iter([1, 2])  # a second count would be a later moment: another pass stuck
    monkeypatch.setattr(server.server, "stuck_passes", lambda: next(counts))
    health = json.loads((await fetch(server.url + "/healthz")).body)
    assert health["status"] == "degraded" and health["stuck_passes"] == 1
    assert health["problems"][0].startswith("1 backend call(s) still running")


@pytest.mark.parametrize("path", ["/healthz", "/api/backends", "/metrics", "/"])
async def test_head_answers_like_get_without_a_body(server, path):
    """Uptime monitors and load balancers often check with HEAD."""
    got = await fetch(server.url + path)
    head = await AsyncHTTPClient().fetch(HTTPRequest(server.url + path, method="HEAD"), raise_error=False)
    assert head.code == got.code == 200 and head.body == b""
    assert head.headers["Content-Type"] == got.headers["Content-Type"]


async def test_metrics_are_prometheus_text(server, clip):
    await stream_file(server.ws_url, clip.webm, speed=0)
    client = await TranscriptionClient.connect(server.ws_url)
    await client.send_text("not json")
    await client.wait_for("error")
    await client.close()
    response = await fetch(server.url + "/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.body.decode()
    for name in (
        "rtlab_sessions", "rtlab_active_transcriptions", "rtlab_ffmpeg_processes",
        "rtlab_session_start_seconds_count 1.0", "rtlab_commit_latency_seconds_count 6.0",
        "rtlab_rtf_count 1.0", 'rtlab_errors_total{error="invalid_json"} 1.0',
    ):  # fmt: skip
        assert name in text, name
    resident = next(line for line in text.splitlines() if line.startswith("rtlab_resident_memory_bytes "))
    assert float(resident.split()[1]) > 10 * 2**20  # a Python process with numpy and Tornado
    assert "rtlab_malloc_free_bytes " in text


async def test_metrics_count_the_batches_of_a_batching_backend(make_server, clip):
    running = await make_server(backend_options={"max_batch": 4, "batch_wait_ms": 5})

    async def batched() -> dict[str, float]:
        text = (await fetch(running.url + "/metrics")).body.decode()
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("rtlab_batched_")}

    before = await batched()
    await stream_file(running.ws_url, clip.webm, speed=0)
    after = await batched()
    calls = after["rtlab_batched_calls"] - before["rtlab_batched_calls"]
    assert calls > 0 and after["rtlab_batched_passes"] - before["rtlab_batched_passes"] >= calls, (before, after)


def test_a_scrape_totals_the_batches_once_for_both_gauges():
    calls = []

    def batch_totals() -> tuple[int, int]:
        calls.append(len(calls))
        return (3, 7) if len(calls) == 1 else (4, 9)  # a later total: another batch ran

    text = ServerMetrics(count_ffmpeg=lambda: 0, batch_totals=batch_totals).exposition().decode()
    assert len(calls) == 1  # before the fix: once per gauge, and a pair from two moments
    assert "rtlab_batched_calls 3.0" in text and "rtlab_batched_passes 7.0" in text


async def test_server_policy_and_backend_options_reach_every_session(make_server, clip):
    running = await make_server(policy_options={"min_chunk": 0.25, "deadline_sec": 2.0},
                                backend_options={"compute_rtf": 0.01})  # fmt: skip
    info = json.loads((await fetch(running.url + "/api/backends")).body)["default"]
    assert info["policy"] == "local-agreement"
    assert info["policy_options"] == {"min_chunk": 0.25, "deadline_sec": 2.0}
    assert info["backend_options"] == {"compute_rtf": 0.01}
    client = await TranscriptionClient.connect(running.ws_url)
    await client.start()
    await client.wait_for("transcription_started")
    [session] = running.server.sessions
    [utterance] = session.utterances
    policy, backend = utterance.processor.policy, utterance.processor.backend
    assert (policy.min_chunk, policy.deadline_sec, backend.compute_rtf) == (0.25, 2.0, 0.01)
    await stream_clip(client, clip.webm)
    await client.stop()
    assert (await client.wait_for("transcription_stopped"))["text"] == clip.text
    await client.close()


def attentive_backend_installed():
    """A backend AlignAtt can run on ("attentive"), registered by an inline plugin for the duration."""
    from rtlab.testing import ToneAttentionBackend
    from rtlab.testing.conformance import registered

    class AttentiveBackend(ToneAttentionBackend):
        name = "attentive"

    return registered(AttentiveBackend)


async def test_alignatt_on_a_backend_without_attention_is_refused_with_the_fix_a_client_can_send(make_server):
    # Before: "... use --backend attentive or --backend openai-whisper", a CLI flag the
    # client has no use for, naming a backend this server does not allow.
    with attentive_backend_installed():
        running = await make_server(allow_backends=("attentive",), allow_policies=("alignatt",))
        client = await TranscriptionClient.connect(running.ws_url)
        await client.start(policy="alignatt")  # on the server's backend, "test"
        failed = await client.wait_for("transcription_failed")
        assert failed["error"] == "invalid_option"
        assert failed["message"] == (
            "policy 'alignatt' needs a backend with incremental decoding and cross-attention "
            "(capability 'incremental-decoding'); backend 'test' does not provide it: "
            'send "backend": "attentive" in start_transcription'
        )
        await client.start(backend="attentive", policy="alignatt")  # the fix, as the message words it
        assert (await client.wait_for("transcription_started", "transcription_failed"))["type"] == "transcription_started"
        await client.close()
        # A server that allows no such backend says so, and who can change that.
        running = await make_server(allow_policies=("alignatt",))
        client = await TranscriptionClient.connect(running.ws_url)
        await client.start(policy="alignatt")
        message = (await client.wait_for("transcription_failed"))["message"]
        assert message.endswith(
            "does not provide it, and this server allows no backend that does (the operator allows one "
            "with rtlab serve --allow-backends attentive)"
        )
        await client.close()


def test_the_client_command_says_what_is_wrong_in_one_line(tmp_path, capsys):
    import socket

    import numpy as np

    from rtlab.server.client import main
    from rtlab.testing import wav_bytes

    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / "missing.ogg")])
    assert exited.value.code == 2 and "no such audio file: " in capsys.readouterr().err
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(np.zeros(1600, np.float32)))
    assert main([str(clip), "--url", f"ws://127.0.0.1:{port}/ws/transcribe"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not reach ws://127.0.0.1:{port}/ws/transcribe: ") and "rtlab serve" in err
    assert "Traceback" not in err and err.count("\n") == 1


async def test_a_partial_that_goes_on_from_the_last_committed_word_is_sent_with_partial_joins(make_server):
    """Once "charlie" is committed, a pass hears "charliedelta" over it; until a second pass
    agrees, the transcript's partial "delta ..." comes with ``"partial_joins": true`` (the
    demo page writes it on to "charlie"); the key is absent from the other transcripts."""
    import numpy as np

    from rtlab.testing import tone_words
    from rtlab.testing.conformance import registered
    from tone_backends import CompoundTones

    def pcm(audio) -> bytes:
        return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()

    async def send(data: bytes) -> None:
        for start in range(0, len(data), 8_000):  # a quarter of a second at a time
            await client.send_audio(data[start : start + 8_000])
            await asyncio.sleep(0.02)

    def committed() -> list[str]:
        return [w["text"] for m in client.messages if m["type"] == "transcript" for w in m["committed"]]

    said, then = tone_words("alpha bravo charlie")[0], tone_words("delta echo foxtrot golf hotel")[0]
    with registered(CompoundTones):
        running = await make_server(allow_backends=("compound-tones",))
        client = await TranscriptionClient.connect(running.ws_url)
        await client.start(backend="compound-tones", format="pcm_s16le")
        await client.wait_for("transcription_started")
        await send(pcm(np.concatenate([said, np.zeros(int(1.5 * 16_000), np.float32)])))
        assert await wait_until(lambda: "charlie" in committed(), timeout=10), client.messages
        await send(pcm(then))
        await client.stop()
        stopped = await client.wait_for("transcription_stopped")
        await client.close()
    assert stopped["text"] == "alpha bravo charliedelta echo foxtrot golf hotel"
    partials = [m for m in client.messages if m["type"] == "transcript" and m["partial"]]
    joining = [m for m in partials if "partial_joins" in m]
    assert joining and all(m["partial_joins"] is True and m["partial"].startswith("delta") for m in joining)
    assert any("partial_joins" not in m for m in partials)
