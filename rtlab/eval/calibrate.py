"""Fit a cost model for the ``modeled`` clock by timing real passes on this machine.

A configuration streams speech on the simulated clock, one pass at a time, with
``min_chunk`` varied so that the passes cover short and long buffers; every pass's
features (what its backend calls did) and measured compute become one sample, and
:func:`rtlab.core.costs.fit` finds the weights. The first pass is left out: it warms the
model up and costs more than the passes after it.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import StreamConfig
from ..core.costs import Calibration, CostModel, CostModelError, fit, key_for, load_cost_model
from ..core.feeding import feed_bytes
from ..core.processor import AudioProcessor
from ..decoders.files import decode_audio, to_pcm16
from ..registry import get_registry

#: ``min_chunk`` values a calibration streams with (policies that accept the option).
MIN_CHUNKS = (0.5, 1.0, 2.0)


def calibration_audio(paths: Sequence[str | os.PathLike[str]] = (), times: int = 3) -> np.ndarray:
    """The speech to calibrate on: ``paths`` joined (default: rtlab's bundled speech clip
    said ``times`` times), so that buffers grow as long as a stream's do."""
    from ..testing import SPEECH_CLIP

    clips = [decode_audio(path) for path in (paths or [SPEECH_CLIP] * times)]
    return np.concatenate(clips) if clips else np.zeros(0, np.float32)


async def measure_passes(
    config: StreamConfig,
    audio: np.ndarray,
    *,
    repeats: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[tuple[dict[str, float], float]], Any]:
    """``(features, measured seconds)`` of every pass of ``config`` over ``audio`` (at each
    of :data:`MIN_CHUNKS` when the policy takes ``min_chunk``), and the backend instance."""
    accepts_chunk = "min_chunk" in get_registry().accepted_options("policy", config.policy)
    chunks = MIN_CHUNKS if accepts_chunk else (None,)
    pcm = to_pcm16(audio)
    passes: list[tuple[dict[str, float], float]] = []
    backend = None
    for _ in range(repeats):
        for min_chunk in chunks:
            options = dict(config.policy_options)
            if min_chunk is not None:
                options["min_chunk"] = min_chunk
            stream = config.replace(decoder="pcm_s16le", decoder_options={}, policy_options=options)
            processor = AudioProcessor(stream, clock="simulated")
            events = await processor.create_tasks()
            feeder = asyncio.create_task(feed_bytes(processor, pcm, realtime=False))
            last = None
            async for event in events:
                last = event
            await feeder
            await processor.cleanup()
            if last is None or last["type"] != "summary":
                raise CostModelError(f"calibration stream failed: {last.get('message') if last else 'no events'}")
            backend = processor.backend
            passes += [(dict(features), seconds) for features, seconds in processor.pass_costs]
            if progress is not None:
                progress(len(passes))
    return passes[1:], backend  # the first pass warms the model up


async def calibrate_async(
    config: StreamConfig,
    *,
    audio: Sequence[str | os.PathLike[str]] = (),
    repeats: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Calibration:
    """The calibration of ``config``'s backend on this machine (see the module docstring)."""
    passes, backend = await measure_passes(config, calibration_audio(audio), repeats=repeats, progress=progress)
    return fit(passes, key_for(config, backend))


def cost_model_to_extend(path: str | os.PathLike[str]) -> CostModel:
    """The cost model in ``path`` that a calibration on this machine is added to (a new
    one when the file does not exist), with this machine's hardware and versions. Raises
    :class:`CostModelError` for a file that is not a cost model or was calibrated on other
    hardware: ``rtlab calibrate`` asks before it times any pass, so that a wrong ``--out``
    costs no calibration, and hands the model to :func:`save_calibration`."""
    from .metrics import environment_info

    target = Path(path)
    environment = environment_info()
    hardware = _hardware(environment)
    model = load_cost_model(target) if target.exists() else CostModel()
    if model.calibrations and model.hardware and model.hardware != hardware:
        raise CostModelError(
            f"{target} was calibrated on other hardware ({model.hardware.get('platform')}, "
            f"{model.hardware.get('cpu_count')} CPUs): write this machine's calibration to another file"
        )
    model.hardware = hardware
    model.versions = {"python": environment.get("python"), **environment.get("packages", {})}
    return model


def _hardware(environment: dict[str, Any]) -> dict[str, Any]:
    """What of :func:`~rtlab.eval.metrics.environment_info` a cost model is tied to."""
    return {k: environment.get(k) for k in ("platform", "machine", "processor", "cpu_count", "memory_total_bytes")}


def save_calibration(
    calibration: Calibration, path: str | os.PathLike[str], note: str = "", *, model: CostModel | None = None
) -> CostModel:
    """Add ``calibration`` to the cost model for ``path`` (one for the same key is
    replaced) and write it there. ``model``: what :func:`cost_model_to_extend` gave for
    ``path`` before the timing (default: asked now; the file is created if missing); a
    file written since is read again, so that nothing another calibration added is lost."""
    model = cost_model_to_extend(path) if model is None else model
    target = Path(path)
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() != model.sha256:
        # Written since it was read (another calibration into the same file, during the
        # timing): add to what it holds now rather than overwrite it.
        model = cost_model_to_extend(target)
    model.add(calibration)
    model.created = datetime.date.today().isoformat()
    model.note = note or model.note
    model.save(target)
    return model
