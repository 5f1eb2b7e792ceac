"""What every method's ``experiment.py`` builds on: a config dataclass with presets and declared bounds.

A method defines::

    @dataclass
    class MyConfig(ExperimentConfig):
        #: ridge weight alpha on ||Z_v||^2 (one docstring-commented field per knob)
        alpha: float = knob(1e-3, ge=0)
        #: anchor settings m = factor * c
        anchor_factors: tuple[int, ...] = knob((1,), ge=1, nonempty=True, unique=True)
        PRESETS = {"quick": {...}, "full": {...}, "smoke": {...}}   # overrides of the field defaults

    def run(config: MyConfig, out_dir: Path) -> Result: ...

    SPEC = ExperimentSpec(name="mymethod", config=MyConfig, run=run, ...)   # see core.registry

The base class checks every field against its annotation (``int``, ``float``, ``bool``, ``str``,
``X | None``, ``tuple[X, ...]``) and the bounds declared with :func:`knob`, so a method's ``validate``
holds only its cross-field rules. A config whose work is torch derives from :class:`TorchExperimentConfig`
(a ``device`` field). :func:`reprozoo.run` builds the config with :meth:`ExperimentConfig.from_preset`,
applies data sets, seeds and overrides and calls ``run``; the runner writes figures under
``out_dir / "figures"`` and lists them (relative to ``out_dir``) in ``Result.figures``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from reprozoo.core.checks import ConfigError, check_choice, check_float, check_int, config_errors

__all__ = ["ExperimentConfig", "TorchExperimentConfig", "ConfigError", "check_seeds", "knob"]


def knob(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
    nonempty: bool = False,
    unique: bool = False,
) -> Any:
    """A config field with declared bounds, checked by :meth:`ExperimentConfig.validate`.

    ``ge``/``gt``/``le``/``lt`` bound a number (each item of a tuple); ``choices`` lists the valid values
    (each item of a tuple); ``nonempty`` rejects an empty tuple; ``unique`` rejects a tuple that lists an
    entry twice (a repeated grid entry would run and record the same setting twice).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C(ExperimentConfig):
    ...     datasets: tuple[str, ...] = ("D",)
    ...     lr: float = knob(0.1, gt=0)
    >>> C().replace(lr=-1.0)
    Traceback (most recent call last):
    ...
    reprozoo.core.checks.ConfigError: lr=-1.0 should be > 0
    """
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "nonempty": nonempty, "unique": unique}
    return dataclasses.field(default=default, metadata={"knob": bounds})


@dataclass
class ExperimentConfig:
    """Base of every experiment config.

    Fields shared by all experiments: ``preset`` (name of the preset it came from),
    ``datasets`` (names the runner iterates over; must not be empty, so a subclass sets a
    default), ``seeds`` (ints in ``[0, 2**32)``). Subclasses add their own knobs as fields with
    defaults and set ``PRESETS``: ``{preset: {field: value}}``.

    :meth:`replace` (and so :meth:`from_preset` and :meth:`with_strings`) drops repeated
    ``datasets`` and ``seeds``, keeping the first occurrence. ``--set key=`` gives an empty
    tuple for a tuple field: the base class rejects empty ``datasets`` and ``seeds``; a subclass
    declares ``knob(..., nonempty=True)`` on any other tuple field it cannot run empty.
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
        hints = self.field_types()
        for k, v in list(changes.items()):  # a list given from Python for a tuple field becomes a tuple
            if isinstance(v, list) and _tuple_item_types(hints.get(k)) is not None:
                changes[k] = tuple(v)
        for k in ("datasets", "seeds"):
            # a tuple, each item once (first occurrence kept): a repeated seed would be counted twice
            changes[k] = tuple(dict.fromkeys(changes.get(k, getattr(self, k))))
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """``{field: type annotation}`` resolved with :func:`typing.get_type_hints` (``{}`` if that fails)."""
        try:
            return typing.get_type_hints(cls)
        except Exception:  # an annotation that does not resolve: fall back to the current values' types
            return {}

    def with_strings(self, pairs: dict[str, str]) -> ExperimentConfig:
        """A copy with ``--set key=value`` strings applied (see :meth:`parse_strings`), validated once."""
        return self.replace(**self.parse_strings(pairs))

    def parse_strings(self, pairs: dict[str, str]) -> dict[str, Any]:
        """``--set key=value`` strings parsed to the fields' declared types (not applied).

        The type is the field's annotation (``int``, ``float``, ``bool``, ``str``, ``X | None``,
        ``tuple[float, ...]``, ...), or, where it gives none, the type of the current value.
        bool: true/false/1/0/yes/no/on/off; int; float (``16/255`` allowed, finite only);
        ``X | None``: ``none``/``null`` gives ``None``; tuple: comma-separated items, each parsed
        to the element type (an empty value gives an empty tuple); otherwise JSON when it parses,
        else the string. Raises :class:`ConfigError` for an unknown key or a value that does not parse.
        """
        names = [n for n in self.field_names() if n != "preset"]
        hints = self.field_types()
        parsed = {}
        for key, text in pairs.items():
            if key == "preset":
                raise ConfigError("preset cannot be changed with --set; use --preset")
            if key not in names:
                raise ConfigError(f"unknown setting {key!r}; valid keys: {', '.join(sorted(names))}")
            parsed[key] = _parse_like(getattr(self, key), text, key, hints.get(key))
        return parsed

    def check_dataset(self, name: str) -> None:
        """Raise :class:`ConfigError` unless ``name`` is a data set this experiment can run."""
        if self.KNOWN_DATASETS and name not in self.KNOWN_DATASETS:
            raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(self.KNOWN_DATASETS)}")

    def validate(self) -> None:
        """Check the whole config; subclasses extend it (call ``super().validate()``).

        Base checks: ``datasets`` non-empty and each accepted by :meth:`check_dataset` (a value
        that looks like a file path but does not exist is reported as ``no such file``);
        ``seeds`` non-empty ints in ``[0, 2**32)`` (what NumPy and scikit-learn accept).
        """
        if not self.datasets:
            choices = f"; valid datasets: {', '.join(self.KNOWN_DATASETS)}" if self.KNOWN_DATASETS else ""
            raise ConfigError(f"datasets is empty; give at least one data set{choices}")
        for d in self.datasets:
            try:
                self.check_dataset(d)
            except ConfigError as exc:
                if isinstance(d, str) and d not in self.KNOWN_DATASETS and _looks_like_path(d) \
                        and not Path(d).expanduser().exists():
                    hint = str(exc)
                    hint = hint[hint.find("valid datasets"):] if "valid datasets" in hint else hint
                    raise ConfigError(f"no such file: {d!r} ({hint})") from None
                raise
        check_seeds(self.seeds)
        self.check_fields()

    def check_fields(self) -> None:
        """Check every field against its annotation and the bounds declared with :func:`knob`.

        Annotations understood: ``int`` (not bool), ``float`` (an int is accepted), ``bool``, ``str``,
        ``X | None`` and ``tuple[X, ...]`` of those; other annotations are not checked here.
        """
        hints = self.field_types()
        for f in dataclasses.fields(self):
            if f.name in ("preset", "datasets", "seeds"):
                continue
            bounds = f.metadata.get("knob", {})
            _check_value(getattr(self, f.name), f.name, hints.get(f.name), bounds)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


