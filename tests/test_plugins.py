"""The plugin host: one test per hook, validation, clashes, loading, introspection, docs.

Inline plugins are registered on ``rtlab.plugins.pm`` and unregistered in ``finally``;
installed (entry-point) plugins are faked with a ``.dist-info`` folder on PYTHONPATH of a
``rtlab plugins`` subprocess, so nothing leaks into this test run.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import rtlab
from rtlab import hookspecs
from rtlab.backends import Backend
from rtlab.decoders import Decoder
from rtlab.backends import accepted_options, check_options
from rtlab.config import StreamConfig
from rtlab.errors import InvalidOption, PluginError, PluginWarning, UnknownBackend, UnknownDecoder, UnknownPolicy
from rtlab.plugins import DEFAULT_PLUGINS, INTERNAL_PLUGINS, pm
from rtlab.policies import Policy, Step
from rtlab.registry import PLURALS, get_registry, plugins_info
from rtlab.testing import ToneBackend

DOCS = Path(__file__).parent.parent / "docs" / "plugins.md"
HOOKS = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "rtlab_spec"))


class EchoBackend(Backend):
    name = "inline-echo"

    def transcribe(self, audio, *, prompt="", language=None):
        return [{"text": "echo", "start": 0.0, "end": len(audio) / 16_000}]


class WholeBufferPolicy(Policy):
    name = "inline-whole-buffer"

    def insert_audio(self, pcm):
        self.audio = pcm

    def process_iter(self):
        return Step()

    def finish(self):
        return Step(committed=self.backend.transcribe(self.audio))


class SilenceDecoder(Decoder):
    name = "inline-silence"

    async def start(self):
        self.state = "RUNNING"
        return True

    async def write(self, data):
        pass

    async def end_input(self):
        pass

    async def read(self):
        return None

    async def stop(self):
        self.state = "STOPPED"


def plugin_registering(hook: str, *classes: type) -> object:
    """An inline plugin object implementing ``hook`` by registering ``classes``."""

    def implementation(register):
        for cls in classes:
            register(cls)

    implementation.__name__ = hook
    return type("InlinePlugin", (), {hook: staticmethod(rtlab.hookimpl(implementation))})()


def record(name: str) -> dict:
    return next(r for r in plugins_info(include_internal=True) if r["name"] == name)


# -- one test per hook ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "hook, kind, cls",
    [
        ("register_backends", "backend", EchoBackend),
        ("register_policies", "policy", WholeBufferPolicy),
        ("register_decoders", "decoder", SilenceDecoder),
    ],
)
def test_each_hook_registers_a_class_the_registry_sees(hook, kind, cls):
    pm.register(plugin_registering(hook, cls), name="inline-plugin")
    try:
        registry = get_registry(refresh=True)
        assert registry.get(kind, cls.name) is cls
        assert registry.entries[kind][cls.name].plugin == "inline-plugin"
        assert cls.name in registry.names(kind)
        info = record("inline-plugin")
        assert info["hooks"] == [hook]
        assert info["registered"] == {PLURALS[kind]: [cls.name]}
        assert info["rejected"] == []
    finally:
        pm.unregister(name="inline-plugin")
        get_registry(refresh=True)
    assert cls.name not in get_registry().names(kind)


async def test_a_registered_backend_transcribes_in_an_audio_processor():
    from rtlab.core.processor import AudioProcessor

    pm.register(plugin_registering("register_backends", EchoBackend), name="inline-plugin")
    try:
        get_registry(refresh=True)
        processor = AudioProcessor("inline-echo", decoder="pcm_s16le", clock="simulated")
        events = await processor.create_tasks()
        # A tone, not digital silence: LocalAgreement drops words heard in silence.
        tone = 8000 * np.sin(2 * np.pi * 440 * np.arange(3 * 16_000) / 16_000)
        await processor.process_audio(tone.astype("<i2").tobytes())
        await processor.finish()
        summary = [event async for event in events][-1]
        assert summary["type"] == "summary" and summary["text"] == "echo"
    finally:
        pm.unregister(name="inline-plugin")
        get_registry(refresh=True)


def test_every_hook_has_a_test():
    source = inspect.getsource(sys.modules[__name__])
    for hook in HOOKS:
        assert f'("{hook}", ' in source, f"no test registers through {hook}"


# -- validation and clashes ------------------------------------------------------------------


def test_a_name_clash_is_refused_naming_both_plugins():
    class Impostor(EchoBackend):
        name = "test"  # the built-in tone backend from rtlab.testing

    pm.register(plugin_registering("register_backends", Impostor), name="impostor")
    try:
        with pytest.warns(PluginWarning) as warned:
            registry = get_registry(refresh=True)
        message = str(warned[0].message)
        assert "'impostor'" in message and "'rtlab.testing'" in message
        assert "RTLAB_LOAD_PLUGINS" in message  # says what to do
        assert registry.get("backend", "test").__name__ == "ToneBackend"  # the first one stays
        rejected = record("impostor")["rejected"]
        assert [(r["kind"], r["name"], r["plugin"]) for r in rejected] == [("backend", "test", "impostor")]
        assert rejected[0]["reason"] == message
        assert record("rtlab.testing")["rejected"] == []
    finally:
        pm.unregister(name="impostor")
        get_registry(refresh=True)


def test_a_builtin_name_cannot_be_taken_over_with_trylast():
    # pluggy orders a trylast implementation first; the registry still puts built-ins first.
    class Impostor(SilenceDecoder):
        name = "ffmpeg"

    class Plugin:
        @rtlab.hookimpl(trylast=True)
        def register_decoders(self, register):
            register(Impostor)

    pm.register(Plugin(), name="trylast-impostor")
    try:
        with pytest.warns(PluginWarning, match="trylast-impostor"):
            registry = get_registry(refresh=True)
        assert registry.entries["decoder"]["ffmpeg"].plugin == "rtlab.decoders.plugin"
    finally:
        pm.unregister(name="trylast-impostor")
        get_registry(refresh=True)


def test_a_clash_between_two_plugins_keeps_the_first():
    class Second(EchoBackend):
        pass

    pm.register(plugin_registering("register_backends", EchoBackend), name="first")
    pm.register(plugin_registering("register_backends", Second), name="second")
    try:
        with pytest.warns(PluginWarning, match="'second'.*'first'"):
            registry = get_registry(refresh=True)
        assert registry.get("backend", "inline-echo") is EchoBackend
        assert len(record("second")["rejected"]) == 1
    finally:
        pm.unregister(name="first")
        pm.unregister(name="second")
        get_registry(refresh=True)


def test_a_clash_ends_the_same_whatever_order_the_plugins_were_installed_in():
    """The plugin whose name sorts first keeps a clashing name. Before, the one Python
    happened to list first did, which differs between machines."""

    class Later(EchoBackend):
        pass

    for order in (("b-plugin", "a-plugin"), ("a-plugin", "b-plugin")):
        classes = {"a-plugin": EchoBackend, "b-plugin": Later}
        for name in order:
            pm.register(plugin_registering("register_backends", classes[name]), name=name)
        try:
            with pytest.warns(PluginWarning, match="'b-plugin'.*'a-plugin'"):
                registry = get_registry(refresh=True)
            assert registry.get("backend", "inline-echo") is EchoBackend, order
        finally:
            for name in order:
                pm.unregister(name=name)
            get_registry(refresh=True)


class Nameless(EchoBackend):
    name = ""


class NotAString(EchoBackend):
    name = 42


class NoBase:
    name = "no-base"

    def transcribe(self, audio, *, prompt="", language=None):
        return []


class HalfADecoder:
    name = "half-a-decoder"

    async def start(self):
        return True


class NoTranscribe(Backend):
    name = "no-transcribe"


class NoFinish(WholeBufferPolicy):
    finish = Policy.finish  # as if never written


class ReadOnlyDecoder(Decoder):
    name = "read-only"

    async def read(self):
        return None


@pytest.mark.parametrize(
    "hook, cls, problem, fix",
    [
        ("register_backends", Nameless, "whose name is ''", 'name = "nameless"'),
        ("register_backends", NoTranscribe, "which does not define transcribe", "define `transcribe` (see Backends"),
        ("register_policies", NoFinish, "which does not define finish", "define `finish` (see Policies"),
        ("register_decoders", ReadOnlyDecoder, "which does not define start, write, end_input, stop",
         "define `start`, `write`, `end_input`, `stop` (see Decoders"),
        ("register_backends", EchoBackend(), "an instance of EchoBackend, not the class", "`register(EchoBackend)`"),
        ("register_backends", NotAString, "whose name is 42", 'name = "notastring"'),
        ("register_backends", NoBase, "does not subclass rtlab.backends.Backend", "`class NoBase(rtlab.Backend)`"),
        ("register_policies", EchoBackend, "does not subclass rtlab.policies.Policy", "`class EchoBackend(rtlab.Policy)`"),
        ("register_decoders", HalfADecoder, "does not subclass rtlab.decoders.Decoder", "`class HalfADecoder(rtlab.Decoder)`"),
    ],
)
def test_an_invalid_class_fails_registration_naming_plugin_class_and_fix(hook, cls, problem, fix):
    pm.register(plugin_registering(hook, cls), name="broken")
    try:
        for _ in range(2):  # nothing half-built is kept: it fails again until fixed
            with pytest.raises(PluginError) as raised:
                get_registry(refresh=True)
            message = str(raised.value)
            assert "\n" not in message
            kind = next(k for k, plural in PLURALS.items() if hook == f"register_{plural}")
            assert message.startswith(f"plugin 'broken' registered {kind} {cls!r}, ")
            assert problem in message and fix in message
            assert message.endswith("or leave the plugin out with RTLAB_LOAD_PLUGINS")
    finally:
        pm.unregister(name="broken")
    assert get_registry(refresh=True).rejected == []


def test_an_installed_plugin_with_an_invalid_class_fails_rtlab_plugins(tmp_path):
    not_a_backend = ECHO_PLUGIN.replace("class FakeEcho(Backend):", "class FakeEcho:")
    fake_distribution(tmp_path, "rtlab-not-a-backend", "rtlab_not_a_backend", not_a_backend)
    result = rtlab_plugins(tmp_path, None)
    assert result.returncode != 0
    assert "plugin 'not_a_backend' registered backend <class 'rtlab_not_a_backend.FakeEcho'>" in result.stderr
    assert "`class FakeEcho(rtlab.Backend)`" in result.stderr
    assert "Traceback" not in result.stderr
    assert loaded(tmp_path, "")  # left out with RTLAB_LOAD_PLUGINS, the rest works


def test_an_installed_plugin_that_fails_to_import_fails_rtlab_plugins_naming_it(tmp_path):
    fake_distribution(tmp_path, "rtlab-needs-more", "rtlab_needs_more", "import rtlab_no_such_module\n")
    result = rtlab_plugins(tmp_path, None)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "plugin 'needs_more' (distribution rtlab-needs-more) failed to import 'rtlab_needs_more': " \
           "ModuleNotFoundError: No module named 'rtlab_no_such_module'" in result.stderr
    assert "pip uninstall rtlab-needs-more" in result.stderr
    assert loaded(tmp_path, "")  # left out with RTLAB_LOAD_PLUGINS, the rest works


def test_two_distributions_with_one_entry_point_name_are_warned_about(tmp_path):
    fake_distribution(tmp_path, "rtlab-fake-echo", "rtlab_fake_echo", ECHO_PLUGIN)
    fake_distribution(tmp_path, "rtlab-fake-echo-fork", "rtlab_fake_echo_fork", ECHO_PLUGIN, version="2.0")
    fork = tmp_path / "rtlab_fake_echo_fork-2.0.dist-info" / "entry_points.txt"
    fork.write_text("[rtlab]\nfake_echo = rtlab_fake_echo_fork\n")  # the same plugin name
    result = rtlab_plugins(tmp_path, None)
    assert result.returncode == 0, result.stderr
    loaded_one = json.loads(result.stdout)
    assert [r["name"] for r in loaded_one].count("fake_echo") == 1
    # The distribution whose name sorts first keeps it, on every machine.
    assert next(r["version"] for r in loaded_one if r["name"] == "fake_echo") == "1.2.3"
    kept, skipped = "rtlab-fake-echo", "rtlab-fake-echo-fork"
    assert f"plugin name 'fake_echo' of {skipped} is taken by {kept}" in result.stderr
    assert f"{skipped} is not loaded. Rename one entry point" in result.stderr


def failing_hook(register):
    raise RuntimeError("no config file")


def calls_register_without_a_class(register):
    register()


@pytest.mark.parametrize("implementation, error", [
    (failing_hook, "RuntimeError: no config file"),
    (calls_register_without_a_class, "TypeError: "),
])  # fmt: skip
def test_a_hook_that_raises_fails_registration_naming_plugin_and_hook(implementation, error):
    implementation.__name__ = "register_policies"
    plugin = type("Raises", (), {"register_policies": staticmethod(rtlab.hookimpl(implementation))})()
    pm.register(plugin, name="raises")
    try:
        for _ in range(2):  # fails again until fixed
            with pytest.raises(PluginError) as raised:
                get_registry(refresh=True)
            message = str(raised.value)
            assert message.startswith(f"plugin 'raises': its register_policies hook raised {error}")
            assert message.endswith("fix the hook, or leave the plugin out with RTLAB_LOAD_PLUGINS")
    finally:
        pm.unregister(name="raises")
    assert get_registry(refresh=True).rejected == []


def test_an_unknown_name_lists_the_installed_ones():
    from rtlab.errors import UnknownBackend

    with pytest.raises(UnknownBackend, match="installed backends: .*test.*rtlab plugins"):
        get_registry().get("backend", "no-such-backend")


def test_an_unknown_name_lists_rtlab_s_test_backends_apart():
    from rtlab.errors import UnknownBackend, UnknownPolicy
    from rtlab.plugins import DEFAULT_PLUGINS
    from rtlab.registry import Registry

    entries = get_registry().entries  # less the installed plugins: no engine, rtlab's built-ins only
    registry = Registry({kind: {n: r for n, r in found.items() if r.plugin in DEFAULT_PLUGINS} for kind, found in entries.items()})
    with pytest.raises(UnknownBackend) as raised:
        registry.get("backend", "no-such-backend")
    assert str(raised.value) == (
        "unknown backend 'no-such-backend'; installed backends: none; rtlab's scripted test backends: "
        "test, test-attention. Run 'rtlab plugins' to see what each plugin registered."
    )
    with pytest.raises(UnknownPolicy) as raised:  # a kind rtlab's test plugin registers none of
        registry.get("policy", "no-such-policy")
    assert "scripted" not in str(raised.value) and "installed policies: alignatt, " in str(raised.value)


def test_no_test_plugin_leaks_into_the_run():
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert set(DEFAULT_PLUGINS) <= names
    assert not {"inline-plugin", "impostor", "broken", "first", "second", "options-plugin"} & names
    assert get_registry(refresh=True).rejected == []


# -- options: the keyword parameters of __init__, along the MRO --------------------------------


class WordBackend(EchoBackend):
    name = "inline-word"

    def __init__(self, *, word: str = "hello", repeat: int = 1) -> None:
        self.word = word
        self.repeat = repeat


class InheritsWord(WordBackend):
    name = "inline-inherits-word"


class ForwardsToWord(WordBackend):
    name = "inline-forwards-word"

    def __init__(self, *, loud: bool = False, repeat: int = 2, **options) -> None:
        super().__init__(repeat=repeat, **options)
        self.loud = loud


class ForwardsToBase(EchoBackend):
    name = "inline-forwards-base"

    def __init__(self, *, word: str = "hi", **options) -> None:
        super().__init__(**options)
        self.word = word


class TakesWithoutDefault(EchoBackend):
    name = "inline-no-default"

    def __init__(self, path, *, rate: int = 16_000) -> None:
        self.path = path


@pytest.mark.parametrize(
    "cls, options",
    [
        (Backend, {}),
        (Policy, {}),  # backend and language are the processor's arguments, not options
        (Decoder, {}),
        (EchoBackend, {}),  # no __init__ of its own: Backend's, which takes nothing
        (WordBackend, {"word": "hello", "repeat": 1}),
        (InheritsWord, {"word": "hello", "repeat": 1}),  # no __init__ of its own: the parent's
        (ForwardsToWord, {"loud": False, "repeat": 2, "word": "hello"}),  # **options: + the parent's
        (ForwardsToBase, {"word": "hi"}),  # **options forwarded to Backend, which takes none
        (TakesWithoutDefault, {"path": None, "rate": 16_000}),  # a required option's default: None
        (WholeBufferPolicy, {}),
    ],
)
def test_options_are_the_keyword_parameters_of_init_along_the_mro(cls, options):
    assert accepted_options(cls) == options


def test_the_docs_policy_example_forwards_its_options_to_local_agreement():
    from rtlab.policies.local_agreement import LocalAgreement

    module = types.ModuleType("docs_policy")
    exec(compile(docs_example("register_policies"), "docs/plugins.md:register_policies", "exec"), module.__dict__)
    options = accepted_options(module.EagerAgreement)
    assert options == {**accepted_options(LocalAgreement), "min_chunk": 0.5}
    assert "language" not in options and "backend" not in options


@pytest.mark.parametrize("cls", [EchoBackend, InheritsWord, ForwardsToWord, ForwardsToBase])
def test_no_class_accepts_anything(cls):
    with pytest.raises(InvalidOption, match="does not accept option 'anything'"):
        check_options(cls, "backend", {"anything": 1})


@pytest.mark.parametrize(
    "kind, name, options, message",
    [
        ("backend", "inline-echo", {"wrod": 1},
         "backend 'inline-echo' (plugin 'options-plugin') does not accept option 'wrod'; it accepts no options"),
        ("backend", "inline-word", {"word": "x", "wrod": 1},
         "backend 'inline-word' (plugin 'options-plugin') does not accept option 'wrod'; it accepts: repeat, word"),
        ("policy", "local-agreement", {"language": "en"},
         "policy 'local-agreement' (plugin 'rtlab.policies.plugin') does not accept option 'language'; it accepts: "),
        ("decoder", "pcm_s16le", {"rate": 8000},
         "decoder 'pcm_s16le' (plugin 'rtlab.decoders.plugin') does not accept option 'rate'; it accepts: max_chunks"),
    ],
)  # fmt: skip
def test_an_unknown_option_gets_one_message_for_every_kind(kind, name, options, message):
    pm.register(plugin_registering("register_backends", EchoBackend, WordBackend), name="options-plugin")
    try:
        registry = get_registry(refresh=True)
        with pytest.raises(InvalidOption) as raised:
            registry.check_options(kind, name, options)
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    finally:
        pm.unregister(name="options-plugin")
        get_registry(refresh=True)


class UncheckedBackend(EchoBackend):
    """An outside plugin that does not check its option's value before using it."""

    name = "inline-unchecked"

    def __init__(self, *, repeat: int = 1) -> None:
        self.repeat = int(repeat)


