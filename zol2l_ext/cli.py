"""The ``zol2l`` command line.

    zol2l attack [digits|mnist|cifar10] [--data-root PATH] [--indices 5000:5100 | --count N]
                 [--optimizers zo-sgd,zo-signsgd,zo-adam] [--q Q] [--mu MU] [--steps T] [--trials K]
                 [--seed S] [--device cpu|cuda|auto] [--out DIR] [--lr NAME=VALUE ...] [--budget N] [--c C]
                 [--target NAME|PATH] [--space tanh|pixel]
    zol2l train-target ARCH DATASET [--epochs E] [--out PATH] [--data-root PATH]
    zol2l targets
    zol2l tune TASK [--optimizers zo-sgd,zo-signsgd,zo-adam] [--trials N] [--steps T] [--seed S] [--device D]
               [--data-root PATH] [--out PATH] [--ship] [--space tanh|pixel]

``zol2l attack`` without a dataset runs the embedded default: scikit-learn's 8x8 digits, a small CNN trained on
the fly (cached), a handful of images, ZO-SGD, ZO-signSGD and ZO-ADAM (plus ZO-LSTM where a pretrained
checkpoint exists). No network, no data root.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from typing import Sequence

from . import data as D
from . import distributed as DI
from .cli_args import (add_progress_flags, nonnegative_float, positive_float, positive_int, resolve_progress)
from .fileio import check_output_folder
from .threads import torch_threads


def _add_attack(sub) -> None:
    from .attack import DATASET_DEFAULTS
    from .zo.problems import SPACES

    p = sub.add_parser("attack", help="black-box attack: compare ZO optimizers on a classifier",
                       description="Untargeted score-based black-box attack (paper App. A.1) of correctly "
                                   "classified test images; writes results.json, success_vs_queries.png, "
                                   "loss_curves.png and adversarial_grid.png into --out and prints a comparison "
                                   "table.")
    p.add_argument("dataset", nargs="?", default="digits", choices=D.DATASETS,
                   help="digits (embedded default: no data root needed), mnist or cifar10")
    p.add_argument("--data-root", default=None,
                   help=f"folder holding mnist/, cifar10/, models/ (else ${D.ENV_DATA})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--indices", default=None,
                   help="positions in the seeded shuffle of correctly classified test images, e.g. 5000:5100 "
                        "(the paper's test images; the default for mnist/cifar10) or 0,3,7")
    g.add_argument("--count", type=positive_int, default=None,
                   help="attack N images from the default start (5000 for mnist/cifar10, 0 for digits)")
    p.add_argument("--optimizers", default=None,
                   help="comma-separated: zo-sgd,zo-signsgd,zo-adam,zo-szvr-g,guided-es,zo-lstm,"
                        "zo-lstm-no-query,zo-lstm-no-update,zo-lstm-guided-es (default: the three baselines, "
                        "plus zo-lstm where a pretrained checkpoint loads)")
    p.add_argument("--q", type=positive_int, default=None,
                   help="query directions per step; a step costs q + 1 queries (default: 10/20/50 for "
                        "digits/mnist/cifar10)")
    p.add_argument("--mu", type=positive_float, default=None,
                   help="smoothing radius of the estimator (default: 1e-3 in pixel space, 0.005 in tanh space)")
    p.add_argument("--steps", type=positive_int, default=None, help="iterations (default 200)")
    p.add_argument("--trials", type=positive_int, default=None,
                   help="independent runs per image, as extra batch rows (default 3 digits, 10 mnist/cifar10)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the query directions; the same seed gives the same run (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--out", default=None, help="output folder (default runs/attack-<dataset>-<time>)")
    p.add_argument("--lr", action="append", default=None, metavar="[NAME=]VALUE",
                   help="learning rate override: VALUE for all optimizers or NAME=VALUE (repeatable); wins over "
                        "--tuned")
    p.add_argument("--tuned", default=None, metavar="PATH|TASK|none",
                   help="take the baselines' tuned lr (and ZO-ADAM betas) from a `zol2l tune` JSON file or a task's "
                        "shipped tuning (zol2l_ext/tuned/TASK.json); default: the dataset's task's shipped tuning "
                        "where one exists (digits-attack, mnist-attack, cifar-attack), else the built-in fallback "
                        "rates; 'none': the built-in fallback rates")
    p.add_argument("--budget", type=positive_int, default=None,
                   help="queries per attack (image x trial): it stops before a step that would exceed them")
    p.add_argument("--c", type=nonnegative_float, default=None,
                   help="distortion weight (default 0.1; cifar10 0.25)")
    p.add_argument("--norm", choices=("l1", "l2"), default="l1", help="distortion penalty (default l1)")
    p.add_argument("--space", choices=SPACES, default=None,
                   help="the attack's variable: pixel (x = clamp(x0 + delta, 0, 1)) or tanh (x = (tanh(w) + 1) / 2); "
                        "default: the dataset's task's (" + ", ".join(
                            f"{ds} {kw['space']}" for ds, kw in DATASET_DEFAULTS.items()) + "); the fallback "
                        "lrs and the tuning must be of the same space")
    p.add_argument("--target", default=None,
                   help="target model: mnist-authors, cifar10-staged, mnist-cw, cifar10-cw, digits-cnn; your own "
                        "as module:factory (a function or class of an importable module, current folder first, "
                        "that returns the model) or a model file (a whole model saved with torch.save, "
                        "TorchScript, or a `zol2l train-target` checkpoint); the model takes [N, C, H, W] images "
                        "in [0, 1] and returns logits or log-probabilities (default: the dataset's staged model; "
                        "digits-cnn for digits)")
    p.add_argument("--learned", default=None,
                   help="pretrained ZO-LSTM name (zol2l_ext/pretrained/<name>.pt) or .pt path for zo-lstm*")
    p.add_argument("--stop-at-success", action="store_true", help="stop each attack at its first success")
    p.add_argument("--chunk-size", type=positive_int, default=None,
                   help="images per model forward (memory bound; default 4096 on CPU, 16384 on CUDA)")
    p.add_argument("--download", action="store_true", help="let torchvision download MNIST when it is missing")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: 1 for digits, whose tiny batches lose time to thread "
                        "synchronisation, else torch's default)")
    p.add_argument("--loss-x", choices=("iteration", "queries"), default="iteration",
                   help="x axis of loss_curves.png: the iteration (default) or the queries spent")
    p.add_argument("--loss-axis", choices=("log", "linear"), default="log",
                   help="y axis of loss_curves.png (default log, where every mean loss is positive)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars, even on a terminal")
    from .remote_attack import add_endpoint_args

    add_endpoint_args(p)
    p.set_defaults(func=cmd_attack)


def _add_train(sub) -> None:
    from .models import ARCH_NAMES

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
    p.set_defaults(func=cmd_train_target)


def _add_targets(sub) -> None:
    p = sub.add_parser("targets", help="list the target models and where they come from")
    p.set_defaults(func=cmd_targets)


def _add_tune(sub) -> None:
    from .zo.problems import SPACES

    p = sub.add_parser("tune", help="tune the baselines' learning rates (and ZO-ADAM betas) on a task",
                       description="DESIGN.md's protocol on the task's 'tune' part: delta over a coarse grid "
                                   "{0.01, 0.1, 1, 10, 100, 1000}, ZO-ADAM's (beta1, beta2) pairs at the best coarse "
                                   "delta, then the best delta times {1/3, 1/2, 2, 3}; the lowest mean final loss "
                                   "wins (a diverging candidate scores +inf). Same start point and seed for every "
                                   "candidate. Writes a JSON file and prints every candidate.")
    p.add_argument("task", help="a task of zol2l_ext.tasks: digits-attack, mnist-attack, cifar-attack, binary")
    p.add_argument("--optimizers", default="zo-sgd,zo-signsgd,zo-adam",
                   help="comma-separated subset of zo-sgd,zo-signsgd,zo-adam (default all three)")
    p.add_argument("--trials", type=positive_int, default=2,
                   help="copies of every tune item with other directions (default 2)")
    p.add_argument("--steps", type=positive_int, default=None, help="steps per run (default: the task's horizon)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query directions (default 0)")
    p.add_argument("--grid", default=None, help="coarse deltas, comma-separated (default 0.01,0.1,1,10,100,1000)")
    p.add_argument("--fine", default=None,
                   help="factors of the best coarse delta, comma-separated, e.g. 0.3333,0.5,2,3 (default); '' for none")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--data-root", default=None, help=f"data folder for mnist/cifar tasks (else ${D.ENV_DATA})")
    p.add_argument("--out", default=None, help="output JSON (default runs/tune-<task>.json)")
    p.add_argument("--ship", action="store_true",
                   help="also write zol2l_ext/tuned/<task>.json, the tuning `zol2l attack` uses by default")
    p.add_argument("--space", choices=SPACES, default=None,
                   help="attack tasks: tune in this parameterisation (default: the task's; recorded in the tuning "
                        "file, and a run in another space refuses the tuning)")
    p.add_argument("--no-batch", action="store_true",
                   help="run every candidate alone (default: a stage's candidates as one batched problem)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars, even on a terminal")
    p.set_defaults(func=cmd_tune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zol2l", description="Learned zeroth-order optimization (ZO-L2L): "
                                                               "black-box attacks and target models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_attack(sub)
    _add_train(sub)
    _add_targets(sub)
    _add_tune(sub)
    from .train_cli import add_parser as _add_meta_train

    _add_meta_train(sub)
    from .boost_cli import add_parser as _add_boost

    _add_boost(sub)
    from .evaluate_cli import add_parser as _add_evaluate

    _add_evaluate(sub)
    from .reproduce_cli import add_parser as _add_reproduce

    _add_reproduce(sub)
    from .serve_cli import add_parser as _add_serve

    _add_serve(sub)
    add_progress_flags(sub)
    return parser


def cmd_attack(args) -> int:
    threads = args.threads or (1 if args.dataset == "digits" and str(args.device) == "cpu" else None)
    with torch_threads(threads):
        return _attack(args)


def _attack(args) -> int:
    from . import attack as A
    from . import tasks as T

    t_start = time.perf_counter()
    progress = not args.no_progress
    # Everything that can be checked without the data and the model is checked first: a bad value fails at once,
    # not after minutes of loading, and the banner below shows the values in force.
    dflt = A.DATASET_DEFAULTS[args.dataset]
    space = A.dataset_space(args.dataset, args.space)
    q = dflt["q"] if args.q is None else args.q
    steps = dflt["steps"] if args.steps is None else args.steps
    trials = dflt["trials"] if args.trials is None else args.trials
    c = dflt["c"] if args.c is None else args.c
    mu = T.SPACE_MU[space] if args.mu is None else args.mu
    if args.budget is not None and args.budget < q + 1:
        raise A.AttackSetupError(f"--budget {args.budget} is below one step's q + 1 = {q + 1} queries")
    device = A.resolve_device(args.device)
    optimizers = A.parse_optimizers(args.optimizers) if args.optimizers else list(A.BASELINES)
    common, per = A.parse_lr_overrides(args.lr)

    learned, learned_name = None, None
    if args.optimizers:
        if any(n.startswith("zo-lstm") for n in optimizers):
            learned, learned_name = _load_learned(args.learned, args.dataset)
    else:
        if args.learned:
            learned, learned_name = _load_learned(args.learned, args.dataset)
        else:
            learned, why = A.find_learned(args.dataset)
            learned_name = why if learned is not None else None
            if learned is None:
                tried = ", ".join(f"{n}.pt" for n in A.LEARNED_CANDIDATES.get(args.dataset, ()))
                print(f"zol2l: zo-lstm skipped: no pretrained learned optimizer for {args.dataset} "
                      f"(looked for {tried} in zol2l_ext/pretrained/)", file=sys.stderr)
        if learned is not None:
            optimizers.append("zo-lstm")
    unknown = sorted(set(per) - set(optimizers))
    if unknown:
        raise A.AttackSetupError(f"--lr for {', '.join(unknown)}, which does not run (running: "
                                 f"{', '.join(optimizers)})")
    lrs = {n: (per[n] if n in per else common) for n in optimizers if n in per or common is not None}
    lrs, optimizer_kwargs, lr_source = _tuned_lrs(args, optimizers, lrs)

    shard = DI.setup(device)  # under torchrun: this rank's share of the rows; rank 0 alone reports
    out = check_output_folder(DI.broadcast(args.out or os.path.join("runs", f"attack-{args.dataset}-"
                                                                            f"{time.strftime('%Y%m%d-%H%M%S')}"),
                                           shard))
    if shard.active:  # finished shards wait there for rank 0's results: a rerun after a failure keeps them
        shard = dataclasses.replace(shard, keep=os.path.join(out, "shards"))
    target = args.target
    resumable = bool(args.endpoint or args.checkpoint_every)  # its progress goes to OUT/resume.pt
    if resumable:
        from . import remote_attack as RA

        if shard.active:  # the resume file is one per run, not per rank
            raise A.AttackSetupError(f"{'--endpoint' if args.endpoint else '--checkpoint-every'} runs in one "
                                     "process: start it without torchrun")
        RA.check_progress_file(os.path.join(out, RA.STATE_FILE))  # a bad one is refused before any work
    if args.endpoint:
        if args.target:
            raise A.AttackSetupError("--endpoint and --target both name the target model: give one")
        target = RA.endpoint_target(args.endpoint, args.dataset, batch_size=args.endpoint_batch,
                                    concurrency=args.endpoint_concurrency, timeout=args.endpoint_timeout,
                                    retries=args.endpoint_retries)
    aset = A.prepare_attack(args.dataset, data_root=args.data_root, target=target, indices=args.indices,
                            count=args.count, device=device, download=args.download, progress=progress)
    n_img = len(aset.ids)
    rows = n_img * trials
    cost = f"{rows} rows x {q + 1} queries x {steps} steps = {rows * (q + 1) * steps:,} model evaluations"
    if shard.main:
        print(f"zol2l attack: {n_img} {args.dataset} images ({aset.target.name}, {space} space) x {trials} trials, "
              f"optimizers {', '.join(optimizers)}, q={q}, mu={mu:g}, c={c:g}, {args.norm}, "
              f"budget {args.budget if args.budget is not None else 'none'}"
              f"{', stop at success' if args.stop_at_success else ''}, device {device}; "
              f"{cost} per optimizer at most"
              + (f"; rows sharded over {shard.world} processes" if shard.active else ""), file=sys.stderr)
    run = A.run_attack
    if resumable:  # a run stopped by a failure, Ctrl-C or a kill resumes with the same command
        if not args.out:
            print(f"zol2l attack: progress goes to {out}; after a failure, resume with --out {out}", file=sys.stderr)
        run = functools.partial(RA.run_resumable_attack, os.path.join(out, RA.STATE_FILE),
                                checkpoint_every=args.checkpoint_every or RA.ENDPOINT_CHECKPOINT_EVERY)
    outcome = run(args.dataset, aset.images, aset.labels, aset.target.model, optimizers,
                  output=aset.output, image_ids=aset.ids, q=q, mu=mu, steps=steps,
                  trials=trials, seed=args.seed, device=device, lrs=lrs, c=c,
                  norm=args.norm, budget=args.budget, stop_at_success=args.stop_at_success,
                  chunk_size=args.chunk_size, learned=learned, learned_name=learned_name,
                  target_name=aset.target.name, classes=aset.classes,
                  optimizer_kwargs=optimizer_kwargs, progress=progress, space=space,
                  shard=shard if shard.active else None)
    if outcome is None:  # a rank other than 0: its rows went to rank 0, which writes the results
        DI.finish(shard)
        return 0
    outcome.results["config"]["lr_source"] = lr_source
    outcome.results["config"]["optimizer_kwargs"] = optimizer_kwargs
    outcome.results["config"]["positions"] = aset.positions
    outcome.results["config"]["target_source"] = aset.target.source
    outcome.results["config"]["wall_seconds_total"] = round(time.perf_counter() - t_start, 2)
    paths = A.write_outputs(outcome, out, loss_x=args.loss_x, loss_log=None if args.loss_axis == "log" else False)
    print(A.format_table(outcome.results))
    if "endpoint" in outcome.results:
        print("endpoint: " + ", ".join(f"{k} {v}" for k, v in outcome.results["endpoint"].items()))
    print(f"wrote {', '.join(paths.values())} ({time.perf_counter() - t_start:.1f} s)")
    DI.finish(shard)
    return 0


def _tuned_lrs(args, optimizers, lrs):
    """(lrs, optimizer_kwargs, lr_source) with --tuned (or the dataset's shipped tuning) applied under --lr."""
    from . import attack as A
    from . import tune as TU

    space = A.dataset_space(args.dataset, getattr(args, "space", None))
    table, source, tuned_task = TU.resolve_tuning(args.tuned, args.dataset, space=space)
    if table is not None and TU.task_dataset(tuned_task) not in (None, args.dataset):
        print(f"zol2l: note: the tuning {source} was made on task {tuned_task}, not on {args.dataset}",
              file=sys.stderr)
    lrs = dict(lrs)
    kwargs: dict = {}
    lr_source: dict = {}
    for name in optimizers:
        if name in lrs:
            lr_source[name] = "--lr"
        elif table is not None and name in table:
            lrs[name] = table[name]["lr"]
            lr_source[name] = source
        elif name in ("zo-lstm", "zo-lstm-no-query", "zo-lstm-guided-es"):
            lr_source[name] = "unused (learned update)"
        elif A.default_lrs(args.dataset, space).get(name) is not None:
            lr_source[name] = "attack.DEFAULT_LRS"
        else:
            lr_source[name] = "optimizer default"
        if table is not None and name in table:
            betas = {k: v for k, v in table[name].items() if k in ("beta1", "beta2")}
            if betas:
                kwargs[name] = betas
    if table is not None:
        parts = []
        for n in optimizers:
            bits = [f"lr {lrs[n]:g}"] if lr_source[n] == source else []
            if n in kwargs:  # tuned betas apply even under an explicit --lr
                bits.append(f"betas {kwargs[n].get('beta1', '-')}/{kwargs[n].get('beta2', '-')}")
            if bits:
                parts.append(f"{n} {' '.join(bits)}")
        print(f"zol2l: learning rates from {source}: " + ("; ".join(parts) or "none of the running optimizers is "
                                                                             "tuned there"), file=sys.stderr)
    return lrs, kwargs, lr_source


def _load_learned(spec: str | None, dataset: str):
    from . import attack as A
    from .zo.lstm_optimizer import LearnedZO

    if spec and (os.path.sep in spec or spec.endswith(".pt")):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"--learned {spec!r}: no such file")
        return LearnedZO.load(spec), spec  # a damaged file: a one-line ValueError naming it
    learned, name = A.find_learned(dataset, [spec] if spec else None)
    if learned is None:
        raise A.AttackSetupError(f"zo-lstm* needs a pretrained learned optimizer: {name}")
    return learned, name


