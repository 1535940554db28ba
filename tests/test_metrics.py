"""Promises of rtlab.eval.metrics, checked on hand-made cases with known answers."""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest

from rtlab.eval.metrics import (
    confirmed_words_kept,
    ErrorRate,
    LatencyStats,
    align_words,
    cer,
    commit_latencies,
    environment_info,
    first_text_latency,
    get_normalizer,
    grouped_difference,
    lag_series,
    normalizer_for_language,
    paired_difference,
    rtf,
    tail_latency,
    wer,
    WordsKept,
    word_differences,
    words_kept,
)
from rtlab.eval.results import StreamResult, evaluate_stream, summarize, to_dataframe


def _words(*items: tuple[str, float, float]) -> list[dict]:
    return [{"text": t, "start": s, "end": e} for t, s, e in items]


# --------------------------------------------------------------------------- words kept


def test_words_kept_counts_offline_words_the_stream_kept_dropped_and_added():
    kept = words_kept("The cat sat on the mat.", "the bat sat the mat and more")
    # "bat" for "cat" is the speech heard differently: kept; "on" dropped; "and more" added.
    assert (kept.offline_words, kept.kept, kept.dropped, kept.added) == (6, 5, 1, 2)
    assert kept.fraction == pytest.approx(5 / 6)
    assert kept.normalizer == "whisper-english"
    assert WordsKept.from_dict(kept.to_dict()) == kept


def test_words_kept_of_empty_texts():
    assert words_kept("", "thank you").fraction is None and words_kept("", "thank you").added == 2
    nothing = words_kept("hello there", "")
    assert (nothing.kept, nothing.dropped, nothing.fraction) == (0, 2, 0.0)
    assert words_kept("Ça va, très bien.", "ça va très bien", "whisper-basic").fraction == 1.0


def test_confirmed_words_kept_counts_only_offline_words_the_reference_has():
    # The offline pass heard "on" (dropped by the stream) and "the cat" right; its "big"
    # is not in the reference, so the stream leaving it out drops nothing confirmed.
    kept = confirmed_words_kept("the big cat sat on the mat", "the cat sat the mat", "The cat sat on the mat.")
    assert (kept.offline_words, kept.kept, kept.dropped, kept.added) == (6, 5, 1, 0)
    assert words_kept("the big cat sat on the mat", "the cat sat the mat").dropped == 2
    # A word the offline pass got wrong but the stream kept as a word is not confirmed.
    wrong = confirmed_words_kept("the bat sat", "the bat sat and", "the cat sat")
    assert (wrong.offline_words, wrong.kept, wrong.added) == (2, 2, 1)
    assert confirmed_words_kept("hello there", "", "hello there").fraction == 0.0
    assert confirmed_words_kept("", "hello", "hello").fraction is None
    assert confirmed_words_kept("hello", "hello", "").fraction is None  # nothing to confirm


def test_word_differences_name_each_place_the_reference_there_and_its_cost():
    reference = "Es leben viele mit Angehörigen, die dort ermordet wurden."
    offline = "Es leben viele mit Angehörigen, die dort ermordet wurden."
    streamed = "Es leben Vieler mit Angehörigen dort ermordet wurden, danke."
    places = word_differences(offline, streamed, reference, "whisper-basic")
    assert [(p.base, p.other, p.reference, p.cost) for p in places] == [
        (("viele",), ("vieler",), ("viele",), 1),
        (("die",), (), ("die",), 1),  # a word the stream left out
        ((), ("danke",), (), 1),  # one it added
    ]
    # Costs are against the reference: a stream can be right where the base text is wrong.
    (place,) = word_differences("mit Angehörigen dort", "mit Angehörigen die dort", "mit Angehörigen die dort", "none")
    assert (place.base, place.other, place.reference, place.cost) == ((), ("die",), ("die",), -1)
    # Without a reference, the places alone; the same text, none.
    (bare,) = word_differences("a b c", "a x c", normalizer="none")
    assert (bare.base, bare.other, bare.reference, bare.cost) == (("b",), ("x",), None, None)
    assert word_differences("The cat.", "the cat", "the cat") == []


