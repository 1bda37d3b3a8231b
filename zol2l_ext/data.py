"""Data loading for the attack experiments: data root, MNIST, CIFAR-10, the embedded digits and the attacked-image
splits.

The data live outside the repository (see ``shared/data/PROVENANCE.md`` for the layout)::

    <root>/mnist/MNIST/raw/...                        torchvision's MNIST layout (IDX files)
    <root>/mnist/mnist_correct/label_correct_index.npy  test indices the authors' MNIST model gets right
    <root>/cifar10/cifar10_test.npz                   x uint8 [N, 32, 32, 3] (HWC RGB), y int64 [N]
    <root>/cifar10/train/cifar10_train_{1..5}.npz
    <root>/models/mnist_cnn.pt, <root>/models/cifar10_model.pt

The root comes from ``--data-root``, else from the ``ZOL2L_DATA`` environment variable; nothing here guesses
another location. Every image comes back as a float32 tensor [N, C, H, W] with values in [0, 1], labels as
int64 [N].

The image split of the reference code (Ruan et al.): the indices of the correctly classified test images are
shuffled with ``random.seed(1234); random.shuffle(indices)``; positions [0:100] train the learned optimizer and
positions [5000:5100] test it. :func:`shuffled_correct` reproduces the shuffle (with a private
``random.Random(1234)``, which draws the same permutation without touching the global ``random`` state).
"""
from __future__ import annotations

import os
import random
import zipfile
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
import torch

ENV_DATA = "ZOL2L_DATA"
ENV_CACHE = "ZOL2L_CACHE"
ENV_USER = "ZOL2L_USER_DIR"  # your exported learned optimizers and shipped tunings (default: the cache folder)

SPLIT_SEED = 1234
TRAIN_POSITIONS = (0, 100)
TEST_POSITIONS = (5000, 5100)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DATASETS = ("digits", "mnist", "cifar10")


class DataRootError(FileNotFoundError):
    """The data root is not given, does not exist, or lacks the files asked for."""


def _hint() -> str:
    return (f"pass --data-root PATH or set the environment variable {ENV_DATA}=PATH, where PATH holds "
            "mnist/, cifar10/ and models/ as described in shared/data/PROVENANCE.md "
            "(the embedded default `zol2l attack digits` needs no data root)")


def resolve_data_root(data_root: str | os.PathLike | None = None) -> str:
    """The data root: ``data_root`` if given (the --data-root flag), else $ZOL2L_DATA, else DataRootError."""
    source = "--data-root"
    root = os.fspath(data_root) if data_root not in (None, "") else None
    if root is None:
        root = os.environ.get(ENV_DATA) or None
        source = ENV_DATA
    if root is None:
        raise DataRootError(f"no data root given: {_hint()}")
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise DataRootError(f"data root {root!r} (from {source}) is not a directory: {_hint()}")
    return root


def user_file(kind: str, name: str) -> str:
    """Where a user's own file of ``kind`` ("pretrained" learned optimizers, "tuned" baseline tunings) named
    ``name`` lives: <$ZOL2L_USER_DIR, else the cache folder>/<kind>/<name>. `zol2l train/boost --export` and
    `zol2l tune --ship` write there (the package's own folders only with --into-package), and a name is looked up
    there before the package."""
    return os.path.join(os.environ.get(ENV_USER) or cache_dir(create=False), kind, name)


def cache_dir(create: bool = True) -> str:
    """The user cache ($ZOL2L_CACHE, else ~/.cache/zol2l): trained digits CNN, own targets."""
    d = os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "zol2l")
    d = os.path.abspath(d)
    if create:
        os.makedirs(d, exist_ok=True)
    return d