def cmd_train_target(args) -> int:
    from .models import train_target

    path, meta = train_target(args.arch, args.dataset, args.epochs, out=args.out, data_root=args.data_root,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                              progress=not args.no_progress, download=args.download)
    print(f"{meta['name']}: train accuracy {100 * meta['train_accuracy']:.2f}%, test accuracy "
          f"{100 * meta['test_accuracy']:.2f}% after {meta['epochs']} epochs ({meta['train_seconds']:.1f} s); "
          f"saved {path}")
    return 0


def cmd_targets(args) -> int:
    from .models import TARGETS, _own_target_candidates

    for spec in TARGETS.values():
        if spec.staged_file:
            where = f"<data root>/{spec.staged_file}"
        elif spec.name == "digits-cnn":
            where = "trained on first use, cached"
        else:
            found = [p for p in _own_target_candidates(spec.name) if os.path.isfile(p)]
            where = found[0] if found else f"not trained yet (zol2l train-target {spec.arch} {spec.dataset})"
        print(f"{spec.name:<16} {spec.dataset:<8} {spec.output:<8} {where}")
    return 0


def cmd_tune(args) -> int:
    with torch_threads(args.threads):
        return _tune(args)


def _floats(spec: str | None, what: str) -> list | None:
    if spec is None:
        return None
    try:
        return [_fraction(v) for v in spec.split(",") if v.strip()]
    except ValueError as e:
        raise ValueError(f"bad --{what} {spec!r}: use comma-separated numbers") from e


