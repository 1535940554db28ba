"""Cost models: the compute a pass costs, predicted from what the pass did.

The ``modeled`` clock (see :mod:`rtlab.core.clock`) adds a pass's *predicted* compute
instead of its measured compute, so that the same audio and configuration give the same
events on every run and, with the same cost-model file, on every machine.

A pass's *features* are what its backend calls did, summed over the calls: by default
(:meth:`rtlab.backends.Backend.cost_features`) one per call, the seconds of audio passed
in, the words returned and the words of the prompt; a backend may report finer ones (say,
encoder windows and decoded tokens). A :class:`CostModel` predicts a pass's compute as a
non-negative weighted sum of its features, one set of weights per *calibration*: a
backend with all of its options (defaults filled in) on a device. ``rtlab calibrate`` fits
the weights by timing real passes (:func:`fit`) and writes them to a JSON file that names
the hardware, the versions and the quality of the fit.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import Backend, written_whole
from ..config import DEFAULT_POLICY, StreamConfig
from ..errors import RtlabError

#: The file format's version; a file of another version is refused (recalibrate).
FORMAT_VERSION = 1
#: The cost models rtlab ships: the embedded models on its reference CPU.
REFERENCE_FILE = "reference-cpu-costs.json"


class CostModelError(RtlabError):
    """A cost model that cannot be used: missing, malformed, outdated, or without a
    calibration for the stream's backend, options or device."""

    code = "cost_model"


#: Backend options that say how passes are run together, not what one pass computes: a
#: cost model predicts a pass as if it ran alone, batched or not.
EXECUTION_OPTIONS = frozenset({"device", "max_batch", "batch_wait_ms"})


def calibration_key(backend: str, options: Mapping[str, Any], device: str | None) -> dict[str, Any]:
    """What a calibration is for: the backend, every option with its default filled in
    (as JSON values) but those of :data:`EXECUTION_OPTIONS`, and the device the model
    runs on."""
    jsonable = {k: v for k, v in sorted(options.items()) if k not in EXECUTION_OPTIONS}
    return json.loads(json.dumps({"backend": backend, "options": jsonable, "device": device}, default=repr))


def _without_execution_options(key: Mapping[str, Any]) -> dict[str, Any]:
    """``key`` as read from a file, less the options of :data:`EXECUTION_OPTIONS` (files
    written before they were left out name them)."""
    options = {k: v for k, v in key["options"].items() if k not in EXECUTION_OPTIONS}
    return {**key, "options": options}


def key_for(config: StreamConfig, backend: Backend) -> dict[str, Any]:
    """The calibration key of ``config``'s backend, loaded as ``backend`` (for its device
    and the values it chose for options left unset, :meth:`~rtlab.backends.Backend.resolved_options`)."""
    from ..registry import get_registry

    options = {**get_registry().accepted_options("backend", config.backend), **config.backend_kwargs()}
    options.update({k: v for k, v in backend.resolved_options().items() if options.get(k) is None})
    return calibration_key(config.backend, options, backend.info().get("device"))


def _chosen(key: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``key`` that differ from its backend's defaults (all of them when the
    backend is not installed here), and the model."""
    from ..registry import get_registry

    try:
        defaults = calibration_key(key["backend"], get_registry().accepted_options("backend", key["backend"]), None)
    except RtlabError:
        return dict(key["options"])
    return {
        name: value for name, value in key["options"].items()
        if name == "model" or value != defaults["options"].get(name, object())
    }  # fmt: skip


def _unlike(have: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    """`` (unlike it: window_padding not named)``: where the key ``have`` of a file differs
    from the key ``want`` in options :func:`describe_key` leaves out (an option added to
    the backend since the file was written, one set to its default), or ``""``."""
    shown = set(_chosen(have)) | set(_chosen(want))
    missing = object()
    differences = []
    for name in sorted((set(have["options"]) | set(want["options"])) - shown):
        mine, theirs = have["options"].get(name, missing), want["options"].get(name, missing)
        if mine != theirs:
            differences.append(f"{name} not named" if mine is missing else f"{name}={mine}")
    return f" (unlike it: {', '.join(differences)})" if differences else ""


def describe_key(key: Mapping[str, Any]) -> str:
    """``faster-whisper (model=tiny.en, pad_seconds=1, device=cpu)`` for messages: the
    options that differ from the backend's defaults."""
    options = ", ".join(f"{k}={v}" for k, v in _chosen(key).items() if v is not None)
    return f"{key['backend']} ({options + ', ' if options else ''}device={key['device']})"


