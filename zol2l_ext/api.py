"""One call to attack your own classifier, in the shape of torchattacks and ART.

    from zol2l_ext import ZOAttack
    atk = ZOAttack(model, optimizer="zo-lstm", q=20, c=0.1, steps=200)
    adv, result = atk(images, labels)      # images [N, C, H, W] in [0, 1]; labels [N] (None: the model's labels)
    print(result.success_rate, result.mean_queries)

The model is a black box: any ``nn.Module`` or callable mapping [n, C, H, W] images in [0, 1] to [n, K] logits
or log-probabilities (put any normalisation inside it); it is only ever called forward, under ``no_grad``.
The attack is DESIGN.md's untargeted score-based attack (`zo.problems.AttackProblem`) run by `zo.runner.minimize`:
``batch_size`` images at a time, each with its own optimizer state, a query ``budget`` per image, a stop at the
first success (``stop_at_success``), and a progress bar on a terminal. Image i draws the same directions whatever
the batching, so ``batch_size`` changes memory and speed, not the attack (up to the rounding of the model's forward
where that depends on the batch size).

Defaults (``None``) come from the shipped task of the attack's space: "pixel" (x = clamp(x0 + delta, 0, 1)) takes
mnist-attack's tuned learning rates and learned optimizer. "tanh" (x = (tanh(w) + 1) / 2) has no shipped task since
cifar-attack moved to pixel space (docs/TRAINING.md, CIFAR-10): the baselines take MNIST's untuned tanh-space
fallback learning rates (settings.DEFAULT_LRS) and zo-lstm needs ``learned=``.
"""
from __future__ import annotations

from dataclasses import dataclass
import sys
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from . import settings as S
from . import tasks as T
from . import tune as TU
from .data import predict
from .models import check_model_outputs
from .zo.optimizers import make_optimizer, optimizer_names
from .zo.problems import SPACES, AttackProblem
from .zo.runner import minimize

__all__ = ["ZOAttack", "AttackResult", "SPACE_TASKS"]

#: the shipped task whose tuning and learned optimizer an attack in that space uses by default (None: none)
SPACE_TASKS = {"pixel": "mnist-attack", "tanh": None}
_FALLBACK_DATASET = "mnist"  # whose fallback lrs a space without a shipped task takes


@dataclass
class AttackResult:
    """What `ZOAttack` returns beside the adversarial images; tensors on the CPU, one entry per image.

    success [N] bool: the adversarial image's predicted label differs from the label. predicted [N]: that label.
    queries [N] int64: model queries spent (the success reads and the final evaluation are free, as a score-based
    black box returns the label with the scores). first_success_queries [N] int64: queries spent when the attack
    first reached a success (-1: never). l1, l2 [N]: distances between adversarial and clean images (success or
    not). loss [steps + 1, N] float64: the attack loss of each iterate (NaN after an image stopped).
    query_axis [steps + 1] int64: queries spent before each step (the x axis of a loss-vs-queries curve).
    stop_reason [N]: "success", "budget", "steps" or "failed" (non-finite model outputs).
    """

    optimizer: str
    labels: Tensor
    predicted: Tensor
    success: Tensor
    queries: Tensor
    first_success_queries: Tensor
    l1: Tensor
    l2: Tensor
    loss: Tensor
    query_axis: Tensor
    stop_reason: list

    @property
    def success_rate(self) -> float:
        return float(self.success.double().mean()) if self.success.numel() else float("nan")

    @property
    def mean_queries(self) -> float:
        """Mean queries to the first success, over the images that reached one (nan: none did)."""
        ok = self.first_success_queries >= 0
        return float(self.first_success_queries[ok].double().mean()) if ok.any() else float("nan")

    def summary(self) -> dict:
        ok = self.success
        return {"optimizer": self.optimizer, "images": int(ok.numel()), "success_rate": self.success_rate,
                "mean_queries_to_success": self.mean_queries, "mean_queries": float(self.queries.double().mean()),
                "mean_l1_success": float(self.l1[ok].mean()) if ok.any() else float("nan"),
                "mean_l2_success": float(self.l2[ok].mean()) if ok.any() else float("nan")}


def _model_device(model) -> torch.device:
    params = getattr(model, "parameters", None)
    p = next(iter(params()), None) if callable(params) else None
    return p.device if p is not None else torch.device("cpu")


def _space_dataset(space: str) -> str:
    """The dataset whose fallback lrs (and learned-optimizer candidates) an attack in ``space`` takes."""
    task = SPACE_TASKS[space]
    return _FALLBACK_DATASET if task is None else T.TASKS[task].dataset