def _require(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise DataRootError(f"{what} not found at {path!r}: {_hint()}")
    return path


# --------------------------------------------------------------------------------------------------- MNIST
def load_mnist(root: str, train: bool = False, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from ``<root>/mnist`` (torchvision layout): images float [N, 1, 28, 28] in [0, 1], labels int64.

    ``download=True`` lets torchvision fetch the files into ``<root>/mnist`` when they are missing (only when the
    caller asks for it; the default never touches the network)."""
    try:
        import torchvision  # optional (pyproject's "mnist" extra): it pins one torch, so it is not a dependency
    except ImportError as e:
        raise DataRootError("reading MNIST needs torchvision, which is not installed: install the torchvision "
                            "release that matches your torch (pip install 'zol2l_ext[mnist]' picks one)") from e

    mroot = os.path.join(root, "mnist")
    for part in ("train", "t10k") if train else ("t10k",):
        for kind in ("images-idx3", "labels-idx1"):
            _check_idx(os.path.join(mroot, "MNIST", "raw", f"{part}-{kind}-ubyte"))
    try:
        ds = torchvision.datasets.MNIST(mroot, train=train, download=download)
    except RuntimeError as e:
        raise DataRootError(
            f"MNIST not found under {os.path.join(mroot, 'MNIST', 'raw')!r} ({e}); {_hint()}; "
            "or ask for torchvision's download (download=True)") from e
    images = ds.data.to(torch.float32).div_(255.0).unsqueeze(1).contiguous()
    labels = ds.targets.to(torch.int64).clone()
    return images, labels


def _check_idx(path: str) -> None:
    """An IDX file (MNIST's format) that exists must hold what its header promises: torchvision's own error for a
    truncated file names neither the file nor the cause."""
    if not os.path.isfile(path):
        return  # missing: torchvision's loader says so (or downloads it)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4)
        ndim = head[3] if len(head) == 4 else 0
        dims = f.read(4 * ndim)
    if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] != 0x08 or len(dims) < 4 * ndim:
        raise DataRootError(f"{path}: not an MNIST IDX file of bytes (corrupt or truncated header)")
    want = 4 + 4 * ndim + int(np.prod(np.frombuffer(dims, dtype=">u4").astype(np.int64)))
    if size != want:
        raise DataRootError(f"{path}: truncated or corrupt MNIST IDX file ({size} bytes, its header promises {want})")


def mnist_correct_indices(root: str) -> np.ndarray:
    """The 9915 MNIST test indices that the authors' model (models/mnist_cnn.pt) classifies right, file order."""
    path = _require(os.path.join(root, "mnist", "mnist_correct", "label_correct_index.npy"),
                    "the MNIST correct-index file")
    return np.load(path, allow_pickle=False).astype(np.int64)


# ------------------------------------------------------------------------------------------------- CIFAR-10
def _npz_images(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with np.load(_require(path, "a CIFAR-10 file"), allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DataRootError(f"{path}: not a readable CIFAR-10 file (truncated or corrupt? "
                            f"{type(e).__name__}: {e})") from None
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"{path}: expected x uint8 [N, 32, 32, 3], got {x.dtype} {x.shape}")
    images = torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()
    return images, torch.from_numpy(y.astype(np.int64))


def load_cifar10(root: str, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from the numpy files: images float [N, 3, 32, 32] in [0, 1] (RGB), labels int64, original order."""
    if not train:
        return _npz_images(os.path.join(root, "cifar10", "cifar10_test.npz"))
    parts = [_npz_images(os.path.join(root, "cifar10", "train", f"cifar10_train_{k}.npz")) for k in range(1, 6)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# --------------------------------------------------------------------------------------------- the digits
# scikit-learn's bundled 8x8 digits: no network and no data root. ``load_digits`` gives 1797 images with values
# 0..16, scaled here to [0, 1] ([N, 1, 8, 8] float32); a seeded stratified split keeps 30% for testing.
DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits_split_arrays():
    # scikit-learn loads in about a second: only the digits need it
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ds = load_digits()
    x = (ds.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = ds.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    return x[tr], y[tr], x[te], y[te], te


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): float [N, 1, 8, 8] in [0, 1] and int64 labels (seeded split)."""
    x_tr, y_tr, x_te, y_te, _ = _digits_split_arrays()
    return (torch.from_numpy(x_tr.copy()), torch.from_numpy(y_tr.copy()),
            torch.from_numpy(x_te.copy()), torch.from_numpy(y_te.copy()))


def digits_test_ids() -> np.ndarray:
    """Indices into sklearn's load_digits() of the test images (the order of load_digits_split's test part)."""
    return _digits_split_arrays()[4].copy()


def load_dataset(dataset: str, root: str | None = None, train: bool = False,
                 download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one of DATASETS ("digits" needs no root)."""
    if dataset == "digits":
        x_tr, y_tr, x_te, y_te = load_digits_split()
        return (x_tr, y_tr) if train else (x_te, y_te)
    if dataset == "mnist":
        return load_mnist(resolve_data_root(root), train=train, download=download)
    if dataset == "cifar10":
        return load_cifar10(resolve_data_root(root), train=train)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------------------------- the splits
def shuffled_correct(indices: Iterable[int], seed: int = SPLIT_SEED) -> list[int]:
    """The reference code's shuffle: ``random.seed(seed); random.shuffle(list(indices))`` (global state untouched)."""
    out = [int(i) for i in indices]
    random.Random(seed).shuffle(out)
    return out


def authors_split(indices: Iterable[int], seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """{"shuffled", "train" (positions 0:100), "test" (positions 5000:5100)} of a correct-index list."""
    s = shuffled_correct(indices, seed)
    return {"shuffled": s, "train": s[TRAIN_POSITIONS[0]:TRAIN_POSITIONS[1]],
            "test": s[TEST_POSITIONS[0]:TEST_POSITIONS[1]]}


def mnist_split(root: str) -> dict[str, list[int]]:
    """The authors' MNIST split (test-set indices): train = first 100, test = [5000:5100] of the shuffle."""
    return authors_split(mnist_correct_indices(root))


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000,
            device: str | torch.device | None = None) -> torch.Tensor:
    """argmax labels of ``model`` on ``images`` (in batches, on the model's device), as int64 on the CPU."""
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    out = []
    for i in range(0, images.shape[0], batch_size):
        out.append(model(images[i:i + batch_size].to(device)).argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def correct_indices(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    batch_size: int = 1000) -> np.ndarray:
    """Sorted indices of the images that ``model`` classifies correctly (deterministic: eval-mode argmax).

    Always computed on the CPU in float32: on a GPU (TF32 convolutions, other kernels) a borderline image can flip,
    and one flip shifts every later position of the shuffled split, so the same positions would name other images
    on another device."""
    import copy

    was_training = model.training
    p = next(iter(model.parameters()), None)
    if p is not None and p.device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    model.eval()
    try:
        pred = predict(model, images.float(), batch_size, device="cpu")
    finally:
        model.train(was_training)
    return torch.nonzero(pred == labels.cpu()).flatten().numpy().astype(np.int64)


def cifar10_correct_indices(model: torch.nn.Module, root: str) -> np.ndarray:
    """CIFAR-10 test indices that ``model`` classifies right (the analogue of MNIST's label_correct_index.npy)."""
    x, y = load_cifar10(root, train=False)
    return correct_indices(model, x, y)


def parse_positions(spec: str | Sequence[int] | None, count: int | None = None,
                    default_start: int = TEST_POSITIONS[0]) -> list[int] | None:
    """Positions into a shuffled correct-index list.

    ``spec``: "a:b" (optionally "a:b:step"), "i,j,k", a mix ("0:3,10"), or a list of ints. Without a spec,
    ``count`` gives ``range(default_start, default_start + count)``. Neither: None (the caller's default)."""
    if spec is None or spec == "":
        if count is None:
            return None
        if count < 1:
            raise ValueError(f"--count must be >= 1, got {count}")
        return list(range(default_start, default_start + count))
    if not isinstance(spec, str):
        return [int(i) for i in spec]
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            bits = part.split(":")
            if len(bits) not in (2, 3):
                raise ValueError(f"bad index range {part!r}: use START:STOP or START:STOP:STEP")
            try:
                start, stop = int(bits[0]), int(bits[1])
                step = int(bits[2]) if len(bits) == 3 and bits[2] else 1
            except ValueError as e:
                raise ValueError(f"bad index range {part!r}: use integers, e.g. 5000:5100") from e
            out.extend(range(start, stop, step))
        else:
            try:
                out.append(int(part))
            except ValueError as e:
                raise ValueError(f"bad index {part!r}: use integers, e.g. 5000:5100 or 1,2,3") from e
    if not out:
        raise ValueError(f"index spec {spec!r} selects no images")
    if min(out) < 0:
        raise ValueError(f"index spec {spec!r}: positions must be >= 0")
    if count is not None:
        out = out[:count]
    return out


def take_positions(shuffled: Sequence[int], positions: Sequence[int], what: str = "images") -> list[int]:
    """``[shuffled[p] for p in positions]`` with a clear error when a position is out of range."""
    n = len(shuffled)
    bad = [p for p in positions if p >= n]
    if bad:
        raise ValueError(f"positions {bad[:5]}{'...' if len(bad) > 5 else ''} are out of range: only {n} "
                         f"correctly classified {what} (valid positions 0..{n - 1})")
    return [int(shuffled[p]) for p in positions]


def digits_attack_set(model: torch.nn.Module, positions: list[int] | None = None, count: int = 5):
    """Correctly classified digits test images, in the reference code's seeded shuffle (random.Random(1234)).

    ``positions`` index the shuffled list (default: the first ``count``). Returns (images [n, 1, 8, 8],
    labels [n], ids [n]) where ids are indices into sklearn's load_digits()."""
    _, _, x_te, y_te = load_digits_split()
    correct = correct_indices(model, x_te, y_te)
    shuffled = shuffled_correct(correct)
    if positions is None:
        positions = list(range(count))
    picked = take_positions(shuffled, positions, "digits test images")
    ids = digits_test_ids()[picked]
    return x_te[picked], y_te[picked], [int(i) for i in ids]
