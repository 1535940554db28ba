"""``rtlab serve``: run :mod:`rtlab.server` until SIGINT or SIGTERM, then exit within a bound."""

from __future__ import annotations

import os

import click

from ..config import DEFAULT_BACKEND, DEFAULT_POLICY


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    """``("tiny.en,base", "small")`` -> ``("tiny.en", "base", "small")``."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes the server.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port; 0 picks a free one.")
@click.option("--backend", default=DEFAULT_BACKEND, show_default=True, help="Backend for clients that name none.")
@click.option("--model", default=None, help="That backend's model (default: the backend's own).")
@click.option("--backend-option", "-b", "backend_options", multiple=True, metavar="KEY=VALUE",
              help="Option of that backend, e.g. workers=2 (repeatable).")
@click.option("--policy", default=DEFAULT_POLICY, show_default=True, help="Streaming policy for clients that name none.")
@click.option("--policy-option", "-p", "policy_options", multiple=True, metavar="KEY=VALUE",
              help="Option of that policy, e.g. min_chunk=1 or deadline_sec=2 (repeatable).")
@click.option("--allow-backends", multiple=True, metavar="NAMES",
              help="Backends clients may name besides --backend, comma-separated; '*' allows every installed one.")
@click.option("--allow-models", multiple=True, metavar="NAMES",
              help="Models clients may name besides --model, comma-separated (e.g. tiny.en,base); no wildcard.")
@click.option("--allow-policies", multiple=True, metavar="NAMES",
              help="Policies clients may name besides --policy, comma-separated; '*' allows every installed one.")
@click.option("--max-connections", default=50, show_default=True, type=click.IntRange(min=1),
              help="Open sessions at most; more are refused with server_busy.")
@click.option("--token", default=None, envvar="RTLAB_TOKEN",
              help="Require this token (?token= or 'Authorization: Bearer'); env RTLAB_TOKEN.")
@click.option("--allowed-origin", "allowed_origins", multiple=True,
              help="Browser origin allowed besides the server's own (repeatable; '*' allows any).")
@click.option("--allowed-host", "allowed_hosts", multiple=True,
              help="Host name served besides the bind address and localhost (repeatable; '*' allows any).")
@click.option("--idle-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds without a client message before a session is closed.")
@click.option("--start-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a connection may stay without a transcription before it is closed.")
@click.option("--http-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds an HTTP request may take to send its headers or body.")
@click.option("--max-control-rate", default=20.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Text messages per second a connection may send (twice that at once).")
@click.option("--pass-deadline", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds one pass may take before it is abandoned (backend_timeout).")
@click.option("--shutdown-timeout", default=10.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds from SIGTERM/SIGINT to exit at most, even with a stuck backend thread.")
@click.option("--max-message-size", default=1 << 20, show_default=True, type=click.IntRange(min=1024),
              help="Largest client frame in bytes; larger ones are refused.")
@click.option("--no-preload", is_flag=True, help="Do not load the default model at start-up.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(host, port, backend, model, backend_options, policy, policy_options, allow_backends, allow_models,
          allow_policies, max_connections, token, allowed_origins, allowed_hosts, idle_timeout, start_timeout,
          http_timeout, max_control_rate, pass_deadline, shutdown_timeout, max_message_size, no_preload,
          log_level) -> None:  # fmt: skip
    """Run the WebSocket transcription server and its demo page until SIGINT/SIGTERM."""
    import logging

    from ..config import StreamConfig, parse_pairs
    from ..errors import RtlabError
    from ..server.config import ServerConfig

    if token is None and os.environ.get("RTLAB_TOKEN") == "":
        token = ""  # Click drops an empty variable; ServerConfig refuses it rather than serve without one
    try:
        # Unknown plugins, options and values fail here, not in every session.
        stream = StreamConfig(
            backend=backend,
            model=model,
            backend_options=parse_pairs(backend_options, source="--backend-option"),
            policy=policy,
            policy_options=parse_pairs(policy_options, source="--policy-option"),
        ).validate()
        config = ServerConfig(
            host=host,
            port=port,
            stream=stream,
            allow_backends=_names(allow_backends),
            allow_models=_names(allow_models),
            allow_policies=_names(allow_policies),
            max_connections=max_connections,
            token=token,
            allowed_origins=tuple(allowed_origins),
            allowed_hosts=tuple(allowed_hosts),
            idle_timeout=idle_timeout,
            start_timeout=start_timeout,
            http_timeout=http_timeout,
            max_control_rate=max_control_rate,
            control_burst=max(1, int(2 * max_control_rate)),
            pass_deadline=pass_deadline,
            # Flushing gets half the exit bound; closing and cleaning up the rest.
            shutdown_grace=min(5.0, shutdown_timeout / 2),
            max_message_bytes=max_message_size,
            preload=not no_preload,
        )
        config.client_choices()  # unknown names in the allow-lists fail here too
    except RtlabError as error:
        raise click.UsageError(str(error)) from error

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _serve_until_signal(config, shutdown_timeout)


def _serve_until_signal(config, shutdown_timeout: float) -> None:  # noqa: ANN001 - ServerConfig
    """Serve; after SIGINT/SIGTERM the process ends within ``shutdown_timeout`` seconds.

    A backend call that hangs cannot be stopped from outside its thread, and Python waits
    for such threads at exit. So once the server has shut down, a process with passes
    still stuck exits at once without waiting for them, and a timer armed by the signal
    ends the process anyway when anything else hangs (status 0 if the server itself had
    shut down, 1 if not). Only this command does that: library code never exits.
    """
    import asyncio
    import logging
    import threading

    from ..core.scheduler import abandoned_passes
    from ..server.app import serve as run

    log = logging.getLogger("rtlab.server")
    served = threading.Event()

    def exit_anyway() -> None:
        log.error("still running %g s after the signal (a stuck backend call or model load); exiting now",
                  shutdown_timeout)  # fmt: skip
        _exit_now(0 if served.is_set() else 1)

    def arm() -> None:
        timer = threading.Timer(shutdown_timeout, exit_anyway)
        timer.daemon = True
        timer.start()

    asyncio.run(run(config, announce=lambda line: click.echo(line), on_signal=arm))
    served.set()
    stuck = abandoned_passes()
    if stuck:
        log.warning("%d backend call(s) still running after the pass deadline; exiting without them", stuck)
        _exit_now(0)


def _exit_now(code: int) -> None:
    """Exit at once, without waiting for threads; what was logged or printed is flushed."""
    import logging
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
