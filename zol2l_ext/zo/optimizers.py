"""Zeroth-order optimizers over batches of B problems (each row its own problem and optimizer state).

Common interface (`ZOOptimizer`):

* ``init_state(theta0 [B, d]) -> dict``: per-problem state. Every tensor entry has first dimension B (row b
  belongs to problem b); non-tensor entries (``"step"``, the number of steps done) are shared: the rows of a
  state are in lockstep, which the runner guarantees (a stopped problem is removed, never left behind).
* ``step(problem, theta [B, d], state, seeds int64 [B]) -> (theta_new [B, d], new_state, f0 [B])``: one step of
  the B rows given (the runner passes the active problems only: ``problem.select(active)``). ``seeds`` are the
  step's Philox keys, one per problem (`seeding.step_seeds`); every random draw of the step derives from them.
  ``f0`` is f(theta) (the value at the point the step started from; NaN where a value of that row's call was
  not finite). A step calls the black box exactly once and spends ``queries_at(step)`` queries per problem.
  The input state is not modified (a new dict is returned). The directions and query points of a step live in
  the optimizer's `Workspace` and are overwritten by its next step (so a step does not allocate them again):
  a black box that keeps the points it was given must copy them.
* ``queries_per_step`` (q + 1 for the Gaussian-estimator methods) and ``queries_at(step)`` (what step number
  ``step`` costs: ZO-SZVR-G alternates snapshot and inner steps).
* ``state_dict(state=None)`` / ``load_state_dict(sd)``: the name, the hyper-parameters (and ZO-LSTM's weights),
  and optionally a per-problem state; ``load_state_dict`` restores the hyper-parameters and returns the state.
  Everything is tensors and plain Python values, loadable with ``torch.load(weights_only=True)``.
* ``select_state(state, index)``: the rows ``index`` of a state.

Step sizes follow the reference code (nn_optimizer/basezoopt.py): the coordinate step is ``lr / d``
(``scale_lr_by_dim=True``; DESIGN.md's "ZO-SGD lr = delta / d"), for ZO-SGD, ZO-signSGD, ZO-ADAM, ZO-SZVR-G,
Guided ES and ZO-LSTM-no-update. Default ``lr`` values are the authors' MNIST-attack settings (ZO-SGD 4,
ZO-signSGD 8, ZO-ADAM 8 with beta = (0.9, 0.996)); tune them per task as DESIGN.md says.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .. import ops
from .estimator import Workspace, evaluate, gaussian_estimate, guided_estimate, mark_nonfinite, _check_theta
from .lstm_optimizer import LearnedZO
from .seeding import SALT_BERNOULLI, derive, uniform01

__all__ = [
    "ZOOptimizer",
    "ZOSGD",
    "ZOSignSGD",
    "ZOAdam",
    "ZOSZVRG",
    "GuidedES",
    "ZOLSTM",
    "ZOLSTMNoQuery",
    "ZOLSTMNoUpdate",
    "ZOLSTMGuidedES",
    "OPTIMIZERS",
    "OPTIMIZER_NAMES",
    "make_optimizer",
    "optimizer_from_state_dict",
]

StepOut = Tuple[Tensor, Dict[str, Any], Tensor]


def _clone_state(state: Dict[str, Any], device=None) -> Dict[str, Any]:
    out = {}
    for k, v in state.items():
        if isinstance(v, Tensor):
            v = v.detach().clone()
            if device is not None:
                v = v.to(device)
        out[k] = v
    return out


class ZOOptimizer:
    """Base class: hyper-parameters ``q`` (directions per step), ``mu`` (smoothing radius), ``lr``."""

    name = "zo-base"
    #: every black-box call of a step has the current iterate at points[:, 0] (the runner may read the success of
    #: theta_t from that query); a subclass that breaks this must set it to False
    row0_is_theta = True
    #: the constructor arguments saved by state_dict (subclasses extend it)
    _config_keys: Tuple[str, ...] = ("q", "mu", "lr", "scale_lr_by_dim")
    #: the per-problem state entries that init_state starts at zero, shaped like theta0
    _zero_state: Tuple[str, ...] = ()

    def __init__(self, q: int = 20, mu: float = 0.005, lr: float = 4.0, scale_lr_by_dim: bool = True):
        self.q = int(q)
        self.mu = float(mu)
        self.lr = float(lr)
        self.scale_lr_by_dim = bool(scale_lr_by_dim)
        self._validate()

    @property
    def workspace(self) -> Workspace:
        """The buffers this optimizer's steps reuse (directions, query points): see `estimator.Workspace`."""
        ws = self.__dict__.get("_workspace")
        if ws is None:
            ws = self.__dict__["_workspace"] = Workspace()
        return ws

    def _validate(self) -> None:
        if self.q < 1:
            raise ValueError(f"{self.name}: q must be >= 1, got {self.q}")
        if not (self.mu > 0 and math.isfinite(self.mu)):
            raise ValueError(f"{self.name}: mu must be > 0, got {self.mu}")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ValueError(f"{self.name}: lr must be >= 0, got {self.lr}")

    # -- costs ------------------------------------------------------------------------------------------
    @property
    def queries_per_step(self) -> int:
        """Queries per problem of an ordinary step: q + 1 (f(theta) once, f(theta + mu u_i) q times)."""
        return self.q + 1

    def queries_at(self, step: int) -> int:
        """Queries per problem spent by step number ``step`` (0-based)."""
        return self.queries_per_step

    def query_axis(self, steps: int) -> List[int]:
        """Queries per problem spent before each of steps 0..``steps`` (the x axis of a loss-vs-queries curve):
        [0, queries_at(0), queries_at(0) + queries_at(1), ...], ``steps + 1`` entries."""
        axis = [0]
        for t in range(steps):
            axis.append(axis[-1] + int(self.queries_at(t)))
        return axis

    def step_size(self, d: int) -> float:
        return self.lr / d if self.scale_lr_by_dim else self.lr

    # -- state ------------------------------------------------------------------------------------------
    def init_state(self, theta0: Tensor) -> Dict[str, Any]:
        if not isinstance(theta0, Tensor) or theta0.dim() != 2:
            raise ValueError(f"{self.name}: theta0 must be a [B, d] tensor")
        if theta0.shape[0] == 0 or theta0.shape[1] == 0:
            raise ValueError(f"{self.name}: empty batch or dimension: theta0 has shape {tuple(theta0.shape)}")
        state: Dict[str, Any] = {"step": 0}
        for key in self._zero_state:
            state[key] = torch.zeros_like(theta0)
        return state

    @staticmethod
    def select_state(state: Dict[str, Any], index: Tensor) -> Dict[str, Any]:
        """The rows ``index`` of every per-problem tensor of ``state``."""
        return {k: (v.index_select(0, index.to(v.device)) if isinstance(v, Tensor) else v) for k, v in state.items()}

    def config(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self._config_keys}

    def state_dict(self, state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        sd: Dict[str, Any] = {"name": self.name, "config": self.config()}
        if state is not None:
            sd["state"] = _clone_state(state, device="cpu")
        return sd

    def load_state_dict(self, sd: Dict[str, Any], device=None) -> Optional[Dict[str, Any]]:
        """Restore the hyper-parameters; return the per-problem state saved with them (or None)."""
        if sd.get("name") != self.name:
            raise ValueError(f"state_dict is for optimizer {sd.get('name')!r}, not {self.name!r}")
        for k, v in sd["config"].items():
            if k not in self._config_keys:
                raise ValueError(f"{self.name}: unknown hyper-parameter {k!r} in state_dict")
            setattr(self, k, v)
        self._validate()
        state = sd.get("state")
        return None if state is None else _clone_state(state, device=device)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- the step ---------------------------------------------------------------------------------------
    def step(self, problem, theta: Tensor, state: Dict[str, Any], seeds: Tensor) -> StepOut:  # pragma: no cover
        raise NotImplementedError


class ZOSGD(ZOOptimizer):
    """ZO-SGD: theta <- theta - (lr / d) g, g the Gaussian estimate (q + 1 queries per step)."""

    name = "zo-sgd"

    def step(self, problem, theta, state, seeds):
        with torch.no_grad():
            est = gaussian_estimate(problem, theta, self.q, self.mu, seeds, workspace=self.workspace)
            theta_new = theta.add(est.g, alpha=-self.step_size(theta.shape[1]))
        return theta_new, {"step": state["step"] + 1}, est.f0


class ZOSignSGD(ZOOptimizer):
    """ZO-signSGD (Liu et al. 2019): theta <- theta - (lr / d) sign(g)."""

    name = "zo-signsgd"

    def __init__(self, q: int = 20, mu: float = 0.005, lr: float = 8.0, scale_lr_by_dim: bool = True):
        super().__init__(q, mu, lr, scale_lr_by_dim)

    def step(self, problem, theta, state, seeds):
        with torch.no_grad():
            est = gaussian_estimate(problem, theta, self.q, self.mu, seeds, workspace=self.workspace)
            theta_new = theta.add(est.g.sign(), alpha=-self.step_size(theta.shape[1]))
        return theta_new, {"step": state["step"] + 1}, est.f0


class ZOAdam(ZOOptimizer):
    """ZO-ADAM (Chen et al. 2019) as the reference code: bias-corrected moments, step (lr / d) m_hat / (sqrt(v_hat) + eps)."""

    name = "zo-adam"
    _config_keys = ZOOptimizer._config_keys + ("beta1", "beta2", "eps")
    _zero_state = ("m", "v")

    def __init__(self, q: int = 20, mu: float = 0.005, lr: float = 8.0, beta1: float = 0.9, beta2: float = 0.996,
                 eps: float = 1e-8, scale_lr_by_dim: bool = True):
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        super().__init__(q, mu, lr, scale_lr_by_dim)

    def _validate(self):
        super()._validate()
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(f"zo-adam: betas must lie in [0, 1), got {(self.beta1, self.beta2)}")

    def step(self, problem, theta, state, seeds):
        with torch.no_grad():
            est = gaussian_estimate(problem, theta, self.q, self.mu, seeds, workspace=self.workspace)
            g = est.g
            t = state["step"] + 1
            m = state["m"].mul(self.beta1).add_(g, alpha=1.0 - self.beta1)
            v = state["v"].mul(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            bc1 = 1.0 - self.beta1 ** t
            bc2 = 1.0 - self.beta2 ** t
            denom = v.div(bc2).sqrt_().add_(self.eps)
            theta_new = theta.addcdiv(m, denom, value=-self.step_size(theta.shape[1]) / bc1)
        return theta_new, {"step": t, "m": m, "v": v}, est.f0


class ZOSZVRG(ZOOptimizer):
    """ZO-SZVR-G (Liu, Cheng, Hsieh and Tao 2018): stochastic ZO variance reduction with Gaussian directions.

    Epochs of ``epoch_length`` (10) steps. The first step of an epoch is a snapshot: theta~ = theta and
    g~ = the Gaussian estimate at theta~ with ``q_snapshot`` (100) directions (q' + 1 queries); since the inner
    correction vanishes at theta = theta~, that step moves along g~. Inner steps use the same q directions u_i at
    theta and at theta~ (and, for a stochastic problem, the same minibatch: one call evaluates both):

        v = g(theta; u) - g(theta~; u) + g~,   theta <- theta - (lr / d) v

    costing 2 (q + 1) queries (f(theta), f(theta + mu u_i), f(theta~), f(theta~ + mu u_i); f(theta~) is queried
    again because on a minibatch it differs from the snapshot's value). ``queries_per_step`` is the inner cost,
    ``snapshot_queries`` = q' + 1 the snapshot step's cost, ``queries_at(t)`` the cost of step t.
    The authors' repository does not contain their ZO-SZVR-G code; this follows the SZVR-G algorithm.
    """

    name = "zo-szvr-g"
    _config_keys = ZOOptimizer._config_keys + ("q_snapshot", "epoch_length")

    def __init__(self, q: int = 20, mu: float = 0.005, lr: float = 4.0, q_snapshot: int = 100,
                 epoch_length: int = 10, scale_lr_by_dim: bool = True):
        self.q_snapshot = int(q_snapshot)
        self.epoch_length = int(epoch_length)
        super().__init__(q, mu, lr, scale_lr_by_dim)

    def _validate(self):
        super()._validate()
        if self.q_snapshot < 1 or self.epoch_length < 1:
            raise ValueError(f"zo-szvr-g: q_snapshot and epoch_length must be >= 1, got "
                             f"{(self.q_snapshot, self.epoch_length)}")

    @property
    def queries_per_step(self) -> int:
        return 2 * (self.q + 1)

    @property
    def snapshot_queries(self) -> int:
        return self.q_snapshot + 1

    def queries_at(self, step: int) -> int:
        return self.snapshot_queries if step % self.epoch_length == 0 else self.queries_per_step

    def init_state(self, theta0):
        st = super().init_state(theta0)
        st["snapshot"] = theta0.detach().clone()
        st["g_snapshot"] = torch.zeros_like(theta0)
        return st

    def step(self, problem, theta, state, seeds):
        t = state["step"]
        lr = self.step_size(theta.shape[1])
        with torch.no_grad():
            if t % self.epoch_length == 0:
                est = gaussian_estimate(problem, theta, self.q_snapshot, self.mu, seeds)
                v, f0 = est.g, est.f0
                snapshot, g_snap = theta, est.g
            else:
                _check_theta(theta, seeds)
                snapshot, g_snap = state["snapshot"], state["g_snapshot"]
                u, pts = ops.sample_queries(theta, self.q, self.mu, seed=seeds)
                snap = snapshot.unsqueeze(1)
                pts = torch.cat([pts, snap, snap + self.mu * u], dim=1)  # [B, 2(q + 1), d]
                values = evaluate(problem, pts, seeds)
                q1 = self.q + 1
                # g(theta; u) - g(theta~; u) in one op: fd_gradient is linear in (f0, fq).
                diff = ops.fd_gradient(values[:, 0] - values[:, q1], values[:, 1:q1] - values[:, q1 + 1:], u, self.mu)
                v = diff + g_snap
                f0 = mark_nonfinite(values)
            theta_new = theta.add(v, alpha=-lr)
        return theta_new, {"step": t + 1, "snapshot": snapshot, "g_snapshot": g_snap}, f0


class GuidedES(ZOOptimizer):
    """Guided ES sampling (Maheswaranathan et al. 2019) with a ZO-SGD update.

    Sigma = alpha I + (1 - alpha) U U^T, U an orthonormal basis of the last gradient estimate and the last
    update (alpha = 0.5, k = 2), each direction rescaled to the norm of its isotropic draw (as the reference
    code's ``guided=True`` branch). Degenerate basis vectors are dropped (see `estimator.orthonormal_pair`), so
    the first step samples isotropically. q + 1 queries per step.
    """

    name = "guided-es"
    _config_keys = ZOOptimizer._config_keys + ("alpha",)
    _zero_state = ("g_prev", "dtheta_prev")

    def __init__(self, q: int = 20, mu: float = 0.005, lr: float = 4.0, alpha: float = 0.5,
                 scale_lr_by_dim: bool = True):
        self.alpha = float(alpha)
        super().__init__(q, mu, lr, scale_lr_by_dim)

    def _validate(self):
        super()._validate()
        if not (0.0 < self.alpha <= 1.0):
            raise ValueError(f"guided-es: alpha must lie in (0, 1], got {self.alpha}")

    def step(self, problem, theta, state, seeds):
        with torch.no_grad():
            est = guided_estimate(problem, theta, self.q, self.mu, seeds, state["g_prev"], state["dtheta_prev"],
                                  self.alpha)
            delta = est.g * (-self.step_size(theta.shape[1]))
            theta_new = theta + delta
        return theta_new, {"step": state["step"] + 1, "g_prev": est.g, "dtheta_prev": delta}, est.f0


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
    (the fused inference path) unless ``differentiable=True`` (meta-training: the graph through the LSTM
    weights, the directions and the states is kept; the caller truncates it).
    """

    name = "zo-lstm"
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
        lr: float = 4.0,
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

    def _match_model(self, theta: Tensor) -> None:
        p = next(self.model.parameters())
        if p.device != theta.device or p.dtype != theta.dtype:
            self.model.to(device=theta.device, dtype=theta.dtype)

    def init_state(self, theta0):
        st = super().init_state(theta0)
        B, d = theta0.shape
        self._match_model(theta0)
        if self.use_update:
            st.update(self.model.init_update_state(B, d, theta0.device, theta0.dtype))
        if self.use_query:
            st.update(self.model.init_query_state(B, d, theta0.device, theta0.dtype))
        if self.use_query or self.guided:
            st["g_prev"] = torch.zeros_like(theta0)
            st["dtheta_prev"] = torch.zeros_like(theta0)
        return st

    def step(self, problem, theta, state, seeds):
        _check_theta(theta, seeds)
        self._match_model(theta)
        ctx = torch.enable_grad() if self.differentiable else torch.no_grad()
        new: Dict[str, Any] = {"step": state["step"] + 1}
        with ctx:
            if self.use_query:
                s, q_new = self.model.query_step(state)
                new.update(q_new)
                scale = s.abs()
                use = None
                if self.query_prob < 1.0:
                    use = uniform01(derive(seeds, SALT_BERNOULLI)) < self.query_prob
                est = gaussian_estimate(problem, theta, self.q, self.mu, seeds, scale=scale, use_scale=use,
                                         workspace=self.workspace)
                g, f0 = est.g, est.f0
            elif self.guided:
                est = guided_estimate(problem, theta, self.q, self.mu, seeds, state["g_prev"], state["dtheta_prev"],
                                      self.alpha)
                g, f0 = est.g, est.f0
            else:
                est = gaussian_estimate(problem, theta, self.q, self.mu, seeds, workspace=self.workspace)
                g, f0 = est.g, est.f0
            if self.use_update:
                y, u_new = self.model.update_step(g, state)
                new.update(u_new)
                delta = y if self.update_scale == 1.0 else y * self.update_scale
            else:
                delta = g * (-self.step_size(theta.shape[1]))
            theta_new = theta + delta
        if self.use_query or self.guided:
            new["g_prev"] = g.detach()
            new["dtheta_prev"] = delta.detach()
        return theta_new, new, f0


class ZOLSTMNoQuery(ZOLSTM):
    """ZO-LSTM-no-query: the UpdateRNN with standard Gaussian directions."""

    name = "zo-lstm-no-query"

    def __init__(self, model: Optional[LearnedZO] = None, **kwargs):
        kwargs.setdefault("use_query", False)
        super().__init__(model, **kwargs)


class ZOLSTMNoUpdate(ZOLSTM):
    """ZO-LSTM-no-update: ZO-SGD (coordinate step lr / d) with the QueryRNN's directions."""

    name = "zo-lstm-no-update"

    def __init__(self, model: Optional[LearnedZO] = None, **kwargs):
        kwargs.setdefault("use_update", False)
        super().__init__(model, **kwargs)


class ZOLSTMGuidedES(ZOLSTM):
    """ZO-LSTM-GuidedES: the UpdateRNN with Guided-ES directions (no QueryRNN)."""

    name = "zo-lstm-guided-es"

    def __init__(self, model: Optional[LearnedZO] = None, **kwargs):
        kwargs.setdefault("use_query", False)
        kwargs.setdefault("guided", True)
        super().__init__(model, **kwargs)


OPTIMIZERS = {
    "zo-sgd": ZOSGD,
    "zo-signsgd": ZOSignSGD,
    "zo-adam": ZOAdam,
    "zo-szvr-g": ZOSZVRG,
    "guided-es": GuidedES,
    "zo-lstm": ZOLSTM,
    "zo-lstm-no-query": ZOLSTMNoQuery,
    "zo-lstm-no-update": ZOLSTMNoUpdate,
    "zo-lstm-guided-es": ZOLSTMGuidedES,
}
OPTIMIZER_NAMES = tuple(OPTIMIZERS)


def make_optimizer(name: str, **kwargs) -> ZOOptimizer:
    """An optimizer by registry name (case-insensitive; '_' and '-' are interchangeable)."""
    key = str(name).lower().replace("_", "-")
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZER_NAMES)}")
    return OPTIMIZERS[key](**kwargs)


def optimizer_from_state_dict(sd: Dict[str, Any], device=None) -> Tuple[ZOOptimizer, Optional[Dict[str, Any]]]:
    """Rebuild an optimizer from ``state_dict()``; returns (optimizer, per-problem state or None)."""
    cls = OPTIMIZERS[sd["name"]]
    if issubclass(cls, ZOLSTM):
        opt = cls(LearnedZO.from_dict(sd["model"])) if "model" in sd else cls()
    else:
        opt = cls()
    state = opt.load_state_dict(sd, device=device)
    if device is not None and isinstance(opt, ZOLSTM):
        opt.model.to(device)
    return opt, state
