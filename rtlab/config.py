"""One stream configuration, taken by every entry point: Python, CLI, server, bench, widgets.

A :class:`StreamConfig` names the backend (and its model and options), the streaming policy
(and its options), the decoder (and its options) and the language of one stream. It is
defined here and nowhere else; so are the one rule that types ``KEY=VALUE`` text
(:func:`parse_value`), the one check against what the plugins accept
(:meth:`StreamConfig.validate`) and the one key under which a loaded model is shared
(:attr:`StreamConfig.model_key`). A new option is added in one place: the plugin's
``__init__``.

>>> config = StreamConfig.parse("backend=test,min_chunk=0.5")
>>> config.policy_options
{'min_chunk': 0.5}
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidOption
from .languages import language_code

DEFAULT_BACKEND = "faster-whisper"
DEFAULT_POLICY = "local-agreement"
DEFAULT_DECODER = "ffmpeg"

#: Plugin kinds whose options a configuration carries, in the order they are reported.
KINDS = ("backend", "policy", "decoder")

#: Fields that name things rather than carry plugin options.
_NAMES = ("name", "backend", "model", "policy", "decoder", "language")

__all__ = ["DEFAULT_BACKEND", "DEFAULT_DECODER", "DEFAULT_POLICY", "StreamConfig", "parse_pairs", "parse_value", "split_pairs"]


def parse_value(text: str) -> Any:
    """The value ``text`` stands for in ``KEY=VALUE``: the one typing rule of rtlab.

    ``true`` and ``false`` in any case are booleans and ``null`` is None; anything else
    JSON can read is what JSON reads (``1`` an int, ``0.5`` a float, ``[0, 0.2]`` a list,
    ``"true"`` the string); everything else is the text itself, stripped (``tiny.en``).
    """
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return stripped


def split_pairs(text: str) -> list[str]:
    """``"KEY=VALUE,KEY=VALUE"`` split at its commas, except those inside a value's
    brackets, braces or double quotes (``temperature=[0, 0.2],min_chunk=1`` is two pairs).
    Blank items stay, for :func:`parse_pairs` to refuse (``a=1,,b=2`` is likely a typo)."""
    items, current, depth, quoted, escaped = [], [], 0, False, False
    for char in text:
        if quoted:
            quoted = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            quoted = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return items


def parse_pairs(pairs: Iterable[str], *, source: str = "option") -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` as a dict, each value typed by :func:`parse_value`.

    Raises :class:`~rtlab.errors.InvalidOption` (naming ``source``, e.g. ``--policy-option``)
    for an item without ``=`` or without a key, and for a key given twice.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidOption(f"{source}: expected KEY=VALUE, got {pair!r}")
        if key in options:
            raise InvalidOption(f"{source}: {key!r} is given twice")
        options[key] = parse_value(value)
    return options


@dataclass(frozen=True)
class StreamConfig:
    """How one stream is transcribed: backend, model, policy, decoder, their options, language.

    ``model=None`` and ``language=None`` leave the backend's defaults (``en`` for ``.en``
    models, detected otherwise). A language may be given by name: ``"German"`` is kept as
    ``"de"`` (:func:`rtlab.languages.language_code`). ``name`` labels the configuration in tables and plots
    (default: :attr:`label`, built from the rest). Every field has a default, so
    ``StreamConfig()`` is faster-whisper's embedded tiny.en under LocalAgreement-2.
    """

    backend: str = DEFAULT_BACKEND
    model: str | None = None
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    policy: str = DEFAULT_POLICY
    policy_options: Mapping[str, Any] = field(default_factory=dict)
    decoder: str = DEFAULT_DECODER
    decoder_options: Mapping[str, Any] = field(default_factory=dict)
    language: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for attribute in ("backend", "policy", "decoder"):
            value = getattr(self, attribute)
            if not isinstance(value, str) or not value.strip():
                raise InvalidOption(f"{attribute} must be a registered {attribute} name, not {value!r}")
        for attribute in ("model", "language", "name"):
            value = getattr(self, attribute)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidOption(f"{attribute} must be a non-empty string or None, not {value!r}")
        if self.language is not None:  # "German" and "DE" mean "de"
            object.__setattr__(self, "language", language_code(self.language))
        for kind in KINDS:
            options = getattr(self, f"{kind}_options")
            if not isinstance(options, Mapping):
                raise InvalidOption(f"{kind}_options must be a mapping of option names to values, not {options!r}")
            # A private copy: a caller's dict changed later must not change this configuration.
            object.__setattr__(self, f"{kind}_options", dict(options))

    # -- building ----------------------------------------------------------------------

    @classmethod
    def coerce(cls, config: StreamConfig | str | None = None, **fields: Any) -> StreamConfig:
        """A configuration from what a caller passed: a StreamConfig, a backend name, a
        ``"KEY=VALUE,..."`` string (:meth:`parse`, as the panels and ``rtlab bench`` take
        it), or nothing, with ``fields`` (StreamConfig's own field names) on top."""
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(
                f"unknown stream setting {unknown[0]!r}; StreamConfig fields are: "
                + ", ".join(f.name for f in dataclasses.fields(cls))
            )
        if config is None:
            return cls(**fields)
        if isinstance(config, str) and "=" in config:
            config = cls.parse(config)
        elif isinstance(config, str):
            return cls(backend=config, **fields)
        if isinstance(config, StreamConfig):
            return config.replace(**fields) if fields else config
        raise TypeError(f"expected a StreamConfig, a backend name or 'KEY=VALUE,...', got {type(config).__name__}")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> StreamConfig:
        """A configuration from one flat mapping, e.g. ``{"backend": "faster-whisper",
        "model": "tiny.en", "min_chunk": 0.5, "compute_type": "int8"}``.

        ``name``, ``backend``, ``model``, ``policy``, ``decoder`` and ``language`` are
        fields; ``backend.KEY``, ``policy.KEY`` and ``decoder.KEY`` go to that plugin; any
        other key goes to whichever of the three accepts it (prefix it when more than one
        does). :meth:`to_dict` writes this form. The result is validated.
        """
        from .registry import get_registry

        flat = dict(options)
        names = {key: flat.pop(key) for key in _NAMES if key in flat}
        config = cls(**names)
        registry = get_registry()
        # A backend's model is a field of its own, not one of its options.
        accepts = {kind: set(registry.accepted_options(kind, getattr(config, kind))) - {"model"} for kind in KINDS}
        routed: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        for key, value in flat.items():
            prefix, _, bare = key.rpartition(".")
            if prefix:
                if prefix not in KINDS:
                    raise InvalidOption(f"option {key!r}: prefix it with backend., policy. or decoder., not {prefix + '.'!r}")
                routed[prefix][bare] = value
                continue
            takers = [kind for kind in KINDS if key in accepts[kind]]
            if len(takers) > 1:
                raise InvalidOption(
                    f"option {key!r} is accepted by " + " and ".join(f"{k} {getattr(config, k)!r}" for k in takers)
                    + "; write " + " or ".join(f"{k}.{key}=..." for k in takers)
                )
            if not takers:
                described = "; ".join(
                    f"{kind} {getattr(config, kind)!r} accepts {', '.join(sorted(accepts[kind])) or 'no options'}"
                    for kind in KINDS
                )
                raise InvalidOption(f"option {key!r} is accepted by none of this stream's plugins: {described}")
            routed[takers[0]][key] = value
        return config.replace(**{f"{kind}_options": routed[kind] for kind in KINDS}).validate()

    @classmethod
    def parse(cls, text: str) -> StreamConfig:
        """A configuration from ``"backend=faster-whisper,model=tiny.en,min_chunk=0.5"``
        (comma-separated ``KEY=VALUE``, values typed by :func:`parse_value`, a comma inside
        a value's brackets or quotes part of it: ``temperature=[0, 0.2]``; see
        :meth:`from_mapping` for where keys go)."""
        if not text.strip():
            raise InvalidOption(
                f"empty configuration {text!r}: expected comma-separated KEY=VALUE, "
                f"e.g. backend=faster-whisper,model=tiny.en,min_chunk=1"
            )
        return cls.from_mapping(parse_pairs(split_pairs(text), source="configuration"))

    def replace(self, **changes: Any) -> StreamConfig:
        """A copy with ``changes`` (field names) applied."""
        return dataclasses.replace(self, **changes)

    # -- checking ----------------------------------------------------------------------

    def validate(self) -> StreamConfig:
        """Check the plugin names, option names and option values; returns ``self``.

        Names and options are checked against what the plugins registered and accept
        (:class:`~rtlab.errors.UnknownBackend`, ``UnknownPolicy``, ``UnknownDecoder``,
        :class:`~rtlab.errors.InvalidOption`). Values are checked by building a backend,
        a policy and a decoder that are thrown away (constructors are cheap: models load
        in ``Backend.load``, processes start in ``Decoder.start``).
        """
        from .registry import get_registry

        registry = get_registry()
        registry.check_options("backend", self.backend, self.backend_kwargs())
        registry.check_options("policy", self.policy, self.policy_options)
        registry.check_options("decoder", self.decoder, self.decoder_options)
        backend = registry.create("backend", self.backend, **self.backend_kwargs())
        registry.create("decoder", self.decoder, **self.decoder_options)
        try:
            registry.create("policy", self.policy, backend, language=self.language, **self.policy_options)
        except InvalidOption:
            raise
        except Exception:  # noqa: BLE001 - a policy that needs a loaded model: checked at start
            pass
        return self

    # -- derived -------------------------------------------------------------------------

    def backend_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the backend's constructor: its options and ``model``
        when set (None values left out, so that the backend's default applies)."""
        options = {k: v for k, v in self.backend_options.items() if v is not None}
        if self.model is not None:
            options["model"] = self.model
        return options

    @property
    def model_key(self) -> tuple:
        """The key of the shared backend instance (hence model) this stream uses: streams
        with the same backend, model and backend options share one loaded model."""
        return (self.backend, tuple(sorted((k, repr(v)) for k, v in self.backend_kwargs().items())))

    @property
    def label(self) -> str:
        """``name`` if set, else e.g. ``faster-whisper:tiny.en local-agreement min_chunk=0.5``."""
        if self.name:
            return self.name
        parts = [self.backend if self.model is None else f"{self.backend}:{self.model}", self.policy]
        if self.decoder != DEFAULT_DECODER:
            parts.append(f"decoder={self.decoder}")
        for kind in KINDS:
            parts += [f"{k}={v}" for k, v in sorted(getattr(self, f"{kind}_options").items())]
        if self.language:
            parts.append(f"language={self.language}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready (``backend.KEY`` etc. for options); :meth:`from_mapping` reads it back."""
        flat: dict[str, Any] = {
            "name": self.label, "backend": self.backend, "model": self.model, "policy": self.policy,
            "decoder": self.decoder, "language": self.language,
        }  # fmt: skip
        for kind in KINDS:
            flat.update({f"{kind}.{k}": v for k, v in sorted(getattr(self, f"{kind}_options").items())})
        return flat
