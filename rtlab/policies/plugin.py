"""Registers the built-in streaming policies as an ordinary plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .alignatt import AlignAtt
from .local_agreement import LocalAgreement


@hookimpl
def register_policies(register):
    register(LocalAgreement)
    register(AlignAtt)
