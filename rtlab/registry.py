"""What the plugins registered: backends, policies and decoders by name.

The host validates each registration: an invalid class, or a second registration of a taken
name, is refused with a :class:`~rtlab.errors.PluginWarning` that names the plugins, and is
listed by ``rtlab plugins``; one bad plugin cannot break or silently replace another.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from .errors import PluginWarning, UnknownBackend, UnknownDecoder, UnknownPolicy
from .plugins import DEFAULT_PLUGINS, load_plugins, plugin_version

KINDS = {
    # kind: (hook name, methods a registered class must have, error for unknown names)
    "backend": ("register_backends", ("transcribe",), UnknownBackend),
    "policy": ("register_policies", ("insert_audio", "process_iter", "finish"), UnknownPolicy),
    "decoder": ("register_decoders", ("start", "write", "end_input", "read", "stop"), UnknownDecoder),
}


PLURALS = {"backend": "backends", "policy": "policies", "decoder": "decoders"}


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

    def get(self, kind: str, name: str) -> type:
        """The class registered as ``name``; a clear error listing choices otherwise."""
        found = self.entries[kind].get(name)
        if found is None:
            choices = ", ".join(sorted(self.entries[kind])) or "none"
            error = KINDS[kind][2]
            raise error(
                f"unknown {kind} {name!r}; installed {PLURALS[kind]}: {choices}. "
                f"Run 'rtlab plugins' to see what each plugin registered."
            )
        return found.cls

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self.entries[kind])


_registry: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """Build (once) and return the registry by calling every registration hook."""
    global _registry
    if _registry is not None and not refresh:
        return _registry
    pm = load_plugins()
    registry = Registry(entries={kind: {} for kind in KINDS})
    for kind, (hook_name, _, _) in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        # The first registration of a name wins. Built-ins go first, whatever pluggy's
        # order (tryfirst/trylast move impls), so no plugin can take over a built-in name.
        impls = sorted(hook.get_hookimpls(), key=lambda i: pm.get_name(i.plugin) not in DEFAULT_PLUGINS)
        for impl in impls:
            plugin_name = pm.get_name(impl.plugin)

            def register(cls, _kind=kind, _plugin=plugin_name):
                _register(registry, _kind, cls, _plugin)

            impl.function(register=register)
    _registry = registry
    return registry


def _register(registry: Registry, kind: str, cls: type, plugin: str) -> None:
    name = getattr(cls, "name", None)
    missing = [m for m in KINDS[kind][1] if not callable(getattr(cls, m, None))]
    if not isinstance(name, str) or not name or missing:
        problem = "a non-empty string 'name'" if not isinstance(name, str) or not name else (
            "the methods " + ", ".join(missing)
        )
        _reject(registry, kind, str(name), plugin, f"plugin {plugin!r} registered {kind} {cls!r} without {problem}")
        return
    existing = registry.entries[kind].get(name)
    if existing is not None:
        message = (
            f"{kind} {name!r} from plugin {plugin!r} refused: plugin {existing.plugin!r} "
            f"already registered that name. Uninstall one of them or set RTLAB_LOAD_PLUGINS."
        )
        _reject(registry, kind, name, plugin, message)
        return
    registry.entries[kind][name] = Registration(kind, name, cls, plugin)


def _reject(registry: Registry, kind: str, name: str, plugin: str, message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=3)
    registry.rejected.append({"kind": kind, "name": name, "plugin": plugin, "reason": message})


def plugins_info() -> list[dict]:
    """One record per loaded plugin: name, version, hooks, and what it registered."""
    registry = get_registry()
    pm = load_plugins()
    records = []
    for plugin in pm.get_plugins():
        plugin_name = pm.get_name(plugin)
        registered = {
            PLURALS[kind]: sorted(r.name for r in registry.entries[kind].values() if r.plugin == plugin_name)
            for kind in KINDS
        }
        records.append(
            {
                "name": plugin_name,
                "version": plugin_version(plugin_name),
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
                "registered": {k: v for k, v in registered.items() if v},
                "rejected": [r for r in registry.rejected if r["plugin"] == plugin_name],
            }
        )
    return sorted(records, key=lambda r: r["name"])
