"""The scripts in benchmarks/, run as a user runs them (a Python subprocess), with the
deterministic tone backend on the tone corpus (conftest): tables printed, JSON and PNG written,
and the exit status that says whether the replay target held."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtlab.core.memory import interval as memory_interval, malloc_usage
from rtlab.testing import TONE_CLIPS

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.timeout(240)


def benchmark_script(name: str):
    """``benchmarks/NAME.py`` imported as a module, for its functions."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True, text=True, timeout=200, cwd=ROOT,
    )  # fmt: skip


def test_replay_script_checks_together_against_one_at_a_time(tone_corpus, tmp_path):
    out = tmp_path / "out"
    result = run_script("replay.py", "--backend", "test", "--corpus", str(tone_corpus), "--out", str(out))
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "clock: simulated (together)" in result.stdout
    assert "clock: simulated (one at a time)" in result.stdout
    assert "WER together and alone: the same in every configuration" in result.stdout
    report = json.loads((out / "replay.json").read_text(encoding="utf-8"))
    checks = report["checks"]
    assert checks["same_wer_as_alone"]  # the tone backend is deterministic
    # Whether it beat the audio is a wall-clock figure: reported, not asserted here, but the
    # verdict, the printed line and the exit status must agree with the measured times.
    faster = checks["wall_seconds_together"] < checks["audio_seconds"]
    assert checks["faster_than_the_audio"] == faster
    assert ("NOT faster than the audio" in result.stdout) != faster
    assert result.returncode == (0 if faster else 1)
    together, alone = report["together"], report["one_at_a_time"]
    assert together["replay_mode"] == "together" and alone["replay_mode"] == "one at a time"
    assert len(together["summaries"]) == 5  # the five default policies
    # The tone backend hears every word: the stream's WER is 0 in every configuration.
    assert {s["wer"]["value"] for s in together["summaries"]} == {0.0}


def test_replay_checks_fail_on_another_wer_or_a_slow_replay():
    """The checks can fail: another WER together than alone (other edit counts), or a
    replay slower than the audio."""
    script = benchmark_script("replay")

    class Run:
        def __init__(self, wers, wall):
            self.summaries = [{"name": n, "wer": {"value": v, "errors": round(v * 10)}} for n, v in wers.items()]
            self.audio_seconds, self.wall_seconds = 40.9, wall

    together = Run({"a": 0.1, "b": 0.2}, wall=22.0)
    alone = Run({"a": 0.1, "b": 0.3}, wall=44.0)
    checks = script.compare(together, alone)
    assert checks["faster_than_the_audio"] and not checks["same_wer_as_alone"]
    assert checks["wer_differs"] == {"b": [0.2, 0.3]}
    assert not script.compare(Run({"a": 0.1}, wall=41.0), Run({"a": 0.1}, wall=80.0))["faster_than_the_audio"]


def test_policies_script_sweeps_min_chunk(tone_corpus, tmp_path):
    out = tmp_path / "out"
    result = run_script("policies.py", "--backend", "test", "--corpus", str(tone_corpus), "--out", str(out),
                        "--min-chunk", "0.5", "--min-chunk", "2")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "min_chunk=0.5 s" in result.stdout and "min_chunk=2 s" in result.stdout
    report = json.loads((out / "policies.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in report["summaries"]] == ["min_chunk=0.5 s", "min_chunk=2 s"]
    medians = [s["latency"]["median"] for s in report["summaries"]]
    assert medians[0] < medians[1]  # a longer chunk commits later
    assert (out / "policies.png").read_bytes()[:8] == PNG_MAGIC


def test_engines_script_measures_each_engine_in_its_own_process(tone_corpus, tmp_path):
    out = tmp_path / "out"
    result = run_script("engines.py", "--corpus", str(tone_corpus), "--out", str(out),
                        "--config", "backend=test", "--config", "backend=test,compute_rtf=0.05")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "engines.json").read_text(encoding="utf-8"))
    assert report["benchmark"] == "engines" and report["clock"] == "offline"
    fast, slow = (c["result"] for c in report["configurations"])
    assert fast["wer"]["value"] == slow["wer"]["value"] == 0.0
    assert fast["hypotheses"] == TONE_CLIPS
    assert slow["rtf"] >= 0.05 > fast["rtf"]  # the sleeping backend is the slower one
    assert slow["peak_rss_bytes"] >= slow["baseline_rss_bytes"] > 0
    assert (out / "engines.png").read_bytes()[:8] == PNG_MAGIC


def test_clocks_script_puts_the_clocks_side_by_side(tone_corpus, tmp_path):
    from rtlab.config import StreamConfig
    from rtlab.core.costs import Calibration, CostModel, key_for
    from rtlab.core.instances import get_backend

    config = StreamConfig(backend="test")
    weights = {"calls": 0.2, "audio_seconds": 0.01, "words": 0.0, "prompt_words": 0.0}
    costs = CostModel([Calibration(key_for(config, get_backend(config)), weights)])
    costs.save(tmp_path / "costs.json")
    out = tmp_path / "out"
    result = run_script(
        "clocks.py", "--backend", "test", "--corpus", str(tone_corpus), "--cost-model", str(tmp_path / "costs.json"),
        "--skip-wall", "--repeats", "2", "--batch", "4", "--out", str(out), "--markdown", str(tmp_path / "clocks.md"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "clocks.json").read_text(encoding="utf-8"))
    assert [row["clock"] for row in report["clocks"]] == ["simulated", "modeled", "unaware"]
    assert {row["wer"] for row in report["clocks"]} == {0.0}  # the tone backend hears every word
    assert report["modeled_runs_identical"] is True
    assert report["sweep"]["modeled"]["same_wer_every_run"] is True
    assert report["sweep"]["modeled"]["wer"] == report["sweep"]["modeled, no reused calls"]["wer"]
    reused, calls = report["sweep"]["modeled"]["reused_calls"][0]
    assert 0 < reused < calls, "configurations of the sweep share some calls, not all"
    assert report["sweep"]["simulated"]["reused_calls"][0] == [0, 0]
    page = (tmp_path / "clocks.md").read_text(encoding="utf-8")
    assert "| modeled | 0.0% |" in page and costs.sha256[:12] in page
    assert f"{reused} of {calls} backend calls reused" in page
    assert report["sweep_batch"] == 4 and "sweep, modeled (passes batched up to 4 per call)" in page
    assert "modeled, no reused calls, not batched" in page and "between the medians" in page


def test_batching_script_compares_batched_and_unbatched_sessions(tone_corpus, tmp_path):
    out = tmp_path / "out"
    # --seconds 2: each session streams the corpus's first clip alone (2.8 s with its pause).
    result = run_script(
        "batching.py", "--backend", "test", "-b", "compute_rtf=0.2", "--corpus", str(tone_corpus),
        "--seconds", "2", "--sessions", "1", "--sessions", "3", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "batching.json").read_text(encoding="utf-8"))["rows"]
    assert [(r["sessions"], r["max_batch"]) for r in rows] == [(1, 1), (1, 2), (3, 1), (3, 3)]
    assert set(rows[1]["batch_sizes"]) <= {"1", 1}, "one session alone forms batches of one"
    assert rows[2]["batch_sizes"] == {} and sum(int(k) * v for k, v in rows[3]["batch_sizes"].items()) > 0
    assert rows[2]["batch_wait_median"] is None and rows[3]["batch_wait_median"] >= 0
    assert "batch wait median" in result.stdout
    # What matters is that batching changes no word.
    assert all(r["errors"] == 0 for r in rows) and len({r["wer"] for r in rows}) == 1
    # Commit latency as rtlab defines it: against the word ends of an offline pass.
    assert all(r["latency_median"] is not None and r["latency_p95"] >= r["latency_median"] for r in rows)


def test_before_after_script_puts_two_versions_side_by_side(tone_corpus, tmp_path):
    for label in ("before", "after"):
        result = run_script("replay.py", "--backend", "test", "--corpus", str(tone_corpus), "--out", str(tmp_path / label))
        assert result.returncode in (0, 1), result.stderr
    page = tmp_path / "page.md"
    result = run_script("before_after.py", str(tmp_path / "before"), str(tmp_path / "after"),
                        "--before-label", "v1", "--after-label", "v2", "--command", "make it", "--out", str(page))  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert "v1 / v2" in text and "make it" in text and "## benchmarks/replay.py" in text
    assert text.count("| 0.0% / 0.0% | 0.0% / 0.0% |") == 5  # five configurations, WER together and alone


def test_accuracy_script_reports_offline_and_streaming_wer_and_words_kept_per_language(tone_corpus, tmp_path):
    import shutil

    shutil.copytree(tone_corpus, tone_corpus.parent / "de")  # a second "language" beside the first
    out = tmp_path / "out"
    result = run_script("accuracy.py", "--backend", "test", "--corpus", str(tone_corpus), "--languages", "en,de",
                        "--configuration", "default", "--long-form", "0.25", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "accuracy.json").read_text(encoding="utf-8"))
    rows = [(r["language"], r["language_option"], r["long_form"], r["normalizer"]) for r in report["rows"]]
    assert rows == [
        ("en", "given", False, "whisper-english"),
        ("en", "given", True, "whisper-english"),
        ("de", "given", False, "whisper-basic"),
        ("de", "detected", False, "whisper-basic"),
        ("de", "given", True, "whisper-basic"),
    ]
    for row in report["rows"]:  # the tone backend hears every word, offline and streamed
        assert row["wer"] == row["offline_wer"] == 0.0 and row["kept"] == row["kept_lowest"] == 1.0
    assert report["rows"][1]["audio_seconds"] >= 15 and report["rows"][1]["files"] == 1
    assert report["rows"][3]["detected"] == ["en"], "the summaries' language: the tone backend's own"
    assert "whisper-basic" in result.stdout and "offline WER" in result.stdout
    clips = report["rows"][0]["files"]
    assert (f"en (given) default: streaming minus offline +0.0 points (95% CI +0.0 to +0.0, {clips} clips)"
            in result.stdout)  # fmt: skip
    assert "de (given) long form default: streaming minus offline +0.0 points" in result.stdout


