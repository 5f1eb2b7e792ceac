"""Device selection shared by the torch-based methods (imports torch lazily).

``--device`` / ``device=`` accepts ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` and
``cuda:N``. :func:`reprozoo.run` resolves it once before a run, so a method sees a concrete device.
"""

from __future__ import annotations

import re

__all__ = ["resolve_device", "describe_device"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device=None):
    """Return a ``torch.device``: ``"auto"``/None picks CUDA when available, else CPU.

    Raises ``ValueError`` naming ``device`` for a string other than auto/cpu/cuda/cuda:N, for a CUDA
    device on a machine without one, and for a CUDA index the machine does not have.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if device is None:
        device = "auto"
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"device={device!r} should be auto, cpu, cuda or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} requested but CUDA is not available on this machine; "
                             "use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def describe_device(device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``: what result.json records as the device used."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return dev.type
