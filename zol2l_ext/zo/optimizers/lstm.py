"""The learned ZO optimizer (ZO-LSTM) and its ablations; `ZOLSTM.differentiable_step` is the one step that the
test-time runs and the meta-trainer (`meta_step`) both take."""
from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional
import warnings

import torch
from torch import Tensor

from ..estimator import GradientEstimate, Workspace, _check_theta, gaussian_estimate, guided_estimate
from ..lstm_optimizer import LearnedZO
from ..seeding import SALT_BERNOULLI, derive, uniform01
from .base import Rate, ZOOptimizer
from .registry import OptimizerTraits

__all__ = ["ZOLSTM", "ZOLSTMNoQuery", "ZOLSTMNoUpdate", "ZOLSTMGuidedES", "LSTMStep", "lstm_state"]


def lstm_state(model: LearnedZO, theta0: Tensor, use_update: bool, use_query: bool,
               guided: bool) -> Dict[str, Tensor]:
    """The networks' starting states for B problems of d coordinates (theta0 [B, d]), and the zero g_prev /
    dtheta_prev of the first step's QueryRNN (or Guided-ES) input."""
    B, d = theta0.shape
    st: Dict[str, Tensor] = {}
    if use_update:
        st.update(model.init_update_state(B, d, theta0.device, theta0.dtype))
    if use_query:
        st.update(model.init_query_state(B, d, theta0.device, theta0.dtype))
    if use_query or guided:
        st["g_prev"] = torch.zeros_like(theta0)
        st["dtheta_prev"] = torch.zeros_like(theta0)
    return st


class LSTMStep(NamedTuple):
    """What `ZOLSTM.differentiable_step` returns (attached to the graph where gradients were enabled)."""

    theta: Tensor  # [B, d] theta + Delta theta
    state: Dict[str, Any]  # the new per-problem entries (the networks' states, g_prev / dtheta_prev)
    estimate: GradientEstimate  # g, f0 (NaN-marked), u and the values of the step's one black-box call
    scale: Optional[Tensor]  # the QueryRNN's raw scale s [B, d] (None without the QueryRNN)


