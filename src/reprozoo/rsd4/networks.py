"""Actor and critic of RSD4: an MLP branch on the current input and an LSTM branch on (state, last action).

Paper Sec. 4.2 (network architecture); reference ``alg/RSD4_OUT_XIN.py`` ("OUT": the LSTM output is
merged with the feed-forward branch outside the recurrent cell; "XIN": the recurrent branch also takes
the previous action). Hidden width 32 in the reference's training script.

Shapes
------
states ``(B, T, S)``, last actions ``(B, T, A)``, hidden ``(h, c)`` each ``(1, B, H)``; outputs per step.
The critic's :meth:`RecurrentCritic.head` broadcasts over extra leading sample dimensions, so that the
LSTM memory is computed once and shared by many candidate actions (used by the softmax operator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RecurrentActor", "RecurrentCritic"]

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
        if z.shape[1] == 1 and hidden is not None:  # one step (acting): the cell, without nn.LSTM's set-up cost
            lstm = self.lstm
            h, c = torch.lstm_cell(z[:, 0], (hidden[0][0], hidden[1][0]), lstm.weight_ih_l0, lstm.weight_hh_l0,
                                   lstm.bias_ih_l0, lstm.bias_hh_l0)
            return h[:, None], (h[None], c[None])
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
