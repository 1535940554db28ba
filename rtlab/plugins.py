"""Loads rtlab plugins: the built-in ones, then those installed under the ``rtlab`` entry point."""

from __future__ import annotations

import importlib
import os
import warnings
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .errors import PluginError, PluginWarning

DEFAULT_PLUGINS = (
    "rtlab.decoders.plugin",
    "rtlab.policies.plugin",
    "rtlab.testing",
)
#: Built-ins for rtlab's own tests (the deterministic "test" backend): registered and usable
#: by name, but listed by ``rtlab plugins`` only with ``--all``.
INTERNAL_PLUGINS = ("rtlab.testing",)

pm = pluggy.PluginManager("rtlab")
pm.add_hookspecs(hookspecs)

_loaded = False


def load_plugins() -> pluggy.PluginManager:
    """Register the built-in plugins and the installed ones; safe to call many times.

    ``RTLAB_LOAD_PLUGINS`` (comma-separated distribution or entry-point names) restricts
    which installed plugins load; set but empty, none load. Built-ins always load.
    """
    global _loaded
    if _loaded:
        return pm
    for module_name in DEFAULT_PLUGINS:
        if pm.get_plugin(module_name) is None:
            pm.register(importlib.import_module(module_name), name=module_name)
    wanted = os.environ.get("RTLAB_LOAD_PLUGINS")
    allowed = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
    installed: set[str] = set()
    # In the order of their names, not of the site-packages folder: the same on every machine.
    for entry_point in sorted(entry_points(group="rtlab"), key=lambda e: (e.name, e.dist.name if e.dist else "")):
        dist_name = entry_point.dist.name if entry_point.dist else entry_point.name
        installed |= {dist_name, entry_point.name}
        if allowed is not None and not allowed & {dist_name, entry_point.name}:
            continue
        taken_by = _distributions.get(entry_point.name)
        if taken_by is not None and entry_point.dist is not None and taken_by.name != dist_name:
            # pluggy keys plugins by name: the second would be dropped without a word.
            warnings.warn(
                f"plugin name {entry_point.name!r} of {dist_name} is taken by {taken_by.name}, whose entry point "
                f"has the same name: {dist_name} is not loaded. Rename one entry point "
                f"([project.entry-points.rtlab]), or uninstall one of them",
                PluginWarning,
                stacklevel=2,
            )
        elif pm.get_plugin(entry_point.name) is None:
            try:
                plugin = entry_point.load()
            except Exception as error:  # an ImportError, or whatever the module raised
                raise PluginError(
                    f"plugin {entry_point.name!r} (distribution {dist_name}) failed to import "
                    f"{entry_point.value!r}: {type(error).__name__}: {error}; fix or uninstall it "
                    f"(pip uninstall {dist_name}), or leave the plugin out with RTLAB_LOAD_PLUGINS"
                ) from error
            pm.register(plugin, name=entry_point.name)
            _distributions[entry_point.name] = entry_point.dist
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        # pm.hook also holds a caller, without a spec, for the unknown hook itself.
        known = ", ".join(sorted(n for n, hook in vars(pm.hook).items() if hook.has_spec()))
        raise PluginError(
            f"plugin {pm.get_name(error.plugin)!r}: {error}. rtlab's hooks are: {known}; "
            f"fix the hook name, or leave the plugin out with RTLAB_LOAD_PLUGINS"
        ) from error
    unmatched = sorted((allowed or set()) - installed)
    if unmatched:
        warnings.warn(
            f"RTLAB_LOAD_PLUGINS names {', '.join(map(repr, unmatched))}, which no installed plugin has "
            f"(installed: {', '.join(sorted(installed)) or 'none'}); check the spelling",
            PluginWarning,
            stacklevel=2,
        )
    # Only now: a failure above must fail again on the next call, not pass silently.
    _loaded = True
    return pm


_distributions: dict = {}


def plugin_version(plugin_name: str) -> str | None:
    """The installed version of the distribution that provided ``plugin_name``."""
    dist = _distributions.get(plugin_name)
    if dist is not None:
        return dist.version
    if plugin_name.startswith("rtlab."):
        from . import __version__

        return __version__
    return None
