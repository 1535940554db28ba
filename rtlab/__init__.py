"""rtlab: a research platform for real-time speech transcription."""

from __future__ import annotations

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402

__all__ = ["hookimpl", "__version__"]
