"""Multi-user delay-constrained scheduling: the Gymnasium environment of RSD4 and its Lagrangian wrapper.

Paper: Hu, Pan, Chen, Fang, Huang, "Effective Multi-User Delay-Constrained Scheduling with Deep Recurrent
Reinforcement Learning", MobiHoc 2022, arXiv:2208.14074, Sec. 3 (system model); the dynamics follow the
authors' ``env/scheduler.py`` (order of delivery, expiry, arrival and channel update).

Model (one step = one slot)
---------------------------
* User ``i`` has a deadline ``tau_i`` in ``1..tau_max``, a weight ``beta_i`` in ``1..5`` (1 if homogeneous)
  and a distance ``d_i`` in ``[1, 2]``, drawn once per instance from ``seed``.
* Its queue is a buffer of ``tau_i + 1`` slots indexed by remaining lifetime ``k = 0..tau_i``; a new
  packet enters slot ``tau_i``. Each step: every packet of slot ``k`` is sent with resource
  ``e_{i,k} = (a_{i,k} + 1) / 2`` and succeeds independently with probability

      p = 2 / (1 + exp(-2 e / (d_i^3 c_i))) - 1 = tanh(e / (d_i^3 c_i))                      (success model)

  where ``c_i`` is the user's channel state (1 = best). Resource used: ``sum_k e_{i,k} * n_{i,k}``
  (packets present before delivery). Then the packets left in slot 0 expire (dropped), the others
  move one slot closer to their deadline, the new arrivals are put in slot ``tau_i`` and the channel
  moves on. Reward: ``sum_i beta_i * delivered_i - lam * resource``.
* Observation: the buffer counts of all users concatenated (``sum_i (tau_i + 1)`` entries, user by user,
  slot ``k`` ascending), followed by the ``n_users`` channel states unless ``partial_obs``.
* Action: one value in ``[-1, 1]`` per buffer slot, same layout as the buffer part of the observation.
  Out-of-range values are clipped to ``[-1, 1]`` (documented clip); NaN/inf or a wrong shape raise
  ``ValueError``.
* Episodes last ``episode_length`` (100) steps and end with ``truncated=True``; ``terminated`` is never set.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from reprozoo.core.checks import check_choice, check_float, check_int
from reprozoo.datasets.traces import CELLULAR_TRACES, load_cellular_trace, quantise_capacity

__all__ = [
    "ENV_ID",
    "DelayConstrainedSchedulingEnv",
    "LagrangianWrapper",
    "dual_update",
    "success_probability",
]

ENV_ID = "DelayConstrainedScheduling-v0"  # the name the paper's system and its spec give it
ARRIVALS = ("bernoulli", "poisson", "periodic")
CHANNELS = ("markov", "cellular")
#: Arrivals per user and slot are capped here (documented clip) so that observations stay in a finite Box.
MAX_PACKETS = 10_000
#: Default traces for trace-driven channels, one per user (cycled, with time offsets, beyond six users).
DEFAULT_TRACES = CELLULAR_TRACES


def success_probability(e: np.ndarray, distance: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Per-packet success probability ``2 / (1 + exp(-2 e / (d^3 c))) - 1`` (paper Sec. 3, system model).

    Parameters
    ----------
    e : array, resource in ``[0, 1]``; any shape broadcastable with ``distance`` and ``channel``.
    distance : array, user distance ``d > 0``.
    channel : array, channel state ``c >= 1`` (larger is worse).

    Returns
    -------
    ndarray of float64 in ``[0, 1)``: 0 at ``e = 0``, increasing in ``e``. Computed as the equal,
    overflow-free ``tanh(e / (d^3 c))``. O(size).
    """
    e = np.asarray(e, dtype=np.float64)
    return np.tanh(e / (np.asarray(distance, dtype=np.float64) ** 3 * np.asarray(channel, dtype=np.float64)))


