"""Notebook 01 in a real JupyterLab, in Debian's headless Chromium driven by Playwright: run
every cell, wait until the ComparePanel shows transcript text in every column, read it from
the page, and save a screenshot under ``artifacts/jupyterlab/`` (git-ignored).

JupyterLab runs on 127.0.0.1 with a token, on a free port, with temporary root, config,
data and runtime folders, no browser of its own and no update checks; it is shut down (and
its kernels with it) whatever happens, and the test fails if a process it started is left.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from rtlab.registry import get_registry
from rtlab.testing import tone_words, wav_bytes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get("RTLAB_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "jupyterlab"
NOTEBOOK = "01_quickstart.ipynb"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def words_of(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


class JupyterLab:
    """A JupyterLab server in its own process group, stopped by :meth:`shutdown`."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.root = folder / "root"
        for sub in ("root", "config", "data", "runtime"):
            (folder / sub).mkdir()
        # No "would you like news?" prompt, and no fetching of it.
        settings = folder / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        env = {
            **env, "JUPYTER_CONFIG_DIR": str(folder / "config"), "JUPYTER_DATA_DIR": str(folder / "data"),
            "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
        }  # fmt: skip
        self.log = (folder / "jupyterlab.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.news_url=", "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True",
             "--ServerApp.terminals_enabled=False", "--ServerApp.allow_root=True"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_until_up(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"JupyterLab exited: see {self.log.name}"
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"JupyterLab did not answer in {timeout} s: see {self.log.name}")

    def shutdown(self) -> list[str]:
        """Stop the server (it stops its kernels), then anything left of its process group;
        returns what had to be killed."""
        try:
            family = [self.process_info()] + self.process_info().children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        if self.process.poll() is None:
            with_suppressed(lambda: urllib.request.urlopen(
                urllib.request.Request(f"{self.url}/api/shutdown?token={self.token}", method="POST"), timeout=5))
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        _, alive = psutil.wait_procs(family, timeout=10)
        left = []
        for process in alive:
            with_suppressed(lambda p=process: left.append(" ".join(p.cmdline()[:3])))
            with_suppressed(process.kill)
        self.log.close()
        return left

    def process_info(self) -> psutil.Process:
        return psutil.Process(self.process.pid)


def with_suppressed(action) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - best effort during shutdown
        pass


def chromium_or_skip() -> str:
    pytest.importorskip("jupyterlab", reason="pip install -e '.[test]' (jupyterlab)")
    pytest.importorskip("playwright.async_api", reason="pip install playwright (no browser download needed)")
    if not (shutil.which(CHROMIUM) or os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set RTLAB_CHROMIUM")
    return CHROMIUM


async def test_quickstart_notebook_runs_in_jupyterlab_and_shows_text_in_every_column(tmp_path):
    chromium = chromium_or_skip()
    from playwright.async_api import async_playwright

    # The real default, faster-whisper's embedded tiny.en on the fox clip, when installed.
    if "faster-whisper" in get_registry().names("backend"):
        audio, backend, expected = ROOT / "tests" / "data" / "fox.ogg", "faster-whisper", "quick"
    else:
        audio, backend, expected = tmp_path / "tones.wav", "test", "alpha bravo"
        audio.write_bytes(wav_bytes(tone_words("alpha bravo charlie delta")[0]))
    env = {**os.environ, "RTLAB_NOTEBOOK_AUDIO": str(audio), "RTLAB_NOTEBOOK_BACKEND": backend,
           "RTLAB_NOTEBOOK_OUT": str(tmp_path / "out")}  # fmt: skip
    lab = JupyterLab(tmp_path, env)
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, lab.root / NOTEBOOK)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "01_quickstart.png"
    print(f"screenshot: {screenshot}")
    left: list[str] = []
    try:
        lab.wait_until_up()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1300})
                await page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?reset&token={lab.token}")
                await page.wait_for_function("window.jupyterapp && window.jupyterapp.shell", timeout=90_000)
                await page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
                # The kernel is up once the notebook's kernel status says so.
                await page.wait_for_function(
                    "(() => { const w = window.jupyterapp.shell.currentWidget;"
                    " return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                    " && w.sessionContext.session.kernel.status === 'idle'; })()",
                    timeout=90_000,
                )  # fmt: skip
                await page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
                columns = ".rtlab-compare-panel .rtlab-column .rtlab-committed"
                await page.wait_for_function(
                    "(selector) => { const cols = [...document.querySelectorAll(selector)];"
                    " return cols.length === 2 && cols.every(c => c.textContent.trim().length > 0); }",
                    arg=columns, timeout=120_000,
                )  # fmt: skip
                texts = [words_of(t) for t in await page.locator(columns).all_text_contents()]
                # Then the whole notebook: the results table, and the LivePanel's text.
                await page.wait_for_selector(".rtlab-compare-panel .rtlab-results", timeout=120_000)
                await page.wait_for_function(
                    "() => { const t = document.querySelector('.rtlab-live-panel .rtlab-results');"
                    " const busy = [...document.querySelectorAll('.jp-InputArea-prompt')]"
                    ".some(p => p.textContent.includes('*'));"
                    " return t !== null && !busy; }",
                    timeout=120_000,
                )  # fmt: skip
                await page.evaluate("document.querySelector('.rtlab-compare-panel').scrollIntoView({block: 'start'})")
                await page.screenshot(path=str(screenshot))
                final = [words_of(t) for t in await page.locator(columns).all_text_contents()]
                outputs = await page.locator(".jp-OutputArea-output").all_text_contents()
            finally:
                await browser.close()
    finally:
        left = lab.shutdown()
    assert not left, f"processes left after JupyterLab shut down: {left}"
    print("columns:", texts)
    assert len(texts) == 2 and all(texts)
    assert all(expected in text for text in final), final
    assert not any("Traceback" in o for o in outputs), "a cell failed: see the screenshot"
    assert (tmp_path / "out" / "01_quickstart" / "results.jsonl").exists()
