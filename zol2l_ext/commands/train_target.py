"""`zol2l train-target`: train a target classifier and save a checkpoint that `zol2l attack --target` loads."""
from __future__ import annotations

from .. import data as D
from ..cli_args import positive_float, positive_int
from ..models import ARCH_NAMES, train_target


def add_parser(sub) -> None:
    p = sub.add_parser("train-target", help="train a target classifier and save state_dict + metadata",
                       description="Trains ARCH on DATASET's training set (tqdm progress), reports the test "
                                   "accuracy and saves a checkpoint that `zol2l attack --target` loads.")
    p.add_argument("arch", choices=ARCH_NAMES,
                   help="cw (the paper's Carlini-Wagner architecture, mnist/cifar10), authors (mnist), "
                        "staged (cifar10), digits (digits)")
    p.add_argument("dataset", choices=D.DATASETS, help="the data set to train on: " + ", ".join(D.DATASETS))
    p.add_argument("--epochs", type=positive_int, default=10, help="passes over the training set (default 10)")
    p.add_argument("--out", default=None, help=f"checkpoint path (default ${D.ENV_CACHE}/targets/<name>.pt, "
                                                "where --target <name> finds it)")
    p.add_argument("--data-root", default=None, help=f"data folder (else ${D.ENV_DATA})")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per training step (default: the architecture's)")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the architecture's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--download", action="store_true", help="let torchvision download MNIST when it is missing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars, even on a terminal")
    p.set_defaults(func=run)


def run(args) -> int:
    path, meta = train_target(args.arch, args.dataset, args.epochs, out=args.out, data_root=args.data_root,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                              progress=not args.no_progress, download=args.download)
    print(f"{meta['name']}: train accuracy {100 * meta['train_accuracy']:.2f}%, test accuracy "
          f"{100 * meta['test_accuracy']:.2f}% after {meta['epochs']} epochs ({meta['train_seconds']:.1f} s); "
          f"saved {path}")
    return 0