class UncheckedPolicy(WholeBufferPolicy):
    name = "inline-unchecked-policy"

    def __init__(self, backend, *, language=None, window: float = 1.0) -> None:
        super().__init__(backend, language=language)
        self.samples = round(window * 16_000)


class ChunkPolicy(WholeBufferPolicy):
    """An outside policy that sets min_chunk from its option without checking it."""

    name = "inline-chunk-policy"

    def __init__(self, backend, *, language=None, chunk: float = 2.0) -> None:
        super().__init__(backend, language=language)
        self.min_chunk = chunk


@pytest.mark.parametrize("chunk", ["x", 0, -1.0, float("nan"), None, True])
def test_a_policy_that_sets_min_chunk_to_no_number_of_seconds_stops_in_one_line(chunk):
    pm.register(plugin_registering("register_policies", ChunkPolicy), name="chunk-policies")
    try:
        get_registry(refresh=True)
        config = StreamConfig(backend="test", policy="inline-chunk-policy", decoder="pcm_s16le",
                              policy_options={"chunk": chunk})  # fmt: skip
        with pytest.raises(InvalidOption) as raised:
            config.validate()
        message = str(raised.value)
        assert message.startswith(f"policy 'inline-chunk-policy' (plugin 'chunk-policies') set min_chunk to "
                                  f"{chunk!r} with chunk={chunk!r}; ")  # fmt: skip
        assert "a number above 0" in message and len(message) < 400
        config = StreamConfig(backend="test", policy="inline-chunk-policy", decoder="pcm_s16le",
                              policy_options={"chunk": 0.5})  # fmt: skip
        config.validate()  # a number of seconds is fine
    finally:
        pm.unregister(name="chunk-policies")
        get_registry(refresh=True)


