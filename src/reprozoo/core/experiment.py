"""What every method's ``experiment.py`` builds on: a config dataclass with presets.

A method defines::

    @dataclass
    class UDBGLConfig(ExperimentConfig):
        alpha: float = 1e-3          # one docstring-commented field per knob
        PRESETS = {"quick": {...}, "full": {...}}   # overrides of the field defaults

    def run(config: UDBGLConfig, out_dir: Path) -> Result: ...

and registers itself in :mod:`reprozoo.core.registry`. The CLI builds the config with
:meth:`ExperimentConfig.from_preset`, applies ``--dataset``, ``--seed`` and
``--set key=value`` and calls ``run``; the runner writes figures under
``out_dir / "figures"`` and lists them (relative to ``out_dir``) in ``Result.figures``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["ExperimentConfig", "ConfigError"]


class ConfigError(ValueError):
    """A bad preset, data set or ``--set`` key/value; the message lists the valid choices."""


@dataclass
class ExperimentConfig:
    """Base of every experiment config.

    Fields shared by all experiments: ``preset`` (name of the preset it came from),
    ``datasets`` (names the runner iterates over), ``seeds``. Subclasses add their own
    knobs as fields with defaults and set ``PRESETS``: ``{preset: {field: value}}``.
    """

    preset: str = "quick"
    datasets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}}
    #: Data set names the runner accepts (the CLI checks ``--dataset`` against them).
    #: A subclass may also accept paths by overriding :meth:`check_dataset`.
    KNOWN_DATASETS: ClassVar[tuple[str, ...]] = ()

    # -- construction ---------------------------------------------------------------
    @classmethod
    def preset_names(cls) -> list[str]:
        return list(cls.PRESETS)

    @classmethod
    def from_preset(cls, preset: str = "quick", **overrides: Any) -> ExperimentConfig:
        """The config of preset ``preset`` with ``overrides`` (field=value) applied.

        Raises :class:`ConfigError` for an unknown preset or field.
        """
        if preset not in cls.PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(cls.PRESETS)}")
        values = dict(cls.PRESETS[preset])
        values.update(overrides)
        cfg = cls(preset=preset)
        return cfg.replace(**values)

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with fields changed; unknown field names raise :class:`ConfigError`."""
        names = self.field_names()
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; valid keys: {', '.join(sorted(names))}")
        for k in ("datasets", "seeds"):
            if k in changes and not isinstance(changes[k], tuple):
                changes[k] = tuple(changes[k])
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def with_strings(self, pairs: dict[str, str]) -> ExperimentConfig:
        """Apply ``--set key=value`` strings, each parsed to the type of the field's current value.

        bool: true/false/1/0/yes/no; int; float (``16/255`` allowed); tuple: comma-separated
        items parsed like the first current item (or as strings when empty); ``None`` default:
        JSON when it parses, else the string.
        """
        names = [n for n in self.field_names() if n != "preset"]
        parsed = {}
        for key, text in pairs.items():
            if key == "preset":
                raise ConfigError("preset cannot be changed with --set; use --preset")
            if key not in names:
                raise ConfigError(f"unknown --set key {key!r}; valid keys: {', '.join(sorted(names))}")
            parsed[key] = _parse_like(getattr(self, key), text, key)
        return self.replace(**parsed)

    def check_dataset(self, name: str) -> None:
        """Raise :class:`ConfigError` unless ``name`` is a data set this experiment can run."""
        if self.KNOWN_DATASETS and name not in self.KNOWN_DATASETS:
            raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(self.KNOWN_DATASETS)}")

    def validate(self) -> None:
        """Check the whole config; subclasses extend it (call ``super().validate()``)."""
        for d in self.datasets:
            self.check_dataset(d)
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ConfigError(f"seeds should be non-negative ints, got {s!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def _parse_scalar(text: str, like: Any, key: str) -> Any:
    text = text.strip()
    try:
        if isinstance(like, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            if "/" in text:
                num, den = text.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
    except (ValueError, ZeroDivisionError):
        kind = {"bool": "a bool (true/false)", "int": "an int", "float": "a finite float (e.g. 0.1, 1e-3, 16/255)"}
        raise ConfigError(f"--set {key}={text!r}: expected {kind.get(type(like).__name__, type(like).__name__)}") \
            from None
    if like is None:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _parse_like(current: Any, text: str, key: str) -> Any:
    if isinstance(current, (tuple, list)):
        items = [t for t in text.split(",") if t.strip()]
        like = current[0] if current else ""
        return tuple(_parse_scalar(t, like, key) for t in items)
    return _parse_scalar(text, current, key)