def _strict_json(text: str) -> object:
    """JSON as the standard has it: Python's parser takes Infinity and NaN, others refuse them."""

    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_accuracy_script_writes_valid_json_where_a_clip_has_no_reference_words(tone_corpus, tmp_path):
    (tone_corpus / "c.txt").write_text("\n", encoding="utf-8")  # the tones are heard, nothing to hear
    out = tmp_path / "out"
    result = run_script("accuracy.py", "--backend", "test", "--corpus", str(tone_corpus), "--languages", "en",
                        "--configuration", "default", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = _strict_json((out / "accuracy.json").read_text(encoding="utf-8"))
    streams = {s["file"]: s for s in report["rows"][0]["streams"]}
    # "one two three": one word, "123", after the English normalizer
    assert streams["c.wav"]["wer"] is None and streams["c.wav"]["wer_counts"]["insertions"] == 1
    assert streams["a.wav"]["wer"] == 0.0


def test_accuracy_script_on_the_modeled_clock_names_its_cost_model(tone_corpus, tmp_path):
    from rtlab.config import StreamConfig
    from rtlab.core.costs import Calibration, CostModel, key_for
    from rtlab.core.instances import get_backend

    config = StreamConfig(backend="test", model="tiny.en")
    weights = {"calls": 0.5, "audio_seconds": 0.0, "words": 0.0, "prompt_words": 0.0}
    costs = CostModel([Calibration(key_for(config, get_backend(config)), weights)], note="a machine of the test")
    costs.save(tmp_path / "costs.json")
    runs = []
    for name in ("one", "two"):
        result = run_script("accuracy.py", "--backend", "test", "--corpus", str(tone_corpus), "--languages", "en",
                            "--configuration", "default", "--clock", "modeled", "--cost-model",
                            str(tmp_path / "costs.json"), "--out", str(tmp_path / name))  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        runs.append(json.loads((tmp_path / name / "accuracy.json").read_text(encoding="utf-8")))
    report = runs[0]
    assert report["clock"] == "modeled" and report["cost_model"]["sha256"] == costs.sha256
    assert f"clock modeled (cost model {tmp_path / 'costs.json'} (sha256 {costs.sha256[:12]}, a machine of the test))" in result.stdout
    # Each pass costs 0.5 s: commits wait for it, and two runs give the same latencies.
    assert report["rows"][0]["latency_median"] >= 0.5
    assert [r["latency_median"] for r in runs[0]["rows"]] == [r["latency_median"] for r in runs[1]["rows"]]


def test_accuracy_script_streams_each_clip_at_shifted_pass_phases(tone_corpus, tmp_path):
    out = tmp_path / "out"
    relative = os.path.relpath(out, ROOT)  # the clips' paths in the manifests are relative to their folder
    result = run_script("accuracy.py", "--backend", "test", "--corpus", str(tone_corpus), "--languages", "en",
                        "--configuration", "default", "--shifts", "2", "--out", relative)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "accuracy.json").read_text(encoding="utf-8"))
    rows = report["rows"]
    assert [r["shift"] for r in rows] == [0.0, 0.5] and report["complete"] is True
    clip = sorted((out / "shifted" / "en" / "0.5").glob("*.wav"))[0]
    original = sorted(p for p in tone_corpus.iterdir() if p.suffix in (".wav", ".ogg", ".flac"))[0]
    from rtlab.decoders.files import decode_audio

    # Float WAV copies: at shift 0 the clip is the original's samples exactly, later after silence.
    samples = decode_audio(original)
    assert np.array_equal(decode_audio(clip), np.concatenate([np.zeros(8_000, np.float32), samples]))
    assert np.array_equal(decode_audio(sorted((out / "shifted" / "en" / "0").glob("*.wav"))[0]), samples)
    assert all(r["wer"] == 0.0 and r["files"] == rows[0]["files"] for r in rows)
    assert "default +0.5 s" in result.stdout
    assert ("en (given) default: WER over 2 shifts: mean 0.0%, range 0.0% to 0.0%; offline mean 0.0%, "
            "range 0.0% to 0.0%; lowest clip kept 100.0% (word count 100.0% of offline; of the words the reference "
            "confirms 100.0%); streaming minus offline "
            f"+0.0 points (95% CI +0.0 to +0.0, {rows[0]['files']} clips)") in result.stdout  # fmt: skip
    # --results prints the saved run again, the same table and lines, and runs nothing.
    again = run_script("accuracy.py", "--results", str(out / "accuracy.json"))
    assert again.returncode == 0, again.stderr
    summary = next(line for line in result.stdout.splitlines() if line.startswith("en (given) default: WER over"))
    assert summary in again.stdout.splitlines() and "default +0.5 s" in again.stdout and "wrote" not in again.stdout
    unreadable = run_script("accuracy.py", "--results", str(out / "shifted" / "en" / "0.5.jsonl"))
    assert unreadable.returncode == 2 and "is not an accuracy.json" in unreadable.stderr
    bad = run_script("accuracy.py", "--backend", "test", "--corpus", str(tone_corpus), "--shifts", "0")
    assert bad.returncode == 2 and "--shifts must be from 1 to 20" in bad.stderr


