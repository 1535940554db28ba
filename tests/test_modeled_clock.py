"""The modeled and unaware clocks: the same words and times on every run (rtlab.core.costs)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from rtlab.backends import Backend
from rtlab.config import StreamConfig
from rtlab.core import scheduler as scheduler_module
from rtlab.core.costs import Calibration, CostModel, CostModelError, fit, key_for, load_cost_model
from rtlab.core.instances import get_backend
from rtlab.eval.replay import replay
from rtlab.testing import tone_words, wav_bytes

TEXT = "alpha bravo charlie delta echo foxtrot golf hotel india juliett"
FEATURES = ("audio_seconds", "calls", "prompt_words", "words")


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return tone_words(TEXT)[0]


def model_for(config: StreamConfig, **weights: float) -> CostModel:
    """A cost model with one calibration for ``config``'s backend."""
    backend = get_backend(config)
    return CostModel([Calibration(key_for(config, backend), {name: weights.get(name, 0.0) for name in FEATURES})])


def without_measured(events: list[dict], measured: tuple[str, ...] = ("measured_compute_seconds",)) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in measured} for e in events]


#: On the unaware clock the compute a summary reports is the measured compute.
UNAWARE_MEASURED = ("measured_compute_seconds", "compute_seconds", "rtf")


# --------------------------------------------------------------------------- reproducible


def test_two_modeled_runs_give_the_same_events_whatever_the_measured_compute(audio):
    # The backend's compute jitters (a sleep per second of audio): the simulated clock's
    # times follow it, the modeled clock's do not.
    config = StreamConfig.parse("backend=test,model=modeled-twice,compute_rtf=0.02,min_chunk=0.5")
    costs = model_for(config, calls=0.3, audio_seconds=0.05, words=0.01)
    first, second = (replay(audio, [config], clock="modeled", cost_model=costs)[0] for _ in range(2))
    assert without_measured(first.events) == without_measured(second.events)
    assert first.text == TEXT
    summary = first.events[-1]
    assert summary["measured_compute_seconds"] > 0
    # Each pass costs at least its 0.3 s call: the modeled clock counted them.
    assert summary["compute_seconds"] >= 0.3 * sum(1 for _ in first.lag_samples)


def test_two_unaware_runs_give_the_same_events_and_the_lowest_latency(audio):
    config = StreamConfig.parse("backend=test,model=unaware-twice,compute_rtf=0.05,min_chunk=1")
    unaware = [replay(audio, [config], clock="unaware")[0] for _ in range(2)]
    assert without_measured(unaware[0].events, UNAWARE_MEASURED) == without_measured(unaware[1].events, UNAWARE_MEASURED)
    simulated = replay(audio, [config], clock="simulated")[0]
    commits = [e for e in unaware[0].events if e["type"] == "commit"]
    simulated_commits = [e for e in simulated.events if e["type"] == "commit"]
    assert [w for e in commits for w in e["words"]] == [w for e in simulated_commits for w in e["words"]]
    # Compute takes no time: a commit comes at the audio time of its pass, and never later
    # than with compute counted.
    for fast, slow in zip(commits, simulated_commits):
        assert fast["emitted_at"] < slow["emitted_at"]
        assert round(fast["emitted_at"] % 1.0, 4) in (0.0, round(len(audio) / 16000 % 1.0, 4))


class FixedCost(Backend):
    """Takes ``fixed + per_second * audio seconds`` of (scripted) compute per call."""

    name = "fixed-cost"
    cores_per_call = 0
    fixed, per_second = 0.2, 0.05

    def __init__(self, *, model: str = "fixed") -> None:
        self.model = model

    def transcribe(self, audio, *, prompt="", language=None):
        scripted.cost += self.fixed + self.per_second * len(audio) / 16000
        return get_backend("test").transcribe(audio, prompt=prompt, language=language)


scripted = threading.local()


@pytest.fixture
def scripted_compute(monkeypatch):
    """The scheduler measures each job as the compute its backend scripted, not the time."""

    def timed(fn, args):
        scripted.cost = 0.0
        result = fn(*args)
        return result, scripted.cost

    monkeypatch.setattr(scheduler_module, "_timed", timed)