@dataclass
class TorchExperimentConfig(ExperimentConfig):
    """Base of the config of an experiment whose work is torch: adds ``device``.

    ``device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. A CUDA device on
    a machine without one is a :class:`ConfigError`. :func:`reprozoo.run` resolves ``auto`` before the run
    starts, so ``config.device`` inside ``run`` is the device actually used, and records it in result.json.
    """

    #: torch device: auto | cpu | cuda | cuda:N (auto picks CUDA when available)
    device: str = "auto"

    def validate(self) -> None:
        super().validate()
        from reprozoo.core.device import resolve_device

        try:
            resolve_device(self.device)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ConfigError(str(exc)) from None


def _check_value(value: Any, name: str, hint: Any, bounds: dict[str, Any]) -> None:
    """Check one config value against its annotation ``hint`` and declared ``bounds`` (ConfigError)."""
    item_types = _tuple_item_types(hint)
    with config_errors():
        if item_types is not None:
            if not isinstance(value, tuple):
                raise ConfigError(f"{name}={value!r} should be a tuple (comma-separated with --set)")
            if bounds.get("nonempty") and not value:
                raise ConfigError(f"{name} is empty; give at least one entry")
            if bounds.get("unique"):
                repeats = [v for i, v in enumerate(value) if v in value[:i]]
                if repeats:
                    listed = ", ".join(dict.fromkeys(map(str, repeats)))
                    raise ConfigError(f"{name}={value!r} repeats {listed}; give each once (a repeat would run "
                                      "and record the same setting twice)")
            types_ = [item_types[0]] * len(value) if item_types[-1] is Ellipsis else list(item_types)
            if len(types_) != len(value):
                raise ConfigError(f"{name}={value!r} should have {len(types_)} entries")
            for i, (v, tp) in enumerate(zip(value, types_, strict=True)):
                _check_scalar(v, f"{name}[{i}]" if bounds.get("choices") is None else name, tp, bounds)
        else:
            _check_scalar(value, name, hint, bounds)


