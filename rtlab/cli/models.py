"""``rtlab models``: the models each backend finds on this machine, and conversions.

Both subcommands ask the registered backend classes, never a backend by name: ``list``
calls every backend's ``local_models()``, and ``convert`` the ``convert_model(source,
dest)`` of the backend that has one (see :class:`rtlab.backends.Backend`).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from typing import Any

import click

NO_CONVERTER = (
    "no installed backend converts models (none provides convert_model): install one that does, "
    "e.g. pip install -e plugins/rtlab-openai-whisper"
)


def _registry():
    from ..errors import RtlabError
    from ..registry import get_registry

    try:
        return get_registry()
    except RtlabError as error:
        raise click.ClickException(str(error)) from None


def _size(value: Any) -> str:
    """A model's ``bytes`` in MB (10^6 bytes, as pip and ``ls --si`` count), one unit for every row."""
    return "-" if not isinstance(value, (int, float)) else f"{value / 1e6:.1f} MB"


@click.group()
def models() -> None:
    """List the models the installed backends find here, and convert them between engines."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one record per model.")
def list_models(as_json: bool) -> None:
    """What each backend finds on this machine: embedded, converted and cached models.

    Each backend reports its own (Backend.local_models); a model is listed once per
    backend that can use it. A size is that of the files the model is on disk (the same
    files, the same size, whatever the backend), in MB of 10^6 bytes.
    """
    registry = _registry()
    rows: list[dict[str, Any]] = []
    for name in registry.names("backend"):
        try:
            found = registry.get("backend", name).local_models()
        except Exception as error:  # noqa: BLE001 - one broken plugin must not hide the others
            found = [{"name": "?", "kind": "error", "note": f"{type(error).__name__}: {error}"}]
        rows += [{"backend": name, **model} for model in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no local models: the installed backends report none (models are downloaded on first use)")
        return
    columns = ("backend", "name", "kind", "format", "size", "path")
    table = [columns] + [
        tuple(str(row.get(c, "")) if c != "size" else _size(row.get("bytes")) for c in columns) for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for index, line in enumerate(table):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * width for width in widths))


@models.command()
@click.argument("source")
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--backend", default=None,
              help="The backend whose format DEST is in (default: the one installed backend that converts).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")  # fmt: skip
def convert(source: str, dest: str, backend: str | None, as_json: bool) -> None:
    """Convert the model at SOURCE (a folder, or a name the backend knows) into DEST.

    For example `rtlab models convert tiny.en tiny.en.pt` writes the embedded tiny.en
    (CTranslate2) as an openai-whisper checkpoint. DEST is written whole or not at all.
    """
    from ..errors import RtlabError
    from .paths import check_writable

    check_writable(dest, "DEST", folder=False)
    registry = _registry()
    converters = [n for n in registry.names("backend") if callable(getattr(registry.get("backend", n), "convert_model", None))]
    if backend is None:
        if not converters:
            raise click.ClickException(NO_CONVERTER)
        if len(converters) > 1:
            raise click.UsageError(f"several backends convert models ({', '.join(converters)}): choose one with --backend")
        backend = converters[0]
    elif backend not in converters:
        try:
            registry.get("backend", backend)
        except RtlabError as error:
            raise click.ClickException(str(error)) from None
        others = f"backends that do: {', '.join(converters)}" if converters else NO_CONVERTER
        raise click.ClickException(f"backend {backend!r} does not convert models; {others}")
    try:
        with _exit_on_sigterm():
            result = registry.get("backend", backend).convert_model(source, dest)
    except (RtlabError, OSError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    details = ", ".join(f"{k}: {v}" for k, v in result.items() if k != "path" and isinstance(v, (str, int, float)))
    click.echo(f"wrote {result.get('path', dest)}" + (f" ({details})" if details else ""))


@contextlib.contextmanager
def _exit_on_sigterm():
    """SIGTERM exits as Ctrl-C does, through ``finally`` blocks (a conversion's temporary
    file is removed), instead of ending the process where it stands."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
