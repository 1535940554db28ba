"""Backend calls shared by the streams of one replay on an unmeasured clock (rtlab.core.memo)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from rtlab.backends import Request
from rtlab.config import StreamConfig
from rtlab.core.memo import PassMemo
from rtlab.core.processor import AudioProcessor
from rtlab.eval.replay import replay
from rtlab.testing import tone_words

TEXT = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima"


def _request(seconds: float = 1.0, prompt: str = "", language: str | None = "en") -> Request:
    audio = np.sin(np.arange(int(seconds * 16000), dtype=np.float32) / 7).astype(np.float32)
    return Request(audio, prompt, language)


class Counting:
    """A compute function that counts its calls and can be held back or made to fail."""

    def __init__(self, words=None, fail: bool = False, hold: threading.Event | None = None) -> None:
        self.calls = 0
        self.words = words if words is not None else [{"text": "alpha", "start": 0.0, "end": 0.4}]
        self.fail = fail
        self.hold = hold
        self.started = threading.Event()

    def __call__(self):
        self.calls += 1
        self.started.set()
        if self.hold is not None:
            self.hold.wait(10)
        if self.fail:
            raise RuntimeError("model failed")
        return [dict(w) for w in self.words]


def test_the_same_request_is_computed_once_and_answered_with_a_copy():
    memo, compute, backend = PassMemo(), Counting(), object()
    first, credit = memo.call(backend, _request(), compute)
    second, _ = memo.call(backend, _request(), compute)
    assert compute.calls == 1 and (memo.misses, memo.hits) == (1, 1) and credit == 0.0
    assert second == first
    second[0]["text"] = "changed by a policy"
    assert memo.call(backend, _request(), compute)[0][0]["text"] == "alpha"


@pytest.mark.parametrize(
    "other",
    [
        _request(prompt="a prompt"),
        _request(language="de"),
        _request(seconds=1.01),
        Request(_request().audio * 0.5, "", "en"),
    ],
    ids=["prompt", "language", "length", "samples"],
)
def test_a_request_that_differs_in_anything_is_computed_again(other):
    memo, compute, backend = PassMemo(), Counting(), object()
    memo.call(backend, _request(), compute)
    memo.call(backend, other, compute)
    assert compute.calls == 2 and memo.hits == 0


def test_another_backend_instance_is_another_entry():
    memo, compute = PassMemo(), Counting()
    memo.call(object(), _request(), compute)
    memo.call(object(), _request(), compute)
    assert compute.calls == 2


def test_a_request_made_while_the_same_one_runs_waits_for_it():
    memo, backend, release = PassMemo(), object(), threading.Event()
    compute = Counting(hold=release)
    results = []
    first = threading.Thread(target=lambda: results.append(memo.call(backend, _request(), compute)[0]))
    first.start()
    assert compute.started.wait(5)
    second = threading.Thread(target=lambda: results.append(memo.call(backend, _request(), compute)[0]))
    second.start()
    time.sleep(0.1)
    assert len(results) == 0, "the second asker waits for the first call"
    release.set()
    first.join(5)
    second.join(5)
    assert compute.calls == 1 and len(results) == 2 and results[0] == results[1]


def test_a_failed_call_is_not_remembered_and_a_waiter_tries_for_itself():
    memo, backend, release = PassMemo(), object(), threading.Event()
    failing = Counting(fail=True, hold=release)
    errors, results = [], []

    def first():
        try:
            memo.call(backend, _request(), failing)
        except RuntimeError as error:
            errors.append(error)

    owner = threading.Thread(target=first)
    owner.start()
    assert failing.started.wait(5)
    working = Counting()
    waiter = threading.Thread(target=lambda: results.append(memo.call(backend, _request(), working)[0]))
    waiter.start()
    time.sleep(0.05)
    release.set()
    owner.join(5)
    waiter.join(5)
    assert len(errors) == 1 and working.calls == 1 and results[0][0]["text"] == "alpha"
    assert memo.call(backend, _request(), working)[0] == results[0]  # the working call's words stayed


def test_a_reused_call_credits_the_compute_it_took_when_it_ran(monkeypatch):
    import rtlab.core.memo as memo_module

    now = [100.0]
    monkeypatch.setattr(memo_module.time, "perf_counter", lambda: now[0])
    memo, backend = PassMemo(), object()

    def slow():
        now[0] += 2.0  # the model call takes 2 s
        return ["words"]

    assert memo.call(backend, _request(), slow) == (["words"], 0.0)
    assert memo.call(backend, _request(), slow) == (["words"], 2.0)  # answered at once: its cost
    waited = Future()
    # a waiter that waited 1.5 s of the first call's 2 s is credited the 0.5 s it did not wait
    entry_key = PassMemo.key(backend, _request(prompt="later"))
    memo._entries[entry_key] = waited

    def finish_later():
        now[0] += 1.5
        return (["later"], 2.0)

    monkeypatch.setattr(waited, "result", finish_later)
    assert memo.call(backend, _request(prompt="later"), slow) == (["later"], 0.5)


def test_the_memo_is_bounded():
    memo, compute, backend = PassMemo(max_entries=2), Counting(), object()
    for prompt in ("one", "two", "three"):
        memo.call(backend, _request(prompt=prompt), compute)
    memo.call(backend, _request(prompt="one"), compute)  # the oldest went
    assert compute.calls == 4
    with pytest.raises(ValueError, match="max_entries"):
        PassMemo(max_entries=0)


@pytest.mark.parametrize("clock", ["wall", "simulated"])
def test_measured_clocks_refuse_a_memo(clock):
    with pytest.raises(ValueError, match="unmeasured clock"):
        AudioProcessor(StreamConfig(backend="test"), clock=clock, pass_memo=PassMemo())


def _events(run):
    # Measured compute moves from run to run; on the unaware clock it is also the reported
    # compute (and the RTF). The modeled clock reports its prediction.
    drop = {"measured_compute_seconds"} | ({"compute_seconds", "rtf"} if run.clock == "unaware" else set())
    return [{k: v for k, v in e.items() if k not in drop} for e in run.events]


@pytest.mark.parametrize("clock", ["unaware", "modeled"])
def test_a_replay_reusing_calls_gives_the_events_of_one_that_does_not(clock, tmp_path):
    audio, _ = tone_words(TEXT)
    # The first two configurations ask the same passes until the deadline makes them commit
    # differently; the third chunks the audio otherwise.
    configs = [StreamConfig.parse(c) for c in (
        "backend=test,min_chunk=1", "backend=test,min_chunk=1,deadline_sec=1", "backend=test,min_chunk=0.5",
    )]  # fmt: skip
    cost_model = None
    if clock == "modeled":
        from rtlab.core.costs import Calibration, CostModel, key_for
        from rtlab.core.instances import get_backend

        model = CostModel()
        model.add(Calibration(key=key_for(configs[0], get_backend(configs[0])), weights={"calls": 0.2, "audio_seconds": 0.05, "words": 0.01, "prompt_words": 0.0}))
        cost_model = model
    memo = PassMemo()
    shared = replay(audio, configs, clock=clock, cost_model=cost_model, reuse_passes=memo)
    alone = replay(audio, configs, clock=clock, cost_model=cost_model, reuse_passes=False)
    assert memo.hits > 0 and memo.misses > 0
    for a, b in zip(shared, alone):
        assert a.error is None and _events(a) == _events(b)


async def test_a_stream_waiting_for_a_call_another_runs_lends_its_replica():
    """Two replicas: stream A runs a call, stream B asks the same and waits for it, and
    stream C's different call runs meanwhile on B's replica (B steps aside), instead of
    waiting for A to finish."""
    import asyncio

    from rtlab.core.scheduler import CpuSlots, Scheduler
    from rtlab.testing import ScriptedBackend

    backend = ScriptedBackend([])
    backend.max_concurrency = 2
    scheduler = Scheduler(backend, slots=CpuSlots(2))
    memo, release = PassMemo(), threading.Event()
    owner = Counting(hold=release)
    order: list[str] = []

    def stream(label: str, request: Request, compute) -> None:
        memo.call(backend, request, compute)
        order.append(label)

    loop = asyncio.get_running_loop()
    a = asyncio.ensure_future(scheduler.submit(stream, "A", _request(), owner))
    await loop.run_in_executor(None, owner.started.wait, 5)
    b = asyncio.ensure_future(scheduler.submit(stream, "B", _request(), Counting()))
    await loop.run_in_executor(None, lambda: time.sleep(0.1))
    c = await asyncio.wait_for(scheduler.submit(stream, "C", _request(seconds=2.0), Counting()), 5)
    assert order == ["C"] and not a.done() and not b.done() and c is not None
    release.set()
    await asyncio.wait_for(asyncio.gather(a, b), 5)
    assert sorted(order) == ["A", "B", "C"] and owner.calls == 1 and memo.hits == 1
