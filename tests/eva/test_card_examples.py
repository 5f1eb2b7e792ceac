"""Every ```python block of the eva card runs (small budgets are written into the examples themselves)."""

import re
from pathlib import Path

import pytest

import reprozoo.eva

CARD = Path(reprozoo.eva.__file__).with_name("README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", CARD.read_text(encoding="utf-8"), flags=re.S)


def test_card_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_card_example_runs(i, capsys):
    exec(compile(BLOCKS[i], f"{CARD}:block{i}", "exec"), {"__name__": "__card__"})
    out = capsys.readouterr().out
    if "torch.Size([2, 10])" in BLOCKS[i]:
        assert "torch.Size([2, 10])" in out and "['head.bias', 'head.weight']" in out
    if "1012555112" in BLOCKS[i]:
        assert "1012555112" in out