@pytest.fixture
def fixed_cost_backend():
    from rtlab.testing.conformance import registered

    with registered(FixedCost):
        yield


def test_with_a_backend_of_fixed_compute_the_modeled_and_simulated_clocks_agree(
    audio, scripted_compute, fixed_cost_backend
):
    config = StreamConfig.parse("backend=fixed-cost,min_chunk=0.5")
    costs = model_for(config, calls=FixedCost.fixed, audio_seconds=FixedCost.per_second)
    simulated = replay(audio, [config], clock="simulated")[0]
    modeled = replay(audio, [config], clock="modeled", cost_model=costs)[0]
    assert simulated.text == modeled.text == TEXT
    assert [e["type"] for e in simulated.events] == [e["type"] for e in modeled.events]
    for a, b in zip(simulated.events, modeled.events):
        assert a["emitted_at"] == pytest.approx(b["emitted_at"], abs=1e-3)


def test_calibration_recovers_the_known_costs_of_a_scripted_backend(scripted_compute, fixed_cost_backend):
    import asyncio

    from rtlab.eval.calibrate import calibrate_async

    config = StreamConfig(backend="fixed-cost")
    calibration = asyncio.run(calibrate_async(config, audio=[], repeats=1))
    assert calibration.weights["calls"] == pytest.approx(FixedCost.fixed, abs=1e-6)
    assert calibration.weights["audio_seconds"] == pytest.approx(FixedCost.per_second, abs=1e-6)
    assert calibration.fit["passes"] >= 20 and calibration.fit["r2"] == pytest.approx(1.0)
    assert calibration.key == key_for(config, get_backend(config))


def test_fit_finds_non_negative_weights():
    passes = [({"calls": 1, "audio_seconds": s, "words": w}, 0.1 + 0.02 * s) for s, w in [(1, 3), (4, 1), (9, 7), (12, 2)]]
    calibration = fit(passes, {"backend": "x", "options": {}, "device": None})
    assert calibration.weights == pytest.approx({"audio_seconds": 0.02, "calls": 0.1, "words": 0.0}, abs=1e-9)
    with pytest.raises(CostModelError, match="at least 3 passes"):
        fit(passes[:2], {})


# --------------------------------------------------------------------------- the file


def test_a_cost_model_survives_its_json_file(tmp_path):
    model = CostModel(
        [Calibration({"backend": "test", "options": {"model": "tones"}, "device": None}, {"calls": 0.5}, {"r2": 0.9})],
        hardware={"cpu_count": 2}, note="a test machine",
    )  # fmt: skip
    path = model.save(tmp_path / "costs.json")
    loaded = load_cost_model(path)
    assert loaded.calibrations == model.calibrations and loaded.note == "a test machine"
    assert loaded.sha256 == model.sha256 and len(loaded.sha256) == 64
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "is not a cost model"),
        ('{"rtlab_cost_model": 0, "calibrations": []}', "of format 0, this rtlab reads format 1: recalibrate"),
        ('{"rtlab_cost_model": 1}', "is not a cost model"),
    ],
)
def test_a_malformed_or_outdated_file_is_refused_in_one_line(tmp_path, content, match):
    path = tmp_path / "costs.json"
    path.write_text(content)
    with pytest.raises(CostModelError, match=match) as raised:
        load_cost_model(path)
    assert "\n" not in str(raised.value)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(CostModelError, match="cannot read the cost model"):
        load_cost_model(tmp_path / "none.json")


def test_a_binary_file_is_named_as_not_a_cost_model(tmp_path):
    path = tmp_path / "clip.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \xff\xfe\x80")
    with pytest.raises(CostModelError, match=r"clip.wav is not a cost model \(not UTF-8 text\)"):
        load_cost_model(path)


def test_a_cost_model_without_this_configuration_says_how_to_calibrate(audio):
    config = StreamConfig.parse("backend=test,model=calibrated")
    other = StreamConfig.parse("backend=test,model=not-calibrated,compute_rtf=0.01")
    costs = model_for(config, calls=0.1)
    costs.path = "costs.json"
    with pytest.raises(CostModelError) as raised:
        replay(audio, [other], clock="modeled", cost_model=costs)
    message = str(raised.value)
    assert "costs.json has no calibration for test (" in message and "model=not-calibrated" in message
    assert "it has test (" in message and "model=calibrated" in message
    assert "rtlab calibrate --backend test --model not-calibrated -b compute_rtf=0.01" in message


