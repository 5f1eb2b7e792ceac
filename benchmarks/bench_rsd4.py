"""Benchmark of reprozoo.rsd4: environment and agent throughput, as ratios against references measured here.

Prints
* environment steps per second: single env with a random policy (the reference), gymnasium's
  SyncVectorEnv with 8 copies, the batched DelayConstrainedSchedulingVectorEnv with 8 and 64 copies
  (env-steps/s; goal >= 5x the single env), and RSD4 acting (its recurrent policy, 4 users at once);
* one acting step of the four networks: through their modules one by one (each ``forward`` on one step, the
  reference) and as the fused :class:`~reprozoo.rsd4.networks.ActingStep` the agent acts with;
* RSD4 gradient iterations per second (both critics, one actor) against SB3 TD3 gradient steps per second
  on the same environment (the reference for an update of a deep-RL agent; goal >= 0.5x), and the same per
  transition (an RSD4 iteration updates two critics on B x L transitions each, TD3 one step on 256).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rsd4.py``; wall and CPU seconds are both shown
(the machine may be shared: the update ratios come from interleaved blocks, medians of 5).
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import torch

from reprozoo.rsd4 import ENV_ID, DelayConstrainedSchedulingEnv, DelayConstrainedSchedulingVectorEnv, LagrangianWrapper
from reprozoo.rsd4.agent import RSD4
from reprozoo.rsd4.baselines import SB3Agent
from reprozoo.rsd4.networks import ActingStep

KW = dict(arrival="poisson", channel="cellular", partial_obs=True, seed=0)


def timed(fn, n: int) -> tuple[float, float]:
    """(per-second rate by wall time, by CPU time) of ``n`` units done by ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    w, c = time.perf_counter() - w, time.process_time() - c
    return n / w, n / max(c, 1e-9)


def env_single(n: int) -> None:
    env = DelayConstrainedSchedulingEnv(**KW)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(n):
        if env.step(rng.uniform(-1, 1, env.n_slots))[3]:
            env.reset()


def env_vector(n: int, k: int = 8) -> None:
    venv = gym.make_vec(ENV_ID, num_envs=k, vectorization_mode="sync", **KW)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    shape = venv.action_space.shape
    for _ in range(n // k):
        venv.step(rng.uniform(-1, 1, shape).astype(np.float32))
    venv.close()


def env_batched(n: int, k: int) -> None:
    venv = DelayConstrainedSchedulingVectorEnv(k, **KW)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    shape = venv.action_space.shape
    for _ in range(n // k):
        venv.step(rng.uniform(-1, 1, shape))


@torch.inference_mode()
def acting_step_ratio(agent: RSD4, n: int = 2_000) -> None:
    """CPU time of one step of the four networks on 4 users: modules one by one vs the fused ActingStep."""
    lay, hid = agent.layout, agent.hidden_dim
    s, la = torch.zeros(lay.n_users, 1, lay.state_dim), torch.full((lay.n_users, 1, lay.action_dim), -1.0)
    h = torch.zeros(1, lay.n_users, hid)

    def modules() -> None:
        for k in range(2):
            a, _ = agent.actors[k](s, la, (h, h))
            mem, _ = agent.critics[k].memory(s, la, (h, h))
            agent.critics[k].head(s, a, mem)

    step, x, hc = ActingStep(agent.actors, agent.critics), torch.cat([s, la], -1)[:, 0], h[0].repeat(1, 4)
    ref = timed(lambda: [modules() for _ in range(n)], n)
    fused = timed(lambda: [step(x, hc, hc) for _ in range(n)], n)
    print(f"acting step, 4 networks through their modules:      {ref[0]:7.0f} wall  {ref[1]:9.0f} cpu  (reference)")
    print(f"acting step, fused ActingStep:                      {fused[0]:7.0f} wall  {fused[1]:9.0f} cpu"
          f"   ratio {fused[1] / ref[1]:.2f}")


def main() -> None:
    torch.set_num_threads(1)
    n = 20_000
    ref = timed(lambda: env_single(n), n)
    vec = timed(lambda: env_vector(n), n)
    print(f"env steps/s, single, random policy (reference): {ref[0]:9.0f} wall  {ref[1]:9.0f} cpu")
    print(f"env steps/s, SyncVectorEnv x8:                  {vec[0]:9.0f} wall  {vec[1]:9.0f} cpu"
          f"   ratio {vec[1] / ref[1]:.2f}")
    for k in (8, 64):
        bat = timed(lambda k=k: env_batched(4 * n, k), 4 * n)
        print(f"env steps/s, batched vector env x{k:<3d}:          {bat[0]:9.0f} wall  {bat[1]:9.0f} cpu"
              f"   ratio {bat[1] / ref[1]:.2f}")

    env = LagrangianWrapper(DelayConstrainedSchedulingEnv(**KW), budget=10.0, lr=0.002, lam=0.2)
    agent = RSD4(env, learning_starts=0, train_freq=10**9, seed=0, batch_size=32, n_target_samples=16,
                 segment_length=25)
    steps = 2_000
    act = timed(lambda: agent.learn(steps), steps)  # no training phase: acting + bookkeeping only
    print(f"RSD4 acting steps/s (4 users, twin actors/critics): {act[0]:7.0f} wall  {act[1]:9.0f} cpu"
          f"   ratio to random {act[1] / ref[1]:.3f}")
    acting_step_ratio(agent)
    for _ in range(4):  # warm-up: optimiser state, allocator (as TD3's below, which has run 300 steps)
        agent.train_step()
    agent_full = RSD4(env, seed=0)  # reference settings: batch 50 whole episodes, 50 target samples
    agent_full.replay = agent.replay
    agent_full.train_step()
    sb3 = SB3Agent("TD3", env, learning_starts=0, seed=0, policy_kwargs={"net_arch": [64, 64]})
    sb3.learn(300)
    # interleaved blocks, medians: on a shared machine both sides of each ratio see the same load
    blocks: dict[str, list[tuple[float, float]]] = {"up": [], "full": [], "td3": []}
    for _ in range(5):
        blocks["up"].append(timed(lambda: [agent.train_step() for _ in range(12)], 12))
        blocks["td3"].append(timed(lambda: sb3.model.train(gradient_steps=60, batch_size=256), 60))
        blocks["full"].append(timed(agent_full.train_step, 1))
    up, up_full, td3 = (tuple(float(np.median(x)) for x in zip(*blocks[k], strict=True)) for k in ("up", "full", "td3"))
    print(f"TD3 (SB3) gradient steps/s (reference):            {td3[0]:7.1f} wall  {td3[1]:9.1f} cpu")
    print(f"RSD4 iterations/s, quick settings (B=32, L=25, K=16): {up[0]:5.1f} wall  {up[1]:9.1f} cpu"
          f"   ratio to TD3 {up[1] / td3[1]:.3f}")
    print(f"RSD4 iterations/s, reference (B=50, L=100, K=50):    {up_full[0]:5.1f} wall  {up_full[1]:9.1f} cpu"
          f"   ratio to TD3 {up_full[1] / td3[1]:.3f}")
    per = (2 * 32 * 25) / 256  # transitions per RSD4 quick iteration / per TD3 step
    print(f"per transition, quick settings: ratio to TD3 {per * up[1] / td3[1]:.3f}")


if __name__ == "__main__":
    main()