async def test_an_option_value_a_plugin_does_not_check_stops_it_in_one_line_not_a_traceback():
    from rtlab.core.processor import AudioProcessor

    pm.register(plugin_registering("register_backends", UncheckedBackend), name="unchecked-backends")
    pm.register(plugin_registering("register_policies", UncheckedPolicy), name="unchecked-policies")
    try:
        get_registry(refresh=True)
        with pytest.raises(InvalidOption) as raised:
            StreamConfig.parse("backend=inline-unchecked,repeat=twice")
        assert str(raised.value) == (
            "backend 'inline-unchecked' (plugin 'unchecked-backends') failed to start with repeat='twice': "
            "ValueError: invalid literal for int() with base 10: 'twice'"
        )
        assert isinstance(raised.value.__cause__, ValueError)  # the plugin's own error stays reachable
        # A policy's values are checked the same way when a session is made (AudioProcessor
        # validates its configuration), before any FFmpeg or model is started.
        config = StreamConfig(backend="inline-unchecked", policy="inline-unchecked-policy", decoder="pcm_s16le",
                              policy_options={"window": "long"})  # fmt: skip
        with pytest.raises(InvalidOption, match=r"^policy 'inline-unchecked-policy' \(plugin 'unchecked-policies'\) "
                                                r"failed to start with window='long': TypeError: "):  # fmt: skip
            AudioProcessor(config)
    finally:
        pm.unregister(name="unchecked-backends")
        pm.unregister(name="unchecked-policies")
        get_registry(refresh=True)


