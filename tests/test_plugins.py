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
from rtlab.errors import PluginWarning
from rtlab.plugins import DEFAULT_PLUGINS, pm
from rtlab.policies import Policy, Step
from rtlab.registry import PLURALS, get_registry, plugins_info

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
    return next(r for r in plugins_info() if r["name"] == name)


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


class Nameless(EchoBackend):
    name = ""


class NotAString(EchoBackend):
    name = 42


class NoTranscribe:
    name = "no-transcribe"


class HalfADecoder:
    name = "half-a-decoder"

    async def start(self):
        return True


@pytest.mark.parametrize(
    "hook, cls, problem",
    [
        ("register_backends", Nameless, "non-empty string 'name'"),
        ("register_backends", NotAString, "non-empty string 'name'"),
        ("register_backends", NoTranscribe, "the methods transcribe"),
        ("register_policies", EchoBackend, "the methods insert_audio, process_iter, finish"),
        ("register_decoders", HalfADecoder, "the methods write, end_input, read, stop"),
    ],
)
def test_an_invalid_registration_is_refused(hook, cls, problem):
    pm.register(plugin_registering(hook, cls), name="broken")
    try:
        with pytest.warns(PluginWarning, match="'broken'") as warned:
            registry = get_registry(refresh=True)
        assert problem in str(warned[0].message)
        assert all(r.plugin != "broken" for kind in registry.entries.values() for r in kind.values())
        info = record("broken")
        assert info["registered"] == {}
        assert len(info["rejected"]) == 1 and problem in info["rejected"][0]["reason"]
    finally:
        pm.unregister(name="broken")
        get_registry(refresh=True)


def test_an_unknown_name_lists_the_installed_ones():
    from rtlab.errors import UnknownBackend

    with pytest.raises(UnknownBackend, match="installed backends: .*test.*rtlab plugins"):
        get_registry().get("backend", "no-such-backend")


def test_no_test_plugin_leaks_into_the_run():
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert set(DEFAULT_PLUGINS) <= names
    assert not {"inline-plugin", "impostor", "broken", "first", "second"} & names
    assert get_registry(refresh=True).rejected == []


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


def rtlab_plugins(site: Path, load: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    env.pop("RTLAB_LOAD_PLUGINS", None)
    if load is not None:
        env["RTLAB_LOAD_PLUGINS"] = load
    script = Path(sys.executable).with_name("rtlab")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from rtlab.cli import cli; cli()"]
    return subprocess.run(
        [*command, "plugins"],
        env=env, capture_output=True, text=True, timeout=120,
    )


def loaded(site: Path, load: str | None) -> dict[str, dict]:
    result = rtlab_plugins(site, load)
    assert result.returncode == 0, result.stderr
    return {r["name"]: r for r in json.loads(result.stdout)}


def test_rtlab_plugins_prints_json_for_every_plugin(site):
    records = loaded(site, None)
    assert set(DEFAULT_PLUGINS) <= set(records)
    for info in records.values():
        assert set(info) >= {"name", "version", "hooks", "registered", "rejected"}
    assert records["rtlab.decoders.plugin"]["registered"] == {"decoders": ["ffmpeg", "pcm_s16le"]}
    assert records["rtlab.policies.plugin"]["registered"] == {"policies": ["local-agreement"]}
    assert records["rtlab.testing"]["hooks"] == ["register_backends"]
    assert records["rtlab.testing"]["version"] == rtlab.__version__
    fake = records["fake_echo"]
    assert fake == {
        "name": "fake_echo",
        "version": "1.2.3",
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
    records = loaded(site, load)
    assert ("fake_echo" in records) is expected
    assert set(DEFAULT_PLUGINS) <= set(records)  # built-ins always load
    if load == "":
        assert set(records) == set(DEFAULT_PLUGINS)


def test_an_installed_plugin_cannot_take_a_builtin_name(tmp_path):
    fake_distribution(tmp_path, "rtlab-impostor", "rtlab_impostor", ECHO_PLUGIN.replace('"fake-echo"', '"test"'))
    records = loaded(tmp_path, "rtlab-impostor")
    assert records["rtlab.testing"]["registered"] == {"backends": ["test"]}
    assert records["impostor"]["registered"] == {}
    assert "already registered" in records["impostor"]["rejected"][0]["reason"]


def test_a_plugin_with_an_unknown_hook_fails_loudly(tmp_path):
    fake_distribution(tmp_path, "rtlab-typo", "rtlab_typo", TYPO_PLUGIN)
    result = rtlab_plugins(tmp_path, None)
    assert result.returncode != 0
    assert "unknown hook 'register_backend'" in result.stderr
    assert "'typo'" in result.stderr and "register_backends" in result.stderr


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
