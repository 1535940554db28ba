"""The bounded outgoing queue: stale partials go first, committed text never does."""

from __future__ import annotations

import asyncio

import pytest

from rtlab.server import protocol
from rtlab.server.outbox import Outbox


def partial(text: str) -> dict:
    return protocol.transcript([], text, 1.0, 0.0)


def commit(*words: str) -> dict:
    return protocol.transcript([{"text": w, "start": 0.0, "end": 0.1} for w in words], "", 1.0, 0.0)


async def drain(outbox: Outbox) -> list[dict]:
    await outbox.close()
    messages = []
    while (message := await outbox.get()) is not None:
        messages.append(message)
    return messages


async def test_a_transcript_behind_an_unsent_one_is_merged():
    outbox = Outbox(max_messages=8)
    await outbox.put(commit("alpha"))
    await outbox.put(partial("bravo"))
    await outbox.put(commit("bravo"))
    await outbox.put(partial("charlie"))
    [merged] = await drain(outbox)
    assert [w["text"] for w in merged["committed"]] == ["alpha", "bravo"]
    assert merged["partial"] == "charlie"
    assert outbox.dropped_partials == 1  # "bravo" as partial, replaced before it was sent


async def test_when_full_the_oldest_partial_goes_first():
    outbox = Outbox(max_messages=3)
    await outbox.put(partial("one"))
    await outbox.put(protocol.pong())
    await outbox.put(protocol.pong())
    await outbox.put(partial("two"))  # full: "one" is dropped to make room
    assert [m["type"] for m in await drain(outbox)] == ["pong", "pong", "transcript"]
    assert outbox.dropped_partials == 1


async def test_when_full_a_partial_with_nothing_to_replace_is_dropped():
    outbox = Outbox(max_messages=2)
    await outbox.put(protocol.pong())
    await outbox.put(protocol.pong())
    await outbox.put(partial("late"))
    assert [m["type"] for m in await drain(outbox)] == ["pong", "pong"]


async def test_committed_words_wait_for_room_instead_of_being_dropped():
    outbox = Outbox(max_messages=2, max_merged_words=1)
    await outbox.put(commit("alpha"))
    await outbox.put(commit("bravo"))
    waiting = asyncio.ensure_future(outbox.put(commit("charlie")))
    await asyncio.sleep(0.05)
    assert not waiting.done() and len(outbox) == 2
    assert [w["text"] for w in (await outbox.get())["committed"]] == ["alpha"]
    await asyncio.wait_for(waiting, 1)
    rest = await drain(outbox)
    assert [w["text"] for m in rest for w in m["committed"]] == ["bravo", "charlie"]


async def test_close_queues_a_final_message_past_the_bound_without_waiting():
    outbox = Outbox(max_messages=1)
    await outbox.put(protocol.pong())
    await asyncio.wait_for(outbox.close(protocol.transcription_failed("idle_timeout", "bye")), 1)
    assert [m["type"] for m in await drain(outbox)] == ["pong", "transcription_failed"]
    await outbox.put(protocol.pong())  # after close: ignored
    assert await outbox.get() is None


@pytest.mark.parametrize("frame", ["{}", '{"type": null}'])
def test_parse_refuses_messages_without_a_type(frame):
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse_client_message(frame)
    assert refused.value.code == "invalid_message"


def test_start_request_maps_formats_to_decoders():
    assert protocol.StartRequest.from_message({"format": "pcm_s16le"}).decoder == "pcm_s16le"
    assert protocol.StartRequest.from_message({"unknown_field": 1}).decoder == "ffmpeg"
