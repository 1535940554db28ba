"""Passes of concurrent sessions grouped into one model call (rtlab.core.batching)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rtlab.backends import Backend, Request
from rtlab.config import StreamConfig
from rtlab.core.batching import Batcher, BatchStats
from rtlab.core.instances import SessionBackend, get_backend
from rtlab.core.scheduler import CpuSlots, scheduler_for
from rtlab.errors import InvalidOption
from rtlab.eval.replay import replay
from rtlab.testing import tone_words

TEXTS = [
    "alpha bravo charlie delta echo foxtrot",
    "golf hotel india juliett kilo lima",
    "one two three four five six",
    "mike november oscar papa quebec romeo",
]


class RecordingBackend(Backend):
    """Records each batch; a batch takes ``seconds`` whatever its size, and its words say
    which request they answer."""

    name = "recording"

    def __init__(self, *, seconds: float = 0.0, max_batch: int = 4, batch_wait_ms: float = 50.0) -> None:
        self.seconds = seconds
        self.max_batch = max_batch
        self.batch_wait_ms = batch_wait_ms
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()

    def transcribe(self, audio, *, prompt="", language=None):
        return self.transcribe_batch([Request(audio, prompt, language)])[0]

    def transcribe_batch(self, requests):
        self.release.wait(10)
        self.batches.append([r.prompt for r in requests])
        time.sleep(self.seconds)
        return [[{"text": r.prompt, "start": 0.0, "end": 0.1}] for r in requests]


def run_threads(batcher: Batcher, calls: list[tuple[str, float]], stagger: float = 0.0) -> dict[str, list]:
    """``transcribe`` of each (prompt, key) on a thread of its own; the words by prompt."""
    results: dict[str, list] = {}

    def call(prompt: str, key: float) -> None:
        results[prompt] = batcher.transcribe(Request(np.zeros(160, np.float32), prompt), key)

    threads = [threading.Thread(target=call, args=call_args) for call_args in calls]
    for thread in threads:
        thread.start()
        time.sleep(stagger)
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads), "a pass never got its words"
    return results


def test_concurrent_passes_share_one_call_and_each_gets_its_own_words():
    backend = RecordingBackend(max_batch=4, batch_wait_ms=200)
    batcher = Batcher(backend, CpuSlots(2))
    results = run_threads(batcher, [(f"p{i}", 0.0) for i in range(4)])
    assert backend.batches and len(backend.batches) == 1 and sorted(backend.batches[0]) == ["p0", "p1", "p2", "p3"]
    assert {prompt: words[0]["text"] for prompt, words in results.items()} == {f"p{i}": f"p{i}" for i in range(4)}
    assert batcher.stats.sizes == [4]


def test_a_batch_never_takes_more_than_max_batch():
    backend = RecordingBackend(max_batch=3, batch_wait_ms=200)
    run_threads(Batcher(backend, CpuSlots(2)), [(f"p{i}", 0.0) for i in range(7)])
    assert all(len(batch) <= 3 for batch in backend.batches)
    assert sorted(p for batch in backend.batches for p in batch) == sorted(f"p{i}" for i in range(7))


def test_passes_are_spread_over_free_replicas_before_they_share_a_call():
    """Two replicas free and four passes waiting: two batches of two at once, not one of
    four while the other replica idles."""
    backend = RecordingBackend(seconds=0.3, max_batch=4, batch_wait_ms=200)
    backend.max_concurrency = 2
    running, most = [0], [0]
    lock = threading.Lock()
    batch_call = backend.transcribe_batch

    def counting(requests):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return batch_call(requests)
        finally:
            with lock:
                running[0] -= 1

    backend.transcribe_batch = counting
    batcher = Batcher(backend, CpuSlots(2))
    results = run_threads(batcher, [(f"p{i}", 0.0) for i in range(4)])
    assert sorted(map(len, backend.batches)) == [2, 2] and most[0] == 2
    assert sorted(p for batch in backend.batches for p in batch) == [f"p{i}" for i in range(4)]
    assert {prompt: words[0]["text"] for prompt, words in results.items()} == {f"p{i}": f"p{i}" for i in range(4)}


def test_a_lone_pass_waits_at_most_the_batch_wait():
    backend = RecordingBackend(max_batch=8, batch_wait_ms=0)
    batcher = Batcher(backend, CpuSlots(2))
    run_threads(batcher, [("alone", 0.0)])
    assert backend.batches == [["alone"]]


def _start(batcher: Batcher, prompt: str, results: dict[str, list]) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: results.__setitem__(prompt, batcher.transcribe(Request(np.zeros(160, np.float32), prompt), 0.0))
    )
    thread.start()
    return thread


def _counting(sessions: int, replicas: int = 1) -> tuple[RecordingBackend, Batcher]:
    """A backend whose batches would wait half a minute for company, and its batcher with
    ``sessions`` sessions counted."""
    backend = RecordingBackend(max_batch=8, batch_wait_ms=30_000)
    backend.max_concurrency = replicas
    batcher = Batcher(backend, CpuSlots(2))
    for _ in range(sessions):
        batcher.session_started()
    return backend, batcher


def test_one_session_alone_does_not_wait_for_a_batch():
    """With one session counted, its pass is all that can come: it runs at once, not after
    ``batch_wait_ms`` (here long enough that waiting for it fails the join)."""
    backend, batcher = _counting(1)
    results: dict[str, list] = {}
    _start(batcher, "alone", results).join(10)
    assert backend.batches == [["alone"]] and results["alone"][0]["text"] == "alone"


def test_a_pass_waits_for_the_other_sessions_and_shares_their_call():
    backend, batcher = _counting(2)
    results: dict[str, list] = {}
    first = _start(batcher, "first", results)
    first.join(0.3)
    assert first.is_alive() and backend.batches == [], "a pass ran before the other session's came"
    second = _start(batcher, "second", results)
    for thread in (first, second):
        thread.join(10)
    assert [sorted(batch) for batch in backend.batches] == [["first", "second"]]
    assert batcher.stats.sizes == [2]


def test_a_waiting_pass_runs_once_the_other_session_ends():
    backend, batcher = _counting(2)
    results: dict[str, list] = {}
    waiting = _start(batcher, "waiting", results)
    waiting.join(0.3)
    assert waiting.is_alive() and backend.batches == []
    batcher.session_ended()
    waiting.join(10)
    assert backend.batches == [["waiting"]] and batcher.stats.sizes == [1]


def test_a_session_whose_pass_is_running_is_not_waited_for():
    """Two sessions, two replicas: while the first session's pass runs, the second's could
    only be joined by another pass of the first session, which cannot come while its pass
    runs; it runs on the free replica at once."""
    backend, batcher = _counting(1, replicas=2)
    entered, hold = threading.Event(), threading.Event()
    batch_call = backend.transcribe_batch

    def holding(requests):
        if any(r.prompt == "held" for r in requests):
            entered.set()
            hold.wait(10)
        return batch_call(requests)

    backend.transcribe_batch = holding
    results: dict[str, list] = {}
    held = _start(batcher, "held", results)  # alone: runs at once, and is held
    assert entered.wait(10)
    batcher.session_started()
    other = _start(batcher, "other", results)
    other.join(10)
    try:
        assert not other.is_alive() and held.is_alive()
        assert backend.batches == [["other"]] and results["other"][0]["text"] == "other"
    finally:
        hold.set()
        held.join(10)
    assert sorted(map(tuple, backend.batches)) == [("held",), ("other",)]


def test_a_session_is_counted_from_its_first_transcribe_pass_until_it_closes():
    """A session that sends no transcribe pass (AlignAtt decodes incrementally) is never
    waited for; one that has sent a pass is, until it closes; a pass after the close (one
    past its deadline) does not count it again."""
    backend = RecordingBackend(max_batch=8, batch_wait_ms=0)
    batcher = Batcher(backend, CpuSlots(2))
    silent, talking = SessionBackend(backend, batcher), SessionBackend(backend, batcher)
    assert batcher.sessions == 0
    talking.transcribe(np.zeros(160, np.float32), prompt="one")
    talking.transcribe(np.zeros(160, np.float32), prompt="two")
    assert batcher.sessions == 1
    silent.close()
    talking.close()
    talking.close()
    assert batcher.sessions == 0
    talking.transcribe(np.zeros(160, np.float32), prompt="late")
    assert batcher.sessions == 0 and backend.batches == [["one"], ["two"], ["late"]]


def test_batch_stats_keep_totals_and_only_the_recent_batches():
    """A server batches for days: the stats keep counts, and the sizes and waits of the
    most recent batches only."""
    stats = BatchStats(recent=3)
    for size in range(1, 11):
        stats.add("transcribe_batch" if size % 2 else "step_batch", [0.001 * size] * size)
    assert (stats.batches, stats.passes) == (10, sum(range(1, 11)))
    assert 3 <= len(stats.sizes) <= 6 and stats.sizes[-3:] == [8, 9, 10]
    assert all(len(sizes) <= 6 for sizes in stats.by_kind.values()) and stats.by_kind["step_batch"][-1] == 10
    assert 3 <= len(stats.waits) <= 6 and stats.waits[-1] == 0.01


def test_the_pass_furthest_behind_goes_first():
    backend = RecordingBackend(max_batch=2, batch_wait_ms=0)
    batcher = Batcher(backend, CpuSlots(2))
    backend.release.clear()  # the first batch holds the one replica until everyone waits
    first = threading.Thread(target=batcher.transcribe, args=(Request(np.zeros(1), "first"), 0.0))
    first.start()
    time.sleep(0.1)
    calls = [("on time 1", 10.0), ("on time 2", 11.0), ("behind", 1.0)]  # "behind" comes last
    waiting = threading.Thread(target=run_threads, args=(batcher, calls, 0.05))
    waiting.start()
    time.sleep(0.4)
    backend.release.set()
    first.join(10)
    waiting.join(10)
    assert backend.batches[0] == ["first"]
    assert sorted(backend.batches[1]) == ["behind", "on time 1"] and backend.batches[2] == ["on time 2"]


def test_no_pass_starves_among_passes_that_keep_coming_behind():
    """Keys are arrival minus lag: a pass on time still gets a key older than passes that
    arrive much later, however far behind those are (bounded lag)."""
    backend = RecordingBackend(max_batch=1, batch_wait_ms=0, seconds=0.01)
    batcher = Batcher(backend, CpuSlots(2))
    stop = threading.Event()

    def flood() -> None:
        index = 0
        while not stop.is_set():
            batcher.transcribe(Request(np.zeros(1), f"behind {index}"), time.monotonic() - 2.0)
            index += 1

    floods = [threading.Thread(target=flood) for _ in range(3)]
    for thread in floods:
        thread.start()
    time.sleep(0.1)
    done = threading.Event()
    patient = threading.Thread(
        target=lambda: (batcher.transcribe(Request(np.zeros(1), "patient"), time.monotonic()), done.set())
    )
    patient.start()
    served = done.wait(10)
    stop.set()
    for thread in floods + [patient]:
        thread.join(10)
    assert served, "a pass on time starved behind passes that were behind"


def test_calls_of_different_kinds_never_share_a_batch():
    """A batch holds calls of one batch function: passes' ``transcribe`` and another kind of
    call (an incremental decoder's steps) wait side by side and run apart."""
    backend = RecordingBackend(max_batch=8, batch_wait_ms=100)
    batcher = Batcher(backend, CpuSlots(2))
    steps: list[list[str]] = []

    def step_batch(items: list[str]) -> list[str]:
        steps.append(list(items))
        return [f"stepped {item}" for item in items]

    results: dict[str, object] = {}
    def step(item: str) -> None:
        results[item] = batcher.call(step_batch, item, 0.0)

    threads = [threading.Thread(target=step, args=(f"s{i}",)) for i in range(3)]
    threads.append(threading.Thread(target=lambda: results.__setitem__("p", run_threads(batcher, [("p0", 0.0), ("p1", 0.0)]))))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(p for batch in backend.batches for p in batch) == ["p0", "p1"]
    assert sorted(s for batch in steps for s in batch) == ["s0", "s1", "s2"]
    assert {results[f"s{i}"] for i in range(3)} == {"stepped s0", "stepped s1", "stepped s2"}
    assert sorted(batcher.stats.by_kind) == ["step_batch", "transcribe_batch"]


def test_a_batch_of_calls_does_not_wait_for_more_than_its_quorum():
    """Calls whose quorum (how many of them can come at most) is all there run without
    waiting for the deadline: a call that comes later gets a batch of its own, where waiting
    for the (far) deadline would have taken it into theirs."""
    backend = RecordingBackend(max_batch=8, batch_wait_ms=5000)
    batcher = Batcher(backend, CpuSlots(2))
    steps: list[list[str]] = []

    def step_batch(items: list[str]) -> list[str]:
        steps.append(list(items))
        return list(items)

    calls = [("s0", 2), ("s1", 2), ("later", 1)]
    threads = [
        threading.Thread(target=batcher.call, args=(step_batch, item, 0.0), kwargs={"quorum": lambda q=quorum: q})
        for item, quorum in calls
    ]
    for thread in threads:
        thread.start()
        if thread is threads[1]:
            time.sleep(0.5)
    for thread in threads:
        thread.join(10)
    assert [sorted(batch) for batch in steps] == [["s0", "s1"], ["later"]]


def test_an_error_in_the_batch_call_reaches_every_pass_of_the_batch():
    class Failing(RecordingBackend):
        def transcribe_batch(self, requests):
            raise RuntimeError("the model broke")

    batcher = Batcher(Failing(max_batch=3, batch_wait_ms=200), CpuSlots(2))
    errors = []

    def call(prompt: str) -> None:
        try:
            batcher.transcribe(Request(np.zeros(1), prompt), 0.0)
        except RuntimeError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=call, args=(f"p{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == ["the model broke"] * 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_batch": 0}, "max_batch must be a whole number from 1 to 512"),
        ({"max_batch": 1.5}, "max_batch must be a whole number"),
        ({"max_batch": 10_000}, "from 1 to 512"),
        ({"batch_wait_ms": -1}, "batch_wait_ms must be a number of milliseconds from 0 to 1000"),
        ({"batch_wait_ms": "soon"}, "batch_wait_ms must be"),
    ],
)
def test_batch_options_out_of_range_are_refused_in_one_line(options, match):
    with pytest.raises(InvalidOption, match=match):
        StreamConfig(backend="test", backend_options=options).validate()


