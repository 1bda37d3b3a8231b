"""Black-box adversarial attack (paper App. A.1): `AttackProblem` and its parameterisations `SPACES`."""
from __future__ import annotations

import warnings
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import ops
from ..estimator import _check_batch
from .base import BlackBoxProblem

__all__ = ["SPACES", "AttackProblem"]


# Parameterisations of an attack's variable (see AttackProblem).
SPACES = ("tanh", "pixel")


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
    of a separate ``success()`` forward when it can. ``distortion(theta)`` = (L1, L2) distances between x and x0
    (L2 not squared).
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

    def _fused_images(self, points: Tensor) -> bool:
        """Whether the query images and their distances come from ops.attack_pixel_images (pixel space at full
        resolution, no autograd, a device with the kernel): one pass instead of five over B x Q x d values."""
        return (self.space == "pixel" and self.upsample_from is None and points.dtype in (torch.float32, torch.float64)
                and ops.has_attack_images_kernel(points.device))

    def _query_images(self, points: Tensor, no_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """The images of points [B, Q, d] as the black box forms them, and their distances [B, Q] to the clean
        images where ops.attack_pixel_images computed them on the way (else None: `_loss` takes them after the
        forward)."""
        if no_grad and self._fused_images(points):
            clean = self.images.to(points.dtype).reshape(points.shape[0], -1)
            return ops.attack_pixel_images(points, clean, 1 if self.norm == "l1" else 2)
        return self._x(points, inplace=no_grad), None  # [B, Q, C, H, W]

    def _loss(self, points: Tensor, no_grad: bool) -> Tensor:
        B, Q = points.shape[:2]
        x, dist = self._query_images(points, no_grad)
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
        if dist is not None:
            return hinge.to(dist.dtype) + self.c * dist
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
