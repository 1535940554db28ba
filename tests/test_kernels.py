"""rtlab.kernels: pinning the compute kernels so that a replay hears the same words on another
CPU, the ``--kernels`` option of the CLI and the benchmark scripts, and what results record."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import rtlab.backends
import rtlab.kernels
from rtlab.cli import cli
from rtlab.eval.bench import hardware_summary
from rtlab.eval.metrics import environment_info
from rtlab.kernels import PORTABLE_KERNELS, KernelsError, describe_kernels, pin_kernels


@pytest.fixture
def clean_process(monkeypatch):
    """No kernel variable set and no model loaded, as in a fresh process on an AVX2 CPU."""
    for name in rtlab.kernels.KERNEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(rtlab.backends, "shared_models", rtlab.backends.SharedModels())
    monkeypatch.setattr(rtlab.kernels, "portable_kernels_refusal", lambda: None)
    monkeypatch.setattr(rtlab.kernels, "numpy_imported", lambda: False)


def test_portable_sets_every_variable_and_keeps_one_already_set(clean_process, monkeypatch):
    monkeypatch.setenv("CT2_FORCE_CPU_ISA", "AVX512")
    kept = pin_kernels("portable")
    assert kept == {"CT2_FORCE_CPU_ISA": "AVX512"}
    assert os.environ["CT2_FORCE_CPU_ISA"] == "AVX512"
    for name, value in PORTABLE_KERNELS.items():
        if name != "CT2_FORCE_CPU_ISA":
            assert os.environ[name] == value
    assert environment_info()["kernel_overrides"] == {**PORTABLE_KERNELS, "CT2_FORCE_CPU_ISA": "AVX512"}


def test_auto_sets_nothing_and_an_unknown_choice_is_refused(clean_process):
    assert pin_kernels("auto") == {}
    assert rtlab.kernels.kernel_overrides() == {}
    with pytest.raises(KernelsError, match="unknown kernels 'fast'; choose one of auto, portable"):
        pin_kernels("fast")


def test_pinning_after_a_model_has_loaded_is_refused(clean_process):
    rtlab.backends.shared_models.get(("faster-whisper", "tiny.en", "cpu", "int8"), object)
    with pytest.raises(KernelsError, match="before the first model loads: faster-whisper model 'tiny.en'"):
        pin_kernels("portable")
    assert "CT2_FORCE_CPU_ISA" not in os.environ


def test_pinning_after_numpy_was_imported_without_its_variables_is_refused(clean_process, monkeypatch):
    monkeypatch.setattr(rtlab.kernels, "numpy_imported", lambda: True)
    with pytest.raises(KernelsError, match="before NumPy is imported: .*NPY_DISABLE_CPU_FEATURES, OPENBLAS_CORETYPE"):
        pin_kernels("portable")
    assert "CT2_FORCE_CPU_ISA" not in os.environ
    # Set before NumPy was imported (a job script's environment): the rest can still be pinned.
    monkeypatch.setenv("NPY_DISABLE_CPU_FEATURES", PORTABLE_KERNELS["NPY_DISABLE_CPU_FEATURES"])
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert pin_kernels("portable") == {} and os.environ["CT2_FORCE_CPU_ISA"] == "AVX2"


def test_numpy_and_openblas_compute_at_avx2_in_a_process_that_pinned_first():
    """NumPy's loops and OpenBLAS (the log-mel features of faster-whisper) choose their
    kernels when NumPy is imported: a process that pins first gets their AVX2 ones."""
    if rtlab.kernels.portable_kernels_refusal():
        pytest.skip(rtlab.kernels.portable_kernels_refusal())
    probe = (
        "import json, rtlab.kernels; rtlab.kernels.pin_kernels('portable'); import numpy, threadpoolctl\n"
        "from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__\n"
        "blas = [i.get('architecture') for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas']\n"
        "print(json.dumps({'dispatched': [f for f in __cpu_dispatch__ if __cpu_features__.get(f)], 'openblas': blas}))"
    )
    env = {name: value for name, value in os.environ.items() if name not in rtlab.kernels.KERNEL_VARIABLES}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [f for f in found["dispatched"] if "512" in f or f == "X86_V4"], found
    assert set(found["openblas"]) <= {"Haswell"}, found


@pytest.mark.parametrize(
    ("machine", "extensions", "reason"),
    [("aarch64", ["avx2"], "this CPU is aarch64"), ("x86_64", [], "need AVX2 and this CPU does not list it")],
)
def test_a_cpu_that_cannot_run_the_portable_kernels_is_named(monkeypatch, machine, extensions, reason):
    monkeypatch.setattr(rtlab.kernels.platform, "machine", lambda: machine)
    monkeypatch.setattr(rtlab.kernels, "cpu_description", lambda: ("some CPU", extensions))
    assert reason in rtlab.kernels.portable_kernels_refusal()
    with pytest.raises(KernelsError, match="cannot pin portable kernels: .*; use --kernels auto"):
        pin_kernels("portable")


def test_the_cli_refuses_portable_kernels_with_one_line(monkeypatch):
    monkeypatch.setattr(rtlab.kernels, "portable_kernels_refusal", lambda: "the portable kernels need AVX2")
    result = CliRunner().invoke(cli, ["--kernels", "portable", "plugins"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: cannot pin portable kernels: the portable kernels need AVX2; use --kernels auto"
    ]


def test_tables_name_the_kernels():
    base = {"cpu_count": 2, "memory_total_bytes": 2**34, "machine": "x86_64"}
    assert hardware_summary(base) == "2 CPUs, 16.0 GiB, x86_64", "older result files have no kernel fields"
    portable = {**base, "cpu_vector_extensions": ["avx2", "avx512f"], "kernel_overrides": dict(PORTABLE_KERNELS)}
    assert hardware_summary(portable) == "2 CPUs, 16.0 GiB, x86_64 (AVX512F), portable kernels (AVX2)"
    assert describe_kernels({"CT2_FORCE_CPU_ISA": "AVX512", "OMP_NUM_THREADS": "2"}) == (
        "kernels pinned: CT2_FORCE_CPU_ISA=AVX512"
    )
    assert describe_kernels({}) == "kernels as the libraries chose"
    decoded = {**portable, "ffmpeg": {"binary": "imageio-ffmpeg", "version": "n9.0.2", "cpuflags": "0"}}
    assert hardware_summary(decoded) == (
        "2 CPUs, 16.0 GiB, x86_64 (AVX512F), portable kernels (AVX2), FFmpeg n9.0.2 (-cpuflags 0)"
    )
    system = {**base, "ffmpeg": {"binary": "PATH", "version": "5.1.9-0+deb12u1", "cpuflags": None}}
    assert hardware_summary(system) == "2 CPUs, 16.0 GiB, x86_64, FFmpeg 5.1.9-0+deb12u1"


def _onednn_isa(kernels: str, tmp_path) -> tuple[str, list[str]]:
    """oneDNN's own report of the instructions it computed with, and the committed words,
    for ``rtlab --kernels KERNELS transcribe`` in a fresh process with no kernel variable set."""
    env = {name: value for name, value in os.environ.items() if name not in rtlab.kernels.KERNEL_VARIABLES}
    env.update(ONEDNN_VERBOSE="1", HOME=str(tmp_path))
    command = [sys.executable, "-m", "rtlab", "--kernels", kernels, "transcribe", "tests/data/fox.ogg",
               "--clock", "unaware", "--format", "jsonl"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)))  # fmt: skip
    isa = [line.split("isa:", 1)[1] for line in done.stdout.splitlines() if line.startswith("onednn_verbose,info,cpu,isa:")]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert isa, done.stdout[-2000:]
    assert events[-1]["type"] == "summary", events[-1]
    return isa[0], events[-1]["text"].split()


@pytest.mark.slow
def test_portable_kernels_reach_onednn_in_a_new_process_and_hear_what_the_tests_hear(tmp_path):
    pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    refusal = rtlab.kernels.portable_kernels_refusal()
    if refusal:
        pytest.skip(refusal)
    isa, words = _onednn_isa("portable", tmp_path)
    assert isa == "Intel AVX2"
    assert {"quick", "sells", "sea"} <= {w.strip(".,").lower() for w in words}
    _, extensions = rtlab.kernels.cpu_description()
    if "avx512f" in extensions:
        auto_isa, _ = _onednn_isa("auto", tmp_path)
        assert "AVX-512" in auto_isa, "without the pin oneDNN uses the CPU's widest instructions"