def calibrate_command(key: Mapping[str, Any], out: str, policy: str | None = None) -> str:
    """The ``rtlab calibrate`` command line that fits ``key``'s calibration into ``out``,
    timing the passes of ``policy`` (default: the default policy's)."""
    words = ["rtlab calibrate", "--backend", key["backend"]]
    for name, value in sorted(_chosen(key).items(), key=lambda item: item[0] != "model"):
        if value is None:
            continue
        if name == "model":
            words += ["--model", str(value)]
        else:
            words += ["-b", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
    words += ["--out", out]
    if policy is not None and policy != DEFAULT_POLICY:
        words += ["--policy", policy]  # its passes report other features (AlignAtt: its decoder's)
    return " ".join(words)


@dataclass
class Calibration:
    """The weights of one backend configuration on one device, and how well they fit."""

    key: dict[str, Any]
    weights: dict[str, float]
    fit: dict[str, Any] = field(default_factory=dict)

    def predict(self, features: Mapping[str, float], policy: str | None = None) -> float:
        """Seconds of compute for a pass with ``features``; a feature without a weight is
        an error (the backend reports what this calibration did not see, or ``policy``'s
        passes were not the ones timed: recalibrate)."""
        unknown = sorted(set(features) - set(self.weights))
        if unknown:
            raise CostModelError(
                f"the cost model for {describe_key(self.key)} has no weight for {unknown[0]!r} "
                f"(the backend reports features it was not calibrated with): recalibrate with "
                f"{calibrate_command(self.key, 'FILE', policy)}"
            )
        return float(sum(self.weights[name] * float(value) for name, value in features.items()))


@dataclass
class CostModel:
    """Calibrations read from (or written to) one JSON file."""

    calibrations: list[Calibration] = field(default_factory=list)
    hardware: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    note: str = ""
    path: str | None = None
    sha256: str | None = None

    def find(self, key: Mapping[str, Any]) -> Calibration:
        """The calibration for ``key``, or a one-line error saying how to make one."""
        for calibration in self.calibrations:
            if calibration.key == dict(key):
                return calibration
        where = self.path or "this cost model"
        same_backend = [c for c in self.calibrations if c.key["backend"] == key["backend"]]
        known = "; it has " + ", ".join(describe_key(c.key) + _unlike(c.key, key) for c in same_backend) if same_backend else ""
        if self.path is None or self.path == f"rtlab's {REFERENCE_FILE}":
            # rtlab's own file is not the user's to write: fit into a file of theirs.
            how = f"{calibrate_command(key, 'rtlab-costs.json')}, then pass --cost-model rtlab-costs.json"
        else:
            how = calibrate_command(key, self.path)
        raise CostModelError(
            f"{where} has no calibration for {describe_key(key)}{known}. Fit one on this machine: {how}"
        )

    def add(self, calibration: Calibration) -> None:
        """Add ``calibration``, replacing one for the same key."""
        self.calibrations = [c for c in self.calibrations if c.key != calibration.key] + [calibration]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rtlab_cost_model": FORMAT_VERSION,
            "created": self.created,
            "note": self.note,
            "hardware": self.hardware,
            "versions": self.versions,
            "calibrations": [
                {"key": c.key, "weights": c.weights, "fit": c.fit} for c in self.calibrations
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON file (atomically: a temporary file, then a rename)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"
        with written_whole(target) as partial:
            partial.write_text(text, encoding="utf-8")
        self.path, self.sha256 = str(target), hashlib.sha256(text.encode()).hexdigest()
        return target

    def describe(self) -> dict[str, Any]:
        """What results record about the cost model: its file, hash, hardware and note."""
        return {"path": self.path, "sha256": self.sha256, "hardware": self.hardware, "note": self.note}


def load_cost_model(path: CostModel | str | os.PathLike[str] | None = None) -> CostModel:
    """The cost model in ``path`` (default: the one rtlab ships for its reference CPU); a
    :class:`CostModel` already loaded is returned as it is.

    Raises :class:`CostModelError` for a missing, malformed or outdated file."""
    if isinstance(path, CostModel):
        return path
    if path is None:
        where = f"rtlab's {REFERENCE_FILE}"
        try:
            text = (resources.files("rtlab") / "data" / REFERENCE_FILE).read_text(encoding="utf-8")
        except OSError:
            raise CostModelError(
                f"{where} is missing from this installation: reinstall rtlab, or give a cost "
                f"model of your own with --cost-model FILE (rtlab calibrate --out FILE)"
            ) from None
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise CostModelError(
                f"cannot read the cost model {where} ({error.strerror or error}): give a file "
                f"written by 'rtlab calibrate --out FILE'"
            ) from None
        except UnicodeDecodeError:
            raise CostModelError(
                f"{where} is not a cost model (not UTF-8 text): give a file written by 'rtlab calibrate --out FILE'"
            ) from None
    try:
        data = json.loads(text)
        version = data.get("rtlab_cost_model")
        if version != FORMAT_VERSION:
            raise CostModelError(
                f"{where} is a cost model of format {version!r}, this rtlab reads format "
                f"{FORMAT_VERSION}: recalibrate with 'rtlab calibrate --out {where}'"
            )
        calibrations = [
            Calibration(_without_execution_options(c["key"]), {k: float(v) for k, v in c["weights"].items()},
                        dict(c.get("fit", {})))
            for c in data["calibrations"]
        ]  # fmt: skip
    except CostModelError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CostModelError(
            f"{where} is not a cost model ({type(error).__name__}: {error}): write one with "
            f"'rtlab calibrate --out FILE'"
        ) from None
    return CostModel(
        calibrations=calibrations,
        hardware=dict(data.get("hardware", {})),
        versions=dict(data.get("versions", {})),
        created=str(data.get("created", "")),
        note=str(data.get("note", "")),
        path=str(path) if path is not None else where,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


#: What each clock does with compute, for :func:`cost_model_for_clock`'s message.
_OTHER_CLOCKS = {
    "wall": "streams in real time",
    "simulated": "counts each pass's measured compute",
    "unaware": "counts no compute",
}


def cost_model_summary(described: Mapping[str, Any]) -> str:
    """A cost model as a table header names it, from its :meth:`CostModel.describe`:
    ``PATH (sha256 0123456789ab, NOTE)``."""
    return f"{described['path']} (sha256 {str(described['sha256'])[:12]}, {described.get('note') or 'no note on its hardware'})"


def cost_model_for_clock(
    clock: str, path: str | os.PathLike[str] | CostModel | None, *, option: str = "--cost-model",
    modeled: str = "--clock modeled",
) -> CostModel | None:
    """The cost model asked for with ``option`` (``--cost-model PATH``; None: rtlab's
    reference CPU) on ``clock``: loaded once, before any work, on the ``modeled`` clock;
    None on the others. One given for another clock is a mistake, not something to ignore
    (the user would take the figures for modeled ones): raises :class:`CostModelError`
    saying so in one line (``modeled`` names the fix), as it does for a file that cannot
    be used."""
    if clock != "modeled":
        if path is not None:
            raise CostModelError(
                f"{option} is the modeled clock's cost model, and the {clock} clock "
                f"{_OTHER_CLOCKS.get(clock, 'does not use one')}: add {modeled}, or leave {option} out"
            )
        return None
    return load_cost_model(path)


def add_features(total: dict[str, float], features: Mapping[str, float]) -> None:
    """``total += features``, feature by feature."""
    for name, value in features.items():
        total[name] = total.get(name, 0.0) + float(value)


def fit(
    passes: Sequence[tuple[Mapping[str, float], float]], key: Mapping[str, Any]
) -> Calibration:
    """Non-negative weights that predict each pass's measured seconds from its features
    (least squares; a feature whose weight would be negative gets none), and how well
    they fit: R², median and p95 absolute error, and the number of passes."""
    if len(passes) < 3:
        raise CostModelError(f"calibration needs at least 3 passes, got {len(passes)}: give it more audio")
    names = sorted({name for features, _ in passes for name in features})
    x = np.array([[float(features.get(name, 0.0)) for name in names] for features, _ in passes])
    y = np.array([float(seconds) for _, seconds in passes])
    active = list(range(len(names)))
    weights = np.zeros(len(names))
    while active:
        solution, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (solution >= 0).all():
            weights[active] = solution
            break
        active.pop(int(np.argmin(solution)))  # the most negative weight leaves; fit again
    predicted = x @ weights
    errors = np.abs(predicted - y)
    spread = float(((y - y.mean()) ** 2).sum())
    quality = {
        "passes": len(passes),
        "r2": round(1 - float(((predicted - y) ** 2).sum()) / spread, 4) if spread > 0 else None,
        "median_abs_error_seconds": round(float(np.median(errors)), 5),
        "p95_abs_error_seconds": round(float(np.percentile(errors, 95)), 5),
        "mean_measured_seconds": round(float(y.mean()), 5),
        "date": datetime.date.today().isoformat(),
    }
    return Calibration(dict(key), {name: float(w) for name, w in zip(names, weights)}, quality)