def test_a_calibration_from_before_an_option_existed_is_told_apart_in_the_message(audio):
    """A file written before the backend gained an option (its key does not name it) does
    not match; the message says what differs, where both keys would otherwise read alike."""
    config = StreamConfig.parse("backend=test,model=calibrated")
    costs = model_for(config, calls=0.1)
    (calibration,) = costs.calibrations
    older = {**calibration.key, "options": {k: v for k, v in calibration.key["options"].items() if k != "compute_rtf"}}
    costs.calibrations = [Calibration(older, calibration.weights)]
    with pytest.raises(CostModelError) as raised:
        replay(audio, [config], clock="modeled", cost_model=costs)
    message = str(raised.value)
    assert "\n" not in message and "it has test (model=calibrated, device=" in message and "(unlike it: compute_rtf not named)" in message
    costs.calibrations = [calibration]  # the key as the backend makes it: found
    assert costs.find(older | {"options": calibration.key["options"]}) is calibration


def test_a_feature_the_calibration_has_not_seen_is_refused():
    calibration = Calibration({"backend": "x", "options": {}, "device": None}, {"calls": 0.1})
    with pytest.raises(CostModelError, match="no weight for 'tokens'.*recalibrate"):
        calibration.predict({"calls": 1, "tokens": 40})


# --------------------------------------------------------------------------- every core, every entry point


def test_modeled_and_unaware_passes_take_no_cpu_slot(audio, monkeypatch):
    from rtlab.core.scheduler import Scheduler

    held: list[bool] = []
    submit = Scheduler.submit

    async def spy(self, fn, *args, hold_cores=True, **options):
        held.append(hold_cores)
        return await submit(self, fn, *args, hold_cores=hold_cores, **options)

    monkeypatch.setattr(Scheduler, "submit", spy)
    config = StreamConfig.parse("backend=test,model=no-slots")
    for clock, holds in (("unaware", False), ("modeled", False), ("simulated", True)):
        held.clear()
        replay(audio[:32000], [config], clock=clock, cost_model=model_for(config, calls=0.1))
        assert held and set(held) == {holds}, clock