def test_pooled_words_kept_sum_counts_so_a_long_stream_weighs_more():
    pooled = WordsKept.pool([words_kept("a b c d e f g h", "a b c d e f g h"), words_kept("x y", "")])
    assert (pooled.offline_words, pooled.kept, pooled.dropped) == (10, 8, 2)
    assert pooled.fraction == pytest.approx(0.8)
    with pytest.raises(ValueError):
        WordsKept.pool([])
    with pytest.raises(ValueError, match="different normalizers"):
        WordsKept.pool([words_kept("a", "a"), words_kept("a", "a", "whisper-basic")])


# --------------------------------------------------------------------------- normalizers


def test_normalizers_are_cached_and_named():
    assert get_normalizer("whisper-english") is get_normalizer("whisper-english")
    assert get_normalizer("whisper-basic")("Héllo, Wörld!").split() == ["héllo", "wörld"]


def test_unknown_normalizer_error_lists_valid_names():
    with pytest.raises(ValueError, match="whisper-english.*whisper-basic"):
        get_normalizer("shouting")


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (None, "whisper-english"),
        ("en", "whisper-english"),
        ("en-US", "whisper-english"),
        ("EN_gb", "whisper-english"),
        ("fr", "whisper-basic"),
        ("de-DE", "whisper-basic"),
    ],
)
def test_normalizer_for_language_picks_english_only_for_english(language, expected):
    assert normalizer_for_language(language) == expected


# --------------------------------------------------------------------------- WER / CER


def test_wer_counts_substitution_deletion_insertion_by_hand_and_as_jiwer():
    ref = "the quick brown fox jumps high"
    hyp = "the brown box jumps high today"
    # by hand: "quick" missing (D), fox->box (S), "today" extra (I); 3 errors / 6 words
    result = wer(ref, hyp)
    assert (result.substitutions, result.deletions, result.insertions) == (1, 1, 1)
    assert result.hits == 4
    assert result.reference_words == 6
    assert result.value == pytest.approx(0.5)
    norm = get_normalizer("whisper-english")
    assert result.value == pytest.approx(jiwer.wer(norm(ref), norm(hyp)))
    assert result.normalizer == "whisper-english"


def test_normalizer_makes_case_and_punctuation_free():
    assert wer("Hello, World!", "hello world").value == 0.0
    assert wer("Hello, World!", "hello world", normalizer="none").value == 1.0


def test_corpus_wer_pools_edit_counts_instead_of_averaging_files():
    refs = ["hello", "alpha beta gamma delta epsilon zeta eta theta iota"]
    hyps = ["goodbye", "alpha beta gamma delta epsilon zeta eta theta iota"]
    per_file = [wer(r, h).value for r, h in zip(refs, hyps)]
    assert per_file == [1.0, 0.0]
    pooled = wer(refs, hyps)
    assert pooled.value == pytest.approx(1 / 10)
    assert pooled.value != pytest.approx(sum(per_file) / len(per_file))
    assert ErrorRate.pool(wer(r, h) for r, h in zip(refs, hyps)) == pooled


def test_cer_counts_characters():
    result = cer("abc", "abd")
    assert result.unit == "char"
    assert (result.substitutions, result.reference_words) == (1, 3)
    assert result.value == pytest.approx(1 / 3)
    assert cer(["ab cd"], ["ab cd"]).value == 0.0


def test_empty_reference_counts_hypothesis_words_as_insertions():
    result = wer(["", "a b"], ["x y", "a b"])
    assert result.insertions == 2
    assert result.reference_words == 2
    assert result.value == pytest.approx(1.0)
    # a reference that normalizes to nothing behaves the same way
    assert wer("uh", "hello").insertions == 1


def test_no_reference_words_make_the_rate_undefined_whatever_the_hypothesis():
    for hypothesis in ("", "words here"):
        undefined = wer("", hypothesis)
        assert math.isinf(undefined.value), "nothing said about nothing is not a perfect 0.0"
        assert undefined.defined_value is None and undefined.to_dict()["value"] is None
    assert wer("", "words here").insertions == 2
    assert cer("", "").defined_value is None
    assert ErrorRate.pool([wer("", ""), wer("", "")]).defined_value is None
    assert wer("a b", "a").defined_value == pytest.approx(0.5)


