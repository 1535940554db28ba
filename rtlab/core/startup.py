"""What a stream checks when it starts, once its model is loaded: the one place that
:meth:`AudioProcessor.create_tasks <rtlab.core.processor.AudioProcessor.create_tasks>` and
the panels' editor (:func:`~rtlab.widgets.configs.check_startable`) both go through, so
that a configuration the editor calls ready starts, and a check added here serves both."""

from __future__ import annotations

from typing import Any, Callable

from ..backends import Backend, check_language
from ..config import StreamConfig
from ..policies import Policy
from ..registry import get_registry

__all__ = ["build_policy"]


def build_policy(config: StreamConfig, backend: Backend, view: Callable[[], Any] | None = None) -> Policy:
    """``config``'s policy, built on its loaded ``backend`` as a stream starts it: the loaded
    model must transcribe ``config.language`` (:func:`~rtlab.backends.check_language`: an
    English-only ``tiny.en`` refuses anything but ``en``); the language defaults to the
    backend's; the registry refuses a backend without a capability the policy requires and
    option values the policy refuses (:meth:`~rtlab.registry.Registry.create`).

    :param config: a validated :class:`~rtlab.config.StreamConfig`.
    :param backend: its shared backend, loaded (:func:`~rtlab.backends.ensure_loaded`).
    :param view: makes what the policy is given of ``backend`` (a session's
        :class:`~rtlab.core.instances.SessionBackend`); called only once the language has
        passed. Default: the backend itself.

    Raises what those checks raise (:class:`~rtlab.errors.InvalidOption`, its
    :class:`~rtlab.errors.MissingCapability`, a policy's own error).
    """
    check_language(backend, config.language)
    policy_backend = backend if view is None else view()
    language = config.language or backend.default_language()
    return get_registry().create("policy", config.policy, policy_backend, language=language, **config.policy_options)
