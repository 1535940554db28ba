"""The bounded queue of messages to one client: stale partials go first, committed text never does."""

from __future__ import annotations

import asyncio
import functools

import pytest

from rtlab.core.events import EventQueue
from rtlab.server import protocol


def outbox(max_messages: int, max_merged_words: int = 256) -> EventQueue:
    """A queue as a session builds it (transcripts merged into an unsent one)."""
    merge = functools.partial(protocol.merge_transcripts, max_words=max_merged_words)
    return EventQueue(max_messages, stale=protocol.is_partial_transcript, merge=merge)


def partial(text: str) -> dict:
    return protocol.transcript([], text, 1.0, 0.0)


def commit(*words: str) -> dict:
    return protocol.transcript([{"text": w, "start": 0.0, "end": 0.1} for w in words], "", 1.0, 0.0)


async def drain(queue: EventQueue) -> list[dict]:
    await queue.close()
    messages = []
    while (message := await queue.get()) is not None:
        messages.append(message)
    return messages


async def test_a_transcript_behind_an_unsent_one_is_merged():
    queue = outbox(8)
    await queue.put(commit("alpha"))
    await queue.put(partial("bravo"))
    await queue.put(commit("bravo"))
    await queue.put(partial("charlie"))
    [merged] = await drain(queue)
    assert [w["text"] for w in merged["committed"]] == ["alpha", "bravo"]
    assert merged["partial"] == "charlie"
    assert queue.dropped_partials == 1  # "bravo" as partial, replaced before it was sent


async def test_a_merged_transcript_says_whether_its_partial_joins_the_last_committed_word():
    # "partial_joins": the partial goes on from the last committed word without a space;
    # the key is sent only then, and a merge takes the newest partial's.
    queue = outbox(8)
    await queue.put(commit("Unabhängigkeit"))
    await queue.put(protocol.transcript([], "serklärung", 1.0, 0.0, partial_joins=True))
    [merged] = await drain(queue)
    assert merged["partial"] == "serklärung" and merged["partial_joins"] is True
    queue = outbox(8)
    await queue.put(commit("Unabhängigkeit"))
    await queue.put(protocol.transcript([], "serklärung", 1.0, 0.0, partial_joins=True))
    await queue.put(partial("der"))
    [merged] = await drain(queue)
    assert merged["partial"] == "der" and "partial_joins" not in merged
    assert "partial_joins" not in partial("der")


async def test_when_half_full_the_oldest_partial_goes_first():
    queue = outbox(3)
    await queue.put(partial("one"))
    await queue.put(protocol.pong())
    await queue.put(protocol.pong())
    await queue.put(partial("two"))  # no room for partials: "one" is dropped for it
    assert [m.get("partial", m["type"]) for m in await drain(queue)] == ["pong", "pong", "two"]
    assert queue.dropped_partials == 1


async def test_when_full_a_partial_with_nothing_to_replace_is_dropped():
    queue = outbox(2)
    await queue.put(protocol.pong())
    await queue.put(protocol.pong())
    await queue.put(partial("late"))
    assert [m["type"] for m in await drain(queue)] == ["pong", "pong"]
    assert queue.dropped_partials == 1


async def test_committed_words_wait_for_room_instead_of_being_dropped():
    queue = outbox(2, max_merged_words=1)
    await queue.put(commit("alpha"))
    await queue.put(commit("bravo"))
    waiting = asyncio.ensure_future(queue.put(commit("charlie")))
    await asyncio.sleep(0.05)
    assert not waiting.done() and len(queue) == 2
    assert [w["text"] for w in (await queue.get())["committed"]] == ["alpha"]
    await asyncio.wait_for(waiting, 1)
    rest = await drain(queue)
    assert [w["text"] for m in rest for w in m["committed"]] == ["bravo", "charlie"]


async def test_close_queues_a_final_message_past_the_bound_without_waiting():
    queue = outbox(1)
    await queue.put(protocol.pong())
    await asyncio.wait_for(queue.close(protocol.transcription_failed("idle_timeout", "bye")), 1)
    assert [m["type"] for m in await drain(queue)] == ["pong", "transcription_failed"]
    await queue.put(protocol.pong())  # after close: ignored
    assert await queue.get() is None


async def test_discard_ends_the_queue_at_once_and_wakes_a_waiting_writer():
    queue = outbox(2, max_merged_words=1)
    await queue.put(commit("alpha"))
    await queue.put(commit("bravo"))
    waiting = asyncio.ensure_future(queue.put(commit("charlie")))
    await asyncio.sleep(0.05)
    await queue.discard()
    await asyncio.wait_for(waiting, 1)
    assert await queue.get() is None


@pytest.mark.parametrize("frame", ["{}", '{"type": null}'])
def test_parse_refuses_messages_without_a_type(frame):
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse_client_message(frame)
    assert refused.value.code == "invalid_message"
