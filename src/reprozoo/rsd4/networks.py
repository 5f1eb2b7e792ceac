"""Actor and critic of RSD4: an MLP branch on the current input and an LSTM branch on (state, last action).

Paper Sec. 4.2 (network architecture); reference ``alg/RSD4_OUT_XIN.py`` ("OUT": the LSTM output is
merged with the feed-forward branch outside the recurrent cell; "XIN": the recurrent branch also takes
the previous action). Hidden width 32 in the reference's training script.

Shapes
------
states ``(B, T, S)``, last actions ``(B, T, A)``, hidden ``(h, c)`` each ``(1, B, H)``; outputs per step.
The critic's :meth:`RecurrentCritic.head` broadcasts over extra leading sample dimensions, so that the
LSTM memory is computed once and shared by many candidate actions (used by the softmax operator).
:class:`ActingStep` evaluates the two actors and two critics of the agent for one step with their weights
laid out side by side (acting; the same function as their ``forward``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.core.versions import version_key

__all__ = ["ActingStep", "RecurrentActor", "RecurrentCritic"]

Hidden = tuple[torch.Tensor, torch.Tensor]


def _init_linear(m: nn.Module) -> None:
    # reference: Xavier-uniform weights, zero biases
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight, gain=1.0)
        nn.init.zeros_(m.bias)


def _add_relu(big: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """``relu(big + small)``, in place on ``big`` when ``small`` broadcasts to it (the candidate-action grid:
    one pass over the large tensor, no temporaries); autograd-safe (``relu_`` keeps its output for backward)."""
    tail = big.shape[big.dim() - small.dim():]  # the dimensions ``small`` broadcasts against
    if small.dim() <= big.dim() and all(m in (1, n) for m, n in zip(small.shape, tail, strict=True)):
        return big.add_(small).relu_()
    return torch.relu(big + small)


class _Memory(nn.Module):
    """Linear + ReLU on ``[state, last_action]`` then an LSTM (or nothing when ``recurrent=False``)."""

    def __init__(self, in_dim: int, hidden_dim: int, recurrent: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden_dim)
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, batch_first=True) if recurrent else None
        self.hidden_dim = hidden_dim

    def forward(self, x: torch.Tensor, hidden: Hidden | None) -> tuple[torch.Tensor, Hidden | None]:
        z = torch.relu(self.proj(x))
        if self.lstm is None:
            return z, hidden
        return self.lstm(z, hidden)  # no activation after the LSTM (reference)


class RecurrentActor(nn.Module):
    """Deterministic recurrent policy ``a_t = tanh(head([relu(W1 s_t), LSTM(relu(W2 [s_t, a_{t-1}]))]))``.

    Parameters
    ----------
    state_dim, action_dim : int
    hidden_dim : int, default 32
    recurrent : bool, default True
        ``False`` replaces the LSTM by the identity (the SD3 ablation: RSD4 without recurrence).

    Shapes: ``forward(states (B,T,S), last_actions (B,T,A), hidden) -> (actions (B,T,A) in [-1,1], hidden)``.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int = 32, recurrent: bool = True) -> None:
        super().__init__()
        self.state_dim, self.action_dim, self.hidden_dim, self.recurrent = state_dim, action_dim, hidden_dim, recurrent
        self.fc = nn.Linear(state_dim, hidden_dim)
        self.memory = _Memory(state_dim + action_dim, hidden_dim, recurrent)
        self.head1 = nn.Linear(2 * hidden_dim, hidden_dim)
        self.head2 = nn.Linear(hidden_dim, action_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.apply(_init_linear)

    def forward(
        self, states: torch.Tensor, last_actions: torch.Tensor, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, Hidden | None]:
        mem, hidden = self.memory(torch.cat([states, last_actions], -1), hidden)
        x = torch.cat([torch.relu(self.fc(states)), mem], -1)
        return torch.tanh(self.head2(torch.relu(self.head1(x)))), hidden

    def extra_repr(self) -> str:
        return f"state_dim={self.state_dim}, action_dim={self.action_dim}, hidden_dim={self.hidden_dim}"


class RecurrentCritic(nn.Module):
    """Recurrent Q-function ``Q(h_t, a_t) = head([relu(W1 [s_t, a_t]), LSTM(relu(W2 [s_t, a_{t-1}]))])``.

    Shapes: ``memory(states (B,T,S), last_actions (B,T,A), hidden) -> ((B,T,H), hidden)``;
    ``head(states (..., T, S), actions (..., T, A), memory (..., T, H)) -> (..., T)`` (broadcasting);
    ``forward(states, actions, last_actions, hidden) -> (q (B,T), hidden)``.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int = 32, recurrent: bool = True) -> None:
        super().__init__()
        self.state_dim, self.action_dim, self.hidden_dim, self.recurrent = state_dim, action_dim, hidden_dim, recurrent
        self.fc = nn.Linear(state_dim + action_dim, hidden_dim)
        self.mem = _Memory(state_dim + action_dim, hidden_dim, recurrent)
        self.head1 = nn.Linear(2 * hidden_dim, hidden_dim)
        self.head2 = nn.Linear(hidden_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.apply(_init_linear)

    def memory(
        self, states: torch.Tensor, last_actions: torch.Tensor, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, Hidden | None]:
        return self.mem(torch.cat([states, last_actions], -1), hidden)

    def head(self, states: torch.Tensor, actions: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``head2(relu(head1([relu(fc([s, a])), m])))``, broadcasting over leading dimensions.

        Computed with the weight matrices split by input block (``fc([s, a]) = W_s s + W_a a + b`` and likewise
        for ``head1``), the same function without concatenating, so that the terms of ``states`` and ``memory``
        are computed once for all the candidate actions the softmax operator scores (K of them): the work
        on the broadcast ``(..., K, T)`` grid is one ``A x H`` and one ``H x H`` product per row instead of
        ``(S + A) x H`` and ``2H x H`` on concatenated copies.
        """
        n_s, hid = states.shape[-1], self.hidden_dim
        w, w1 = self.fc.weight, self.head1.weight
        z = _add_relu(F.linear(actions, w[:, n_s:]), F.linear(states, w[:, :n_s], self.fc.bias))
        x = _add_relu(F.linear(z, w1[:, :hid]), F.linear(memory, w1[:, hid:], self.head1.bias))
        return self.head2(x).squeeze(-1)

    def forward(
        self, states: torch.Tensor, actions: torch.Tensor, last_actions: torch.Tensor, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, Hidden | None]:
        mem, hidden = self.memory(states, last_actions, hidden)
        return self.head(states, actions, mem), hidden

    def extra_repr(self) -> str:
        return f"state_dim={self.state_dim}, action_dim={self.action_dim}, hidden_dim={self.hidden_dim}"


class ActingStep:
    """One step of two actors and two critics at once: ``(x, h, c) -> (actions, q, h, c)`` (acting).

    Acting evaluates all four networks of the agent at every environment step on ``B`` = n_users rows; at
    width 32 that costs per-operation overhead, not arithmetic (about 120 small tensor operations through the
    modules). This evaluates the same function, each network's ``forward`` for one step, in about 20
    operations: the weights of the four networks are laid out side by side in block matrices (zero off the
    diagonal blocks), and the LSTM cells run as one ``torch.lstm_cell`` of width 4H. Every block product is
    the module's product plus exact zero terms, so the outputs are the modules' up to float rounding
    (test ``test_acting_step_is_the_networks_forward``: against the whole-sequence ``nn.LSTM`` forward that
    training uses, within 1e-6).

    Parameters
    ----------
    actors, critics : pairs of :class:`RecurrentActor` and :class:`RecurrentCritic` (same sizes)

    Call with ``x = [s_t, a_{t-1}]`` ``(B, S + A)`` and the LSTM states ``h, c`` ``(B, 4H)`` of actor 1, actor
    2, critic 1, critic 2 side by side; returns both actors' actions ``(B, 2A)`` (actor 1's then actor 2's;
    padding slots not masked), ``q (B, 2)`` = critic ``k``'s value of actor ``k``'s action, and the next
    ``h, c`` (returned unchanged without recurrence). The blocks hold a copy of the weights, taken anew (one
    scatter) on the first call after any of them changed in place (``load_state_dict``, an edit under
    ``torch.no_grad``) or any optimiser stepped, fused ones included (:func:`reprozoo.core.versions.version_key`;
    torch's fused optimisers leave the version counters as they were). Cost O(B H^2) per call.
    """

    def __init__(self, actors: list[RecurrentActor], critics: list[RecurrentCritic]) -> None:
        self.hidden_dim, self.recurrent = actors[0].hidden_dim, actors[0].recurrent
        params = [p for m in (*actors, *critics) for p in m.parameters()]
        # plain flat aliases of the parameters' storage (optimisers and load_state_dict write in place)
        self._weights = [p.detach().view(-1) for p in params]
        # the block layout, built once on the weights' positions in the flattened parameters (+1; 0: a zero)
        sizes = [p.numel() for p in params]
        pos = dict(zip(map(id, params), torch.arange(1, sum(sizes) + 1, dtype=torch.float64).split(sizes), strict=True))
        blocks = _block_layout(actors, critics, lambda p: pos[id(p)].view(p.shape))
        index = torch.cat([b.reshape(-1) for b in blocks]).long()
        filled = index.nonzero().squeeze(1)
        if filled.numel() != sum(sizes):  # every weight lands in exactly one place: its destination
            raise RuntimeError("ActingStep's block layout does not place every weight once")
        self._dst = torch.empty(sum(sizes), dtype=torch.long).index_copy_(0, index[filled] - 1, filled)
        self._dst = self._dst.to(params[0].device)
        with torch.inference_mode(False):  # an ordinary tensor (refreshed in place), even under inference_mode
            self._flat = params[0].new_zeros(index.numel())
        views = iter(self._flat.split([b.numel() for b in blocks]))
        (self.w_in, self.b_in, *lstm, aw1, ab1, aw2, ab2, cw1, cb1, cw2, cb2, self.w_critic_action) = (
            next(views).view(b.shape) for b in blocks)
        self.lstm_weights = tuple(lstm)  # w_ih, w_hh, b_ih, b_hh of the 4H-wide cell (empty without recurrence)
        self.actor_head, self.critic_head = (aw1, ab1, aw2, ab2), (cw1, cb1, cw2, cb2)
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the networks' current weights into the blocks: one concatenation and one scatter."""
        self._flat[self._dst] = torch.cat(self._weights)
        self._key = version_key(self._weights)

    def __call__(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if version_key(self._weights) != self._key:  # a weight changed since the copy
            self.refresh()
        hid = self.hidden_dim
        pre = F.linear(x, self.w_in, self.b_in)  # (B, 8H)
        mem = pre[:, :4 * hid].relu()
        if self.recurrent:
            h, c = torch.lstm_cell(mem, (h, c), *self.lstm_weights)
            mem = h
        w1, b1, w2, b2 = self.actor_head  # actors: tanh(head2(relu(head1([relu(fc(s)), mem]))))
        u = torch.cat([pre[:, 4 * hid:6 * hid].relu(), mem[:, :2 * hid]], 1)
        actions = F.linear(F.linear(u, w1, b1).relu_(), w2, b2).tanh_()  # (B, 2A)
        w1, b1, w2, b2 = self.critic_head  # critics: head2(relu(head1([relu(fc([s, a])), mem])))
        z = F.linear(actions, self.w_critic_action).add_(pre[:, 6 * hid:]).relu_()
        q = F.linear(F.linear(torch.cat([z, mem[:, 2 * hid:]], 1), w1, b1).relu_(), w2, b2)  # (B, 2)
        return actions, q, h, c


def _block_layout(actors: list[RecurrentActor], critics: list[RecurrentCritic], get) -> list[torch.Tensor]:
    """:class:`ActingStep`'s block matrices from ``get(parameter)`` (a tensor of the parameter's shape):
    ``w_in, b_in, [w_ih, w_hh, b_ih, b_hh,] actor head1 w/b, head2 w/b, critic head1 w/b, head2 w/b,
    critics' action weights``."""
    s_dim, a_dim, hid = actors[0].state_dim, actors[0].action_dim, actors[0].hidden_dim
    mems = [m.memory for m in actors] + [m.mem for m in critics]
    both = (*actors, *critics)
    # input layer on [s, a_prev]: the 4 memory projections | the actors' fc | the critics' fc on the state part
    state_part = [F.pad(get(m.fc.weight)[:, :s_dim], (0, a_dim)) for m in both]  # zero on the last action
    w_in = torch.cat([get(m.proj.weight) for m in mems] + state_part)
    out = [w_in, torch.cat([get(m.proj.bias) for m in mems] + [get(m.fc.bias) for m in both])]
    if actors[0].recurrent:  # one cell of width 4H: per gate (torch's i, f, g, o), block-diagonal over the 4 nets
        lstms = [m.lstm for m in mems]
        for name in ("weight_ih_l0", "weight_hh_l0"):
            gates = [get(getattr(m, name)).chunk(4) for m in lstms]
            out.append(torch.cat([torch.block_diag(*(g[i] for g in gates)) for i in range(4)]))
        for name in ("bias_ih_l0", "bias_hh_l0"):
            gates = [get(getattr(m, name)).chunk(4) for m in lstms]
            out.append(torch.cat([g[i] for i in range(4) for g in gates]))
    for nets in (actors, critics):  # head1 on [fc_1, fc_2, mem_1, mem_2], head2: block-diagonal over the pair
        w1 = [get(m.head1.weight) for m in nets]
        out += [torch.cat([torch.block_diag(*(w[:, :hid] for w in w1)), torch.block_diag(*(w[:, hid:] for w in w1))],
                          1),
                torch.cat([get(m.head1.bias) for m in nets]),
                torch.block_diag(*(get(m.head2.weight) for m in nets)), torch.cat([get(m.head2.bias) for m in nets])]
    out.append(torch.block_diag(*(get(m.fc.weight)[:, s_dim:] for m in critics)))  # the critics' fc on the action
    return out