def _load_learned(learned, space: str):
    """The LearnedZO of ``learned`` (an object, a shipped name or a .pt path; None: the space's task's)."""
    task = SPACE_TASKS[space]
    if task is None and learned is None:
        raise ValueError(f"ZOAttack: no learned optimizer is shipped for {space} space (the shipped ones were trained "
                         f"in pixel space); pass learned= (a LearnedZO or a .pt trained with `zol2l train --space "
                         f"{space}`) or use space='pixel'")
    return S.load_learned(task if learned is None else learned, _space_dataset(space))[0]


def _default_kwargs(name: str, space: str) -> dict:
    """The shipped tuning of the space's task (lr, ZO-ADAM betas), else the fallback lr: `settings.lr_for`."""
    task = SPACE_TASKS[space]
    table = None if task is None else TU.resolve_tuning(task, space=space)[0]
    lr, extra, _ = S.lr_for(name, _space_dataset(space), space, table)
    return dict(extra) if lr is None else {"lr": lr, **extra}


class ZOAttack:
    """Untargeted zeroth-order black-box attack of a classifier (see the module docstring).

    ``optimizer``: a name of `zo.OPTIMIZER_NAMES` ("zo-lstm", "zo-sgd", "zo-signsgd", "zo-adam", ...) or a
    ready optimizer object. ``q`` directions per step (one step costs q + 1 queries), ``c`` the weight of the
    distortion penalty (``norm`` "l1" or "l2"), ``steps`` iterations, ``budget`` queries per image (None: no cap),
    ``lr`` / ``mu`` / ``learned`` (a `LearnedZO`, a shipped name or a .pt path for the zo-lstm family) override the
    space's defaults. ``output``: "logits", "logprob" or None (detected from a first call). ``device``: where the
    attack runs (None: the model's). ``progress``: None shows a bar only when stderr is a terminal.
    """

    def __init__(self, model: Callable[[Tensor], Tensor], optimizer: Union[str, Any] = "zo-lstm", *, q: int = 20,
                 c: float = 0.1, steps: int = 200, budget: Optional[int] = None, lr: Optional[float] = None,
                 mu: Optional[float] = None, space: str = "pixel", norm: str = "l1", output: Optional[str] = None,
                 learned=None, batch_size: Optional[int] = None, stop_at_success: bool = True, seed: int = 0,
                 device: Union[str, torch.device, None] = None, progress: Optional[bool] = None,
                 chunk_size: Optional[int] = None, optimizer_kwargs: Optional[dict] = None):
        if not callable(model):
            raise TypeError(f"ZOAttack: model must be an nn.Module or a callable, got {type(model).__name__}")
        if space not in SPACES:
            raise ValueError(f"ZOAttack: space must be one of {', '.join(SPACES)}, got {space!r}")
        mu = T.SPACE_MU[space] if mu is None else float(mu)
        for what, v, low in (("q", q, 1), ("steps", steps, 1), ("batch_size", batch_size, 1),
                             ("chunk_size", chunk_size, 1)):
            if v is not None and (int(v) != v or v < low):
                raise ValueError(f"ZOAttack: {what} must be an integer >= {low}, got {v}")
        if not mu > 0:
            raise ValueError(f"ZOAttack: mu must be > 0, got {mu}")
        if not c >= 0:
            raise ValueError(f"ZOAttack: c must be >= 0, got {c}")
        if budget is not None and budget < q + 1:
            raise ValueError(f"ZOAttack: budget {budget} is below one step's q + 1 = {q + 1} queries")
        if output not in (None, "logits", "logprob"):
            raise ValueError(f"ZOAttack: output must be 'logits', 'logprob' or None (detect), got {output!r}")
        self.model, self.q, self.c, self.steps, self.budget = model, int(q), float(c), int(steps), budget
        self.mu, self.space, self.norm, self.output = mu, space, norm, output
        self.batch_size, self.stop_at_success, self.seed = batch_size, bool(stop_at_success), int(seed)
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.chunk_size = chunk_size or (16384 if self.device.type == "cuda" else 4096)
        if isinstance(optimizer, str):
            name = optimizer.lower().replace("_", "-")
            if name not in optimizer_names():
                raise ValueError(f"ZOAttack: unknown optimizer {optimizer!r}; known: {', '.join(optimizer_names())}")
            kw = {"q": self.q, "mu": mu, **_default_kwargs(name, space), **(optimizer_kwargs or {})}
            if lr is not None:
                kw["lr"] = float(lr)
            if S.is_learned(name):
                kw["model"] = _load_learned(learned, space)
            self.optimizer_name, self.optimizer = name, make_optimizer(name, **kw)
        elif callable(getattr(optimizer, "step", None)) and callable(getattr(optimizer, "init_state", None)):
            self.optimizer_name, self.optimizer = getattr(optimizer, "name", type(optimizer).__name__), optimizer
        else:
            raise TypeError(f"ZOAttack: optimizer must be a name ({', '.join(optimizer_names())}) or a zo optimizer "
                            f"object, got {type(optimizer).__name__}")

    def __repr__(self) -> str:
        return (f"ZOAttack({self.optimizer_name}, q={self.q}, c={self.c}, steps={self.steps}, budget={self.budget}, "
                f"space={self.space}, device={self.device})")

    def _checked(self, images, labels) -> tuple[Tensor, Optional[Tensor]]:
        if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
            got = f"{tuple(images.shape)} {images.dtype}" if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"ZOAttack: images must be a float tensor [N, C, H, W] in [0, 1], got {got}")
        if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            raise ValueError(f"ZOAttack: images must lie in [0, 1] (normalise inside the model), got values in "
                             f"[{float(images.min()):.4g}, {float(images.max()):.4g}]")
        if labels is None:
            return images, None
        labels = torch.as_tensor(labels)
        if labels.shape != (images.shape[0],) or labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"ZOAttack: labels must be integer class indices of shape [{images.shape[0]}], got "
                             f"{tuple(labels.shape)} {labels.dtype}")
        return images, labels.to(torch.int64)

    def __call__(self, images: Tensor, labels: Optional[Tensor] = None) -> tuple[Tensor, AttackResult]:
        """(adversarial images [N, C, H, W] on the images' device and dtype, `AttackResult`)."""
        images, labels = self._checked(images, labels)
        was_training = getattr(self.model, "training", None)
        if was_training:
            self.model.eval()  # a black box answers deterministically: no dropout, frozen batch-norm statistics
        try:
            return self._attack(images, labels)
        finally:
            if was_training:
                self.model.train()

    forward = __call__  # the torchattacks spelling

    def generate(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The ART spelling: the adversarial images only."""
        return self(x, y)[0]

    def _attack(self, images: Tensor, labels: Optional[Tensor]) -> tuple[Tensor, AttackResult]:
        dev, N = self.device, images.shape[0]
        if N == 0:
            raise ValueError("ZOAttack: no images given (N = 0)")
        x = images.detach().to(dev)
        output = check_model_outputs(self.model, x, num_classes=None, declared=self.output)
        with torch.no_grad():
            K = int(self.model(x[:1]).shape[1])
            if labels is None:
                labels = predict(self.model, x, device=dev)
        if int(labels.min()) < 0 or int(labels.max()) >= K:
            raise ValueError(f"ZOAttack: labels must lie in [0, {K}) for a model with {K} classes")
        step = self.batch_size or N
        parts = [self._attack_batch(x[s:s + step], labels[s:s + step].to(dev), s, output, N)
                 for s in range(0, N, step)]
        cat = {k: torch.cat([p[k] for p in parts], dim=1 if k == "loss" else 0) for k in parts[0] if k != "reason"}
        result = AttackResult(self.optimizer_name, labels.cpu(), cat["pred"], cat["pred"] != labels.cpu(),
                              cat["queries"], cat["first_q"], cat["l1"], cat["l2"], cat["loss"],
                              torch.tensor(self.optimizer.query_axis(self.steps), dtype=torch.int64), [r for p in parts for r in p["reason"]])
        return cat["adv"].to(images.device, images.dtype), result

    def _attack_batch(self, x: Tensor, y: Tensor, start: int, output: str, total: int) -> dict:
        problem = AttackProblem(self.model, x, y, c=self.c, norm=self.norm, output=output, space=self.space,
                                chunk_size=self.chunk_size)
        desc = self.optimizer_name if x.shape[0] == total else f"{self.optimizer_name} [{start}:{start + len(y)}]"
        # problem_ids = the images' global positions: image i draws the same directions in any batching
        res = minimize(self.optimizer, problem, self.steps, seed=self.seed, budget=self.budget,
                       stop_at_success=self.stop_at_success, progress=self.progress, desc=desc,
                       problem_ids=torch.arange(start, start + x.shape[0]))
        theta = res.theta.to(x.device)
        l1, l2 = problem.distortion(theta)
        adv = problem.adversarial_images(theta)
        return {"adv": adv.cpu(), "pred": problem.predict(theta).cpu(), "queries": res.queries.cpu(),
                "first_q": res.first_success_queries.cpu(), "l1": l1.cpu(), "l2": l2.cpu(),
                "loss": res.loss.cpu(), "reason": res.stop_reason}
