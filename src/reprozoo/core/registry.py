"""Method registry: method name -> experiment module, and the spec each experiment declares.

Core knows no method. A method is a package ``reprozoo/<name>/`` with an ``experiment.py`` that declares
``SPEC = ExperimentSpec(...)``; :data:`MODULES` finds them by that file (and takes third-party methods from the
``reprozoo.methods`` entry-point group), so adding a method touches only its own package. Importing this
module imports no method code and no heavy library; :func:`get` imports one experiment module when asked.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ExperimentSpec", "MODULES", "names", "get", "register"]


@dataclass(frozen=True)
class ExperimentSpec:
    """What a method's ``experiment.py`` declares about itself.

    Data sets and presets are read from ``config`` (its ``KNOWN_DATASETS`` and ``PRESETS``), never repeated.
    ``qualifies(config, stats)`` (optional) says whether a baseline row may be named "best baseline" in
    ``summary.md`` (``config``: the run's config dict; ``stats``: ``{metric: (mean, std, n)}`` of that row), e.g.
    only schedulers that kept the resource budget; a method row that fails it is marked there. ``headline``
    (optional): the method-role rows that may stand for the method in ``summary.md`` (None: the best of them
    all), so that ablations recorded with role method do not. ``threads``: the thread count the workload runs best with
    (see :mod:`reprozoo.core.threads`).
    """

    name: str
    title: str
    field: str
    paper: str
    config: type
    run: Callable[..., Any]
    primary_metric: str
    higher_is_better: bool = True
    extra: str = ""  # the pip extra that holds its heavy dependencies
    threads: int = 1
    qualifies: Callable[[dict, dict], bool] | None = None
    headline: tuple[str, ...] | None = None

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(self.config.KNOWN_DATASETS)

    @property
    def presets(self) -> tuple[str, ...]:
        # "quick" (shipped data, minutes), "standard"/"full" (the paper's scale), "smoke" (seconds, tests)
        return tuple(self.config.PRESETS)

    @property
    def uses_torch(self) -> bool:
        """Its work is torch: the config has a ``device`` field (``--device`` applies)."""
        return "device" in self.config.field_names()


def _discover() -> dict[str, str]:
    """``{name: module}``: every ``reprozoo/<name>/experiment.py`` (sorted), then the entry points of the
    group ``reprozoo.methods`` (``name = "package.module"``), which may not shadow a built-in name."""
    root = Path(__file__).resolve().parents[1]
    found = {p.parent.name: f"reprozoo.{p.parent.name}.experiment" for p in sorted(root.glob("*/experiment.py"))
             if p.parent.name not in ("core", "datasets", "models")}
    try:
        for ep in importlib.metadata.entry_points(group="reprozoo.methods"):
            found.setdefault(ep.name, ep.value)
    except Exception:  # broken distribution metadata must not break the CLI
        pass
    return found


#: name -> experiment module path, found by :func:`_discover` when this module is imported
MODULES: dict[str, str] = _discover()
_SPECS: dict[str, ExperimentSpec] = {}


def names() -> list[str]:
    """The method names, in :data:`MODULES` order."""
    return list(MODULES)


def register(spec: ExperimentSpec) -> ExperimentSpec:
    """Add a method defined in your own code (a notebook, a plugin) for this process."""
    if not isinstance(spec, ExperimentSpec):
        raise TypeError(f"spec should be an ExperimentSpec, got {type(spec).__name__}")
    MODULES[spec.name] = spec.run.__module__
    _SPECS[spec.name] = spec
    return spec


def get(name: str) -> ExperimentSpec:
    """The spec of ``name``, importing its experiment module.

    ``KeyError`` listing the valid names for an unknown one; ``ModuleNotFoundError`` saying which extra to
    install when the method's dependencies are missing.
    """
    if name in _SPECS:
        return _SPECS[name]
    if name not in MODULES:
        raise KeyError(f"unknown method {name!r}; valid methods: {', '.join(MODULES)}")
    try:
        module = importlib.import_module(MODULES[name])
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        if missing.startswith("reprozoo"):
            raise
        extra = _extra_of(missing)
        if not extra and not str(exc).startswith("No module named"):
            raise  # the method's own message says how to install what it needs
        hint = f"pip install 'reprozoo[{extra}]'" if extra else f"pip install {missing}"
        raise ModuleNotFoundError(f"method {name!r} needs the package {missing!r}; install it with {hint}") from exc
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ExperimentSpec) or spec.name != name:
        raise TypeError(f"{MODULES[name]} should declare SPEC = ExperimentSpec(name={name!r}, ...)")
    _SPECS[name] = spec
    return spec


def _extra_of(module: str) -> str:
    """The reprozoo extra whose requirements include the distribution of ``module`` ('' if none)."""
    want = re.sub(r"[-_.]+", "-", module.split(".")[0]).lower()
    try:
        requires = importlib.metadata.requires("reprozoo") or []
    except importlib.metadata.PackageNotFoundError:
        return ""
    for req in requires:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+).*extra\s*==\s*['\"]([^'\"]+)['\"]", req)
        if m and re.sub(r"[-_.]+", "-", m.group(1)).lower() == want:
            return m.group(2)
    return ""
