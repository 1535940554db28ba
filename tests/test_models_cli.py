"""``rtlab models`` and the backend capabilities it asks for: local_models, convert_model,
and devices as ``rtlab plugins`` and ``/api/backends`` report them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import rtlab
from rtlab.backends import Backend
from rtlab.cli import cli
from rtlab.plugins import pm
from rtlab.registry import get_registry, plugins_info


class ListingBackend(Backend):
    """Finds one model of its own and converts by copying."""

    name = "inline-listing"

    @classmethod
    def devices(cls):
        return ["cpu"]

    @classmethod
    def local_models(cls):
        return [{"name": "small-one", "kind": "embedded", "format": "toy", "path": "/models/small-one", "bytes": 12_300_000}]

    @classmethod
    def convert_model(cls, source, dest):
        Path(dest).write_text(f"converted from {source}")
        return {"path": dest, "name": "small-one"}

    def transcribe(self, audio, *, prompt="", language=None):
        return []


class PlainBackend(Backend):
    """Declares nothing: no devices, no local models, no conversion."""

    name = "inline-plain"

    def transcribe(self, audio, *, prompt="", language=None):
        return []


class BrokenListingBackend(PlainBackend):
    name = "inline-broken"

    @classmethod
    def local_models(cls):
        raise RuntimeError("the disk is gone")


class Plugin:
    def __init__(self, *classes):
        self.classes = classes

    @rtlab.hookimpl
    def register_backends(self, register):
        for cls in self.classes:
            register(cls)


@pytest.fixture
def registered(request):
    """Registers the backend classes the test passes (``indirect`` parametrization) as the
    plugin ``inline-models``, unregistered after."""
    pm.register(Plugin(*request.param), name="inline-models")
    get_registry(refresh=True)
    try:
        yield
    finally:
        pm.unregister(name="inline-models")
        get_registry(refresh=True)


def run(*args: str):
    return CliRunner().invoke(cli, ["models", *args])


def test_the_base_backend_declares_no_devices_and_no_models():
    assert Backend.devices() is None and Backend.local_models() == []
    assert not hasattr(Backend, "convert_model")


@pytest.mark.parametrize("registered", [(ListingBackend, PlainBackend, BrokenListingBackend)], indirect=True)
def test_models_list_asks_every_backend(registered):
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {"backend": "inline-listing", "name": "small-one", "kind": "embedded", "format": "toy",
            "path": "/models/small-one", "bytes": 12_300_000} in rows  # fmt: skip
    assert not [r for r in rows if r["backend"] == "inline-plain"]
    broken = [r for r in rows if r["backend"] == "inline-broken"]
    assert broken == [{"backend": "inline-broken", "name": "?", "kind": "error", "note": "RuntimeError: the disk is gone"}]
    table = run("list")
    assert table.exit_code == 0
    line = next(line for line in table.output.splitlines() if "small-one" in line)
    assert line.split() == ["inline-listing", "small-one", "embedded", "toy", "12.3", "MB", "/models/small-one"]


@pytest.mark.parametrize("registered", [(ListingBackend, PlainBackend)], indirect=True)
def test_convert_calls_the_backend_that_provides_it(registered, tmp_path):
    dest = tmp_path / "out.bin"
    result = run("convert", "somewhere", str(dest), "--backend", "inline-listing")
    assert result.exit_code == 0, result.output
    assert dest.read_text() == "converted from somewhere"
    assert result.output.strip() == f"wrote {dest} (name: small-one)"
    refused = run("convert", "somewhere", str(tmp_path / "x"), "--backend", "inline-plain")
    assert refused.exit_code == 1
    assert "backend 'inline-plain' does not convert models; backends that do:" in refused.output
    assert "inline-listing" in refused.output
    unknown = run("convert", "somewhere", str(tmp_path / "x"), "--backend", "no-such-backend")
    assert unknown.exit_code == 1 and "unknown backend 'no-such-backend'" in unknown.output


@pytest.mark.parametrize("registered", [(ListingBackend,)], indirect=True)
def test_convert_refuses_a_dest_under_a_file_in_one_line(registered, tmp_path):
    (tmp_path / "models").write_text("a file where DEST wants a folder")
    dest = tmp_path / "models" / "out.bin"
    result = run("convert", "somewhere", str(dest), "--backend", "inline-listing")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: DEST {dest}: {tmp_path / 'models'} is a file, not a folder; give a path in a folder"
    ]  # not "[Errno 20] Not a directory", nor FileExistsError from the backend's mkdir


def test_convert_without_any_converter_names_what_to_install(tmp_path):
    env = {**os.environ, "RTLAB_LOAD_PLUGINS": ""}  # rtlab's built-in plugins only
    result = subprocess.run(
        [sys.executable, "-m", "rtlab", "models", "convert", "tiny.en", str(tmp_path / "x.pt")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: no installed backend converts models (none provides convert_model): install one that "
        "does, e.g. pip install -e plugins/rtlab-openai-whisper"
    ]
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("registered", [(ListingBackend, PlainBackend)], indirect=True)
def test_plugins_and_api_backends_report_declared_devices(registered):
    from rtlab.server.app import TranscriptionServer
    from rtlab.server.config import ServerConfig

    record = next(r for r in plugins_info() if r["name"] == "inline-models")
    assert record["devices"] == {"inline-listing": ["cpu"]}  # inline-plain declares none
    backends = {b["name"]: b for b in TranscriptionServer(ServerConfig()).backends_info()["backends"]}
    assert backends["inline-listing"]["devices"] == ["cpu"]
    assert backends["inline-plain"]["devices"] is None


def test_a_plugin_whose_backends_declare_nothing_has_no_devices_entry():
    records = {r["name"]: r for r in plugins_info(include_internal=True)}
    assert "devices" not in records["rtlab.testing"]


# -- with the real plugins -------------------------------------------------------------------------


def test_models_list_shows_the_embedded_models_with_their_sizes(tmp_path, monkeypatch):
    pytest.importorskip("rtlab_openai_whisper")
    from rtlab_openai_whisper.models import embedded_source

    source = embedded_source("tiny.en")
    if source is None:
        pytest.skip("the embedded tiny.en is not installed")
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))
    rows = json.loads(run("list", "--json").output)
    tiny = next(r for r in rows if r["backend"] == "openai-whisper" and r["name"] == "tiny.en")
    # The files of its folder: model.bin (75_537_502 bytes), config.json, tokenizer.json, vocabulary.txt.
    files = [f for f in source.folder.iterdir() if f.is_file()]
    assert tiny["kind"] == "embedded" and tiny["bytes"] == sum(f.stat().st_size for f in files) == 78_090_594
    assert not [r for r in rows if r["kind"] == "converted"], "nothing converted in an empty cache"


def test_models_list_gives_the_same_files_the_same_size_whatever_the_backend(tmp_path, monkeypatch):
    # tiny.en was 78.1 MB for faster-whisper (its folder) and 75.5 MB for openai-whisper
    # (model.bin alone); base 147.9 MB against 145.2 MB (its two model.bin parts alone).
    pytest.importorskip("rtlab_faster_whisper")
    pytest.importorskip("rtlab_openai_whisper")
    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path))  # base not joined yet: both read its two packages
    rows = json.loads(run("list", "--json").output)
    embedded = {(r["backend"], r["name"]): r["bytes"] for r in rows if r["kind"] == "embedded"}
    names = [n for n in ("tiny.en", "base") if ("faster-whisper", n) in embedded and ("openai-whisper", n) in embedded]
    if not names:
        pytest.skip("no embedded model is installed")
    for name in names:
        assert embedded[("faster-whisper", name)] == embedded[("openai-whisper", name)], name
    table = [line.split() for line in run("list").output.splitlines()]
    sizes = {(line[0], line[1]): line[line.index("MB") - 1] for line in table if line[2:3] == ["embedded"]}
    for name in names:
        assert sizes[("faster-whisper", name)] == sizes[("openai-whisper", name)], name


@pytest.mark.slow
def test_rtlab_models_convert_writes_a_checkpoint_openai_whisper_loads(tmp_path):
    pytest.importorskip("rtlab_openai_whisper")
    env = {**os.environ, "RTLAB_CACHE_DIR": str(tmp_path / "cache")}
    dest = tmp_path / "tiny.en.pt"
    command = [sys.executable, "-m", "rtlab", "models", "convert", "tiny.en", str(dest)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if "not installed" in result.stderr:
        pytest.skip(result.stderr.strip())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {dest} (name: tiny.en, size: tiny.en (384 wide, 4+4 layers)")
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "already exists" in again.stderr
    loaded = subprocess.run(
        [sys.executable, "-c", f"import whisper; print(whisper.load_model({str(dest)!r}, device='cpu').dims.n_vocab)"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.stdout.strip() == "51864", loaded.stderr
    listed = subprocess.run([sys.executable, "-m", "rtlab", "models", "list"], env=env, capture_output=True, text=True)
    assert "embedded" in listed.stdout


def test_a_convert_stopped_by_sigterm_leaves_nothing_behind(tmp_path, monkeypatch):
    """SIGTERM during the write (as a service manager or `timeout` sends it) removes the
    temporary file and the folders made for DEST, as Ctrl-C does."""
    pytest.importorskip("rtlab_openai_whisper")
    import signal

    import torch
    from click.testing import CliRunner

    from rtlab.cli import cli

    monkeypatch.setenv("RTLAB_CACHE_DIR", str(tmp_path / "cache"))
    saved = torch.save

    def save_then_sigterm(obj, path, *args, **kwargs):
        saved({"part": torch.zeros(1000)}, path)  # half written
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(torch, "save", save_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    dest = tmp_path / "out" / "models" / "tiny.en.pt"
    result = CliRunner().invoke(cli, ["models", "convert", "--backend", "openai-whisper", "tiny.en", str(dest)])
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert not (tmp_path / "out").exists(), list(tmp_path.rglob("*"))
    assert signal.getsignal(signal.SIGTERM) is before, "the handler is put back"
