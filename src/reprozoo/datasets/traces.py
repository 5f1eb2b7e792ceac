"""Real cellular link-capacity traces (mahimahi format) binned into slots and quantised into states.

The shipped folder ``data/cellular_traces/`` holds six traces of U.S. LTE links (AT&T, T-Mobile,
Verizon; up- and downlink) from the mahimahi emulator's repository (see its PROVENANCE.md). Each
file lists one integer per line: the millisecond at which one 1500-byte packet could be delivered.

Two documented parameters turn a trace into a scheduling channel:

* ``slot_ms``: width of a slot in milliseconds; the trace becomes the number of packets
  deliverable in each slot (:func:`bin_trace`).
* ``n_states``: the counts are quantised into ``n_states`` channel states by the empirical
  quantiles of a reference part of the series (:func:`quantise_capacity`); state 1 is the best
  (highest capacity) and state ``n_states`` the worst, so that a larger state means a worse
  channel, as the state ``c`` does in the RSD4 success-probability model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reprozoo.core.checks import check_float, check_int
from reprozoo.datasets._paths import find_data_file

__all__ = [
    "CELLULAR_TRACES",
    "CellularTrace",
    "bin_trace",
    "load_cellular_trace",
    "quantise_capacity",
]

#: File names of the shipped traces (``data/cellular_traces/<name>``).
CELLULAR_TRACES = (
    "ATT-LTE-driving-2016.down",
    "TMobile-LTE-short.down",
    "Verizon-LTE-short.down",
    "ATT-LTE-driving-2016.up",
    "TMobile-LTE-short.up",
    "Verizon-LTE-short.up",
)
SOURCE = (
    "the mahimahi emulator's repository (github.com/ravinet/mahimahi, folder traces/); "
    "see data/cellular_traces/PROVENANCE.md"
)


@dataclass(frozen=True)
class CellularTrace:
    """A cellular trace binned into slots.

    Attributes
    ----------
    name : str
        File name of the trace.
    slot_ms : float
        Slot width in milliseconds.
    counts : ndarray, int64, shape (n_slots,)
        Packets (1500 bytes) deliverable in each slot.
    path : Path
        The file it was read from.
    """

    name: str
    slot_ms: float
    counts: np.ndarray
    path: Path


def bin_trace(timestamps_ms: np.ndarray, slot_ms: float) -> np.ndarray:
    """Count delivery opportunities per slot.

    Parameters
    ----------
    timestamps_ms : ndarray, shape (n,)
        Non-negative, non-decreasing delivery timestamps in milliseconds.
    slot_ms : float
        Slot width in milliseconds (> 0).

    Returns
    -------
    ndarray, int64, shape (floor(max(t) / slot_ms) + 1,)
        Count of timestamps falling in ``[k * slot_ms, (k + 1) * slot_ms)``. O(n).
    """
    t = np.asarray(timestamps_ms, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"timestamps_ms should be a non-empty 1-D array, got shape {t.shape}")
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("timestamps_ms should be finite and non-negative")
    check_float(slot_ms, "slot_ms", low=0.0, low_inclusive=False)  # milliseconds
    idx = np.floor(t / slot_ms).astype(np.int64)
    return np.bincount(idx, minlength=int(idx.max()) + 1).astype(np.int64)


def load_cellular_trace(name: str, slot_ms: float = 100.0, *, path: str | Path | None = None) -> CellularTrace:
    """Load one shipped cellular trace and bin it into slots of ``slot_ms`` milliseconds.

    Parameters
    ----------
    name : str
        One of :data:`CELLULAR_TRACES` (e.g. ``"Verizon-LTE-short.down"``).
    slot_ms : float, default 100
        Slot width in milliseconds.
    path : path, optional
        Explicit file to read instead of the lookup (``$REPROZOO_DATA``, ``data/``, ``~/.cache``).

    Raises
    ------
    DataNotFoundError
        The file is in none of the data roots. ``ChecksumError`` if it fails its SHA-256.
    ValueError
        Unknown ``name``, bad ``slot_ms`` or a file that is not one integer per line.
    """
    if path is None:
        if name not in CELLULAR_TRACES:
            raise ValueError(f"name={name!r} is not a shipped trace; choose one of {list(CELLULAR_TRACES)}")
        path = find_data_file([f"cellular_traces/{name}"], source=SOURCE)
    path = Path(path)
    try:
        ts = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise ValueError(f"{path} is not a mahimahi trace (one integer timestamp per line): {exc}") from exc
    if ts.ndim != 1:
        raise ValueError(f"{path} is not a mahimahi trace: expected one number per line")
    return CellularTrace(name=name, slot_ms=float(slot_ms), counts=bin_trace(ts, slot_ms), path=path)


def quantise_capacity(counts: np.ndarray, n_states: int, reference: np.ndarray | None = None) -> np.ndarray:
    """Quantise capacities into channel states ``1..n_states`` (1 = best, highest capacity).

    Parameters
    ----------
    counts : ndarray, shape (n,)
        Packets deliverable per slot.
    n_states : int
        Number of states (>= 1).
    reference : ndarray, optional
        Values whose empirical quantiles give the state boundaries (default ``counts``); pass the
        training part of a series so that the evaluation part is quantised with the same edges.

    Returns
    -------
    ndarray, int64, shape (n,)
        State of each slot; equal-mass bins of ``reference``. O(n log n).
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"counts should be a non-empty 1-D array, got shape {c.shape}")
    n_states = check_int(n_states, "n_states", low=1)
    ref = c if reference is None else np.asarray(reference, dtype=np.float64)
    edges = np.quantile(ref, np.linspace(0, 1, n_states + 1)[1:-1])
    # bin 0 = lowest capacity; flip so that state 1 is the best channel
    level = np.searchsorted(edges, c, side="right")
    return (n_states - level).astype(np.int64)
