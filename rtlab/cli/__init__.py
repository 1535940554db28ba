"""The ``rtlab`` command line. Heavy imports happen inside commands so --help stays instant."""

from __future__ import annotations

import json

import click

from .. import __version__


@click.group()
@click.version_option(__version__, prog_name="rtlab")
def cli() -> None:
    """rtlab: real-time speech transcription research platform."""


@cli.command()
def plugins() -> None:
    """Print the loaded plugins as JSON: name, version, hooks and what each registered."""
    from ..errors import RtlabError
    from ..registry import plugins_info

    try:
        click.echo(json.dumps(plugins_info(), indent=2))
    except RtlabError as error:
        raise click.ClickException(str(error)) from None


def parse_key_values(pairs: tuple[str, ...], flag: str) -> dict:
    """``key=value`` pairs; values parsed as JSON when they can be (numbers, true, null)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=flag)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--backend", default="faster-whisper", show_default=True, help="Backend plugin (see 'rtlab plugins').")
@click.option("--model", default=None, help="Model for the backend (faster-whisper: tiny.en, base, a folder…).")
@click.option("--policy", default="local-agreement", show_default=True, help="Streaming policy.")
@click.option("--language", default=None, help="Language code; default: en for .en models, else detected.")
@click.option("--clock", type=click.Choice(["wall", "simulated"]), default="wall", show_default=True,
              help="wall: paced in real time; simulated: as fast as compute allows, latency accounted.")
@click.option("--format", "output_format", type=click.Choice(["text", "jsonl"]), default="text", show_default=True)
@click.option("--min-chunk", type=float, default=None, help="Seconds of new audio between passes (policy option).")
@click.option("--backend-option", "-b", multiple=True, metavar="KEY=VALUE", help="Extra backend option; repeatable.")
@click.option("--policy-option", "-p", multiple=True, metavar="KEY=VALUE", help="Extra policy option; repeatable.")
def transcribe(files, backend, model, policy, language, clock, output_format, min_chunk, backend_option, policy_option):
    """Stream FILES through a backend and show the transcript as it is committed.

    Text mode prints committed text live, with the partial text dimmed and a progress bar on
    a terminal. jsonl mode prints one event per line: partial, commit, and a final summary.
    """
    import asyncio
    from pathlib import Path

    from ..errors import RtlabError
    from ..core.processor import AudioProcessor

    for file in files:
        if not Path(file).is_file():
            raise click.ClickException(f"{file}: no such file; give the path of an audio file")
    policy_options = parse_key_values(policy_option, "--policy-option")
    if min_chunk is not None:
        policy_options["min_chunk"] = min_chunk
    options = dict(
        backend=backend, model=model, policy=policy, language=language, clock=clock,
        backend_options=parse_key_values(backend_option, "--backend-option"), policy_options=policy_options,
    )
    try:
        AudioProcessor(**options)  # validates names and options before any work starts
        failed = asyncio.run(_transcribe_files(files, options, output_format))
    except RtlabError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None
    if failed:
        raise click.ClickException(failed)


async def _transcribe_files(files, options, output_format) -> str | None:
    """Stream each file; returns the first failure message, if any."""
    from .display import LiveText
    from ..core.feeding import stream_file

    failure = None
    for file in files:
        display = LiveText(label=file) if output_format == "text" else None

        def show(event, file=file, display=display):
            if display is not None:
                display.event(event)
            else:
                click.echo(json.dumps({**event, "file": file}) if len(files) > 1 else json.dumps(event))

        events = await stream_file(
            file, on_event=show, on_progress=display.set_progress if display else None, **options
        )
        if display is not None:
            display.close()
        last = events[-1] if events else {"type": "error", "message": "no events"}
        if last["type"] == "error":
            failure = failure or f"{file}: {last['message']}"
        elif display is not None and not last["text"]:
            click.echo(f"{file}: no speech was recognised", err=True)
    return failure


from ..eval.bench import bench  # noqa: E402

cli.add_command(bench)

from ..server.command import serve  # noqa: E402

cli.add_command(serve)
