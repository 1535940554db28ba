"""Promises of ``rtlab bench`` and rtlab.eval.bench/rtlab.eval.plots, on a tone corpus made here;
end to end on the shared English speech with faster-whisper when both are present."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rtlab.eval.bench import format_table, load_grid, resolve_normalizer, run_bench
from rtlab.cli import cli
from rtlab.eval.corpus import load_corpus, shared_speech_dir
from rtlab.errors import InvalidOption
from rtlab.config import StreamConfig
from rtlab.eval.results import StreamResult
from rtlab.testing import TONE_CLIPS, tone_words, wav_bytes

CLIPS = TONE_CLIPS
TEST_CONFIGS = ["backend=test,min_chunk=0.5", "backend=test,min_chunk=1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(*args: str) -> object:
    return CliRunner().invoke(cli, ["bench", *args])


def _records(out: Path) -> list[dict]:
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- the command


def test_bench_prints_a_row_per_configuration_and_writes_results(tone_corpus, tmp_path):
    out = tmp_path / "out"
    args = [str(tone_corpus), "--out", str(out)]
    for config in TEST_CONFIGS:
        args += ["--config", config]
    result = _bench(*args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("configuration"))
    for column in ("WER", "median latency", "p95 latency", "median first text", "RTF"):
        assert column in header
    rows = [line for line in lines if line.startswith("test local-agreement")]
    assert len(rows) == 2 and all(" 0.0% " in row for row in rows)
    assert "clock: simulated" in result.output and "normalizer: whisper-english" in result.output

    records = _records(out)
    kinds = [r["record"] for r in records]
    assert kinds == ["run"] + ["stream"] * 6 + ["summary"] * 2
    for record in records:
        assert record["clock"] == "simulated"
        assert record["normalizer"] == "whisper-english"
        assert record["environment"]["cpu_count"] >= 1
        assert "python" in record["environment"]
    streams = [StreamResult.from_dict(r) for r in records if r["record"] == "stream"]
    assert {Path(s.file).stem for s in streams} == set(CLIPS)
    assert all(s.wer.value == 0 and s.offline_wer.value == 0 for s in streams)
    assert all(s.word_latencies and s.lag["samples"] for s in streams)
    summaries = [r for r in records if r["record"] == "summary"]
    assert [s["name"] for s in summaries] == [StreamConfig.parse(c).label for c in TEST_CONFIGS]
    assert summaries[0]["files"] == 3 and summaries[0]["errors"] == 0
    # A smaller chunk commits sooner.
    assert summaries[0]["latency"]["median"] < summaries[1]["latency"]["median"]

    if _has_matplotlib():
        for name in ("wer_vs_latency.png", "latency_cdf.png", "lag.png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_bench_long_form_joins_the_corpus_into_one_stream(tone_corpus, tmp_path):
    out = tmp_path / "long"
    result = _bench(str(tone_corpus), "--config", "backend=test", "--long-form", "--out", str(out))
    assert result.exit_code == 0, result.output
    (stream,) = [r for r in _records(out) if r["record"] == "stream"]
    assert stream["reference"] == " ".join(CLIPS[k] for k in sorted(CLIPS))
    assert stream["hypothesis"] == stream["reference"]
    assert "long-form" in result.output


def test_bench_one_at_a_time_gives_the_same_transcripts_and_says_how_it_ran(tone_corpus, tmp_path):
    runs = {}
    for mode, flags in (("together", []), ("one at a time", ["--one-at-a-time"])):
        out = tmp_path / mode.replace(" ", "-")
        args = [str(tone_corpus), "--out", str(out), *flags]
        for config in TEST_CONFIGS:
            args += ["--config", config]
        result = _bench(*args)
        assert result.exit_code == 0, result.output
        assert f"clock: simulated ({mode})" in result.output
        # The offline reference passes run alongside the replay, or before it one at a time.
        assert ("alongside it" if mode == "together" else "before it") in result.output
        records = _records(out)
        assert records[0]["replay_mode"] == mode
        assert records[0]["offline_wall_seconds"] > 0
        runs[mode] = [(r["config"]["name"], Path(r["file"]).stem, r["hypothesis"]) for r in records if r["record"] == "stream"]
    assert runs["together"] == runs["one at a time"]
    assert len(runs["together"]) == 6


def test_bench_records_the_normalizer_it_was_told(tone_corpus, tmp_path):
    out = tmp_path / "out"
    result = _bench(str(tone_corpus), "--config", "backend=test", "--normalizer", "none", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert {r["normalizer"] for r in _records(out)} == {"none"}


def test_bench_reads_a_toml_grid(tone_corpus, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        'backend = "test"\n[grid]\nmin_chunk = [0.5, 2]\nprompt_chars = [0, 100]\n'
        '[[config]]\nname = "named"\nmin_chunk = 1\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = _bench(str(tone_corpus), "--grid", str(grid), "--out", str(out))
    assert result.exit_code == 0, result.output
    names = [r["name"] for r in _records(out) if r["record"] == "summary"]
    assert len(names) == 5 and names[-1] == "named"


def test_bench_wall_clock_runs_in_real_time(tmp_path):
    folder = tmp_path / "short"
    folder.mkdir()
    (folder / "x.wav").write_bytes(wav_bytes(tone_words("alpha bravo")[0]))
    (folder / "x.txt").write_text("alpha bravo")
    out = tmp_path / "out"
    result = _bench(str(folder), "--config", "backend=test,min_chunk=0.5", "--clock", "wall", "--out", str(out))
    assert result.exit_code == 0, result.output
    (stream,) = [r for r in _records(out) if r["record"] == "stream"]
    assert stream["clock"] == "wall" and stream["wer"]["value"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "backend=test,min_chunk"], "expected KEY=VALUE"),
        (["--config", "backend=nope"], "unknown backend 'nope'"),
        (["--config", "backend=test,colour=blue"], "accepted by none"),
        (["--config", "backend=test", "--config", "backend=test"], "given twice"),
        (["--normalizer", "shouty"], "Invalid value for '--normalizer'"),
        (["--clock", "sundial"], "Invalid value for '--clock'"),
    ],
)
def test_bench_refuses_bad_options_in_one_line(tone_corpus, tmp_path, args, message):
    result = _bench(str(tone_corpus), "--out", str(tmp_path / "out"), *args)
    assert result.exit_code == 2
    error_line = result.output.strip().splitlines()[-1]
    assert error_line.startswith("Error: ") and message in error_line
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_bench_refuses_a_missing_or_empty_corpus(tmp_path):
    result = _bench(str(tmp_path / "missing"), "--config", "backend=test")
    assert result.exit_code == 2 and "does not exist" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _bench(str(empty), "--config", "backend=test")
    assert result.exit_code == 2 and "no utterances found" in result.output
    assert "Traceback" not in result.output


def test_a_clip_without_its_reference_is_named_in_a_one_line_warning(tmp_path, data_dir):
    import shutil
    import subprocess
    import sys

    shutil.copy(data_dir / "fox.ogg", tmp_path / "fox.ogg")  # no fox.txt beside it
    result = subprocess.run([sys.executable, "-m", "rtlab", "bench", str(tmp_path), "--config", "backend=test"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    # Not Python's "file.py:419: UserWarning: ..." with the source line under it.
    assert f"warning: skipping {tmp_path / 'fox.ogg'}: no fox.txt beside it\n" in result.stderr
    assert "UserWarning" not in result.stderr and "load_corpus(" not in result.stderr


def test_an_out_folder_that_cannot_be_made_is_refused_before_any_work(tone_corpus, tmp_path):
    taken = tmp_path / "results.jsonl"
    taken.write_text("a file where --out wants a folder\n")
    result = _bench(str(tone_corpus), "--config", "backend=test", "--out", str(taken / "run1"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"Error: --out {taken / 'run1'}: {taken} is a file, not a folder; give a path in a folder"
    ]  # refused before the replay (no table), not after it


def test_a_long_form_run_that_fails_leaves_no_out_folder_it_made(tone_corpus, tmp_path, no_ffmpeg_left):
    # The join writes into --out before the replay: a clip FFmpeg cannot decode left the
    # folders made for it behind, empty.
    (tone_corpus / "zz.wav").write_bytes(b"not audio")
    (tone_corpus / "zz.txt").write_text("zulu\n", encoding="utf-8")
    made = tmp_path / "new" / "run1"
    result = _bench(str(tone_corpus), "--config", "backend=test", "--long-form", "--out", str(made))
    assert result.exit_code == 1 and "could not decode" in result.output
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"  # a folder that was there before is the user's: kept
    kept.mkdir()
    result = _bench(str(tone_corpus), "--config", "backend=test", "--long-form", "--out", str(kept))
    assert result.exit_code == 1 and kept.is_dir() and not any(kept.iterdir())


def test_a_long_form_run_that_fails_after_the_join_leaves_no_long_form_wav(tone_corpus, tmp_path):
    # fail_after=1: the offline reference pass raises, after the clips were joined. Before,
    # long-form.wav stayed in --out (keeping the folder made for it), and over an earlier
    # run's it stayed as the failed run's, no longer the audio its results.jsonl names.
    failing = "backend=test,fail_after=1"
    made = tmp_path / "new" / "run1"
    result = _bench(str(tone_corpus), "--config", failing, "--long-form", "--out", str(made))
    assert result.exit_code == 1 and "failing on call" in str(result.exception)
    assert not (tmp_path / "new").exists()

    kept = tmp_path / "kept"
    result = _bench(str(tone_corpus), "--config", "backend=test", "--long-form", "--out", str(kept))
    assert result.exit_code == 0, result.output
    (stream,) = [r for r in _records(kept) if r["record"] == "stream"]
    assert stream["file"] == str(kept / "long-form.wav")  # a successful run keeps the file it names
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    assert "long-form.wav" in before and "results.jsonl" in before
    result = _bench(str(tone_corpus), "--config", failing, "--long-form", "--gap", "2", "--out", str(kept))
    assert result.exit_code == 1 and "failing on call" in str(result.exception)
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before


def _no_space(*args, **kwargs):
    import errno
    import os

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_results_that_cannot_be_written_leave_nothing_of_the_run(tone_corpus, tmp_path, monkeypatch):
    # The disk fills while results.jsonl is written, after the run. Before, the run's
    # long-form.wav stayed in --out without the results that name it, over an earlier run's
    # that the earlier results.jsonl names.
    from rtlab.eval.bench import BenchRun

    kept = tmp_path / "kept"
    result = _bench(str(tone_corpus), "--config", "backend=test", "--long-form", "--out", str(kept))
    assert result.exit_code == 0, result.output
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    assert {"long-form.wav", "results.jsonl"} <= set(before)

    def records_then_a_full_disk(self):
        yield {"record": "run"}
        _no_space()

    monkeypatch.setattr(BenchRun, "records", records_then_a_full_disk)
    result = _bench(str(tone_corpus), "--config", "backend=test", "--long-form", "--gap", "2", "--out", str(kept))
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before  # no .partial either
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    (line,) = result.output.splitlines()
    assert line == (f"Error: cannot write {kept / 'results.jsonl'} (No space left on device): "
                    "nothing of this run was kept; free some space or give another --out")  # fmt: skip

    made = tmp_path / "new" / "run1"
    result = _bench(str(tone_corpus), "--config", "backend=test", "--long-form", "--out", str(made))
    assert result.exit_code == 1 and str(made / "results.jsonl") in result.output
    assert not (tmp_path / "new").exists()


def test_plots_that_cannot_be_written_leave_the_results_and_no_plots(tone_corpus, tmp_path, monkeypatch):
    from rtlab.eval import plots

    out = tmp_path / "out"
    out.mkdir()
    (out / plots.FILES["lag"]).write_bytes(b"an earlier run's plot")

    def one_plot_then_a_full_disk(summaries, streams, out_dir):
        (out_dir / plots.FILES["wer_vs_latency"]).write_bytes(PNG_MAGIC)  # cut short
        _no_space()

    monkeypatch.setattr(plots, "save_bench_plots", one_plot_then_a_full_disk)
    result = _bench(str(tone_corpus), "--config", "backend=test", "--out", str(out))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "configuration" in result.output and f"wrote {out / 'results.jsonl'}" in result.output
    assert (f"Error: cannot write the plots into {out} (No space left on device): results.jsonl is written, "
            "the plots are not (none are left there)") in result.output.splitlines()  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl"]
    assert len(_records(out)) == 1 + 3 + 1


def test_a_full_disk_during_the_long_form_join_is_one_line(tone_corpus, tmp_path, monkeypatch):
    import rtlab.eval.corpus

    monkeypatch.setattr(rtlab.eval.corpus, "concatenate", _no_space)
    made = tmp_path / "new"
    result = _bench(str(tone_corpus), "--config", "backend=test", "--long-form", "--out", str(made))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert result.output.splitlines() == [f"Error: {made}: No space left on device; nothing of this run was kept"]
    assert not made.exists()


def test_gap_without_long_form_is_refused(tone_corpus, tmp_path):
    result = _bench(str(tone_corpus), "--config", "backend=test", "--gap", "2", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: --gap is the silence between clips that --long-form joins: add --long-form, or leave --gap out"
    )
    assert not (tmp_path / "out").exists()


def test_bench_refuses_a_bad_grid(tone_corpus, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("backend = [\n", encoding="utf-8")
    result = _bench(str(tone_corpus), "--grid", str(grid))
    assert result.exit_code == 2 and "not valid TOML" in result.output
    grid.write_text('backend = "test"\ncolour = "blue"\n', encoding="utf-8")
    result = _bench(str(tone_corpus), "--grid", str(grid))
    assert result.exit_code == 2 and "colour" in result.output


def test_bench_reports_a_model_that_cannot_load_without_traceback(tone_corpus, tmp_path):
    pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    result = _bench(str(tone_corpus), "--config", "backend=faster-whisper,model=/nonexistent/model",
                    "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "Traceback" not in result.output


# --------------------------------------------------------------------------- the library


def test_load_grid_makes_the_cartesian_product_over_defaults(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('backend = "test"\nmin_chunk = 2\n[grid]\nprompt_chars = [0, 50, 100]\n')
    configs = load_grid(grid)
    assert [c.policy_options for c in configs] == [
        {"min_chunk": 2, "prompt_chars": n} for n in (0, 50, 100)
    ]
    grid.write_text('backend = "test"\n')
    assert len(load_grid(grid)) == 1
    grid.write_text('backend = "test"\n[grid]\nspeed = [1]\n')
    with pytest.raises(InvalidOption):
        load_grid(grid)
    grid.write_text('backend = "test"\nmin_chunk = [1, 2]\n')
    with pytest.raises(ValueError, match=r"\[grid\]"):
        load_grid(grid)


def test_resolve_normalizer_follows_the_corpus_language():
    assert resolve_normalizer("auto", [None, "en"]) == "whisper-english"
    assert resolve_normalizer("auto", ["de"]) == "whisper-basic"
    assert resolve_normalizer("auto", ["en", "de"]) == "whisper-basic"
    assert resolve_normalizer("none", ["en"]) == "none"


def test_run_bench_summaries_match_their_streams(tone_corpus):
    run = run_bench(tone_corpus, [StreamConfig.parse(c) for c in TEST_CONFIGS], progress=False)
    assert len(run.streams) == 6 and len(run.summaries) == 2
    for summary in run.summaries:
        mine = [s for s in run.streams if s.config["name"] == summary["name"]]
        assert summary["wer"]["reference_words"] == sum(s.wer.reference_words for s in mine)
        assert summary["latency"]["count"] == sum(len(s.word_latencies) for s in mine)
    table = run.table()
    assert "3 files" in table and "clock: simulated" in table
    assert format_table(run.summaries).count("\n") == 4  # header, rule, two rows, legend
    # the second configuration against the first, on the same three files
    ((name, difference),) = run.differences()
    assert name == run.summaries[1]["name"] and difference.value == 0 and difference.groups == 3
    assert f"WER of {name} minus {run.summaries[0]['name']}: +0.0 points (95% CI +0.0 to +0.0, 3 files)" in table


def test_every_column_of_the_table_says_what_statistic_it_is_and_holds_that_figure(tmp_path):
    # The "first text" column is a median over streams; its header did not say so, nor did
    # anything say that WER and RTF are pooled and the latencies are over every word.
    import numpy as np

    from rtlab.testing import write_tone_corpus

    corpus = write_tone_corpus(tmp_path / "corpus", {**CLIPS, "hush": ""})
    run = run_bench(corpus, [StreamConfig.parse("backend=test,min_chunk=0.5")], progress=False)
    (summary,) = run.summaries
    lines = format_table(run.summaries).splitlines()
    header, row, legend = lines[0].split("  "), lines[2], lines[3]
    assert [c.strip() for c in header if c.strip()] == [
        "configuration", "WER", "offline WER", "kept", "median latency", "p95 latency", "median first text", "RTF"]
    assert legend.startswith("pooled over the files (counts and seconds summed): WER, offline WER, kept")
    assert "median and p95 latency: commit latency over every word of every file" in legend
    assert "median first text: over the streams" in legend
    # The figures are those statistics of the streams.
    words = [latency for s in run.streams for latency in s.word_latencies]
    firsts = [s.first_text_latency for s in run.streams if s.first_text_latency is not None]
    errors = sum(s.wer.errors for s in run.streams)
    rtf = sum(s.compute_seconds for s in run.streams) / sum(s.audio_seconds for s in run.streams)
    assert summary["wer"]["value"] == errors / sum(len(CLIPS[k].split()) for k in CLIPS)
    assert summary["latency"]["median"] == pytest.approx(np.median(words))
    assert summary["latency"]["p95"] == pytest.approx(np.percentile(words, 95))
    assert len(firsts) == 3 and summary["first_text_latency"]["median"] == pytest.approx(np.median(firsts))
    assert summary["rtf"] == pytest.approx(rtf)
    assert row.split()[-7:] == [f"{np.median(words):.2f}", "s", f"{np.percentile(words, 95):.2f}", "s",
                                f"{np.median(firsts):.2f}", "s", f"{rtf:.3f}"]
    # The silent clip committed nothing: it is left out of the median, and the table says so.
    assert f"{summary['name']}: median first text over 3 of 4 streams (1 committed no word)" in lines


def test_offline_wall_seconds_count_overlapping_passes_once(tone_corpus, monkeypatch):
    # Three clips side by side, each clip's offline pass 1 s long and all three at once: the
    # offline passes took about 1 s of the run's wall time. Before, the table's "offline
    # passes N s" (offline_wall_seconds) summed the clips' passes: 3 s, longer than they ran.
    import rtlab.eval.offline

    real = rtlab.eval.offline.offline_transcribe

    def one_second(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(rtlab.eval.offline, "offline_transcribe", one_second)
    run = run_bench(tone_corpus, [StreamConfig.parse("backend=test")], clock="unaware", clips_at_once=3, progress=False)
    assert len({s.file for s in run.streams}) == 3
    assert 1.0 <= run.offline_wall_seconds < 2.0 and run.offline_wall_seconds <= run.wall_seconds
    assert f"offline passes {run.offline_wall_seconds:.1f} s alongside it" in run.table()


def test_the_table_names_the_configurations_it_could_not_compare(tmp_path):
    # A configuration with a failed stream has no paired WER difference. Before, its line
    # was left out without a word, and a first configuration with a failed stream left out
    # every line: the table read as if there were nothing to compare.
    from rtlab.testing import write_tone_corpus

    corpus = write_tone_corpus(tmp_path / "corpus", {"a": CLIPS["a"]})
    # One clip, one configuration at a time: each offline pass (its backend's first call)
    # succeeds, and the failing backend fails in its stream.
    failing = "backend=test,model=fails-in-the-stream-{},fail_after=3,name={}"
    configs = ["backend=test,min_chunk=0.5,name=good", failing.format(1, "bad"), "backend=test,min_chunk=1,name=other"]
    run = run_bench(corpus, [StreamConfig.parse(c) for c in configs], one_at_a_time=True, progress=False)
    assert [s["errors"] for s in run.summaries] == [0, 1, 0]
    lines = run.table().splitlines()
    assert "WER of bad minus good: not compared (a stream of bad failed)" in lines
    assert any(line.startswith("WER of other minus good: +0.0 points") for line in lines)

    configs = [failing.format(2, "bad first"), "backend=test,name=good"]
    run = run_bench(corpus, [StreamConfig.parse(c) for c in configs], one_at_a_time=True, progress=False)
    assert "WER of good minus bad first: not compared (a stream of bad first failed)" in run.table().splitlines()


def test_a_failed_stream_records_unknown_seconds_and_its_asked_language_and_still_plots(tmp_path):
    # Before, a stream that failed before its summary was written with 0.0 audio and
    # compute seconds, measured by nobody, and with no language though it asked for one.
    from rtlab.testing import write_tone_corpus

    corpus = write_tone_corpus(tmp_path / "corpus", {"a": CLIPS["a"]})
    configs = ["backend=test,min_chunk=0.5,name=good",
               "backend=test,model=fails-in-the-stream-3,fail_after=3,language=en,name=bad"]  # fmt: skip
    run = run_bench(corpus, [StreamConfig.parse(c) for c in configs], one_at_a_time=True, progress=False)
    good, bad = run.summaries
    assert (bad["errors"], bad["files_without_seconds"], good["files_without_seconds"]) == (1, 1, 0)
    assert (bad["audio_seconds"], bad["compute_seconds"], bad["rtf"]) == (None, None, None)
    assert good["audio_seconds"] > 0 and good["rtf"] is not None
    assert "bad: no RTF, no stream measured its audio and compute seconds (each failed before its summary)" in (
        run.table().splitlines()
    )
    out = tmp_path / "out"
    run.write(out, plots=_has_matplotlib())  # the lag plot lays files end to end by their audio
    (line,) = [r for r in _records(out) if r["record"] == "stream" and r["config"]["name"] == "bad"]
    assert line["error"] and line["language"] == "en"
    assert (line["audio_seconds"], line["compute_seconds"], line["rtf"]) == (None, None, None)
    back = StreamResult.from_dict(line)
    assert back.audio_seconds is None and back.rtf is None


def test_clips_without_reference_words_get_no_wer_in_the_table_nor_in_results(tmp_path):
    # A clip whose reference is empty (silence) has no WER. Before, one where nothing was
    # committed either got 0.0%, the best WER there is, and with two configurations the
    # table raised ValueError from paired_difference, after results.jsonl was written.
    from rtlab.testing import write_tone_corpus

    corpus = write_tone_corpus(tmp_path / "corpus", {"hush": "", "quiet": ""})
    out = tmp_path / "out"
    result = _bench(str(corpus), "--out", str(out), *(a for c in TEST_CONFIGS for a in ("--config", c)))
    assert result.exit_code == 0, result.output
    assert "0.0%" not in result.output
    lines = result.output.splitlines()
    below = next(i for i, line in enumerate(lines) if line.startswith("----")) + 1
    rows = [line.split() for line in lines[below : below + 2]]
    assert all(row[3:5] == ["-", "-"] for row in rows), rows  # WER, offline WER
    assert "no WER, no file has reference words (0 words committed against none)" in result.output
    assert "not compared (no file has reference words)" in result.output
    records = _records(out)
    streams = [r for r in records if r["record"] == "stream"]
    assert len(streams) == 4 and all(r["wer"]["value"] is None and r["offline_wer"]["value"] is None for r in streams)
    assert all(StreamResult.from_dict(r).wer.defined_value is None for r in streams)
    assert all(r["wer"]["value"] is None for r in records if r["record"] == "summary")


def test_a_clip_without_reference_words_is_named_under_the_table(tmp_path):
    from rtlab.testing import write_tone_corpus

    corpus = write_tone_corpus(tmp_path / "corpus", {"a": CLIPS["a"], "hush": ""})
    run = run_bench(corpus, [StreamConfig.parse("backend=test")], progress=False)
    (summary,) = run.summaries
    assert summary["wer"]["value"] == 0.0 and summary["files_without_reference"] == 1
    assert (f"{summary['name']}: 1 of 2 files without reference words (no WER of their own): "
            "the pooled WER counts their 0 committed words as insertions") in run.table().splitlines()  # fmt: skip


def test_plots_are_written_as_png(tone_corpus, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is optional (rtlab[plots])")
    from rtlab.eval import plots

    run = run_bench(tone_corpus, [StreamConfig.parse(c) for c in TEST_CONFIGS], progress=False)
    streams = [s.to_dict() for s in run.streams]
    paths = plots.save_bench_plots(run.summaries, streams, tmp_path / "png")
    assert [p.name for p in paths] == ["wer_vs_latency.png", "latency_cdf.png", "lag.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths)
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


def test_plots_of_clips_without_reference_text_warn_of_nothing(tmp_path, data_dir):
    pytest.importorskip("matplotlib", reason="matplotlib is optional (rtlab[plots])")
    import warnings

    from rtlab.eval import plots

    shutil.copy(data_dir / "fox.ogg", tmp_path / "fox.ogg")
    (tmp_path / "fox.txt").write_text("")  # no reference text: no WER, no point to plot
    run = run_bench(tmp_path, [StreamConfig.parse("backend=test")], progress=False)
    assert run.summaries[0]["wer"]["value"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found to put in legend"
        paths = plots.save_bench_plots(run.summaries, [s.to_dict() for s in run.streams], tmp_path / "png")
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths)


def test_the_commit_timeline_draws_each_word_where_it_was_said_and_where_it_was_committed(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is optional (rtlab[plots])")
    from rtlab.eval.plots import TIMELINE_LABELLED_WORDS, commit_timeline_figure, plot_commit_timeline

    events = [
        {"type": "partial", "text": "alpha", "emitted_at": 1.0},
        {"type": "commit", "words": [{"text": "alpha", "start": 0.1, "end": 0.5},
                                     {"text": " bravo", "start": 0.6, "end": 0.9}], "emitted_at": 2.0},
        {"type": "commit", "words": [], "emitted_at": 2.5},
        {"type": "commit", "words": [{"text": "charlie", "start": 1.0, "end": 1.4}], "emitted_at": 3.0},
        {"type": "summary", "text": "alpha bravo charlie", "emitted_at": 3.1},
    ]  # fmt: skip
    ax = commit_timeline_figure([("first", events), ("second", events[:2]), ("empty", [])], clock="unaware").axes[0]
    boxes = [(round(p.get_x(), 3), round(p.get_x() + p.get_width(), 3), p.get_y()) for p in ax.patches]
    assert [b[:2] for b in boxes] == [(0.1, 0.5), (0.6, 0.9), (1.0, 1.4), (0.1, 0.5), (0.6, 0.9)]
    assert boxes[0][2] > boxes[3][2]  # the first lane on top
    # each word's line runs from its end in the audio to its commit
    assert [tuple(line.get_xdata()) for line in ax.lines] == [(0.5, 2.0), (0.9, 2.0), (1.4, 3.0), (0.5, 2.0), (0.9, 2.0)]
    ticks = [sorted({x for segment in c.get_segments() for x, _ in segment}) for c in ax.collections]
    assert ticks == [[2.0, 3.0], [2.0], []]  # a commit without words is no tick
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("bravo") == 2
    assert {"first  (3 words, 2 commits)", "second  (2 words, 1 commits)", "empty  (0 words, 0 commits)"} <= set(texts)
    assert "clock: unaware" in ax.get_title()

    many = [{"type": "commit", "words": [{"text": f"w{i}", "start": i * 0.1, "end": i * 0.1 + 0.05}],
             "emitted_at": i * 0.1 + 1} for i in range(TIMELINE_LABELLED_WORDS + 1)]  # fmt: skip
    crowded = commit_timeline_figure([("crowded", many)]).axes[0]
    assert [t.get_text() for t in crowded.texts] == [f"crowded  ({TIMELINE_LABELLED_WORDS + 1} words, "
                                                     f"{TIMELINE_LABELLED_WORDS + 1} commits)"]  # fmt: skip
    assert len(crowded.patches) == TIMELINE_LABELLED_WORDS + 1
    path = plot_commit_timeline([("first", events)], tmp_path / "timeline.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------- real speech


@pytest.mark.slow
def test_bench_end_to_end_on_shared_speech_with_faster_whisper(tmp_path):
    pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    speech = shared_speech_dir()
    if speech is None:
        pytest.skip("shared speech not found (../shared/data/speech/en or RTLAB_SPEECH_DIR)")
    # The two shortest clips keep this under a minute on two cores.
    shortest = sorted(load_corpus(speech), key=lambda u: u.audio.stat().st_size)[:2]
    folder = tmp_path / "speech"
    folder.mkdir()
    for utt in shortest:
        shutil.copy(utt.audio, folder / utt.audio.name)
        (folder / f"{utt.id}.txt").write_text(utt.text, encoding="utf-8")
    out = tmp_path / "out"
    result = _bench(
        str(folder), "--out", str(out),
        "--config", "backend=faster-whisper,model=tiny.en,min_chunk=1",
        "--config", "backend=faster-whisper,model=tiny.en,min_chunk=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summaries = [r for r in _records(out) if r["record"] == "summary"]
    for summary in summaries:
        assert summary["errors"] == 0
        assert summary["wer"]["value"] < 0.5
        assert summary["offline_wer"]["value"] < 0.5
        assert summary["latency"]["count"] > 0 and summary["latency"]["median"] > 0
        assert summary["environment"]["packages"]["faster-whisper"]


def test_the_offline_reference_hears_the_16_bit_samples_the_streams_hear(tone_corpus, monkeypatch):
    """Whisper's words move with rounding: the offline pass gets the audio as the replay
    feeds it to the streams (16-bit PCM), with numpy's BLAS on one thread as while they run."""
    import numpy as np

    import rtlab.eval.offline as offline
    from rtlab.eval.bench import run_bench
    from rtlab.testing import blas_thread_counts

    before = blas_thread_counts()
    heard = []
    original = offline.offline_transcribe

    def recording(path, config, *, audio=None, **options):
        heard.append((np.array(audio), max(blas_thread_counts(), default=1)))
        time.sleep(0.5)  # a reference pass that outlasts the replay beside it, as a real model's does
        return original(path, config, audio=audio, **options)

    import rtlab.decoders.files as files

    decoded = files.decode_audio
    # float samples between the 16-bit steps, as a file decoded to float32 has
    monkeypatch.setattr(files, "decode_audio", lambda path: decoded(path) + np.float32(0.3 / 32768))
    monkeypatch.setattr(offline, "offline_transcribe", recording)
    for one_at_a_time in (True, False):  # the reference before the streams, and beside them
        run_bench(tone_corpus, [StreamConfig.parse("backend=test")], clock="unaware", progress=False,
                  one_at_a_time=one_at_a_time)  # fmt: skip
        assert blas_thread_counts() == before, "BLAS has its threads back after the run"
    assert heard and all(threads == 1 for _, threads in heard)
    for audio, _ in heard:
        assert audio.dtype == np.float32 and np.array_equal(audio * 32768, np.round(audio * 32768))


