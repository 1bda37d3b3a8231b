"""The coordinatewise LSTM networks of the learned ZO optimizer, run by the fused ``ops.lstm_step``.

`CoordinateLSTM`: one LSTM cell + linear head shared by N coordinates; `UpdateRNN` (g -> Delta theta) and
`QueryRNN` ([g_{t-1}, Delta theta_{t-1}] -> the scale s) run it on B problems of d coordinates, one launch over
the B*d coordinates. `lstm_optimizer.LearnedZO` holds one of each (see its module for the reference code they
follow).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import ops

__all__ = ["CoordinateLSTM", "UpdateRNN", "QueryRNN", "State"]

State = Tuple[Tensor, Tensor]


class CoordinateLSTM(nn.Module):
    """One LSTM cell + linear head shared by N coordinates (gate order i, f, g, o, like torch.nn.LSTM).

    Parameters: ``w_ih [4H, I]``, ``w_hh [4H, H]``, optional ``bias [4H]`` (off by default, like the reference
    code), ``w_out [O, H]``, optional ``b_out [O]``. ``forward(x [N, I], (h, c))`` calls ``ops.lstm_step``;
    under ``torch.no_grad()`` (or with nothing requiring grad) it is the fused inference path that saves nothing.
    """

    def __init__(
        self,
        input_size: int,
        hidden: int = 10,
        output: int = 1,
        bias: bool = False,
        output_bias: bool = False,
        output_init_scale: float = 0.1,
    ):
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = int(input_size), int(hidden), int(output)
        self.output_init_scale = float(output_init_scale)
        H = self.hidden_size
        self.w_ih = nn.Parameter(torch.empty(4 * H, self.input_size))
        self.w_hh = nn.Parameter(torch.empty(4 * H, H))
        self.bias = nn.Parameter(torch.empty(4 * H)) if bias else None
        self.w_out = nn.Parameter(torch.empty(self.output_size, H))
        self.b_out = nn.Parameter(torch.empty(self.output_size)) if output_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in (self.w_ih, self.w_hh, self.bias):
                if p is not None:
                    p.uniform_(-k, k)
            self.w_out.uniform_(-k, k).mul_(self.output_init_scale)
            if self.b_out is not None:
                self.b_out.uniform_(-k, k).mul_(self.output_init_scale)

    def init_state(self, n: int, device=None, dtype=None) -> State:
        """Zero (h, c), each [n, H]."""
        device = self.w_hh.device if device is None else device
        dtype = self.w_hh.dtype if dtype is None else dtype
        z = torch.zeros(n, self.hidden_size, device=device, dtype=dtype)
        return z, z.clone()

    def forward(self, x: Tensor, state: State) -> Tuple[Tensor, State]:
        h, c = state
        y, h, c = ops.lstm_step(x, h, c, self.w_ih, self.w_hh, self.w_out, bias=self.bias, b_out=self.b_out)
        return y, (h, c)

    def config(self) -> Dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden": self.hidden_size,
            "output": self.output_size,
            "bias": self.bias is not None,
            "output_bias": self.b_out is not None,
            "output_init_scale": self.output_init_scale,
        }


class _CoordinatewiseRNN(nn.Module):
    """A `CoordinateLSTM` with a scalar head run on B problems of d coordinates: the B*d coordinates are the rows
    of one ``ops.lstm_step`` launch; per-coordinate states (h, c) are [B, d, H] (views of [B*d, H])."""

    def __init__(self, input_size: int, hidden: int, bias: bool, output_init_scale: float):
        super().__init__()
        self.lstm = CoordinateLSTM(input_size, hidden, 1, bias=bias, output_init_scale=output_init_scale)

    @property
    def hidden_size(self) -> int:
        return self.lstm.hidden_size

    def init_state(self, B: int, d: int, device=None, dtype=None) -> State:
        h, c = self.lstm.init_state(B * d, device, dtype)
        return h.view(B, d, -1), c.view(B, d, -1)

    def _step(self, x: Tensor, state: State) -> Tuple[Tensor, State]:
        """x [B, d, I] -> head output [B, d] and the new states [B, d, H]."""
        B, d, I = x.shape
        h, c = state
        H = h.shape[-1]
        y, (h, c) = self.lstm(x.reshape(B * d, I), (h.reshape(B * d, H), c.reshape(B * d, H)))
        return y.view(B, d), (h.view(B, d, H), c.view(B, d, H))


class UpdateRNN(_CoordinatewiseRNN):
    """g [B, d] -> head output [B, d] (the update itself, or its learned part under ``scaling="rms"``).

    ``step`` (optional): the initial value of a learned scalar step size, kept as ``log_step`` (trained with the
    LSTM in stage 1, frozen with it in stage 2)."""

    def __init__(self, hidden: int = 10, bias: bool = False, output_init_scale: float = 0.1,
                 step: Optional[float] = None):
        super().__init__(1, hidden, bias, output_init_scale)
        self.log_step = None if step is None else nn.Parameter(torch.tensor(math.log(float(step))))

    def forward(self, g: Tensor, state: State) -> Tuple[Tensor, State]:
        return self._step(g.unsqueeze(-1), state)


class QueryRNN(_CoordinatewiseRNN):
    """[g_{t-1}, Delta theta_{t-1}] [B, d] x 2 -> raw scale s = head + 1 [B, d] (before |.| and normalisation)."""

    def __init__(self, hidden: int = 10, bias: bool = False, output_init_scale: float = 0.1):
        super().__init__(2, hidden, bias, output_init_scale)

    def forward(self, g_prev: Tensor, dtheta_prev: Tensor, state: State) -> Tuple[Tensor, State]:
        y, state = self._step(torch.stack([g_prev, dtheta_prev], dim=-1), state)
        return y + 1.0, state

    @staticmethod
    def regularizer(s: Tensor, lam: float = 0.005) -> Tensor:
        """lambda * ||s - 1||^2 per problem [B] (eq. 4's ||Sigma - I||^2 term in the authors' form)."""
        return lam * (s - 1.0).square().sum(dim=1)
