"""The notebooks run top to bottom in a real Jupyter kernel, on small tone clips with the
test backend (their parameters come from the environment), and as given on the embedded
tiny.en (marked slow; 02 on fewer configurations); each leaves no process running; in git
they have no outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rtlab.testing import tone_words, wav_bytes, write_tone_corpus

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient)")
pytest.importorskip("ipykernel", reason="pip install -e '.[test]' (ipykernel)")

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
NAMES = ["01_quickstart", "02_latency_accuracy", "03_write_a_backend", "04_same_weights"]
WIDGET = "application/vnd.jupyter.widget-view+json"
CLIP_TEXT = "alpha bravo charlie delta"


@pytest.fixture(autouse=True)
def notebook_defaults(monkeypatch):
    """Each notebook starts from its own defaults: a test sets only the parameters it means to."""
    for name in [name for name in os.environ if name.startswith("RTLAB_NOTEBOOK_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def tone_clip(tmp_path: Path) -> Path:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(tone_words(CLIP_TEXT)[0]))
    clip.with_suffix(".txt").write_text(CLIP_TEXT + "\n")
    return clip


# Run in the notebook's kernel after its last cell: what the notebook left running (an
# FFmpeg decoder, a server), as the names of the kernel's child processes.
LEFT_RUNNING = """
import json, psutil
alive = []
for child in psutil.Process().children(recursive=True):
    try:
        alive.append(child.name())
    except psutil.NoSuchProcess:
        pass
print(json.dumps(alive))
"""


def execute(name: str) -> tuple[list, str]:
    """Run ``notebooks/NAME.ipynb`` in a kernel (at most 180 s a cell); its code cells'
    outputs and stdout. Fails on an error in any cell, and when the notebook leaves a
    process running once its last cell has run."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(LEFT_RUNNING))
    nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()  # fmt: skip
    check = notebook.cells.pop()
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [o for cell in cells + [check] for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, "\n".join("\n".join(o.traceback) for o in errors)
    left = json.loads(check.outputs[-1]["text"])
    assert left == [], f"{name} left running: {', '.join(left)}"
    stdout = "".join(o.get("text", "") for cell in cells for o in cell.outputs
                     if o.output_type == "stream" and o.name == "stdout")  # fmt: skip
    return cells, stdout


def html_of(cells: list) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for cell in cells for o in cell.outputs)


