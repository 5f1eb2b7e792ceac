"""Device selection shared by the torch-based methods (imports torch lazily)."""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(device: str | None = "auto"):
    """Return a ``torch.device``: ``"auto"``/None picks CUDA when available, else CPU.

    Raises ``ValueError`` for a CUDA device on a machine without one.
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use device='cpu'")
    return dev
