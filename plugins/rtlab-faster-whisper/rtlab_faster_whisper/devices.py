"""Which device faster-whisper runs on. CTranslate2's CUDA build needs an NVIDIA GPU and
driver, and CUDA 12's cuBLAS and cuDNN 9 on the library path; each missing piece is named
in one line, instead of a failure deep inside the model load."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

from rtlab.errors import BackendUnavailable

#: Where an NVIDIA driver shows itself on Linux, without loading anything.
DRIVER_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")
#: The CUDA libraries CTranslate2 4.x loads on a GPU, per platform.
CUDA_LIBRARIES = {
    "linux": ("libcublas.so.12", "libcudnn.so.9"),
    "win32": ("cublas64_12.dll", "cudnn64_9.dll"),
}
CUDA_INSTALL = (
    "pip install nvidia-cublas-cu12 'nvidia-cudnn-cu12==9.*' and put their lib folders on "
    "LD_LIBRARY_PATH (see faster-whisper's README)"
)


def nvidia_driver_present() -> bool:
    """Whether this machine shows an NVIDIA driver (Linux device files)."""
    return any(os.path.exists(path) for path in DRIVER_PATHS)


def missing_cuda_libraries() -> list[str]:
    """The CUDA libraries CTranslate2 needs that the dynamic loader cannot find."""
    missing = []
    for name in CUDA_LIBRARIES.get(sys.platform, ()):
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def available() -> list[str]:
    """The devices faster-whisper can run on here, best first; [] without CTranslate2.
    Without an NVIDIA driver nothing is imported or loaded."""
    if importlib.util.find_spec("ctranslate2") is None:
        return []
    if not nvidia_driver_present():
        return ["cpu"]
    import ctranslate2

    return ["cuda", "cpu"] if ctranslate2.get_cuda_device_count() > 0 and not missing_cuda_libraries() else ["cpu"]


def resolve(requested: str) -> str:
    """The device to run on. ``auto`` is CUDA when CTranslate2 sees a GPU and its CUDA
    libraries load, else the CPU; ``cuda`` where either is missing raises
    :class:`~rtlab.errors.BackendUnavailable` naming what is missing."""
    if requested == "cpu":
        return "cpu"
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if requested == "auto":
        return "cuda" if gpus > 0 and not missing_cuda_libraries() else "cpu"
    if gpus == 0:
        driver = "an NVIDIA driver is present" if nvidia_driver_present() else "no NVIDIA driver found"
        raise BackendUnavailable(
            f"faster-whisper: device=cuda, but CTranslate2 {ctranslate2.__version__} sees no CUDA device "
            f"({driver}): use device=cpu or auto"
        )
    missing = missing_cuda_libraries()
    if missing:
        raise BackendUnavailable(
            f"faster-whisper: device=cuda needs {' and '.join(missing)} (CUDA 12 cuBLAS, cuDNN 9), which the "
            f"loader cannot find: {CUDA_INSTALL}; or use device=cpu"
        )
    return "cuda"


def check_compute_type(device: str, compute_type: str) -> None:
    """Refuse a compute type this device cannot run, naming the ones it can: a GPU by its
    compute capability (float16 needs 5.3, int8 6.1, bfloat16 8.0), a CPU by its
    instruction sets (float16 never; int16 with Intel MKL; bfloat16 where CTranslate2 has
    kernels for it)."""
    if compute_type in ("auto", "default"):
        return
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type not in supported:
        where = "this GPU" if device == "cuda" else "this CPU"
        hint = " (or device=cuda on a GPU)" if device == "cpu" and "float16" in compute_type else ""
        raise BackendUnavailable(
            f"faster-whisper: compute_type={compute_type} does not run on {where}; it runs: "
            f"{', '.join(sorted(supported))}{hint}"
        )
