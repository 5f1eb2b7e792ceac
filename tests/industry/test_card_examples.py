"""Every ```python block of the industry card runs (small budgets are in the card itself)."""

import re
from pathlib import Path

import pytest

CARD = Path(__file__).resolve().parents[2] / "src" / "reprozoo" / "industry" / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", CARD.read_text(encoding="utf-8"), flags=re.S)


def test_card_has_examples():
    assert BLOCKS


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_card_example_runs(i, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the own-data example writes its CSV here
    exec(compile(BLOCKS[i], f"{CARD.name}[block {i}]", "exec"), {})
    assert capsys.readouterr().out.strip().startswith("['")
