"""``rtlab serve``: run :mod:`rtlab.server` until SIGINT or SIGTERM."""

from __future__ import annotations

import click

from ..config import DEFAULT_BACKEND, DEFAULT_POLICY


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

    from ..config import StreamConfig, parse_pairs
    from ..errors import RtlabError
    from ..server.app import serve as run
    from ..server.config import ServerConfig

    try:
        # Unknown plugins, options and values fail here, not in every session.
        stream = StreamConfig(
            backend=backend,
            model=model,
            backend_options=parse_pairs(backend_options, source="--backend-option"),
            policy=policy,
            policy_options=parse_pairs(policy_options, source="--policy-option"),
        ).validate()
    except RtlabError as error:
        raise click.UsageError(str(error)) from error

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServerConfig(
        host=host,
        port=port,
        stream=stream,
        max_connections=max_connections,
        token=token,
        allowed_origins=tuple(allowed_origins),
        idle_timeout=idle_timeout,
        max_message_bytes=max_message_size,
        preload=not no_preload,
    )
    asyncio.run(run(config, announce=lambda line: click.echo(line)))
