"""RSD4 agent: softmax operator, layout, episode replay with hidden states, learn/predict/save/load."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reprozoo.rsd4 import DelayConstrainedSchedulingEnv, LagrangianWrapper
from reprozoo.rsd4.agent import RSD4, UserLayout, softmax_operator
from reprozoo.rsd4.buffer import EpisodeReplay
from reprozoo.rsd4.networks import ActingStep, RecurrentActor, RecurrentCritic


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=20))
def test_softmax_operator_limits(values):
    q = torch.tensor([values], dtype=torch.float64)
    assert float(softmax_operator(q, 0.0)) == pytest.approx(float(q.mean()), abs=1e-9)
    assert float(softmax_operator(q, 1e6)) == pytest.approx(float(q.max()), abs=1e-6)
    mid = float(softmax_operator(q, 0.5))
    assert float(q.mean()) - 1e-9 <= mid <= float(q.max()) + 1e-9


def test_softmax_operator_stable_and_validated():
    q = torch.tensor([[1e4, -1e4, 0.0]])
    out = softmax_operator(q, 100.0)
    assert torch.isfinite(out).all() and float(out) == pytest.approx(1e4)
    with pytest.raises(ValueError, match="beta"):
        softmax_operator(q, -1.0)


def test_layout_mini_states_and_actions():
    lay = UserLayout(n_users=2, tau_max=3, deadlines=[1, 3], partial_obs=False)
    obs = np.array([[5, 6, 1, 2, 3, 4, 2, 3]], dtype=np.float32)  # buffers (2 + 4) then channels
    ms = lay.mini_states(obs)
    assert ms.shape == (1, 2, lay.state_dim) == (1, 2, 6)
    np.testing.assert_array_equal(ms[0, 0], [0, 5, 6, 0, 0, 2])
    np.testing.assert_array_equal(ms[0, 1], [1, 1, 2, 3, 4, 3])
    flat = np.arange(6, dtype=np.float32)[None] / 10
    per_user = lay.split_actions(flat)
    np.testing.assert_array_equal(per_user[0, 0, 2:], [-1, -1])
    np.testing.assert_array_equal(lay.join_actions(per_user), flat)


def test_replay_stores_and_restores_hidden_states():
    rep = EpisodeReplay(capacity=3, episode_length=5, state_dim=2, action_dim=1, hidden_dim=4, store_every_step=True)
    m = 2
    hidden = np.arange(m * 5 * 4 * 2 * 4, dtype=np.float32).reshape(m, 5, 4, 2, 4)
    states = np.arange(m * 6 * 2, dtype=np.float32).reshape(m, 6, 2)
    rep.push(states, np.zeros((m, 6, 1)), np.zeros((m, 5, 1)), np.zeros((m, 5)), np.zeros((m, 5)), hidden)
    b = rep.sample(8, np.random.default_rng(0), segment_length=3)
    assert b["states"].shape == (8, 4, 2) and b["actions"].shape == (8, 3, 1)
    assert b["hidden"].shape == (4, 2, 1, 8, 4)
    for j in range(8):
        i, s = int(b["index"][j]), int(b["start"][j])
        np.testing.assert_array_equal(b["hidden"][:, :, 0, j].numpy(), hidden[i, s])
        np.testing.assert_array_equal(b["states"][j].numpy(), states[i, s:s + 4])
    with pytest.raises(ValueError, match="shape"):
        rep.push(states, np.zeros((m, 6, 1)), np.zeros((m, 5, 1)), np.zeros((m, 5)), np.zeros((m, 5)), hidden[:, :1])
    rep2 = EpisodeReplay(3, 5, 2, 1, 4)
    with pytest.raises(ValueError, match="empty"):
        rep2.sample(2, np.random.default_rng(0))


def test_networks_shapes_and_broadcast_head():
    actor, critic = RecurrentActor(5, 3, 8), RecurrentCritic(5, 3, 8)
    s, la = torch.randn(4, 7, 5), torch.rand(4, 7, 3) * 2 - 1
    a, (h, c) = actor(s, la)
    assert a.shape == (4, 7, 3) and a.abs().max() <= 1 and h.shape == (1, 4, 8)
    q, _ = critic(s, a, la)
    assert q.shape == (4, 7)
    mem, _ = critic.memory(s, la)
    many = critic.head(s[:, None], a[:, None].expand(4, 6, 7, 3), mem[:, None])
    assert many.shape == (4, 6, 7)
    torch.testing.assert_close(many[:, 2], q)
    # the split-weight head is the paper's concatenating head (Sec. 4.2)
    x = torch.cat([torch.relu(critic.fc(torch.cat([s, a], -1))), mem], -1)
    torch.testing.assert_close(q, critic.head2(torch.relu(critic.head1(x))).squeeze(-1))
    # step-by-step recurrence (one-step cell path after the first step) equals the whole-sequence pass
    hid, outs = None, []
    for t in range(7):
        o, hid = actor(s[:, t:t + 1], la[:, t:t + 1], hid)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), a)


@pytest.mark.parametrize("recurrent", [True, False])
def test_acting_step_is_the_networks_forward(recurrent):
    """Acting's fused step (the four networks' weights as block matrices, one step at a time) gives the networks'
    own forward, here the whole-sequence nn.LSTM pass that training uses: actions, critic values, LSTM states."""
    torch.manual_seed(0)
    s_dim, a_dim, hid, b, t = 6, 4, 8, 5, 7
    actors = [RecurrentActor(s_dim, a_dim, hid, recurrent) for _ in range(2)]
    critics = [RecurrentCritic(s_dim, a_dim, hid, recurrent) for _ in range(2)]
    with torch.no_grad():  # biases that are not zero and nets that differ
        for p in (p for m in actors + critics for p in m.parameters()):
            p.add_(0.3 * torch.randn_like(p))
    s, la = torch.randn(b, t, s_dim), torch.rand(b, t, a_dim) * 2 - 1
    hx = [(0.5 * torch.randn(1, b, hid), 0.5 * torch.randn(1, b, hid)) for _ in range(4)]
    with torch.no_grad():
        acts, new_h = zip(*(actors[k](s, la, hx[k]) for k in range(2)), strict=True)
        mems, mem_h = zip(*(critics[k].memory(s, la, hx[2 + k]) for k in range(2)), strict=True)
        q = torch.stack([critics[k].head(s, acts[k], mems[k]) for k in range(2)], -1)  # (B, T, 2)
        step = ActingStep(actors, critics)
        h, c = (torch.cat([x[i][0] for x in hx], 1) for i in range(2))  # (B, 4H): actor 1, actor 2, critic 1, 2
        for i in range(t):
            a_i, q_i, h, c = step(torch.cat([s[:, i], la[:, i]], 1), h, c)
            torch.testing.assert_close(a_i, torch.cat([acts[0][:, i], acts[1][:, i]], 1), rtol=0, atol=1e-6)
            torch.testing.assert_close(q_i, q[:, i], rtol=0, atol=1e-6)
    final = new_h + mem_h if recurrent else hx  # without an LSTM the state passes through
    torch.testing.assert_close(h, torch.cat([x[0][0] for x in final], 1), rtol=0, atol=1e-6)
    torch.testing.assert_close(c, torch.cat([x[1][0] for x in final], 1), rtol=0, atol=1e-6)
    with torch.no_grad():  # weights changed in place (by hand, load_state_dict): the step follows them
        critics[1].head2.bias.add_(1.0)
        q2 = step(torch.cat([s[:, 0], la[:, 0]], 1), *(torch.cat([x[i][0] for x in hx], 1) for i in range(2)))[1]
    torch.testing.assert_close(q2, q[:, 0] + torch.tensor([0.0, 1.0]), rtol=0, atol=1e-6)
    opt = torch.optim.Adam(critics[0].head2.parameters(), lr=0.5, fused=True)  # a fused step bumps no version
    critics[0].head2.bias.grad = -torch.ones_like(critics[0].head2.bias)
    opt.step()  # Adam's first step moves the bias by lr = 0.5
    with torch.no_grad():
        q3 = step(torch.cat([s[:, 0], la[:, 0]], 1), *(torch.cat([x[i][0] for x in hx], 1) for i in range(2)))[1]
    torch.testing.assert_close(q3, q[:, 0] + torch.tensor([0.5, 1.0]), rtol=0, atol=1e-5)


def make_env(seed=0, partial=True):
    return LagrangianWrapper(
        DelayConstrainedSchedulingEnv(arrival="poisson", channel="cellular", partial_obs=partial, seed=seed,
                                      episode_length=20),
        budget=5.0, lr=0.01, lam=0.1)


def tiny_agent(env, **kw):
    params = dict(learning_starts=40, train_freq=20, gradient_steps=2, batch_size=4, n_target_samples=4,
                  hidden_dim=8, seed=0)
    params.update(kw)
    return RSD4(env, **params)


def concat_q(critic, s, a, mem):
    """The critic's head in the paper's concatenating form (Sec. 4.2): head2(relu(head1([relu(fc([s, a])), mem])))."""
    x = torch.cat([torch.relu(critic.fc(torch.cat([s, a], -1))), mem], -1)
    return critic.head2(torch.relu(critic.head1(x))).squeeze(-1)


def reference_target(agent, k, s, la, hx, r, d, vmask):
    """The authors' target (alg/RSD4_OUT_XIN.py): every candidate action through the whole concatenating critic
    with the LSTM repeated per sample, min of the two target critics, max-shifted softmax operator (optionally
    divided by the noise density), y = r + gamma (1 - d) softmax; the noise drawn from the agent's generator."""
    n_k, (b, t) = agent.n_target_samples, r.shape
    eps = torch.randn((n_k, b, t, agent.layout.action_dim), generator=agent.torch_gen)
    with torch.no_grad():
        next_a = agent.actor_targets[k](s, la, hx[k])[0][:, 1:]
        qs = []
        for i in range(n_k):
            cand = torch.where(vmask, (next_a + agent.target_noise * eps[i]).clamp(-1, 1), torch.tensor(-1.0))
            per_critic = []
            for j in range(2):
                c = agent.critic_targets[j]
                per_critic.append(concat_q(c, s[:, 1:], cand, c.memory(s, la, hx[2 + j])[0][:, 1:]))
            qs.append(torch.minimum(*per_critic))
        q = torch.stack(qs, 1)  # (B, K, L) as in the reference
        e = torch.exp(agent.softmax_beta * (q - q.max(1, keepdim=True).values))
        if agent.importance_sampling:
            pdf = torch.exp(-(eps**2 * vmask[:, None].transpose(0, 1)).sum(-1) / 2).transpose(0, 1)
            e = e / pdf
        soft = (q * e).sum(1) / e.sum(1)
    return r + agent.gamma * (1 - d) * soft