def test_a_batching_backend_gets_a_batcher_and_room_for_a_batch_per_replica():
    backend = get_backend("test", model="batching-room", max_batch=4, batch_wait_ms=5)
    scheduler = scheduler_for(backend)
    assert scheduler.batcher is not None and scheduler.gate.capacity == 4
    assert scheduler_for(get_backend("test", model="batching-room")).batcher is None


def _tone_audio() -> np.ndarray:
    return np.concatenate([tone_words(text)[0] for text in TEXTS])


@pytest.mark.parametrize("clock", ["simulated", "wall"])
def test_batched_and_unbatched_passes_commit_the_same_words(clock):
    audio = _tone_audio() if clock == "simulated" else tone_words(TEXTS[0])[0]
    options = "compute_rtf=0.05"
    plain = [StreamConfig.parse(f"backend=test,model=unbatched-{i},{options},min_chunk={m}") for i, m in enumerate((0.5, 1))]
    batched = [
        StreamConfig.parse(f"backend=test,model=batched,{options},max_batch=4,batch_wait_ms=20,min_chunk={m}")
        for m in (0.5, 1)
    ]
    alone = replay(audio, plain, clock=clock)
    together = replay(audio, batched, clock=clock)
    for a, b in zip(alone, together):
        assert a.text == b.text and a.text
        assert [w["text"] for e in a.events if e["type"] == "commit" for w in e["words"]] == [
            w["text"] for e in b.events if e["type"] == "commit" for w in e["words"]
        ]
    batcher = scheduler_for(get_backend(batched[0])).batcher
    sizes = batcher.stats.sizes
    assert sum(sizes) > 0
    assert batcher.sessions == 0, "a session that ended is still counted by the batcher"
    if clock == "wall":  # both sessions' passes come due together on the wall clock
        assert max(sizes) == 2, f"batch sizes {sizes}"
