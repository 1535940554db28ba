"""Checks of option values for plugins: ``KEY=VALUE`` types a value by one rule
(:func:`rtlab.config.parse_value`), and a plugin's ``__init__`` checks that what arrived is
what it takes. No rtlab imports: every layer (backends, policies, decoders) uses it.
"""

from __future__ import annotations

import math

__all__ = ["is_finite_number", "is_number", "is_whole_number"]


def is_number(value: object) -> bool:
    """Whether an option's ``value`` is a number (an int or a float, not a bool, which
    Python counts as an int): what a plugin checks before comparing it with its range."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """Whether an option's ``value`` is a number and neither NaN nor infinite: NaN passes
    every ``<`` check unnoticed, and a pass interval or buffer of ``inf`` seconds is no
    setting (``min_chunk=NaN`` and ``min_chunk=1e999`` on the command line are floats)."""
    return is_number(value) and math.isfinite(value)


def is_whole_number(value: object) -> bool:
    """Whether an option's ``value`` is a whole number (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)
