"""RSD4: Recurrent Softmax Delayed Deep Double Deterministic policy gradient (MobiHoc 2022, Sec. 4).

Algorithm (paper Alg. 1; reference ``alg/RSD4_OUT_XIN.py`` and ``main_tb_pair.py``):

1. User-level decomposition (Sec. 4.3): one actor/critic pair shared by all users acts on the mini-state
   ``[user id, buffer padded to tau_max + 1, channel (full observation only)]`` and is trained on the
   per-user reward ``beta_i * delivered_i - lam * resource_i``; the joint action concatenates the users'
   outputs trimmed to ``tau_i + 1`` slots.
2. SD3 core (Pan et al. 2020) with recurrent networks: two actors ``pi_1, pi_2`` and two critics
   ``Q_1, Q_2`` with targets. For ``i = 1, 2``: sample ``K`` noisy target actions
   ``a'_k = clip(pi'_i(h') + eps_k, -1, 1)``, ``eps_k ~ N(0, sigma^2)``; ``Q_hat(a'_k) = min_j Q'_j(h', a'_k)``;

       softmax_beta(Q_hat) = sum_k exp(beta Q_hat_k) Q_hat_k / sum_k exp(beta Q_hat_k)          (SD3 Eq. 6)
       y_i = r + gamma (1 - d) softmax_beta(Q_hat)

   regress ``Q_i`` on ``y_i``; every ``policy_delay`` iterations update ``pi_i`` by the deterministic policy
   gradient of ``Q_i`` and soft-update ``Q'_i, pi'_i`` with rate ``tau``.
3. Acting: per user, the action of the actor whose critic values it higher (reference ``select_action``).
4. Replay of whole per-user episodes with their stored initial hidden states (:mod:`.buffer`);
   ``train_freq`` environment steps, then ``gradient_steps`` iterations (reference: every 100 steps,
   ``n_users`` iterations, each updating both critics).
5. The Lagrangian price ``lam`` is owned by :class:`~reprozoo.rsd4.env.LagrangianWrapper` (dual update after
   each episode). The replay keeps each step's weighted deliveries and resource apart, and the critic's reward
   is ``beta_i delivered_i - lam * resource_i`` with the price current at sampling time (``relabel_rewards``),
   so that the critic estimates the Lagrangian of the current dual iterate (paper Sec. 3, Lagrangian
   relaxation; the reference keeps lam fixed, where both readings coincide).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from reprozoo.core.checks import check_float, check_int
from reprozoo.core.device import resolve_device
from reprozoo.core.io import atomic_torch_save
from reprozoo.core.progress import log
from reprozoo.rsd4.buffer import EpisodeReplay
from reprozoo.rsd4.env import DelayConstrainedSchedulingEnv
from reprozoo.rsd4.networks import ActingStep, RecurrentActor, RecurrentCritic

__all__ = ["RSD4", "UserLayout", "softmax_operator"]


def softmax_operator(
    q: torch.Tensor, beta: float, dim: int = 1, log_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax operator ``sum_k q_k e^{beta q_k} / sum_k e^{beta q_k}`` along ``dim`` (SD3, Eq. 6).

    Parameters
    ----------
    q : Tensor, any shape
        Values of the sampled actions along ``dim``.
    beta : float >= 0
        Inverse temperature: ``beta -> inf`` gives the max, ``beta = 0`` the mean.
    log_weights : Tensor broadcastable to ``q``, optional
        Log importance weights (e.g. ``-log pdf`` of the sampling noise), added inside the exponent.

    Returns the reduced tensor. Stable for any ``beta * q`` (log-sum-exp shift via ``torch.softmax``).
    """
    check_float(beta, "beta", low=0.0)
    logits = beta * q if log_weights is None else beta * q + log_weights
    return (torch.softmax(logits, dim=dim) * q).sum(dim=dim)