def test_accuracy_script_keeps_the_runs_it_finished_when_stopped(tone_corpus, tmp_path):
    """accuracy.json is written after every run (a language at one placement), marked
    incomplete until the last: a benchmark of hours stopped with Ctrl-C, or killed, keeps
    what it measured. Before, it was written once, at the end."""
    import signal
    import time

    out = tmp_path / "out"
    # A slow backend (0.3 s of compute per second of audio): each placement takes seconds.
    # Ctrl-C as a terminal gives it, whatever this process inherited (see test_bench).
    script = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--backend", "test",
                               "--corpus", str(tone_corpus), "--languages", "en", "--shifts", "3",
                               "--configuration", "slow:compute_rtf=0.3", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "accuracy.json").exists():
            assert time.monotonic() < deadline and script.poll() is None, script.communicate()
            time.sleep(0.1)
        script.send_signal(signal.SIGINT)  # during the second placement
        stdout, stderr = script.communicate(timeout=60)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    assert script.returncode == 130, stdout + stderr
    report = json.loads((out / "accuracy.json").read_text(encoding="utf-8"))
    assert report["complete"] is False and [r["shift"] for r in report["rows"]] == [0.0], report["rows"]
    assert f"interrupted: {out / 'accuracy.json'} keeps the 1 rows done" in stderr
    assert "CleanupSkipped" not in stderr  # the replay stopped its processors; no loop shutdown did
    assert "[1/3, " in stderr and "en after 0 s of silence" in stderr and "en after 0.333 s of silence" in stderr
    again = run_script("accuracy.py", "--results", str(out / "accuracy.json"))
    assert again.returncode == 0 and "(incomplete: the rows of the runs done when it was written" in again.stdout, again.stdout + again.stderr
    assert "slow +0 s" in again.stdout and "+0.333 s" not in again.stdout
    # --resume runs what the report lacks and keeps what it has; it refuses a report measured
    # otherwise, and a complete one.
    command = ["accuracy.py", "--backend", "test", "--corpus", str(tone_corpus), "--languages", "en", "--shifts", "3",
               "--configuration", "slow:compute_rtf=0.3", "--out", str(out), "--resume"]  # fmt: skip
    other = run_script(*command, "--clock", "simulated")
    assert other.returncode == 2 and "differs from this run in: clock (resume it with the options" in other.stderr, other.stderr
    elsewhere = tmp_path / "elsewhere"  # a report whose saved run is the second of three placements
    elsewhere.mkdir()
    (elsewhere / "accuracy.json").write_text(json.dumps({
        **report, "rows": [{**report["rows"][0], "shift": 0.333}]}), encoding="utf-8")  # fmt: skip
    other = run_script(*command, "--shifts", "2", "--out", str(elsewhere))  # the last one given counts
    assert other.returncode == 2 and "a run this one would not make (en, given, shift 0.333)" in other.stderr, other.stderr
    assert sorted(elsewhere.iterdir()) == [elsewhere / "accuracy.json"]  # refused before the plan wrote its clips
    missing = run_script(*command, "--out", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no report to resume" in missing.stderr and not (tmp_path / "none").exists()
    first = report["rows"][0]
    resumed = run_script(*command)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 of 3 runs done" in resumed.stderr and "[2/3, " in resumed.stderr and "after 0 s of" not in resumed.stderr
    report = json.loads((out / "accuracy.json").read_text(encoding="utf-8"))
    assert report["complete"] is True and [r["shift"] for r in report["rows"]] == [0.0, 0.333, 0.667]
    assert report["rows"][0] == first  # kept as it was, not run again
    assert "slow +0 s" in resumed.stdout and "slow: WER over 3 shifts" in resumed.stdout  # the report is whole
    finished = run_script(*command)
    assert finished.returncode == 2 and "is complete: nothing to resume" in finished.stderr
    # A report that holds only the second placement: the others are made, the rows kept in the plan's order.
    grown = tmp_path / "grown"
    grown.mkdir()
    (grown / "accuracy.json").write_text(json.dumps({**report, "complete": False, "rows": [report["rows"][1]]}),
                                         encoding="utf-8")  # fmt: skip
    more = run_script(*command, "--out", str(grown))
    assert more.returncode == 0 and "1 of 3 runs done" in more.stderr, more.stderr
    rows = json.loads((grown / "accuracy.json").read_text(encoding="utf-8"))["rows"]
    assert [r["shift"] for r in rows] == [0.0, 0.333, 0.667] and rows[1] == report["rows"][1]


def test_long_form_script_scores_each_clip_of_the_long_stream_and_checks_its_summary(tone_corpus, tmp_path):
    out = tmp_path / "out"
    result = run_script("long_form.py", "--backend", "test", "--model", "tones", "--corpus", str(tone_corpus),
                        "--minutes", "0.5", "--configuration", "default", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "long_form.json").read_text(encoding="utf-8"))
    (row,) = report["rows"]
    clips = len(row["clips_alone_per_clip"])
    assert row["stream_seconds"] >= 30 and row["segments"] == row["repetitions"] * clips >= 2 * clips
    # the tone backend hears every word: each clip of the long stream keeps its own words
    assert row["wer"]["value"] == row["clips_alone_wer"]["value"] == row["segments_alone_wer"]["value"] == 0.0
    assert len(row["segments_alone_per_clip"]) == clips
    # the clips alone at four placements (after 0 to 0.75 s of silence), every one scored
    assert [s["shift"] for s in row["clips_alone_shifts"]] == [0.0, 0.25, 0.5, 0.75]
    assert all(s["wer"] == 0.0 and len(s["texts"]) == clips for s in row["clips_alone_shifts"])
    one_placement = row["segments_alone_wer"]["reference_words"] // row["repetitions"]  # the clips' words once
    assert row["clips_alone_wer"]["reference_words"] == 4 * one_placement  # pooled over the placements
    assert [s["clip"] for s in row["per_segment"]] == [i % clips for i in range(row["segments"])]
    # each segment streamed alone is saved beside the long stream's text for it
    assert all(s["alone"] == s["hypothesis"] != "" and s["wer_alone"] == 0.0 for s in row["per_segment"])
    assert row["summary_check"]["ok"] and row["summary_check"]["committed_words"] > 0
    assert row["memory"]["samples"] >= 4 and row["memory"]["peak_mib"] >= row["memory"]["start_mib"] > 0
    if malloc_usage() is not None:  # glibc's account: its blocks in use are part of what is resident
        assert 0 < row["memory"]["in_use_end_mib"] < row["memory"]["end_mib"]
        assert len(row["memory"]["malloc_series"]) == len(row["memory"]["series"])
    assert row["memory"]["trim_seconds"] == memory_interval
    assert max(row["memory"]["quarter_peaks_mib"]) == row["memory"]["peak_mib"]
    assert all(0 < median <= peak for median, peak in zip(row["memory"]["quarter_medians_mib"], row["memory"]["quarter_peaks_mib"]))
    assert "RSS median per quarter" in result.stdout
    assert row["lag"]["max"] is not None and (out / "long_form.png").stat().st_size > 0
    assert "| default" in result.stdout and "whisper-english" in result.stdout
    # no difference from the clips or segments alone, with its interval over the source clips
    for key in ("minus_clips_alone", "minus_segments_alone"):
        assert (row[key]["value"], row[key]["low"], row[key]["high"], row[key]["groups"]) == (0.0, 0.0, 0.0, clips)
    line = (f"default: the stream's WER minus its clips alone +0.0 points (95% CI +0.0 to +0.0, {clips} clips); "
            f"minus its segments alone +0.0 points (95% CI +0.0 to +0.0, {clips} clips)")  # fmt: skip
    assert line in result.stdout.splitlines() and line in (out / "long_form.md").read_text(encoding="utf-8")


def test_long_form_compares_the_stream_with_its_clips_alone_drawing_the_source_clips():
    long_form = benchmark_script("long_form")
    clip_texts = ["the cat sat on the mat", "a dog ran in the park"]
    references = clip_texts * 3
    # the stream loses "cat" every time; alone, the first placement loses "dog" once
    hypotheses = ["the sat on the mat", clip_texts[1]] * 3
    alone = [["the cat sat on the mat", "a ran in the park"], list(clip_texts)]
    differences = long_form.against_alone(references, hypotheses, clip_texts, alone, list(references), "whisper-english")
    clips, segments = differences["minus_clips_alone"], differences["minus_segments_alone"]
    assert clips["value"] == pytest.approx(3 / 36 - 1 / 24) and clips["groups"] == 2
    assert clips["low"] < clips["value"] < clips["high"]  # the two clips differ: some draws hold only one
    assert segments["value"] == pytest.approx(3 / 36) and segments["groups"] == 2
    rows = [{"configuration": "default", **differences}, {"configuration": "stream only", "minus_clips_alone": None,
                                                         "minus_segments_alone": None}]  # fmt: skip
    (line,) = long_form.difference_lines(rows)
    assert line.startswith("default: the stream's WER minus its clips alone +4.2 points (95% CI ")
    assert line.endswith("; minus its segments alone +8.3 points (95% CI +0.0 to +16.7, 2 clips)")
    none = long_form.against_alone(references, hypotheses, clip_texts, [], [], "whisper-english")
    assert none == {"minus_clips_alone": None, "minus_segments_alone": None}


def test_long_form_script_pins_the_kernels_it_is_asked_for(tone_corpus, tmp_path):
    from rtlab.kernels import PORTABLE_KERNELS, portable_kernels_refusal

    if portable_kernels_refusal():
        pytest.skip(portable_kernels_refusal())
    # Without the suite's own pins (conftest.py), which a subprocess would inherit.
    environment = {k: v for k, v in os.environ.items() if k not in PORTABLE_KERNELS and k != "RTLAB_FFMPEG_CPUFLAGS"}
    command = [sys.executable, str(ROOT / "benchmarks" / "long_form.py"), "--backend", "test", "--model", "tones",
               "--corpus", str(tone_corpus), "--minutes", "0.2", "--configuration", "default", "--stream-only"]  # fmt: skip
    for kernels, named in (("portable", True), ("auto", False)):
        out = tmp_path / kernels
        result = subprocess.run([*command, "--kernels", kernels, "--out", str(out)], capture_output=True, text=True,
                                timeout=200, cwd=ROOT, env=environment)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads((out / "long_form.json").read_text(encoding="utf-8"))
        assert bool(report["environment"]["kernel_overrides"]) is named, report["environment"]["kernel_overrides"]
        assert ("portable kernels" in result.stdout.split("hardware:")[1].splitlines()[0]) is named
    wrong = run_script("long_form.py", "--kernels", "fastest")
    assert wrong.returncode == 2 and "invalid choice: 'fastest'" in wrong.stderr
    wrong = run_script("long_form.py", "--clip-shifts", "0")
    assert wrong.returncode == 2 and "--clip-shifts must be from 1 to 20, not 0" in wrong.stderr


def test_long_form_script_stream_only_leaves_out_the_clips_and_segments_alone(tone_corpus, tmp_path):
    out = tmp_path / "out"
    result = run_script("long_form.py", "--backend", "test", "--model", "tones", "--corpus", str(tone_corpus),
                        "--minutes", "0.5", "--configuration", "default", "--stream-only", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads((out / "long_form.json").read_text(encoding="utf-8"))["rows"]
    assert row["wer"]["value"] == 0.0 and row["summary_check"]["ok"]
    assert row["clips_alone_wer"] is None and row["segments_alone_wer"] is None and row["segments_alone_per_clip"] == []
    assert not any("alone" in s for s in row["per_segment"])
    assert row["minus_clips_alone"] is None and row["minus_segments_alone"] is None
    assert "| default" in result.stdout and "minus its" not in result.stdout


def test_long_form_takes_the_clips_alone_from_an_earlier_run(tone_corpus, tmp_path):
    tones = ("--backend", "test", "--model", "tones", "--corpus", str(tone_corpus), "--minutes", "0.2",
             "--configuration", "default")  # fmt: skip
    first = run_script("long_form.py", *tones, "--clip-shifts", "2", "--out", str(tmp_path / "first"))
    assert first.returncode == 0, first.stdout + first.stderr
    earlier = json.loads((tmp_path / "first" / "long_form.json").read_text(encoding="utf-8"))
    assert [clip["id"] for clip in earlier["clips"]] == sorted(clip["id"] for clip in earlier["clips"])
    # The earlier run's clips alone, one word lost at one placement: a second run must score those words, not its own.
    lost = earlier["rows"][0]["clips_alone_shifts"][1]["texts"]
    lost[0] = lost[0].split(" ", 1)[1]
    (tmp_path / "edited.json").write_text(json.dumps(earlier), encoding="utf-8")
    second = run_script("long_form.py", *tones, "--seed", "1", "--stream-only", "--clips-alone", str(tmp_path / "edited.json"),
                        "--out", str(tmp_path / "second"))  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    report = json.loads((tmp_path / "second" / "long_form.json").read_text(encoding="utf-8"))
    (row,) = report["rows"]
    assert row["clips_alone_shifts"][1]["texts"] == lost and [s["shift"] for s in row["clips_alone_shifts"]] == [0.0, 0.5]
    assert row["wer"]["value"] == 0.0 < row["clips_alone_wer"]["value"] and row["minus_clips_alone"]["value"] < 0
    assert row["segments_alone_wer"] is None  # --stream-only still leaves out the segments
    source = report["clips_alone_source"]
    assert row["clips_alone_source"] == source and source["file"] == str(tmp_path / "edited.json")
    assert source["rtlab"] == earlier["environment"]["packages"]["rtlab"] and source["date"] == earlier["date"]
    assert f"clips alone from {tmp_path / 'edited.json'} (rtlab {source['rtlab']}" in second.stdout
    assert "default: the stream's WER minus its clips alone -" in second.stdout
    # A run made with --clips-alone passes on where its clips alone came from.
    third = run_script("long_form.py", *tones, "--stream-only", "--clips-alone", str(tmp_path / "second" / "long_form.json"),
                       "--out", str(tmp_path / "third"))  # fmt: skip
    assert third.returncode == 0, third.stderr
    assert json.loads((tmp_path / "third" / "long_form.json").read_text(encoding="utf-8"))["clips_alone_source"] == source

    # accuracy.py's short clips with the language given, at its placements
    accuracy = run_script("accuracy.py", "--backend", "test", "--corpus", str(tone_corpus), "--languages", "en",
                          "--english-model", "tones", "--configuration", "default", "--shifts", "2",
                          "--out", str(tmp_path / "accuracy"))  # fmt: skip
    assert accuracy.returncode == 0, accuracy.stdout + accuracy.stderr
    from_accuracy = run_script("long_form.py", *tones, "--stream-only", "--clips-alone",
                               str(tmp_path / "accuracy" / "accuracy.json"), "--out", str(tmp_path / "fourth"))  # fmt: skip
    assert from_accuracy.returncode == 0, from_accuracy.stdout + from_accuracy.stderr
    (row,) = json.loads((tmp_path / "fourth" / "long_form.json").read_text(encoding="utf-8"))["rows"]
    assert [s["shift"] for s in row["clips_alone_shifts"]] == [0.0, 0.5] and row["clips_alone_wer"]["value"] == 0.0
    assert row["clips_alone_source"]["benchmark"] == "accuracy"
    assert row["clips_alone_shifts"][0]["texts"] == earlier["rows"][0]["clips_alone_shifts"][0]["texts"]

    # Clips alone that cannot stand in for this run's are refused in one line, before any stream.
    first_json = str(tmp_path / "first" / "long_form.json")
    refusals = [
        ((*tones[:-1], "vad"), first_json, "no configuration 'vad' in it (it has: default)"),
        ((*tones, "--clock", "simulated"), first_json, "its clock is unaware, this run's simulated"),
        ((*tones[:2], "--model", "other", *tones[4:]), first_json, "its 'default' ran with other options (model='other' in this run)"),
        (tones, str(tmp_path / "accuracy" / "shifted" / "en" / "0.0.jsonl"), "cannot read it"),
        (tones, str(tmp_path / "missing.json"), "cannot read it"),
        ((*tones, "--language", "de"), str(tmp_path / "accuracy" / "accuracy.json"),
         "no short clips of 'default' in 'de' with the language given in it"),
    ]  # fmt: skip
    pinned = tmp_path / "pinned.json"
    pinned.write_text(json.dumps({**earlier, "environment": {**earlier["environment"],
                                                              "kernel_overrides": {"CT2_FORCE_CPU_ISA": "GENERIC"}}}))  # fmt: skip
    refusals.append((tones, str(pinned), "it ran with kernels pinned: CT2_FORCE_CPU_ISA=GENERIC, this run with"))
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for clip in sorted(tone_corpus.iterdir())[:-2]:  # one clip (its audio and its reference) fewer
        (fewer / clip.name).write_bytes(clip.read_bytes())
    fewer_tones = (*tones[:4], "--corpus", str(fewer), *tones[6:])
    refusals.append((fewer_tones, first_json, "its clips are not this corpus's"))
    refusals.append((fewer_tones, str(tmp_path / "accuracy" / "accuracy.json"), "its clips are not this corpus's"))
    for arguments, given, said in refusals:
        refused = run_script("long_form.py", *arguments, "--clips-alone", given, "--out", str(tmp_path / "refused"))
        assert refused.returncode == 2 and said in refused.stderr, (arguments, refused.stderr)
        assert not (tmp_path / "refused" / "long_form.json").exists()
    offline = run_script("long_form.py", *tones, "--offline-only", "--clips-alone", first_json)
    assert offline.returncode == 2 and "no use with --offline-only" in offline.stderr


def test_long_form_script_offline_only_scores_the_whole_stream_and_each_segment(tone_corpus, tmp_path):
    out = tmp_path / "out"
    result = run_script("long_form.py", "--backend", "test", "--model", "tones", "--corpus", str(tone_corpus),
                        "--minutes", "0.5", "--configuration", "default", "--offline-only", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "long_form.json").read_text(encoding="utf-8"))
    assert report["rows"] == [] and not (out / "long_form.png").exists()
    offline = report["offline"]
    assert offline["wer"]["value"] == offline["segments_wer"]["value"] == 0.0
    assert len(offline["segments_per_clip"]) == len(TONE_CLIPS) and offline["segments_compute_seconds"] > 0
    assert "| offline (each segment)" in result.stdout and "| offline (whole stream)" in result.stdout


def test_long_form_assigns_each_word_to_the_clip_its_time_span_overlaps_most():
    script = benchmark_script("long_form")

    segments = [(0.0, 2.0, "a b"), (3.0, 5.0, "c d")]
    words = [{"text": "a", "start": 0.1, "end": 0.4}, {"text": "b", "start": 1.5, "end": 2.9},  # 0.5 s in the first
             {"text": "c", "start": 2.7, "end": 2.9}, {"text": " d", "start": 4.0, "end": 4.5}]  # fmt: skip
    assert script.assign_words(words, segments) == ["a b", "c d"]  # c is in the pause, 0.1 s before the second
    joined = [*words[:3], {"text": "dd", "start": 3.0, "end": 3.5, "joins": True}, words[3]]
    assert script.assign_words(joined, segments) == ["a b", "cdd d"]  # the rest of "c", heard over it
    # Whisper stretched the second clip's first word back over most of the pause: its middle
    # is in the pause, 0.5 s before the clip, but only the second clip holds any of it.
    stretched = [words[0], {"text": " b", "start": 1.5, "end": 1.9}, {"text": " c", "start": 2.1, "end": 3.1}, words[3]]
    assert script.assign_words(stretched, segments) == ["a b", "c d"]
    in_pause = [{"text": "x", "start": 2.2, "end": 2.4}, {"text": " y", "start": 2.6, "end": 2.8}]
    assert script.assign_words(in_pause, segments) == ["x", "y"]  # each to the nearer clip
    assert script.assign_words([{"text": "z", "start": 2.4, "end": 2.6}], segments) == ["z", ""]  # a tie: the earlier
    assert script.assign_words([{"text": "w", "start": 4.2, "end": 4.2}], segments) == ["", "w"]  # no length: the clip it is in


def test_long_form_segments_alone_keep_the_pauses_around_each_clip():
    script = benchmark_script("long_form")

    stream = np.arange(8 * 16_000, dtype=np.float32)
    segments = [(0.0, 2.0, "a"), (3.0, 5.0, "b"), (6.0, 7.0, "c")]
    pieces = script.segment_audio(stream, segments)
    assert [len(p) / 16_000 for p in pieces] == [3.0, 4.0, 3.0]
    assert [p[0] / 16_000 for p in pieces] == [0.0, 2.0, 5.0], "from the end of the clip before"


def test_streaming_vs_offline_prints_a_file_with_no_reference_words_and_no_first_pcm(capsys):
    from rtlab.eval.metrics import environment_info, wer
    from rtlab.eval.results import evaluate_stream, summarize

    script = benchmark_script("streaming_vs_offline")

    events = [{"type": "commit", "words": [{"text": "hello", "start": 0.0, "end": 0.5}], "emitted_at": 1.0},
              {"type": "summary", "emitted_at": 2.0, "audio_seconds": 1.5, "compute_seconds": 0.5}]  # fmt: skip
    result = evaluate_stream(file="silence.wav", reference="", events=events, offline_hypothesis="hello")
    summary = {**summarize([result]), "offline_wer": wer([""], ["hello"]).to_dict(),
               "first_pcm_latency_median": None}  # FFmpeg gave no PCM  # fmt: skip
    report = {"environment": environment_info(), "clock": "simulated", "normalizer": "whisper-english", "input": "pcm",
              "backend": "test", "model": "default", "first_pcm_probed_median": None,
              "runs": [{"min_chunk": 1.0, "files": [result.to_dict()], "first_pcm": [None], "summary": summary}]}  # fmt: skip
    script.print_report(report)
    printed = capsys.readouterr().out
    assert "silence.wav" in printed and "ALL (pooled)" in printed
    gap = next(line for line in printed.splitlines() if "streaming WER - offline WER" in line)
    assert gap.split()[-5:] == ["-", "target", "<=", "2.0:", "MISSES"]
    assert "(first PCM when FFmpeg must probe the format itself: - median)" in printed
    assert script._median([None, None]) is None and script._median([0.2, None, 0.1]) == pytest.approx(0.15)


def test_a_results_jsonl_that_fails_to_write_leaves_the_previous_one_whole(tmp_path):
    from rtlab.config import StreamConfig
    from rtlab.eval.bench import BenchRun
    from rtlab.eval.results import evaluate_stream, summarize

    def run(config_extra: dict) -> BenchRun:
        events = [{"type": "commit", "words": [{"text": "one", "start": 0.0, "end": 0.4}], "emitted_at": 1.0},
                  {"type": "summary", "emitted_at": 1.5, "audio_seconds": 1.0, "compute_seconds": 0.2}]  # fmt: skip
        streams = [evaluate_stream(file=f"{name}.wav", reference="one", events=events, offline_hypothesis="one",
                                   config={"name": "default", **config_extra}) for name in ("a", "b")]  # fmt: skip
        return BenchRun(corpus="c", configurations=[StreamConfig(backend="test")], clock="unaware",
                        normalizer="whisper-english", long_form=False, streams=streams,
                        summaries=[{"name": "default", **summarize(streams)}])  # fmt: skip

    run({}).write(tmp_path, plots=False)
    before = (tmp_path / "results.jsonl").read_bytes()
    with pytest.raises(TypeError, match="not JSON serialisable"):
        run({"callback": object()}).write(tmp_path, plots=False)  # the second stream's line fails
    assert (tmp_path / "results.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]
    result = run_script("word_diffs.py", str(tmp_path / "results.jsonl"))  # read back as a user would
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("default: 0 of 2 streams differ from offline in 0 places")


def test_benchmark_plots_with_nothing_to_draw_say_so_instead_of_an_empty_frame(tmp_path, monkeypatch):
    from rtlab.eval import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or Path(path))
    no_latency = {"count": 0, "median": None, "p95": None}
    summaries = [{"name": "default", "wer": {"value": None}, "latency": no_latency, "clock": "unaware",
                  "normalizer": "whisper-english"}]  # fmt: skip
    streams = [{"file": f"{name}.wav", "config": {"name": "default"}, "audio_seconds": 1.0, "word_latencies": [],
                "lag": None} for name in ("a", "b")]  # fmt: skip
    plots.save_bench_plots(summaries, streams, tmp_path)
    assert len(figures) == 3
    for figure in figures:
        (ax,) = figure.axes
        said = [text.get_text() for text in ax.texts]
        assert len(said) == 1 and said[0].startswith("nothing to plot:\n"), said
    plots.plot_lag(summaries, [{**streams[0], "lag": {"samples": [[0.5, 0.1]]}}], tmp_path / "lag.png")
    assert not figures[-1].axes[0].texts, "a plot with data says nothing of the kind"


def test_word_diffs_script_lists_the_places_that_cost_errors(tmp_path):
    speech = tmp_path / "speech" / "xx"
    speech.mkdir(parents=True)
    (speech / "a.txt").write_text("The cat sat on the mat.", encoding="utf-8")
    (speech / "b.txt").write_text("Five six seven eight", encoding="utf-8")

    def results(name: str, configuration: str, streams: list[tuple[str, float, str, str]]) -> Path:
        rows = [{"language": "xx", "configuration": configuration, "normalizer": "whisper-basic", "shift": shift,
                 "long_form": False, "streams": [{"file": file, "streamed": streamed, "offline": offline}]}
                for file, shift, streamed, offline in streams]  # fmt: skip
        (tmp_path / name).write_text(json.dumps({"rows": rows}), encoding="utf-8")
        return tmp_path / name

    run = results("run.json", "p", [
        ("a.wav", 0.0, "The cat sat on them at.", "The cat sat on the mat."),  # two errors, at both shifts
        ("a.wav", 0.5, "The cat sat on them at.", "The cat sat on the mat."),
        ("b.wav", 0.0, "Five six seven eight", "Five sticks seven eight"),  # streamed right, offline wrong
    ])  # fmt: skip
    result = run_script("word_diffs.py", str(run), "--speech", str(tmp_path / "speech"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "xx p: 3 of 3 streams differ from offline in 2 places; +3 errors against the reference (+3 place by place)",
        '    +4  a (shift 0, 0.5 s): offline "the mat" -> streamed "them at", reference "the mat"',
        '    -1  b (shift 0 s): offline "sticks" -> streamed "six", reference "six"',
    ]
    # Without references: the places, no costs.
    bare = run_script("word_diffs.py", f"{run}:p", "--speech", str(tmp_path / "nowhere"), "--top", "1")
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.splitlines() == [
        "xx p: 3 of 3 streams differ from offline in 2 places; no references, no costs",
        '  a (shift 0, 0.5 s): offline "the mat" -> streamed "them at", reference -',
        "  ... 1 more (--top)",
    ]
    # Two runs: where the first's streams differ from the second's, on the streams both have.
    other = results("other.json", "q", [("a.wav", 0.0, "The cat sat on the mat.", "The cat sat on the mat.")])
    both = run_script("word_diffs.py", f"{run}:p", f"{other}:q", "--speech", str(tmp_path / "speech"))
    assert both.returncode == 0, both.stderr
    assert both.stdout.splitlines() == [
        "xx p against q: 1 of 1 streams differ from q in 1 place; +2 errors against the reference (+2 place by place)",
        '    +2  a (shift 0 s): q "the mat" -> p "them at", reference "the mat"',
    ]
    assert run_script("word_diffs.py", str(run), str(other)).returncode == 2  # two files need a configuration each
    assert run_script("word_diffs.py", f"{run}:p", f"{other}:nothing").returncode == 1


def test_word_diffs_reads_rtlab_bench_results_and_compares_two_configurations_of_one_run(tmp_path):
    def stream(name: str, file: str, hypothesis: str) -> dict:
        return {"record": "stream", "file": file, "config": {"name": name}, "reference": "The cat sat on the mat.",
                "hypothesis": hypothesis, "offline_hypothesis": "The cat sat on the mat.", "normalizer": "whisper-english"}

    records = [{"record": "run"}, stream("fast", "a.wav", "The cat sat on them at."), stream("slow", "a.wav", "The cat sat on the mat."),
               stream("fast", "b.wav", "The cat sat on them at."), stream("slow", "b.wav", "A cat sat on the mat."),
               {"record": "summary", "name": "fast"}]  # fmt: skip
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    alone = run_script("word_diffs.py", str(results))
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.splitlines() == [
        "fast: 2 of 2 streams differ from offline in 2 places; +4 errors against the reference (+4 place by place)",
        '    +2  a: offline "the mat" -> streamed "them at", reference "the mat"',
        '    +2  b: offline "the mat" -> streamed "them at", reference "the mat"',
        "slow: 1 of 2 streams differ from offline in 1 place; +1 errors against the reference (+1 place by place)",
        '    +1  b: offline "the" -> streamed "a", reference "the"',
    ]
    both = run_script("word_diffs.py", f"{results}:fast", f"{results}:slow")
    assert both.returncode == 0, both.stderr
    assert both.stdout.splitlines() == [
        "fast against slow: 2 of 2 streams differ from slow in 3 places; +3 errors against the reference (+3 place by place)",
        '    +2  a: slow "the mat" -> fast "them at", reference "the mat"',
        '    +2  b: slow "the mat" -> fast "them at", reference "the mat"',
        '    -1  b: slow "a" -> fast "the", reference "the"',
    ]
    # Clips of one name in two folders (the LibriSpeech layout) keep their rows apart.
    records = [stream("fast", "84/121123/0000.flac", "The cat sat on them at."),
               stream("fast", "174/50561/0000.flac", "The cat sat on them at.")]  # fmt: skip
    (tmp_path / "libri.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    assert run_script("word_diffs.py", str(tmp_path / "libri.jsonl")).stdout.splitlines()[1:] == [
        '    +2  121123/0000: offline "the mat" -> streamed "them at", reference "the mat"',
        '    +2  50561/0000: offline "the mat" -> streamed "them at", reference "the mat"',
    ]
    # Files that are not results: one line, and a failure.
    (tmp_path / "notes.jsonl").write_text("not json\n", encoding="utf-8")
    (tmp_path / "other.json").write_text('{"x": 1}', encoding="utf-8")
    for name, message in (("notes.jsonl", "is not a results.jsonl of rtlab bench"),
                          ("other.json", "is not a results file of benchmarks/accuracy.py")):  # fmt: skip
        refused = run_script("word_diffs.py", str(tmp_path / name))
        assert refused.returncode != 0 and message in refused.stderr and refused.stderr.count("\n") == 1


def test_word_diffs_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    # `python benchmarks/word_diffs.py ... | head` ended in a BrokenPipeError traceback.
    stream = {"record": "stream", "config": {"name": "fast"}, "reference": "The cat sat on the mat.",
              "hypothesis": "The cat sat on them at.", "offline_hypothesis": "The cat sat on the mat.",
              "normalizer": "whisper-english"}  # fmt: skip
    results = tmp_path / "results.jsonl"  # some 200 kB of rows: more than a pipe holds
    results.write_text("".join(json.dumps({**stream, "file": f"{i}.wav"}) + "\n" for i in range(3000)), encoding="utf-8")
    script = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "word_diffs.py"), str(results), "--top", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert script.stdout.readline().startswith(b"fast: 3000 of 3000 streams differ")
    script.stdout.close()  # as head does once it has its lines
    _, stderr = script.communicate(timeout=200)
    assert stderr == b"" and script.returncode == 1  # as the rtlab CLI (click) ends on a closed pipe


def test_intervals_script_gives_paired_intervals_from_stored_or_recounted_edits(tmp_path):
    from rtlab.eval.metrics import wer

    speech = tmp_path / "speech" / "xx"
    speech.mkdir(parents=True)
    (speech / "a.txt").write_text("one two three four", encoding="utf-8")
    (speech / "b.txt").write_text("five six seven eight", encoding="utf-8")

    def stream(file: str, streamed: str, offline: str, counts: bool) -> dict:
        reference = (speech / file.replace(".wav", ".txt")).read_text(encoding="utf-8")
        stored = {"wer_counts": wer(reference, streamed, "whisper-basic").to_dict(),
                  "offline_wer_counts": wer(reference, offline, "whisper-basic").to_dict()} if counts else {}  # fmt: skip
        return {"file": file, "streamed": streamed, "offline": offline, **stored}

    def results(name: str, configuration: str, streams: list[dict]) -> Path:
        row = {"language": "xx", "configuration": configuration, "normalizer": "whisper-basic", "shift": 0.0,
               "long_form": False, "streams": streams}  # fmt: skip
        (tmp_path / name).write_text(json.dumps({"rows": [row]}), encoding="utf-8")
        return tmp_path / name

    # an older file: texts only, counted again against the references
    old = results("old.json", "p", [stream("a.wav", "one two three", "one two three four", False),
                                     stream("b.wav", "five six seven eight", "five six seven eight", False)])  # fmt: skip
    result = run_script("intervals.py", str(old), "--speech", str(tmp_path / "speech"))
    assert result.returncode == 0, result.stderr
    # one deletion in 8 reference words; two clips drawn: 0, 12.5 or 25 points
    assert result.stdout.strip() == "xx p: streaming minus offline +12.5 points (95% CI +0.0 to +25.0, 2 clips) over 2 streams"
    new = results("new.json", "q", [stream("a.wav", "one two three four", "one two three four", True),
                                     stream("b.wav", "five six seven eight nine", "five six seven eight", True)])  # fmt: skip
    result = run_script("intervals.py", f"{old}:p", f"{new}:q", "--speech", str(tmp_path / "speech"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "xx: p minus q +0.0 points (95% CI -25.0 to +25.0, 2 clips) over 2 streams"
    missing = run_script("intervals.py", str(old), "--speech", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "has no edit counts" in missing.stderr
    assert run_script("intervals.py", str(old), str(new)).returncode == 2  # two files need a configuration each


def test_intervals_and_word_diffs_refuse_a_configuration_the_file_does_not_have(tmp_path):
    stream = {"file": "a.wav", "streamed": "one two", "offline": "one two three"}
    row = {"language": "xx", "configuration": "default", "normalizer": "whisper-basic", "shift": None,
           "long_form": False, "streams": [stream]}  # fmt: skip
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps({"rows": [row]}), encoding="utf-8")
    for script in ("intervals.py", "word_diffs.py"):
        result = run_script(script, f"{path}:defualt", "--speech", str(tmp_path))  # a typo: not silence and 0
        assert result.returncode == 1 and result.stdout == "", (script, result.stdout)
        assert f"{path} has no configuration 'defualt'; it has 'default'" in result.stderr, script


def test_concurrency_script_streams_raw_pcm_where_there_is_no_ffmpeg(tmp_path, monkeypatch):
    """The GPU check's mode (benchmarks/gpu_check.sh on a machine without FFmpeg): clients
    send raw PCM, and neither they nor the server's sessions need FFmpeg."""
    monkeypatch.setenv("RTLAB_FFMPEG", str(tmp_path / "no-ffmpeg-here"))
    result = run_script("concurrency.py", "--backend", "test", "--format", "pcm_s16le", "--clients", "1,3",
                        "--seconds", "3", "--ramp", "0.5", "--out", str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "concurrency-test.json").read_text(encoding="utf-8"))
    assert report["ffmpeg"] is None and report["audio"]["format"].startswith("raw 16-bit PCM")
    assert [(level["clients"], level["ok"], level["errors"], level["wrong_text"]) for level in report["levels"]] == [
        (1, 1, 0, 0), (3, 3, 0, 0),
    ]  # fmt: skip
    assert all(level["ffmpeg_max"] == 0 and level["commit_p95_s"] is not None for level in report["levels"])


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("accuracy.py", ["--languages", "en,xx"], "--languages: no speech folder for xx beside "),
        ("policies.py", ["--compare", "--languages", "xx"], "--languages: no speech folder for xx beside "),
        ("policies.py", ["--languages", "de"], "--languages go with --compare"),
        ("clocks.py", ["--batch", "0"], "--batch must be from 1 (not batched) to 512, not 0"),
        ("concurrency.py", ["--clients", "0,10"], "--clients takes client counts of at least 1"),
        ("concurrency.py", ["--clients", "ten"], "--clients takes client counts of at least 1"),
        ("accuracy.py", ["--clock", "simulated", "--cost-model", "costs.json"],
         "--cost-model is the modeled clock's cost model, and the simulated clock counts each pass's measured compute"),
        ("long_form.py", ["--cost-model", "costs.json"],
         "--cost-model is the modeled clock's cost model, and the unaware clock counts no compute"),
        ("long_form.py", ["--clock", "modeled", "--cost-model", "nowhere.json"], "cannot read the cost model nowhere.json"),
    ],
)  # fmt: skip
def test_scripts_refuse_bad_arguments_before_any_work(script, args, message, tmp_path):
    # Before: accuracy.py skipped an unknown language and wrote an empty table, policies.py
    # ignored --languages without --compare and ran its sweep, clocks.py ran a whole
    # benchmark with --batch 0, concurrency.py ended in a traceback.
    english = tmp_path / "speech" / "en"
    english.mkdir(parents=True)
    (tmp_path / "speech" / "de").mkdir()
    result = run_script(script, "--corpus", str(english), *args) if script != "concurrency.py" else run_script(script, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("speech/*/*"))
    if "no speech folder" in message:
        assert result.stderr.rstrip().endswith("(languages there: de, en)")