@pytest.mark.parametrize("importance", [False, True])
def test_vectorised_target_equals_the_reference_form(importance):
    """The target of the vectorised update (K candidates sharing the target critics' memory, split-weight heads on
    a (K, B, L, A) grid) equals the authors' repeat-and-concatenate form."""
    torch.manual_seed(0)
    agent = tiny_agent(make_env(), n_target_samples=5, gamma=0.9, importance_sampling=importance)
    for net in agent.actor_targets + agent.critic_targets:  # targets that differ from each other
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    b, t, n = 3, 6, agent.layout
    s = torch.cat([torch.randint(0, 4, (b, 1, 1)).float().expand(b, t + 1, 1),
                   torch.rand(b, t + 1, n.state_dim - 1) * 3], -1)
    la = torch.rand(b, t + 1, n.action_dim) * 2 - 1
    hx = [(0.1 * torch.randn(1, b, 8), 0.1 * torch.randn(1, b, 8)) for _ in range(4)]
    r, d = torch.randn(b, t), (torch.rand(b, t) < 0.2).float()
    vmask = agent._valid[s[:, 0, 0].long()][:, None, :]
    state = agent.torch_gen.get_state()
    y = agent._target(1, s, la, hx, r, d, vmask)
    agent.torch_gen.set_state(state)
    torch.testing.assert_close(y, reference_target(agent, 1, s, la, hx, r, d, vmask))


