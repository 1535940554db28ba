"""``rtlab serve``: the click command (imported by :mod:`rtlab.cli`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..core.processor import DEFAULT_BACKEND, DEFAULT_POLICY

if TYPE_CHECKING:
    from ..eval.replay import Configuration


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes the server.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port; 0 picks a free one.")
@click.option("--backend", default=DEFAULT_BACKEND, show_default=True, help="Backend for clients that name none.")
@click.option("--model", default=None, help="That backend's model (default: the backend's own).")
@click.option("--backend-option", "-b", "backend_options", multiple=True, metavar="KEY=VALUE",
              help="Option of that backend, e.g. workers=2 (repeatable).")
@click.option("--policy", default=DEFAULT_POLICY, show_default=True, help="Streaming policy for clients that name none.")
@click.option("--policy-option", "-p", "policy_options", multiple=True, metavar="KEY=VALUE",
              help="Option of that policy, e.g. min_chunk=1 or deadline_sec=2 (repeatable).")
@click.option("--max-connections", default=50, show_default=True, type=click.IntRange(min=1),
              help="Open sessions at most; more are refused with server_busy.")
@click.option("--token", default=None, envvar="RTLAB_TOKEN",
              help="Require this token (?token= or 'Authorization: Bearer'); env RTLAB_TOKEN.")
@click.option("--allowed-origin", "allowed_origins", multiple=True,
              help="Browser origin allowed besides the server's own (repeatable; '*' allows any).")
@click.option("--idle-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds without a client message before a session is closed.")
@click.option("--max-message-size", default=1 << 20, show_default=True, type=click.IntRange(min=1024),
              help="Largest client frame in bytes; larger ones are refused.")
@click.option("--no-preload", is_flag=True, help="Do not load the default model at start-up.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(host, port, backend, model, backend_options, policy, policy_options, max_connections, token,
          allowed_origins, idle_timeout, max_message_size, no_preload, log_level) -> None:  # fmt: skip
    """Run the WebSocket transcription server and its demo page until SIGINT/SIGTERM."""
    import asyncio
    import logging

    from ..cli import parse_key_values
    from ..errors import RtlabError
    from ..eval.replay import Configuration
    from .app import serve as run
    from .config import ServerConfig

    defaults = Configuration(
        backend=backend,
        model=model,
        policy=policy,
        backend_options=parse_key_values(backend_options, "--backend-option"),
        policy_options=parse_key_values(policy_options, "--policy-option"),
    )
    try:
        defaults.validate()  # unknown plugins and options fail here, not in every session
        _check_policy_values(defaults)
    except RtlabError as error:
        raise click.UsageError(str(error)) from error

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServerConfig(
        host=host,
        port=port,
        backend=backend,
        model=model,
        backend_options=dict(defaults.backend_options),
        policy=policy,
        policy_options=dict(defaults.policy_options),
        max_connections=max_connections,
        token=token,
        allowed_origins=tuple(allowed_origins),
        idle_timeout=idle_timeout,
        max_message_bytes=max_message_size,
        preload=not no_preload,
    )
    asyncio.run(run(config, announce=lambda line: click.echo(line)))


def _check_policy_values(defaults: Configuration) -> None:
    """Build the policy once, on no backend, so that a bad value (``min_chunk=-1``) fails at
    start-up. A policy that needs its backend to be built is checked by its first session."""
    from ..errors import InvalidOption
    from ..registry import get_registry

    policy_cls = get_registry().get("policy", defaults.policy)
    try:
        policy_cls(None, **defaults.policy_options)
    except InvalidOption:
        raise
    except Exception:  # noqa: BLE001 - it needs a real backend; sessions will say what is wrong
        pass