def test_ctrl_c_keeps_the_clips_already_done(tmp_path):
    """A long benchmark stopped with Ctrl-C writes the clips it finished, marked
    interrupted, instead of losing them (wall clock: a short clip, then two long ones)."""
    import re
    import signal
    import subprocess
    import sys
    import threading

    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliett".split()
    for name, count in (("a-short", 2), ("b-long", 30), ("c-long", 30)):
        text = " ".join((words * 3)[:count])
        (tmp_path / f"{name}.wav").write_bytes(wav_bytes(tone_words(text)[0]))
        (tmp_path / f"{name}.txt").write_text(text)
    out = tmp_path / "out"
    # Ctrl-C as a terminal gives it, whatever this process inherited: a suite started in the
    # background by a shell without job control ignores SIGINT, and so would the child.
    bench = subprocess.Popen([sys.executable, "-m", "rtlab", "bench", str(tmp_path), "--config", "backend=test",
                              "--clock", "wall", "--progress", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(iter(lambda: bench.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        # The progress bar passes the short clip's 1.3 s; 3 s more and it has been scored,
        # while the first 15 s clip is under way (however long Python took to start).
        deadline = time.monotonic() + 120
        while not any(float(x) >= 1.3 for x in re.findall(r"([0-9.]+)/[0-9.]+ s audio", "".join(errors))):
            assert time.monotonic() < deadline and bench.poll() is None, "".join(errors)
            time.sleep(0.2)
        time.sleep(3)
        bench.send_signal(signal.SIGINT)
        stdout = bench.stdout.read()
        bench.wait(timeout=60)
        reader.join(timeout=10)
        stderr = "".join(errors)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, stderr
    assert "interrupted after 1 of 3 clips" in stderr and "Traceback" not in stderr
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    run = lines[0]
    assert (run["interrupted"], run["files"], run["files_planned"]) == (True, 1, 3)
    assert [line["file"] for line in lines if line["record"] == "stream"] == [str(tmp_path / "a-short.wav")]
    assert "test local-agreement" in stdout and "0.0%" in stdout


def test_results_keep_the_measured_compute_beside_the_clocks(tone_corpus, tmp_path):
    # On the modeled clock compute_seconds (and rtf) are the cost model's prediction. What
    # the passes took on this machine was in the summary events but not in the results:
    # results.jsonl could not say what a modeled run cost here.
    from rtlab.core.costs import Calibration, CostModel, key_for
    from rtlab.core.instances import get_backend

    config = StreamConfig.parse("backend=test,compute_rtf=0.05")
    calibration = Calibration(key_for(config, get_backend(config)), {"audio_seconds": 0.0, "calls": 0.001, "prompt_words": 0.0, "words": 0.0})
    run = run_bench(tone_corpus, [config], clock="modeled", cost_model=CostModel([calibration]), progress=False)
    run.write(tmp_path, plots=False)
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    streams = [StreamResult.from_dict(line) for line in lines if "file" in line and "hypothesis" in line]
    assert len(streams) == len(run.streams) > 0
    for stream in streams:  # predicted: 1 ms a call; measured: about 5% of the audio passed
        assert stream.compute_seconds < 0.01 * stream.audio_seconds < stream.measured_compute_seconds
    summary = run.summaries[0]
    assert summary["rtf"] < 0.01 < summary["measured_rtf"]
    note = f"{config.label}: RTF is the cost model's (modeled clock); measured on this machine {summary['measured_rtf']:.3f}"
    assert note in run.table().splitlines()
    assert summary["measured_compute_seconds"] == pytest.approx(sum(s.measured_compute_seconds for s in streams))


def test_the_latency_curve_says_how_many_committed_words_it_times(tmp_path, monkeypatch):
    # A word gets a latency only where it matches a reference word; the legend counted
    # those alone as "N words", beside a timeline that counts every committed word.
    import matplotlib.axes

    from rtlab.eval.plots import plot_latency_cdf

    labels = []
    real_step = matplotlib.axes.Axes.step
    monkeypatch.setattr(matplotlib.axes.Axes, "step",
                        lambda self, *a, **k: labels.append(k.get("label")) or real_step(self, *a, **k))  # fmt: skip
    streams = [
        {"config": {"name": "a"}, "hypothesis": "one two three four", "word_latencies": [0.5, 0.7, 0.9]},
        {"config": {"name": "b"}, "hypothesis": "one two", "word_latencies": [0.4, 0.6]},
    ]
    plot_latency_cdf([{"name": "a"}, {"name": "b"}], streams, tmp_path / "cdf.png")
    assert labels == ["a (3 of 4 words timed)", "b (2 words)"]


def test_the_progress_bar_is_drawn_at_most_twice_a_second(tone_corpus, capsys):
    # It was redrawn on every chunk of every stream: hundreds of outputs in a notebook cell.
    import rtlab.eval.bench as bench

    started = time.monotonic()
    run_bench(tone_corpus, [StreamConfig.parse(c) for c in TEST_CONFIGS], progress=True)
    elapsed = time.monotonic() - started
    drawn = capsys.readouterr().err.count("\r")
    assert 1 <= drawn <= elapsed / bench.REDRAW_SECONDS + 6, (drawn, elapsed)
