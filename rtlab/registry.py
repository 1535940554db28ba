"""What the plugins registered: backends, policies and decoders by name.

Each registration is checked as it happens. A class that breaks the contract (it does not
subclass its kind's base class, has no ``name``, or leaves a method of the base undefined)
is a mistake in that plugin: building
the registry raises :class:`~rtlab.errors.PluginError` naming the plugin, the class and
the fix. A name registered twice is a clash between two valid plugins: the first keeps it
(built-ins first, then plugins in the order of their names),
the second is refused with a :class:`~rtlab.errors.PluginWarning` and listed under
``rejected`` by ``rtlab plugins``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .backends import Backend, accepted_options, check_options
from .decoders import Decoder
from .errors import (
    InvalidOption, MissingCapability, PluginError, PluginWarning, RtlabError, UnknownBackend, UnknownDecoder,
    UnknownPolicy,
)
from .options import is_finite_number
from .plugins import DEFAULT_PLUGINS, INTERNAL_PLUGINS, load_plugins, plugin_version
from .policies import CAPABILITIES, PROVIDERS, Policy, missing_capabilities


class Kind(NamedTuple):
    """What the registry needs to know about one kind of plugin class."""

    hook: str
    plural: str
    base: type
    unknown: type[RtlabError]
    #: The base's methods a class must define (the base's own only raise NotImplementedError).
    methods: tuple[str, ...]


KINDS = {
    "backend": Kind("register_backends", "backends", Backend, UnknownBackend, ("transcribe",)),
    "policy": Kind("register_policies", "policies", Policy, UnknownPolicy, ("insert_audio", "process_iter", "finish")),
    "decoder": Kind(
        "register_decoders", "decoders", Decoder, UnknownDecoder, ("start", "write", "end_input", "read", "stop")
    ),
}

PLURALS = {kind: spec.plural for kind, spec in KINDS.items()}


@dataclass
class Registration:
    """One registered class and the plugin it came from."""

    kind: str
    name: str
    cls: type
    plugin: str


@dataclass
class Registry:
    """Everything registered, per kind, plus what was refused and why."""

    entries: dict[str, dict[str, Registration]] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)

    def registration(self, kind: str, name: str) -> Registration:
        """The registration of ``name``; a clear error listing the choices otherwise."""
        found = self.entries[kind].get(name)
        if found is None:
            # rtlab's own scripted doubles (the "test" backends) apart: they are no engine to choose.
            internal = [n for n, r in sorted(self.entries[kind].items()) if r.plugin in INTERNAL_PLUGINS]
            choices = ", ".join(n for n in sorted(self.entries[kind]) if n not in internal) or "none"
            scripted = f"; rtlab's scripted test {PLURALS[kind]}: {', '.join(internal)}" if internal else ""
            raise KINDS[kind].unknown(
                f"unknown {kind} {name!r}; installed {PLURALS[kind]}: {choices}{scripted}. "
                f"Run 'rtlab plugins' to see what each plugin registered."
            )
        return found

    def get(self, kind: str, name: str) -> type:
        """The class registered as ``name``; a clear error listing the choices otherwise."""
        return self.registration(kind, name).cls

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self.entries[kind])

    def accepted_options(self, kind: str, name: str) -> dict[str, Any]:
        """The options ``name`` accepts, with their defaults (see :func:`rtlab.backends.accepted_options`)."""
        return accepted_options(self.get(kind, name))

    def check_options(self, kind: str, name: str, options: dict[str, Any]) -> None:
        """Refuse an unknown ``name`` (UnknownBackend, ...) or an option it does not accept
        (:class:`~rtlab.errors.InvalidOption`, naming the kind, the name, the plugin, the
        option and what it accepts; see :func:`rtlab.backends.check_options`)."""
        entry = self.registration(kind, name)
        check_options(entry.cls, kind, options, entry.plugin)

    def create(self, kind: str, name: str, *args: Any, **options: Any) -> Any:
        """An instance of ``name`` built with ``options`` (``args`` first: a policy's
        backend). A ``TypeError`` or ``ValueError`` its constructor raises (an option value
        it did not check, say ``min_chunk="x"`` compared with a number) becomes one
        :class:`~rtlab.errors.InvalidOption` line naming the plugin, the options given and
        the error, so that a plugin's unchecked value stops the CLI, the server and
        ``rtlab bench`` with a message, not a traceback; rtlab's own errors pass as they are.
        A policy whose backend lacks a capability it ``requires`` is refused before it is
        built (:func:`capability_refusal`)."""
        entry = self.registration(kind, name)
        given = ", ".join(f"{key}={value!r}" for key, value in options.items() if key != "language")
        if kind == "policy" and args:
            refusal = capability_refusal(entry.cls, args[0])  # before its __init__ sees the backend
            if refusal is not None:
                raise refusal
        try:
            instance = entry.cls(*args, **options)
        except RtlabError:
            raise
        except (TypeError, ValueError) as error:
            raise InvalidOption(
                f"{kind} '{name}' (plugin '{entry.plugin}') failed to start with "
                f"{given or 'its defaults'}: {type(error).__name__}: {error}"
            ) from error
        chunk = getattr(instance, "min_chunk", None)
        if kind == "policy" and not (is_finite_number(chunk) and chunk > 0):
            # Checked here, not by the pacer: min_chunk="x" would fail there as a ValueError
            # quoting "x" repeated 16000 times, and 0 would run a pass per read.
            raise InvalidOption(
                f"policy '{name}' (plugin '{entry.plugin}') set min_chunk to {chunk!r} with "
                f"{given or 'its defaults'}; min_chunk is the seconds of audio between passes, a number "
                f"above 0: check the option in __init__ and raise rtlab.errors.InvalidOption for a bad value"
            )
        return instance


def capability_refusal(policy: type[Policy] | Policy, backend: Any) -> MissingCapability | None:
    """The one-line error refusing ``backend`` for ``policy`` (the first capability it
    requires that the backend lacks, and the installed backends that have it), or None.
    :meth:`Registry.create` raises it before a policy is built."""
    missing = missing_capabilities(policy, backend)
    if not missing:
        return None
    capability = missing[0]
    able = tuple(
        name for name, entry in sorted(get_registry().entries["backend"].items())
        if capability in entry.cls.capabilities and entry.plugin not in INTERNAL_PLUGINS
    )  # fmt: skip
    what = f"{CAPABILITIES[capability]} (capability {capability!r})" if capability in CAPABILITIES else (
        f"capability {capability!r}"
    )
    refusal = (f"policy {policy.name!r} needs a backend with {what}; "
               f"backend {getattr(backend, 'name', '?')!r} does not provide it")  # fmt: skip
    # Not "--backend NAME": a WebSocket client or a Python caller has no such flag.
    if able:
        fix = f"use {' or '.join(f'backend={name}' for name in able)}"
    else:
        fix = f"install one: {PROVIDERS[capability]}" if capability in PROVIDERS else "no installed backend provides it"
    return MissingCapability(f"{refusal}: {fix}", refusal=refusal, backends=able)


_registry: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """Build (once) and return the registry by calling every registration hook.

    Raises :class:`~rtlab.errors.PluginError` when a plugin registers an invalid class;
    nothing is kept, so the next call fails the same way until the plugin is fixed or left out.
    """
    global _registry
    if _registry is not None and not refresh:
        return _registry
    pm = load_plugins()
    registry = Registry(entries={kind: {} for kind in KINDS})
    for kind, spec in KINDS.items():
        hook = getattr(pm.hook, spec.hook)
        # The first registration of a name wins. Built-ins go first, whatever pluggy's
        # order (tryfirst/trylast move impls), so no plugin can take over a built-in name;
        # then the plugins by name, so that a clash ends the same way on every machine
        # (Python lists installed packages in the order their folder gives them).
        impls = sorted(
            hook.get_hookimpls(),
            key=lambda i: (pm.get_name(i.plugin) not in DEFAULT_PLUGINS, pm.get_name(i.plugin) or ""),
        )
        for impl in impls:
            plugin_name = pm.get_name(impl.plugin)

            def register(cls, _kind=kind, _plugin=plugin_name):
                _register(registry, _kind, cls, _plugin)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as error:  # a bug in the hook: name the plugin, not only the line
                raise PluginError(
                    f"plugin {plugin_name!r}: its {spec.hook} hook raised {type(error).__name__}: {error}; "
                    f"fix the hook, or leave the plugin out with RTLAB_LOAD_PLUGINS"
                ) from error
    _registry = registry
    return registry


def _register(registry: Registry, kind: str, cls: type, plugin: str) -> None:
    _check_contract(kind, cls, plugin)
    existing = registry.entries[kind].get(cls.name)
    if existing is not None:
        message = (
            f"{kind} {cls.name!r} from plugin {plugin!r} refused: plugin {existing.plugin!r} "
            f"already registered that name. Uninstall one of them or set RTLAB_LOAD_PLUGINS."
        )
        warnings.warn(message, PluginWarning, stacklevel=3)
        registry.rejected.append({"kind": kind, "name": cls.name, "plugin": plugin, "reason": message})
        return
    registry.entries[kind][cls.name] = Registration(kind, cls.name, cls, plugin)


def _check_contract(kind: str, cls: type, plugin: str) -> None:
    """Raise PluginError unless ``cls`` subclasses the kind's base, has a name and defines
    the base's methods."""
    base, plural = KINDS[kind].base, KINDS[kind].plural
    missing = [m for m in KINDS[kind].methods if isinstance(cls, type) and getattr(cls, m, None) is getattr(base, m)]
    if isinstance(cls, base):
        problem = f"an instance of {type(cls).__name__}, not the class"
        fix = f"write `register({type(cls).__name__})`"
    elif not isinstance(cls, type) or not issubclass(cls, base):
        problem = f"which does not subclass rtlab.{plural}.{base.__name__}"  # its public name
        fix = f"write `class {getattr(cls, '__name__', 'Name')}(rtlab.{base.__name__})`"
    elif not isinstance(cls.name, str) or not cls.name:
        problem = f"whose name is {cls.name!r}"
        fix = f'give it a unique name, e.g. `name = "{cls.__name__.lower()}"`'
    elif missing:
        problem = f"which does not define {', '.join(missing)} (rtlab.{base.__name__}'s raise NotImplementedError)"
        fix = f"define {', '.join(f'`{m}`' for m in missing)} (see {plural.capitalize()} in docs/plugins.md)"
    else:
        return
    raise PluginError(
        f"plugin {plugin!r} registered {kind} {cls!r}, {problem}: {fix}, "
        f"or leave the plugin out with RTLAB_LOAD_PLUGINS"
    )