def test_an_undefined_rate_is_read_back_undefined():
    for rate in (wer("", ""), wer("", "words here")):
        back = ErrorRate.from_dict(json.loads(json.dumps(rate.to_dict())))
        assert back == rate and back.defined_value is None
    # A rate written as None (a panel without a reference marks it so) is never read back
    # as the number its counts would give.
    marked = {**wer("hello", "hello").to_dict(), "value": None}
    assert ErrorRate.from_dict(marked).defined_value is None
    assert ErrorRate.from_dict(wer("a b", "a").to_dict()).defined_value == pytest.approx(0.5)


def test_a_file_without_reference_words_is_not_pooled_as_a_perfect_file():
    silent_and_quiet, silent_but_said = wer("", ""), wer("", "red green")
    spoken = wer("alpha beta gamma delta", "alpha beta gamma delta")
    assert ErrorRate.pool([spoken, silent_and_quiet]).value == 0.0  # adds no words and no errors
    assert ErrorRate.pool([spoken, silent_but_said]).value == pytest.approx(2 / 4)


def test_wer_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])


def test_pooling_refuses_different_normalizers():
    with pytest.raises(ValueError, match="cannot pool"):
        ErrorRate.pool([wer("a", "a"), wer("a", "a", normalizer="whisper-basic")])


# --------------------------------------------------------------------------- alignment / latency


def test_alignment_skips_deleted_and_inserted_words():
    ref = [{"text": "The"}, {"text": "quick"}, {"text": "brown"}, {"text": "fox"}]
    hyp = [{"text": "the"}, {"text": "brown"}, {"text": "sly"}, {"text": "fox."}]
    assert align_words(ref, hyp) == [(0, 0), (2, 1), (3, 3)]


def test_alignment_handles_words_normalizing_to_nothing_or_several_tokens():
    ref = [{"text": "I"}, {"text": "do"}, {"text": "not"}, {"text": "know"}]
    hyp = [{"text": "um,"}, {"text": "I"}, {"text": "don't"}, {"text": "know"}]
    assert align_words(ref, hyp) == [(0, 1), (1, 2), (2, 2), (3, 3)]


def test_alignment_of_empty_sequences_is_empty():
    assert align_words([], [{"text": "a"}]) == []
    assert align_words([{"text": "a"}], [{"text": "um"}]) == []


def test_commit_latency_is_emission_minus_reference_word_end():
    reference = _words(("the", 0.0, 0.3), ("cat", 0.3, 0.6), ("sat", 0.6, 1.0), ("down", 1.0, 1.5))
    events = [
        {"type": "partial", "text": "the cat", "emitted_at": 0.8},
        {"type": "commit", "words": _words(("The", 0, 0.3), ("cat", 0.3, 0.6)), "emitted_at": 1.2},
        {"type": "commit", "words": [], "emitted_at": 1.5},
        {
            "type": "commit",
            "words": _words(("sat", 0.6, 1.0), ("quickly", 1.0, 1.2), ("down.", 1.2, 1.5)),
            "emitted_at": 2.0,
        },
        {"type": "summary", "emitted_at": 2.1, "audio_seconds": 1.5},
    ]
    assert commit_latencies(events, reference) == pytest.approx([0.9, 0.6, 1.0, 0.5])


def test_commit_latency_of_a_word_spanning_two_reference_words_uses_the_later_end():
    reference = _words(("do", 0.0, 0.2), ("not", 0.2, 0.5))
    commits = [{"type": "commit", "words": [{"text": "don't"}], "emitted_at": 1.0}]
    assert commit_latencies(commits, reference) == pytest.approx([0.5])


def test_latency_stats_match_numpy_percentiles():
    values = [0.1, 0.4, 0.35, 1.2, 0.8, 0.05, 2.5, 0.6, 0.9, 0.3, float("nan")]
    stats = LatencyStats.from_values(values)
    finite = np.array(values[:-1])
    assert stats.count == 10
    assert stats.mean == pytest.approx(finite.mean())
    assert stats.median == pytest.approx(np.median(finite))
    assert stats.p90 == pytest.approx(np.percentile(finite, 90))
    assert stats.p95 == pytest.approx(np.percentile(finite, 95))
    assert stats.max == pytest.approx(2.5)


def test_latency_stats_of_nothing_are_none():
    stats = LatencyStats.from_values([])
    assert stats.to_dict() == {
        "count": 0, "mean": None, "median": None, "p90": None, "p95": None, "max": None,
    }  # fmt: skip
    assert LatencyStats.from_values([None, float("nan")]).count == 0


