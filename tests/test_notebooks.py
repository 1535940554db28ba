"""The notebooks run top to bottom in a real Jupyter kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtlab.testing import tone_words, wav_bytes

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient)")
pytest.importorskip("ipykernel", reason="pip install -e '.[test]' (ipykernel)")

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def test_compare_configurations_runs_in_a_kernel(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index, text in enumerate(["alpha bravo charlie", "delta echo foxtrot golf"]):
        (corpus / f"clip{index}.wav").write_bytes(wav_bytes(tone_words(text)[0]))
        (corpus / f"clip{index}.txt").write_text(text)
    monkeypatch.setenv("RTLAB_NOTEBOOK_CORPUS", str(corpus))
    monkeypatch.setenv("RTLAB_NOTEBOOK_BACKEND", "test")
    monkeypatch.setenv("RTLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    notebook = nbformat.read(NOTEBOOKS / "compare_configurations.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "final: alpha bravo charlie" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the plots must be displayed"
    assert (tmp_path / "out" / "results.jsonl").exists()
    assert not [o for o in outputs if o.output_type == "error"]
