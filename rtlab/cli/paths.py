"""Where a command will write, checked before its work: a mistyped ``--out`` costs no run."""

from __future__ import annotations

import os
from pathlib import Path

import click


def check_writable(path: str | os.PathLike[str], option: str, *, folder: bool) -> None:
    """Raise :class:`click.ClickException` naming ``option`` when ``path`` (a folder to create or
    fill when ``folder``, else a file) cannot be written: a file stands where a folder of
    it would be, or the nearest existing folder above it is not writable."""
    target = Path(path)
    existing = target if folder else target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise click.ClickException(f"{option} {path}: {existing} is a file, not a folder; give a path in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.ClickException(f"{option} {path}: cannot write in {existing} (permission denied); give another folder")
