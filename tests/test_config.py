"""StreamConfig: one definition of a stream's settings, one typing rule, one check, one key."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rtlab.core.instances import get_backend
from rtlab.config import StreamConfig, parse_pairs, parse_value, split_pairs
from rtlab.errors import InvalidOption, UnknownBackend, UnknownDecoder, UnknownPolicy
from rtlab.server import protocol

# --------------------------------------------------------------------------- KEY=VALUE


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("0.5", 0.5),
        ("1e3", 1000.0),
        ("true", True),
        ("True", True),
        ("FALSE", False),
        ("null", None),
        ('"true"', "true"),
        ('"1"', "1"),
        ("[0, 0.2, 0.4]", [0, 0.2, 0.4]),
        ("tiny.en", "tiny.en"),
        (" int8 ", "int8"),
        ("/models/base", "/models/base"),
        ("", ""),
    ],
)
def test_one_typing_rule_for_every_key_value(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_key_value_pairs_refuse_what_is_not_key_value():
    assert parse_pairs(["a=1", "b = x"]) == {"a": 1, "b": "x"}
    with pytest.raises(InvalidOption, match="--policy-option: expected KEY=VALUE, got 'min_chunk'"):
        parse_pairs(["min_chunk"], source="--policy-option")
    with pytest.raises(InvalidOption, match="'a' is given twice"):
        parse_pairs(["a=1", "a=2"])


# --------------------------------------------------------------------------- building


def test_the_shortest_configuration_is_the_embedded_default():
    config = StreamConfig()
    assert (config.backend, config.model, config.policy, config.decoder) == (
        "faster-whisper", None, "local-agreement", "ffmpeg"
    )


def test_parse_routes_options_to_the_plugin_that_accepts_them():
    config = StreamConfig.parse("backend=test,model=tones,min_chunk=0.5,compute_rtf=0,max_chunks=8,decoder=pcm_s16le")
    assert config.backend == "test" and config.model == "tones" and config.decoder == "pcm_s16le"
    assert config.policy_options == {"min_chunk": 0.5}
    assert config.backend_options == {"compute_rtf": 0}
    assert config.decoder_options == {"max_chunks": 8}
    assert config.label == "test:tones local-agreement decoder=pcm_s16le compute_rtf=0 min_chunk=0.5 max_chunks=8"


def test_to_dict_reads_back_into_the_same_configuration():
    config = StreamConfig.parse("backend=test,min_chunk=1,policy.prompt_chars=0,language=en,name=fast")
    assert config.policy_options == {"min_chunk": 1, "prompt_chars": 0}
    assert config.label == "fast" and config.language == "en"
    flat = json.loads(json.dumps(config.to_dict()))
    assert StreamConfig.from_mapping(flat) == config


def test_a_configuration_keeps_its_own_copy_of_the_options():
    options = {"min_chunk": 0.5}
    config = StreamConfig(backend="test", policy_options=options)
    options["min_chunk"] = 2
    assert config.policy_options == {"min_chunk": 0.5}


def test_coerce_takes_a_config_a_backend_name_or_nothing_with_fields_on_top():
    base = StreamConfig(backend="test", policy_options={"min_chunk": 2})
    assert StreamConfig.coerce(base) is base
    assert StreamConfig.coerce(base, language="en") == base.replace(language="en")
    assert StreamConfig.coerce("test", model="x") == StreamConfig(backend="test", model="x")
    assert StreamConfig.coerce(None, backend="test") == StreamConfig(backend="test")
    with pytest.raises(TypeError, match="unknown stream setting 'colour'"):
        StreamConfig.coerce("test", colour="blue")
    # The form the panels and `rtlab bench` take, as stream_file and AudioProcessor take it
    # too (before: a backend named "backend=test,min_chunk=0.5", unknown).
    assert StreamConfig.coerce("backend=test,min_chunk=0.5") == StreamConfig.parse("backend=test,min_chunk=0.5")
    assert StreamConfig.coerce("backend=test,min_chunk=0.5", language="de").language == "de"
    with pytest.raises(InvalidOption, match="min_chunk > 0"):
        StreamConfig.coerce("backend=test,min_chunk=-1")


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("backend=test,min_chunk", InvalidOption, "expected KEY=VALUE"),
        ("backend=test,,min_chunk=1", InvalidOption, "expected KEY=VALUE"),
        ("", InvalidOption, "empty configuration"),
        ("backend=test,min_chunk=1,min_chunk=2", InvalidOption, "given twice"),
        ("backend=nope", UnknownBackend, "unknown backend 'nope'"),
        ("backend=test,policy=nope", UnknownPolicy, "unknown policy 'nope'"),
        ("backend=test,decoder=nope", UnknownDecoder, "unknown decoder 'nope'"),
        ("backend=test,colour=blue", InvalidOption, "accepted by none of this stream's plugins"),
        ("backend=test,engine.x=1", InvalidOption, "prefix"),
        ("backend=test,backend.min_chunk=1", InvalidOption, "does not accept option 'min_chunk'"),
        ("backend=test,min_chunk=-1", InvalidOption, "min_chunk > 0"),
        ("backend=test,min_chunk=x", InvalidOption, r"^policy 'local-agreement' needs min_chunk > 0 \(a number of seconds\), not 'x'$"),
        ("backend=test,max_buffer_sec=null", InvalidOption, "needs max_buffer_sec > 0"),
        ("backend=test,overload_trimming_sec=0", InvalidOption, "needs overload_trimming_sec > 0"),
        ("backend=test,buffer_trimming_sec=20,max_buffer_sec=10", InvalidOption, "buffer_trimming_sec <= max_buffer_sec"),
        ("backend=test,prompt_chars=many", InvalidOption, "prompt_chars must be a whole number from 0 "),
        # Before: accepted, so the policy never forgot a committed word (each pass scanned them all).
        ("backend=test,prompt_chars=1000000000000000000000000000000", InvalidOption, r"from 0 \(no prompt\) to 10000, not 1000"),
        ("backend=test,silence_factor=-1", InvalidOption, "silence_factor must be a number >= 0"),
        # A queue of maxsize 0 is unbounded: the PCM decoder must refuse it.
        ("backend=test,decoder=pcm_s16le,max_chunks=0", InvalidOption, "max_chunks must be a whole number from 1"),
        ("backend=test,stop_timeout=0", InvalidOption, "stop_timeout must be a number of seconds above 0"),
        ("backend=test,stop_timeout=soon", InvalidOption, "stop_timeout must be a number of seconds above 0"),
        ("backend=test,max_stderr_lines=-1", InvalidOption, "max_stderr_lines must be a whole number from 0"),
        ("backend=test,model=null", InvalidOption, None),
    ],
)
def test_bad_configurations_are_refused_clearly(text, error, match):
    if match is None:  # model=null is "no model": the backend's default, which is valid
        assert StreamConfig.parse(text).model is None
        return
    with pytest.raises(error, match=match):
        StreamConfig.parse(text)


def test_an_option_two_plugins_accept_must_be_prefixed(monkeypatch):
    from rtlab.registry import get_registry

    registry = get_registry()
    accepted = registry.accepted_options

    def with_shared_option(kind, name):
        options = dict(accepted(kind, name))
        return {**options, "shared": None} if kind in ("backend", "policy") else options

    monkeypatch.setattr(registry, "accepted_options", with_shared_option)
    with pytest.raises(InvalidOption, match=r"write backend\.shared=\.\.\. or policy\.shared=\.\.\."):
        StreamConfig.from_mapping({"backend": "test", "shared": 1})


def test_fields_of_the_wrong_type_are_refused():
    with pytest.raises(InvalidOption, match="backend must be a registered backend name"):
        StreamConfig(backend=None)
    with pytest.raises(InvalidOption, match="policy_options must be a mapping"):
        StreamConfig(backend="test", policy_options=["min_chunk", 1])
    with pytest.raises(InvalidOption, match="language must be a non-empty string"):
        StreamConfig(backend="test", language="")


@pytest.mark.parametrize(
    ("given", "kept"),
    [("de", "de"), ("DE", "de"), ("German", "de"), ("castilian", "es"), (" Haitian  Creole ", "ht"),
     ("yue", "yue"), ("klingon", "klingon")],
)
def test_a_language_may_be_named_and_is_kept_as_its_code(given, kept):
    # A value that is neither a Whisper code nor a name passes unchanged: the loaded backend
    # refuses it (rtlab.backends.check_language), or knows it when its languages are its own.
    assert StreamConfig(backend="test", language=given).language == kept
    assert StreamConfig.parse(f"backend=test,language={given.strip()}").language == kept


# --------------------------------------------------------------------------- one key


def test_one_model_key_shares_one_backend_instance():
    first = StreamConfig(backend="test", model="key-test", policy_options={"min_chunk": 0.5})
    second = StreamConfig(backend="test", model="key-test", policy="local-agreement", decoder="pcm_s16le")
    other = StreamConfig(backend="test", model="key-test", backend_options={"compute_rtf": 0.1})
    assert first.model_key == second.model_key != other.model_key
    assert get_backend(first) is get_backend(second) is get_backend("test", model="key-test")
    assert get_backend(other) is not get_backend(first)
    # None means "the backend's default", as if the option were not given.
    assert StreamConfig(backend="test", backend_options={"compute_rtf": None}).model_key == StreamConfig(
        backend="test"
    ).model_key


# --------------------------------------------------------------------------- one error, everywhere

WRONG_OPTION = "policy 'local-agreement' (plugin 'rtlab.policies.plugin') does not accept option 'min_chnk'"


def test_an_unknown_option_reads_the_same_from_python_and_a_bench_config():
    from rtlab import AudioProcessor

    with pytest.raises(InvalidOption) as from_python:
        AudioProcessor("test", policy_options={"min_chnk": 1})
    with pytest.raises(InvalidOption) as from_config:
        StreamConfig.parse("backend=test,policy.min_chnk=1")
    assert str(from_python.value) == str(from_config.value)
    assert str(from_python.value).startswith(WRONG_OPTION)
    assert "it accepts: " in str(from_python.value) and "min_chunk" in str(from_python.value)


@pytest.mark.parametrize(
    "command",
    [
        ["transcribe", "tests/data/fox.wav", "--backend", "test", "-p", "min_chnk=1"],
        ["serve", "--backend", "test", "--port", "0", "-p", "min_chnk=1"],
        ["bench", "tests/data", "--config", "backend=test,policy.min_chnk=1"],
    ],
)
def test_an_unknown_option_reads_the_same_from_every_command(command):
    result = subprocess.run([sys.executable, "-m", "rtlab", *command], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert WRONG_OPTION in result.stderr
    assert "Traceback" not in result.stderr


def test_a_start_request_gets_the_servers_options_only_for_the_servers_own_plugins():
    default = StreamConfig(
        backend="test", model="tones", backend_options={"compute_rtf": 0.1}, policy_options={"min_chunk": 0.5}
    )
    same = protocol.StartRequest.from_message({"type": "start_transcription"}).stream_config(default)
    assert same == default
    other_model = protocol.StartRequest.from_message({"model": "other", "policy": "local-agreement"})
    config = other_model.stream_config(default)
    assert config.model == "other" and config.backend_options == {}
    assert config.policy_options == {"min_chunk": 0.5}
    assert protocol.StartRequest(language="de").stream_config(default).language == "de"
    assert protocol.StartRequest(language="Portuguese").stream_config(default).language == "pt"


@pytest.mark.parametrize(
    ("format", "decoder", "options"),
    [
        ("auto", "ffmpeg", {}),
        ("webm", "ffmpeg", {"input_format": "webm"}),
        ("wav", "ffmpeg", {"input_format": "wav"}),
        ("pcm_s16le", "pcm_s16le", {}),
        ("ffmpeg", "ffmpeg", {}),
    ],
)
def test_the_protocols_format_reaches_every_registered_decoder(format, decoder, options):
    request = protocol.StartRequest.from_message({"format": format})
    config = request.stream_config(StreamConfig(backend="test"))
    assert (config.decoder, config.decoder_options) == (decoder, options)


def test_an_unknown_format_is_refused_with_the_choices():
    with pytest.raises(protocol.ProtocolError, match="must be one of auto, webm, ogg, wav, mp3, flac, .*pcm_s16le"):
        protocol.StartRequest.from_message({"format": "aiff"})


@pytest.mark.parametrize(("value", "number", "whole"), [
    (1, True, True), (0.5, True, False), (True, False, False), ("1", False, False), (None, False, False),
])  # fmt: skip
def test_a_bool_is_not_a_number_option(value, number, whole):
    from rtlab.options import is_number, is_whole_number

    assert (is_number(value), is_whole_number(value)) == (number, whole)


def test_a_value_with_commas_in_brackets_or_quotes_stays_one_value():
    # Before, the string was split at every comma: a list value (faster-whisper's
    # temperature fallback) could not be written ("expected KEY=VALUE, got ' 0.2]'").
    config = StreamConfig.parse('backend=test,min_chunk=1,name="fast, small",language=en')
    assert config.name == "fast, small" and config.policy_options == {"min_chunk": 1}
    assert split_pairs('a=[0, 0.2],b={"k": [1, 2]},c="x\\",y",d=1') == [
        "a=[0, 0.2]", 'b={"k": [1, 2]}', 'c="x\\",y"', "d=1"
    ]
    with pytest.raises(InvalidOption, match="expected KEY=VALUE"):
        StreamConfig.parse("backend=test,,min_chunk=1")  # a blank item is still a typo


def test_a_list_option_is_written_in_a_configuration_string():
    pytest.importorskip("rtlab_faster_whisper")
    config = StreamConfig.parse("backend=faster-whisper,temperature=[0, 0.2, 0.4],min_chunk=1")
    assert config.backend_options["temperature"] == [0, 0.2, 0.4]
    assert config.policy_options == {"min_chunk": 1}
