"""Argument validation at public entry points.

Every check raises ``ValueError`` or ``TypeError`` whose message names the argument,
the rule, the value received and, where useful, the fix. Private helpers downstream
assume validated input and do not re-check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Container, Iterator, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np


class ConfigError(ValueError):
    """A bad preset, data set or setting of an experiment config; the message lists the valid choices.

    The CLI reports it as a usage error (exit 2) before anything runs.
    """


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Config-error mode: inside, a ``ValueError`` or ``TypeError`` from any check becomes a
    :class:`ConfigError` with the same message, so that a config's field checks reuse these functions.

    >>> try:
    ...     with config_errors():
    ...         check_int(0, "epochs", low=1)
    ... except ConfigError as exc:
    ...     print(exc)
    epochs=0 should be >= 1
    """
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None

__all__ = [
    "ConfigError",
    "config_errors",
    "check_array",
    "check_tensor",
    "check_views",
    "check_int",
    "check_float",
    "check_choice",
    "check_labels",
]


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | None = 2,
    dtype: Any = np.float64,
    min_rows: int = 1,
    min_cols: int = 1,
    allow_nan: bool = False,
) -> np.ndarray:
    """Return ``x`` as a NumPy array of ``dtype`` after checking shape and values.

    Sparse matrices are densified. Raises ``TypeError`` for non-numeric data and
    ``ValueError`` for a wrong ``ndim``, too few rows/columns, or NaN/inf entries.
    """
    if hasattr(x, "toarray") and callable(x.toarray):  # scipy.sparse
        x = x.toarray()
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nested lists
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} should hold numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} should hold real numbers, got complex dtype {arr.dtype}")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} should be {ndim}-D, got shape {arr.shape}")
    if arr.ndim >= 1 and arr.shape[0] < min_rows:
        raise ValueError(f"{name} should have at least {min_rows} row(s), got shape {arr.shape}")
    if arr.ndim >= 2 and arr.shape[1] < min_cols:
        raise ValueError(f"{name} should have at least {min_cols} column(s), got shape {arr.shape}")
    if not allow_nan and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean or impute them first")
    return arr


def check_views(views: Any, name: str = "views", *, min_samples: int = 2) -> list[np.ndarray]:
    """Validate multi-view data: a non-empty sequence of 2-D finite arrays with the same n.

    Returns a list of float64 arrays of shape (n, d_v).
    """
    if isinstance(views, np.ndarray) and views.dtype != object:
        raise TypeError(
            f"{name} should be a list of 2-D arrays (one per view), got a single array of shape "
            f"{views.shape}; pass [X] for one view, or list(X) for views stacked along the first axis"
        )
    if not isinstance(views, Sequence) and not isinstance(views, np.ndarray):
        raise TypeError(f"{name} should be a list of 2-D arrays (one per view), got {type(views).__name__}")
    if len(views) == 0:
        raise ValueError(f"{name} is empty; pass at least one view of shape (n_samples, n_features)")
    out = [check_array(v, f"{name}[{i}]", ndim=2, min_rows=min_samples) for i, v in enumerate(views)]
    ns = [v.shape[0] for v in out]
    if len(set(ns)) != 1:
        raise ValueError(f"all {name} should have the same number of samples (rows); got n = {ns}")
    return out


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Check ``value`` is an integer in ``[low, high]`` (bounds optional); return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} should be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name}={value} should be >= {low}")
    if high is not None and value > high:
        raise ValueError(f"{name}={value} should be <= {high}")
    return value


def check_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check ``value`` is a finite real number within the given bounds; return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} should be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}={value} should be finite")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        raise ValueError(f"{name}={value} should be {'>=' if low_inclusive else '>'} {low}")
    if high is not None and (value > high or (not high_inclusive and value == high)):
        raise ValueError(f"{name}={value} should be {'<=' if high_inclusive else '<'} {high}")
    return value


def check_choice(value: Any, name: str, choices: Container[Any] & Sequence[Any]) -> Any:
    """Check ``value`` is one of ``choices``; the error lists the valid ones."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")
    return value


def check_labels(y: Any, name: str = "labels", *, n_samples: int | None = None) -> np.ndarray:
    """Return 1-D integer labels; optional check of their length against ``n_samples``."""
    arr = check_array(y, name, ndim=None, dtype=None)
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise ValueError(f"{name} should be 1-D, got shape {arr.shape}")
    if not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ValueError(f"{name} should hold integer class labels")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} entries but n_samples={n_samples}")
    return arr.astype(np.int64)


def check_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    floating: bool | None = None,
    finite: bool = True,
):
    """Check a ``torch.Tensor`` at a public boundary and return it unchanged.

    ``ndim``: the allowed number(s) of dimensions; ``shape``: the expected shape, ``None`` entries free;
    ``floating``: True requires a floating dtype, False an integer (or bool) dtype; ``finite``: reject NaN or
    infinity in a floating tensor. The finiteness check reads one flag back from the device, so call this at
    the public boundary, not inside a hot loop.

    >>> import torch
    >>> check_tensor(torch.zeros(2, 3), "images", ndim=4)
    Traceback (most recent call last):
    ...
    ValueError: images should be 4-D, got shape (2, 3)
    """
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} should be a torch.Tensor, got {type(x).__name__}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and x.ndim not in dims:
        want = " or ".join(str(d) for d in dims)
        raise ValueError(f"{name} should be {want}-D, got shape {tuple(x.shape)}")
    if shape is not None:
        if len(shape) != x.ndim or any(s is not None and s != t for s, t in zip(shape, x.shape, strict=False)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} should have shape {want}, got {tuple(x.shape)}")
    is_float = x.is_floating_point() or x.is_complex()
    if floating is True and not is_float:
        raise TypeError(f"{name} should be a floating-point tensor, got dtype {x.dtype}")
    if floating is False and is_float:
        raise TypeError(f"{name} should be an integer tensor, got dtype {x.dtype}")
    if finite and is_float and x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return x
