"""Where data files are looked up, and their checksums.

Lookup order (ARCHITECTURE.md): an explicit path argument, ``$REPROZOO_DATA``, the
repository's ``data/``, ``~/.cache/reprozoo/``. Nothing is ever downloaded: a missing
file raises :class:`DataNotFoundError` saying which file, where it was looked for and
where it can be obtained.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["DataNotFoundError", "ChecksumError", "data_roots", "find_data_file", "verify_checksum"]

REPO_DATA = Path(__file__).resolve().parents[3] / "data"


class DataNotFoundError(FileNotFoundError):
    """A data file is not in any of the lookup locations."""


class ChecksumError(ValueError):
    """A data file does not match the SHA-256 listed in its folder's SHA256SUMS."""


def data_roots() -> list[Path]:
    """The data roots in lookup order (those that do not exist are kept: errors list them)."""
    roots = []
    if os.environ.get("REPROZOO_DATA"):
        roots.append(Path(os.environ["REPROZOO_DATA"]).expanduser())
    roots.append(REPO_DATA)
    roots.append(Path("~/.cache/reprozoo").expanduser())
    return roots


def find_data_file(candidates: list[str], *, source: str, verify: bool = True) -> Path:
    """Return the first existing ``root / candidate`` over roots (outer) and candidates (inner).

    ``candidates`` are paths relative to a data root (e.g. ``"multiview/MSRC-v1.mat"``).
    ``source`` says where the file can be obtained; it is part of the error message.
    Raises :class:`DataNotFoundError` when no root holds any candidate.
    """
    roots = data_roots()
    for root in roots:
        for cand in candidates:
            p = root / cand
            if p.is_file():
                if verify:
                    verify_checksum(p)
                return p
    looked = ", ".join(str(r) for r in roots)
    raise DataNotFoundError(
        f"data file {candidates[0]!r} not found; looked in {looked} (set $REPROZOO_DATA to a folder holding it). "
        f"Obtain it from: {source}"
    )


def verify_checksum(path: str | Path) -> None:
    """Check ``path`` against the ``SHA256SUMS`` of its folder when that file lists it."""
    path = Path(path)
    st = path.stat()
    _verify_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _verify_cached(path: str, size: int, mtime_ns: int) -> None:
    p = Path(path)
    sums = p.parent / "SHA256SUMS"
    if not sums.is_file():
        return
    expected = None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == p.name:
            expected = parts[0].lower()
    if expected is None:
        return
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise ChecksumError(
            f"{p} does not match its SHA-256 in {sums} (expected {expected[:16]}..., got {h.hexdigest()[:16]}...): "
            "the file is corrupt or was replaced; restore it from its source (see PROVENANCE.md)"
        )