def test_the_registry_checks_and_lists_options_by_name():
    registry = get_registry()
    registry.check_options("backend", "test", {"compute_rtf": 0.5})
    registry.check_options("policy", "local-agreement", {"min_chunk": 0.5})
    registry.check_options("decoder", "ffmpeg", {})
    assert registry.accepted_options("backend", "test") == {
        "compute_rtf": 0.0, "fail_after": None, "model": "tones", "max_batch": 1, "batch_wait_ms": 0.0
    }
    assert "min_chunk" in registry.accepted_options("policy", "local-agreement")
    for kind, error in (("backend", UnknownBackend), ("policy", UnknownPolicy), ("decoder", UnknownDecoder)):
        with pytest.raises(error, match="'nope'.*rtlab plugins"):
            registry.check_options(kind, "nope", {})
        with pytest.raises(error):
            registry.accepted_options(kind, "nope")


def test_the_processor_arguments_of_a_policy_are_not_options():
    from rtlab.policies.local_agreement import LocalAgreement

    assert Policy.processor_arguments == ("backend", "language")
    for argument in Policy.processor_arguments:
        assert argument not in accepted_options(LocalAgreement)
        with pytest.raises(InvalidOption, match=f"does not accept option '{argument}'"):
            check_options(LocalAgreement, "policy", {argument: None})


