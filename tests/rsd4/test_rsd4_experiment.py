"""End-to-end: the smoke preset through the CLI's entry points, and config validation."""

import json

import pytest

from reprozoo.core.experiment import ConfigError
from reprozoo.core.report import write_run
from reprozoo.rsd4.experiment import METHODS, Config, run


def test_smoke_preset_end_to_end(tmp_path):
    cfg = Config.from_preset("smoke")
    result = run(cfg, tmp_path)
    methods = {r.method for r in result.records}
    assert set(METHODS) <= methods
    roles = {r.method: r.role for r in result.records if r.metric == "throughput"}
    assert roles["RSD4"] == "method" and roles["MaxWeight"] == "baseline"
    for r in result.records:
        if r.metric in ("throughput", "resource"):
            assert 0.0 <= r.value < 1e3
        if r.metric == "drop_rate":
            assert 0.0 <= r.value <= 1.0
        if r.metric == "budget_violation":
            assert r.value >= 0.0
    # heuristics are budget-matched on training episodes; on held-out ones they stay near the budget
    for name in ("Uniform", "MaxWeight"):
        res = [r.value for r in result.records if r.method == name and r.metric == "resource"]
        assert res and abs(res[0] - cfg.budget) / cfg.budget < 0.5
    assert all((tmp_path / f).is_file() for f in result.figures) and len(result.figures) == 2
    write_run(result, tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["name"] == "rsd4" and data["records"]


def test_config_validation():
    with pytest.raises(ConfigError, match=r"methods='PPO' is not valid; choose one of \['RSD4'"):
        Config.from_preset("quick", methods=("RSD4", "PPO"))
    with pytest.raises(ConfigError, match=r"arrivals='gaussian' is not valid; choose one of \['bernoulli'"):
        Config.from_preset("quick", arrivals=("gaussian",))
    with pytest.raises(ConfigError, match=r"^budget=-1.0 should be > 0"):
        Config.from_preset("quick", budget=-1.0)
    with pytest.raises(ConfigError, match="dataset"):
        Config.from_preset("quick", datasets=("mnist",))
    with pytest.raises(ConfigError, match=r"learning_starts=1000000000 should be in \[0, total_timesteps\)"):
        Config.from_preset("quick", learning_starts=10**9)
    with pytest.raises(ConfigError, match=r"segment_length=101 should be in 0..episode_length = 0..100"):
        Config.from_preset("quick", segment_length=101)
    for bad, match in (
        ({"gamma": 1.5}, "gamma=1.5 should be <= 1"),
        ({"learning_rate": 0.0}, "learning_rate=0.0 should be > 0"),
        ({"gradient_steps": -1}, "gradient_steps=-1 should be >= 0"),
        ({"sb3_net_arch": ()}, "sb3_net_arch is empty"),
        ({"sb3_net_arch": (64, 0)}, r"sb3_net_arch\[1\]=0 should be >= 1"),
        ({"ppo_lstm_hidden": 0}, "ppo_lstm_hidden=0 should be >= 1"),
        ({"n_users": (4, 4)}, "n_users=.* repeats 4"),
        ({"methods": ("RSD4", "RSD4")}, "methods=.* repeats RSD4"),
        ({"budget_grid": (5.0, 5.0)}, "budget_grid=.* repeats 5.0"),
        ({"rl_budget_grid": (0.0,)}, r"rl_budget_grid\[0\]=0.0 should be > 0"),
        ({"tau_max": 2.5}, r"tau_max should be an int, got float \(2.5\)"),
    ):
        with pytest.raises(ConfigError, match=match):
            Config.from_preset("quick", **bad)
    cfg = Config.from_preset("quick").with_strings({"budget_grid": "4,8", "partial_obs": "false"})
    assert cfg.budget_grid == (4.0, 8.0) and cfg.partial_obs is False
    assert set(Config.preset_names()) >= {"quick", "smoke", "standard"}


def test_arrival_choices_are_the_environments():
    import dataclasses

    from reprozoo.rsd4.env import ARRIVALS

    field = {f.name: f for f in dataclasses.fields(Config)}["arrivals"]
    assert field.metadata["knob"]["choices"] == ARRIVALS