class UserLayout:
    """Index maps between the environment's flat vectors and per-user mini-states / actions.

    Parameters
    ----------
    n_users, tau_max : int
    deadlines : sequence of int (n_users,)
    partial_obs : bool

    Attributes
    ----------
    state_dim : int
        ``1 + (tau_max + 1) + (0 if partial_obs else 1)`` (user id, padded buffer, channel).
    action_dim : int
        ``tau_max + 1``.
    valid : ndarray bool (n_users, tau_max + 1)
        Real (non-padding) slots.
    """

    def __init__(self, n_users: int, tau_max: int, deadlines: Any, partial_obs: bool) -> None:
        self.n_users, self.tau_max, self.partial_obs = int(n_users), int(tau_max), bool(partial_obs)
        self.deadlines = np.asarray(deadlines, dtype=np.int64)
        self.valid = np.arange(tau_max + 1)[None, :] <= self.deadlines[:, None]
        self.n_slots = int(self.valid.sum())
        self.obs_dim = self.n_slots + (0 if partial_obs else n_users)
        gather = np.full(self.valid.shape, self.obs_dim, dtype=np.int64)  # padding -> an appended zero
        gather[self.valid] = np.arange(self.n_slots)
        self._gather = gather
        self.state_dim = 1 + (tau_max + 1) + (0 if partial_obs else 1)
        self.action_dim = tau_max + 1

    @classmethod
    def from_env(cls, env: gym.Env) -> UserLayout:
        base = env.unwrapped
        if not isinstance(base, DelayConstrainedSchedulingEnv):
            raise TypeError(f"env should wrap a DelayConstrainedSchedulingEnv, got {type(base).__name__}")
        return cls(**base.user_layout())

    def to_dict(self) -> dict[str, Any]:
        return {"n_users": self.n_users, "tau_max": self.tau_max, "deadlines": self.deadlines.tolist(),
                "partial_obs": self.partial_obs}

    def mini_states(self, obs: np.ndarray) -> np.ndarray:
        """``(B, obs_dim)`` flat observations -> ``(B, n_users, state_dim)`` float32 mini-states."""
        b = obs.shape[0]
        padded = np.concatenate([obs, np.zeros((b, 1), obs.dtype)], axis=1)
        parts = [np.broadcast_to(np.arange(self.n_users, dtype=np.float32)[None, :, None], (b, self.n_users, 1)),
                 padded[:, self._gather]]
        if not self.partial_obs:
            parts.append(obs[:, self.n_slots:, None])
        return np.concatenate(parts, axis=2).astype(np.float32)

    def join_actions(self, per_user: np.ndarray) -> np.ndarray:
        """``(B, n_users, tau_max+1)`` -> flat ``(B, n_slots)`` (padding slots dropped)."""
        return per_user[:, self.valid]

    def split_actions(self, flat: np.ndarray) -> np.ndarray:
        """Flat ``(B, n_slots)`` -> ``(B, n_users, tau_max+1)`` with ``-1`` (no resource) on padding slots."""
        out = np.full((flat.shape[0], *self.valid.shape), -1.0, dtype=np.float32)
        out[:, self.valid] = flat
        return out


