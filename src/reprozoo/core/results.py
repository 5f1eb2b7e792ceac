"""Results of a run: tidy records (one number each) and their summary tables.

The JSON shape is the ``result.json`` schema of ARCHITECTURE.md::

    {"name", "preset", "config", "started", "seconds", "environment",
     "records": [{"dataset", "method", "role", "setting", "seed", "metric", "value"}, ...],
     "figures": ["figures/....png", ...],
     "notes": ["...", ...]}          # only when the run left remarks (fallbacks taken, ...)

``environment`` is ``{"python", "torch", "reprozoo", "git", "device", "threads"}``: ``torch`` is the
installed version (``"not installed"`` without it), ``git`` the short commit of the checkout
reprozoo runs from, with ``-dirty`` when it has uncommitted or untracked changes (``unknown`` outside git),
``device`` the device the run actually used, ``threads`` the torch/BLAS thread count it ran with (an int)
and ``cpu_seconds`` the run's user + system CPU time (a float).
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import math
import platform
import subprocess
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reprozoo import __version__

__all__ = ["ROLES", "Record", "Result", "environment", "mean_std", "utc_now"]

ROLES = ("method", "baseline", "reference")
RECORD_KEYS = ("dataset", "method", "role", "setting", "seed", "metric", "value")


@dataclass(frozen=True)
class Record:
    """One measured number: ``metric`` of ``method`` on ``dataset`` under ``setting`` and ``seed``."""

    dataset: str
    method: str
    role: str
    setting: str
    seed: int
    metric: str
    value: float

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role={self.role!r} should be one of {ROLES}")
        for key in ("dataset", "method", "setting", "metric"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"{key} should be a non-empty string, got {getattr(self, key)!r}")
        v = float(self.value)
        if not math.isfinite(v):
            raise ValueError(
                f"metric {self.metric!r} of {self.method!r} on {self.dataset!r} is {v}: "
                "non-finite values are not recorded; record why instead"
            )
        object.__setattr__(self, "value", v)
        object.__setattr__(self, "seed", int(self.seed))


def utc_now() -> str:
    """Current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(args: list[str], cwd: Path) -> str | None:
    """stdout of ``git *args`` in ``cwd``, or None when git is missing, fails or takes over 5 s."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=cwd)
    except Exception:
        return None
    return out.stdout if out.returncode == 0 else None


@functools.lru_cache(maxsize=8)
def git_commit(path: str | None = None) -> str:
    """Short commit of the git checkout holding ``path`` (default: this package), ``-dirty`` appended
    when ``git status --porcelain`` lists anything (or cannot be read); ``"unknown"`` outside a git
    checkout. Never raises.
    Cached per path for the process (a run is one process)."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    commit = (_git(["rev-parse", "--short", "HEAD"], cwd) or "").strip()
    if not commit:
        return "unknown"
    status = _git(["status", "--porcelain"], cwd)
    return commit + ("-dirty" if status is None or status.strip() else "")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(device: str = "cpu", threads: int | None = None,
                cpu_seconds: float | None = None) -> dict[str, Any]:
    """Versions that identify where a run happened: python, torch (installed version, read with
    :mod:`importlib.metadata` so it does not depend on what the method imported), reprozoo, git
    (commit, ``-dirty`` with uncommitted changes), the device used and the thread count; and the run's
    CPU seconds (user + system, its worker processes included), which on a busy machine say more about
    its cost than the wall-clock ``seconds``."""
    env = {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "reprozoo": __version__,
        "git": git_commit(),
        "device": device,
    }
    if threads is not None:
        env["threads"] = int(threads)
    if cpu_seconds is not None:
        env["cpu_seconds"] = round(float(cpu_seconds), 1)
    return env


@dataclass
class Result:
    """What one experiment run returns; ``core.report`` writes it to a run folder."""

    name: str
    preset: str
    config: dict[str, Any]
    started: str = field(default_factory=utc_now)
    seconds: float = 0.0
    environment: dict[str, Any] = field(default_factory=environment)
    records: list[Record] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # -- building -----------------------------------------------------------------
    def add(
        self,
        dataset: str,
        method: str,
        role: str,
        metric: str,
        value: float,
        *,
        seed: int = 0,
        setting: str = "default",
    ) -> None:
        """Append one record (validated: known role, finite value)."""
        self.records.append(Record(dataset, method, role, setting, seed, metric, value))

    def add_many(
        self,
        dataset: str,
        method: str,
        role: str,
        metrics: dict[str, float],
        *,
        seed: int = 0,
        setting: str = "default",
    ) -> None:
        """Append one record per ``metric: value`` pair."""
        for metric, value in metrics.items():
            self.add(dataset, method, role, metric, value, seed=seed, setting=setting)

    # -- querying -----------------------------------------------------------------
    def metrics(self) -> list[str]:
        """Metric names in first-seen order."""
        return list(dict.fromkeys(r.metric for r in self.records))

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.records))

    def summary(self) -> dict[tuple[str, str, str, str], dict[str, tuple[float, float, int]]]:
        """Mean, sample std and count over seeds.

        Returns ``{(dataset, setting, method, role): {metric: (mean, std, n)}}`` in first-seen order.
        """
        groups: dict[tuple[str, str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in self.records:
            groups[(r.dataset, r.setting, r.method, r.role)][r.metric].append(r.value)
        out = {}
        for key, by_metric in groups.items():
            out[key] = {m: mean_std(v) for m, v in by_metric.items()}
        return out

    # -- (de)serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "preset": self.preset,
            "config": self.config,
            "started": self.started,
            "seconds": round(float(self.seconds), 3),
            "environment": self.environment,
            "records": [asdict(r) for r in self.records],
            "figures": list(self.figures),
        }
        if self.notes:
            d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        missing = {"name", "preset", "config", "records"} - set(d)
        if missing:
            raise ValueError(f"result dict lacks the key(s) {sorted(missing)}")
        records = []
        for i, r in enumerate(d["records"]):
            if set(r) != set(RECORD_KEYS):
                raise ValueError(f"records[{i}] should have exactly the keys {RECORD_KEYS}, got {sorted(r)}")
            records.append(Record(**r))
        return cls(
            name=d["name"],
            preset=d["preset"],
            config=d["config"],
            started=d.get("started", ""),
            seconds=float(d.get("seconds", 0.0)),
            environment=d.get("environment", {}),
            records=records,
            figures=list(d.get("figures", [])),
            notes=list(d.get("notes", [])),
        )

    @classmethod
    def load(cls, path: str | Path) -> Result:
        """Read a ``result.json`` file."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """``(mean, sample std, n)`` of ``values`` (std 0 for one value).

    >>> mean_std([1.0, 3.0])
    (2.0, 1.4142135623730951, 2)
    """
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, n