@pytest.mark.slow
def test_same_events_script_finds_the_recorded_events_on_this_machine():
    # Issue 17's promise, checked wherever the suite runs: the portable kernels give the
    # events recorded in benchmarks/same-events.json (an event-changing commit records
    # them again: python benchmarks/same_events.py --record --replace).
    pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    from rtlab.kernels import portable_kernels_refusal

    if portable_kernels_refusal():
        pytest.skip(portable_kernels_refusal())
    result = run_script("same_events.py", "--clips", "tests/data/fox.ogg", "--clocks", "unaware")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tests/data/fox.ogg                       unaware      12" in result.stdout
    # The reference's events, or those recorded apart for this kind of CPU, where the
    # portable kernels are known to diverge (an Intel Xeon with AMX, 2026-12-06).
    assert ("1 of 1 compared clips and clocks gave the recorded events" in result.stdout
            or "1 gave the events recorded apart for this kind of CPU" in result.stdout), result.stdout  # fmt: skip
    # The portable FFmpeg decoded the clip as it did on the reference machine.
    recorded = json.loads((ROOT / "benchmarks" / "same-events.json").read_text())["events"]["tests/data/fox.ogg unaware"]
    module = _same_events_module()
    assert module.audio_digest(ROOT / "tests" / "data" / "fox.ogg") == recorded["audio_sha256"]


