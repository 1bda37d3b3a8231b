"""Black-box problems: B problems of dimension d evaluated together, one call per optimizer step.

The protocol (`BlackBoxProblem`):

* ``dim`` (d) and ``batch`` (B): the variables of all problems form one flat tensor ``theta [B, d]``.
* ``problem(points) -> values``: ``points [B, Q, d] -> values [B, Q]``; row b of ``points`` belongs to problem
  b. Optimizers put the current iterate at ``points[:, 0]`` and call the black box exactly once per step.
  Problems whose value depends on a random sample (a minibatch) set ``stochastic = True`` and accept
  ``problem(points, seed=keys)`` with ``keys`` int64 ``[B]``: all Q points of a row are evaluated on the same
  sample, chosen by that row's key (so the runner's counter-based keys make the sample reproducible).
* ``initial_point() -> [B, d]``.
* ``select(index) -> BlackBoxProblem``: the sub-problem made of rows ``index`` (a LongTensor of row numbers of
  *this* problem), in that order. The runner calls it to query only the active problems; we chose ``select``
  rather than an index argument of ``__call__`` so that a black box never sees rows it is not asked about.
* optional ``success(theta [B, d]) -> bool [B]`` (a method; ``None`` where a problem has no notion of success).
* optional ``reports_row0_success = True`` with ``last_row0_success`` (bool [B]) set by every ``__call__``: the
  success of ``points[:, 0]`` read from the same forward. The runner then takes the success of theta_t from step
  t's own query instead of a separate ``success()`` forward (unless ``stop_at_success``, which must know it
  before the step). `AttackProblem` does this.

Non-finite values are not rejected here: the optimizers mark a row whose values are not all finite (its ``f0``
becomes NaN) and the runner either raises `NonFiniteValueError` or stops that problem as failed (see
``runner.minimize(nan_policy=...)``). Shapes are validated by the optimizers (`estimator.evaluate`).
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .estimator import _check_batch
from .seeding import splitmix64

__all__ = [
    "SPACES",
    "BlackBoxProblem",
    "AttackProblem",
    "BinaryClassificationProblem",
    "CallableProblem",
    "has_success",
]


# Parameterisations of an attack's variable (see AttackProblem).
SPACES = ("tanh", "pixel")


def _as_index(index, batch: int, device) -> Tensor:
    idx = torch.as_tensor(index, dtype=torch.int64)
    if idx.dim() != 1:
        raise ValueError(f"select: index must be 1-D, got shape {tuple(idx.shape)}")
    if idx.numel() == 0:
        raise ValueError("select: empty index (a problem needs at least one row)")
    if idx.device.type == "cpu" and idx.numel() > 0:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= batch:
            raise IndexError(f"select: row indices must lie in [0, {batch}), got [{lo}, {hi}]")
    return idx.to(device)


class BlackBoxProblem:
    """Base class of the black-box problems (see the module docstring for the contract)."""

    dim: int
    batch: int
    #: True when values depend on a random sample chosen by ``seed=`` (e.g. a minibatch).
    stochastic: bool = False
    #: ``success(theta) -> bool [B]`` in subclasses that define it.
    success = None
    #: True when ``__call__`` sets ``last_row0_success`` (bool [B]): the success of ``points[:, 0]``.
    reports_row0_success: bool = False
    last_row0_success: Optional[Tensor] = None

    def __call__(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def initial_point(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, index) -> "BlackBoxProblem":  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:
        return self.batch

    def _take_rows(self, index, *row_attrs: str) -> Tuple["BlackBoxProblem", Tensor]:
        """(sub, idx): a shallow copy made of rows ``index`` of this problem, and those rows as a LongTensor.

        The tensors named ``row_attrs`` (first dimension B; None stays None) are indexed on the device of the
        first one; every other attribute is shared with this problem (the caller resets what describes its last call).
        """
        idx = _as_index(index, self.batch, getattr(self, row_attrs[0]).device)
        sub = copy.copy(self)
        for name in row_attrs:
            rows = getattr(self, name)
            setattr(sub, name, None if rows is None else rows.index_select(0, idx))
        sub.batch = int(idx.numel())
        return sub, idx

    def _check_points(self, points: Tensor) -> Tuple[int, int]:
        if not isinstance(points, Tensor):
            raise TypeError(f"{type(self).__name__}: points must be a Tensor, got {type(points).__name__}")
        if points.dim() != 3 or points.shape[0] != self.batch or points.shape[2] != self.dim:
            raise ValueError(
                f"{type(self).__name__}: points must have shape [B={self.batch}, Q, d={self.dim}], "
                f"got {tuple(points.shape)}"
            )
        return points.shape[0], points.shape[1]


def has_success(problem) -> bool:
    """Whether the problem defines ``success(theta)``."""
    return callable(getattr(problem, "success", None))


# ----------------------------------------------------------------------------------------------------------
# Black-box adversarial attack (paper App. A.1)
# ----------------------------------------------------------------------------------------------------------
class AttackProblem(BlackBoxProblem):
    """Score-based black-box attack of B images at once (untargeted by default).

    Variable and image, by ``space``:

    * ``"tanh"`` (the paper's App. A.1): ``x = (tanh(w) + 1) / 2``. Without ``upsample_from`` the variable is
      ``w`` itself, flattened (d = C*H*W), and ``initial_point()`` is ``w0 = atanh((2 x0 - 1) (1 - tanh_eps))``,
      which represents the clean image up to ~tanh_eps/2 per pixel. Saturated pixels sit at |w| ~ 7 where
      dx/dw ~ 1e-6, so steps must be ~100x larger than in pixel space.
    * ``"pixel"`` (the reference code's MnistAttack): the variable is the perturbation ``delta`` and
      ``x = clamp(x0 + delta, 0, 1)``; ``initial_point()`` is zero (the reference code starts from 1e-4 Gaussian
      noise; zero keeps every optimizer's start identical and the loss at the clean image's).

    With ``upsample_from=(h, w)`` (App. C.1, dimension study) the variable is a low-resolution offset
    ``delta`` (d = C*h*w), upsampled bilinearly and added to ``w0`` (tanh) or to ``x0`` before clamping (pixel);
    ``initial_point()`` is zero.

    Loss per query (``F`` = log-probabilities; with ``output="logits"`` we apply log_softmax first):
    untargeted ``max{F_t0(x) - max_{j != t0} F_j(x), -confidence} + c * D(x, x0)``,
    targeted ``max{max_{j != t} F_j(x) - F_t(x), -confidence} + c * D(x, x0)``,
    with ``D = ||x - x0||_1`` (``norm="l1"``) or the squared Euclidean distance ``||x - x0||_2^2``
    (``norm="l2"``, as the reference code's "l2" loss and Carlini-Wagner). ``confidence`` is the reference code's
    ``gap`` (0 by default, which is DESIGN.md's loss).

    The model is a black box: it only ever sees a forward pass, under ``torch.no_grad()``, of all query images
    of a call at once (``[B*Q, C, H, W]``; split into chunks of ``chunk_size`` images if given). Its output must
    be ``[B*Q, num_classes]``; anything else raises ValueError. ``input_transform`` (optional) is applied to the
    [0, 1] images before the model (e.g. a normalisation), as part of the black box. The model's train/eval
    mode is left as is (call ``model.eval()`` yourself; a model in training mode triggers a warning).

    ``success(theta)`` = the predicted label differs from t0 (targeted: equals the target): the label read that
    a score-based black box returns with f(theta), not counted as a query by the runner. Every call also sets
    ``last_row0_success`` (the success of ``points[:, 0]``, from the same forward), which the runner uses instead
    of a separate ``success()`` forward when it can. ``distortion(theta)`` = (L1, L2) distances between x and x0 (L2 not squared).
    """

    reports_row0_success = True

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        images: Tensor,
        labels: Tensor,
        c: float = 0.1,
        norm: str = "l1",
        targeted: bool = False,
        target_labels: Optional[Tensor] = None,
        output: str = "logprob",
        upsample_from: Optional[Tuple[int, int]] = None,
        input_transform: Optional[Callable[[Tensor], Tensor]] = None,
        chunk_size: Optional[int] = None,
        confidence: float = 0.0,
        tanh_eps: float = 1e-6,
        space: str = "tanh",
    ):
        _check_batch(images, "images", ("B", "C", "H", "W"), owner="AttackProblem")
        if space not in SPACES:
            raise ValueError(f"AttackProblem: space must be one of {SPACES}, got {space!r}")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"AttackProblem: images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        B = images.shape[0]
        labels = torch.as_tensor(labels, device=images.device).to(torch.int64)
        if labels.shape != (B,):
            raise ValueError(f"AttackProblem: labels must have shape [{B}], got {tuple(labels.shape)}")
        if norm not in ("l1", "l2"):
            raise ValueError(f"AttackProblem: norm must be 'l1' or 'l2', got {norm!r}")
        if output not in ("logprob", "logits"):
            raise ValueError(f"AttackProblem: output must be 'logprob' or 'logits', got {output!r}")
        if targeted:
            if target_labels is None:
                raise ValueError("AttackProblem: targeted=True needs target_labels [B]")
            target_labels = torch.as_tensor(target_labels, device=images.device).to(torch.int64)
            if target_labels.shape != (B,):
                raise ValueError(f"AttackProblem: target_labels must have shape [{B}], got "
                                 f"{tuple(target_labels.shape)}")
        elif target_labels is not None:
            raise ValueError("AttackProblem: target_labels given but targeted=False")
        if not (c >= 0.0):
            raise ValueError(f"AttackProblem: c must be >= 0, got {c}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"AttackProblem: chunk_size must be >= 1, got {chunk_size}")

        self.model = model
        self.images = images
        self.labels = labels
        self.target_labels = target_labels
        self.targeted = bool(targeted)
        self.c = float(c)
        self.norm = norm
        self.output = output
        self.input_transform = input_transform
        self.chunk_size = chunk_size
        self.confidence = float(confidence)
        self.tanh_eps = float(tanh_eps)
        self.space = space
        self.image_shape = tuple(images.shape[1:])
        C, H, W = self.image_shape
        self.w0 = torch.atanh((2.0 * images - 1.0) * (1.0 - self.tanh_eps))
        if upsample_from is not None:
            h, w = (int(upsample_from[0]), int(upsample_from[1]))
            if h < 1 or w < 1 or h > H or w > W:
                raise ValueError(f"AttackProblem: upsample_from must lie in [1, {H}] x [1, {W}], got {(h, w)}")
            self.upsample_from = (h, w)
            self.dim = C * h * w
        else:
            self.upsample_from = None
            self.dim = C * H * W
        self.batch = B
        self._warned_training = False
        self._checked_classes = None
        self.last_row0_success = None

    # -- variable <-> image ------------------------------------------------------------------------------
    def _offset(self, theta: Tensor) -> Tensor:
        """The variables [B, Q, d] as full-resolution offsets [B, Q, C, H, W] (upsampled where d is low-res)."""
        B, Q, _ = theta.shape
        C, H, W = self.image_shape
        if self.upsample_from is None:
            return theta.reshape(B, Q, C, H, W)
        h, w = self.upsample_from
        low = theta.reshape(B * Q, C, h, w)
        return F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False).reshape(B, Q, C, H, W)

    def _x(self, theta: Tensor, inplace: bool = False) -> Tensor:
        off = self._offset(theta)
        if self.space == "pixel":
            x = off + self.images.to(theta.dtype).unsqueeze(1)
            return x.clamp_(0.0, 1.0) if inplace else x.clamp(0.0, 1.0)
        w = off if self.upsample_from is None else off + self.w0.to(theta.dtype).unsqueeze(1)
        if inplace:  # no autograd: finish in tanh's own output rather than two more full-size temporaries
            return torch.tanh(w).add_(1.0).mul_(0.5)
        return (torch.tanh(w) + 1.0) * 0.5

    def adversarial_images(self, theta: Tensor) -> Tensor:
        """The images x [B, C, H, W] that the variables theta [B, d] represent."""
        theta = self._check_theta(theta)
        with torch.no_grad():
            return self._x(theta.unsqueeze(1)).squeeze(1)

    def distortion(self, theta: Tensor) -> Tuple[Tensor, Tensor]:
        """(L1 [B], L2 [B]) distances between the adversarial and the clean images (L2 is not squared)."""
        x = self.adversarial_images(theta)
        diff = (x - self.images.to(x.dtype)).flatten(1)
        return diff.abs().sum(dim=1), diff.norm(dim=1)

    # -- the black box -----------------------------------------------------------------------------------
    def _scores(self, x: Tensor, no_grad: bool = True) -> Tensor:
        """Black-box forward of images x [N, C, H, W] -> log-probabilities [N, K] (float)."""
        if getattr(self.model, "training", False) and not self._warned_training:
            warnings.warn("AttackProblem: the target model is in training mode; call model.eval()", stacklevel=3)
            self._warned_training = True
        N = x.shape[0]
        x = x.to(self.images.dtype)
        with torch.no_grad() if no_grad else torch.enable_grad():
            if self.chunk_size is None or N <= self.chunk_size:
                out = self._forward(x)
            else:
                out = torch.cat([self._forward(x[i:i + self.chunk_size]) for i in range(0, N, self.chunk_size)])
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != N or out.shape[1] < 2:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"AttackProblem: the model must map [N, C, H, W] images to [N, num_classes] scores "
                f"(N = {N}, num_classes >= 2), got {got}"
            )
        if self.output == "logits":
            out = torch.log_softmax(out, dim=1)
        return out

    def _forward(self, x: Tensor) -> Tensor:
        if self.input_transform is not None:
            x = self.input_transform(x)
        out = self.model(x)
        if isinstance(out, Tensor) and out.dim() == 2 and out.shape[0] != x.shape[0]:
            raise ValueError(f"AttackProblem: the model returned {out.shape[0]} rows for {x.shape[0]} images")
        return out

    def _class(self) -> Tensor:
        return self.target_labels if self.targeted else self.labels

    def _check_labels(self, K: int) -> None:
        if self._checked_classes == K:
            return
        lab = self._class()
        if int(lab.max()) >= K or int(lab.min()) < 0:  # once per problem (host sync)
            raise ValueError(f"AttackProblem: labels must lie in [0, {K}) for a model with {K} classes")
        self._checked_classes = K

    def __call__(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        self._check_points(points)
        with torch.no_grad():
            return self._loss(points, no_grad=True)

    def _loss(self, points: Tensor, no_grad: bool) -> Tensor:
        B, Q = points.shape[:2]
        x = self._x(points, inplace=no_grad)  # [B, Q, C, H, W]
        logp = self._scores(x.reshape(B * Q, *self.image_shape), no_grad=no_grad)
        K = logp.shape[1]
        self._check_labels(K)
        logp = logp.reshape(B, Q, K)
        cls = self._class().view(B, 1, 1).expand(B, Q, 1)
        f_cls = logp.gather(2, cls).squeeze(2)
        f_other = logp.scatter(2, cls, float("-inf")).amax(dim=2)
        pred0 = logp[:, 0].detach().argmax(dim=1)
        self.last_row0_success = pred0 == self.target_labels if self.targeted else pred0 != self.labels
        margin = (f_other - f_cls) if self.targeted else (f_cls - f_other)
        hinge = margin.clamp_min(-self.confidence)
        clean = self.images.to(x.dtype).unsqueeze(1)
        # Without autograd the query images are dead after the forward: the distance reuses their memory.
        diff = x.sub_(clean) if no_grad else x - clean
        if self.norm == "l1":
            dist = (diff.abs_() if no_grad else diff.abs()).flatten(2).sum(dim=2)
        else:
            dist = (diff.square_() if no_grad else diff.square()).flatten(2).sum(dim=2)
        return hinge.to(dist.dtype) + self.c * dist

    def differentiable_loss(self, theta: Tensor) -> Tensor:
        """f(theta) [B] with autograd through the model: for first-order meta-training only, never at attack time."""
        theta = self._check_theta(theta)
        return self._loss(theta.unsqueeze(1), no_grad=False).squeeze(1)

    def differentiable_values(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        """Like ``problem(points)`` [B, Q] but with autograd through the model (first-order meta-training only)."""
        self._check_points(points)
        return self._loss(points, no_grad=False)

    def success(self, theta: Tensor) -> Tensor:
        """bool [B]: the model's label of x(theta) differs from t0 (targeted: equals the target)."""
        theta = self._check_theta(theta)
        with torch.no_grad():
            logp = self._scores(self._x(theta.unsqueeze(1)).squeeze(1))
            pred = logp.argmax(dim=1)
        return pred == self.target_labels if self.targeted else pred != self.labels

    def predict(self, theta: Tensor) -> Tensor:
        """The model's labels [B] of the images that theta represents."""
        theta = self._check_theta(theta)
        with torch.no_grad():
            return self._scores(self._x(theta.unsqueeze(1)).squeeze(1)).argmax(dim=1)

    def _check_theta(self, theta: Tensor) -> Tensor:
        if not isinstance(theta, Tensor) or theta.shape != (self.batch, self.dim):
            got = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
            raise ValueError(f"AttackProblem: theta must have shape [{self.batch}, {self.dim}], got {got}")
        return theta

    def initial_point(self) -> Tensor:
        if self.upsample_from is None and self.space == "tanh":
            return self.w0.reshape(self.batch, self.dim).clone()
        return self.w0.new_zeros((self.batch, self.dim))

    def select(self, index) -> "AttackProblem":
        sub, _ = self._take_rows(index, "images", "labels", "target_labels", "w0")
        sub.last_row0_success = None
        return sub


# ----------------------------------------------------------------------------------------------------------
# Synthetic binary classification (paper Sec. 4.2)
# ----------------------------------------------------------------------------------------------------------
class BinaryClassificationProblem(BlackBoxProblem):
    """B synthetic binary-classification datasets, one problem each (paper Sec. 4.2).

    Dataset b is generated on the CPU in float64 from ``torch.Generator().manual_seed(seeds[b])`` (so it is the
    same on every device): theta* ~ N(0, I_d), x_i ~ N(0, I_d) (i < n), y_i = 1[theta*^T x_i > 0].
    f(theta) = mean over a minibatch of b samples of (y_i - sigmoid(theta^T x_i))^2.

    Minibatches: the problem is ``stochastic``; ``problem(points, seed=keys)`` evaluates all Q points of row r
    on one minibatch of ``minibatch`` distinct samples chosen by ``keys[r]`` (the b smallest of n counter-based
    hashes), so a step's q + 1 queries share the minibatch and the runner's keys make it reproducible. Without
    ``seed`` a minibatch is drawn from the problem's own torch.Generator (not reproducible across ``select``).
    ``minibatch=None`` (or >= n) uses all n samples. ``full_loss(theta)`` is the loss on all n samples.

    Initial point: zeros (``init="zeros"``, f = 0.25) or N(0, init_std^2 I) drawn from the dataset's generator
    (``init="normal"``); the paper does not state it and the authors' code for this task is not public.
    ``seeds``: an int s (datasets s, s + 1, ..., s + B - 1) or a sequence of B ints (e.g. 90 train / 10 test).
    """

    stochastic = True

    def __init__(
        self,
        num_datasets: int = 1,
        dim: int = 100,
        n: int = 2000,
        minibatch: Optional[int] = 64,
        seeds: Union[int, Sequence[int]] = 0,
        init: str = "zeros",
        init_std: float = 1.0,
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        if isinstance(seeds, int):
            if num_datasets < 1:
                raise ValueError(f"BinaryClassificationProblem: num_datasets must be >= 1, got {num_datasets}")
            seeds = [seeds + i for i in range(num_datasets)]
        else:
            seeds = [int(s) for s in seeds]
            if len(seeds) == 0:
                raise ValueError("BinaryClassificationProblem: empty batch (no dataset seeds)")
        if dim < 1 or n < 1:
            raise ValueError(f"BinaryClassificationProblem: dim and n must be >= 1, got {dim}, {n}")
        if init not in ("zeros", "normal"):
            raise ValueError(f"BinaryClassificationProblem: init must be 'zeros' or 'normal', got {init!r}")
        self.seeds = seeds
        self.batch = len(seeds)
        self.dim = int(dim)
        self.n = int(n)
        self.minibatch = None if (minibatch is None or minibatch >= n) else int(minibatch)
        xs, ys, stars, inits = [], [], [], []
        for s in seeds:  # construction only: one generator per dataset
            g = torch.Generator().manual_seed(s)
            star = torch.randn(self.dim, generator=g, dtype=torch.float64)
            X = torch.randn(self.n, self.dim, generator=g, dtype=torch.float64)
            y = (X @ star > 0).to(torch.float64)
            init0 = torch.randn(self.dim, generator=g, dtype=torch.float64) * init_std
            xs.append(X)
            ys.append(y)
            stars.append(star)
            inits.append(init0 if init == "normal" else torch.zeros(self.dim, dtype=torch.float64))
        self.X = torch.stack(xs).to(device=device, dtype=dtype)  # [B, n, d]
        self.y = torch.stack(ys).to(device=device, dtype=dtype)  # [B, n]
        self.theta_star = torch.stack(stars).to(device=device, dtype=dtype)  # [B, d]
        self._init = torch.stack(inits).to(device=device, dtype=dtype)
        self._gen = None

    def minibatch_indices(self, seed: Tensor) -> Tensor:
        """Indices [B, b] of the minibatch chosen by keys [B]: the b smallest of n hashes (no repetition)."""
        ar = torch.arange(self.n, device=seed.device, dtype=torch.int64)
        keys = splitmix64(seed.to(torch.int64).unsqueeze(1) * self.n + ar)
        return keys.topk(self.minibatch, dim=1, largest=False, sorted=False).indices

    @staticmethod
    def _loss(theta: Tensor, X: Tensor, y: Tensor) -> Tensor:
        """theta [B, Q, d], X [B, m, d], y [B, m] -> [B, Q]."""
        logits = torch.bmm(theta, X.transpose(1, 2).to(theta.dtype))
        return (y.to(theta.dtype).unsqueeze(1) - torch.sigmoid(logits)).square().mean(dim=2)

    def __call__(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        B, Q = self._check_points(points)
        if self.minibatch is None:
            return self._loss(points, self.X, self.y)
        if seed is None:
            if self._gen is None:
                self._gen = torch.Generator(device=self.X.device)
                self._gen.manual_seed(self.seeds[0])
            seed = torch.randint(0, 2**62, (B,), generator=self._gen, device=self.X.device)
        if seed.shape != (B,):
            raise ValueError(f"BinaryClassificationProblem: seed must have shape [{B}], got {tuple(seed.shape)}")
        idx = self.minibatch_indices(seed.to(self.X.device))  # [B, b]
        Xb = self.X.gather(1, idx.unsqueeze(2).expand(B, self.minibatch, self.dim))
        yb = self.y.gather(1, idx)
        return self._loss(points, Xb, yb)

    def differentiable_values(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        """``problem(points, seed)`` with autograd kept (it is plain torch): first-order meta-training."""
        with torch.enable_grad():
            return self(points, seed)

    def full_loss(self, theta: Tensor) -> Tensor:
        """Loss [B] of theta [B, d] on all n samples of each dataset."""
        if theta.shape != (self.batch, self.dim):
            raise ValueError(f"full_loss: theta must have shape [{self.batch}, {self.dim}], got {tuple(theta.shape)}")
        return self._loss(theta.unsqueeze(1), self.X, self.y).squeeze(1)

    def accuracy(self, theta: Tensor) -> Tensor:
        """Training accuracy [B] of the linear classifier sign(theta^T x)."""
        pred = (torch.bmm(self.X, theta.to(self.X.dtype).unsqueeze(2)).squeeze(2) > 0).to(self.y.dtype)
        return (pred == self.y).to(theta.dtype).mean(dim=1)

    def initial_point(self) -> Tensor:
        return self._init.clone()

    def select(self, index) -> "BinaryClassificationProblem":
        sub, idx = self._take_rows(index, "X", "y", "theta_star", "_init")
        sub.seeds = [self.seeds[i] for i in idx.tolist()]
        sub._gen = None
        return sub


# ----------------------------------------------------------------------------------------------------------
# Any user function
# ----------------------------------------------------------------------------------------------------------
class CallableProblem(BlackBoxProblem):
    """Wraps a user function ``fn(points [B, Q, d]) -> values [B, Q]``.

    ``per_row=False`` (default): every row is the same function, so a sub-problem simply passes fewer rows.
    ``per_row=True``: rows are different problems; ``fn(points, index)`` receives the LongTensor of the original
    row numbers of the rows it is given. ``x0``: the initial point, [B, d] or [d] (broadcast), zeros if None.
    ``success``: optional ``success(theta [B, d]) -> bool [B]`` (with ``per_row=True``: ``success(theta, index)``).
    ``stochastic=True`` passes the runner's per-row keys on: ``fn(points, seed=keys)`` (and ``index`` if per_row).
    """

    def __init__(
        self,
        fn: Callable,
        dim: int,
        batch: int,
        x0: Optional[Tensor] = None,
        per_row: bool = False,
        success: Optional[Callable] = None,
        stochastic: bool = False,
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        if not callable(fn):
            raise TypeError("CallableProblem: fn must be callable")
        if int(batch) < 1:
            raise ValueError(f"CallableProblem: empty batch (batch must be >= 1, got {batch})")
        if int(dim) < 1:
            raise ValueError(f"CallableProblem: dim must be >= 1, got {dim}")
        self.fn = fn
        self.dim = int(dim)
        self.batch = int(batch)
        self.per_row = bool(per_row)
        self.stochastic = bool(stochastic)
        if x0 is None:
            x0 = torch.zeros(self.batch, self.dim, device=device, dtype=dtype)
        else:
            x0 = torch.as_tensor(x0)
            if x0.dim() == 1:
                x0 = x0.unsqueeze(0).expand(self.batch, -1)
            if x0.shape != (self.batch, self.dim):
                raise ValueError(f"CallableProblem: x0 must have shape [{self.batch}, {self.dim}] or [{self.dim}], "
                                 f"got {tuple(x0.shape)}")
            x0 = x0.to(device=device if device is not None else x0.device)
        self.x0 = x0.contiguous()
        self.index = torch.arange(self.batch, device=self.x0.device)
        if success is not None:
            self._success_fn = success
        else:
            self._success_fn = None
            self.success = None  # instance attribute hides the method: no notion of success

    def __call__(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        self._check_points(points)
        args = (points, self.index) if self.per_row else (points,)
        if self.stochastic and seed is not None:
            return self.fn(*args, seed=seed)
        return self.fn(*args)

    def differentiable_values(self, points: Tensor, seed: Optional[Tensor] = None) -> Tensor:
        """``problem(points, seed)`` with autograd on: first-order meta-training of a differentiable ``fn``."""
        with torch.enable_grad():
            return self(points, seed)

    def success(self, theta: Tensor) -> Tensor:  # noqa: F811 - hidden per instance when not given
        if self.per_row:
            return self._success_fn(theta, self.index)
        return self._success_fn(theta)

    def initial_point(self) -> Tensor:
        return self.x0.clone()

    def select(self, index) -> "CallableProblem":
        sub, _ = self._take_rows(index, "x0", "index")
        return sub
