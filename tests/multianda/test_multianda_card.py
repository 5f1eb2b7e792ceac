"""The method card's library examples run as written."""

import re
import warnings
from pathlib import Path

import reprozoo.multianda

CARD = Path(reprozoo.multianda.__file__).with_name("README.md")


def test_card_library_examples_run_as_written(monkeypatch, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", CARD.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 2, "the card should show the library use and the declared-normalisation use"
    monkeypatch.chdir(tmp_path)  # nothing relative to the repository is assumed
    namespace: dict = {"__name__": "card_example"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the examples use the API as intended
        for i, code in enumerate(blocks):
            exec(compile(code, f"{CARD}:python-block-{i}", "exec"), namespace)  # noqa: S102
    assert tuple(namespace["adv_n"].shape) == (4, 3, 32, 32)  # declared normalisation
    assert tuple(namespace["draws"].shape) == (5, 4, 3, 32, 32)
    assert tuple(namespace["adv"].shape) == (2, 3, 64, 64)  # the last block: your own data
