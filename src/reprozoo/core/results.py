"""Results of a run: tidy records (one number each) and their summary tables.

The JSON shape is the ``result.json`` schema of ARCHITECTURE.md::

    {"name", "preset", "config", "started", "seconds", "environment",
     "records": [{"dataset", "method", "role", "setting", "seed", "metric", "value"}, ...],
     "figures": ["figures/....png", ...]}
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reprozoo import __version__

__all__ = ["ROLES", "Record", "Result", "environment", "utc_now"]

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


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def environment(device: str = "cpu") -> dict[str, str]:
    """Versions that identify where a run happened (python, torch if imported, reprozoo, git, device)."""
    env = {"python": platform.python_version(), "reprozoo": __version__, "git": _git_commit(), "device": device}
    if "torch" in sys.modules:
        env["torch"] = sys.modules["torch"].__version__
    return env


@dataclass
class Result:
    """What one experiment run returns; ``core.report`` writes it to a run folder."""

    name: str
    preset: str
    config: dict[str, Any]
    started: str = field(default_factory=utc_now)
    seconds: float = 0.0
    environment: dict[str, str] = field(default_factory=environment)
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
            out[key] = {m: _mean_std(v) for m, v in by_metric.items()}
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


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, n