def _read_trace_csv(path: Path, prefix: str, n_users: int) -> np.ndarray:
    """Columns ``<prefix>_0 .. <prefix>_{n-1}`` (or a single ``<prefix>`` shared by all) as (T, n_users)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ValueError(f"trace file {str(path)!r} could not be read: {exc}") from exc
    if not rows:
        raise ValueError(f"trace file {str(path)!r} is empty; expected a header and one row per slot")
    header = list(rows[0].keys())
    cols = [f"{prefix}_{i}" for i in range(n_users)]
    if not all(c in header for c in cols):
        if prefix in header:
            cols = [prefix] * n_users
        else:
            raise ValueError(
                f"trace file {str(path)!r} lacks columns {cols} (or a single {prefix!r} column); has {header}"
            )
    try:
        out = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"trace file {str(path)!r} has a non-numeric {prefix} entry: {exc}") from exc
    if not np.isfinite(out).all() or (out < 0).any():
        raise ValueError(f"trace file {str(path)!r}: {prefix} values should be finite and >= 0")
    return out


class DelayConstrainedSchedulingEnv(gym.Env):
    """Multi-user delay-constrained scheduling with a resource price (RSD4, MobiHoc 2022, Sec. 3).

    Parameters
    ----------
    n_users : int, default 4
    tau_max : int, default 6
        Largest deadline; ``tau_i ~ U{1..tau_max}``.
    arrival : {"bernoulli", "poisson", "periodic"} or path to a CSV, default "bernoulli"
        Bernoulli(A_i), A_i ~ U(0, 1); Poisson(A_i), A_i ~ U{2..5}; periodic: ``size_i ~ U{1..3}``
        packets every ``period_i ~ U{2..5}`` slots (random phase); a CSV gives per-slot counts in columns
        ``arrival_0..arrival_{N-1}`` (or one ``arrival`` column), its first 80 % rows for ``split="train"``
        and the last 20 % for ``"eval"``.
    channel : {"markov", "cellular"} or path to a CSV, default "markov"
        Markov: states ``1..n_channel_states`` (default ``n_users``, as the reference) following a random
        transition matrix (rows ~ U(0,1), normalised). Cellular: the shipped real LTE traces
        (``trace_files``, one per user) binned into ``slot_ms`` slots and quantised into
        ``n_channel_states`` (default 4) states by the quantiles of the training 80 %. A CSV gives states
        ``>= 1`` in columns ``channel_0..`` (or ``channel``), split 80/20 like arrivals.
    partial_obs : bool, default False
        Observe only the buffers (no channel states).
    lam : float, default 0
        Resource price in the reward.
    homogeneous : bool, default False
        All weights 1.
    seed : int, optional
        Draws the instance (deadlines, weights, distances, rates, Markov matrix, trace offsets; instance 0 when
        ``None``, so that vector copies agree) and seeds the first ``reset``.
    episode_length : int, default 100
    split : {"train", "eval"}, default "train"
        Which part of trace-driven processes episodes are drawn from.
    trace_files, slot_ms, n_channel_states : trace channel parameters (see above).
    deadlines, weights, distances, arrival_rates : optional arrays of length ``n_users`` that fix the
        instance instead of drawing it.

    Attributes
    ----------
    deadlines, weights, distances : ndarray (n_users,)
    buffer : ndarray int64 (n_users, tau_max + 1); slot ``k`` of user ``i`` valid for ``k <= tau_i``.
    channel_state : ndarray int64 (n_users,)

    Notes
    -----
    One step costs O(n_users * tau_max) vectorised NumPy work. Reference quirks not copied: its "Markov"
    channel draws user ``i``'s next state from row ``i`` of the matrix (i.i.d. per user); here the row of
    the current state is used (a true Markov chain).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        n_users: int = 4,
        tau_max: int = 6,
        arrival: str = "bernoulli",
        channel: str = "markov",
        partial_obs: bool = False,
        lam: float = 0.0,
        homogeneous: bool = False,
        seed: int | None = None,
        *,
        episode_length: int = 100,
        split: str = "train",
        trace_files: tuple[str, ...] | None = None,
        slot_ms: float = 100.0,
        n_channel_states: int | None = None,
        deadlines: Any = None,
        weights: Any = None,
        distances: Any = None,
        arrival_rates: Any = None,
    ) -> None:
        super().__init__()
        self.n_users = check_int(n_users, "n_users", low=1)
        self.tau_max = check_int(tau_max, "tau_max", low=1)
        self.partial_obs = bool(partial_obs)
        self.lam = check_float(lam, "lam", low=0.0)
        self.homogeneous = bool(homogeneous)
        self.episode_length = check_int(episode_length, "episode_length", low=1)
        self.split = check_choice(split, "split", ("train", "eval"))
        self.slot_ms = check_float(slot_ms, "slot_ms", low=0.0, low_inclusive=False)
        if seed is not None:
            check_int(seed, "seed", low=0)
        self._instance_seed = seed
        # the instance comes from ``seed`` (0 when None, so that the copies the vector API builds from the same
        # arguments share one instance); the dynamics are seeded by ``reset``
        rng = np.random.default_rng(0 if seed is None else seed)
        n, tmax = self.n_users, self.tau_max

        # --- instance (reference: tau ~ U{1..6}, beta ~ U{1..5}, d ~ U[1,2]) -----------------------
        self.deadlines = self._fixed_or(deadlines, "deadlines", rng.integers(1, tmax + 1, n), integer=True)
        if (self.deadlines < 1).any() or (self.deadlines > tmax).any():
            raise ValueError(f"deadlines should lie in 1..tau_max={tmax}, got {self.deadlines.tolist()}")
        w = np.ones(n) if self.homogeneous else rng.integers(1, 6, n).astype(np.float64)
        self.weights = self._fixed_or(weights, "weights", w)
        if (self.weights < 0).any():
            raise ValueError(f"weights should be >= 0, got {self.weights.tolist()}")
        self.distances = self._fixed_or(distances, "distances", rng.uniform(1.0, 2.0, n))
        if (self.distances <= 0).any():
            raise ValueError(f"distances should be > 0, got {self.distances.tolist()}")

        # --- arrivals ----------------------------------------------------------------------------------
        self.arrival = arrival
        self._arrival_trace: np.ndarray | None = None
        if not isinstance(arrival, (str, Path)):
            raise TypeError(f"arrival should be one of {ARRIVALS} or a CSV path, got {type(arrival).__name__}")
        if str(arrival) in ARRIVALS:
            kind = str(arrival)
            default = {
                "bernoulli": rng.uniform(0.0, 1.0, n),
                "poisson": rng.integers(2, 6, n).astype(np.float64),
                "periodic": rng.integers(1, 4, n).astype(np.float64),
            }[kind]
            self.arrival_rates = self._fixed_or(arrival_rates, "arrival_rates", default)
            if (self.arrival_rates < 0).any():
                raise ValueError(f"arrival_rates should be >= 0, got {self.arrival_rates.tolist()}")
            if kind == "bernoulli" and (self.arrival_rates > 1).any():
                raise ValueError(f"Bernoulli arrival_rates should be <= 1, got {self.arrival_rates.tolist()}")
            self.periods = rng.integers(2, 6, n)
            self.phases = rng.integers(0, 5, n) % self.periods
        else:
            path = Path(arrival)
            if not path.is_file():
                raise ValueError(f"arrival={str(arrival)!r} is neither one of {ARRIVALS} nor a readable CSV file")
            self._arrival_trace = np.floor(_read_trace_csv(path, "arrival", n)).astype(np.int64)
            self.arrival_rates = self._arrival_trace.mean(axis=0)
            kind = "trace"
        self._arrival_kind = kind

        # --- channels ----------------------------------------------------------------------------------
        self.channel = channel
        self._channel_trace: np.ndarray | None = None
        if not isinstance(channel, (str, Path)):
            raise TypeError(f"channel should be one of {CHANNELS} or a CSV path, got {type(channel).__name__}")
        if str(channel) == "markov":
            self.n_channel_states = check_int(n_channel_states or n, "n_channel_states", low=1)
            k = self.n_channel_states
            m = rng.uniform(0.0, 1.0, (k, k))
            self.transition_matrix = m / m.sum(axis=1, keepdims=True)
            self._channel_kind = "markov"
        elif str(channel) == "cellular":
            self.n_channel_states = check_int(n_channel_states or 4, "n_channel_states", low=1)
            files = tuple(trace_files) if trace_files else DEFAULT_TRACES
            series = []
            for i in range(n):
                counts = load_cellular_trace(files[i % len(files)], self.slot_ms).counts
                if i >= len(files):  # reuse of a trace: shift it in time so users differ
                    counts = np.roll(counts, int(rng.integers(1, counts.size)))
                series.append(counts)
            length = min(s.size for s in series)
            caps = np.stack([s[:length] for s in series], axis=1)
            n_train = int(0.8 * length)
            self.capacity_trace = caps  # packets deliverable per slot, (T, n_users)
            self._channel_trace = np.stack(
                [quantise_capacity(caps[:, i], self.n_channel_states, caps[:n_train, i]) for i in range(n)], axis=1
            )
            self.trace_files = tuple(files[i % len(files)] for i in range(n))
            self._channel_kind = "trace"
        else:
            path = Path(channel)
            if not path.is_file():
                raise ValueError(f"channel={str(channel)!r} is neither one of {CHANNELS} nor a readable CSV file")
            states = np.round(_read_trace_csv(path, "channel", n)).astype(np.int64)
            if (states < 1).any():
                raise ValueError(f"channel trace {str(path)!r} should hold states >= 1")
            self._channel_trace = states
            self.n_channel_states = int(states.max())
            self._channel_kind = "trace"
        for name, tr in (("arrival", self._arrival_trace), ("channel", self._channel_trace)):
            if tr is not None and tr.shape[0] < 5:
                raise ValueError(f"the {name} trace has {tr.shape[0]} rows; need at least 5 for the 80/20 split")

        # --- layout and spaces ---------------------------------------------------------------------------
        slots = np.arange(tmax + 1)
        self.valid = slots[None, :] <= self.deadlines[:, None]  # (N, tau_max+1)
        self.n_slots = int(self.valid.sum())
        obs_dim = self.n_slots + (0 if self.partial_obs else n)
        high = np.full(obs_dim, MAX_PACKETS, dtype=np.float32)
        if not self.partial_obs:
            high[self.n_slots:] = self.n_channel_states
        self.observation_space = spaces.Box(0.0, high, (obs_dim,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.n_slots,), dtype=np.float32)

        self.buffer = np.zeros((n, tmax + 1), dtype=np.int64)
        self.channel_state = np.ones(n, dtype=np.int64)
        self.t = 0
        self._seeded = False

    # ------------------------------------------------------------------------------------------------
    def _fixed_or(self, value: Any, name: str, default: np.ndarray, integer: bool = False) -> np.ndarray:
        if value is None:
            return np.asarray(default, dtype=np.int64 if integer else np.float64)
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != (self.n_users,) or not np.isfinite(arr).all():
            raise ValueError(f"{name} should be {self.n_users} finite numbers (one per user), got {value!r}")
        if integer:
            if not np.all(arr == np.round(arr)):
                raise ValueError(f"{name} should be integers, got {value!r}")
            return arr.astype(np.int64)
        return arr

    def _split_range(self, length: int) -> tuple[int, int]:
        n_train = int(0.8 * length)
        return (0, n_train) if self.split == "train" else (n_train, length)

    def _arrivals(self) -> np.ndarray:
        return self._draw_arrivals(self.np_random, self.t, getattr(self, "_arrival_offset", 0), None)

    def _draw_arrivals(self, rng: np.random.Generator, t: int, offset: Any, size: tuple | None) -> np.ndarray:
        """Arrivals of slot ``t``: ``(n_users,)`` (``size=None``, scalar ``offset``) or ``size`` = ``(B, n_users)``
        with one trace ``offset`` per copy (shared by :class:`DelayConstrainedSchedulingVectorEnv`)."""
        kind = self._arrival_kind
        if kind == "bernoulli":
            return (rng.random(size or self.n_users) < self.arrival_rates).astype(np.int64)
        if kind == "poisson":
            return rng.poisson(self.arrival_rates, size).astype(np.int64)
        if kind == "periodic":
            out = np.where((t + self.phases) % self.periods == 0, self.arrival_rates, 0).astype(np.int64)
            return out if size is None else np.broadcast_to(out, size).copy()
        lo, hi = self._split_range(self._arrival_trace.shape[0])
        return self._arrival_trace[lo + (np.asarray(offset) + t) % (hi - lo)]

    def _channel_at(self, t: int, offset: Any = None) -> np.ndarray:
        lo, hi = self._split_range(self._channel_trace.shape[0])
        offset = self._channel_offset if offset is None else np.asarray(offset)
        return self._channel_trace[lo + (offset + t) % (hi - lo)].copy()

    def _next_channel(self) -> np.ndarray:
        return self._draw_channel(self.np_random, self.t, self.channel_state, None)

    def _draw_channel(self, rng: np.random.Generator, t: int, state: np.ndarray, offset: Any) -> np.ndarray:
        """Channel states of slot ``t`` from the current ``state`` (any leading shape; Markov) or the trace."""
        if self._channel_kind == "markov":
            cdf = np.cumsum(self.transition_matrix[state - 1], axis=-1)
            u = rng.random(state.shape)[..., None]
            return (np.minimum((u > cdf).sum(axis=-1), self.n_channel_states - 1) + 1).astype(np.int64)
        return self._channel_at(t, offset)

    def _obs(self) -> np.ndarray:
        buf = self.buffer[self.valid].astype(np.float32)
        if self.partial_obs:
            return buf
        return np.concatenate([buf, self.channel_state.astype(np.float32)])

    # ------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Empty the queues (as the reference does), draw the first channel states; ``(obs, info)``."""
        if seed is None and not self._seeded and self._instance_seed is not None:
            seed = self._instance_seed
        super().reset(seed=seed)
        self._seeded = True
        self.t = 0
        self.buffer[:] = 0
        if self._arrival_trace is not None:
            lo, hi = self._split_range(self._arrival_trace.shape[0])
            self._arrival_offset = int(self.np_random.integers(0, hi - lo))
        if self._channel_kind == "markov":
            self.channel_state = self.np_random.integers(1, self.n_channel_states + 1, self.n_users)
        else:
            lo, hi = self._split_range(self._channel_trace.shape[0])
            self._channel_offset = int(self.np_random.integers(0, hi - lo))
            self.channel_state = self._channel_at(0)
        self.totals = {"arrived": 0, "delivered": 0, "dropped": 0, "resource": 0.0, "throughput": 0.0}
        return self._obs(), {"channel": self.channel_state.copy(), "lam": self.lam}

    def check_action(self, action: Any) -> np.ndarray:
        """Validate a flat action: shape ``(n_slots,)``, finite; returns it clipped to ``[-1, 1]``."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.n_slots,):
            raise ValueError(f"action should have shape ({self.n_slots},) (one value per buffer slot), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("action contains NaN or infinite values; expected numbers in [-1, 1]")
        return np.clip(a, -1.0, 1.0)

    def resource_from_action(self, action: np.ndarray) -> np.ndarray:
        """Map a flat action in ``[-1, 1]`` to per-slot resource ``(N, tau_max+1)`` in ``[0, 1]``, 0 on padding."""
        e = np.zeros(self.buffer.shape)
        e[self.valid] = (np.asarray(action, dtype=np.float64) + 1.0) / 2.0
        return e

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Serve the queues with ``action`` (see the class notes for the order of events)."""
        e = self.resource_from_action(self.check_action(action))
        per_user_delivered, per_user_resource, per_user_dropped, arrivals = serve(
            self.np_random, self.buffer, e, self.distances, self.channel_state, self.deadlines, self._arrivals)
        self.t += 1
        self.channel_state = self._next_channel()

        weighted = self.weights * per_user_delivered
        per_user_reward = weighted - self.lam * per_user_resource
        throughput = float(weighted.sum())
        resource = float(per_user_resource.sum())
        arrived, delivered, dropped = int(arrivals.sum()), int(per_user_delivered.sum()), int(per_user_dropped.sum())
        tot = self.totals
        tot["arrived"] += arrived
        tot["delivered"] += delivered
        tot["dropped"] += dropped
        tot["resource"] += resource
        tot["throughput"] += throughput
        info = {
            "throughput": throughput,
            "delivered": delivered,
            "resource": resource,
            "dropped": dropped,
            "arrived": arrived,
            "per_user_reward": per_user_reward,
            "per_user_delivered": per_user_delivered,
            "per_user_resource": per_user_resource,
            "channel": self.channel_state.copy(),
            "lam": self.lam,
        }
        truncated = self.t >= self.episode_length
        return self._obs(), float(throughput - self.lam * resource), False, truncated, info

    # ---- helpers for user-level decomposition ---------------------------------------------------------
    def user_layout(self) -> dict[str, Any]:
        """What an agent needs to split flat observations into per-user parts (see ``rsd4.agent``)."""
        return {
            "n_users": self.n_users,
            "tau_max": self.tau_max,
            "deadlines": self.deadlines.tolist(),
            "partial_obs": self.partial_obs,
        }


