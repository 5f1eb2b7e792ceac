"""A natively vectorised scheduling environment: ``num_envs`` copies of one instance stepped as one array.

Gymnasium's ``SyncVectorEnv`` steps its copies one by one in Python, which for this light environment costs
more than the step itself. :class:`DelayConstrainedSchedulingVectorEnv` keeps the queues of all copies in one
``(num_envs, n_users, tau_max+1)`` array and serves them with one call of :func:`reprozoo.rsd4.env.serve`
(the single environment's own dynamics), so a step of ``B`` copies costs about one step of one copy plus
``O(B * n_users * tau_max)`` array work.

The copies share the instance (deadlines, weights, distances, rates, channel process: the spaces must agree)
and differ in their random draws and trace offsets. All episodes have the same length, so all copies end
together; the vector env then resets them in the same step (Gymnasium's ``SAME_STEP`` autoreset: the returned
observation is the first of the next episode, the last one is in ``info["final_obs"]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from reprozoo.core.checks import check_int
from reprozoo.rsd4.env import DelayConstrainedSchedulingEnv, serve

__all__ = ["DelayConstrainedSchedulingVectorEnv"]


class DelayConstrainedSchedulingVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~reprozoo.rsd4.env.DelayConstrainedSchedulingEnv`, batched.

    Parameters
    ----------
    num_envs : int
    **kwargs : the single environment's arguments (``n_users``, ``arrival``, ``channel``, ``partial_obs``,
        ``lam``, ``seed``, ``episode_length``, ``split``...); ``seed`` draws the shared instance.

    ``step(actions)`` takes ``(num_envs, n_slots)`` actions in ``[-1, 1]`` (clipped; NaN/inf or a wrong shape
    raise ``ValueError``) and returns batched ``obs, reward, terminated, truncated, info`` with ``info`` arrays
    ``throughput, resource, delivered, dropped, arrived`` ``(num_envs,)`` and ``per_user_reward,
    per_user_delivered, per_user_resource, channel`` ``(num_envs, n_users)``. O(num_envs * n_users * tau_max)
    per step, vectorised.

    Examples
    --------
    >>> venv = DelayConstrainedSchedulingVectorEnv(4, arrival="poisson", seed=0)
    >>> obs, _ = venv.reset(seed=0)
    >>> obs.shape == (4, venv.single_observation_space.shape[0])
    True
    >>> obs, reward, term, trunc, info = venv.step(venv.action_space.sample())
    >>> reward.shape, info["throughput"].shape
    ((4,), (4,))
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, **kwargs: Any) -> None:
        self.num_envs = check_int(num_envs, "num_envs", low=1)
        self.template = DelayConstrainedSchedulingEnv(**kwargs)  # the instance and its processes
        tpl = self.template
        self.single_observation_space = tpl.observation_space
        self.single_action_space = tpl.action_space
        self.observation_space = batch_space(tpl.observation_space, self.num_envs)
        self.action_space = batch_space(tpl.action_space, self.num_envs)
        self.buffer = np.zeros((self.num_envs, *tpl.buffer.shape), dtype=np.int64)
        self.channel_state = np.ones((self.num_envs, tpl.n_users), dtype=np.int64)
        self._arrival_offset = np.zeros(self.num_envs, dtype=np.int64)
        self._channel_offset = np.zeros(self.num_envs, dtype=np.int64)
        self.t = 0
        self._seeded = False

    @property
    def lam(self) -> float:
        return self.template.lam

    def _obs(self) -> np.ndarray:
        buf = self.buffer[:, self.template.valid].astype(np.float32)
        if self.template.partial_obs:
            return buf
        return np.concatenate([buf, self.channel_state.astype(np.float32)], axis=1)

    def _reset_state(self) -> None:
        tpl, rng, b = self.template, self.np_random, self.num_envs
        self.t = 0
        self.buffer[:] = 0
        if tpl._arrival_trace is not None:
            lo, hi = tpl._split_range(tpl._arrival_trace.shape[0])
            self._arrival_offset = rng.integers(0, hi - lo, b)
        if tpl._channel_kind == "markov":
            self.channel_state = rng.integers(1, tpl.n_channel_states + 1, (b, tpl.n_users))
        else:
            lo, hi = tpl._split_range(tpl._channel_trace.shape[0])
            self._channel_offset = rng.integers(0, hi - lo, b)
            self.channel_state = tpl._channel_at(0, self._channel_offset)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Empty all queues and draw the first channel states; ``(obs (num_envs, obs_dim), info)``."""
        if seed is None and not self._seeded and self.template._instance_seed is not None:
            seed = self.template._instance_seed
        super().reset(seed=seed)
        self._seeded = True
        self._reset_state()
        return self._obs(), {"channel": self.channel_state.copy()}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        tpl, b = self.template, self.num_envs
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != (b, tpl.n_slots):
            raise ValueError(f"actions should have shape ({b}, {tpl.n_slots}) (num_envs, n_slots), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or infinite values; expected numbers in [-1, 1]")
        e = np.zeros(self.buffer.shape)
        e[:, tpl.valid] = (np.clip(a, -1.0, 1.0) + 1.0) / 2.0
        rng, t = self.np_random, self.t
        delivered, resource, dropped, arrived = serve(
            rng, self.buffer, e, tpl.distances, self.channel_state, tpl.deadlines,
            lambda: tpl._draw_arrivals(rng, t, self._arrival_offset, (b, tpl.n_users)))
        self.t += 1
        self.channel_state = tpl._draw_channel(rng, self.t, self.channel_state, self._channel_offset)
        weighted = tpl.weights * delivered
        info = {
            "throughput": weighted.sum(axis=1).astype(np.float64),
            "resource": resource.sum(axis=1),
            "delivered": delivered.sum(axis=1),
            "dropped": dropped.sum(axis=1),
            "arrived": arrived.sum(axis=1),
            "per_user_reward": weighted - tpl.lam * resource,
            "per_user_delivered": delivered,
            "per_user_resource": resource,
            "channel": self.channel_state.copy(),
        }
        reward = info["throughput"] - tpl.lam * info["resource"]
        truncated = np.full(b, self.t >= tpl.episode_length)
        obs = self._obs()
        if truncated[0]:  # every copy ends together: same-step autoreset
            info["final_obs"] = obs
            info["final_info"] = {k: v for k, v in info.items() if k != "final_obs"}
            self._reset_state()
            obs = self._obs()
        return obs, reward, np.zeros(b, dtype=bool), truncated, info
