"""The learned ZO optimizer's weights (`LearnedZO`: the coordinatewise LSTMs of `lstm_networks`, run by the fused
``ops.lstm_step``), their steps and their files.

Following the authors' ``VarReducedZOOptimizer`` (github.com/RYoungJ/ZO-L2L, nn_optimizer/zoopt.py):

* UpdateRNN: ``nn.LSTM(1, 10, bias=False)`` + ``nn.Linear(10, 1, bias=False)`` whose weight is multiplied by
  0.1 at initialisation. Input: the raw gradient estimate g_j (no preprocessing, no log/sign encoding as in
  Andrychowicz et al.: the authors feed ``flat_grads`` directly). Output: the update Delta theta_j, used as is
  (theta_t = theta_{t-1} + Delta theta_t); ``ZOLSTM(update_scale=alpha)`` multiplies it by the transfer factor
  alpha of DESIGN.md (1 = the authors' behaviour).
* QueryRNN: ``nn.LSTM(2, 10, bias=False)`` + ``nn.Linear(10, 1, bias=False)`` (weight x 0.1). Input
  [g_{t-1, j}, Delta theta_{t-1, j}] (zeros at the first step, as the authors' initial buffers). Output: the raw
  per-coordinate scale ``s = head + 1`` (the authors' ``std = o2 + 1``). The sampler rescales it to
  ||s||_2 = sqrt(d) and draws u = s_hat * z; the authors draw u = z * |s_hat|: we pass |s| to the sampler,
  which gives the same distribution and the same normalisation.
* The regulariser of eq. 4, lambda * ||s - 1||^2 (the authors' ``reg_loss`` with ``mean = 0``), is returned by
  `QueryRNN.regularizer` for the meta-trainer.

All coordinates of all B problems share the weights: one ``ops.lstm_step`` launch runs N = B*d coordinates, each
with its own (h, c). Initialisation: LSTM weights U(-1/sqrt(H), 1/sqrt(H)) (torch.nn.LSTM's default), head
U(-1/sqrt(H), 1/sqrt(H)) x 0.1 (torch.nn.Linear's default times the authors' 0.1).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import ops
from ..fileio import atomic_torch_save, first_line, load_torch_file
from .lstm_networks import CoordinateLSTM, QueryRNN, UpdateRNN

__all__ = ["CoordinateLSTM", "UpdateRNN", "QueryRNN", "LearnedZO", "PRETRAINED_DIR", "FORMAT", "SCALINGS"]

FORMAT = "zol2l-learnedzo-v1"
SCALINGS = ("none", "rms")
# Added to mean squares before a square root: keeps a row whose estimate is all zero (every query returned the
# same value) finite without changing rows of any realistic scale (float32 g^2 of 1e-15 is already noise).
RMS_EPS = 1e-30
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def _rms(x: Tensor, eps: float) -> Tensor:
    """Per-problem root mean square over the coordinates, [B, 1] (eps keeps an all-zero row finite)."""
    return x.square().mean(dim=1, keepdim=True).add(eps).sqrt()


class LearnedZO(nn.Module):
    """The learned optimizer's weights: an `UpdateRNN` (``.update``) and a `QueryRNN` (``.query``).

    ``scaling`` says how the networks meet the problem's scale:

    * ``"none"`` (the reference code's, and every file saved before scaling existed): the UpdateRNN reads the raw
      estimate g and its head output is the update. Its step size is then baked into the weights for the scale
      of the problem it was trained on (the reference's pixel-space MNIST: ~4/784 per coordinate), and an
      untrained network's sign is random.
    * ``"rms"`` (scale-free): the UpdateRNN reads ``g_hat = g / sqrt(v)``, v a per-problem running mean (EMA,
      ``rms_beta``) of mean_j g_j^2, and proposes ``Delta theta = step * (y - g_hat)``: a learned correction y
      (the head, initialised small) of a normalised ZO-SGD step, ``step = exp(log_step)`` a learned scalar whose
      start ``step`` is fitted to the task before training (`zol2l train --step auto`). The untrained network
      therefore descends like normalised ZO-SGD on any problem, and what training learns is what improves on
      it. The QueryRNN reads its inputs g_{t-1} and Delta theta_{t-1} divided by their per-problem RMS, so it
      too sees the same numbers whatever the problem's units.

    `update_step` and `query_step` are the one entry to a step of each network: the optimizer (`ZOLSTM`, test
    time) and the meta-trainer (`meta_step`, training) both call them. Written as tensor ops (the reference, and
    what autograd records); where nothing needs a gradient, a "rms" model on the CPU takes the same step as one
    fused op each (`ops.learned_update_step` / `learned_query_step`), equal to rounding.

    ``save(path)`` writes ``torch.save({"format", "config", "state_dict", "meta"})``; ``LearnedZO.load(path)``
    reads it with ``weights_only=True``. ``LearnedZO.pretrained(name)`` loads ``zol2l_ext/pretrained/<name>.pt``.
    ``from_reference_state_dict`` converts a checkpoint of the authors' code (``ckpt['state_dict']``).
    """

    def __init__(
        self,
        hidden: int = 10,
        bias: bool = False,
        output_init_scale: float = 0.1,
        query_hidden: Optional[int] = None,
        scaling: str = "none",
        step: float = 0.01,
        rms_beta: float = 0.9,
        boost: float = 1.0,
        boost_decay: float = 25.0,
        query_decay: float = math.inf,
    ):
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"LearnedZO: scaling must be one of {SCALINGS}, got {scaling!r}")
        if not (step > 0 and math.isfinite(step)):
            raise ValueError(f"LearnedZO: step must be > 0, got {step}")
        if not 0.0 <= rms_beta <= 1.0:
            raise ValueError(f"LearnedZO: rms_beta must lie in [0, 1], got {rms_beta}")
        self.scaling = scaling
        self.rms_beta = float(rms_beta)
        self.update = UpdateRNN(hidden, bias=bias, output_init_scale=output_init_scale,
                                step=step if scaling == "rms" else None)
        self.query = QueryRNN(query_hidden or hidden, bias=bias, output_init_scale=output_init_scale)
        self._config = {
            "hidden": int(hidden),
            "bias": bool(bias),
            "output_init_scale": float(output_init_scale),
            "query_hidden": int(query_hidden or hidden),
        }
        if scaling != "none":  # files of the unscaled form keep their config as it was
            self._config.update(scaling=scaling, step=float(step), rms_beta=self.rms_beta)
        self.set_boost(boost, boost_decay)
        self.set_query_decay(query_decay)

    def set_query_decay(self, decay: float) -> None:
        """At test time, use the QueryRNN's scale at step t (0-based) with probability ``p exp(-t / decay)``
        instead of the Bernoulli p alone (`ZOLSTM`). Why: on MNIST the learned directions speed up the steps
        before a first success but estimate the l1 term that is left after it worse than isotropic ones
        (docs/TRAINING.md). ``inf`` (the default, and every file saved before it existed) keeps p constant.
        Picked on held-out problems by `zol2l boost --query-decays`; saved in the config."""
        decay = float(decay)
        if not decay > 0 or math.isnan(decay):
            raise ValueError(f"LearnedZO: query_decay must be > 0 steps (inf: none), got {decay}")
        self.query_decay = decay
        cfg = getattr(self, "_config", None)
        if cfg is not None:
            cfg.pop("query_decay", None)
            if math.isfinite(decay):  # files without it keep their config as it was
                cfg["query_decay"] = decay

    def set_boost(self, boost: float, decay: float) -> None:
        """Multiply the update of step t (0-based, per problem) by ``1 + (boost - 1) * exp(-t / decay)``: a
        larger step at the start that decays to the trained one. Why: the UpdateRNN reads a normalised estimate,
        so it cannot tell the first steps (far from any minimum: larger steps pay) from the late ones, and a
        constant learned step trades the early progress (the queries to a first success) against the end.
        ``boost = 1`` (the default, and every file saved before it existed) changes nothing. Picked on held-out
        problems by `zol2l boost`; saved in the config."""
        if not (boost > 0 and math.isfinite(boost)):
            raise ValueError(f"LearnedZO: boost must be > 0, got {boost}")
        if not (decay > 0 and math.isfinite(decay)):
            raise ValueError(f"LearnedZO: boost_decay must be > 0 steps, got {decay}")
        self.boost, self.boost_decay = float(boost), float(decay)
        cfg = getattr(self, "_config", None)
        if cfg is not None:
            cfg.pop("boost", None)
            cfg.pop("boost_decay", None)
            if self.boost != 1.0:  # files without a boost keep their config as it was
                cfg.update(boost=self.boost, boost_decay=self.boost_decay)

    # -- one step of each network (shared by ZOLSTM and the meta-trainer) ----------------------------------
    @property
    def step_size(self) -> Optional[Tensor]:
        """exp(log_step) under ``scaling="rms"`` (a 0-dim tensor, differentiable), else None."""
        return None if self.update.log_step is None else self.update.log_step.exp()

    @torch.no_grad()
    def scale_update(self, alpha: float) -> None:
        """Multiply every update this model proposes by ``alpha`` (DESIGN.md's transfer factor), in the weights
        so that a saved file carries it: the head under ``scaling="none"``, the learned step under "rms"."""
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"LearnedZO.scale_update: alpha must be > 0, got {alpha}")
        if self.update.log_step is None:
            self.update.lstm.w_out.mul_(alpha)
        else:
            self.update.log_step.add_(math.log(alpha))

    def init_update_state(self, B: int, d: int, device=None, dtype=None) -> Dict[str, Tensor]:
        st: Dict[str, Tensor] = {}
        st["h_update"], st["c_update"] = self.update.init_state(B, d, device, dtype)
        if self.scaling == "rms":  # 0 = no estimate seen yet (the first step takes its own mean square)
            st["g_sq"] = torch.zeros(B, 1, device=st["h_update"].device, dtype=st["h_update"].dtype)
        if self.boost != 1.0:  # the steps taken, for the boost's decay
            st["n_update"] = torch.zeros(B, 1, device=st["h_update"].device, dtype=st["h_update"].dtype)
        return st

    def init_query_state(self, B: int, d: int, device=None, dtype=None) -> Dict[str, Tensor]:
        st: Dict[str, Tensor] = {}
        st["h_query"], st["c_query"] = self.query.init_state(B, d, device, dtype)
        return st

    def _fused(self, *inputs: Tensor) -> bool:
        """Whether a step of the networks may run as one op (ops.learned_update_step / learned_query_step): the
        "rms" form, a device with the kernel, and no gradient to record. The ops compute what the tensor ops
        below compute, up to rounding (the mean squares are summed in another order)."""
        x = inputs[0]
        if self.scaling != "rms" or x.dtype not in (torch.float32, torch.float64):
            return False
        if torch.is_grad_enabled() and (any(t.requires_grad for t in inputs)
                                        or any(p.requires_grad for p in self.parameters())):
            return False
        return ops.has_learned_step_kernel(x.device)

    def update_step(self, g: Tensor, st: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The UpdateRNN on the estimate g [B, d]: (Delta theta [B, d], its new state entries)."""
        new: Dict[str, Tensor] = {}
        if self._fused(g):
            lstm, n = self.update.lstm, st.get("n_update") if self.boost != 1.0 else None
            delta, new["g_sq"], new["h_update"], new["c_update"] = ops.learned_update_step(
                g, st["g_sq"], st["h_update"], st["c_update"], lstm.w_ih, lstm.w_hh, lstm.bias, lstm.w_out,
                lstm.b_out, self.update.log_step, self.rms_beta, RMS_EPS, n, self.boost, self.boost_decay)
            if n is not None:
                new["n_update"] = n + 1
            return delta, new
        if self.scaling == "none":
            delta, (new["h_update"], new["c_update"]) = self.update(g, (st["h_update"], st["c_update"]))
        else:
            m = g.detach().square().mean(dim=1, keepdim=True)
            old = st["g_sq"]
            v = torch.where(old > 0, self.rms_beta * old + (1.0 - self.rms_beta) * m, m)
            new["g_sq"] = v
            g_hat = g / v.add(RMS_EPS).sqrt()
            y, (new["h_update"], new["c_update"]) = self.update(g_hat, (st["h_update"], st["c_update"]))
            delta = self.step_size * (y - g_hat)
        if self.boost != 1.0:
            n = st["n_update"]
            new["n_update"] = n + 1
            delta = delta * (1.0 + (self.boost - 1.0) * torch.exp(-n / self.boost_decay))
        return delta, new

    def query_step(self, st: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The QueryRNN on [g_{t-1}, Delta theta_{t-1}] (``st["g_prev"]``, ``st["dtheta_prev"]``): (the raw scale
        s = head + 1 [B, d], its new state entries)."""
        g, dt = st["g_prev"], st["dtheta_prev"]
        if self._fused(g, dt):
            lstm = self.query.lstm
            s, h, c = ops.learned_query_step(g, dt, st["h_query"], st["c_query"], lstm.w_ih, lstm.w_hh, lstm.bias,
                                             lstm.w_out, lstm.b_out, RMS_EPS)
            return s, {"h_query": h, "c_query": c}
        if self.scaling == "rms":
            g, dt = g / _rms(g, RMS_EPS), dt / _rms(dt, RMS_EPS)
        new: Dict[str, Tensor] = {}
        s, (new["h_query"], new["c_query"]) = self.query(g, dt, (st["h_query"], st["c_query"]))
        return s, new

    @property
    def config(self) -> Dict[str, Any]:
        return dict(self._config)

    def forward(self, *args, **kwargs):  # pragma: no cover - use .update / .query
        raise RuntimeError("LearnedZO holds two networks: call .update(g, state) or .query(g, dtheta, state)")

    # -- persistence -------------------------------------------------------------------------------------
    def to_dict(self, meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config,
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
            "meta": dict(meta or {}),
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "LearnedZO":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a LearnedZO checkpoint (expected format {FORMAT!r}, got "
                             f"{d.get('format') if isinstance(d, dict) else type(d).__name__!r})")
        model = cls(**d["config"])
        sd = d["state_dict"]
        if sd:
            model.to(dtype=next(iter(sd.values())).dtype)  # keep the saved precision
        model.load_state_dict(sd)
        model.meta = dict(d.get("meta", {}))
        return model

    def save(self, path, meta: Optional[Dict[str, Any]] = None) -> None:
        """torch.save the weights and config (meta: optional str/number entries, e.g. the training task). Written
        to a temporary file and renamed, so that a run killed mid-write leaves the previous file, not half of one."""
        atomic_torch_save(self.to_dict(meta), path)

    @classmethod
    def load(cls, path, map_location="cpu") -> "LearnedZO":
        """Load a file written by `save` (``torch.load(weights_only=True)``). A file that is truncated, corrupt or
        not a LearnedZO checkpoint raises a one-line ValueError naming it."""
        d = load_torch_file(path, "LearnedZO file", map_location=map_location)
        try:
            return cls.from_dict(d)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise ValueError(f"{path}: {first_line(e)}") from None

    @classmethod
    def pretrained(cls, name: str, map_location="cpu") -> "LearnedZO":
        """Load the shipped weights ``zol2l_ext/pretrained/<name>.pt``."""
        path = PRETRAINED_DIR / f"{name}.pt"
        if not path.is_file():
            available = cls.available_pretrained()
            raise FileNotFoundError(
                f"no pretrained ZO-LSTM named {name!r}: {path} does not exist "
                f"(available: {', '.join(available) if available else 'none yet'}). "
                f"Train one (meta-training) and save it with LearnedZO.save(), or load a file with LearnedZO.load(path)."
            )
        return cls.load(path, map_location=map_location)

    @staticmethod
    def is_path(spec: str) -> bool:
        """Whether ``spec`` names a file (a path separator, a .pt suffix, or an existing file) rather than a
        shipped name."""
        return os.path.sep in spec or spec.endswith(".pt") or os.path.isfile(spec)

    @classmethod
    def available_pretrained(cls) -> list:
        return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt")) if PRETRAINED_DIR.is_dir() else []

    @classmethod
    def from_reference_state_dict(cls, sd: Dict[str, Tensor]) -> "LearnedZO":
        """Build from the authors' ``VarReducedZOOptimizer.state_dict()`` (or ``ZOOptimizer``: UpdateRNN only).

        Keys: update_rnn.weight_ih_l0, update_rnn.weight_hh_l0, outputer.weight, and optionally
        query_u_rnn.weight_ih_l0, query_u_rnn.weight_hh_l0, query_u_outputer.weight.
        """
        H = sd["update_rnn.weight_hh_l0"].shape[1]
        Hq = sd["query_u_rnn.weight_hh_l0"].shape[1] if "query_u_rnn.weight_hh_l0" in sd else H
        model = cls(hidden=H, query_hidden=Hq)
        with torch.no_grad():
            for ours, theirs in (
                (model.update.lstm.w_ih, "update_rnn.weight_ih_l0"),
                (model.update.lstm.w_hh, "update_rnn.weight_hh_l0"),
                (model.update.lstm.w_out, "outputer.weight"),
                (model.query.lstm.w_ih, "query_u_rnn.weight_ih_l0"),
                (model.query.lstm.w_hh, "query_u_rnn.weight_hh_l0"),
                (model.query.lstm.w_out, "query_u_outputer.weight"),
            ):
                if theirs in sd:
                    ours.copy_(sd[theirs].to(ours.dtype))
        return model
