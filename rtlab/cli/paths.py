"""Where a command will write, checked before its work: a mistyped ``--out`` costs no run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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


@contextlib.contextmanager
def folders_removed_on_failure(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Within the block, ``folder`` and the folders above it that do not exist yet may be
    made; if the block fails, those of them still empty are removed again (the deepest
    first), so a failed command leaves no empty ``--out`` behind. A folder that existed
    before, or one holding a file, is left as it is."""
    target = Path(folder)
    made = [path for path in (target, *target.parents) if not path.exists()]
    try:
        yield
    except BaseException:
        for path in made:
            with contextlib.suppress(OSError):  # not empty (something was written), or gone
                path.rmdir()
        raise
