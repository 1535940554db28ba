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
@click.option("--all", "include_internal", is_flag=True, help="Also list rtlab's internal test plugin.")
def plugins(include_internal: bool) -> None:
    """Print the loaded plugins as JSON: name, version, hooks and what each registered.

    rtlab's internal test plugin (the "test" backend of rtlab's own tests) is listed only
    with --all, marked "internal": true.
    """
    from ..errors import RtlabError
    from ..registry import plugins_info

    try:
        click.echo(json.dumps(plugins_info(include_internal=include_internal), indent=2))
    except RtlabError as error:
        raise click.ClickException(str(error)) from None


from .bench import bench  # noqa: E402
from .calibrate import calibrate  # noqa: E402
from .models import models  # noqa: E402
from .serve import serve  # noqa: E402
from .transcribe import transcribe  # noqa: E402

for command in (transcribe, bench, serve, calibrate, models):
    cli.add_command(command)
