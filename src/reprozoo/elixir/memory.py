"""Fast devices (where the rCache lives) and the re-fittable cost models of Elixir's placement.

Elixir sizes everything against the memory of the fast device (a GPU; v3 Sec. 4). To prove that claim on a
machine without one, the fast device is pluggable:

* :class:`AccountingDevice` allocates ordinary CPU tensors but books every byte it hands out in a ledger and
  raises :class:`BudgetExceeded` when an allocation would pass ``budget_bytes``; ``peak_bytes`` is the
  ledger's high-water mark. On CPU this *is* the fast device of the tests and the experiment.
* :class:`CudaDevice` allocates on a CUDA device and reads ``torch.cuda.max_memory_allocated``.
* :class:`HostDevice` is the slow side (CPU memory, pinned when CUDA is present), unbudgeted.

:class:`CostModel` holds the paper's fitted linear models for ``n`` GPUs (v3 Sec. 4.3): CPU->GPU
``16.3 n + 8.7`` GB/s, GPU->CPU ``15.8 n + 2.3`` GB/s, GPU Adam ``50 n`` and CPU Adam ``1.66 ln n + 5.15``
(G elements/s). :meth:`CostModel.fit` refits any of them from measurements.

>>> dev = AccountingDevice(budget_bytes=64)
>>> t = dev.alloc(8, torch.float32)          # 32 bytes
>>> dev.used_bytes, dev.peak_bytes
(32, 32)
>>> dev.alloc(16, torch.float32)  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
BudgetExceeded: allocating 64 bytes (shard) would bring the fast device to 96 bytes > budget 64 bytes
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["BudgetExceeded", "FastDevice", "AccountingDevice", "CudaDevice", "HostDevice", "CostModel"]


class BudgetExceeded(MemoryError):
    """An allocation on the fast device would exceed its memory budget."""


class FastDevice:
    """Protocol of a fast device: ``alloc(numel, dtype, tag) -> Tensor`` (zeros), ``release(tensor)``,
    ``reserve(nbytes, tag)`` (book memory used outside chunks, e.g. predicted activations), ``peak_bytes``,
    ``used_bytes``, ``budget_bytes`` (None = the device's own limit) and ``torch_device``."""

    torch_device: torch.device
    budget_bytes: int | None

    def alloc(self, numel: int, dtype: torch.dtype, tag: str = "shard") -> torch.Tensor:
        raise NotImplementedError

    def release(self, tensor: torch.Tensor) -> None:
        raise NotImplementedError

    def reserve(self, nbytes: int, tag: str = "reserve") -> None:
        raise NotImplementedError

    def unreserve(self, nbytes: int, tag: str = "reserve") -> None:
        raise NotImplementedError

    def grow(self, block: torch.Tensor, tag: str = "rcache") -> None:
        """Give a zero-storage ``block`` (allocated on this device) its full storage."""
        nbytes = block.numel() * block.element_size()
        self.reserve(nbytes, tag)
        block.untyped_storage().resize_(nbytes)

    def shrink(self, block: torch.Tensor, tag: str = "rcache") -> None:
        """Free ``block``'s storage (its views stay valid objects, with zero storage)."""
        block.untyped_storage().resize_(0)
        self.unreserve(block.numel() * block.element_size(), tag)

    @property
    def peak_bytes(self) -> int:
        raise NotImplementedError

    @property
    def used_bytes(self) -> int:
        raise NotImplementedError


class AccountingDevice(FastDevice):
    """A CPU "fast device" that books every allocation in a ledger capped at ``budget_bytes``.

    ``by_tag`` gives the bytes in use per tag (rcache, shard, master, optim, private, reserve...).
    """

    def __init__(self, budget_bytes: int | None) -> None:
        self.torch_device = torch.device("cpu")
        self.budget_bytes = None if budget_bytes is None else int(budget_bytes)
        self._used = 0
        self._peak = 0
        self.by_tag: dict[str, int] = {}
        self._sizes: dict[int, tuple[int, str]] = {}

    def _book(self, nbytes: int, tag: str) -> None:
        if self.budget_bytes is not None and self._used + nbytes > self.budget_bytes:
            raise BudgetExceeded(f"allocating {nbytes} bytes ({tag}) would bring the fast device to "
                                 f"{self._used + nbytes} bytes > budget {self.budget_bytes} bytes")
        self._used += nbytes
        self._peak = max(self._peak, self._used)
        self.by_tag[tag] = self.by_tag.get(tag, 0) + nbytes

    def alloc(self, numel: int, dtype: torch.dtype, tag: str = "shard") -> torch.Tensor:
        nbytes = int(numel) * torch.empty((), dtype=dtype).element_size()
        self._book(nbytes, tag)
        t = torch.zeros(int(numel), dtype=dtype)
        self._sizes[id(t)] = (nbytes, tag)
        return t

    def release(self, tensor: torch.Tensor) -> None:
        nbytes, tag = self._sizes.pop(id(tensor))
        self._used -= nbytes
        self.by_tag[tag] -= nbytes

    def reserve(self, nbytes: int, tag: str = "reserve") -> None:
        self._book(int(nbytes), tag)

    def unreserve(self, nbytes: int, tag: str = "reserve") -> None:
        self._used -= int(nbytes)
        self.by_tag[tag] -= int(nbytes)

    @property
    def peak_bytes(self) -> int:
        return self._peak

    @property
    def used_bytes(self) -> int:
        return self._used


class CudaDevice(FastDevice):
    """A CUDA device; ``peak_bytes`` is ``torch.cuda.max_memory_allocated`` (reset on construction)."""

    def __init__(self, device: str | torch.device = "cuda", budget_bytes: int | None = None) -> None:
        self.torch_device = torch.device(device)
        if budget_bytes is None:
            budget_bytes = torch.cuda.get_device_properties(self.torch_device).total_memory
        self.budget_bytes = int(budget_bytes)
        self._reserved = 0
        torch.cuda.reset_peak_memory_stats(self.torch_device)

    def alloc(self, numel: int, dtype: torch.dtype, tag: str = "shard") -> torch.Tensor:
        return torch.zeros(int(numel), dtype=dtype, device=self.torch_device)

    def release(self, tensor: torch.Tensor) -> None:
        del tensor

    def reserve(self, nbytes: int, tag: str = "reserve") -> None:
        self._reserved += int(nbytes)

    def unreserve(self, nbytes: int, tag: str = "reserve") -> None:
        self._reserved -= int(nbytes)

    @property
    def peak_bytes(self) -> int:
        return int(torch.cuda.max_memory_allocated(self.torch_device))

    @property
    def used_bytes(self) -> int:
        return int(torch.cuda.memory_allocated(self.torch_device))


class HostDevice:
    """The slow side: CPU memory (pinned when CUDA is available), not budgeted."""

    torch_device = torch.device("cpu")

    def alloc(self, numel: int, dtype: torch.dtype, tag: str = "shard") -> torch.Tensor:
        t = torch.zeros(int(numel), dtype=dtype)
        return t.pin_memory() if torch.cuda.is_available() else t

    def release(self, tensor: torch.Tensor) -> None:
        del tensor


@dataclass
class CostModel:
    """Linear cost models in the number of GPUs ``n`` (v3 Sec. 4.3); ``(a, b)`` means ``a * x(n) + b``.

    Bandwidths in GB/s (``x(n) = n``); Adam speeds in G elements/s (``x(n) = n`` on GPU,
    ``x(n) = ln n`` on CPU).
    """

    h2d: tuple[float, float] = (16.3, 8.7)
    d2h: tuple[float, float] = (15.8, 2.3)
    gpu_adam: tuple[float, float] = (50.0, 0.0)
    cpu_adam: tuple[float, float] = (1.66, 5.15)
    extra: dict[str, float] = field(default_factory=dict)

    def h2d_gbps(self, n: int) -> float:
        return self.h2d[0] * n + self.h2d[1]

    def d2h_gbps(self, n: int) -> float:
        return self.d2h[0] * n + self.d2h[1]

    def gpu_adam_geps(self, n: int) -> float:
        return self.gpu_adam[0] * n + self.gpu_adam[1]

    def cpu_adam_geps(self, n: int) -> float:
        return self.cpu_adam[0] * math.log(n) + self.cpu_adam[1]

    def fit(self, name: str, n: list[int] | np.ndarray, values: list[float] | np.ndarray) -> CostModel:
        """Refit model ``name`` (h2d, d2h, gpu_adam, cpu_adam) by least squares; returns ``self``."""
        if name not in ("h2d", "d2h", "gpu_adam", "cpu_adam"):
            raise ValueError(f"name={name!r} should be one of h2d, d2h, gpu_adam, cpu_adam")
        n = np.asarray(n, dtype=float)
        x = np.log(n) if name == "cpu_adam" else n
        a, b = np.polyfit(x, np.asarray(values, dtype=float), 1)
        setattr(self, name, (float(a), float(b)))
        return self