def test_the_command_line_gives_the_same_lines_on_every_modeled_run(tmp_path):
    config = StreamConfig.parse("backend=test,compute_rtf=0.02")
    costs = model_for(config, calls=0.25, audio_seconds=0.01)
    costs.save(tmp_path / "costs.json")
    clip = tmp_path / "tones.wav"
    clip.write_bytes(wav_bytes(tone_words(TEXT)[0]))
    command = [
        sys.executable, "-m", "rtlab", "transcribe", str(clip), "--backend", "test", "-b", "compute_rtf=0.02",
        "--clock", "modeled", "--cost-model", str(tmp_path / "costs.json"), "--format", "jsonl",
    ]  # fmt: skip
    runs = [subprocess.run(command, capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr
    lines = [without_measured([json.loads(line) for line in run.stdout.splitlines()]) for run in runs]
    assert lines[0] == lines[1] and lines[0][-1]["text"] == TEXT


@pytest.mark.parametrize("command", ["transcribe", "bench"])
def test_a_cost_model_given_for_another_clock_is_refused_not_ignored(command, tone_corpus, tmp_path):
    """Before, --cost-model with --clock simulated (rtlab bench's default) or unaware was
    silently left unused: the user took the figures for modeled ones."""
    from click.testing import CliRunner

    from rtlab.cli import cli

    costs = model_for(StreamConfig.parse("backend=test"), calls=0.1)
    costs.save(tmp_path / "costs.json")
    if command == "transcribe":
        args, clocks = [str(sorted(tone_corpus.glob("*.wav"))[0]), "--backend", "test"], ("unaware", "simulated")
    else:
        args, clocks = [str(tone_corpus), "--config", "backend=test", "--out", str(tmp_path / "out")], (None, "unaware")
    for clock in clocks:
        chosen = ["--clock", clock] if clock else []  # None: rtlab bench's default, simulated
        result = CliRunner().invoke(cli, [command, *args, *chosen, "--cost-model", str(tmp_path / "costs.json")])
        assert result.exit_code == 1, result.output
        assert f"--cost-model is the modeled clock's cost model, and the {clock or 'simulated'} clock" in result.output
        assert result.output.rstrip().endswith("add --clock modeled, or leave --cost-model out")
    assert not (tmp_path / "out").exists(), "refused before any work"
    modeled = CliRunner().invoke(cli, [command, *args, "--clock", "modeled", "--cost-model", str(tmp_path / "costs.json")])
    assert modeled.exit_code == 0, modeled.output


def test_bench_results_name_the_clock_and_the_cost_model(tone_corpus, tmp_path):
    from rtlab.eval.bench import run_bench

    config = StreamConfig.parse("backend=test,min_chunk=0.5")
    costs = model_for(config, calls=0.1)
    costs.save(tmp_path / "costs.json")
    run = run_bench(tone_corpus, [config], clock="modeled", cost_model=tmp_path / "costs.json", progress=False)
    records = run.records()
    assert records[0]["clock"] == "modeled" and records[0]["cost_model"]["sha256"] == costs.sha256
    assert all(r["cost_model"]["path"] == str(tmp_path / "costs.json") for r in records if r["record"] == "summary")
    assert "cost model: " in run.table()


def test_rtlab_ships_reference_costs_for_the_embedded_models_and_says_how_to_add_one():
    """The reference file covers faster-whisper's defaults on CPU: tiny.en (greedy, with and
    without pad_seconds=1) and base, greedy and at its default beam search (derived from a
    faster machine, as its fit says); a configuration it lacks is fitted into the user's
    own file."""
    from rtlab.core.costs import calibration_key
    from rtlab.registry import get_registry

    reference = load_cost_model()
    assert reference.path == "rtlab's reference-cpu-costs.json" and reference.note and reference.hardware
    defaults = get_registry().accepted_options("backend", "faster-whisper")
    greedy = {"beam_size": 1}  # what faster-whisper chooses for tiny.en (resolved_options)
    for chosen in ({"model": "tiny.en"}, {"model": "tiny.en", "pad_seconds": 1}, {"model": "base"}):
        calibration = reference.find(calibration_key("faster-whisper", {**defaults, **greedy, **chosen}, "cpu"))
        assert calibration.weights and all(w >= 0 for w in calibration.weights.values())
        assert calibration.fit["passes"] >= 20
    beam = reference.find(calibration_key("faster-whisper", {**defaults, "model": "base", "beam_size": 5}, "cpu"))
    assert beam.weights["tokens"] > 0 and "not timed on the reference machine" in beam.fit["derived"]
    assert "derived" not in reference.find(calibration_key("faster-whisper", {**defaults, **greedy, "model": "base"}, "cpu")).fit
    if "openai-whisper" in get_registry().names("backend"):  # its calibration: tiny.en as loaded at its defaults
        config = StreamConfig.parse("backend=openai-whisper,model=tiny.en")
        from rtlab.backends import ensure_loaded

        assert reference.find(key_for(config, ensure_loaded(get_backend(config)))).weights["calls"] > 0
    with pytest.raises(CostModelError) as missing:
        reference.find(calibration_key("faster-whisper", {**defaults, "model": "tiny.en", "beam_size": 2}, "cpu"))
    message = str(missing.value)
    assert "\n" not in message and "-b beam_size=2 --out rtlab-costs.json, then pass --cost-model rtlab-costs.json" in message


def test_a_language_detection_is_a_cost_feature_and_only_where_the_backend_has_one():
    from rtlab.backends import Backend
    from rtlab.core.instances import SessionBackend
    from rtlab.core.memo import PassMemo

    class Detecting(Backend):
        name = "detecting"
        calls = 0

        def detect_language(self, audio):
            self.calls += 1
            return ("de", 0.9) if len(audio) >= 16000 else None  # too short: no encoder run

    backend = Detecting()
    session = SessionBackend(backend)
    assert session.detect_language(np.zeros(16000, np.float32)) == ("de", 0.9)
    assert session.detect_language(np.zeros(100, np.float32)) is None
    assert session.take_features() == {"language_detections": 1.0}
    assert not hasattr(SessionBackend(Backend()), "detect_language"), "optional: absent stays absent"
    memo = PassMemo()
    first, second = SessionBackend(backend, memo=memo), SessionBackend(backend, memo=memo)
    calls = backend.calls
    assert first.detect_language(np.ones(16000, np.float32)) == second.detect_language(np.ones(16000, np.float32))
    assert backend.calls == calls + 1 and memo.hits == 1
    assert second.take_features() == {"language_detections": 1.0}, "a reused detection still costs what it cost"


@pytest.mark.parametrize("clock", ["modeled", "unaware"])
def test_clips_replayed_side_by_side_give_the_events_of_clips_one_after_another(clock, tone_corpus, tmp_path):
    """On the unmeasured clocks several clips replay at once (the default there): the
    results per clip are the same as one clip after another."""
    from rtlab.eval.bench import run_bench

    configs = [StreamConfig.parse(c) for c in ("backend=test,min_chunk=0.5", "backend=test,min_chunk=1,deadline_sec=1")]
    costs = model_for(configs[0], calls=0.1, audio_seconds=0.02) if clock == "modeled" else None
    runs = [run_bench(tone_corpus, configs, clock=clock, cost_model=costs, progress=False, clips_at_once=n)
            for n in (1, 3)]  # fmt: skip
    one, three = ([(s.file, s.config["name"], s.hypothesis, s.word_latencies, s.first_text_latency) for s in run.streams]
                  for run in runs)  # fmt: skip
    assert len(one) == 2 * len(list(tone_corpus.glob("*.txt"))) and all(s[2] and s[3] for s in one)
    assert one == three
    assert runs[0].summaries[0]["wer"] == runs[1].summaries[0]["wer"]


@pytest.mark.parametrize("clock", ["wall", "simulated"])
def test_measured_clocks_replay_one_clip_at_a_time(clock, tone_corpus):
    from rtlab.eval.bench import run_bench

    with pytest.raises(ValueError, match="clips_at_once=2 needs an unmeasured clock"):
        run_bench(tone_corpus, [StreamConfig.parse("backend=test")], clock=clock, progress=False, clips_at_once=2)


# --------------------------------------------------------------------------- batched replays


@pytest.mark.parametrize("clock", ["modeled", "unaware"])
def test_a_batched_replay_gives_the_events_of_one_that_does_not(clock, audio, monkeypatch):
    """``batch``: passes of the replay's streams share model calls where the backend
    batches; the events are those of one pass per call, the runs keep the configurations
    as given, and the cost model fitted without ``max_batch`` serves the batched backend."""
    from rtlab.testing.tones import ToneBackend

    sizes = []
    batched_call = ToneBackend.transcribe_batch

    def counting(self, requests):
        sizes.append(len(requests))
        return batched_call(self, requests)

    monkeypatch.setattr(ToneBackend, "transcribe_batch", counting)
    configs = [StreamConfig.parse(f"backend=test,model=batched-replay,compute_rtf=0.02,batch_wait_ms=50,{c}") for c in (
        "min_chunk=0.5", "min_chunk=1", "min_chunk=1,deadline_sec=1", "min_chunk=0.7",
    )]  # fmt: skip
    costs = model_for(configs[0], calls=0.2, audio_seconds=0.05, words=0.01) if clock == "modeled" else None
    drop = ("measured_compute_seconds",) + (UNAWARE_MEASURED if clock == "unaware" else ())
    alone = replay(audio, configs, clock=clock, cost_model=costs, reuse_passes=False)
    assert not sizes, "no batch unless asked for"
    batched = replay(audio, configs, clock=clock, cost_model=costs, reuse_passes=False, batch=4)
    assert max(sizes) > 1, f"passes of several streams shared a call: {sizes}"
    for a, b in zip(alone, batched):
        assert a.error is None and b.error is None
        assert without_measured(a.events, drop) == without_measured(b.events, drop)
        assert b.configuration in configs
    assert alone[0].text == TEXT


def test_a_batched_bench_gives_the_results_of_one_that_is_not_and_records_its_batch(tone_corpus):
    from rtlab.eval.bench import run_bench

    configs = [StreamConfig.parse(c) for c in ("backend=test,min_chunk=0.5", "backend=test,min_chunk=1,deadline_sec=1")]
    runs = [run_bench(tone_corpus, configs, clock="unaware", progress=False, batch=batch) for batch in (None, 3)]
    plain, batched = ([(s.file, s.config["name"], s.hypothesis, s.word_latencies) for s in run.streams] for run in runs)
    assert plain == batched and all(s[2] for s in plain)
    assert [r.run_record()["batch"] for r in runs] == [None, 3]
    assert "passes batched up to 3 per model call" in runs[1].table()
    assert "per model call" not in runs[0].table()
    assert [c.backend_options for c in runs[1].configurations] == [{}, {}], "the configurations as given"


def test_a_batched_replay_of_alignatt_gives_the_events_of_one_that_is_not(audio):
    """AlignAtt's encoder runs and decoder steps join the batches of a batched replay; its
    commits stay those of the replay without batches."""
    configs = [StreamConfig.parse(f"backend=test-attention,model=batched-alignatt,batch_wait_ms=50,policy=alignatt,min_chunk={c}")
               for c in (0.5, 0.7, 1.0)]  # fmt: skip
    alone = replay(audio, configs, clock="unaware", reuse_passes=False)
    batched = replay(audio, configs, clock="unaware", reuse_passes=False, batch=4)
    drop = UNAWARE_MEASURED
    for a, b in zip(alone, batched):
        assert a.error is None and b.error is None and a.text == TEXT
        assert without_measured(a.events, drop) == without_measured(b.events, drop)
    backend = get_backend(StreamConfig.parse("backend=test-attention,model=batched-alignatt,batch_wait_ms=50,max_batch=4"))
    stats = scheduler_module.scheduler_for(backend).batcher.stats
    assert max(stats.by_kind["step_batch"]) > 1, stats.by_kind


def test_a_replay_batches_only_where_the_configuration_leaves_it_to_the_replay():
    from rtlab.eval.replay import _as_run

    assert _as_run(StreamConfig.parse("backend=test"), 4).backend_options["max_batch"] == 4
    assert _as_run(StreamConfig.parse("backend=test,max_batch=2"), 4).backend_options["max_batch"] == 2
    assert "max_batch" not in _as_run(StreamConfig.parse("backend=test"), None).backend_options


@pytest.mark.parametrize("clock", ["wall", "simulated"])
def test_measured_clocks_refuse_a_batched_replay(clock, audio, tone_corpus):
    from rtlab.eval.bench import run_bench

    config = StreamConfig.parse("backend=test")
    with pytest.raises(ValueError, match="batch=4 needs an unmeasured clock"):
        replay(audio, [config], clock=clock, batch=4)
    with pytest.raises(ValueError, match="batch=4 needs an unmeasured clock"):
        run_bench(tone_corpus, [config], clock=clock, progress=False, batch=4)
    for bad in (0, True, 2.5, 10_000):
        with pytest.raises(ValueError, match="batch must be a whole number"):
            replay(audio, [config], clock="unaware", batch=bad)


def test_a_calibration_key_leaves_out_how_passes_are_run_together(tmp_path):
    """max_batch and batch_wait_ms say how passes share calls, not what one costs: a
    calibration serves a configuration whatever they are, also from a file that names them."""
    config = StreamConfig.parse("backend=test,model=key-without-batch")
    batched = StreamConfig.parse("backend=test,model=key-without-batch,max_batch=8,batch_wait_ms=5")
    key = key_for(config, get_backend(config))
    assert key == key_for(batched, get_backend(batched)) and "max_batch" not in key["options"]
    costs = model_for(config, calls=0.1)
    data = costs.to_dict()
    data["calibrations"][0]["key"]["options"].update(max_batch=1, batch_wait_ms=10.0)  # an older file
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert load_cost_model(path).find(key).weights["calls"] == 0.1