def _fraction(v: str) -> float:
    """'0.5', '1e3' or '1/3'."""
    v = v.strip()
    if "/" in v:
        a, b = v.split("/", 1)
        return float(a) / float(b)
    return float(v)


def _tune(args) -> int:
    from . import attack as A
    from . import tune as TU

    t_start = time.perf_counter()
    device = A.resolve_device(args.device)
    optimizers = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    grid = _floats(args.grid, "grid")
    fine = _floats(args.fine, "fine")
    kw = {}
    if grid is not None:
        kw["grid"] = grid
    if fine is not None:
        kw["fine"] = fine
    print(f"zol2l tune {args.task}: optimizers {', '.join(optimizers)}, trials {args.trials}, device {device}"
          + (f", {args.space} space" if getattr(args, "space", None) else ""), file=sys.stderr)
    from . import tasks as T

    task = T.task_with(args.task, getattr(args, "space", None))
    result = TU.tune_baselines(task, optimizers=optimizers, trials=args.trials, steps=args.steps,
                               seed=args.seed, device=device, data_root=args.data_root,
                               progress=not args.no_progress, batch=not args.no_batch, **kw)
    argv = ["zol2l", "tune", args.task, "--optimizers", ",".join(optimizers), "--trials", str(args.trials)]
    for flag, val in (("--steps", args.steps), ("--seed", args.seed), ("--grid", args.grid), ("--fine", args.fine),
                      ("--space", getattr(args, "space", None))):
        if val is not None:
            argv += [flag, str(val)]
    result["command"] = " ".join(argv)
    out = args.out or os.path.join("runs", f"tune-{args.task}.json")
    TU.save_tuning(result, out)
    print(TU.format_tuning(result))
    print(f"wrote {out}", end="")
    if args.ship:
        shipped = TU.save_tuning(result, TU.shipped_path(args.task))
        print(f" and {shipped}", end="")
    print(f" ({time.perf_counter() - t_start:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]  # the subcommand's own arguments (zol2l train records the command that ran)
    resolve_progress(args)
    from .attack import AttackSetupError
    from .models import ModelOutputError
    from .remote import EndpointError

    try:
        return int(args.func(args) or 0)
    except (D.DataRootError, ModelOutputError, AttackSetupError, FileNotFoundError, ValueError, EndpointError) as e:
        if os.environ.get("ZOL2L_DEBUG"):
            raise
        print(f"zol2l {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
