"""The scripts in benchmarks/, run as a user runs them (a Python subprocess), with the
deterministic tone backend on the tone corpus (conftest): tables printed, JSON and PNG written,
and the exit status that says whether the replay target held."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rtlab.testing import TONE_CLIPS

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.timeout(240)


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
    spec = importlib.util.spec_from_file_location("replay_benchmark", ROOT / "benchmarks" / "replay.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

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