def _check_scalar(value: Any, name: str, hint: Any, bounds: dict[str, Any]) -> None:
    if _is_union(hint):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        hint = options[0] if len(options) == 1 else None
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be a bool, got {type(value).__name__} ({value!r})")
    elif hint is int:
        check_int(value, name)
    elif hint is float:
        check_float(value, name)
    elif hint is str and not isinstance(value, str):
        raise TypeError(f"{name} should be a string, got {type(value).__name__} ({value!r})")
    if bounds.get("choices") is not None:
        check_choice(value, name, tuple(bounds["choices"]))
    for key, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                          ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        b = bounds.get(key)
        if b is not None and not ok(value, b):
            raise ValueError(f"{name}={value!r} should be {word} {b}")


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
        raise ConfigError(f"{key}={text!r}: expected {kind.get(type(like).__name__, type(like).__name__)}") \
            from None
    if like is None:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def check_seeds(seeds: Any) -> None:
    """Raise :class:`ConfigError` naming ``seeds`` unless it is a non-empty sequence of ints in ``[0, 2**32)``."""
    if not seeds:
        raise ConfigError("seeds is empty; give at least one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**32:
            raise ConfigError(f"seeds should be ints in [0, 2**32), got {s!r}")


_SCALARS = {bool: False, int: 0, float: 0.0, str: ""}  # a sample value per scalar type, for _parse_scalar
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")


def _looks_like_path(name: str) -> bool:
    """``name`` has a path separator or ends in a file suffix (``.mat``, ``.npz``, ...)."""
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(c in name for c in seps) or name.startswith("~") or bool(_FILE_SUFFIX.search(name))


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _parse_typed(text: str, tp: Any, key: str) -> Any:
    """Parse one item to the annotation ``tp`` (bool/int/float/str or a union of them with None)."""
    if _is_union(tp):
        args = typing.get_args(tp)
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _parse_typed(text, options[0], key)
        # several types: the first (str last) that parses
        options.sort(key=lambda a: a is str)
        error: ConfigError | None = None
        for a in options:
            try:
                return _parse_typed(text, a, key)
            except ConfigError as exc:
                error = exc
        if error is not None:
            raise error
        return text
    if tp in _SCALARS:
        return _parse_scalar(text, _SCALARS[tp], key)
    return _parse_scalar(text, None, key)  # JSON when it parses, else the string


def _tuple_item_types(hint: Any) -> tuple[Any, ...] | None:
    """Element types of a ``tuple[...]`` annotation: ``(T, ...)`` for ``tuple[T, ...]``; None if not a tuple."""
    if typing.get_origin(hint) is not tuple:
        return None
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return (args[0], ...)
    return args


def _parse_like(current: Any, text: str, key: str, hint: Any = None) -> Any:
    """Parse ``--set key=text`` to the annotation ``hint`` or, failing that, the type of ``current``."""
    item_types = _tuple_item_types(hint)
    if item_types is not None or isinstance(current, (tuple, list)):
        items = [t for t in text.split(",") if t.strip()]
        if item_types and item_types[-1] is Ellipsis:
            return tuple(_parse_typed(t, item_types[0], key) for t in items)
        if item_types:  # fixed length, e.g. tuple[int, int]
            if len(items) != len(item_types):
                raise ConfigError(f"{key}={text!r}: expected {len(item_types)} comma-separated items")
            return tuple(_parse_typed(t, tp, key) for t, tp in zip(items, item_types, strict=True))
        if current:  # no usable annotation: parse like the first current item
            return tuple(_parse_scalar(t, current[0], key) for t in items)
        return tuple(t.strip() for t in items)
    if hint is not None and (hint in _SCALARS or _is_union(hint)):
        return _parse_typed(text, hint, key)
    return _parse_scalar(text, current, key)

