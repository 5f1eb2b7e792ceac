"""A user's own channel trace: ``--dataset <file.csv>`` of ``reprozoo run rsd4`` (states per slot and user)."""

import numpy as np
import pytest
from typer.testing import CliRunner

import reprozoo
from reprozoo.cli import app
from reprozoo.core.checks import ConfigError
from reprozoo.rsd4.experiment import RSD4Config

TINY = {"methods": ("RSD4", "Uniform"), "total_timesteps": 100, "learning_starts": 50, "episode_length": 25,
        "calib_iters": 4, "n_eval_episodes": 1}


@pytest.fixture
def channel_csv(tmp_path):
    rng = np.random.default_rng(0)
    states = rng.integers(1, 5, size=(400, 4))  # 400 slots, 4 users, states 1 (best) .. 4
    path = tmp_path / "my_channels.csv"
    lines = ["channel_0,channel_1,channel_2,channel_3"] + [",".join(map(str, row)) for row in states]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_config_accepts_a_channel_csv_and_rejects_others(channel_csv, tmp_path):
    assert RSD4Config.from_preset("smoke", datasets=(str(channel_csv),)).datasets == (str(channel_csv),)
    with pytest.raises(ConfigError, match="no such file"):
        RSD4Config.from_preset("smoke", datasets=(str(tmp_path / "nope.csv"),))
    with pytest.raises(ConfigError, match="channel-state .csv"):
        RSD4Config.from_preset("smoke", datasets=("lte",))


def test_run_on_a_channel_csv_from_python_and_the_cli(channel_csv, tmp_path):
    result = reprozoo.run("rsd4", preset="smoke", out=tmp_path / "py", datasets=[str(channel_csv)], overrides=TINY,
                          device="cpu", quiet=True)
    assert {r.dataset for r in result.records} == {str(channel_csv)}
    assert any(r.method == "RSD4" and r.metric == "throughput" for r in result.records)
    args = ["run", "rsd4", "--preset", "smoke", "--dataset", str(channel_csv), "--device", "cpu", "--quiet",
            "--out", str(tmp_path / "cli"), "--set", "methods=RSD4,Uniform", "--set", "total_timesteps=100",
            "--set", "learning_starts=50", "--set", "episode_length=25", "--set", "calib_iters=4",
            "--set", "n_eval_episodes=1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "result.json").is_file()


def test_a_bad_channel_csv_is_reported(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("snr\n1\n2\n")
    with pytest.raises(ValueError, match="channel"):
        reprozoo.run("rsd4", preset="smoke", out=tmp_path / "r", datasets=[str(path)], overrides=TINY, quiet=True)