class RSD4:
    """RSD4 agent with a Stable-Baselines3-like API.

    Parameters
    ----------
    env : gymnasium.Env
        A :class:`DelayConstrainedSchedulingEnv`, usually inside a :class:`LagrangianWrapper` (which
        owns the price ``lam``). Only single (non-vector) environments are trained on.
    learning_rate : float, default 3e-3
        Adam step size of actors and critics (reference).
    batch_size : int, default 50
        User-episodes (or segments) per gradient step.
    softmax_beta : float or None, default 0.01
        Inverse temperature of the softmax operator; ``None`` gives the plain TD3 target
        ``min_j Q'_j(s', pi'(s') + eps)`` with one sample (the RTD3 ablation).
    n_target_samples : int, default 50
        Noisy target actions per transition.
    policy_delay : int, default 2
    tau : float, default 0.05
        Soft target update rate.
    gamma : float, default 1.0
        Discount (reference: 1 over 100-step episodes; the episode end is treated as terminal).
    hidden_dim : int, default 32
    weight_decay : float, default 0.1
        Adam L2 penalty (reference).
    exploration_noise, target_noise : float, default 0.1, 0.2
        Std of the behaviour noise and of the target-policy noise (in action units).
    importance_sampling : bool, default False
        Divide the softmax weights by the density of the sampled noise (SD3 option; reference default off).
    learning_starts : int, default 10000
        Steps of uniformly random actions before learning.
    train_freq : int, default 100
        Environment steps between training phases.
    gradient_steps : int or None, default None
        Iterations per phase; ``None`` uses ``n_users`` (reference).
    buffer_size : int, default 10000
        User-episodes kept.
    segment_length : int or None, default None
        ``None`` trains on whole episodes from their stored initial hidden state (reference); an int trains
        on windows of that length starting from the stored behaviour hidden states.
    recurrent : bool, default True
        ``False``: no LSTM (SD3 ablation).
    relabel_rewards : bool, default True
        Recompute stored rewards with the current price ``lam`` when sampling (see the module notes);
        ``False`` keeps the reward computed with the price in force when the step was taken.
    seed : int, optional
    verbose : int, default 0
    device : str or torch.device, default "auto"
        Where the networks live and learn (``auto``: CUDA when available, else CPU; ``cpu``, ``cuda``,
        ``cuda:N``), as in Stable-Baselines3. The replay buffer stays in host memory (the environment is
        NumPy) and each sampled batch is moved in one copy; acting reads one action back per step.

    Attributes
    ----------
    num_timesteps : int
    episode_log : list of dict
        Per training episode: ``timesteps``, ``throughput`` and ``resource`` (per slot), ``reward``, ``lam``.
    layout : UserLayout

    Notes
    -----
    Per gradient iteration the cost is O(batch_size * L * (n_target_samples + 4) * hidden_dim^2) for the two
    critic updates; acting costs four single-step recurrent evaluations for all users at once.
    """

    def __init__(
        self,
        env: gym.Env | None,
        learning_rate: float = 3e-3,
        batch_size: int = 50,
        softmax_beta: float | None = 0.01,
        n_target_samples: int = 50,
        policy_delay: int = 2,
        tau: float = 0.05,
        gamma: float = 1.0,
        hidden_dim: int = 32,
        weight_decay: float = 0.1,
        exploration_noise: float = 0.1,
        target_noise: float = 0.2,
        importance_sampling: bool = False,
        learning_starts: int = 10_000,
        train_freq: int = 100,
        gradient_steps: int | None = None,
        buffer_size: int = 10_000,
        segment_length: int | None = None,
        recurrent: bool = True,
        relabel_rewards: bool = True,
        seed: int | None = None,
        verbose: int = 0,
        device: str | torch.device = "auto",
    ) -> None:
        self.env = env
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.softmax_beta = softmax_beta
        self.n_target_samples = n_target_samples
        self.policy_delay = policy_delay
        self.tau = tau
        self.gamma = gamma
        self.hidden_dim = hidden_dim
        self.weight_decay = weight_decay
        self.exploration_noise = exploration_noise
        self.target_noise = target_noise
        self.importance_sampling = importance_sampling
        self.learning_starts = learning_starts
        self.train_freq = train_freq
        self.gradient_steps = gradient_steps
        self.buffer_size = buffer_size
        self.segment_length = segment_length
        self.recurrent = recurrent
        self.relabel_rewards = bool(relabel_rewards)
        self.seed = seed
        self.verbose = verbose
        self._check_params()
        self.device = resolve_device(device)  # ValueError naming device for a bad or absent one
        if env is not None:
            self._setup(UserLayout.from_env(env))

    # ---- construction ------------------------------------------------------------------------------
    _PARAMS = (
        "learning_rate", "batch_size", "softmax_beta", "n_target_samples", "policy_delay", "tau", "gamma",
        "hidden_dim", "weight_decay", "exploration_noise", "target_noise", "importance_sampling",
        "learning_starts", "train_freq", "gradient_steps", "buffer_size", "segment_length", "recurrent",
        "relabel_rewards", "seed", "verbose",
    )

    def _check_params(self) -> None:
        check_float(self.learning_rate, "learning_rate", low=0.0, low_inclusive=False)
        check_int(self.batch_size, "batch_size", low=1)
        if self.softmax_beta is not None:
            check_float(self.softmax_beta, "softmax_beta", low=0.0)
        check_int(self.n_target_samples, "n_target_samples", low=1)
        check_int(self.policy_delay, "policy_delay", low=1)
        check_float(self.tau, "tau", low=0.0, high=1.0, low_inclusive=False)
        check_float(self.gamma, "gamma", low=0.0, high=1.0)
        check_int(self.hidden_dim, "hidden_dim", low=1)
        check_float(self.weight_decay, "weight_decay", low=0.0)
        check_float(self.exploration_noise, "exploration_noise", low=0.0)
        check_float(self.target_noise, "target_noise", low=0.0)
        check_int(self.learning_starts, "learning_starts", low=0)
        check_int(self.train_freq, "train_freq", low=1)
        if self.gradient_steps is not None:
            check_int(self.gradient_steps, "gradient_steps", low=0)
        check_int(self.buffer_size, "buffer_size", low=1)
        if self.segment_length is not None:
            check_int(self.segment_length, "segment_length", low=1)
        if self.seed is not None:
            check_int(self.seed, "seed", low=0)

    def _setup(self, layout: UserLayout) -> None:
        self.layout = layout
        s, a, h = layout.state_dim, layout.action_dim, self.hidden_dim
        if self.seed is not None:
            torch.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.torch_gen = torch.Generator(device=self.device).manual_seed(int(self.rng.integers(2**31)))
        # built (and seeded) on the CPU, then moved once: the same initial weights on every device
        self.actors = [RecurrentActor(s, a, h, self.recurrent).to(self.device) for _ in range(2)]
        self.critics = [RecurrentCritic(s, a, h, self.recurrent).to(self.device) for _ in range(2)]
        self.actor_targets = [copy.deepcopy(m).requires_grad_(False) for m in self.actors]
        self.critic_targets = [copy.deepcopy(m).requires_grad_(False) for m in self.critics]
        # Adam with L2 (reference); fused: one kernel per step for all parameters (same update)
        adam = dict(lr=self.learning_rate, weight_decay=self.weight_decay, fused=True)
        self.actor_optims = [torch.optim.Adam(m.parameters(), **adam) for m in self.actors]
        self.critic_optims = [torch.optim.Adam(m.parameters(), **adam) for m in self.critics]
        self._valid = torch.from_numpy(layout.valid).to(self.device)  # (N, A)
        self._padding: dict[int, torch.Tensor] = {}  # n_envs -> padding slots of (n_envs * N, A) per-user actions
        self._step_nets: ActingStep | None = None  # acting's view of the networks (see _acting_step)
        self._critic_loss: torch.Tensor | None = None
        self.num_timesteps = 0
        self.n_updates = 0
        self.episode_log: list[dict[str, float]] = []
        self.replay: EpisodeReplay | None = None

    # ---- acting ----------------------------------------------------------------------------------------
    def initial_state(self, n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Recurrent state at an episode start: hidden ``(4, 2, n_envs * n_users, H)`` zeros and last action ``-1``."""
        n = self.layout.n_users * n_envs
        return (np.zeros((4, 2, n, self.hidden_dim), np.float32),
                np.full((n_envs, self.layout.n_users, self.layout.action_dim), -1.0, np.float32))

    def _acting_step(self) -> ActingStep:
        """The four behaviour networks as one :class:`ActingStep` (built on first use; it follows their weights)."""
        if self._step_nets is None:
            self._step_nets = ActingStep(self.actors, self.critics)
        return self._step_nets

    @torch.inference_mode()
    def _act(self, obs: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Greedy per-user actions ``(B, N, A)``, mini-states and the next recurrent state.

        Per user, the action of the actor whose critic values it higher (reference ``select_action``), each of
        the four networks one step from its own LSTM state, all four in one :class:`ActingStep` (about 20 tensor
        operations); two small transfers to the device and one back.
        """
        hidden, last = state
        b, n, a_dim = last.shape
        bn = b * n
        ms = self.layout.mini_states(obs)  # (b, n, S)
        x = torch.from_numpy(np.concatenate([ms, last], 2).reshape(bn, -1)).to(self.device)  # [s_t, a_{t-1}]
        hc = torch.from_numpy(hidden.transpose(1, 2, 0, 3).reshape(2, bn, -1)).to(self.device)  # (h, c) x (B, 4H)
        acts, q, h, c = self._acting_step()(x, hc[0], hc[1])
        if b not in self._padding:
            self._padding[b] = ~self._valid.repeat(b, 1)
        action = torch.where(q[:, :1] >= q[:, 1:], acts[:, :a_dim], acts[:, a_dim:])
        action.masked_fill_(self._padding[b], -1.0)
        out = torch.cat([action, h, c], 1).cpu().numpy()  # the environment takes NumPy actions: one read-back
        action = out[:, :a_dim].reshape(b, n, a_dim)
        hidden_next = out[:, a_dim:].reshape(bn, 2, 4, -1).transpose(2, 1, 0, 3) if self.recurrent else hidden
        return action, ms, (hidden_next, action)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, np.ndarray] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Action for one observation ``(obs_dim,)`` or a batch ``(n_envs, obs_dim)`` (RecurrentPPO-style).

        Parameters
        ----------
        observation : ndarray
        state : tuple, optional
            ``(hidden (4, 2, n_envs*n_users, H), last_action (n_envs, n_users, tau_max+1))`` from the previous
            call; ``None`` starts an episode.
        episode_start : ndarray of bool (n_envs,), optional
            Entries that start a new episode (their state is reset).
        deterministic : bool, default True
            ``False`` adds the exploration noise.

        Returns ``(action (obs batch, n_slots) float32 in [-1, 1], next state)``.
        """
        self._check_fitted()
        obs = np.asarray(observation, dtype=np.float32)
        single = obs.ndim == 1
        obs2 = obs[None] if single else obs
        if obs2.ndim != 2 or obs2.shape[1] != self.layout.obs_dim:
            raise ValueError(f"observation should have shape ({self.layout.obs_dim},) or (n_envs, "
                             f"{self.layout.obs_dim}), got {obs.shape}")
        if not np.isfinite(obs2).all():
            raise ValueError("observation contains NaN or infinite values")
        b = obs2.shape[0]
        if state is None:
            state = self.initial_state(b)
        hidden, last = (np.array(x, dtype=np.float32, copy=True) for x in state)
        if last.shape != (b, self.layout.n_users, self.layout.action_dim) or hidden.shape[2] != b * self.layout.n_users:
            raise ValueError(f"state does not match {b} observation(s); pass state=None to start over")
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            if starts.shape != (b,):
                raise ValueError(f"episode_start should have shape ({b},), got {starts.shape}")
            hidden.reshape(4, 2, b, self.layout.n_users, -1)[:, :, starts] = 0.0
            last[starts] = -1.0
        per_user, _, new_state = self._act(obs2, (hidden, last))
        if not deterministic:
            per_user = self._explore(per_user)
            new_state = (new_state[0], per_user)
        flat = self.layout.join_actions(per_user).astype(np.float32)
        return (flat[0] if single else flat), new_state

    def _explore(self, per_user: np.ndarray) -> np.ndarray:
        noisy = per_user + self.rng.normal(0.0, self.exploration_noise, per_user.shape)
        return np.where(self.layout.valid, np.clip(noisy, -1.0, 1.0), -1.0).astype(np.float32)

    # ---- learning --------------------------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int = 10,
              reset_num_timesteps: bool = True) -> RSD4:
        """Train for ``total_timesteps`` environment steps; returns ``self`` (Stable-Baselines3's signature).

        ``callback``: ``None``, a callable ``(locals, globals) -> bool | None`` called after every step
        (SB3's function callbacks; returning ``False`` stops training), or an SB3 ``BaseCallback``
        (``on_step`` after every step). ``log_interval``: episodes between progress lines
        (:func:`reprozoo.core.progress.log`, silent under ``--quiet``); 0 = none. ``reset_num_timesteps``:
        as in SB3, ``True`` restarts the step counter (so the ``learning_starts`` warm-up runs again; the replay
        and the networks are kept) and reseeds the first ``reset``; ``False`` continues from previous calls.
        Cost: O(total_timesteps) acting plus ``gradient_steps`` updates per ``train_freq`` steps.
        """
        total = check_int(total_timesteps, "total_timesteps", low=1)
        log_interval = check_int(log_interval, "log_interval", low=0)
        if self.env is None:
            raise ValueError("this agent has no environment; pass env to RSD4(...) or RSD4.load(path, env=env)")
        step_callback = self._wrap_callback(callback)
        lay = self.layout
        t_len = self.env.unwrapped.episode_length
        if self.replay is None:
            self.replay = EpisodeReplay(self.buffer_size, t_len, lay.state_dim, lay.action_dim, self.hidden_dim,
                                        store_every_step=self.segment_length is not None)
        grad_steps = lay.n_users if self.gradient_steps is None else self.gradient_steps
        if reset_num_timesteps:
            self.num_timesteps = 0
        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small networks: one thread is fastest and plays well with others
        try:
            end = self.num_timesteps + total
            first = self.num_timesteps == 0
            while self.num_timesteps < end:
                if not self._run_episode(first, end, grad_steps, step_callback):
                    break
                first = False
                if log_interval and len(self.episode_log) % log_interval == 0:
                    e = self.episode_log[-1]
                    log(f"rsd4: {self.num_timesteps}/{end} steps, throughput {e['throughput']:.3g}, "
                        f"resource {e['resource']:.3g}, lam {e['lam']:.3g}")
        finally:
            torch.set_num_threads(n_threads)
            if hasattr(callback, "on_training_end"):
                callback.on_training_end()
        return self

    def get_env(self) -> gym.Env | None:
        """The training environment (SB3's name; callbacks read it as ``training_env``)."""
        return self.env

    def _wrap_callback(self, callback: Any) -> Any:
        """A ``() -> bool`` called after each step (``False``: stop), from ``None``, a function or a BaseCallback."""
        if callback is None:
            return None
        if hasattr(callback, "on_step") and hasattr(callback, "init_callback"):  # SB3 BaseCallback, duck-typed
            callback.model, callback.num_timesteps = self, self.num_timesteps  # its training_env: get_env()
            callback.on_training_start({"self": self}, {})

            def step() -> bool:
                return callback.on_step() is not False  # counts n_calls, reads model.num_timesteps
            return step
        if callable(callback):
            return lambda: callback({"self": self, "num_timesteps": self.num_timesteps}, {}) is not False
        raise TypeError(f"callback should be None, a callable (locals, globals) -> bool or an SB3 BaseCallback; "
                        f"got {type(callback).__name__}")

    def _run_episode(self, first: bool, end: int, grad_steps: int, step_callback: Any) -> bool:
        """One episode (stored in the replay); ``False`` when ``step_callback`` asked to stop."""
        lay = self.layout
        n, t_len = lay.n_users, self.env.unwrapped.episode_length
        obs, _ = self.env.reset(seed=self.seed if first else None)
        state = self.initial_state(1)
        states = np.zeros((n, t_len + 1, lay.state_dim), np.float32)
        lasts = np.full((n, t_len + 1, lay.action_dim), -1.0, np.float32)
        acts = np.zeros((n, t_len, lay.action_dim), np.float32)
        rews = np.zeros((n, t_len), np.float32)
        costs = np.zeros((n, t_len), np.float32)
        dones = np.zeros((n, t_len), np.float32)
        hid = np.zeros((n, t_len if self.segment_length is not None else 1, 4, 2, self.hidden_dim), np.float32)
        thr = res = rew = 0.0
        for t in range(t_len):
            if self.segment_length is not None or t == 0:
                slot = t if self.segment_length is not None else 0
                hid[:, slot] = state[0].reshape(4, 2, n, -1).transpose(2, 0, 1, 3)
            lasts[:, t] = state[1][0]
            obs_b = np.asarray(obs, np.float32)[None]
            if self.num_timesteps < self.learning_starts:  # uniform random warm-up (reference)
                per_user = np.where(lay.valid, self.rng.uniform(-1, 1, (1, *lay.valid.shape)), -1.0)
                per_user = per_user.astype(np.float32)
                if self.segment_length is None:  # hidden states are not stored per step: skip the networks
                    ms, hidden_next = lay.mini_states(obs_b), state[0]
                else:
                    _, ms, (hidden_next, _) = self._act(obs_b, state)
            else:
                per_user, ms, (hidden_next, _) = self._act(obs_b, state)
                per_user = self._explore(per_user)
            new_state = (hidden_next, per_user)
            states[:, t] = ms[0]
            acts[:, t] = per_user[0]
            obs, reward, terminated, truncated, info = self.env.step(lay.join_actions(per_user)[0])
            if self.relabel_rewards:  # price-free part and resource; the price is applied when sampling
                rews[:, t] = info["per_user_reward"] + info["lam"] * info["per_user_resource"]
                costs[:, t] = info["per_user_resource"]
            else:
                rews[:, t] = info["per_user_reward"]
            thr += info["throughput"]
            res += info["resource"]
            rew += reward
            state = new_state
            self.num_timesteps += 1
            if step_callback is not None and not step_callback():
                return False
            if (self.num_timesteps >= self.learning_starts and self.num_timesteps % self.train_freq == 0
                    and len(self.replay) >= self.batch_size):
                for _ in range(grad_steps):
                    self.train_step()
            if terminated or truncated:
                if t != t_len - 1:
                    raise RuntimeError("episodes must last episode_length steps for the episode replay")
                dones[:, t] = 1.0  # the time limit is treated as terminal, as in the reference
                break
        states[:, t_len] = lay.mini_states(np.asarray(obs, np.float32)[None])[0]
        lasts[:, t_len] = state[1][0]
        self.replay.push(states, lasts, acts, rews, dones, hid, costs)
        self.episode_log.append({"timesteps": self.num_timesteps, "throughput": thr / t_len, "resource": res / t_len,
                                 "reward": rew / t_len, "lam": self.price()})
        return True

    def price(self) -> float:
        """The current resource price ``lam`` of the environment (its outermost wrapper that has one; 0 if none)."""
        if self.env is None:
            return 0.0
        try:
            return float(self.env.get_wrapper_attr("lam"))
        except AttributeError:
            return 0.0

    def batch_rewards(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-user rewards ``(B, L)`` of a replay batch for the critic target.

        With ``relabel_rewards`` the stored price-free part minus the *current* price times the stored resource,
        ``beta_i delivered_i - lam_now * resource_i`` (the Lagrangian of paper Sec. 3 at the current dual
        iterate); otherwise the rewards as stored. Without this, a replay that spans the whole run mixes rewards
        priced at every past ``lam`` and the critic's action gradient lags the dual price.
        """
        if not self.relabel_rewards:
            return batch["rewards"]
        return batch["rewards"] - self.price() * batch["costs"]

    def train_step(self) -> None:
        """One iteration: update critic/actor 1 then 2 (reference ``train``), each on its own batch.

        Both batches are drawn first (the same draws, in the same order, as drawing each before its update). A
        target critic whose weights are the same in both updates reads both batches in one LSTM pass: ``Q'_2``
        always (only update 2's own soft update moves it, after its target is computed), ``Q'_1`` when this
        iteration updates no actor (otherwise update 1's soft update moves ``Q'_1`` before update 2's target).
        Same numbers as running the two updates one after the other, up to float rounding.
        """
        batches = [self._batch() for _ in range(2)]
        actor_step = self.n_updates % self.policy_delay == 0
        shared = [None if actor_step else self._target_memory(0, batches), self._target_memory(1, batches)]
        for k in range(2):
            self._update(k, batches[k], [None if m is None else m[k] for m in shared], actor_step)
        self.n_updates += 1

    def _batch(self) -> dict[str, Any]:
        """A replay batch on the device, with the LSTM states ``hx`` (actor 1, actor 2, critic 1, critic 2) and the
        valid-slot mask ``vmask (B, 1, A)`` of each sampled user."""
        batch = {k: v.to(self.device) for k, v in self.replay.sample(self.batch_size, self.rng,
                                                                      self.segment_length).items()}
        h = batch["hidden"]  # (4, 2, 1, B, H)
        batch["hx"] = [(h[j, 0], h[j, 1]) for j in range(4)]
        batch["vmask"] = self._valid[batch["states"][:, 0, 0].long()][:, None, :]  # user id of each sequence
        return batch

    @torch.no_grad()
    def _target_memory(self, j: int, batches: list[dict[str, Any]]) -> list[torch.Tensor]:
        """Target critic ``j``'s LSTM memory at steps ``1..L`` of each batch, in one pass over all of them."""
        s = torch.cat([b["states"] for b in batches])
        la = torch.cat([b["last_actions"] for b in batches])
        hx = tuple(torch.cat([b["hx"][2 + j][i] for b in batches], 1) for i in range(2))
        mem = self.critic_targets[j].memory(s, la, hx)[0][:, 1:]
        return list(mem.split([b["states"].shape[0] for b in batches]))

    @torch.no_grad()
    def _target(self, k: int, s: torch.Tensor, la: torch.Tensor, hx: list, r: torch.Tensor, d: torch.Tensor,
                vmask: torch.Tensor, mems: list | None = None) -> torch.Tensor:
        """``y = r + gamma (1 - d) softmax_beta(min_j Q'_j(h', a'_k))`` for a window ``s (B, L+1, S)``: ``(B, L)``.

        ``a'_k = clip(pi'_k(h') + sigma eps_k, -1, 1)``, ``eps_k ~ N(0, I)``, ``k = 1..K`` (padding slots at -1);
        the ``K`` candidates share the target critics' LSTM memory (it reads only states and past actions).
        ``mems``: the target critics' memories at steps ``1..L`` where already computed (None entries are computed
        here). Cost O(B L (K A H + K H^2)) for the candidate grid plus up to three LSTM passes.
        """
        next_a = self.actor_targets[k](s, la, hx[k])[0][:, 1:]  # (B, L, A)
        kk = self.n_target_samples if self.softmax_beta is not None else 1
        noise = torch.randn((kk, *next_a.shape), generator=self.torch_gen, device=self.device)  # (K, B, L, A)
        logw = None
        if self.softmax_beta is not None and self.importance_sampling:
            # divide by the Gaussian density of each sampled noise vector: log w = |eps|^2 / 2 (unit noise)
            logw = (0.5 * noise.square() * vmask).sum(-1)
        cand = noise.mul_(self.target_noise).add_(next_a).clamp_(-1.0, 1.0).masked_fill_(~vmask, -1.0)
        s1 = s[:, 1:]
        mems = [None, None] if mems is None else mems
        q = []
        for j in range(2):
            critic = self.critic_targets[j]
            mem = mems[j] if mems[j] is not None else critic.memory(s, la, hx[2 + j])[0][:, 1:]
            q.append(critic.head(s1, cand, mem))
        q_hat = torch.minimum(q[0], q[1], out=q[0])  # (K, B, L)
        if self.softmax_beta is None:
            v = q_hat[0]
        else:
            v = softmax_operator(q_hat, self.softmax_beta, dim=0, log_weights=logw)
        return r + self.gamma * (1.0 - d) * v

    def _update(self, k: int, batch: dict[str, Any], mems: list, actor_step: bool) -> None:
        """Critic ``k`` (and, when ``actor_step``, actor ``k`` and both its targets) on ``batch``.

        Vectorised over the batch of sequences and the ``K`` target samples: one ``nn.LSTM`` call per network
        over the whole window (the ``K`` candidates share the target critics' memory), the candidate grid laid out
        ``(K, B, L, A)`` so the softmax reduces over its leading dimension, in-place noise and heads, fused Adam
        and one ``_foreach_lerp_`` per soft update; no host reads.
        """
        s, la, a, hx, vmask = batch["states"], batch["last_actions"], batch["actions"], batch["hx"], batch["vmask"]
        s0, la0 = s[:, :-1], la[:, :-1]  # the window's steps t (s[:, 1:] are the next steps t+1)
        # ---- target y (SD3 Eq. 6 with the recurrent target networks) ------------------------------------------
        y = self._target(k, s, la, hx, self.batch_rewards(batch), batch["dones"], vmask, mems)
        # ---- critic k --------------------------------------------------------------------------------------
        q = self.critics[k](s0, a, la0, hx[2 + k])[0]
        loss = F.mse_loss(q, y)
        self.critic_optims[k].zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optims[k].step()
        self._critic_loss = loss.detach()  # kept on the device; read by last_critic_loss
        # ---- delayed actor k and targets ---------------------------------------------------------------------
        if actor_step:
            pi = self.actors[k](s0, la0, hx[k])[0].masked_fill(~vmask, -1.0)
            with torch.no_grad():  # the actor's gradient flows through the action input only
                mem = self.critics[k].memory(s0, la0, hx[2 + k])[0]
            actor_loss = -self.critics[k].head(s0, pi, mem).mean()
            self.actor_optims[k].zero_grad(set_to_none=True)
            actor_loss.backward(inputs=self.actor_optims[k].param_groups[0]["params"])  # no critic gradients
            self.actor_optims[k].step()
            with torch.no_grad():  # theta' <- tau theta + (1 - tau) theta'
                for src, dst in ((self.critics[k], self.critic_targets[k]), (self.actors[k], self.actor_targets[k])):
                    torch._foreach_lerp_(list(dst.parameters()), list(src.parameters()), self.tau)

    @property
    def last_critic_loss(self) -> float:
        """The critic loss of the latest update (NaN before the first); reading it waits for the device."""
        loss = getattr(self, "_critic_loss", None)
        return float("nan") if loss is None else float(loss)

    # ---- persistence -----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "layout"):
            raise ValueError("this RSD4 has no networks yet; build it with an env or load it with RSD4.load")

    def save(self, path: str | Path) -> Path:
        """Write hyperparameters, layout, networks and optimisers to ``path`` (torch format, atomic)."""
        self._check_fitted()
        nets = {f"actor{k}": m.state_dict() for k, m in enumerate(self.actors)}
        nets |= {f"critic{k}": m.state_dict() for k, m in enumerate(self.critics)}
        nets |= {f"actor_target{k}": m.state_dict() for k, m in enumerate(self.actor_targets)}
        nets |= {f"critic_target{k}": m.state_dict() for k, m in enumerate(self.critic_targets)}
        optims = {f"actor{k}": o.state_dict() for k, o in enumerate(self.actor_optims)}
        optims |= {f"critic{k}": o.state_dict() for k, o in enumerate(self.critic_optims)}
        payload = {"params": {p: getattr(self, p) for p in self._PARAMS}, "layout": self.layout.to_dict(),
                   "nets": nets, "optims": optims, "num_timesteps": self.num_timesteps, "n_updates": self.n_updates,
                   "episode_log": self.episode_log, "saved": time.time()}
        return atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | Path, env: gym.Env | None = None, device: str | torch.device = "auto") -> RSD4:
        """Rebuild an agent saved by :meth:`save` on ``device``; ``env`` (same layout) is needed only to keep
        learning.

        The file is read with ``torch.load(weights_only=True)``: tensors and plain Python containers only, so a
        file from elsewhere cannot run code. Raises ``FileNotFoundError`` for a missing file,
        ``IsADirectoryError`` for a folder and ``ValueError`` naming the file when it is not a saved RSD4 agent
        (corrupt, truncated or another format).
        """
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{str(path)!r} is a folder; pass the file written by RSD4.save")
        if not path.is_file():
            raise FileNotFoundError(f"no saved RSD4 agent at {str(path)!r}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not one of our files"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{str(path)!r} is not a saved RSD4 agent (torch.load failed: {first})") from None
        if not isinstance(payload, dict) or not {"params", "layout", "nets", "optims"} <= set(payload):
            raise ValueError(f"{str(path)!r} is not a saved RSD4 agent (missing params/layout/nets/optims)")
        agent = cls(None, **payload["params"], device=device)
        layout = UserLayout(**payload["layout"])
        if env is not None and UserLayout.from_env(env).to_dict() != layout.to_dict():
            raise ValueError("env does not match the saved agent's user layout (n_users, deadlines, observation)")
        agent.env = env
        agent._setup(layout)
        for name, sd in payload["nets"].items():
            kind, k = name[:-1], int(name[-1])
            {"actor": agent.actors, "critic": agent.critics, "actor_target": agent.actor_targets,
             "critic_target": agent.critic_targets}[kind][k].load_state_dict(sd)
        for name, sd in payload["optims"].items():
            kind, k = name[:-1], int(name[-1])
            {"actor": agent.actor_optims, "critic": agent.critic_optims}[kind][k].load_state_dict(sd)
        agent.num_timesteps = payload["num_timesteps"]
        agent.n_updates = payload["n_updates"]
        agent.episode_log = payload["episode_log"]
        return agent
