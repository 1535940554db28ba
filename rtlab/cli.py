"""The ``rtlab`` command line. Heavy imports happen inside commands so --help stays instant."""

from __future__ import annotations

import json

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="rtlab")
def cli() -> None:
    """rtlab: real-time speech transcription research platform."""


@cli.command()
def plugins() -> None:
    """Print the loaded plugins as JSON: name, version, hooks and what each registered."""
    from .registry import plugins_info

    click.echo(json.dumps(plugins_info(), indent=2))


from .bench import bench  # noqa: E402

cli.add_command(bench)

from .server.command import serve  # noqa: E402

cli.add_command(serve)
