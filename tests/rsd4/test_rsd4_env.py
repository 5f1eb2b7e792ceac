"""Environment of RSD4: queue dynamics, accounting, success model, seeding, check_env, bad input."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from reprozoo.datasets import bin_trace, quantise_capacity
from reprozoo.rsd4 import (
    ENV_ID,
    DelayConstrainedSchedulingEnv,
    DelayConstrainedSchedulingVectorEnv,
    LagrangianWrapper,
    dual_update,
    success_probability,
)


def small_env(**kw):
    base = dict(n_users=2, tau_max=3, arrival="bernoulli", deadlines=[2, 3], weights=[2.0, 1.0],
                distances=[1.0, 1.5], arrival_rates=[1.0, 0.0], seed=0)
    base.update(kw)
    return DelayConstrainedSchedulingEnv(**base)


def test_success_probability_formula_zero_and_monotone():
    e = np.linspace(0, 1, 11)
    d, c = 1.3, 2.0
    expected = 2.0 / (1.0 + np.exp(-2.0 * e / (d**3 * c))) - 1.0
    np.testing.assert_allclose(success_probability(e, d, c), expected, rtol=1e-12, atol=1e-15)
    assert success_probability(0.0, 2.0, 4.0) == 0.0
    assert np.all(np.diff(success_probability(e, d, c)) > 0)
    assert np.all(success_probability(e, 1.0, np.arange(1, 5)[:, None])[:, -1] < 1.0)


def test_arrival_placed_in_slot_tau_then_shifts_and_expires():
    env = small_env()
    env.reset(seed=1)
    assert env.buffer.sum() == 0  # empty at reset, as the reference
    no = -np.ones(env.n_slots)  # zero resource: nothing delivered
    _, _, _, _, info = env.step(no)
    assert env.buffer[0].tolist() == [0, 0, 1, 0]  # one packet of user 0 in slot tau_0 = 2
    assert info["dropped"] == 0 and info["arrived"] == 1
    env.step(no)
    assert env.buffer[0].tolist() == [0, 1, 1, 0]
    env.step(no)
    assert env.buffer[0].tolist() == [1, 1, 1, 0]
    _, _, _, _, info = env.step(no)  # the first packet had lifetime 0 and was not served: expires
    assert info["dropped"] == 1
    assert env.buffer[0].tolist() == [1, 1, 1, 0]
    assert env.buffer[1].sum() == 0  # padding slot 3 of user 0 and user 1 (rate 0) stay empty


def test_reward_and_resource_on_hand_made_step():
    env = small_env(arrival_rates=[0.0, 0.0], lam=0.5)
    env.reset(seed=0)
    env.buffer[0, :3] = [2, 0, 3]
    env.buffer[1, :4] = [0, 4, 0, 0]
    # full resource everywhere (a = 1 -> e = 1): resource = packets present = 9
    env.distances[:] = 1e-3  # p = tanh(huge) = 1: every packet delivered
    _, reward, _, _, info = env.step(np.ones(env.n_slots))
    assert info["resource"] == pytest.approx(9.0)
    assert info["delivered"] == 9
    assert info["throughput"] == pytest.approx(2.0 * 5 + 1.0 * 4)
    assert reward == pytest.approx(14.0 - 0.5 * 9.0)
    np.testing.assert_allclose(info["per_user_reward"], [10.0 - 0.5 * 5, 4.0 - 0.5 * 4])
    # half resource (a = 0 -> e = 0.5) on 3 packets
    env.buffer[:] = 0
    env.buffer[1, 2] = 3
    _, _, _, _, info = env.step(np.zeros(env.n_slots))
    assert info["resource"] == pytest.approx(1.5)


def test_conservation_delivered_dropped_remaining_equals_arrived():
    env = DelayConstrainedSchedulingEnv(arrival="poisson", channel="markov", seed=3)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(60):
        env.step(rng.uniform(-1, 1, env.n_slots))
    tot = env.totals
    assert tot["delivered"] + tot["dropped"] + env.buffer.sum() == tot["arrived"]
    assert tot["arrived"] > 0


def test_seeding_same_trajectory_under_fixed_actions():
    def roll(seed):
        env = DelayConstrainedSchedulingEnv(arrival="poisson", channel="cellular", seed=5)
        obs, _ = env.reset(seed=seed)
        acts = np.random.default_rng(1).uniform(-1, 1, (30, env.n_slots))
        traj = [obs]
        for a in acts:
            traj.append(env.step(a)[0])
        return np.array(traj)

    np.testing.assert_array_equal(roll(7), roll(7))
    assert not np.array_equal(roll(7), roll(8))


@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("channel", ["markov", "cellular"])
def test_check_env_and_registration(partial, channel):
    env = gym.make(ENV_ID, arrival="poisson", channel=channel, partial_obs=partial, seed=0)
    assert ENV_ID == "DelayConstrainedScheduling-v0"  # the id the paper's system is registered under
    check_env(env.unwrapped, skip_render_check=True)
    with pytest.warns(UserWarning, match="different from the unwrapped"):  # gymnasium's note; checked anyway
        check_env(LagrangianWrapper(env, budget=10.0, lam=0.3), skip_render_check=True)  # the wrapped env too
    wrapped = LagrangianWrapper(env, budget=10.0, lam=0.3)
    assert wrapped.spec.additional_wrappers[-1].kwargs["lam"] == 0.3  # re-creatable from its spec
    obs, _ = env.reset(seed=0)
    base = env.unwrapped
    assert obs.shape == (base.n_slots + (0 if partial else base.n_users),)


def test_truncation_at_episode_length_and_info_keys():
    env = DelayConstrainedSchedulingEnv(seed=0)
    env.reset(seed=0)
    for t in range(100):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        assert not term
        assert trunc == (t == 99)
    for key in ("throughput", "resource", "dropped", "per_user_reward"):
        assert key in info


def test_vector_api():
    venv = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync", arrival="poisson")  # seed=None: instance 0
    obs, _ = venv.reset(seed=0)
    assert obs.shape[0] == 3
    obs, rew, term, trunc, info = venv.step(venv.action_space.sample())
    assert rew.shape == (3,) and info["throughput"].shape == (3,)
    venv.close()


def test_markov_and_periodic_and_csv_traces(tmp_path):
    env = DelayConstrainedSchedulingEnv(arrival="periodic", channel="markov", seed=2)
    env.reset(seed=0)
    np.testing.assert_allclose(env.transition_matrix.sum(axis=1), 1.0)
    arr = []
    for _ in range(20):
        arr.append(env.step(-np.ones(env.n_slots))[4]["arrived"])
    assert sum(arr) > 0
    path = tmp_path / "trace.csv"
    rows = ["arrival_0,arrival_1,channel_0,channel_1"] + [f"{t % 3},1,{1 + t % 2},2" for t in range(50)]
    path.write_text("\n".join(rows) + "\n")
    env = DelayConstrainedSchedulingEnv(n_users=2, arrival=str(path), channel=str(path), seed=0)
    env.reset(seed=0)
    assert set(env.channel_state.tolist()) <= {1, 2}
    assert env.step(-np.ones(env.n_slots))[4]["arrived"] in (1, 2, 3)
    ev = DelayConstrainedSchedulingEnv(n_users=2, arrival=str(path), channel=str(path), seed=0, split="eval")
    ev.reset(seed=0)


def test_bad_actions():
    env = small_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(env.n_slots + 1))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(env.n_slots, np.nan))
    # out of range is clipped: same resource as +1
    env.buffer[:] = 0
    env.buffer[0, 0] = 2
    assert env.step(np.full(env.n_slots, 5.0))[4]["resource"] == pytest.approx(2.0)


def test_bad_configuration(tmp_path):
    with pytest.raises(ValueError, match="deadlines"):
        small_env(deadlines=[0, 3])
    with pytest.raises(ValueError, match="arrival_rates"):
        small_env(arrival_rates=[-1.0, 0.5])
    with pytest.raises(ValueError, match="arrival"):
        DelayConstrainedSchedulingEnv(arrival=str(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="lacks columns"):
        DelayConstrainedSchedulingEnv(n_users=2, channel=str(bad))
    with pytest.raises(ValueError, match="tau_max"):
        DelayConstrainedSchedulingEnv(tau_max=0)
    with pytest.raises(TypeError, match="n_users"):
        DelayConstrainedSchedulingEnv(n_users=2.5)
    with pytest.raises(ValueError, match="lam"):
        DelayConstrainedSchedulingEnv(lam=-1.0)


def test_dual_update_and_wrapper():
    assert dual_update(1.0, 12.0, 10.0, 0.1) == pytest.approx(1.2)  # over budget: price rises
    assert dual_update(0.1, 2.0, 10.0, 0.1) == 0.0  # projected on lam >= 0
    with pytest.raises(ValueError, match="lr"):
        dual_update(0.0, 1.0, 1.0, -0.1)
    env = LagrangianWrapper(DelayConstrainedSchedulingEnv(arrival="poisson", seed=0, episode_length=10),
                            budget=0.5, lr=0.1, lam=0.0)
    env.reset(seed=0)
    for _ in range(10):
        _, r, _, trunc, info = env.step(np.ones(env.action_space.shape))
        assert r == pytest.approx(info["throughput"] - info["lam"] * info["resource"])
    assert trunc and env.lam > 0.0 and len(env.lam_history) == 2  # spending 1 per packet > 0.5 per slot


def test_trace_binning_and_quantisation():
    np.testing.assert_array_equal(bin_trace(np.array([0, 5, 99, 100, 250]), 100), [3, 1, 1])
    s = quantise_capacity(np.array([1, 2, 3, 4, 5, 6, 7, 8]), 4)
    assert s.tolist() == [4, 4, 3, 3, 2, 2, 1, 1]  # 1 = best channel
    with pytest.raises(ValueError, match="slot_ms"):
        bin_trace(np.array([1.0]), 0)


@pytest.mark.parametrize(("arrival", "channel"), [("poisson", "cellular"), ("bernoulli", "markov"),
                                                  ("periodic", "markov")])
def test_vector_env_with_one_copy_is_the_single_env(arrival, channel):
    # one RNG stream, the same draws in the same order: the batched dynamics are the single env's
    kw = dict(arrival=arrival, channel=channel, seed=3, episode_length=30)
    env, venv = DelayConstrainedSchedulingEnv(**kw), DelayConstrainedSchedulingVectorEnv(1, **kw)
    o1, _ = env.reset(seed=5)
    o2, _ = venv.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(45):
        a = rng.uniform(-1.2, 1.2, env.n_slots)
        o1, r1, _, tr1, i1 = env.step(a)
        if tr1:
            final = o1
            o1, _ = env.reset()
        o2, r2, te2, tr2, i2 = venv.step(a[None])
        np.testing.assert_array_equal(o2[0], o1)
        assert r2[0] == pytest.approx(r1) and tr2[0] == tr1 and not te2[0]
        assert i2["throughput"][0] == pytest.approx(i1["throughput"])
        np.testing.assert_allclose(i2["per_user_resource"][0], i1["per_user_resource"])
        if tr1:
            np.testing.assert_array_equal(i2["final_obs"][0], final)


def test_vector_env_batch_registration_and_bad_actions():
    venv = gym.make_vec(ENV_ID, num_envs=5, vectorization_mode="vector_entry_point", arrival="poisson",
                        channel="cellular", partial_obs=True, seed=0)
    assert isinstance(venv.unwrapped, DelayConstrainedSchedulingVectorEnv)
    obs, _ = venv.reset(seed=1)
    assert obs.shape == (5, venv.unwrapped.template.n_slots)
    totals = np.zeros(5)
    for _ in range(100):
        obs, rew, term, trunc, info = venv.step(venv.action_space.sample())
        totals += info["arrived"] - info["delivered"] - info["dropped"]
        assert venv.observation_space.contains(obs)
    assert trunc.all() and not term.any()
    base = venv.unwrapped
    # conservation per copy: arrived = delivered + dropped + still queued at the end (the partial obs: queues)
    np.testing.assert_array_equal(totals, info["final_obs"].sum(axis=1))
    assert (obs == 0).all()  # same-step autoreset: the queues restart empty
    assert len({tuple(r) for r in info["final_obs"]}) > 1  # copies differ
    with pytest.raises(ValueError, match=r"actions should have shape \(5, "):
        base.step(np.zeros((4, base.template.n_slots)))
    with pytest.raises(ValueError, match="NaN"):
        base.step(np.full((5, base.template.n_slots), np.nan))
