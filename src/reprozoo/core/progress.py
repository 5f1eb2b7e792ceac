"""Progress bars for long loops (rich), silenced globally by ``--quiet`` or under pytest."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["set_quiet", "is_quiet", "track", "log"]

T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence (``True``) or enable progress bars and log lines for the whole process."""
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    """True when ``--quiet`` was given, ``REPROZOO_QUIET`` is set, or pytest is running."""
    return _QUIET or bool(os.environ.get("REPROZOO_QUIET")) or "pytest" in sys.modules


def track(iterable: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar (transient, on stderr), or silently when quiet."""
    if is_quiet():
        yield from iterable
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    columns = (
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    from rich.console import Console

    # stderr, as log lines: a library call inside a user's script must leave its stdout alone
    with Progress(*columns, transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)


def log(message: str) -> None:
    """Print a status line (rich markup allowed) unless quiet."""
    if is_quiet():
        return
    from rich.console import Console

    Console(stderr=True).print(message)