class ZOLSTM(ZOOptimizer):
    """The learned ZO optimizer (ZO-LSTM): UpdateRNN + QueryRNN (paper Sec. 3), and its ablations.

    Each step (B problems, one call of the black box, two fused LSTM launches over B*d coordinates):
    1. QueryRNN([g_{t-1}, Delta theta_{t-1}]) -> s = head + 1; the sampler normalises |s| to norm sqrt(d).
       At test time each problem uses s with probability ``query_prob`` (Bernoulli p; None: the model's
       ``meta["query_prob"]``, chosen on held-out problems when it was trained, else the paper's 0.5; drawn per problem
       and per step from the step's key) and the identity otherwise; ``query_prob=1`` is the training behaviour.
       The QueryRNN runs every step whatever the draw, as in the reference code, so its state evolves the same.
    2. u = s_hat * z and the B x (q + 1) points from ``ops.sample_queries``; the black box; g from
       ``ops.fd_gradient``.
    3. UpdateRNN(g) -> Delta theta (times ``update_scale``, the transfer factor alpha; 1 by default);
       theta <- theta + Delta theta.
    The QueryRNN's next inputs g and Delta theta are detached, as the authors' ``Variable(x.data)``.

    Ablations (flags, or the registry names): ``use_query=False`` (ZO-LSTM-no-query: standard Gaussian
    directions), ``use_update=False`` (ZO-LSTM-no-update: Delta theta = -(lr / d) g, ZO-SGD with the QueryRNN),
    ``guided=True`` (ZO-LSTM-GuidedES: UpdateRNN with Guided-ES directions instead of the QueryRNN).

    ``model``: a `LearnedZO` (random initialisation if None, with a warning: an untrained ZO-LSTM is not
    expected to descend), or ``pretrained="<name>"`` to load ``zol2l_ext/pretrained/<name>.pt``. At
    ``init_state`` the model is moved to theta's device and dtype. The step runs under ``torch.no_grad()``
    (the fused inference path) unless ``differentiable=True``: then the graph through the LSTM weights, the
    directions and the states is kept (the caller truncates it), as the meta-trainer keeps it: the estimator's
    inputs are detached from theta (see `differentiable_step`).
    """

    name = "zo-lstm"
    traits = OptimizerTraits(label="ZO-LSTM", colour="tab:red", learned=True, uses_lr=False)
    _config_keys = ZOOptimizer._config_keys + (
        "query_prob", "update_scale", "use_update", "use_query", "guided", "alpha", "differentiable")

    def __init__(
        self,
        model: Optional[LearnedZO] = None,
        q: int = 20,
        mu: float = 0.005,
        query_prob: Optional[float] = None,
        update_scale: float = 1.0,
        use_update: bool = True,
        use_query: bool = True,
        guided: bool = False,
        alpha: float = 0.5,
        lr: Rate = 4.0,
        scale_lr_by_dim: bool = True,
        differentiable: bool = False,
        pretrained: Optional[str] = None,
    ):
        if model is not None and pretrained is not None:
            raise ValueError("zo-lstm: give either model or pretrained, not both")
        if pretrained is not None:
            model = LearnedZO.pretrained(pretrained)
        if model is None:
            if use_update or use_query:
                warnings.warn(f"{self.name}: no model given, using a randomly initialised LearnedZO "
                              "(untrained: not expected to descend)", stacklevel=2)
            model = LearnedZO()
        if not isinstance(model, LearnedZO):
            raise TypeError(f"{self.name}: model must be a LearnedZO, got {type(model).__name__}")
        self.model = model
        if query_prob is None:  # the p chosen on held-out problems when the weights were trained, else the paper's
            query_prob = float(getattr(model, "meta", {}).get("query_prob", 0.5))
        self.query_prob = float(query_prob)
        self.update_scale = float(update_scale)
        self.use_update = bool(use_update)
        self.use_query = bool(use_query)
        self.guided = bool(guided)
        self.alpha = float(alpha)
        self.differentiable = bool(differentiable)
        # the estimator baseline the weights were trained with (make_optimizer(baseline=...) overrides it)
        self.baseline = str(getattr(model, "meta", {}).get("baseline", "f0"))
        super().__init__(q, mu, lr, scale_lr_by_dim)

    @classmethod
    def pretrained(cls, name: str, **kwargs) -> "ZOLSTM":
        """This optimizer with the shipped weights ``zol2l_ext/pretrained/<name>.pt`` (e.g. "mnist-attack")."""
        return cls(pretrained=name, **kwargs)

    def _validate(self):
        super()._validate()
        if not (0.0 <= self.query_prob <= 1.0):
            raise ValueError(f"{self.name}: query_prob must lie in [0, 1], got {self.query_prob}")
        if self.guided and self.use_query:
            raise ValueError(f"{self.name}: guided=True replaces the QueryRNN; set use_query=False")
        if not (0.0 < self.alpha <= 1.0):
            raise ValueError(f"{self.name}: alpha must lie in (0, 1], got {self.alpha}")

    def state_dict(self, state=None):
        sd = super().state_dict(state)
        sd["model"] = self.model.to_dict()
        return sd

    def load_state_dict(self, sd, device=None):
        state = super().load_state_dict(sd, device)
        if "model" in sd:
            loaded = LearnedZO.from_dict(sd["model"])
            p = next(self.model.parameters())
            self.model = loaded.to(device=p.device, dtype=p.dtype)
        return state

    @classmethod
    def from_state_dict(cls, sd):
        return cls(LearnedZO.from_dict(sd["model"])) if "model" in sd else cls()

    def to_device(self, device) -> None:
        if device is not None:
            self.model.to(device)

    def _match_model(self, theta: Tensor) -> None:
        p = next(self.model.parameters())
        if p.device != theta.device or p.dtype != theta.dtype:
            self.model.to(device=theta.device, dtype=theta.dtype)

    def init_state(self, theta0):
        st = super().init_state(theta0)
        self._match_model(theta0)
        st.update(lstm_state(self.model, theta0, self.use_update, self.use_query, self.guided))
        return st

    def step(self, problem, theta, state, seeds):
        _check_theta(theta, seeds)
        self._match_model(theta)
        ctx = torch.enable_grad() if self.differentiable else torch.no_grad()
        with ctx:
            out = self.differentiable_step(problem, theta, state, seeds, workspace=self.workspace)
        return out.theta, {"step": state["step"] + 1, **out.state}, out.estimate.f0

    def differentiable_step(self, problem, theta: Tensor, state: Dict[str, Any], seeds: Tensor,
                            workspace: Optional[Workspace] = None) -> LSTMStep:
        """One step under the caller's gradient mode (no ``"step"`` counter: the caller keeps it).

        Gradient flow (the meta-trainer's rule, as in Andrychowicz et al. and the reference code, which reads the
        optimizee through ``.data``): the query points are built from ``theta.detach()``, so the meta-gradient
        flows from theta_new = theta + Delta theta into the UpdateRNN, and into the QueryRNN through the
        directions u = s_hat * z (and the values, where the black box is differentiable), not through the
        second-order dependence of the estimate on theta."""
        new: Dict[str, Any] = {}
        scale = None
        point = theta.detach()
        if self.use_query:
            scale, q_new = self.model.query_step(state)
            new.update(q_new)
            use = None
            p = self.query_prob
            if math.isfinite(self.model.query_decay):  # its use fades over the run (LearnedZO.set_query_decay)
                p = p * math.exp(-state.get("step", 0) / self.model.query_decay)
            if p < 1.0:
                use = uniform01(derive(seeds, SALT_BERNOULLI)) < p
            est = gaussian_estimate(problem, point, self.q, self.mu, seeds, scale=scale.abs(), use_scale=use,
                                    workspace=workspace, baseline=self.baseline)
        elif self.guided:
            est = guided_estimate(problem, point, self.q, self.mu, seeds, state["g_prev"], state["dtheta_prev"],
                                  self.alpha, baseline=self.baseline)
        else:
            est = gaussian_estimate(problem, point, self.q, self.mu, seeds, workspace=workspace,
                                    baseline=self.baseline)
        g = est.g
        if self.use_update:
            y, u_new = self.model.update_step(g, state)
            new.update(u_new)
            delta = y if self.update_scale == 1.0 else y * self.update_scale
        else:
            delta = g * (-self.rate(state, theta.shape[1]))
        if self.use_query or self.guided:  # the QueryRNN's next inputs, detached as in the reference code
            new["g_prev"] = g.detach()
            new["dtheta_prev"] = delta.detach()
        new.update(self.row_entries(state))
        return LSTMStep(theta + delta, new, est, scale)


