"""What every panel shares: how it shows itself, and the life of a run.

A panel shows ipywidgets inside Jupyter and a readable text form anywhere else (a shell,
a script, or ``view="text"``). Its run is one asyncio task on the running event loop (the
kernel's, in a notebook): :meth:`Panel.start` returns at once and the kernel stays free for
other cells; :meth:`Panel.stop` cancels the task, whose cleanup ends every stream and its
FFmpeg process; ``await`` :meth:`Panel.wait` for the end. Redraws go through a
:class:`~rtlab.widgets.throttle.Throttle`.

A notebook cell that runs again while the panels it made are streaming stops them first:
panels are remembered by the cell that made them (its id, which JupyterLab sends with
every execution, or else its code) and by that execution of it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ..eval.bench import BenchRun
from .throttle import Throttle

__all__ = ["Panel", "VIEWS", "in_jupyter"]

#: How a panel shows itself: ``auto`` is ``widgets`` in a Jupyter kernel with ipywidgets
#: installed, ``text`` anywhere else.
VIEWS = ("auto", "widgets", "text")

# Per notebook cell: the execution that made panels last, those panels, and the future
# that is done once the panels of the execution before it have stopped.
_by_cell: dict[str, tuple[str | None, list[Panel], asyncio.Future | None]] = {}


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def in_jupyter() -> bool:
    """Whether this code runs in a Jupyter kernel (not a plain shell or script)."""
    return getattr(_shell(), "kernel", None) is not None


def _resolve_view(view: str) -> str:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, not {view!r}")
    if view != "auto":
        return view
    if not in_jupyter():
        return "text"
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "text"
    return "widgets"


def _execute_request() -> dict[str, Any] | None:
    """The kernel's execute_request being run now, or None."""
    kernel = getattr(_shell(), "kernel", None)
    try:
        parent = kernel.get_parent() if kernel is not None else None
    except Exception:  # noqa: BLE001 - an ipykernel without get_parent: no re-run detection
        return None
    if not parent or parent.get("header", {}).get("msg_type") != "execute_request":
        return None
    return parent


def _execution_id() -> str | None:
    """The cell execution running now (its request's message id), or None outside one."""
    parent = _execute_request()
    return parent["header"].get("msg_id") if parent else None


def cell_key() -> str | None:
    """The notebook cell executing now, or None outside a kernel's cell execution."""
    parent = _execute_request()
    if parent is None:
        return None
    cell_id = (parent.get("metadata") or {}).get("cellId")
    return f"cell {cell_id}" if cell_id else "code " + str(parent.get("content", {}).get("code", ""))


