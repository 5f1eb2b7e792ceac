"""Every ```python example of README.md and of each method card (src/reprozoo/*/README.md) runs as written.

The blocks of one file run in order in one fresh namespace (a later block may use what an earlier one
defined, as a reader running the card would), in a scratch folder, with the data and budgets the card
shows (cards show small budgets so that this module stays under about a minute). A block is skipped only
when the line right before its opening fence is an explicit, visible marker with a reason, e.g.
``<!-- no-test: needs a GPU -->``; the reason is reported as the skip reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "src" / "reprozoo").glob("*/README.md"))]
NO_TEST = re.compile(r"<!--\s*no-test:\s*(?P<reason>.+?)\s*-->")
FENCE = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` of each ```python block of ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NO_TEST.search(before)
        line = text.count("\n", 0, m.start()) + 2  # first line of the code
        blocks.append((line, m.group("code"), marker.group("reason") if marker else None))
    return blocks


CARDS = [p for p in FILES if python_blocks(p)]


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_cards_are_found():
    names = {p.parent.name for p in CARDS}
    assert ROOT / "README.md" in CARDS and {"udbgl", "ugt", "compound_bn", "multianda", "rsd4"} <= names


def test_no_test_marker_needs_a_reason():
    for path in FILES:
        for m in re.finditer(r"<!--\s*no-test\b(.*?)-->", path.read_text(encoding="utf-8"), re.S):
            assert m.group(1).strip(" :"), f"{_id(path)}: a no-test marker gives no reason"


@pytest.mark.parametrize("path", CARDS, ids=_id)
def test_card_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write runs/... and saved models here
    namespace: dict = {"__name__": "__card__"}
    skipped = []
    for line, code, reason in python_blocks(path):
        if reason is not None:
            skipped.append(f"line {line}: {reason}")
            continue
        padded = "\n" * (line - 1) + code  # tracebacks point at the card's own line numbers
        exec(compile(padded, str(path), "exec"), namespace)  # noqa: S102 - the card's own example
    if skipped:
        pytest.skip(f"{_id(path)}: ran the other blocks; skipped " + "; ".join(skipped))
