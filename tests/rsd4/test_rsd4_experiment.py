"""End-to-end: the smoke preset through the CLI's entry points, and config validation."""

import json

import pytest

from reprozoo.core.experiment import ConfigError
from reprozoo.core.report import write_run
from reprozoo.rsd4.experiment import METHODS, Config, mix_at_budget, run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke preset, run once for the tests below: (config, result, output folder)."""
    out = tmp_path_factory.mktemp("rsd4_smoke")
    cfg = Config.from_preset("smoke")
    return cfg, run(cfg, out), out


def test_smoke_preset_end_to_end(smoke):
    cfg, result, tmp_path = smoke
    methods = {r.method for r in result.records}
    assert set(METHODS) - {"MaxWeight"} <= methods and "MaxWeight-oracle" in methods  # smoke: partial observation
    roles = {r.method: r.role for r in result.records if r.metric == "throughput"}
    assert roles["RSD4"] == "method" and roles["MaxWeight-blind"] == "baseline"
    assert roles["MaxWeight-oracle"] == "reference"  # reads the channel no agent observes
    # equal resource: every RL agent has one held-out point per price of the grid, and a point at the budget
    for name in ("RSD4", "TD3", "SAC", "RecurrentPPO"):
        for lam in cfg.lam_grid:
            assert any(r.method == name and r.setting.endswith(f"lam={lam:g}") for r in result.records)
        at_budget = [r for r in result.records if r.method == name and r.setting == "N4-poisson"]
        assert {"throughput", "resource", "budget_violation", "lambda"} <= {r.metric for r in at_budget}
    for r in result.records:
        if r.metric in ("throughput", "resource"):
            assert 0.0 <= r.value < 1e3
        if r.metric == "drop_rate":
            assert 0.0 <= r.value <= 1.0
        if r.metric == "budget_violation":
            assert r.value >= 0.0
    # heuristics are budget-matched on training episodes; on held-out ones they stay near the budget
    for name in ("Uniform", "MaxWeight-blind", "MaxWeight-oracle"):
        res = [r.value for r in result.records if r.method == name and r.metric == "resource"]
        assert res and abs(res[0] - cfg.budget) / cfg.budget < 0.5
    assert all((tmp_path / f).is_file() for f in result.figures) and len(result.figures) == 2
    write_run(result, tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["name"] == "rsd4" and data["records"]


@pytest.mark.xfail(strict=True, reason=(
    "paper's claim not reproduced at equal resource: quick preset (4 seeds, RSD4 at fixed prices 0.1/0.3/1.0 x 30k "
    "steps, mixed at the budget on validation episodes) gives RSD4 5.93 +- 3.12 vs MaxWeight-blind 7.13 +- 3.60 "
    "throughput per slot at E0 = 10 (held-out), behind on all 4 seeds by 0.36, 0.30, 3.47, 0.66; smoke preset "
    "(seed 0): 1.56 vs 2.05"))
def test_rsd4_beats_the_channel_blind_maxweight_at_equal_resource(smoke):
    """The paper's claim against the heuristic that sees what RSD4 sees, at the budget (smoke budget)."""
    _, result, _ = smoke
    thr = {r.method: r.value for r in result.records if r.metric == "throughput" and r.setting == "N4-poisson"}
    res = {r.method: r.value for r in result.records if r.metric == "resource" and r.setting == "N4-poisson"}
    assert abs(res["RSD4"] - res["MaxWeight-blind"]) <= 0.1 * res["MaxWeight-blind"]  # equal resource (10 %)
    assert thr["RSD4"] >= thr["MaxWeight-blind"]


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


def test_mix_at_budget_is_the_upper_concave_hull_with_the_idle_policy():
    mix = mix_at_budget([5.0, 12.0, 20.0], [4.0, 8.0, 9.0], 10.0)  # between the points at 5 and 12
    assert [i for i, _ in mix] == [0, 1]
    w = dict(mix)
    assert w[0] * 5 + w[1] * 12 == pytest.approx(10.0) and sum(w.values()) == pytest.approx(1.0)
    assert mix_at_budget([5.0, 12.0, 20.0], [4.0, 8.0, 9.0], 30.0) == [(2, 1.0)]  # beyond every point
    assert mix_at_budget([5.0, 12.0], [4.0, 3.0], 10.0) == [(0, 1.0)]  # spending more does not pay
    mix = mix_at_budget([15.0], [4.0], 10.0)  # only over the budget: share time with the idle policy (-1)
    assert dict(mix)[-1] == pytest.approx(1 / 3)
    # a point under the hull is never used: (8, 3) lies below the chord from (5, 4) to (12, 8)
    assert 2 not in dict(mix_at_budget([5.0, 12.0, 8.0], [4.0, 8.0, 3.0], 9.0))
    with pytest.raises(ValueError, match="non-empty finite"):
        mix_at_budget([], [], 1.0)


def test_jobs_in_processes_give_the_same_records(tmp_path):
    cfg = Config.from_preset("smoke", methods=("RSD4", "Uniform"), seeds=(0, 1), total_timesteps=350,
                             lam_grid=(0.5,), n_jobs=1)
    one = run(cfg, tmp_path / "one")
    two = run(cfg.replace(n_jobs=2), tmp_path / "two")  # two spawned processes, one seed each
    def numbers(result):  # every record but the measured CPU time
        return [r for r in result.records if r.metric != "train_cpu_seconds"]

    assert numbers(one) == numbers(two) and {r.seed for r in two.records} == {0, 1}
    assert len(numbers(one)) < len(one.records) == len(two.records)
    assert two.figures == one.figures and all((tmp_path / "two" / f).is_file() for f in two.figures)


def test_standard_trains_the_sb3_agents_on_the_price_grid_with_vectorised_envs():
    from reprozoo.rsd4.experiment import RL, _make_env, _train_rl

    std = Config.from_preset("standard")
    assert set(RL) <= set(std.methods) and std.lam_grid == Config.from_preset("quick").lam_grid
    assert std.sb3_n_envs == 8
    with pytest.raises(ConfigError, match=r"sb3_n_envs=8 needs fixed prices \(a non-empty lam_grid\)"):
        Config.from_preset("standard", lam_grid=())
    cfg = Config.from_preset("smoke", sb3_n_envs=3, total_timesteps=240, learning_starts=60)
    agent, wenv, _ = _train_rl("TD3", cfg, lambda split: _make_env(cfg, "trace", 4, "poisson", 0, split), cfg.budget,
                               0.2, seed=0, fixed=True)
    assert agent.model.n_envs == 3 and agent.model.num_timesteps >= 240
    assert wenv.lam == 0.2 and agent.episode_log and all(e["lam"] == 0.2 for e in agent.episode_log)