class ZOLSTMNoQuery(ZOLSTM):
    """ZO-LSTM-no-query: the UpdateRNN with standard Gaussian directions."""

    name = "zo-lstm-no-query"
    traits = OptimizerTraits(label="ZO-LSTM-no-query", colour="tab:brown", learned=True, uses_lr=False)

    def __init__(self, model: Optional[LearnedZO] = None, **kwargs):
        kwargs.setdefault("use_query", False)
        super().__init__(model, **kwargs)


class ZOLSTMNoUpdate(ZOLSTM):
    """ZO-LSTM-no-update: ZO-SGD (coordinate step lr / d) with the QueryRNN's directions."""

    name = "zo-lstm-no-update"
    traits = OptimizerTraits(label="ZO-LSTM-no-update", colour="tab:pink", learned=True)

    def __init__(self, model: Optional[LearnedZO] = None, **kwargs):
        kwargs.setdefault("use_update", False)
        super().__init__(model, **kwargs)


class ZOLSTMGuidedES(ZOLSTM):
    """ZO-LSTM-GuidedES: the UpdateRNN with Guided-ES directions (no QueryRNN)."""

    name = "zo-lstm-guided-es"
    traits = OptimizerTraits(label="ZO-LSTM-GuidedES", colour="tab:olive", learned=True, uses_lr=False)

    def __init__(self, model: Optional[LearnedZO] = None, **kwargs):
        kwargs.setdefault("use_query", False)
        kwargs.setdefault("guided", True)
        super().__init__(model, **kwargs)
