"""Every ```python block of the fedtiny card (src/reprozoo/fedtiny/README.md) runs as written, in order, in
one namespace, in a scratch folder (the card's examples use the smoke preset: seconds, not minutes)."""

import re
from pathlib import Path

import pytest

import reprozoo.fedtiny as pkg

CARD = Path(pkg.__file__).with_name("README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", CARD.read_text(), flags=re.S)


def test_card_has_python_examples():
    assert len(BLOCKS) >= 2


def test_card_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("flwr")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "card"}
    for i, block in enumerate(BLOCKS):
        exec(compile(block, f"{CARD}:python block {i + 1}", "exec"), namespace)
    # what the examples print is what they compute
    assert namespace["name"] == "erk-magnitude" and round(namespace["mask"].density, 3) == 0.05
    assert namespace["n"] == 80 * 28 * 28 and namespace["mu"].shape == (16,)
    assert int(namespace["new_m"].sum()) == int(namespace["m"].sum())
    assert namespace["out"]["density"] == pytest.approx(0.05, abs=1e-3)
    assert (tmp_path / "runs" / "fedtiny_smoke" / "result.json").is_file()
    assert any(r.metric == "top1" and r.value > 1.0 for r in namespace["result"].records)  # percent
