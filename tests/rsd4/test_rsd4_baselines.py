"""Heuristic baselines (budget matching, hand-made decisions), the evaluator and the SB3 wrapper."""

import gymnasium as gym
import numpy as np
import pytest

from reprozoo.rsd4 import DelayConstrainedSchedulingEnv, LagrangianWrapper
from reprozoo.rsd4.baselines import (
    EDF,
    MaxWeight,
    MaxWeightBlind,
    SB3Agent,
    Uniform,
    calibrate,
    evaluate,
    mean_service_rate,
)


def hand_env():
    env = DelayConstrainedSchedulingEnv(n_users=2, tau_max=2, deadlines=[2, 2], weights=[1.0, 3.0],
                                        distances=[1.0, 1.0], arrival="bernoulli", arrival_rates=[0.0, 0.0], seed=0)
    env.reset(seed=0)
    env.buffer[:] = [[2, 1, 0], [0, 0, 4]]
    env.channel_state[:] = [1, 1]
    return env


def test_uniform_and_edf_decisions():
    env = hand_env()
    np.testing.assert_allclose(Uniform(0.3).resource(env), [[0.3, 0.3, 0], [0, 0, 0.3]])
    e = EDF(2.5).resource(env)  # slot 0 of user 0 (2 packets) first, then 0.5 left for the next-earliest
    np.testing.assert_allclose(e, [[1.0, 0.5, 0], [0, 0, 0]])
    assert (e * env.buffer).sum() == pytest.approx(2.5)


def test_maxweight_spends_cap_and_prefers_heavier_user():
    env = hand_env()
    e = MaxWeight(2.0).resource(env)
    assert (e * env.buffer).sum() == pytest.approx(2.0, rel=1e-6)
    assert e[1, 2] > e[0, 0]  # same channel and distance, weight 3 vs 1
    assert (MaxWeight(0.0).resource(env) == 0).all()
    big = MaxWeight(1e3).resource(env)
    np.testing.assert_allclose(big[env.buffer > 0], 1.0)


def test_maxweight_blind_ignores_the_channel_state_and_uses_training_service_rates():
    env = hand_env()
    blind = MaxWeightBlind(2.0, service_rate=[1.0, 1.0])
    before = blind.resource(env)
    env.channel_state[:] = [1, 4]  # the oracle reacts, the blind rule does not
    np.testing.assert_array_equal(blind.resource(env), before)
    assert not np.allclose(MaxWeight(2.0).resource(env), before)
    # with the same channel everywhere and rate 1, the blind rule is the oracle at channel state 1
    env.channel_state[:] = [1, 1]
    np.testing.assert_allclose(blind.resource(env), MaxWeight(2.0).resource(env))
    # service rates come from the training 80 % of the trace whatever split the env runs on
    train = DelayConstrainedSchedulingEnv(arrival="poisson", channel="cellular", seed=0)
    held = DelayConstrainedSchedulingEnv(arrival="poisson", channel="cellular", seed=0, split="eval")
    rate = mean_service_rate(train)
    np.testing.assert_allclose(rate, mean_service_rate(held))
    n_train = int(0.8 * train._channel_trace.shape[0])
    np.testing.assert_allclose(rate, (1.0 / train._channel_trace[:n_train]).mean(axis=0))
    assert ((rate > 0.25) & (rate < 1.0)).all()  # states 1..4
    markov = mean_service_rate(DelayConstrainedSchedulingEnv(channel="markov", seed=0))
    assert markov.shape == (4,) and 0.25 < markov[0] < 1.0
    pol, m = calibrate(MaxWeightBlind, train, 6.0, n_episodes=2, n_iter=14, service_rate=rate)
    assert isinstance(pol, MaxWeightBlind) and abs(m["resource"] - 6.0) / 6.0 < 0.05
    with pytest.raises(TypeError, match="env should be a DelayConstrainedSchedulingEnv"):
        mean_service_rate(gym.Env())


