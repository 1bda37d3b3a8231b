"""`zol2l attack`: compare ZO optimizers in a black-box attack of a classifier (paper App. A.1).

Settings are resolved once (`settings.resolve_attack`) before any data or model loads, so that a bad value fails
at once; then the images and the target (`attack_setup`), the run (`attack.run_attack`, or the resumable run of
`remote_attack` with --endpoint / --checkpoint-every) and the outputs (`attack.write_outputs`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time

from .. import attack as A
from .. import attack_setup as AS  # AS.prepare_attack looked up at call time: tests stub the loading
from .. import data as D
from .. import distributed as DI
from .. import remote_attack as RA
from .. import settings as S
from ..attack_setup import AttackSetupError, resolve_device
from ..cli_args import add_baseline_flag, nonnegative_float, positive_float, positive_int
from ..fileio import check_output_folder, portable_path
from ..threads import torch_threads
from ..zo.optimizers import optimizer_names
from ..zo.problems import SPACES


def add_parser(sub) -> None:
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
                   help=f"comma-separated: {','.join(optimizer_names())} (default: the tuned baselines "
                        f"{','.join(S.BASELINES)}, plus zo-lstm where a pretrained checkpoint loads)")
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
                            f"{ds} {kw['space']}" for ds, kw in S.DATASET_DEFAULTS.items()) + "); the fallback "
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
    RA.add_endpoint_args(p)
    add_baseline_flag(p, "the dataset's task's")
    p.set_defaults(func=run)


def run(args) -> int:
    threads = args.threads or (1 if args.dataset == "digits" and str(args.device) == "cpu" else None)
    with torch_threads(threads):
        return _attack(args)


def _attack(args) -> int:
    t_start = time.perf_counter()
    progress = not args.no_progress
    # Everything that can be checked without the data and the model is checked first: a bad value fails at once,
    # not after minutes of loading, and the banner below shows the values in force.
    st = S.resolve_attack(args.dataset, q=args.q, mu=args.mu, c=args.c, steps=args.steps, trials=args.trials,
                          space=args.space, optimizers=args.optimizers, learned=args.learned, lr_args=args.lr,
                          tuned=args.tuned, budget=args.budget, baseline=args.baseline)
    device = resolve_device(args.device)

    shard = DI.setup(device)  # under torchrun: this rank's share of the rows; rank 0 alone reports
    out = check_output_folder(DI.broadcast(args.out or os.path.join("runs", f"attack-{args.dataset}-"
                                                                            f"{time.strftime('%Y%m%d-%H%M%S')}"),
                                           shard))
    if shard.active:  # each rank's progress waits there for rank 0's results: a rerun after a kill keeps it
        shard = dataclasses.replace(shard, keep=os.path.join(out, "shards"), checkpoint_every=args.checkpoint_every)
    target = args.target
    if args.endpoint and shard.active:  # its resume file and its query accounting are one per run
        raise AttackSetupError("--endpoint runs in one process: start it without torchrun")
    # one process: its progress goes to OUT/resume.pt (under torchrun, each rank's to OUT/shards/)
    resumable = bool(args.endpoint or args.checkpoint_every) and not shard.active
    if resumable:
        RA.check_progress_file(os.path.join(out, RA.STATE_FILE))  # a bad one is refused before any work
    if args.endpoint:
        if args.target:
            raise AttackSetupError("--endpoint and --target both name the target model: give one")
        target = RA.endpoint_target(args.endpoint, args.dataset, batch_size=args.endpoint_batch,
                                    concurrency=args.endpoint_concurrency, timeout=args.endpoint_timeout,
                                    retries=args.endpoint_retries)
    aset = AS.prepare_attack(args.dataset, data_root=args.data_root, target=target, indices=args.indices,
                             count=args.count, device=device, download=args.download, progress=progress)
    n_img = len(aset.ids)
    rows = n_img * st.trials
    cost = (f"{rows} rows x {st.q + 1} queries x {st.steps} steps = {rows * (st.q + 1) * st.steps:,} model "
            "evaluations")
    if shard.main:
        print(f"zol2l attack: {n_img} {args.dataset} images ({aset.target.name}, {st.space} space) x {st.trials} "
              "trials, "
              f"optimizers {', '.join(st.optimizers)}, q={st.q}, mu={st.mu:g}, c={st.c:g}, {args.norm}, "
              f"budget {args.budget if args.budget is not None else 'none'}"
              f"{', stop at success' if args.stop_at_success else ''}"
              f"{f', estimator baseline {st.baseline}' if st.baseline != 'f0' else ''}, device {device}; "
              f"{cost} per optimizer at most"
              + (f"; rows sharded over {shard.world} processes" if shard.active else ""), file=sys.stderr)
    attack_fn = A.run_attack
    if resumable:  # a run stopped by a failure, Ctrl-C or a kill resumes with the same command
        if not args.out:
            print(f"zol2l attack: progress goes to {out}; after a failure, resume with --out {out}", file=sys.stderr)
        attack_fn = functools.partial(RA.run_resumable_attack, os.path.join(out, RA.STATE_FILE),
                                      checkpoint_every=args.checkpoint_every or RA.ENDPOINT_CHECKPOINT_EVERY)
    outcome = attack_fn(args.dataset, aset.images, aset.labels, aset.target.model, st.optimizers,
                        output=aset.output, image_ids=aset.ids, q=st.q, mu=st.mu, steps=st.steps,
                        trials=st.trials, seed=args.seed, device=device, lrs=st.lrs, c=st.c,
                        norm=args.norm, budget=args.budget, stop_at_success=args.stop_at_success,
                        chunk_size=args.chunk_size, learned=st.learned, learned_name=st.learned_name,
                        target_name=aset.target.name, classes=aset.classes,
                        optimizer_kwargs=st.optimizer_kwargs, progress=progress, space=st.space,
                        shard=shard if shard.active else None)
    if outcome is None:  # a rank other than 0: its rows went to rank 0, which writes the results
        DI.finish(shard)
        return 0
    outcome.results["config"]["lr_source"] = st.lr_source
    outcome.results["config"]["optimizer_kwargs"] = st.optimizer_kwargs
    outcome.results["config"]["positions"] = aset.positions
    outcome.results["config"]["target_source"] = portable_path(aset.target.source)
    outcome.results["config"]["wall_seconds_total"] = round(time.perf_counter() - t_start, 2)
    paths = A.write_outputs(outcome, out, loss_x=args.loss_x, loss_log=None if args.loss_axis == "log" else False)
    print(A.format_table(outcome.results))
    if "endpoint" in outcome.results:
        print("endpoint: " + ", ".join(f"{k} {v}" for k, v in outcome.results["endpoint"].items()))
    print(f"wrote {', '.join(paths.values())} ({time.perf_counter() - t_start:.1f} s)")
    DI.finish(shard)
    return 0