class Panel:
    """Base class of :class:`~rtlab.widgets.LivePanel` and :class:`~rtlab.widgets.ComparePanel`.

    Subclasses implement ``_run()`` (the streaming, on the event loop), ``_prepare()``
    (reset the view before a run), ``_redraw()`` (widgets from state), ``_build()`` (the
    widget tree), ``_mark_stopped()`` and ``describe()`` (the text form).
    """

    def __init__(self, *, view: str = "auto", max_redraws_per_second: float = 10.0) -> None:
        self.view = _resolve_view(view)
        #: The scored result of the last run that ended: a one-file ``rtlab bench`` run.
        self.bench: BenchRun | None = None
        # The streams behind ``bench``, with their events (for the commit timeline).
        self._scored: list[Any] = []
        #: Why the last run failed as a whole (a bug, not a stream's error), if it did.
        self.error: str | None = None
        self._throttle = Throttle(self._redraw_if_shown, max_redraws_per_second)
        self._task: asyncio.Task | None = None
        # Runs started and not ended yet: a stopped one goes on until its streams are released.
        self._runs: set[asyncio.Task] = set()
        self._active = False
        self._stop_requested = False
        self._predecessor: asyncio.Future | None = None
        self._widget: Any = None
        self._claim_cell()

    # -- showing ------------------------------------------------------------------

    @property
    def widget(self) -> Any:
        """The ipywidgets box (built on first use, and again once closed); ``None`` in the
        text view."""
        if self.view != "widgets":
            return None
        if self._widget is None or self._widget.comm is None:  # not built yet, or closed: a new one
            self._widget = self._build()
            self._redraw()
        return self._widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if self.view == "widgets":
            return self.widget._repr_mimebundle_(include=include, exclude=exclude)
        return {"text/plain": self.describe()}

    def __repr__(self) -> str:
        return self.describe()

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """The panel as readable text."""
        raise NotImplementedError

    def _request_redraw(self) -> None:
        if self.view == "widgets":
            self._throttle.request()

    def _redraw_if_shown(self) -> None:
        if self._widget is not None:
            self._redraw()

    @property
    def redraws(self) -> int:
        """How many times the widgets were redrawn (at most 10 a second by default)."""
        return self._throttle.redraws

    # -- running ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._active

    def start(self) -> asyncio.Task:
        """Start a run on the running event loop and return its task at once (in a notebook,
        the kernel's loop: other cells run meanwhile). Starting a running panel returns the
        run in progress; starting one that is being stopped (``panel.stop(); panel.start()``)
        returns a new run, which begins once the stopped one has ended. Outside an event
        loop use :meth:`run`."""
        if self.running and not self._stop_requested:
            return self._task
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "no event loop is running here: in a script call panel.run(); in a notebook panel.start()"
            ) from None
        # A stopped run still ends its streams and marks its state: the new one resets the
        # panel only once it has ended, so that nothing of the old run lands in the new one.
        ending = self._unended_runs()
        self._stop_requested = False
        self._active = True
        if not ending:
            self._begin()
        self._task = loop.create_task(self._run_to_end(ending), name=f"rtlab-{type(self).__name__}")
        self._runs.add(self._task)
        self._task.add_done_callback(self._task_ended)
        return self._task

    def _unended_runs(self) -> set[asyncio.Task]:
        """The runs started and not ended yet (a stopped one ends once its streams are released)."""
        return {run for run in self._runs if not run.done()}

    def _begin(self) -> None:
        """Clear the last run's results and reset the view for a new run."""
        self.error = None
        self.bench = None
        self._scored = []
        self._prepare()
        self._request_redraw()

    def stop(self) -> asyncio.Future | None:
        """End every stream of the run in progress cleanly (no FFmpeg left); returns a
        future that is done once everything is released (``await panel.stop()`` to wait),
        or None when nothing runs and no event loop does either. A run whose streams have
        all ended is scored to the end first, and keeps its results."""
        task = self._task
        if task is not None and not task.done() and self._active and not self._stop_requested:
            self._stop_requested = True
            task.cancel()
        ending = self._unended_runs()  # with runs stopped before it
        if ending:
            return asyncio.ensure_future(_ended(*ending))
        try:
            done = asyncio.get_running_loop().create_future()
        except RuntimeError:
            return None
        done.set_result(None)
        return done

    async def wait(self) -> None:
        """Return once the run in progress (if any) is over: finished, stopped or failed.
        Interrupting the wait leaves the run going (stop it with :meth:`stop`)."""
        ending = self._unended_runs()
        if ending:
            await _ended(*ending)

    def run(self) -> None:
        """Blocking run for scripts and shells: start, print the text form, wait for the end."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "an event loop is running here (a notebook?): call panel.start(), then 'await panel.wait()'"
            )

        async def main() -> None:
            self.start()
            await self.wait()

        asyncio.run(main())

    async def _run_to_end(self, ending: set[asyncio.Task]) -> None:
        try:
            if ending:
                await _outlive(ending)
                self._begin()
            predecessor, self._predecessor = self._predecessor, None
            if predecessor is not None:
                await asyncio.wait({predecessor})  # not cancelled with this run: others wait on it too
            await self._run()
        except asyncio.CancelledError:
            if not self._stop_requested and not self._superseded():
                raise
            asyncio.current_task().uncancel()  # stopped on purpose: the run ends normally
            self._mark_stopped()
        except Exception as error:  # noqa: BLE001 - a background task has no caller to raise to
            from .state import one_line

            logging.getLogger(__name__).exception("%s failed", type(self).__name__)
            self.error = one_line(error)
            self._fail_run(self.error)
        finally:
            if not self._superseded():  # a run started meanwhile is running now
                self._active = False
                self._on_end()
            self._request_redraw()
        if self._throttle.pending:
            await self._throttle.settle()

    def _superseded(self) -> bool:
        """Whether the run of the current task was stopped and another one started since."""
        return asyncio.current_task() is not self._task

    def _task_ended(self, task: asyncio.Task) -> None:
        self._runs.discard(task)
        if task.cancelled() and task is not self._task:  # stopped before it ran; a new run waits for it
            self._mark_stopped()
        elif task.cancelled():  # cancelled before it ran, or by someone other than stop()
            self._active = False
            self._mark_stopped()
            self._on_end()
            self._throttle.cancel()
            self._redraw_if_shown()

    def _claim_cell(self) -> None:
        key = cell_key()
        if key is None:
            return
        execution = _execution_id()
        made_by, panels, stopping = _by_cell.get(key, (None, [], None))
        if execution is None or execution != made_by:  # the cell runs again: stop all it made before
            running = [panel.stop() for panel in panels if panel.running]
            stopping = asyncio.gather(*running) if running else None
            panels = []
        _by_cell[key] = (execution, [*panels, self], stopping)
        self._predecessor = stopping

    # -- for subclasses -------------------------------------------------------------

    async def _run(self) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Reset the view for a new run (called synchronously by :meth:`start`)."""

    def _build(self) -> Any:
        raise NotImplementedError

    def _redraw(self) -> None:
        raise NotImplementedError

    def _mark_stopped(self) -> None:
        """The run was stopped: mark the streams that had not ended."""

    def _fail_run(self, message: str) -> None:
        """The run failed as a whole: show ``message``."""

    def _on_end(self) -> None:
        """The run is over (buttons back to their idle state)."""

    def _results_or_raise(self) -> BenchRun:
        if self.bench is not None:
            return self.bench
        if self.running:
            raise RuntimeError("the panel is still running: 'await panel.wait()' first")
        if self.error:
            raise RuntimeError(f"no results: the last run failed: {self.error}")
        if self._stop_requested:
            raise RuntimeError("no results: the last run was stopped before the end")
        raise RuntimeError("no results yet: start the panel (panel.start(), or panel.run() in a script)")

    @property
    def results(self) -> Any:
        """The last run's results as a pandas DataFrame: one row per stream that ran, the
        columns of ``rtlab bench``'s stream records (``config.name``, ``hypothesis``,
        ``wer.value``, ``latency.median``, ``latency.p95``, ``first_text_latency``,
        ``rtf``, ``error`` ...), nested fields dotted (:func:`rtlab.eval.results.to_dataframe`)."""
        from ..eval.results import to_dataframe

        return to_dataframe(self._results_or_raise().streams)

    def save(self, out_dir: Any, plots: bool = True) -> list[Any]:
        """Write the last run's ``results.jsonl`` (the format of ``rtlab bench``: a run line,
        one line per stream, one per configuration) and, with ``plots``, its PNG plots into
        ``out_dir``: ``rtlab bench``'s three and ``timeline.png``, when each word was said
        and committed, a lane per stream (:func:`rtlab.eval.plots.plot_commit_timeline`);
        returns the paths written."""
        run = self._results_or_raise()
        if not plots:
            return run.write(out_dir, plots=False)
        from .charts import keep_pyplot_backend

        from ..eval.plots import TIMELINE, plot_commit_timeline

        with keep_pyplot_backend():
            written = run.write(out_dir, plots=True)
            timeline = plot_commit_timeline(self._timeline_lanes(), Path(out_dir) / TIMELINE, clock=run.clock)
            return [*written, timeline]

    def _timeline_lanes(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """The scored streams as the commit timeline's lanes: ``(configuration, events)``."""
        return [(stream.config.label, stream.events) for stream in self._scored]


async def _ended(*tasks: asyncio.Task) -> None:
    # asyncio.wait neither raises the tasks' outcome nor cancels the tasks when the waiter is.
    await asyncio.wait(tasks)


async def _outlive(tasks: set[asyncio.Task]) -> None:
    """Return once ``tasks`` have ended, even if cancelled meanwhile (then re-raise): a run
    stopped while it waits for the runs stopped before it still ends after them."""
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        await asyncio.wait(tasks)
        raise
