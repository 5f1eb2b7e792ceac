"""Baselines of the RSD4 experiment: budget-matched heuristics and Stable-Baselines3 TD3 / SAC.

Heuristics (the paper's non-DRL baselines were not retrieved; these three are our design choice).
Each has one scalar knob that sets how much resource it spends; :func:`calibrate` finds by bisection the
knob whose average resource per slot on training episodes equals the budget ``E0``:

* :class:`Uniform`: the same resource ``u`` on every queued packet.
* :class:`EDF`: earliest deadline first with a per-slot resource cap ``C``: packets are served with full
  resource in order of remaining lifetime (ties: larger weight first) until ``C`` is spent.
* :class:`MaxWeight`: channel-aware max-weight greedy under a per-slot cap ``C``: each slot spends at most
  ``C``, split across users to maximise the expected weighted deliveries ``sum_i beta_i n_i p_i(e_i)``
  (water-filling on the success model). It reads the true channel state even under partial observation, so
  there it is an *oracle* (role ``reference`` in the experiment), not a comparison.
* :class:`MaxWeightBlind` (``MaxWeight-blind``): the same rule knowing only what RSD4 observes under partial
  observation (queues, weights, distances) plus each user's mean service rate ``E[1/c_i]`` over the
  *training* part of the channel process (:func:`mean_service_rate`); the partial-observation comparison.

Deep-RL baselines: SB3 TD3 and SAC with MLP policies, and sb3-contrib's RecurrentPPO with an LSTM policy
(the recurrent, on-policy counterpart of RSD4), on the flat observation/action, trained inside the same
:class:`~reprozoo.rsd4.env.LagrangianWrapper` (same dual step size, initial price and warm-up) as RSD4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from reprozoo.core.checks import check_float, check_int
from reprozoo.rsd4.env import DelayConstrainedSchedulingEnv

__all__ = [
    "EDF",
    "Heuristic",
    "MaxWeight",
    "MaxWeightBlind",
    "SB3Agent",
    "SB3_ALGOS",
    "Uniform",
    "EpisodeStats",
    "calibrate",
    "evaluate",
    "mean_service_rate",
]


class Heuristic:
    """A scheduling rule with a scalar resource knob ``level``; acts on the environment's true state.

    ``resource(env) -> (N, tau_max+1)`` resource in ``[0, 1]`` per slot; ``__call__(env)`` gives the flat
    action in ``[-1, 1]``. ``knob_range`` and ``log_knob`` describe the bisection domain and
    ``increasing`` whether more ``level`` means more resource.
    """

    name = "heuristic"
    knob_range: tuple[float, float] = (0.0, 1.0)
    log_knob = False
    increasing = True

    def __init__(self, level: float) -> None:
        self.level = check_float(level, "level", low=0.0)

    def resource(self, env: DelayConstrainedSchedulingEnv) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, env: DelayConstrainedSchedulingEnv) -> np.ndarray:
        e = self.resource(env)
        return (2.0 * e[env.valid] - 1.0).astype(np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(level={self.level:.4g})"


class Uniform(Heuristic):
    """Resource ``level`` in ``[0, 1]`` on every queued packet."""

    name = "Uniform"

    def resource(self, env: DelayConstrainedSchedulingEnv) -> np.ndarray:
        return np.where(env.buffer > 0, min(self.level, 1.0), 0.0)


class EDF(Heuristic):
    """Earliest deadline first under a per-slot resource cap ``level`` (full resource per served packet)."""

    name = "EDF"
    knob_range = (0.0, 1000.0)

    def resource(self, env: DelayConstrainedSchedulingEnv) -> np.ndarray:
        buf = env.buffer
        n_slots = buf.shape[1]
        # order: remaining lifetime ascending, then weight descending
        key = np.arange(n_slots)[None, :] * 1e3 - env.weights[:, None] + np.zeros(buf.shape)
        order = np.argsort(key, axis=None, kind="stable")
        counts = buf.reshape(-1)[order].astype(np.float64)
        before = np.cumsum(counts) - counts
        served = np.clip((self.level - before) / np.maximum(counts, 1.0), 0.0, 1.0)
        e = np.zeros(buf.size)
        e[order] = np.where(counts > 0, served, 0.0)
        return e.reshape(buf.shape)


class MaxWeight(Heuristic):
    """Channel-aware greedy under a per-slot cap ``level``: water-filling of ``sum_i beta_i n_i p_i(e_i)``.

    Each slot solves ``max sum_i beta_i n_i tanh(e_i / k_i)`` s.t. ``sum_i n_i e_i <= level``, ``0 <= e_i <= 1``
    (``n_i`` queued packets of user ``i``, ``k_i = d_i^3 c_i``). The KKT solution for a price ``mu`` is
    ``e_i = k_i atanh(sqrt(1 - mu k_i / beta_i))`` (0 when ``mu k_i >= beta_i``), clipped to ``[0, 1]``; the
    price is found on a log grid, interpolating between the two grid points around the cap.
    O(n_users * grid) per slot.
    """

    name = "MaxWeight"
    knob_range = (0.0, 1000.0)
    _prices = np.logspace(-5, 3, 161)

    def _channel(self, env: DelayConstrainedSchedulingEnv) -> np.ndarray:
        return env.channel_state

    def resource(self, env: DelayConstrainedSchedulingEnv) -> np.ndarray:
        k = env.distances ** 3 * self._channel(env)  # p(e) = tanh(e / k)
        n = env.buffer.sum(axis=1).astype(np.float64)
        ratio = np.clip(self._prices[:, None] * k[None, :] / np.maximum(env.weights, 1e-12)[None, :], 0.0, 1.0)
        e = np.clip(k * np.arctanh(np.sqrt(np.clip(1.0 - ratio, 0.0, 1.0 - 1e-12))), 0.0, 1.0)  # (grid, N)
        spend = e @ n
        fits = np.nonzero(spend <= self.level + 1e-9)[0]
        if not fits.size:
            e_user = np.zeros_like(k)
        elif fits[0] == 0:
            e_user = e[0]
        else:  # interpolate between the two grid prices so that the spend equals the cap exactly
            j = fits[0]
            w = (self.level - spend[j]) / max(spend[j - 1] - spend[j], 1e-12)
            e_user = e[j] + w * (e[j - 1] - e[j])
        return np.where(env.buffer > 0, e_user[:, None], 0.0)


def mean_service_rate(env: gym.Env) -> np.ndarray:
    """Each user's mean service rate ``E[1/c_i]`` on the *training* part of the channel process, ``(n_users,)``.

    The success model ``p = tanh(e / (d^3 c))`` is nearly linear in ``e / c`` for ``e <= 1``, so ``E[1/c]``
    is what a channel-blind rule can know of user ``i``'s channel. Trace channels: the mean over the first
    80 % of the trace (the training split, whatever split ``env`` runs on); Markov channels: the mean under the
    chain's stationary distribution (left eigenvector of the transition matrix). O(T * n_users).
    """
    base = env.unwrapped
    if not isinstance(base, DelayConstrainedSchedulingEnv):
        raise TypeError(f"env should be a DelayConstrainedSchedulingEnv (possibly wrapped), got {type(base).__name__}")
    if base._channel_kind == "markov":
        vals, vecs = np.linalg.eig(base.transition_matrix.T)
        pi = np.abs(np.real(vecs[:, np.argmin(np.abs(vals - 1.0))]))
        pi = pi / pi.sum()
        rate = float(pi @ (1.0 / np.arange(1, base.n_channel_states + 1)))
        return np.full(base.n_users, rate)
    trace = base._channel_trace
    return (1.0 / trace[: int(0.8 * trace.shape[0])]).mean(axis=0)


class MaxWeightBlind(MaxWeight):
    """:class:`MaxWeight` without the channel state: water-filling with ``c_i = 1 / E[1/c_i]`` (``service_rate``).

    Knows what RSD4 observes under partial observation (the queues) and the instance's weights and distances,
    plus ``service_rate`` = :func:`mean_service_rate` of the training trace. ``service_rate=None`` (the
    default) takes it from the environment on first use. O(n_users * grid) per slot.
    """

    name = "MaxWeight-blind"

    def __init__(self, level: float, service_rate: Any = None) -> None:
        super().__init__(level)
        self.service_rate = None if service_rate is None else np.asarray(service_rate, dtype=np.float64)

    def _channel(self, env: DelayConstrainedSchedulingEnv) -> np.ndarray:
        if self.service_rate is None:
            self.service_rate = mean_service_rate(env)
        return 1.0 / self.service_rate


def _episodes(
    env: gym.Env, act: Callable[[np.ndarray, Any], Any], n_episodes: int, seed: int, reset_state: Callable[[], Any]
) -> dict[str, float]:
    base = env.unwrapped
    thr = res = drop = arr = rew = 0.0
    steps = 0
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        state = reset_state()
        done = False
        while not done:
            action, state = act(obs, state)
            obs, reward, terminated, truncated, info = env.step(action)
            thr += info["throughput"]
            res += info["resource"]
            drop += info["dropped"]
            arr += info["arrived"]
            rew += reward
            steps += 1
            done = terminated or truncated
    del base
    return {"throughput": thr / steps, "resource": res / steps, "drop_rate": drop / max(arr, 1.0),
            "reward": rew / steps}


def evaluate(policy: Any, env: gym.Env, n_episodes: int = 10, seed: int = 10_000) -> dict[str, float]:
    """Average per-slot metrics of ``policy`` over ``n_episodes`` episodes (reset seeds ``seed + k``).

    ``policy`` is a :class:`Heuristic` (acts on the true state), an object with an SB3-style
    ``predict(obs, state, episode_start, deterministic)`` (recurrent or not), or a callable ``obs -> action``.
    Returns ``throughput`` (weighted packets delivered per slot), ``resource`` (per slot), ``drop_rate``
    (expired / arrived) and ``reward`` (per slot, at the env's price).
    """
    check_int(n_episodes, "n_episodes", low=1)
    base = env.unwrapped
    if isinstance(policy, Heuristic):
        return _episodes(env, lambda obs, st: (policy(base), None), n_episodes, seed, lambda: None)
    if hasattr(policy, "predict"):
        def act(obs: np.ndarray, st: Any) -> tuple[np.ndarray, Any]:
            a, st2 = policy.predict(obs, state=st, deterministic=True)
            return a, st2
        return _episodes(env, act, n_episodes, seed, lambda: None)
    if callable(policy):
        return _episodes(env, lambda obs, st: (policy(obs), None), n_episodes, seed, lambda: None)
    raise TypeError(f"policy should be a Heuristic, have predict(), or be callable; got {type(policy).__name__}")


def calibrate(
    kind: type[Heuristic], env: gym.Env, budget: float, *, n_episodes: int = 4, n_iter: int = 20, seed: int = 0,
    **kwargs: Any,
) -> tuple[Heuristic, dict[str, float]]:
    """Bisection on the knob of ``kind`` so that its average resource per slot equals ``budget``.

    ``kwargs`` go to ``kind(level, **kwargs)`` (e.g. ``service_rate`` of :class:`MaxWeightBlind`).

    Uses the same ``n_episodes`` reset seeds for every candidate (common random numbers). If the budget is
    above what the rule can spend, the knob saturates at its range end. Returns ``(policy, its metrics)``.
    Cost: ``n_iter * n_episodes`` episodes.
    """
    budget = check_float(budget, "budget", low=0.0)
    lo, hi = kind.knob_range
    if kind.log_knob:
        lo, hi = np.log(lo), np.log(hi)
    best = None
    for _ in range(check_int(n_iter, "n_iter", low=1)):
        mid = 0.5 * (lo + hi)
        pol = kind(float(np.exp(mid)) if kind.log_knob else mid, **kwargs)
        m = evaluate(pol, env, n_episodes, seed)
        if best is None or abs(m["resource"] - budget) < abs(best[1]["resource"] - budget):
            best = (pol, m)
        spend_more = m["resource"] < budget
        if spend_more == kind.increasing:
            lo = mid
        else:
            hi = mid
    return best


class EpisodeStats(gym.Wrapper):
    """Records per-episode throughput and resource per slot (and the price, if any) for learning curves."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.log: list[dict[str, float]] = []
        self.total_steps = 0
        self._thr = self._res = 0.0
        self._n = 0

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._thr += info["throughput"]
        self._res += info["resource"]
        self._n += 1
        self.total_steps += 1
        if terminated or truncated:
            self.log.append({"timesteps": self.total_steps, "throughput": self._thr / self._n,
                             "resource": self._res / self._n, "lam": float(info.get("lam", 0.0))})
            self._thr = self._res = 0.0
            self._n = 0
        return obs, reward, terminated, truncated, info


SB3_ALGOS = ("TD3", "SAC", "RecurrentPPO")


class SB3Agent:
    """Stable-Baselines3 TD3 / SAC (MLP policy) or sb3-contrib RecurrentPPO (LSTM policy) on the flat problem.

    SB3's defaults otherwise. TD3 explores with Gaussian action noise of the same scale as RSD4 (0.1);
    RecurrentPPO has no replay, so ``learning_starts`` does not apply to it (it is accepted and ignored; the
    dual price stays frozen for the same warm-up episodes through the wrapper, as for the other agents).

    Parameters
    ----------
    algo : {"TD3", "SAC", "RecurrentPPO"}
    env : gymnasium.Env, or a callable returning one (needed for ``n_envs > 1``)
        The (Lagrangian-wrapped) scheduling environment.
    n_envs : int, default 1
        Copies stepped together in SB3's ``DummyVecEnv`` (each with its own price, so use a fixed price when
        ``n_envs > 1``). The off-policy agents then take one gradient step per environment step collected
        (``gradient_steps=-1``), the same update-to-data ratio as with one copy.
    learning_starts : int
        Random warm-up steps of the off-policy agents (the same as RSD4's).
    seed : int
    device : str, default "auto"
        SB3's ``device`` (auto, cpu, cuda, cuda:N).
    **kwargs : passed to the SB3 constructor.

    Raises ``ValueError`` for an unknown ``algo`` and ``ImportError`` (naming the extra to install) when
    RecurrentPPO is asked for without sb3-contrib.

    ``learn(total_timesteps)``, ``predict(obs, state, episode_start, deterministic)`` (``state`` is the LSTM
    state for RecurrentPPO, ``None`` otherwise), ``save``, ``episode_log``.
    """

    def __init__(self, algo: str, env: Any, learning_starts: int = 10_000, seed: int | None = None,
                 device: str = "auto", n_envs: int = 1, **kwargs: Any) -> None:
        if algo not in SB3_ALGOS:
            raise ValueError(f"algo={algo!r} should be one of {list(SB3_ALGOS)}")
        self.algo = algo
        n_envs = check_int(n_envs, "n_envs", low=1)
        if isinstance(env, gym.Env):
            if n_envs > 1:
                raise TypeError("env should be a callable returning an environment when n_envs > 1, got an env")
            self._stats = [EpisodeStats(env)]
        elif callable(env):
            self._stats = [EpisodeStats(env()) for _ in range(n_envs)]
        else:
            raise TypeError(f"env should be a gymnasium.Env or a callable returning one, got {type(env).__name__}")
        from stable_baselines3.common.vec_env import DummyVecEnv

        self.env = self._stats[0] if n_envs == 1 else DummyVecEnv([lambda s=s: s for s in self._stats])
        n_act = self._stats[0].action_space.shape[0]
        extra: dict[str, Any] = {}
        if n_envs > 1 and algo != "RecurrentPPO":
            extra["gradient_steps"] = -1
        if algo == "RecurrentPPO":
            try:
                from sb3_contrib import RecurrentPPO
            except ImportError as exc:  # pragma: no cover - the rl extra installs it
                raise ImportError("RecurrentPPO needs sb3-contrib: pip install 'reprozoo[rl]'") from exc
            extra.update(kwargs)
            self.model = RecurrentPPO("MlpLstmPolicy", self.env, seed=seed, verbose=0, device=device, **extra)
            return
        import stable_baselines3 as sb3
        from stable_baselines3.common.noise import NormalActionNoise

        if algo == "TD3":  # same behaviour-noise scale as RSD4 (0.1)
            extra["action_noise"] = NormalActionNoise(np.zeros(n_act), 0.1 * np.ones(n_act))
        extra.update(kwargs)
        cls = getattr(sb3, algo)
        self.model = cls("MlpPolicy", self.env, learning_starts=learning_starts, seed=seed, verbose=0,
                         device=device, **extra)

    @property
    def episode_log(self) -> list[dict[str, float]]:
        """Training episodes of all copies, ``timesteps`` counted over all copies, in that order."""
        k = len(self._stats)
        logs = [{**e, "timesteps": e["timesteps"] * k} for st in self._stats for e in st.log]
        return sorted(logs, key=lambda e: e["timesteps"])

    def learn(self, total_timesteps: int, callback: Any = None, log_interval: int = 100,
              reset_num_timesteps: bool = True) -> SB3Agent:
        """SB3's ``learn`` (same arguments), on one torch thread (small networks)."""
        import torch

        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.model.learn(total_timesteps=total_timesteps, callback=callback, log_interval=log_interval,
                             reset_num_timesteps=reset_num_timesteps)
        finally:
            torch.set_num_threads(n_threads)
        return self

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        return self.model.predict(observation, state=state, episode_start=episode_start, deterministic=deterministic)

    def save(self, path: str) -> None:
        self.model.save(path)