# -- internal plugins ------------------------------------------------------------------------


def test_the_internal_test_plugin_is_listed_only_on_request():
    assert INTERNAL_PLUGINS == ("rtlab.testing",)
    assert "rtlab.testing" not in {r["name"] for r in plugins_info()}
    assert all(r["internal"] is False for r in plugins_info())
    internal = record("rtlab.testing")
    assert internal["internal"] is True and internal["registered"] == {"backends": ["test", "test-attention"]}
    assert get_registry().get("backend", "test") is ToneBackend  # still registered and usable


# -- installed plugins: entry points, RTLAB_LOAD_PLUGINS, check_pending ------------------------


def fake_distribution(site: Path, dist: str, module: str, source: str, version: str = "1.2.3") -> None:
    """An installed distribution with an ``rtlab`` entry point, as pip would leave it."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[rtlab]\n{module.removeprefix('rtlab_')} = {module}\n")


ECHO_PLUGIN = """
    import rtlab
    from rtlab.backends import Backend


    class FakeEcho(Backend):
        name = "fake-echo"

        def transcribe(self, audio, *, prompt="", language=None):
            return []


    @rtlab.hookimpl
    def register_backends(register):
        register(FakeEcho)
"""

TYPO_PLUGIN = """
    import rtlab


    @rtlab.hookimpl
    def register_backend(register):  # missing "s": not an rtlab hook
        pass
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    fake_distribution(site, "rtlab-fake-echo", "rtlab_fake_echo", ECHO_PLUGIN)
    return site