def plugins_info(include_internal: bool = False) -> list[dict]:
    """One record per loaded plugin: name, version, hooks, what it registered and refused,
    whether it is internal (rtlab's own test plugin: listed only with ``include_internal``),
    and ``devices``, per backend that declares them, for a plugin whose backends do."""
    registry = get_registry()
    pm = load_plugins()
    records = []
    for plugin in pm.get_plugins():
        plugin_name = pm.get_name(plugin)
        if plugin_name in INTERNAL_PLUGINS and not include_internal:
            continue
        registered = {
            PLURALS[kind]: sorted(r.name for r in registry.entries[kind].values() if r.plugin == plugin_name)
            for kind in KINDS
        }
        record = {
            "name": plugin_name,
            "version": plugin_version(plugin_name),
            "internal": plugin_name in INTERNAL_PLUGINS,
            "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            "registered": {k: v for k, v in registered.items() if v},
            "rejected": [r for r in registry.rejected if r["plugin"] == plugin_name],
        }
        devices = backend_devices(registry, registered["backends"])
        if devices:
            record["devices"] = devices
        records.append(record)
    return sorted(records, key=lambda r: r["name"])


def backend_devices(registry: Registry, names: list[str]) -> dict[str, list[str]]:
    """The devices of each backend in ``names`` that declares them
    (:meth:`~rtlab.backends.Backend.devices`, a cheap probe that loads no model)."""
    found = {}
    for name in names:
        devices = registry.get("backend", name).devices()
        if devices is not None:
            found[name] = list(devices)
    return found