@pytest.mark.slow
def test_same_events_script_records_a_kind_of_cpu_that_diverges_apart(tmp_path):
    # A machine whose events differ from the reference fails, and is recorded apart only
    # with --divergent; then the same events on this kind of CPU pass as that divergence,
    # and other events on it fail again.
    pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    from rtlab.kernels import portable_kernels_refusal

    if portable_kernels_refusal():
        pytest.skip(portable_kernels_refusal())
    reference = json.loads((ROOT / "benchmarks" / "same-events.json").read_text())
    reference["events"]["tests/data/fox.ogg unaware"]["sha256"] = "0" * 64  # as if recorded elsewhere
    reference["divergent"] = []
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(reference))
    fox = ("--clips", "tests/data/fox.ogg", "--clocks", "unaware", "--reference", str(path))

    differs = run_script("same_events.py", *fox)
    assert differs.returncode == 1 and "DIFFERENT (recorded 12 events, 000000000000" in differs.stdout
    refused = run_script("same_events.py", *fox, "--record")
    assert refused.returncode == 1 and "--record --divergent records them apart" in refused.stderr
    recorded = run_script("same_events.py", *fox, "--record", "--divergent")
    assert recorded.returncode == 0, recorded.stderr
    written = json.loads(path.read_text())
    assert written["events"] == reference["events"]  # the reference itself is left as it was
    [divergent] = written["divergent"]
    assert divergent["machines"][0]["cpu_model"] and set(divergent["events"]) == {"tests/data/fox.ogg unaware"}

    known = run_script("same_events.py", *fox)
    assert known.returncode == 0, known.stdout
    assert "; as recorded for this kind of CPU" in known.stdout
    assert "1 gave the events recorded apart for this kind of CPU" in known.stdout
    divergent["events"]["tests/data/fox.ogg unaware"]["sha256"] = "1" * 64  # a change on this kind of CPU
    path.write_text(json.dumps(written))
    changed = run_script("same_events.py", *fox)
    assert changed.returncode == 1 and "as recorded for this kind of CPU" not in changed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clocks", "wall"], "--clocks: each of unaware, modeled"),
        (["--replace"], "--replace goes with --record"),
        (["--divergent"], "--divergent goes with --record"),
        (["--record", "--replace", "--divergent"], "--replace or --divergent, not both"),
        (["--clips", "tests/data/nope.ogg"], "no such clip: tests/data/nope.ogg"),
    ],
)
def test_same_events_script_refuses_bad_arguments(args, message):
    result = run_script("same_events.py", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_ffmpeg_decoding_script_compares_every_ffmpeg_with_the_portable_decoding(data_dir):
    result = run_script("ffmpeg_decoding.py", "--clips", str(data_dir / "fox.ogg"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| clip |")).strip("| ").split(" | ")
    row = next(line for line in lines if line.startswith("| tests/data/fox.ogg |")).strip("| ").split(" | ")
    cells = dict(zip(header[1:], row[1:]))
    assert cells["wheel, C only"] == "same", cells  # the portable decoding against itself
    assert all(cell == "same" or " differ, max " in cell for cell in cells.values()), cells
    assert lines[-1] == "| clips that differ | " + " | ".join(
        "0 of 1" if cell == "same" else "1 of 1" for cell in cells.values()
    ) + " |"
    missing = run_script("ffmpeg_decoding.py", "--clips", "nope.ogg")
    assert missing.returncode == 2 and "no such clip: nope.ogg" in missing.stderr


def _same_events_module():
    return benchmark_script("same_events")


def test_same_events_says_whether_a_difference_was_in_the_decoded_audio(monkeypatch, data_dir):
    module = _same_events_module()
    monkeypatch.setenv("RTLAB_FFMPEG_CPUFLAGS", "-sse2")  # the script decodes as the portable kernels do
    audio = module.audio_digest(data_dir / "fox.ogg")
    assert os.environ["RTLAB_FFMPEG_CPUFLAGS"] == "-sse2", "the environment is left as it was"
    portable = hashlib.sha256(_portable_fox_pcm(data_dir)).hexdigest()
    assert audio == portable
    assert module.why({"sha256": "x"}, audio) == "no audio hash recorded"
    assert module.why({"sha256": "x", "audio_sha256": audio}, audio) == "the same decoded audio: the model's kernels"
    assert module.why({"sha256": "x", "audio_sha256": "0" * 64}, audio) == "the decoded audio differs: FFmpeg"


def test_the_decoding_and_same_events_scripts_list_the_shared_speech_alike(monkeypatch, tmp_path):
    # Both list the repository's clips and the shared speech's audio (rtlab.eval.corpus.audio_files):
    # same_events the English, named shared:en/FILE; ffmpeg_decoding every language's.
    speech = tmp_path / "speech"
    for language, names in {"en": ("b.ogg", "a.WAV", "a.txt"), "de": ("c.ogg",)}.items():
        (speech / language).mkdir(parents=True)
        for name in names:
            (speech / language / name).write_bytes(b"")
    monkeypatch.setenv("RTLAB_SPEECH_DIR", str(speech / "en"))
    repository = [ROOT / "tests" / "data" / name for name in ("fox.ogg", "en-pause.ogg", "paragraph.ogg")]
    assert _same_events_module().clip_names(None) == [(str(p.relative_to(ROOT)), p) for p in repository] + [
        ("shared:en/a.WAV", speech / "en" / "a.WAV"), ("shared:en/b.ogg", speech / "en" / "b.ogg")
    ]
    decoding = benchmark_script("ffmpeg_decoding")
    assert decoding.clips(None) == repository + [speech / "de" / "c.ogg", speech / "en" / "a.WAV",
                                                 speech / "en" / "b.ogg"]  # fmt: skip


def test_same_events_record_describes_the_machine_once(monkeypatch, tmp_path, capsys):
    # The software versions and the machine recorded were each read from an environment_info
    # of their own (FFmpeg run twice for its version); one describes both.
    import rtlab.eval.metrics as metrics
    import rtlab.kernels as kernels

    module = _same_events_module()
    calls = []
    environment = metrics.environment_info()

    def described() -> dict:
        calls.append(1)
        return environment

    monkeypatch.setattr(metrics, "environment_info", described)
    monkeypatch.setattr(kernels, "portable_kernels_refusal", lambda: None)
    monkeypatch.setattr(module, "stream", lambda path, clock: [{"type": "summary", "text": "the fox"}])
    reference = tmp_path / "same-events.json"
    status = module.main(["--clips", str(ROOT / "tests" / "data" / "fox.ogg"), "--clocks", "unaware", "--record",
                          "--reference", str(reference)])  # fmt: skip
    assert status == 0, capsys.readouterr()
    assert len(calls) == 1
    recorded = json.loads(reference.read_text())
    assert recorded["software"]["numpy"] == environment["packages"]["numpy"]
    assert recorded["machines"][0]["cpu_count"] == environment["cpu_count"]
    assert recorded["events"]["tests/data/fox.ogg unaware"]["words"] == "the fox"


def _portable_fox_pcm(data_dir) -> bytes:
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-cpuflags", "0", "-i",
               str(data_dir / "fox.ogg"), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"]  # fmt: skip
    return subprocess.run(command, capture_output=True, check=True).stdout


def test_same_events_hash_leaves_out_only_what_is_measured():
    module = _same_events_module()
    summary = {"type": "summary", "text": "a", "compute_seconds": 1.5, "measured_compute_seconds": 2.0, "rtf": 0.5,
               "emitted_at": 3.0}  # fmt: skip
    unaware = json.loads(module.canonical([summary], "unaware"))
    modeled = json.loads(module.canonical([summary], "modeled"))
    assert unaware == {"type": "summary", "text": "a", "emitted_at": 3.0}
    assert modeled == {"type": "summary", "text": "a", "compute_seconds": 1.5, "rtf": 0.5, "emitted_at": 3.0}


def test_concurrency_speech_leaves_no_temporary_wav(monkeypatch, tmp_path):
    """The reference pass's WAV is written to a temporary folder and removed after it
    (before, every run left /tmp/rtlab-concurrency-*/speech.wav behind)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("RTLAB_SPEECH_DIR", str(tmp_path / "nowhere"))  # then the repository's paragraph.ogg
    concurrency = benchmark_script("concurrency")
    speech = concurrency.speech_audio(3.0, "test", None, format="pcm_s16le")
    assert speech["seconds"] == 3.0 and speech["payload"]
    assert list(tmp_path.iterdir()) == []


def test_chaos_lifetimes_median_is_the_median_of_an_even_count():
    """The page says "(median)": of four lifetimes that is the mean of the middle two
    (before, the upper-middle one: 3.0 s here, not 2.5 s)."""
    chaos = benchmark_script("chaos")
    summary = chaos.lifetime_summary({"slowloris": [10.0, 1.0, 3.0, 2.0], "silent holders": [4.0, 1.0, 7.0], "fuzzing": []})
    assert summary == {
        "slowloris": {"count": 4, "median_s": 2.5, "max_s": 10.0},
        "silent holders": {"count": 3, "median_s": 4.0, "max_s": 7.0},
    }


def test_concurrency_reference_pass_leaves_no_model_in_the_benchmark_process(monkeypatch, tmp_path):
    """The offline reference pass runs in a child process that ends with it. Before, its
    backend instance stayed in the benchmark's process (rtlab keeps instances for reuse)
    through the whole sweep: a second copy of the model beside the server's, in the memory
    (and GPU memory) the benchmark measures."""
    import gc

    from rtlab.backends import Backend

    monkeypatch.setenv("RTLAB_SPEECH_DIR", str(tmp_path / "nowhere"))  # then the repository's paragraph.ogg
    concurrency = benchmark_script("concurrency")
    model = "concurrency-reference-only"  # a model key no other test loads
    speech = concurrency.speech_audio(3.0, "test", model, format="pcm_s16le")
    assert speech["seconds"] == 3.0 and isinstance(speech["words"], list)
    gc.collect()
    # (type(o), not isinstance: it reads __class__, a deprecation warning on one of torch's objects)
    here = [o for o in gc.get_objects() if issubclass(type(o), Backend) and getattr(o, "model", None) == model]
    assert here == []


def test_concurrency_verdicts_name_a_level_where_no_session_started():
    """A level whose sessions all failed has no start latency. Before, it counted as 0 ms in
    "start latency p95 (worst level)": left out of the worst, or, every level failing,
    a verdict of 0 ms against the 100 ms target."""
    concurrency = benchmark_script("concurrency")

    def level(clients, errors, start_p95_ms):
        return {"clients": clients, "errors": errors, "pss_per_session_mb": 5.0, "start_p95_ms": start_p95_ms,
                "ffmpeg_after_2s": 0}  # fmt: skip

    lines = concurrency.verdicts("test", [level(10, 0, 40.0), level(50, 50, None), level(100, 0, 60.0)], None)
    assert "start latency p95 (worst level) 60.0 ms (target <= 100.0); no session started at 50 clients" in lines
    lines = concurrency.verdicts("test", [level(10, 10, None)], None)
    assert "start latency p95 (worst level) not measured (target <= 100.0); no session started at 10 clients" in lines


def test_chaos_does_not_call_a_server_settled_that_kept_a_session():
    """settle() gives up after its timeout; before, it returned the seconds waited as if the
    server had settled, and the page's rows read "after ..., settled" all the same."""
    import asyncio

    chaos = benchmark_script("chaos")

    class Server:
        def __init__(self, sessions):
            self.sessions = sessions

        def health(self):
            return {"sessions": self.sessions, "transcribing": 0}

        def ffmpeg(self):
            return []

    assert asyncio.run(chaos.settle(Server(sessions=1), timeout=0.3)) is None
    assert asyncio.run(chaos.settle(Server(sessions=0), timeout=0.3)) >= 2.0  # then 2 s more
    assert chaos.settled({"settle_seconds": None}) == "NOT settled within 60 s"
    assert chaos.settled({"settle_seconds": 2.1}) == "settled"


def test_chaos_script_streams_its_honest_and_hostile_clients(tmp_path):
    """A small run of benchmarks/chaos.py against a real server. Before, it read the tone
    audio under a key concurrency.tone_audio no longer had: every honest session failed
    with KeyError, and so did the churn and the fuzzers' audio frames."""
    out = tmp_path / "out"
    result = run_script("chaos.py", "--honest", "2", "--seconds", "3", "--ramp", "0.5", "--churn", "6",
                        "--churn-concurrency", "3", "--holders", "1", "--flooders", "1", "--sprayers", "1",
                        "--fuzzers", "1", "--slowloris", "1", "--out", str(out), "--page", str(tmp_path / "chaos.md"))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "chaos-test.json").read_text(encoding="utf-8"))
    alone = report["alone"]
    assert (alone["ok"], alone["errors"], alone["wrong_text"]) == (2, 0, 0) and alone["committed_words"] > 0
    (round_,) = report["rounds"]
    assert "KeyError" not in round_["honest"]["error_kinds"]
    outcomes = json.dumps(round_["hostile"]["outcomes"])
    assert "KeyError" not in outcomes and "client crashed" not in outcomes
    assert round_["hostile"]["outcomes"]["churn"]
    assert "| after the alone phase, settled |" in (tmp_path / "chaos.md").read_text(encoding="utf-8")


def _chaos_report(alone_p95: float | None, round_p95s: list[float | None], pss_mb: float | None = 120.0) -> dict:
    """A chaos.py report as main_async writes it, with the given commit latency p95s."""

    def phase(p95: float | None) -> dict:
        return {"ok": 2 if p95 is not None else 0, "errors": 0 if p95 is not None else 2, "wrong_text": 0,
                "committed_words": 12 if p95 is not None else 0, "commit_p50_s": None if p95 is None else p95 / 2,
                "commit_p95_s": p95, "start_p95_ms": 5.0, "error_kinds": {}, "settle_seconds": 2.1}  # fmt: skip

    resources = {"threads": 12, "fds": 30, "server_pss_mb": pss_mb, "ffmpeg": 0, "ffmpeg_pss_mb": 0.0}
    rounds = [
        {"honest": phase(p95), "hostile": {"outcomes": {}, "lifetimes": {}, "malformed_count": 0, "loop_stall_max_s": 0.01},
         "peak": resources, "after": resources,
         "health_after": {"status": "ok", "sessions": 0, "stuck_passes": 0, "ffmpeg_processes": 0}}
        for p95 in round_p95s
    ]  # fmt: skip
    known = [p for p in round_p95s if p is not None]
    return {
        "alone": phase(alone_p95), "rounds": rounds,
        "p95_ratio": round(max(known) / alone_p95, 3) if known and alone_p95 else None,
        "resources": {"before": resources, "peak_alone": resources, "after_alone": resources},
        "environment": {"cpu_count": 2, "machine": "x86_64", "cpu_model": "Some CPU", "memory_total_bytes": 8 << 30,
                        "platform": "Linux", "python": "3.11", "packages": {"rtlab": "0"}},
        "settings": {"honest": 2, "seconds": 3.0, "ramp": 0.5, "churn": 6, "churn_concurrency": 3, "holders": 1,
                     "flooders": 1, "sprayers": 1, "fuzzers": 1, "slowloris": 1},
        "audio": {"seconds": 3.3}, "date": "2026-01-01", "git_commit": "abc1234", "tornado": "6.4",
        "ffmpeg": {"version": "6.1"}, "server_command": "rtlab serve", "command": "python benchmarks/chaos.py",
        "loadavg_1m": {"start": 0.5, "end": 1.0}, "server_exit_code": 0,
    }  # fmt: skip


def test_chaos_resources_report_a_pss_it_could_not_read_as_unknown(monkeypatch):
    """Without /proc/PID/smaps_rollup the server's PSS is unknown: None in the JSON,
    "unknown" on the page and in the verdicts. Before, it was reported as 0.0 MB."""
    chaos = benchmark_script("chaos")
    monkeypatch.setattr(chaos, "pss_mb", lambda pid: None)

    class Process:
        pid = 4321

        def num_threads(self):
            return 7

        def num_fds(self):
            return 21

    class Server:
        process = Process()

        def __init__(self, ffmpeg):
            self.children = ffmpeg

        def ffmpeg(self):
            return self.children

    assert chaos.resources(Server([])) == {"threads": 7, "fds": 21, "server_pss_mb": None, "ffmpeg": 0, "ffmpeg_pss_mb": 0.0}
    running = chaos.resources(Server([Process(), Process()]))
    assert running["server_pss_mb"] is None and running["ffmpeg"] == 2 and running["ffmpeg_pss_mb"] is None

    report = _chaos_report(0.3, [0.33], pss_mb=None)
    report["verdicts"] = chaos.verdicts(report)
    assert "server PSS (MB) unknown after the alone phase, [unknown] after each hostile round" in report["verdicts"]
    text = chaos.page(report)
    assert "| before (model loaded, idle) | 12 | 30 | unknown | 0 |" in text
    assert "| 0.0 |" not in text and "| None |" not in text


def test_chaos_page_names_no_gpu_it_did_not_look_for():
    """The hardware line says what environment_info found; before, it said "no GPU" on
    every machine, one with a GPU too."""
    chaos = benchmark_script("chaos")
    report = _chaos_report(0.3, [0.33])
    report["verdicts"] = chaos.verdicts(report)
    (hardware,) = [line for line in chaos.page(report).splitlines() if line.startswith("| hardware |")]
    assert hardware == "| hardware | 2 CPU cores (x86_64, Some CPU), 8.0 GiB; Linux |"


def test_chaos_verdict_names_a_round_that_committed_nothing():
    """A hostile round where no honest session committed a word has no p95. Before, it was
    left out of the "x... at worst" ratio without a word, its None in the list the only sign."""
    chaos = benchmark_script("chaos")
    report = _chaos_report(0.3, [0.33, None])
    (line,) = [v for v in chaos.verdicts(report) if v.startswith("commit latency p95")]
    assert line == ("commit latency p95 0.3 s alone, [0.33, None] s beside the hostile mix: x1.1 at worst of the rounds "
                    "that committed words (target <= x1.2); round 2 committed nothing (no honest session had a word "
                    "committed)")  # fmt: skip
    assert chaos.p95_ratio(report["alone"], report["rounds"]) == pytest.approx(1.1)
    report = _chaos_report(0.3, [None, None])
    assert chaos.p95_ratio(report["alone"], report["rounds"]) is None
    (line,) = [v for v in chaos.verdicts(report) if v.startswith("commit latency p95")]
    assert "no ratio: no round beside the hostile mix committed anything" in line and "rounds 1, 2 committed nothing" in line
    report = _chaos_report(None, [0.33])
    (line,) = [v for v in chaos.verdicts(report) if v.startswith("commit latency p95")]
    assert "no ratio: the alone phase committed nothing" in line and "xNone" not in line
    report = _chaos_report(0.3, [0.33])
    report["verdicts"] = chaos.verdicts(report)
    assert "commit latency p95 0.3 s alone, [0.33] s beside the hostile mix: x1.1 at worst (target <= x1.2)" in report["verdicts"]
    text = chaos.page(_chaos_report(0.3, [None]) | {"verdicts": []})
    assert "| commit latency p95 | 0.3 s | nothing committed |" in text


def test_concurrency_memory_per_session_counts_the_sessions_that_ran(monkeypatch):
    """Peak minus idle PSS over the sessions that ran, not over all N clients: before, two
    failed sessions of four halved the figure (7.5 MB here instead of 15.0). The figure
    over all N is kept, named per client."""
    import asyncio
    import types

    from rtlab.server.client import ClientResult

    concurrency = benchmark_script("concurrency")
    audio = {"payload": b"", "seconds": 1.0, "words": [], "text": ""}
    outcomes = [
        ClientResult(received=[], audio_seconds=1.0, start_latency=0.01),
        ClientResult(received=[], audio_seconds=1.0, start_latency=0.01),
        ClientResult(received=[], audio_seconds=1.0, start_latency=None,
                     error={"type": "transcription_failed", "error": "too_many_sessions"}),
        ConnectionRefusedError(),
    ]  # fmt: skip

    async def stream_file(url, payload, **fields):
        await asyncio.sleep(0.05)
        outcome = outcomes.pop()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    class Server:
        ws_url = "ws://127.0.0.1:1/ws/transcribe"
        reads = 0

        def memory(self):  # 100 MB idle (the first read), 130 MB while the clients run
            self.reads += 1
            return {"server": 100.0 if self.reads == 1 else 130.0, "ffmpeg": []}

        def cpu_seconds(self):
            return 0.0

        def ffmpeg(self):
            return []

    monkeypatch.setattr(concurrency, "stream_file", stream_file)
    args = types.SimpleNamespace(ramp=0, format="pcm_s16le", backend="test", model=None, seconds=1.0)
    row = asyncio.run(concurrency.run_level(Server(), 4, audio, args, concurrency.random.Random(1)))
    assert (row["ok"], row["errors"], row["pss_idle_mb"], row["pss_peak_mb"]) == (2, 2, 100.0, 130.0)
    assert row["pss_per_session_mb"] == 15.0 and row["pss_per_client_mb"] == 7.5

    def level(clients, per_session):
        return {"clients": clients, "errors": 0, "pss_per_session_mb": per_session, "start_p95_ms": 40.0,
                "ffmpeg_after_2s": 0}  # fmt: skip

    lines = concurrency.verdicts("test", [level(1, 40.0), level(10, 8.0), level(50, None), level(100, 12.5)], None)
    assert "memory per session that ran (N >= 10, worst) 12.5 MB PSS (target <= 15.0); no session ran at 50 clients" in lines
    lines = concurrency.verdicts("test", [level(10, None)], None)
    assert "memory per session that ran (N >= 10, worst) not measured (target <= 15.0); no session ran at 10 clients" in lines


def test_concurrency_reports_memory_it_could_not_read_as_unknown(monkeypatch):
    """A server PSS that cannot be read (no /proc/PID/smaps_rollup) is no figure, not 0 MB:
    before, it counted as 0.0, so every memory figure was 0 and the <= 15 MB target passed
    with nothing measured."""
    import asyncio
    import types

    from rtlab.server.client import ClientResult

    concurrency = benchmark_script("concurrency")
    monkeypatch.setattr(concurrency, "pss_mb", lambda pid: None)
    server = concurrency.ServerProcess.__new__(concurrency.ServerProcess)
    server.popen = types.SimpleNamespace(pid=1)
    monkeypatch.setattr(concurrency.ServerProcess, "ffmpeg", lambda self: [])
    assert server.memory() == {"server": None, "ffmpeg": []}

    async def stream_file(url, payload, **fields):
        return ClientResult(received=[], audio_seconds=1.0, start_latency=0.01)

    monkeypatch.setattr(concurrency, "stream_file", stream_file)
    monkeypatch.setattr(server, "cpu_seconds", lambda: 0.0, raising=False)
    server.ws_url = "ws://127.0.0.1:1/ws/transcribe"
    audio = {"payload": b"", "seconds": 1.0, "words": [], "text": ""}
    args = types.SimpleNamespace(ramp=0, format="pcm_s16le", backend="test", model=None, seconds=1.0)
    row = asyncio.run(concurrency.run_level(server, 2, audio, args, concurrency.random.Random(1)))
    assert row["ok"] == 2
    memory = ("pss_idle_mb", "pss_peak_mb", "pss_per_session_mb", "pss_per_client_mb", "server_pss_peak_mb")
    assert {key: row[key] for key in memory} == dict.fromkeys(memory)
    lines = concurrency.verdicts("test", [row | {"clients": 10}], None)
    assert any(line.startswith("memory per session that ran (N >= 10, worst) not measured") for line in lines)


@pytest.mark.parametrize("flag, value", [("--hostile-rounds", "0"), ("--honest", "0"), ("--churn", "-1"),
                                         ("--seconds", "0")])  # fmt: skip
def test_chaos_refuses_counts_it_cannot_run_before_starting_a_server(flag, value, capsys):
    # Before, --hostile-rounds 0 ran every phase and then crashed writing the page (it
    # reads the last hostile round's health).
    chaos = benchmark_script("chaos")
    with pytest.raises(SystemExit) as exited:
        chaos.main([flag, value])
    assert exited.value.code == 2
    assert f"{flag} must be" in capsys.readouterr().err


def test_the_many_sessions_configuration_is_the_server_guides_recommendation():
    # accuracy.py and long_form.py measure "many-sessions" as the options docs/server.md
    # recommends; when one changes, the other must, or the figures measure something else.
    import re

    guide = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    commands = re.findall(r"Together, `rtlab serve ([^`]+)`", guide)
    assert len(commands) == 1, "the guide names one recommended command"
    recommended = sorted(re.findall(r"-[bp] (\S+)", commands[0]))
    preset = benchmark_script("accuracy").CONFIGURATIONS["many-sessions"]
    assert recommended == sorted(preset.split(",")) and "vad=true" in recommended


def test_accuracy_sets_a_beam_search_configuration_against_the_greedy_offline_pass():
    # The accuracy issue's target is streaming WER against the *greedy* offline pass; a
    # beam-search configuration's own offline pass decodes with beam search too.
    accuracy = benchmark_script("accuracy")
    assert accuracy.given_beam_size("beam_size=5") == 5 and accuracy.given_beam_size("min_chunk=1") is None
    sizes = accuracy.beam_sizes([], {"vad": "vad=true", "beam": "beam_size=5"})
    assert sizes == {"vad": 1, "beam": 5} and accuracy.greedy_beside("beam", sizes) == "vad"
    assert accuracy.greedy_beside("beam", {"default": 1, "vad": 1, "beam": 5}) == "default"
    assert accuracy.greedy_beside("default", {"default": 1, "beam": 5}) is None
    # A backend that chose beam search itself (faster-whisper on a multilingual model): its
    # rows say so, and the greedy configuration run beside it is the one to set it against.
    chosen = accuracy.beam_sizes([{"configuration": "default", "beam_size": 5}, {"configuration": "greedy", "beam_size": 1}],
                                 {"default": "", "greedy": "beam_size=1"})  # fmt: skip
    assert chosen == {"default": 5, "greedy": 1} and accuracy.greedy_beside("default", chosen) == "greedy"

    def counts(errors: int) -> dict:  # ten reference words, `errors` substitutions
        return {"substitutions": errors, "deletions": 0, "insertions": 0, "hits": 10 - errors, "normalizer": "whisper-basic"}

    def row(config: str, shift: float, streamed: list[int], offline: list[int]) -> dict:
        # Texts: the greedy offline pass hears "ein zwei drei vier"; the beam search one
        # hears a fifth word that the beam stream leaves out.
        texts = {"streamed": "ein zwei drei vier", "offline": "ein zwei drei vier" + (" fünf" if config == "beam" else "")}
        streams = [{"file": f"clip{i}.wav", "wer_counts": counts(s), "offline_wer_counts": counts(o), **texts}
                   for i, (s, o) in enumerate(zip(streamed, offline))]  # fmt: skip
        return {"language": "de", "language_option": "given", "configuration": config, "shift": shift,
                "normalizer": "whisper-basic", "wer": sum(streamed) / 20, "offline_wer": sum(offline) / 20,
                "kept_lowest": 1.0, "streams": streams}

    rows = [row("default", 0.0, [3, 3], [2, 2]), row("default", 0.5, [3, 3], [2, 2]),
            row("beam", 0.0, [2, 2], [1, 1]), row("beam", 0.5, [2, 2], [1, 1])]  # fmt: skip
    lines = accuracy.shift_summaries(rows, {"default": "", "beam": "beam_size=5"})
    beam = next(line for line in lines if line.startswith("de (given) beam:"))
    assert "streaming minus offline +10.0 points" in beam
    assert "streaming minus default's greedy offline +0.0 points (95% CI +0.0 to +0.0, 2 clips)" in beam
    assert "lowest clip kept 100.0% (word count 80.0% of offline)" in beam  # its own offline pass: five words
    assert beam.endswith("lowest clip kept of default's greedy offline words 100.0% (word count 100.0%)")
    rows[2]["streams"][1]["streamed"] = "ein zwei drei"
    beam = next(line for line in accuracy.shift_summaries(rows, {"default": "", "beam": "beam_size=5"})
                if line.startswith("de (given) beam:"))  # fmt: skip
    assert beam.endswith("lowest clip kept of default's greedy offline words 75.0% (word count 75.0%)")
    # Two words heard as one ("zweidrei") and one added at the end: five of six kept, as
    # many words as offline.
    offline = "eins zwei drei vier fünf sechs"
    clip = {"file": "clip.wav", "offline": offline, "streamed": "eins zweidrei vier fünf sechs sieben"}
    assert accuracy.lowest_clip([{"shift": 0.0, "normalizer": "whisper-basic", "streams": [clip]}]) == (5 / 6, 1.0, None)
    # With the reference: the offline pass's "eins zwei drei vier fünf sechs" has four words
    # the reference confirms, and the stream dropped one of them ("drei").
    confirmed = {**clip, "reference": "eins zwei drei vier"}
    assert accuracy.lowest_clip([{"shift": 0.0, "normalizer": "whisper-basic", "streams": [confirmed]}]) == (5 / 6, 1.0, 3 / 4)
    # A stream that is right where the offline pass splits a word into several keeps every
    # word the reference confirms, though its word count is lower (fleurs-fr-002's case).
    split = {"file": "clip.wav", "offline": "des obligations qui n'est pas à ce que leur stade",
             "streamed": "des obligations qui dépassent leur stade", "reference": "des obligations qui dépassent leur stade"}
    kept, count, of_confirmed = accuracy.lowest_clip([{"shift": 0.0, "normalizer": "whisper-basic", "streams": [split]}])
    assert kept == 6 / 11 and count == 6 / 11 and of_confirmed == 1.0
    shifts = [{**row("default", shift, [0], [0]), "streams": [split]} for shift in (0.0, 0.5)]
    [line] = accuracy.shift_summaries(shifts)
    assert "lowest clip kept 100.0% (word count 54.5% of offline; of the words the reference confirms 100.0%)" in line
    assert accuracy.lowest_clip([{"shift": 0.0, "normalizer": "whisper-basic", "streams": [{**clip, "offline": None}]}]) is None
    default = next(line for line in lines if line.startswith("de (given) default:"))
    assert "greedy offline" not in default and "streaming minus offline +10.0 points" in default


def test_batching_script_pairs_one_sessions_passes_with_and_without_the_batcher(tone_corpus, tmp_path):
    out = tmp_path / "out"
    result = run_script(
        "batching.py", "--backend", "test", "-b", "compute_rtf=0.05", "--corpus", str(tone_corpus),
        "--seconds", "3", "--pass-pairs", "3", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "batching.json").read_text(encoding="utf-8"))
    assert report["rows"] == [], "without --sessions only the pairs run"
    pairs, summary = report["pass_pairs"]["pairs"], report["pass_pairs"]["summary"]
    assert len(pairs) == summary["pairs"] == 3
    assert summary["unbatched_passes"] == summary["batched_passes"] == 3
    # The same audio both ways, and each configuration first in turn.
    assert [p["first"] for p in pairs] == [1, 2, 1] and len({p["audio_seconds"] for p in pairs}) == 3
    assert all(p["unbatched"]["words"] == p["batched"]["words"] != [] for p in pairs)
    assert summary["pairs_with_other_words"] == summary["pairs_with_other_words_or_times"] == 0
    # The batched passes went through the batcher, alone; the unbatched ones did not.
    assert summary["batched_through_batcher"] == 3 and summary["unbatched_through_batcher"] == 0
    assert all(p["batched"]["batch_wait"] is not None and p["unbatched"]["batch_wait"] is None for p in pairs)
    assert all(p[kind]["seconds"] >= p[kind]["compute"] > 0 for p in pairs for kind in ("unbatched", "batched"))
    difference = summary["difference"]
    assert difference["low"] <= difference["median"] <= difference["high"]
    assert "median of 3 paired differences" in result.stdout and "Pairs whose words differ: 0 of 3" in result.stdout
    bad = run_script("batching.py", "--pass-pairs", "0")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("not '0'")