def rtlab_plugins(site: Path, load: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    env.pop("RTLAB_LOAD_PLUGINS", None)
    if load is not None:
        env["RTLAB_LOAD_PLUGINS"] = load
    script = Path(sys.executable).with_name("rtlab")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from rtlab.cli import cli; cli()"]
    return subprocess.run(
        [*command, "plugins", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )


def loaded(site: Path, load: str | None, *args: str) -> dict[str, dict]:
    result = rtlab_plugins(site, load, *args)
    assert result.returncode == 0, result.stderr
    return {r["name"]: r for r in json.loads(result.stdout)}


def test_rtlab_plugins_prints_json_for_every_plugin(site):
    records = loaded(site, None, "--all")
    assert set(DEFAULT_PLUGINS) <= set(records)
    for info in records.values():
        assert set(info) >= {"name", "version", "internal", "hooks", "registered", "rejected"}
        assert info["internal"] is (info["name"] in INTERNAL_PLUGINS)
    assert records["rtlab.decoders.plugin"]["registered"] == {"decoders": ["ffmpeg", "pcm_s16le"]}
    assert records["rtlab.policies.plugin"]["registered"] == {"policies": ["alignatt", "local-agreement"]}
    assert records["rtlab.testing"]["hooks"] == ["register_backends"]
    assert records["rtlab.testing"]["version"] == rtlab.__version__
    fake = records["fake_echo"]
    assert fake == {
        "name": "fake_echo",
        "version": "1.2.3",
        "internal": False,
        "hooks": ["register_backends"],
        "registered": {"backends": ["fake-echo"]},
        "rejected": [],
    }


@pytest.mark.parametrize(
    "load, expected",
    [
        ("", False),  # set but empty: no installed plugin
        ("rtlab-fake-echo", True),  # distribution name
        ("fake_echo", True),  # entry-point name
        ("something-else, rtlab-fake-echo", True),
        ("something-else", False),
    ],
)
def test_rtlab_load_plugins_restricts_installed_plugins(site, load, expected):
    records = loaded(site, load, "--all")
    assert ("fake_echo" in records) is expected
    assert set(DEFAULT_PLUGINS) <= set(records)  # built-ins always load
    if load == "":
        assert set(records) == set(DEFAULT_PLUGINS)


def test_a_load_plugins_name_no_plugin_has_is_warned_about(site):
    result = rtlab_plugins(site, "rtlab-fake-echoo, fake_echo")
    assert result.returncode == 0, result.stderr
    assert "fake_echo" in {r["name"] for r in json.loads(result.stdout)}
    assert "RTLAB_LOAD_PLUGINS names 'rtlab-fake-echoo', which no installed plugin has" in result.stderr
    assert "rtlab-fake-echo," in result.stderr, "the installed names are listed"
    assert "warning" not in rtlab_plugins(site, "rtlab-fake-echo").stderr


def test_rtlab_plugins_hides_the_internal_test_plugin_without_all(site):
    records = loaded(site, "rtlab-fake-echo")
    assert set(records) == set(DEFAULT_PLUGINS) - set(INTERNAL_PLUGINS) | {"fake_echo"}


def test_an_installed_plugin_cannot_take_a_builtin_name(tmp_path):
    fake_distribution(tmp_path, "rtlab-impostor", "rtlab_impostor", ECHO_PLUGIN.replace('"fake-echo"', '"test"'))
    records = loaded(tmp_path, "rtlab-impostor", "--all")
    assert records["rtlab.testing"]["registered"] == {"backends": ["test", "test-attention"]}
    assert records["impostor"]["registered"] == {}
    assert "already registered" in records["impostor"]["rejected"][0]["reason"]


def test_a_plugin_with_an_unknown_hook_fails_loudly(tmp_path):
    fake_distribution(tmp_path, "rtlab-typo", "rtlab_typo", TYPO_PLUGIN)
    result = rtlab_plugins(tmp_path, None)
    assert result.returncode != 0
    assert "unknown hook 'register_backend'" in result.stderr
    assert "'typo'" in result.stderr and "register_backends" in result.stderr


def test_an_unknown_hook_is_not_listed_among_rtlab_s_hooks():
    from rtlab import plugins
    from rtlab.errors import PluginError

    typo = type("Typo", (), {"register_backend": staticmethod(rtlab.hookimpl(lambda register: None))})()
    pm.register(typo, name="typo")
    was_loaded, plugins._loaded = plugins._loaded, False
    try:
        with pytest.raises(PluginError) as raised:
            plugins.load_plugins()
    finally:
        pm.unregister(name="typo")
        plugins._loaded = was_loaded
    known = str(raised.value).split("rtlab's hooks are: ")[1].split(";")[0]
    assert known.split(", ") == ["register_backends", "register_decoders", "register_policies"]


def test_load_plugins_keeps_failing_while_a_plugin_has_an_unknown_hook():
    from rtlab import plugins
    from rtlab.errors import PluginError

    typo = type("Typo", (), {"register_backend": staticmethod(rtlab.hookimpl(lambda register: None))})()
    pm.register(typo, name="typo")
    was_loaded, plugins._loaded = plugins._loaded, False
    try:
        for _ in range(2):  # not just the first call
            with pytest.raises(PluginError, match="typo"):
                plugins.load_plugins()
    finally:
        pm.unregister(name="typo")
        plugins._loaded = was_loaded
    assert plugins.load_plugins() is pm


# -- hooks are documented --------------------------------------------------------------------


def documented_hooks() -> dict[str, list[str]]:
    """``### name(args)`` headings under ``## Hooks`` in docs/plugins.md."""
    text = DOCS.read_text()
    section = text.split("\n## Hooks\n", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^### `?(\w+)\(([^)]*)\)`?\s*$", section, flags=re.MULTILINE)
    return {name: [a.strip() for a in args.split(",") if a.strip()] for name, args in headings}


def test_every_hook_is_documented_with_its_real_arguments():
    documented = documented_hooks()
    assert HOOKS, "no hookspecs found"
    for hook in HOOKS:
        arguments = list(inspect.signature(getattr(hookspecs, hook)).parameters)
        assert hook in documented, f"docs/plugins.md has no '### {hook}({', '.join(arguments)})'"
        assert documented[hook] == arguments
    assert set(documented) == set(HOOKS), "docs/plugins.md documents hooks that do not exist"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_docstring_states_arguments_return_and_thread(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    for argument in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert f":param {argument}:" in doc
    assert ":return:" in doc
    assert "thread" in doc


def docs_example(hook: str) -> str:
    text = DOCS.read_text()
    section = text.split(f"\n### {hook}(", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_documented_hook_example_registers_cleanly(hook):
    module = types.ModuleType(f"docs_example_{hook}")
    exec(compile(docs_example(hook), f"docs/plugins.md:{hook}", "exec"), module.__dict__)
    pm.register(module, name="docs-example")
    try:
        registry = get_registry(refresh=True)
        assert registry.rejected == []
        info = record("docs-example")
        assert info["hooks"] == [hook] and len(sum(info["registered"].values(), [])) == 1
    finally:
        pm.unregister(name="docs-example")
        get_registry(refresh=True)


def test_the_docs_opening_example_transcribes():
    text = DOCS.read_text()
    source = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)[0]
    module = types.ModuleType("docs_echo")
    exec(compile(source, "docs/plugins.md:intro", "exec"), module.__dict__)
    backend = module.EchoBackend(word="hi")
    words = backend.transcribe(np.zeros(32_000, np.float32))
    assert [w["text"] for w in words] == ["hi", "hi"]


def test_abandoned_partial_writes_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from rtlab.backends import partial_path, remove_abandoned_partials

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)  # fmt: skip
    mine = partial_path(tmp_path / "model")
    assert mine.parent == tmp_path and mine.name.startswith(".model.") and mine.name.endswith(".partial")
    mine.mkdir()
    killed_folder = tmp_path / f".tiny.en-abc.{dead}.89abcdef.partial"
    (killed_folder / "inner").mkdir(parents=True)
    killed_file = tmp_path / f".model.bin.{dead}.00ff00ff.partial"
    killed_file.write_bytes(b"half")
    kept = [tmp_path / "model.bin", tmp_path / "notes.partial", tmp_path / f".x.{dead}.partial"]
    for path in kept:
        path.write_bytes(b"keep")
    removed = remove_abandoned_partials(tmp_path)
    assert sorted(removed) == sorted([killed_folder, killed_file])
    assert mine.is_dir() and all(path.exists() for path in kept)
    assert remove_abandoned_partials(tmp_path / "no-such-folder") == []


def test_the_plugins_here_require_the_rtlab_they_are_developed_beside():
    """A plugin in plugins/ imports what rtlab has now; installed beside an older rtlab
    release it would fail at import. Its requirement names this version: a bump of rtlab
    is a bump of theirs. (They required 0.4.2 while importing names added after 0.4.7.)"""
    import tomllib

    import rtlab

    root = Path(__file__).resolve().parent.parent
    projects = sorted((root / "plugins").glob("*/pyproject.toml"))
    assert len(projects) >= 2
    for project in projects:
        dependencies = tomllib.loads(project.read_text(encoding="utf-8"))["project"]["dependencies"]
        required = [d.replace(" ", "") for d in dependencies if re.match(r"rtlab\b(?![-_])", d)]
        assert required == [f"rtlab>={rtlab.__version__}"], f"{project.parent.name}: {dependencies}"


def test_a_file_written_whole_replaces_the_old_one_only_when_the_block_ends(tmp_path):
    from rtlab.backends import written_whole

    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")
    with written_whole(target) as partial:
        partial.write_text("new", encoding="utf-8")
        assert target.read_text(encoding="utf-8") == "old"  # a reader meanwhile finds the old file whole
        assert partial.parent == tmp_path and partial.name.startswith(".report.json.")
    assert target.read_text(encoding="utf-8") == "new" and not partial.exists()
    # A block that fails, Ctrl-C included, leaves the last file and no partial one.
    for error in (OSError("No space left on device"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with written_whole(target) as partial:
                partial.write_text("half", encoding="utf-8")
                raise error
        assert target.read_text(encoding="utf-8") == "new" and sorted(tmp_path.iterdir()) == [target]
    with written_whole(tmp_path / "fresh.txt") as partial:
        partial.write_text("first", encoding="utf-8")
    assert (tmp_path / "fresh.txt").read_text(encoding="utf-8") == "first"


class NeedsWings(WholeBufferPolicy):
    """A policy that requires a capability and, like a plugin author may, does not check it."""

    name = "inline-needs-wings"
    requires = ("wings",)
    built = 0

    def __init__(self, backend, *, language=None):
        super().__init__(backend, language=language)
        type(self).built += 1


class WingedBackend(EchoBackend):
    name = "inline-winged"
    capabilities = ("wings",)


def test_a_policy_is_refused_a_backend_without_what_it_requires_before_it_is_built():
    # rtlab checks `requires` itself: before, a policy that did not check it in __init__
    # ran on any backend and failed (or misbehaved) at its first pass.
    from rtlab.testing.conformance import registered

    with registered(NeedsWings, "policy"), registered(WingedBackend):
        with pytest.raises(InvalidOption) as refused:
            StreamConfig(backend="test", policy="inline-needs-wings").validate()
        assert str(refused.value) == (
            "policy 'inline-needs-wings' needs a backend with capability 'wings'; "
            "backend 'test' does not provide it: use backend=inline-winged"
        )
        assert refused.value.refusal and refused.value.backends == ("inline-winged",)
        assert NeedsWings.built == 0
        StreamConfig(backend="inline-winged", policy="inline-needs-wings").validate()
        assert NeedsWings.built == 1