def test_first_text_and_tail_latency():
    events = [
        {"type": "commit", "words": [], "emitted_at": 0.5},
        {"type": "partial", "text": "hi", "emitted_at": 0.7},
        {"type": "commit", "words": _words(("hi", 0.0, 0.4)), "emitted_at": 1.1},
        {"type": "commit", "words": _words(("there", 0.4, 0.9)), "emitted_at": 1.9},
        {"type": "summary", "emitted_at": 3.25, "audio_seconds": 3.0},
    ]
    assert first_text_latency(events) == pytest.approx(1.1)
    assert tail_latency(events, 3.0) == pytest.approx(0.25)
    assert tail_latency(events) == pytest.approx(0.25)
    assert first_text_latency([{"type": "commit", "words": [], "emitted_at": 1}]) is None
    assert tail_latency(events[:-1], 3.0) is None


def test_rtf_and_lag_series():
    assert rtf(5.0, 10.0) == 0.5
    assert rtf(1.0, 0.0) is None
    stats, samples = lag_series([(2.0, 0.5), (1.0, 0.1), (3.0, 0.3)])
    assert samples == [(1.0, 0.1), (2.0, 0.5), (3.0, 0.3)]
    assert stats.max == 0.5 and stats.median == pytest.approx(0.3)
    assert json.dumps(lag_series([]).to_dict())


def test_environment_info_names_hardware_and_versions():
    info = environment_info()
    assert info["cpu_count"] >= 1
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["packages"]["jiwer"] == importlib.metadata.version("jiwer")
    assert info["packages"]["numpy"] == np.__version__
    # The engines and the installed plugins: an openai-whisper run recorded neither
    # openai-whisper's, torch's nor its backend's version before.
    for name in ("rtlab", "openai-whisper", "torch", "onnxruntime", "rtlab-faster-whisper", "rtlab-openai-whisper"):
        assert info["packages"][name] == importlib.metadata.version(name), name
    json.dumps(info)


