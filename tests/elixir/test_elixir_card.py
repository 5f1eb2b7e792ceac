"""Every ```python block of the Elixir card (src/reprozoo/elixir/README.md) runs as written, in order, in one
namespace, in a scratch folder (the run example uses the smoke preset: seconds)."""

import re
from pathlib import Path

import reprozoo.elixir as pkg

CARD = Path(pkg.__file__).with_name("README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", CARD.read_text(), flags=re.S)


def test_card_examples_run(tmp_path, monkeypatch):
    assert len(BLOCKS) >= 4
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "card"}
    for i, block in enumerate(BLOCKS):
        exec(compile(block, f"{CARD}:python block {i + 1}", "exec"), ns)
    assert ns["stats"]["peak_bytes"] <= ns["budget"] and ns["stats"]["n_blocks"] < ns["stats"]["n_chunks"]
    assert ns["plan"].moves <= ns["simulate"](ns["prof"], ns["plan"], scheduler="fifo").moves
    assert (tmp_path / "runs" / "elixir_smoke" / "result.json").is_file()
    assert {"max_abs_diff", "peak_bytes", "budget_bytes", "moves_predicted", "moves_measured", "tokens_per_s",
            "moe_speedup"} <= {r.metric for r in ns["result"].records}
    # the smoke run's claims, with their measured margins: exact equality with PyTorch, the ledger under the
    # budget, the simulator's moves equal to the measured ones, a model 2x the budget (quick: 4x)
    recs = {(r.method, r.setting, r.metric): r.value for r in ns["result"].records}
    diffs = [v for (m, _, k), v in recs.items() if m == "Elixir" and k == "max_abs_diff"]
    assert diffs and max(diffs) == 0.0
    for (m, s, k), v in recs.items():
        if k == "peak_bytes":
            assert v <= recs[(m, s, "budget_bytes")]
            assert recs[(m, s, "moves_predicted")] == recs[(m, s, "moves_measured")]
            assert recs[(m, s, "bytes_moved_predicted")] == recs[(m, s, "bytes_moved")]
            assert recs[(m, s, "model_bytes")] >= 1.9 * recs[(m, s, "budget_bytes")]