def reference_iteration(agent):
    """One iteration in the authors' order (alg/RSD4_OUT_XIN.py ``train``), written plainly: for each twin k, draw
    a batch, regress critic k on its target, and every ``policy_delay`` iterations take actor k's deterministic
    policy gradient through critic k (updated) and soft-update critic k's and actor k's targets."""
    actor_step = agent.n_updates % agent.policy_delay == 0
    for k in range(2):
        batch = agent.replay.sample(agent.batch_size, agent.rng, agent.segment_length)
        s, la, a, h = batch["states"], batch["last_actions"], batch["actions"], batch["hidden"]
        hx = [(h[j, 0], h[j, 1]) for j in range(4)]
        vmask = agent._valid[s[:, 0, 0].long()][:, None, :]
        y = reference_target(agent, k, s, la, hx, agent.batch_rewards(batch), batch["dones"], vmask)
        critic, s0, la0 = agent.critics[k], s[:, :-1], la[:, :-1]
        loss = ((concat_q(critic, s0, a, critic.memory(s0, la0, hx[2 + k])[0]) - y) ** 2).mean()
        agent.critic_optims[k].zero_grad()
        loss.backward()
        agent.critic_optims[k].step()
        if actor_step:
            pi = torch.where(vmask, agent.actors[k](s0, la0, hx[k])[0], torch.tensor(-1.0))
            actor_loss = -concat_q(critic, s0, pi, critic.memory(s0, la0, hx[2 + k])[0].detach()).mean()
            agent.actor_optims[k].zero_grad()
            actor_loss.backward()
            agent.actor_optims[k].step()
            with torch.no_grad():
                for src, dst in ((critic, agent.critic_targets[k]), (agent.actors[k], agent.actor_targets[k])):
                    for p, q in zip(src.parameters(), dst.parameters(), strict=True):
                        q.copy_(agent.tau * p + (1 - agent.tau) * q)
    agent.n_updates += 1


