"""Per-user episode replay with stored LSTM hidden states (reference ``utils.ReplayBufferLSTM_TB``).

One entry is the whole episode of one user (the user-level decomposition turns one environment episode
into ``n_users`` entries). With ``segment_length=None`` a sample is a whole episode and the stored state is
the initial one (zeros, as the reference); with a ``segment_length`` L a sample is a window of L steps and
starts from the hidden states the behaviour networks had at its first step (stored at acting time; a
"stored-state" replay, whose staleness is the price of shorter back-propagation through time).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["EpisodeReplay"]


class EpisodeReplay:
    """Ring buffer of fixed-length per-user episodes.

    Parameters
    ----------
    capacity : int
        Number of user-episodes kept (oldest overwritten).
    episode_length : int
        Steps per episode ``T``.
    state_dim, action_dim, hidden_dim : int
    n_nets : int, default 4
        Recurrent networks whose states are stored (actor 1, actor 2, critic 1, critic 2).
    store_every_step : bool, default False
        Keep the hidden states of every step (needed for segments) instead of the initial one only.

    Storage per entry: states ``(T+1, S)``, last actions ``(T+1, A)`` (``last[t]`` = action before state ``t``),
    actions ``(T, A)``, rewards ``(T,)``, dones ``(T,)``, hidden ``(T or 1, n_nets, 2, H)`` and costs ``(T,)``
    (the resource used at each step; lets a Lagrangian agent recompute ``reward - lam * cost`` with the current
    price at sampling time).
    """

    def __init__(
        self, capacity: int, episode_length: int, state_dim: int, action_dim: int, hidden_dim: int,
        n_nets: int = 4, store_every_step: bool = False,
    ) -> None:
        c, t = int(capacity), int(episode_length)
        if c < 1 or t < 1:
            raise ValueError(f"capacity={capacity} and episode_length={episode_length} should be >= 1")
        self.capacity, self.episode_length = c, t
        self.store_every_step = bool(store_every_step)
        self.states = np.zeros((c, t + 1, state_dim), np.float32)
        self.last_actions = np.zeros((c, t + 1, action_dim), np.float32)
        self.actions = np.zeros((c, t, action_dim), np.float32)
        self.rewards = np.zeros((c, t), np.float32)
        self.dones = np.zeros((c, t), np.float32)
        self.costs = np.zeros((c, t), np.float32)
        self.hidden = np.zeros((c, t if self.store_every_step else 1, n_nets, 2, hidden_dim), np.float32)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def push(
        self, states: np.ndarray, last_actions: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
        dones: np.ndarray, hidden: np.ndarray, costs: np.ndarray | None = None,
    ) -> None:
        """Add ``M`` user-episodes: states ``(M,T+1,S)``, last_actions ``(M,T+1,A)``, actions ``(M,T,A)``,
        rewards/dones ``(M,T)``, hidden ``(M, T or 1, n_nets, 2, H)``, optional costs ``(M,T)`` (zeros if omitted).
        Raises ``ValueError`` on a shape mismatch."""
        m = states.shape[0]
        t = self.episode_length
        if costs is None:
            costs = np.zeros((m, t), np.float32)
        expect = {
            "states": (states, (m, t + 1, self.states.shape[2])),
            "last_actions": (last_actions, (m, t + 1, self.last_actions.shape[2])),
            "actions": (actions, (m, t, self.actions.shape[2])),
            "rewards": (rewards, (m, t)),
            "dones": (dones, (m, t)),
            "hidden": (hidden, (m, *self.hidden.shape[1:])),
            "costs": (costs, (m, t)),
        }
        for name, (arr, shape) in expect.items():
            if tuple(arr.shape) != shape:
                raise ValueError(f"{name} should have shape {shape}, got {tuple(arr.shape)}")
        idx = (self.pos + np.arange(m)) % self.capacity
        self.states[idx], self.last_actions[idx], self.actions[idx] = states, last_actions, actions
        self.rewards[idx], self.dones[idx], self.hidden[idx] = rewards, dones, hidden
        self.costs[idx] = costs
        self.pos = int((self.pos + m) % self.capacity)
        self.size = min(self.size + m, self.capacity)

    def sample(
        self, batch_size: int, rng: np.random.Generator, segment_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """A batch of ``batch_size`` episodes (or windows of ``segment_length`` steps).

        Returns tensors: ``states (B,L+1,S)``, ``last_actions (B,L+1,A)``, ``actions (B,L,A)``, ``rewards (B,L)``,
        ``dones (B,L)``, ``costs (B,L)``, ``hidden (n_nets, 2, 1, B, H)`` (ready for ``nn.LSTM``), ``index (B,)``,
        ``start (B,)``.
        """
        if self.size == 0:
            raise ValueError("the replay buffer is empty; collect episodes before sampling")
        t = self.episode_length
        seg = t if segment_length is None else int(segment_length)
        if not 1 <= seg <= t:
            raise ValueError(f"segment_length={segment_length} should be in 1..episode_length={t}")
        if seg < t and not self.store_every_step:
            raise ValueError("segments need store_every_step=True (hidden states of every step)")
        idx = rng.integers(0, self.size, batch_size)
        start = rng.integers(0, t - seg + 1, batch_size) if seg < t else np.zeros(batch_size, np.int64)
        steps = start[:, None] + np.arange(seg + 1)[None, :]  # (B, L+1)
        rows = idx[:, None]
        h = self.hidden[idx, start if self.store_every_step else 0]  # (B, n_nets, 2, H)
        return {
            "states": torch.from_numpy(self.states[rows, steps]),
            "last_actions": torch.from_numpy(self.last_actions[rows, steps]),
            "actions": torch.from_numpy(self.actions[rows, steps[:, :-1]]),
            "rewards": torch.from_numpy(self.rewards[rows, steps[:, :-1]]),
            "dones": torch.from_numpy(self.dones[rows, steps[:, :-1]]),
            "costs": torch.from_numpy(self.costs[rows, steps[:, :-1]]),
            "hidden": torch.from_numpy(np.ascontiguousarray(h.transpose(1, 2, 0, 3))[:, :, None]),
            "index": torch.from_numpy(idx),
            "start": torch.from_numpy(start),
        }
