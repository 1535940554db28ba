"""The ComparePanel's configuration editor: dropdowns filled from the plugin registry."""

from __future__ import annotations

import asyncio
import html
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..config import DEFAULT_BACKEND, DEFAULT_DECODER, DEFAULT_POLICY, parse_pairs, split_pairs
from .configs import as_config, check_startable, in_panel_words, option_text
from .state import one_line

if TYPE_CHECKING:
    from .compare import ComparePanel

__all__ = ["ConfigEditor"]

NEW = -1
ERROR_COLOR, PENDING_COLOR, READY_COLOR = "#c62828", "#666", "#2e7d32"


class ConfigEditor:
    """Add a configuration, or change or remove one, before a run.

    ``column`` picks a column (or a new one); ``backend`` and ``policy`` list what the
    installed plugins registered; ``model`` is free text (empty: the backend's default);
    ``options`` takes ``KEY=VALUE, ...`` as ``rtlab bench --config`` does (any of the
    plugins' options, ``language``, ``name``). The options each plugin accepts are listed
    under the fields. A configuration is applied once it is checked as a run checks it
    before streaming (:func:`~rtlab.widgets.configs.check_startable`: its model is loaded,
    off the event loop, and must transcribe its ``language``); one that does not pass is
    not applied, and its one-line error shows instead of "ready".
    """

    def __init__(self, panel: ComparePanel) -> None:
        from ..registry import get_registry

        self.panel = panel
        self.registry = get_registry()
        backends, policies = self.registry.names("backend"), self.registry.names("policy")
        self.target = widgets.Dropdown(description="column", layout=widgets.Layout(width="260px"))
        self.backend = widgets.Dropdown(
            options=backends, value=DEFAULT_BACKEND if DEFAULT_BACKEND in backends else backends[0],
            description="backend", layout=widgets.Layout(width="240px"),
        )  # fmt: skip
        self.model = widgets.Text(description="model", layout=widgets.Layout(width="220px"))
        self.policy = widgets.Dropdown(
            options=policies, value=DEFAULT_POLICY if DEFAULT_POLICY in policies else policies[0],
            description="policy", layout=widgets.Layout(width="240px"),
        )  # fmt: skip
        self.options = widgets.Text(description="options", placeholder="min_chunk=0.5, beam_size=5",
                                    layout=widgets.Layout(width="420px"))  # fmt: skip
        self.apply = widgets.Button(description="Add", icon="plus")
        self.delete = widgets.Button(description="Remove", icon="trash", disabled=True)
        self.accepts = widgets.HTML()
        self.message = widgets.HTML()
        self.apply.on_click(lambda _: self.submit())
        self.delete.on_click(lambda _: self.remove())
        self.target.observe(lambda _: self.load(), names="value")
        for field in (self.backend, self.policy):
            field.observe(lambda _: self.describe_options(), names="value")
        self.box = widgets.VBox([
            widgets.HBox([self.target, self.backend, self.model, self.policy]),
            widgets.HBox([self.options, self.apply, self.delete]),
            self.accepts, self.message,
        ])  # fmt: skip
        self.box.add_class("rtlab-config-editor")
        self._enabled = True  # what the panel allows: editing between runs
        #: The check of the configuration being applied, while its model loads (None otherwise).
        self.checking: asyncio.Future | None = None
        self.refresh_targets()

    def refresh_targets(self) -> None:
        """The column dropdown lists the panel's columns (after a change)."""
        choices = [("new configuration", NEW)]
        choices += [(f"{n}: {c.state.label}", n - 1) for n, c in enumerate(self.panel.columns, start=1)]
        self.target.options = choices
        self.target.value = NEW
        self.load()

    def set_enabled(self, enabled: bool) -> None:
        """Editing is possible only between runs, and not while a configuration is checked."""
        self._enabled = enabled
        busy = not enabled or self.checking is not None
        for field in (self.target, self.backend, self.model, self.policy, self.options, self.apply):
            field.disabled = busy
        self.delete.disabled = busy or self.target.value == NEW

    def load(self) -> None:
        """Fill the fields from the chosen column (or clear them for a new one)."""
        index = self.target.value
        self.apply.description = "Add" if index in (None, NEW) else "Apply"
        self.delete.disabled = index in (None, NEW)
        self.message.value = ""
        if index in (None, NEW):
            self.model.value, self.options.value = "", ""
        else:
            column = self.panel.columns[index]
            config = column.config
            if config is None:  # it did not parse: show it as given, to be fixed
                self.options.value = str(column.entry)
            else:
                if config.backend in self.backend.options:
                    self.backend.value = config.backend
                if config.policy in self.policy.options:
                    self.policy.value = config.policy
                self.model.value = config.model or ""
                self.options.value = option_text(config)
        self.describe_options()

    def describe_options(self) -> None:
        """List what the chosen backend and policy accept (with their defaults)."""
        lines = []
        default_model = self.registry.accepted_options("backend", self.backend.value).get("model")
        self.model.placeholder = f"default: {default_model}" if default_model else ""
        for kind, name in (("backend", self.backend.value), ("policy", self.policy.value)):
            accepted = self.registry.accepted_options(kind, name)
            listed = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "no options"
            lines.append(f"<b>{html.escape(name)}</b> accepts: {html.escape(listed)}")
        self.accepts.value = f"<div style='color:#666; font-size:0.85em'>{'<br>'.join(lines)}</div>"

    def mapping(self) -> dict[str, Any]:
        """The fields as one flat mapping (:meth:`StreamConfig.from_mapping` reads it)."""
        flat: dict[str, Any] = {"backend": self.backend.value, "policy": self.policy.value}
        if self.model.value.strip():
            flat["model"] = self.model.value.strip()
        text = self.options.value.strip()
        if text:
            flat.update(parse_pairs([p for p in split_pairs(text) if p.strip()], source="options"))
        return flat

    def submit(self) -> None:
        """Add the configuration, or change the chosen column's, once it is checked (see the
        class); a bad one shows its error. In an event loop (a notebook) the check loads the
        model in a worker thread and :attr:`checking` is set meanwhile; without one it blocks."""
        if self.checking is not None:
            return
        try:
            config = as_config(self.mapping())
        except Exception as error:  # noqa: BLE001 - shown under the fields, one line
            self._say(ERROR_COLOR, one_line(error))
            return
        index = self.target.value
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a script: nothing else to keep going meanwhile
            self._apply(config, index, _failure(check_startable, config))
            return
        self._say(PENDING_COLOR, f"{config.label}: loading its model to check it …")
        self.checking = loop.run_in_executor(None, _failure, check_startable, config)
        self.set_enabled(self._enabled)
        self.checking.add_done_callback(lambda done: self._checked(config, index, done))

    def _checked(self, config: Any, index: int | None, done: asyncio.Future) -> None:
        self.checking = None
        self.set_enabled(self._enabled)
        self._apply(config, index, "the check was cancelled" if done.cancelled() else done.result())

    def _apply(self, config: Any, index: int | None, failure: BaseException | str | None) -> None:
        """Apply a checked configuration, or show why it is not applied."""
        if failure is None:
            try:
                if index in (None, NEW):
                    self.panel.add(config)
                else:
                    self.panel.replace(index, config)
            except Exception as error:  # noqa: BLE001 - shown under the fields, one line
                failure = error
        if failure is not None:
            self._say(ERROR_COLOR, in_panel_words(one_line(failure)))
        elif config.decoder != DEFAULT_DECODER or config.decoder_options:
            self._say(READY_COLOR, f"{config.label}: ready; its decoder {config.decoder!r} and decoder options are "
                                   f"not used here: the panel decodes the audio once and feeds every stream raw PCM")
        else:
            self._say(READY_COLOR, f"{config.label}: ready")

    def _say(self, color: str, text: str) -> None:
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def remove(self) -> None:
        """Remove the chosen column."""
        index = self.target.value
        if index in (None, NEW):
            return
        try:
            self.panel.remove(index)
        except Exception as error:  # noqa: BLE001
            self._say(ERROR_COLOR, one_line(error))


def _failure(check: Any, config: Any) -> BaseException | None:
    """What ``check(config)`` raised, or None: a worker thread's error becomes a message."""
    try:
        check(config)
    except Exception as error:  # noqa: BLE001 - shown under the fields, one line
        return error
    return None
