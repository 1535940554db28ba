"""The tutorial plugin of docs/plugins.md, built from the page's own code blocks, so that the
tutorial cannot rot: installed with pip, listed by ``rtlab plugins``, and passing
``rtlab.testing.check_backend``, like the plugin of a reader who copied it.

Everything happens in a temporary folder and a subprocess: nothing is installed into, or
registered in, this test run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs" / "plugins.md"


def docs_block(first_line: str) -> str:
    """The fenced code block of docs/plugins.md whose first line is ``first_line``."""
    blocks = re.findall(r"```\w*\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    found = [block for block in blocks if block.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"docs/plugins.md should have one block starting {first_line!r}"
    return found[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The tutorial plugin, pip-installed (offline, no dependencies) into a folder of its own."""
    root = tmp_path_factory.mktemp("tutorial")
    project = root / "project"
    project.mkdir()
    (project / "rtlab_echo.py").write_text(docs_block("# rtlab_echo.py"))
    (project / "pyproject.toml").write_text(docs_block("# pyproject.toml"))
    # The page's test sits beside the module, as in a reader's folder: setuptools must not
    # refuse two top-level modules.
    (project / "test_rtlab_echo.py").write_text(docs_block("# test_rtlab_echo.py"))
    site = root / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--quiet", "--target", str(site), str(project)]  # fmt: skip
    result = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def run_python(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    env.pop("RTLAB_LOAD_PLUGINS", None)
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)


def test_rtlab_plugins_lists_the_tutorial_plugin_and_its_backend(site):
    result = run_python(site, "-m", "rtlab", "plugins")
    assert result.returncode == 0, result.stderr
    records = {record["name"]: record for record in json.loads(result.stdout)}
    assert records["echo"]["version"] == "0.1.0"
    assert records["echo"]["registered"] == {"backends": ["echo"]}
    assert records["echo"]["rejected"] == []


def test_the_tutorial_backend_passes_check_backend(site):
    script = textwrap.dedent(
        """
        from rtlab.testing import check_backend
        from rtlab_echo import EchoBackend

        print(check_backend(EchoBackend, options={"word": "hi"}, expect=["hi"]))
        """
    )
    result = run_python(site, "-c", script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 10 rtlab backend checks passed" in result.stdout
    assert "registers as backend 'echo' (plugin 'echo')" in result.stdout  # the installed one
