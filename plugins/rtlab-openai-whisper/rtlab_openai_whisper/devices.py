"""Which device openai-whisper runs on: asked cheaply for listings, for real at load."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

from rtlab.errors import BackendUnavailable

CHOICES = ("auto", "cpu", "cuda")
#: Where an NVIDIA driver shows itself on Linux, without loading anything.
DRIVER_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")
GPU_INSTALL = "pip install torch==VERSION --index-url https://download.pytorch.org/whl/cu130"


def nvidia_driver_present() -> bool:
    """Whether this machine shows an NVIDIA driver (Linux device files)."""
    return any(os.path.exists(path) for path in DRIVER_PATHS)


def torch_build_cuda() -> str | None:
    """The CUDA version the installed PyTorch was built for, read from its ``version.py``
    without importing it (None: a CPU build, or no PyTorch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.version.cuda
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return found.group(1) if found else None


def available() -> list[str]:
    """The devices openai-whisper can run on here, best first; [] without PyTorch or
    openai-whisper. Cheap: PyTorch is asked only when something imported it already."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("whisper") is None:
        return []
    torch = sys.modules.get("torch")
    if torch is not None:
        cuda = torch.cuda.is_available()
    else:
        cuda = torch_build_cuda() is not None and nvidia_driver_present()
    return ["cuda", "cpu"] if cuda else ["cpu"]


def resolve(requested: str) -> str:
    """The device to run on: ``auto`` is CUDA when PyTorch sees a GPU. Asking for CUDA
    where there is none raises :class:`~rtlab.errors.BackendUnavailable`, one line naming
    what is missing."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            raise BackendUnavailable(
                f"openai-whisper: device=cuda, but PyTorch {torch.__version__} is a CPU build: install a CUDA "
                f"build ({GPU_INSTALL.replace('VERSION', torch.__version__.split('+')[0])}) or use device=cpu"
            )
        raise BackendUnavailable(
            f"openai-whisper: device=cuda, but PyTorch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: "
            f"no NVIDIA GPU or driver ({'driver found' if nvidia_driver_present() else 'no driver found'}); "
            f"use device=cpu or auto"
        )
    return requested