@pytest.mark.parametrize("kw", [{"segment_length": 5}, {"segment_length": None, "importance_sampling": True}])
def test_train_step_equals_the_reference_update(kw):
    """``train_step`` (both batches drawn first, target-critic memories shared between the twins' updates where the
    weights are the same) gives the numbers of the authors' sequential update, up to float rounding: every network,
    target and optimiser state after iterations with and without the delayed actor step."""
    agents = []
    for _ in range(2):
        agent = tiny_agent(make_env(), n_target_samples=3, gamma=0.95, tau=0.5, **kw)  # big soft steps: sharp test
        agent.learn(60)  # identical runs (seeded): fills the replay
        agents.append(agent)
    fast, ref = agents
    for _ in range(5):
        fast.train_step()
        reference_iteration(ref)
    nets = lambda ag: ag.actors + ag.critics + ag.actor_targets + ag.critic_targets  # noqa: E731
    for m_fast, m_ref in zip(nets(fast), nets(ref), strict=True):
        for p, q in zip(m_fast.parameters(), m_ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=2e-6)  # rounding: ~1e-7; a wrong share: ~3e-5
    assert fast.n_updates == ref.n_updates and fast.rng.integers(1 << 30) == ref.rng.integers(1 << 30)
    torch.testing.assert_close(fast.torch_gen.get_state(), ref.torch_gen.get_state(), rtol=0, atol=0)

@pytest.mark.parametrize("segment", [None, 5])
def test_tiny_learn_updates_networks(segment):
    env = make_env()
    agent = tiny_agent(env, segment_length=segment)
    before = [p.clone() for p in agent.critics[0].parameters()]
    agent.learn(100)
    assert agent.num_timesteps == 100 and agent.n_updates > 0
    assert len(agent.episode_log) == 5
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critics[0].parameters(), strict=True))
    assert np.isfinite(agent.last_critic_loss)
    assert all(e["resource"] >= 0 for e in agent.episode_log)


def test_learn_is_deterministic_per_seed():
    logs = []
    for _ in range(2):
        agent = tiny_agent(make_env())
        agent.learn(60)
        weight = float(next(agent.actors[0].parameters()).detach().sum())
        logs.append([e["throughput"] for e in agent.episode_log] + [weight])
    assert logs[0] == logs[1]


def test_predict_shapes_state_and_bad_input():
    env = make_env(partial=False)
    agent = tiny_agent(env)
    obs, _ = env.reset(seed=0)
    a, state = agent.predict(obs)
    assert a.shape == env.action_space.shape and np.all(np.abs(a) <= 1)
    a2, state2 = agent.predict(obs, state=state, episode_start=np.array([False]))
    assert state2[0].shape == (4, 2, env.unwrapped.n_users, agent.hidden_dim)
    batch = np.stack([obs, obs])
    ab, _ = agent.predict(batch, episode_start=np.array([True, True]))
    assert ab.shape == (2, env.action_space.shape[0])
    np.testing.assert_allclose(ab[0], ab[1])
    with pytest.raises(ValueError, match="observation"):
        agent.predict(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        agent.predict(np.full_like(obs, np.nan))
    with pytest.raises(ValueError, match="learning_rate"):
        RSD4(env, learning_rate=-1.0)
    with pytest.raises(TypeError, match="batch_size"):
        RSD4(env, batch_size=2.5)


def test_save_load_round_trip(tmp_path):
    env = make_env()
    agent = tiny_agent(env)
    agent.learn(60)
    path = agent.save(tmp_path / "rsd4.pt")
    loaded = RSD4.load(path, env=env)
    obs, _ = env.reset(seed=3)
    a1, s1 = agent.predict(obs)
    a2, s2 = loaded.predict(obs)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(s1[0], s2[0])
    assert loaded.num_timesteps == 60 and loaded.batch_size == agent.batch_size
    loaded.learn(20)  # can keep learning
    with pytest.raises(FileNotFoundError):
        RSD4.load(tmp_path / "missing.pt")
    other = DelayConstrainedSchedulingEnv(n_users=3, seed=1)
    with pytest.raises(ValueError, match="layout"):
        RSD4.load(path, env=other)
    bad = tmp_path / "garbage.pt"
    bad.write_text("garbage\n")
    with pytest.raises(ValueError, match="not a saved RSD4 agent"):
        RSD4.load(bad)
    with pytest.raises(IsADirectoryError, match="folder"):
        RSD4.load(tmp_path)
    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="missing params"):
        RSD4.load(foreign)


