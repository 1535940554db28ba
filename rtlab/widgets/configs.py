"""The configurations a panel is given, as checked :class:`~rtlab.config.StreamConfig` objects."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..config import DEFAULT_DECODER, KINDS, StreamConfig, parse_value
from ..errors import InvalidOption

__all__ = ["as_config", "check_startable", "cost_model_for", "in_panel_words", "label_of", "min_chunk_of", "option_text"]


def as_config(entry: StreamConfig | str | Mapping[str, Any] | None) -> StreamConfig:
    """A validated configuration from a StreamConfig, ``"backend=test,min_chunk=0.5"``
    (:meth:`StreamConfig.parse`), a backend name alone (``"test"``), a flat mapping
    (:meth:`StreamConfig.from_mapping`) or None (the defaults). Raises what :meth:`StreamConfig.validate` raises: one line that
    names the plugin, the option and what it accepts, with the fix worded as a panel's
    configuration is written (``backend=NAME`` where the CLI says ``--backend NAME``)."""
    try:
        if entry is None:
            return StreamConfig().validate()
        if isinstance(entry, StreamConfig):
            return entry.validate()
        if isinstance(entry, str):  # "backend=test,min_chunk=0.5", or a backend name alone
            return StreamConfig.parse(entry) if "=" in entry else StreamConfig(backend=entry).validate()
        if isinstance(entry, Mapping):
            return StreamConfig.from_mapping(entry)
    except InvalidOption as error:
        worded = in_panel_words(str(error))
        if worded == str(error):
            raise
        raise InvalidOption(worded) from None
    raise TypeError(
        f"a configuration is a StreamConfig, a 'KEY=VALUE,...' string, a backend name or a mapping, "
        f"not {type(entry).__name__}"
    )


def check_startable(config: StreamConfig) -> None:
    """Check ``config`` as a stream checks itself when it starts, beyond what
    :meth:`StreamConfig.validate` can check without a model: the backend's model loads (the
    shared instance a run uses, so the run does not load it again; a model that is not
    there, a device or compute type this machine lacks fail here), the loaded model
    transcribes the ``language`` and the policy builds on it (options and capabilities
    checked against the model): :func:`~rtlab.core.startup.build_policy`, the function a
    processor's :meth:`~rtlab.core.processor.AudioProcessor.create_tasks` calls. Blocking:
    call it off the event loop. Raises what the run would."""
    from ..backends import ensure_loaded
    from ..core.instances import get_backend
    from ..core.startup import build_policy

    build_policy(config, ensure_loaded(get_backend(config)))


# A configuration's fields as the CLI's flags name them in a fix ("use --backend NAME"), and
# the panels' cost_model argument ("then pass --cost-model FILE").
_CLI_FIELD = re.compile(r"--(backend|model|policy|decoder|language) (?=[\w.:/-])")
# A shell command quoted in a message ("rtlab calibrate --backend B ..., then ..."): its
# flags are the shell's, left as they are.
_COMMAND = re.compile(r"\brtlab [a-z]+\b[^,;]*")


def in_panel_words(message: str) -> str:
    """``message`` (an error shared with the CLI) with each ``--backend NAME`` written as a
    panel's configuration and editor take it, ``backend=NAME``, and ``--cost-model FILE``
    as a panel's argument, ``cost_model='FILE'``; the flags of a command the message quotes
    (``rtlab calibrate ...``) stay as the shell takes them."""
    pieces, start = [], 0
    for command in _COMMAND.finditer(message):
        pieces += [_as_fields(message[start : command.start()]), command.group()]
        start = command.end()
    return "".join([*pieces, _as_fields(message[start:])])


def _as_fields(text: str) -> str:
    text = re.sub(r"--cost-model ([^\s,;]+)", r"cost_model='\1'", text)
    return _CLI_FIELD.sub(r"\1=", text)


def cost_model_for(clock: str, cost_model: Any) -> Any:
    """The ``modeled`` clock's :class:`~rtlab.core.costs.CostModel` (``cost_model`` as given,
    or loaded from its file; None: the one rtlab ships), loaded once for a whole run; None
    on the other clocks, where a ``cost_model`` given is refused rather than left unused.
    Raises :class:`~rtlab.core.costs.CostModelError` in one line."""
    from ..core.costs import cost_model_for_clock

    return cost_model_for_clock(clock, cost_model, option="cost_model", modeled="clock='modeled'")


def label_of(entry: Any) -> str:
    """A label for a configuration that may not parse (shown next to its error)."""
    if isinstance(entry, StreamConfig):
        return entry.label
    return str(entry) if entry is not None else StreamConfig().label


def min_chunk_of(config: StreamConfig) -> float:
    """The ``min_chunk`` the stream's policy runs with (its option, else its default, else 1 s)."""
    from ..registry import get_registry

    value = config.policy_options.get("min_chunk")
    if value is None:
        try:
            value = get_registry().accepted_options("policy", config.policy).get("min_chunk")
        except Exception:  # noqa: BLE001 - an unknown policy fails elsewhere, with its own message
            value = None
    return float(value) if isinstance(value, (int, float)) and value > 0 else 1.0


def _value_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    # The typing rule must read the text back as the same value ("true" the string is quoted).
    return text if parse_value(text) == value and "," not in text else json.dumps(value)


def option_text(config: StreamConfig) -> str:
    """The options of ``config`` as ``KEY=VALUE, ...`` (what the panel's editor shows);
    :meth:`StreamConfig.from_mapping` reads them back."""
    from ..registry import get_registry

    registry = get_registry()
    accepts = {kind: set(registry.accepted_options(kind, getattr(config, kind))) for kind in KINDS}
    pairs = []
    for kind in KINDS:
        for key, value in sorted(getattr(config, f"{kind}_options").items()):
            # Prefixed only where two of the stream's plugins take the same option name.
            shared = sum(key in accepted for accepted in accepts.values()) > 1
            pairs.append(f"{kind + '.' if shared else ''}{key}={_value_text(value)}")
    if config.decoder != DEFAULT_DECODER:
        pairs.append(f"decoder={config.decoder}")
    if config.language:
        pairs.append(f"language={config.language}")
    if config.name:
        pairs.append(f"name={_value_text(config.name)}")
    return ", ".join(pairs)
