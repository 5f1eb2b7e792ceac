"""Heuristic baselines (budget matching, hand-made decisions), the evaluator and the SB3 wrapper."""

import numpy as np
import pytest

from reprozoo.rsd4 import DelayConstrainedSchedulingEnv, LagrangianWrapper
from reprozoo.rsd4.baselines import EDF, MaxWeight, SB3Agent, Uniform, calibrate, evaluate


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


@pytest.mark.parametrize("kind", [Uniform, EDF, MaxWeight])
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