@pytest.mark.parametrize("kw", [{"softmax_beta": None}, {"recurrent": False}, {"importance_sampling": True}])
def test_ablations_and_options_learn(kw):
    agent = tiny_agent(make_env(), **kw)
    agent.learn(60)
    assert agent.n_updates > 0 and np.isfinite(agent.last_critic_loss)
    a, _ = agent.predict(make_env().reset(seed=0)[0])
    assert np.all(np.abs(a) <= 1)


def test_replay_keeps_costs_and_defaults_them_to_zero():
    rep = EpisodeReplay(capacity=4, episode_length=5, state_dim=2, action_dim=1, hidden_dim=4)
    m = 2
    costs = np.arange(m * 5, dtype=np.float32).reshape(m, 5)
    args = (np.zeros((m, 6, 2)), np.zeros((m, 6, 1)), np.zeros((m, 5, 1)), np.zeros((m, 5)), np.zeros((m, 5)),
            np.zeros((m, 1, 4, 2, 4)))
    rep.push(*args, costs)
    b = rep.sample(6, np.random.default_rng(0))
    for j in range(6):
        np.testing.assert_array_equal(b["costs"][j].numpy(), costs[int(b["index"][j])])
    rep.push(*args)  # no costs: zeros
    np.testing.assert_array_equal(rep.costs[2:4], 0.0)
    with pytest.raises(ValueError, match="costs"):
        rep.push(*args, costs[:, :3])


def test_critic_rewards_use_the_current_dual_price():
    # regression: rewards stored with the price of their time made the critic's action gradient lag the dual
    # price by the whole replay (10k user-episodes), so actors kept starving users worth serving at the new price
    env = make_env()
    agent = tiny_agent(env)
    agent.learn(60)
    stored = agent.replay.rewards[: len(agent.replay)]
    # price-free part: weighted deliveries, integers >= 0 here (integer weights; a priced reward is not)
    assert np.array_equal(env.unwrapped.weights, np.round(env.unwrapped.weights))
    assert (stored >= 0).all() and np.array_equal(stored, np.round(stored)) and stored.max() > 0
    assert (agent.replay.costs[: len(agent.replay)] > 0).any()
    batch = agent.replay.sample(8, np.random.default_rng(1))
    env.lam = 0.1
    r1 = agent.batch_rewards(batch)
    env.lam = 1.3
    r2 = agent.batch_rewards(batch)
    torch.testing.assert_close(r1 - r2, 1.2 * batch["costs"])
    torch.testing.assert_close(r2, batch["rewards"] - 1.3 * batch["costs"])
    # the ablation keeps the reward priced when the step was taken
    frozen = tiny_agent(make_env(), relabel_rewards=False)
    frozen.learn(60)
    assert (frozen.replay.costs[: len(frozen.replay)] == 0).all()
    b = frozen.replay.sample(4, np.random.default_rng(1))
    assert torch.equal(frozen.batch_rewards(b), b["rewards"])


def test_learn_follows_sb3_signature_callbacks_and_reset_num_timesteps():
    agent = tiny_agent(make_env())
    calls = []

    def stop_after_30(locals_, globals_):
        calls.append(locals_["num_timesteps"])
        return locals_["num_timesteps"] < 30

    agent.learn(100, callback=stop_after_30, log_interval=1)
    assert agent.num_timesteps == 30 and calls[-1] == 30
    agent.learn(40, reset_num_timesteps=False)
    assert agent.num_timesteps == 70
    agent.learn(40)  # reset_num_timesteps=True (SB3's default): the counter restarts
    assert agent.num_timesteps == 40
    from stable_baselines3.common.callbacks import BaseCallback

    class Count(BaseCallback):
        def _on_step(self):
            return True

    cb = Count()
    agent.learn(20, callback=cb)
    assert cb.n_calls == 20 and cb.num_timesteps == 20
    with pytest.raises(TypeError, match="callback should be"):
        agent.learn(20, callback=3)
    with pytest.raises(ValueError, match="log_interval"):
        agent.learn(20, log_interval=-1)