def records(path: Path) -> list[str]:
    return [json.loads(line)["record"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip the outputs"
    assert notebook.metadata.get("widgets") is None, f"{name}: strip the saved widget state"


def test_quickstart_compares_two_configurations_live(tmp_path, tone_clip, monkeypatch):
    monkeypatch.setenv("RTLAB_NOTEBOOK_AUDIO", str(tone_clip))
    monkeypatch.setenv("RTLAB_NOTEBOOK_BACKEND", "test")
    monkeypatch.setenv("RTLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    cells, stdout = execute("01_quickstart")
    panels = [o for cell in cells for o in cell.outputs if WIDGET in o.get("data", {})]
    assert len(panels) == 2  # the ComparePanel and the LivePanel
    table = html_of(cells)
    assert "test local-agreement min_chunk=0.5" in table and "test local-agreement min_chunk=1" in table
    assert CLIP_TEXT in table  # the hypotheses
    out = tmp_path / "out" / "01_quickstart"
    assert records(out / "results.jsonl") == ["run", "stream", "stream", "summary", "summary"]
    for plot in ("wer_vs_latency.png", "latency_cdf.png", "lag.png", "timeline.png"):
        assert str(out / plot) in stdout and (out / plot).stat().st_size > 0  # what save() says it wrote
    assert stdout.rstrip().endswith(CLIP_TEXT)  # the LivePanel's text


def test_latency_accuracy_sweeps_a_corpus_with_the_bench_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("RTLAB_NOTEBOOK_CORPUS", str(write_tone_corpus(tmp_path / "corpus")))
    monkeypatch.setenv("RTLAB_NOTEBOOK_BACKEND", "test")
    monkeypatch.setenv("RTLAB_NOTEBOOK_MODELS", "tones")
    monkeypatch.setenv("RTLAB_NOTEBOOK_MIN_CHUNKS", "0.5,1")
    monkeypatch.setenv("RTLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    cells, stdout = execute("02_latency_accuracy")
    assert "2 configurations" in stdout and "tones local-agreement 0.5 s" in stdout
    images = [o for cell in cells for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # the three bench plots and the sweep
    assert records(tmp_path / "out" / "02_latency_accuracy" / "results.jsonl")[0] == "run"
    assert WIDGET in cells[-2].outputs[-1]["data"]  # the closer look's panel
    assert "alpha bravo charlie delta" in html_of(cells[-1:])  # its hypothesis of the first clip, a.wav


def test_latency_accuracy_falls_back_to_the_english_test_clips(tmp_path, monkeypatch):
    monkeypatch.setenv("RTLAB_SPEECH_DIR", str(tmp_path / "no-shared-speech"))
    monkeypatch.setenv("RTLAB_NOTEBOOK_BACKEND", "test")
    monkeypatch.setenv("RTLAB_NOTEBOOK_MODELS", "tones")
    monkeypatch.setenv("RTLAB_NOTEBOOK_MIN_CHUNKS", "1")
    monkeypatch.setenv("RTLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    cells, stdout = execute("02_latency_accuracy")
    out = tmp_path / "out" / "02_latency_accuracy"
    assert f"corpus: {out / 'tests-data-en.jsonl'} (4 utterances)" in stdout
    assert "\n1 configuration\n" in stdout  # one policy at one min_chunk: not "1 configurations"
    files = [json.loads(line)["file"] for line in (out / "results.jsonl").read_text().splitlines()
             if json.loads(line)["record"] == "stream"]  # fmt: skip
    assert sorted(Path(f).name for f in files) == ["en-pause.ogg", "fox.ogg", "paragraph.ogg", "realtime.wav"]


def test_write_a_backend_registers_it_and_compares_it(tmp_path, tone_clip, monkeypatch):
    monkeypatch.setenv("RTLAB_NOTEBOOK_AUDIO", str(tone_clip))
    monkeypatch.setenv("RTLAB_NOTEBOOK_BACKEND", "test")
    cells, stdout = execute("03_write_a_backend")
    assert "loudness" in stdout and "checks passed" in stdout
    table = html_of(cells)
    assert "loudness local-agreement min_chunk=0.5" in table and CLIP_TEXT in table
    assert "speech" in table
    # one loud stretch per tone, and the words the stream committed, which the prose compares
    assert "loud stretches in the clip: 4\n" in stdout
    assert 1 <= int(stdout.split("words the loudness stream committed: ")[1].split()[0]) <= 4


def test_same_weights_streams_each_engine_and_alignatt_where_the_engine_allows_it(tmp_path, tone_clip, monkeypatch):
    monkeypatch.setenv("RTLAB_NOTEBOOK_AUDIO", str(tone_clip))
    monkeypatch.setenv("RTLAB_NOTEBOOK_ENGINES", "test,test-attention,no-such-engine")
    monkeypatch.setenv("RTLAB_NOTEBOOK_MODEL", "tones")
    monkeypatch.setenv("RTLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    cells, stdout = execute("04_same_weights")
    assert "no-such-engine: not installed, left out" in stdout
    assert "test: no AlignAtt (it lacks incremental-decoding)" in stdout
    labels = ["test:tones local-agreement", "test-attention:tones local-agreement", "test-attention:tones alignatt"]
    assert [line.split("] ", 1)[1] for line in stdout.splitlines() if line.startswith("[")] == labels
    assert records(tmp_path / "out" / "04_same_weights" / "results.jsonl") == ["run"] + ["stream"] * 3 + ["summary"] * 3
    streams = [json.loads(line) for line in (tmp_path / "out" / "04_same_weights" / "results.jsonl").read_text().splitlines()
               if json.loads(line)["record"] == "stream"]  # fmt: skip
    assert [s["config"]["name"] for s in streams] == labels
    assert all(s["hypothesis"] == CLIP_TEXT for s in streams)
    images = [o for cell in cells for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the bars and the timeline
    assert (tmp_path / "out" / "04_same_weights" / "timeline.png").stat().st_size > 0
    assert all(label in html_of(cells) for label in labels)  # the figures table


def streams_of(path: Path) -> dict[str, dict]:
    """The stream records of a results.jsonl, by configuration name."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {s["config"]["name"]: s for s in lines if s["record"] == "stream"}


@pytest.mark.slow
def test_quickstart_runs_as_given_on_the_embedded_tiny_en(tmp_path, monkeypatch):
    pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    monkeypatch.setenv("RTLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    cells, stdout = execute("01_quickstart")  # its own defaults: faster-whisper, fox.ogg, wall clock
    streams = streams_of(tmp_path / "out" / "01_quickstart" / "results.jsonl")
    assert list(streams) == ["faster-whisper local-agreement min_chunk=0.5", "faster-whisper local-agreement min_chunk=1"]
    for stream in streams.values():
        assert stream["error"] is None and stream["clock"] == "wall"
        assert stream["wer"]["value"] < 0.6 and stream["latency"]["count"] >= 10  # fox.ogg: 17 words
    assert len(stdout.splitlines()[-1].split()) >= 10  # the LivePanel's text


@pytest.mark.slow
def test_latency_accuracy_runs_on_the_embedded_tiny_en(tmp_path, monkeypatch):
    """As given but for the grid (tiny.en at one min_chunk, not six configurations) and the
    corpus (one English test clip: the fallback's four are test_latency_accuracy_falls_back_to_
    the_english_test_clips's; the shared speech is not everywhere)."""
    pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    data = Path(__file__).resolve().parent / "data"
    manifest = tmp_path / "fox.jsonl"
    manifest.write_text(json.dumps({"audio": str(data / "fox.ogg"), "text": (data / "fox.txt").read_text()}))
    monkeypatch.setenv("RTLAB_NOTEBOOK_CORPUS", str(manifest))
    monkeypatch.setenv("RTLAB_NOTEBOOK_MODELS", "tiny.en")
    monkeypatch.setenv("RTLAB_NOTEBOOK_MIN_CHUNKS", "1")
    monkeypatch.setenv("RTLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    cells, stdout = execute("02_latency_accuracy")
    assert "tiny.en local-agreement 1 s" in stdout  # the table
    lines = [json.loads(line) for line in (tmp_path / "out" / "02_latency_accuracy" / "results.jsonl").read_text().splitlines()]
    summaries = [line for line in lines if line["record"] == "summary"]
    assert [s["name"] for s in summaries] == ["tiny.en local-agreement 1 s"]
    # tiny.en mishears espeak-ng's fox in places ("round-fark", "lady nog": some 7 errors in 17 words)
    assert summaries[0]["wer"]["value"] < 0.6 and summaries[0]["latency"]["count"] >= 10  # 17 reference words
    assert all(line["error"] is None for line in lines if line["record"] == "stream")
    images = [o for cell in cells for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # the three bench plots and the sweep


@pytest.mark.slow
def test_write_a_backend_runs_as_given_beside_faster_whisper(tmp_path, monkeypatch):
    pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    cells, stdout = execute("03_write_a_backend")  # its own defaults: fox.ogg, simulated clock
    assert "checks passed" in stdout
    stretches = int(stdout.split("loud stretches in the clip: ")[1].split()[0])
    committed = int(stdout.split("words the loudness stream committed: ")[1].split()[0])
    assert 1 <= committed <= stretches
    table = html_of(cells)
    assert "loudness local-agreement min_chunk=0.5" in table and "faster-whisper local-agreement min_chunk=0.5" in table


@pytest.mark.slow
def test_same_weights_runs_as_given_on_the_embedded_tiny_en(tmp_path, monkeypatch):
    pytest.importorskip("rtlab_faster_whisper", reason="the faster-whisper plugin is not installed")
    pytest.importorskip("rtlab_openai_whisper", reason="the openai-whisper plugin is not installed")
    monkeypatch.setenv("RTLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    cells, stdout = execute("04_same_weights")  # its own defaults: tests/data/fox.ogg, unaware clock
    labels = ["faster-whisper:tiny.en local-agreement compute_type=float32",
              "openai-whisper:tiny.en local-agreement", "openai-whisper:tiny.en alignatt"]  # fmt: skip
    assert [line.split("] ", 1)[1] for line in stdout.splitlines() if line.startswith("[")] == labels
    streams = streams_of(tmp_path / "out" / "04_same_weights" / "results.jsonl")
    assert list(streams) == labels
    for stream in streams.values():
        assert stream["error"] is None and stream["clock"] == "unaware"
        assert stream["wer"]["value"] < 0.6 and stream["latency"]["count"] >= 10  # fox.ogg: 17 words