@pytest.mark.parametrize("kind", [Uniform, EDF, MaxWeight, MaxWeightBlind])
def test_calibrate_matches_budget(kind):
    env = DelayConstrainedSchedulingEnv(arrival="poisson", channel="cellular", seed=0, episode_length=30)
    pol, m = calibrate(kind, env, 6.0, n_episodes=2, n_iter=14)
    assert m["resource"] == pytest.approx(6.0, rel=0.03)
    assert 0 <= m["drop_rate"] <= 1 and m["throughput"] > 0


def test_evaluate_inputs():
    env = DelayConstrainedSchedulingEnv(seed=0, episode_length=10)
    m = evaluate(lambda obs: -np.ones(env.n_slots), env, 2)
    assert m["resource"] == 0.0 and m["throughput"] == 0.0
    with pytest.raises(TypeError, match="policy"):
        evaluate(3, env, 1)
    with pytest.raises(ValueError, match="n_episodes"):
        evaluate(Uniform(0.1), env, 0)


@pytest.mark.parametrize("algo", ["TD3", "SAC"])
def test_sb3_agent_tiny_run(algo):
    env = LagrangianWrapper(DelayConstrainedSchedulingEnv(arrival="poisson", seed=0, episode_length=20),
                            budget=5.0, lr=0.01)
    agent = SB3Agent(algo, env, learning_starts=20, seed=0, policy_kwargs={"net_arch": [16]}, batch_size=16)
    agent.learn(60)
    assert len(agent.episode_log) == 3
    m = evaluate(agent, DelayConstrainedSchedulingEnv(arrival="poisson", seed=0, episode_length=20), 1)
    assert np.isfinite(m["throughput"])
    with pytest.raises(ValueError, match="algo"):
        SB3Agent("PPO", env)


@pytest.mark.parametrize("algo", ["TD3", "RecurrentPPO"])
def test_sb3_agent_on_vectorised_copies(algo):
    def make():
        return LagrangianWrapper(DelayConstrainedSchedulingEnv(arrival="poisson", seed=0, episode_length=20),
                                 budget=5.0, lam=0.5, frozen=True)

    kw = {"n_steps": 20, "batch_size": 20} if algo == "RecurrentPPO" else {"learning_starts": 20, "batch_size": 16}
    agent = SB3Agent(algo, make, n_envs=3, seed=0, policy_kwargs={"net_arch": [16]}, **kw)
    assert agent.model.get_env().num_envs == 3
    agent.learn(120, log_interval=1)
    assert agent.model.num_timesteps >= 120 and len(agent.episode_log) >= 6
    steps = [e["timesteps"] for e in agent.episode_log]
    assert steps == sorted(steps)
    with pytest.raises(TypeError, match="env should be a callable"):
        SB3Agent(algo, make(), n_envs=2)


def test_recurrent_ppo_keeps_its_lstm_state_across_steps():
    env = LagrangianWrapper(DelayConstrainedSchedulingEnv(arrival="poisson", seed=0, episode_length=20),
                            budget=5.0, lr=0.01, lam=0.3)
    agent = SB3Agent("RecurrentPPO", env, seed=0, n_steps=40, batch_size=20, n_epochs=1,
                     policy_kwargs={"net_arch": [16], "lstm_hidden_size": 8})
    agent.learn(80)
    assert len(agent.episode_log) == 4
    obs, _ = env.reset(seed=1)
    action, state = agent.predict(obs)
    assert action.shape == env.action_space.shape and env.action_space.contains(action)
    h, c = state  # (LSTM layers, envs, hidden)
    assert h.shape == (1, 1, 8) and np.abs(h).sum() > 0
    a2, state2 = agent.predict(obs, state=state, episode_start=np.array([False]))
    a3, _ = agent.predict(obs, state=None)
    np.testing.assert_allclose(a3, action)  # a fresh state reproduces the first step
    assert not np.allclose(state2[0], h)  # the state moves on when it is passed back
    m = evaluate(agent, DelayConstrainedSchedulingEnv(arrival="poisson", seed=0, episode_length=20), 1)
    assert np.isfinite(m["throughput"]) and m["resource"] >= 0