def test_environment_info_names_the_cpu_extensions_and_the_variables_that_pin_kernels(monkeypatch):
    monkeypatch.setenv("CT2_FORCE_CPU_ISA", "AVX2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    info = environment_info()
    assert info["kernel_overrides"]["CT2_FORCE_CPU_ISA"] == "AVX2"
    assert "ONEDNN_MAX_CPU_ISA" not in info["kernel_overrides"]
    assert set(info["cpu_vector_extensions"]) <= {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = next(line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines() if line.startswith("flags"))
        assert ("avx2" in info["cpu_vector_extensions"]) == ("avx2" in flags)
        assert info["cpu_model"]


# --------------------------------------------------------------------------- results


def _result(name: str, reference: str, committed: list[tuple[str, float]]) -> StreamResult:
    """A StreamResult for a stream whose words are committed one per event."""
    ref_words = _words(*((w, float(i), i + 0.5) for i, w in enumerate(reference.split())))
    events: list[dict] = [
        {"type": "commit", "words": [{"text": t, "start": 0.0, "end": 0.0}], "emitted_at": at}
        for t, at in committed
    ]
    events.append({"type": "summary", "emitted_at": len(ref_words) + 1.0,
                   "audio_seconds": float(len(ref_words)), "compute_seconds": 1.0})  # fmt: skip
    return evaluate_stream(
        file=name,
        reference=reference,
        events=events,
        reference_words=ref_words,
        config={"backend": "echo", "chunk": 1.0},
        offline_hypothesis=reference,
        language="en",
        clock="simulated",
    )


def test_stream_result_is_json_serialisable_and_round_trips():
    result = _result("a.wav", "hello there friend", [("hello", 1.0), ("there", 2.0)])
    assert result.hypothesis == "hello there"
    assert result.wer.deletions == 1
    assert result.offline_wer is not None and result.offline_wer.value == 0.0
    assert result.word_latencies == pytest.approx([0.5, 0.5])
    assert result.latency["count"] == 2
    assert result.first_text_latency == 1.0
    assert result.tail_latency == pytest.approx(1.0)
    assert result.rtf == pytest.approx(1 / 3)
    text = json.dumps(result.to_dict())
    assert StreamResult.from_dict(json.loads(text)) == result


def test_summarize_pools_wer_and_latencies_over_files():
    short = _result("short.wav", "hello", [("goodbye", 1.0)])
    text = "alpha beta gamma delta epsilon zeta eta theta iota"
    long = _result("long.wav", text, [(w, i + 1.0) for i, w in enumerate(text.split())])
    summary = summarize([short, long])
    assert summary["files"] == 2
    assert summary["wer"]["value"] == pytest.approx(0.1)
    assert summary["offline_wer"]["value"] == 0.0
    assert summary["latency"]["count"] == 9  # "goodbye" matched nothing
    assert summary["rtf"] == pytest.approx(2.0 / 10.0)
    assert summary["normalizer"] == ["whisper-english"]
    json.dumps(summary)
    with pytest.raises(ValueError):
        summarize([])


def test_a_stream_without_a_reference_has_no_wer_after_a_round_trip_through_results():
    quiet = evaluate_stream(file="q.wav", reference="", events=[
        {"type": "summary", "emitted_at": 1.0, "audio_seconds": 1.0, "compute_seconds": 0.1}])  # fmt: skip
    said = evaluate_stream(file="s.wav", reference="", events=[
        {"type": "commit", "words": [{"text": "hi", "start": 0.0, "end": 0.2}], "emitted_at": 0.5},
        {"type": "summary", "emitted_at": 1.0, "audio_seconds": 1.0, "compute_seconds": 0.1}])  # fmt: skip
    for result in (quiet, said):
        line = json.loads(json.dumps(result.to_dict()))
        assert line["wer"]["value"] is None
        back = StreamResult.from_dict(line)
        assert back == result and back.wer.defined_value is None
    summary = summarize([StreamResult.from_dict(json.loads(json.dumps(r.to_dict()))) for r in (quiet, said)])
    assert summary["wer"]["value"] is None
    assert (summary["files_without_reference"], summary["words_without_reference"]) == (2, 1)
    spoken = _result("a.wav", "hello there", [("hello", 1.0), ("there", 2.0)])
    mixed = summarize([spoken, said])
    assert mixed["wer"]["value"] == pytest.approx(1 / 2), "the stray word counts against the spoken file's two"
    assert mixed["files_without_reference"] == 1


def test_a_summary_without_audio_seconds_gives_no_tail_latency_rather_than_its_emitted_at():
    events = [{"type": "commit", "words": _words(("hi", 0.0, 0.3)), "emitted_at": 1.0},
              {"type": "summary", "emitted_at": 5.0, "compute_seconds": 0.5}]  # fmt: skip
    result = evaluate_stream(file="x.wav", reference="hi", events=events)
    assert result.tail_latency is None and result.rtf is None
    back = StreamResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.tail_latency is None and summarize([back])["tail_latency"]["count"] == 0
    events[-1]["audio_seconds"] = 4.5
    assert evaluate_stream(file="x.wav", reference="hi", events=events).tail_latency == pytest.approx(0.5)


def test_summarize_pools_words_kept_and_names_the_lowest_stream():
    short = _result("short.wav", "hello", [("goodbye", 1.0)])  # "goodbye" for "hello": kept
    dropped = _result("dropped.wav", "red green blue black", [("red", 1.0)])
    summary = summarize([short, dropped])
    assert summary["words_kept"]["offline_words"] == 5
    assert summary["words_kept"]["kept"] == 2 and summary["words_kept"]["dropped"] == 3
    assert summary["words_kept"]["fraction"] == pytest.approx(2 / 5)
    assert summary["words_kept_lowest"] == pytest.approx(1 / 4)
    no_offline = StreamResult.from_dict({**short.to_dict(), "words_kept": None})
    assert summarize([short, no_offline])["words_kept"] is None, "only when every stream has an offline pass"


def test_to_dataframe_without_pandas_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        to_dataframe([])


def test_to_dataframe_flattens_results():
    pytest.importorskip("pandas", reason="pandas is optional (rtlab[plots])")
    frame = to_dataframe([_result("a.wav", "hello", [("hello", 1.0)])])
    assert frame.loc[0, "wer.value"] == 0.0
    assert frame.loc[0, "config.backend"] == "echo"



def test_stream_result_keeps_lag_samples_and_the_error_of_a_failed_stream():
    events = [
        {"type": "commit", "words": [{"text": "hello", "start": 0.0, "end": 0.5}], "emitted_at": 1.0},
        {"type": "error", "error": "internal_error", "message": "boom", "emitted_at": 1.5},
    ]
    result = evaluate_stream(file="f.wav", reference="hello world", events=events,
                             lag_samples=[(2.0, 0.5), (1.0, 0.25)])  # fmt: skip
    assert result.error == "internal_error: boom"
    assert result.tail_latency is None
    assert result.lag["samples"] == [[1.0, 0.25], [2.0, 0.5]]
    assert result.lag["stats"]["max"] == 0.5
    assert StreamResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    summary = summarize([result, _result("ok.wav", "hello", [("hello", 1.0)])])
    assert summary["errors"] == 1
    assert summary["lag"]["count"] == 2 and summary["lag"]["median"] == pytest.approx(0.375)


def _failed(name: str = "failed.wav", config: dict | None = None) -> StreamResult:
    """A stream that committed a word, then ended with an error event (no summary)."""
    events = [
        {"type": "commit", "words": [{"text": "hello", "start": 0.0, "end": 0.5}], "emitted_at": 1.0},
        {"type": "error", "error": "internal_error", "message": "boom", "emitted_at": 1.5},
    ]
    return evaluate_stream(file=name, reference="hello world", events=events, config=config)


def test_a_failed_stream_has_unknown_seconds_not_zero_ones():
    # Before, a stream that failed before its summary got 0.0 audio and compute seconds:
    # measurements nobody made, written to results.jsonl as if they were.
    result = _failed()
    assert (result.audio_seconds, result.compute_seconds, result.rtf) == (None, None, None)
    assert result.measured_compute_seconds is None
    line = json.loads(json.dumps(result.to_dict()))
    assert (line["audio_seconds"], line["compute_seconds"], line["rtf"]) == (None, None, None)
    assert StreamResult.from_dict(line) == result


def test_a_summary_without_compute_seconds_gives_no_rtf_rather_than_zero():
    events = [{"type": "summary", "emitted_at": 2.0, "audio_seconds": 2.0}]
    result = evaluate_stream(file="x.wav", reference="", events=events)
    assert result.audio_seconds == 2.0 and result.compute_seconds is None and result.rtf is None


def test_summarize_leaves_streams_with_unknown_seconds_out_of_the_rtf_and_counts_them():
    ok = _result("ok.wav", "hello there", [("hello", 1.0), ("there", 2.0)])
    ok.measured_compute_seconds = 0.5
    summary = summarize([_failed(), ok])
    assert summary["files_without_seconds"] == 1
    assert summary["audio_seconds"] == 2.0 and summary["compute_seconds"] == 1.0
    assert summary["rtf"] == pytest.approx(0.5)
    assert summary["measured_compute_seconds"] == 0.5 and summary["measured_rtf"] == pytest.approx(0.25)
    assert summarize([ok])["files_without_seconds"] == 0
    nothing = summarize([_failed("a.wav"), _failed("b.wav")])
    assert nothing["files_without_seconds"] == 2
    assert (nothing["audio_seconds"], nothing["compute_seconds"], nothing["rtf"]) == (None, None, None)
    assert (nothing["measured_compute_seconds"], nothing["measured_rtf"]) == (None, None)
    json.dumps(nothing)


def test_the_table_says_over_which_streams_its_rtf_is_and_shows_none_as_a_dash():
    from rtlab.eval.bench import format_table

    ok = _result("ok.wav", "hello there", [("hello", 1.0), ("there", 2.0)])
    some = {"name": "some", **summarize([_failed(), ok])}
    none = {"name": "none", **summarize([_failed("a.wav"), _failed("b.wav")])}
    lines = format_table([some, none]).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert rows["some"][-1] == "0.500" and rows["none"][-1] == "-"
    assert "some: RTF over 1 of 2 streams (1 failed before measuring their audio and compute seconds)" in lines
    assert "none: no RTF, no stream measured its audio and compute seconds (each failed before its summary)" in lines
    older = {key: value for key, value in some.items() if key != "files_without_seconds"}
    assert "RTF over" not in format_table([older]), "a summary written before the count has no note"


def test_older_results_read_a_failed_streams_zero_seconds_back_as_unknown():
    # results.jsonl lines written before unknown seconds were None: 0.0 for a failed stream.
    line = {**_failed().to_dict(), "audio_seconds": 0.0, "compute_seconds": 0.0}
    del line["measured_compute_seconds"], line["language"]  # older still: neither field
    back = StreamResult.from_dict(json.loads(json.dumps(line)))
    assert (back.audio_seconds, back.compute_seconds, back.rtf) == (None, None, None)
    assert back.error == "internal_error: boom" and back.language is None
    assert summarize([back])["files_without_seconds"] == 1
    silent = {**_result("ok.wav", "hello", [("hello", 1.0)]).to_dict(), "audio_seconds": 0.0, "compute_seconds": 0.0}
    assert StreamResult.from_dict(silent).audio_seconds == 0.0, "a stream that ended normally measured its 0.0"


def test_a_failed_stream_takes_its_language_from_the_configuration_when_it_asked_for_one():
    assert _failed(config={"backend": "echo", "language": "de"}).language == "de"
    assert _failed(config={"backend": "echo", "language": None}).language is None
    assert _failed().language is None
    events = [{"type": "summary", "emitted_at": 1.0, "audio_seconds": 1.0, "compute_seconds": 0.1, "language": "fr"}]
    said = evaluate_stream(file="x.wav", reference="", events=events, config={"language": "de"})
    assert said.language == "fr", "the summary's language is the one transcribed"


# --------------------------------------------------------------------------- paired differences

PAIRED_REFERENCES = [f"word{i} and another word{i} here" for i in range(12)]


def test_a_paired_difference_is_the_pooled_difference_with_a_bootstrap_interval_around_it():
    worse = [ref.replace("another", "other") if i % 3 == 0 else ref for i, ref in enumerate(PAIRED_REFERENCES)]
    a = [wer(r, h) for r, h in zip(PAIRED_REFERENCES, worse)]
    b = [wer(r, r) for r in PAIRED_REFERENCES]
    difference = paired_difference(a, b)
    assert difference.value == pytest.approx(wer(PAIRED_REFERENCES, worse).value) == pytest.approx(4 / 84)
    assert 0 <= difference.low <= difference.value <= difference.high
    assert difference.groups == 12 and difference.resamples == 2000
    assert paired_difference(a, b) == difference  # the same seed, the same interval
    assert paired_difference(b, a).value == -difference.value
    assert difference.describe() == (f"+4.8 points (95% CI {100 * difference.low:+.1f} to "
                                     f"{100 * difference.high:+.1f}, 12 groups)")  # fmt: skip


def test_a_paired_difference_over_one_clip_gives_no_interval_rather_than_a_zero_wide_one():
    # One group always draws the same sums: a "95% CI +4.8 to +4.8" would read as certain.
    worse = [ref.replace("another", "other") if i % 3 == 0 else ref for i, ref in enumerate(PAIRED_REFERENCES)]
    a = [wer(r, h) for r, h in zip(PAIRED_REFERENCES, worse)]
    b = [wer(r, r) for r in PAIRED_REFERENCES]
    whole = paired_difference(a, b, groups=["clip"] * 12)
    assert whole.value == pytest.approx(4 / 84) and whole.groups == 1
    assert whole.low is None and whole.high is None
    assert whole.describe("clips") == "+4.8 points (1 clip: no interval)"
    assert json.loads(json.dumps(whole.to_dict()))["low"] is None
    alone = paired_difference(a[:1], b[:1])
    assert alone.low is None and alone.high is None and alone.groups == 1


def test_a_difference_in_both_directions_is_not_told_from_none_and_a_steady_one_is():
    swapped = [ref.replace("another", "other") for ref in PAIRED_REFERENCES]
    a = [wer(r, swapped[i] if i % 2 else r) for i, r in enumerate(PAIRED_REFERENCES)]
    b = [wer(r, r if i % 2 else swapped[i]) for i, r in enumerate(PAIRED_REFERENCES)]
    even = paired_difference(a, b)
    assert even.value == 0 and even.low < 0 < even.high
    steady = paired_difference([wer(r, h) for r, h in zip(PAIRED_REFERENCES, swapped)], [wer(r, r) for r in PAIRED_REFERENCES])
    assert steady.low == steady.high == pytest.approx(12 / 84)  # one error in every utterance: no spread


def test_a_paired_difference_refuses_what_it_cannot_pair():
    a = [wer(r, r) for r in PAIRED_REFERENCES[:2]]
    with pytest.raises(ValueError, match="equally long"):
        paired_difference(a, a[:1])
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="same references"):
        paired_difference(a, [wer("one word", "one word"), a[1]])
    with pytest.raises(ValueError, match="group keys"):
        paired_difference(a, a, groups=["x"])
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(a, a, confidence=1.5)


def test_a_grouped_difference_pools_each_side_over_its_own_utterances_and_draws_the_groups():
    # A long stream's three repetitions of two clips against the clips alone at two placements.
    clips = {"c0": "the cat sat on the mat", "c1": "a dog ran in the park"}
    stream = [wer(clips["c0"], "the cat sat on a mat"), wer(clips["c1"], clips["c1"])] * 3  # 3 of 36 words wrong
    stream_keys = ["c0", "c1"] * 3
    alone = [wer(text, text) for text in clips.values()] * 2
    alone_keys = list(clips) * 2
    difference = grouped_difference(stream, stream_keys, alone, alone_keys)
    assert difference.value == pytest.approx(3 / 36)  # none wrong alone
    assert difference.groups == 2 and difference.low <= difference.value <= difference.high
    assert grouped_difference(stream, stream_keys, alone, alone_keys) == difference  # the same seed, the same interval
    assert grouped_difference(alone, alone_keys, stream, stream_keys).value == pytest.approx(-difference.value)
    # Each side is pooled over its own utterances: more placements alone change nothing.
    assert grouped_difference(stream, stream_keys, alone * 3, alone_keys * 3).value == pytest.approx(difference.value)


def test_a_grouped_difference_weighs_each_group_alike_on_both_sides():
    # Equal on every group, run more often on one side than the other: no difference. Pooled
    # as they came, "hard" would weigh three times as much in b as in a (-25 points).
    hard, easy = "one two three four five six seven eight nine ten", "a dog ran in the park"
    half = "one two three four five"
    a = [wer(hard, half), wer(easy, easy), wer(easy, easy), wer(easy, easy)]
    b = [wer(hard, half)] * 3 + [wer(easy, easy)]
    difference = grouped_difference(a, ["hard", "easy", "easy", "easy"], b, ["hard"] * 3 + ["easy"])
    assert difference.value == pytest.approx(0) and difference.low == pytest.approx(0) == difference.high


def test_a_grouped_difference_on_the_same_utterances_is_the_paired_difference():
    worse = [ref.replace("another", "other") if i % 3 == 0 else ref for i, ref in enumerate(PAIRED_REFERENCES)]
    a = [wer(r, h) for r, h in zip(PAIRED_REFERENCES, worse)]
    b = [wer(r, r) for r in PAIRED_REFERENCES]
    keys = [0] * 6 + [1, 1, 2, 2, 3, 3]
    grouped, paired = grouped_difference(a, keys, b, keys), paired_difference(a, b, groups=keys)
    assert (grouped.value, grouped.low, grouped.high) == pytest.approx((paired.value, paired.low, paired.high))
    assert grouped.groups == paired.groups == 4 and grouped.low < grouped.high
    one = grouped_difference(a, ["clip"] * 12, b[:3], ["clip"] * 3)
    assert one.low is None and one.high is None
    assert one.describe("clips") == f"{100 * one.value:+.1f} points (1 clip: no interval)"


def test_a_grouped_difference_refuses_what_it_cannot_compare():
    rates = [wer("one two", "one two"), wer("three four", "three")]
    with pytest.raises(ValueError, match="one group key per utterance"):
        grouped_difference(rates, ["a"], rates, ["a", "b"])
    with pytest.raises(ValueError, match="one group key per utterance"):
        grouped_difference([], [], rates, ["a", "b"])
    with pytest.raises(ValueError, match="only one side has b"):
        grouped_difference(rates, ["a", "b"], rates, ["a", "a"])
    with pytest.raises(ValueError, match="none in b"):
        grouped_difference(rates, ["a", "b"], [rates[0], wer("", "")], ["a", "b"])
    with pytest.raises(ValueError, match="one unit"):
        grouped_difference(rates, ["a", "b"], [cer("one two", "one two"), rates[1]], ["a", "b"])
    with pytest.raises(ValueError, match="confidence"):
        grouped_difference(rates, ["a", "b"], rates, ["a", "b"], confidence=0)