def test_run_script_ends_an_rtlab_error_in_one_line_and_leaves_other_errors_alone(capsys):
    from rtlab.cli.display import run_script as run_main
    from rtlab.errors import UnknownBackend

    def refused():
        raise UnknownBackend("no backend named 'nope' is installed; installed: test")

    assert run_main(refused) == 1
    assert capsys.readouterr().err == "Error: no backend named 'nope' is installed; installed: test\n"
    assert run_main(lambda: None) == 0 and run_main(lambda: 2) == 2
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_main(lambda: 1 / 0)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if "def main(" in p.read_text()))
def test_every_benchmark_script_runs_its_main_through_run_script(script):
    text = (ROOT / "benchmarks" / script).read_text()
    assert text.rstrip().endswith('if __name__ == "__main__":\n    from rtlab.cli.display import run_script\n\n    sys.exit(run_script(main))')

def test_the_clocks_script_without_a_calibration_for_its_backend_says_how_to_make_one(tone_corpus, tmp_path):
    # Before, a backend with no calibration in the reference costs ended in a traceback,
    # and only after the wall and simulated clocks had run.
    result = run_script("clocks.py", "--backend", "test", "--corpus", str(tone_corpus), "--skip-sweep",
                        "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "clock ..." not in result.stderr, "refused before any clock ran"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: rtlab's reference-cpu-costs.json has no calibration for test") and "rtlab calibrate" in last, last


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (Debian: apt-get install espeak-ng)")
def test_synthetic_corpus_speaks_each_sentence_in_its_own_seeded_voice(tmp_path):
    import wave

    from rtlab.eval.corpus import load_corpus

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("The first clip is short.\n\nA second clip, a little longer than the first.\nA third.\n", encoding="utf-8")
    for name in ("one", "two"):
        result = run_script("synthetic_corpus.py", "--sentences", str(sentences), "--count", "2", "--seed", "3",
                            "--out", str(tmp_path / name))  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"wrote 2 clips to {tmp_path / name}" in result.stdout
    utterances = load_corpus(tmp_path / "one")
    assert [(u.id, u.text) for u in utterances] == [("synthetic-en-000", "The first clip is short."),
                                                    ("synthetic-en-001", "A second clip, a little longer than the first.")]  # fmt: skip
    for utterance in utterances:
        with wave.open(str(utterance.audio)) as audio:
            assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (16_000, 1, 2)
            assert audio.getnframes() > 16_000  # speech, not an empty file
        # the same seed speaks the same clips
        assert utterance.audio.read_bytes() == (tmp_path / "two" / utterance.audio.name).read_bytes()
    voices = json.loads((tmp_path / "one" / "voices.json").read_text(encoding="utf-8"))
    assert [c["clip"] for c in voices["clips"]] == ["synthetic-en-000", "synthetic-en-001"] and voices["seed"] == 3
    script = benchmark_script("synthetic_corpus")
    assert voices["clips"] == [{"clip": f"synthetic-en-00{i}", **plan} for i, plan in enumerate(script.voice_plan("en", 2, 3))]
    assert script.voice_plan("en", 40, 3) != script.voice_plan("en", 40, 4)
    assert "espeak-ng" in voices["espeak_ng"].lower() or "espeak ng" in voices["espeak_ng"].lower()
    refused = run_script("synthetic_corpus.py", "--sentences", str(sentences), "--out", str(tmp_path / "one"))
    assert refused.returncode == 2 and "already holds clips: give a new folder" in refused.stderr
    refused = run_script("synthetic_corpus.py", "--count", "0", "--out", str(tmp_path / "three"))
    assert refused.returncode == 2 and "--count must be at least 1, not 0" in refused.stderr
    refused = run_script("synthetic_corpus.py", "--sentences", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "four"))
    assert refused.returncode == 2 and "cannot read the sentences" in refused.stderr
