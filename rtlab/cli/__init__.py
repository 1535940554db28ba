"""The ``rtlab`` command line. Heavy imports happen inside commands so --help stays instant."""

from __future__ import annotations

import json
import warnings

import click

from .. import __version__
from ..kernels import KERNEL_CHOICES, KernelsError, pin_kernels


@click.group()
@click.version_option(__version__, prog_name="rtlab")
@click.option("--kernels", type=click.Choice(KERNEL_CHOICES), default="auto", show_default=True,
              envvar="RTLAB_KERNELS",
              help="auto: each engine computes with the fastest kernels for this CPU; portable: pinned "
                   "kernels for x86-64 CPUs with AVX2, so that a modeled or unaware replay hears the same "
                   "words on another machine (slower where the CPU has AVX-512; not yet on every CPU: see "
                   "docs/evaluation.md).")  # fmt: skip
def cli(kernels: str) -> None:
    """rtlab: real-time speech transcription research platform."""
    warnings.formatwarning = _one_line_warning
    try:
        kept = pin_kernels(kernels)
    except KernelsError as error:
        raise click.ClickException(str(error)) from None
    for name, value in kept.items():
        click.echo(f"rtlab: {name}={value} is set in the environment and kept (portable would set it otherwise)", err=True)


_python_format = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' signature
    """A user's warning (a clip skipped, a plugin refused) as ``warning: ...``, without the
    Python file and line that raised it; other categories as Python prints them."""
    if issubclass(category, UserWarning):
        return f"warning: {message}\n"
    return _python_format(message, category, filename, lineno, line)


@cli.command()
@click.option("--all", "include_internal", is_flag=True,
              help="Also list rtlab's internal test plugin (its scripted test backends).")  # fmt: skip
def plugins(include_internal: bool) -> None:
    """Print the loaded plugins as JSON: name, version, hooks and what each registered.

    rtlab's internal test plugin (rtlab's scripted test backends, "test" and
    "test-attention", for its own tests: no speech engine) is listed only with --all,
    marked "internal": true.
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
