"""Every ```python block of the MEAformer card (src/reprozoo/meaformer/README.md) runs as written, in order, in one
namespace, in a scratch folder (the card's examples use small budgets)."""

import re
from pathlib import Path

import reprozoo.meaformer as pkg

CARD = Path(pkg.__file__).with_name("README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", CARD.read_text(), flags=re.S)


def test_card_has_python_examples():
    assert len(BLOCKS) >= 2


def test_card_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "card"}
    for i, block in enumerate(BLOCKS):
        exec(compile(block, f"{CARD}:python block {i + 1}", "exec"), namespace)
    assert set(namespace["scores"]) >= {"Hits@1", "Hits@10", "MRR", "MR"}
    assert list(namespace["weights"]) == ["structure", "relation", "char"]
    assert (tmp_path / "runs" / "meaformer_smoke" / "result.json").is_file()
