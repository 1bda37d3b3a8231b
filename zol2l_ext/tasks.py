"""The optimization tasks of the paper as named, fixed problem sets: train / validation / test parts.

A task names which problems the learned optimizer trains on, which held-out problems pick its best checkpoint
("val") and which problems every optimizer is compared on ("test"); baselines are tuned on the "tune" part.
Attack tasks index the seeded shuffle of correctly classified test images (`data.shuffled_correct`, the
reference code's split): the authors train on positions 0:100 and test on 5000:5100; we hold out 100:120 for
validation and tune the baselines' learning rates on 0:20 (a subset of the training images: the learned
optimizer and the baselines are fitted on the same images). The digits task (embedded, no data root) has only
~530 correct test images: train 100:300, val 300:320, test 0:100 (the attack default uses 0:8), tune 100:120.
Binary classification (paper Sec. 4.2): dataset seeds 0..89 train, 90..99 test (DESIGN.md's 90 / 10), extra
seeds 100..109 validate; tune on 0..9.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Optional, Sequence

import torch

from . import data as D
from .attack_setup import prepare_attack
from .zo.estimator import check_baseline
from .zo.problems import SPACES, AttackProblem, BinaryClassificationProblem
from .zo.synthetic import SparseQuadraticProblem

__all__ = ["SPACE_MU", "TaskSpec", "TASKS", "TASK_NAMES", "DATASET_TASKS", "RANGE_PART", "get_task", "task_with",
           "task_with_range", "TaskData", "load_task", "make_problem"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "attack" | "binary" | "sparse"
    dataset: str  # digits | mnist | cifar10 | binary
    q: int
    mu: float
    horizon: int  # optimizer steps of one training trajectory (and of an evaluation run)
    unroll: int  # truncated-BPTT window
    parts: dict = field(default_factory=dict)  # part -> (start, stop) positions or dataset seeds
    c: float = 0.0  # attack distortion weight
    space: str = "pixel"  # attack variable: "pixel" (x = clamp(x0 + delta)) or "tanh" (x = (tanh(w) + 1) / 2)
    dim: int = 0  # binary: d
    n: int = 2000  # binary: samples per dataset
    minibatch: int = 64  # binary: b
    active: int = 0  # sparse: coordinates the function depends on
    baseline: str = "f0"  # the estimator's baseline for every optimizer on the task (zo.estimator.FD_BASELINES)

    def positions(self, part: str) -> list[int]:
        if part not in self.parts:
            raise ValueError(f"task {self.name!r} has no part {part!r} (parts: {', '.join(self.parts)})")
        a, b = self.parts[part]
        return list(range(a, b))


# The estimator's smoothing radius per attack parameterisation, measured (docs/TRAINING.md, "Smoothing radius"):
# in pixel space ZO-SGD ends 4.5% lower with mu = 1e-3 than with 5e-3 and no lower below it (float32 rounds
# smaller differences of losses ~10); in tanh space a step of w moves a saturated pixel by ~1e-6 of it, and
# 5e-3 is as good as 1e-2 there.
SPACE_MU = {"pixel": 1e-3, "tanh": 0.005}
_ATTACK_PARTS = {"train": (0, 100), "val": (100, 120), "test": D.TEST_POSITIONS, "tune": (0, 20)}
TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("mnist-attack", "attack", "mnist", q=20, mu=SPACE_MU["pixel"], horizon=200, unroll=20, parts=_ATTACK_PARTS,
             c=0.1),
    # CIFAR-10 in pixel space with the mean-baseline estimator: measured there, every tuned baseline moves and the
    # learned optimizer beats them on the test part (docs/TRAINING.md, CIFAR-10); in tanh space with f0 the tuned
    # baselines declined to attack.
    TaskSpec("cifar-attack", "attack", "cifar10", q=50, mu=SPACE_MU["pixel"], horizon=200, unroll=20,
             parts=_ATTACK_PARTS, c=0.25, space="pixel", baseline="mean"),
    TaskSpec("digits-attack", "attack", "digits", q=10, mu=SPACE_MU["pixel"], horizon=200, unroll=20,
             parts={"train": (100, 300), "val": (300, 320), "test": (0, 100), "tune": (100, 120)}, c=0.1),
    TaskSpec("binary", "binary", "binary", q=20, mu=0.005, horizon=500, unroll=20,
             parts={"train": (0, 90), "val": (100, 110), "test": (90, 100), "tune": (0, 10)}, dim=100),
    # Where the QueryRNN provably should help (zo/synthetic.py): 5 active coordinates of 100, per-problem.
    TaskSpec("sparse-quadratic", "sparse", "sparse", q=10, mu=0.005, horizon=100, unroll=20,
             parts={"train": (0, 500), "val": (1000, 1020), "test": (2000, 2100), "tune": (0, 20)}, dim=100,
             active=5),
)}
TASK_NAMES = tuple(TASKS)
#: the attack dataset -> its task (digits -> digits-attack, mnist -> mnist-attack, cifar10 -> cifar-attack): the
#: task whose q, c, mu, space and horizon are the dataset's attack defaults and whose shipped tuning it uses
DATASET_TASKS: dict[str, str] = {t.dataset: t.name for t in TASKS.values() if t.kind == "attack"}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
    return TASKS[name]


#: the part name `task_with_range` gives its items
RANGE_PART = "range"


def task_with_range(task: "TaskSpec | str", items: str) -> TaskSpec:
    """``task`` with one more part, `RANGE_PART`, holding items A..B-1 of ``items`` = "A:B" (image positions of an
    attack task, dataset / problem seeds otherwise): `zol2l evaluate --range`, a replication on problems that no
    part holds."""
    spec = get_task(task) if isinstance(task, str) else task
    a, sep, b = str(items).partition(":")
    try:
        start, stop = int(a), int(b)
    except ValueError:
        start = stop = None
    if not sep or start is None or not 0 <= start < stop:
        raise ValueError(f"--range {items!r}: give A:B with 0 <= A < B (e.g. 5100:5200)")
    return replace(spec, parts={**spec.parts, RANGE_PART: (start, stop)})


def task_with(task: "TaskSpec | str", space: Optional[str] = None, baseline: Optional[str] = None) -> TaskSpec:
    """The task (a name or a spec) with its attack parameterisation replaced by ``space`` (None: as it is), and
    the smoothing radius measured for that space (`SPACE_MU`); ``baseline``: the estimator's baseline for every
    optimizer on it (None: the task's)."""
    spec = get_task(task) if isinstance(task, str) else task
    if baseline is not None and baseline != spec.baseline:
        spec = replace(spec, baseline=check_baseline(baseline))
    if space is None or space == spec.space:
        return spec
    if spec.kind != "attack":
        raise ValueError(f"a space applies to attack tasks; {spec.name} is a {spec.kind} task")
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    return replace(spec, space=space, mu=SPACE_MU[space])


@dataclass
class TaskData:
    """What problems of a task are built from: images/labels + target (attack), or dataset seeds (binary)."""

    spec: TaskSpec
    part: str
    images: Optional[torch.Tensor] = None  # [N, C, H, W] CPU
    labels: Optional[torch.Tensor] = None  # [N]
    seeds: Optional[list[int]] = None  # binary dataset seeds
    model: Any = None  # the attacked classifier (eval mode)
    output: str = "logprob"
    target_name: str = ""

    device: str = "cpu"

    def __len__(self) -> int:
        return len(self.seeds) if self.seeds is not None else int(self.labels.shape[0])

    def make(self, rows: Optional[Sequence[int]] = None, repeat: int = 1):
        """One batched problem of ``rows`` (see `make_problem`): a `zo.meta_trainer.ProblemSet`."""
        return make_problem(self, rows, repeat, self.device)


@lru_cache(maxsize=8)
def _attack_pool(dataset: str, positions: tuple, data_root: Optional[str], device: str):
    aset = prepare_attack(dataset, data_root=data_root, indices=list(positions), device=device, progress=False)
    return aset


def load_task(spec: TaskSpec | str, part: str, data_root: Optional[str] = None,
              device: str | torch.device = "cpu") -> TaskData:
    """The problems' raw material of ``part`` ("train", "val", "test", "tune")."""
    spec = get_task(spec) if isinstance(spec, str) else spec
    pos = spec.positions(part)
    if spec.kind in ("binary", "sparse"):
        return TaskData(spec, part, seeds=pos, device=str(torch.device(device)))
    aset = _attack_pool(spec.dataset, tuple(pos), data_root, str(torch.device(device)))
    return TaskData(spec, part, images=aset.images, labels=aset.labels, model=aset.target.model,
                    output=aset.output, target_name=aset.target.name, device=str(torch.device(device)))


def make_problem(td: TaskData, rows: Optional[Sequence[int]] = None, repeat: int = 1,
                 device: str | torch.device = "cpu"):
    """One batched problem of the rows ``rows`` of ``td`` (default all), each repeated ``repeat`` times
    (trial-major: row r * len(rows) + i is trial r of item i)."""
    spec = td.spec
    idx = list(range(len(td))) if rows is None else [int(r) for r in rows]
    if spec.kind == "binary":
        seeds = [td.seeds[i] for i in idx] * repeat
        return BinaryClassificationProblem(dim=spec.dim, n=spec.n, minibatch=spec.minibatch, seeds=seeds,
                                           device=device)
    if spec.kind == "sparse":
        return SparseQuadraticProblem([td.seeds[i] for i in idx] * repeat, dim=spec.dim, active=spec.active,
                                      device=device)
    sel = torch.as_tensor(idx, dtype=torch.int64)
    images = td.images[sel].to(device).repeat(repeat, 1, 1, 1)
    labels = td.labels[sel].to(device).repeat(repeat)
    chunk = 16384 if torch.device(device).type == "cuda" else 4096
    return AttackProblem(td.model.to(device), images, labels, c=spec.c, output=td.output, chunk_size=chunk,
                         space=spec.space)