def serve(rng: np.random.Generator, buf: np.ndarray, e: np.ndarray, distances: np.ndarray, channel: np.ndarray,
          deadlines: np.ndarray, arrivals: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One slot of the queues, in place on ``buf`` ``(..., N, tau_max+1)`` (any leading batch shape).

    Delivery (``Binomial(n, p(e))`` per slot), expiry of slot 0, shift by one slot, then ``arrivals()`` (called
    after the delivery draws, so one RNG stream gives the same trajectory as before batching) placed in slot
    ``tau_i`` (capped at :data:`MAX_PACKETS`). Returns per-user ``delivered, resource, dropped, arrived``, each
    ``(..., N)``. O(buf.size).
    """
    p = success_probability(e, distances[..., :, None], channel[..., :, None])
    delivered = rng.binomial(buf, p)
    per_user_resource = (e * buf).sum(axis=-1)
    per_user_delivered = delivered.sum(axis=-1)
    buf -= delivered
    per_user_dropped = buf[..., 0].copy()  # remaining lifetime 0 and not delivered: expires
    buf[..., :-1] = buf[..., 1:]
    buf[..., -1] = 0
    arrived = np.minimum(arrivals(), MAX_PACKETS)
    buf[..., np.arange(buf.shape[-2]), deadlines] = arrived  # user i's new packets in slot tau_i
    return per_user_delivered, per_user_resource, per_user_dropped, arrived


def dual_update(lam: float, mean_resource: float, budget: float, lr: float) -> float:
    """Projected dual (sub)gradient step ``lam <- max(0, lam + lr * (mean_resource - budget))``.

    The paper's Lagrangian relaxation of the average-resource constraint (absent from the reference code).
    Raises ``ValueError`` for a negative ``lam``/``lr``/``budget`` or non-finite input.
    """
    lam = check_float(lam, "lam", low=0.0)
    mean_resource = check_float(mean_resource, "mean_resource", low=0.0)
    budget = check_float(budget, "budget", low=0.0)
    lr = check_float(lr, "lr", low=0.0)
    return max(0.0, lam + lr * (mean_resource - budget))


class LagrangianWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Owns the resource price ``lam``: reward ``throughput - lam * resource``, dual update per episode.

    Parameters
    ----------
    env : DelayConstrainedSchedulingEnv (possibly wrapped)
    budget : float
        ``E0``, the average resource per slot allowed.
    lr : float, default 0.05
        Dual step size ``eta`` (reward units per resource unit, per unit of budget excess per episode).
    lam : float, default 0
        Initial price.
    update_every : int, default 1
        Episodes between dual updates; ``mean_resource`` is averaged over them.
    frozen : bool, default False
        Keep ``lam`` fixed (evaluation).
    warmup_episodes : int, default 0
        Episodes without dual updates at the start (an agent's random warm-up does not react to ``lam``).

    ``info`` gains ``lam`` (the price used for this step's reward) and ``per_user_reward`` is
    recomputed with it. After each update ``lam_history`` holds the new price.
    """

    def __init__(
        self, env: gym.Env, budget: float, lr: float = 0.05, lam: float = 0.0, update_every: int = 1,
        frozen: bool = False, warmup_episodes: int = 0,
    ) -> None:
        # recorded so that gymnasium can rebuild the wrapped env from its spec (check_env, env.spec)
        gym.utils.RecordConstructorArgs.__init__(self, budget=budget, lr=lr, lam=lam, update_every=update_every,
                                                 frozen=frozen, warmup_episodes=warmup_episodes)
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.unwrapped, DelayConstrainedSchedulingEnv):
            raise TypeError("LagrangianWrapper needs a DelayConstrainedSchedulingEnv underneath")
        self.budget = check_float(budget, "budget", low=0.0)
        self.lr = check_float(lr, "lr", low=0.0)
        self.lam = check_float(lam, "lam", low=0.0)
        self.update_every = check_int(update_every, "update_every", low=1)
        self.frozen = bool(frozen)
        self.warmup_episodes = check_int(warmup_episodes, "warmup_episodes", low=0)
        self.lam_history: list[float] = [self.lam]
        self._res_sum = 0.0
        self._steps = 0
        self._episodes = 0

    def step(self, action: Any):
        obs, _, terminated, truncated, info = self.env.step(action)
        base = self.env.unwrapped
        info = dict(info)
        info["lam"] = self.lam
        info["per_user_reward"] = base.weights * info["per_user_delivered"] - self.lam * info["per_user_resource"]
        reward = float(info["throughput"] - self.lam * info["resource"])
        self._res_sum += info["resource"]
        self._steps += 1
        if terminated or truncated:
            self._episodes += 1
            if self._episodes <= self.warmup_episodes:
                self._res_sum, self._steps = 0.0, 0
            elif (self._episodes - self.warmup_episodes) % self.update_every == 0 and not self.frozen:
                self.lam = dual_update(self.lam, self._res_sum / self._steps, self.budget, self.lr)
                self.lam_history.append(self.lam)
                self._res_sum, self._steps = 0.0, 0
        return obs, reward, terminated, truncated, info
