"""``zol2l train``: meta-train the learned ZO optimizer on a task (see zo.meta_trainer for the method)."""
from __future__ import annotations

import os
import shlex
import sys
import time

import torch

from .. import data as D
from .. import distributed as DI
from .. import settings as S
from .. import tasks as T
from ..cli_args import add_baseline_flag
from ..fileio import portable_argv
from ..tasks import TASK_NAMES
from ..threads import torch_threads
from ..zo import meta_trainer as MT  # MT.MetaTrainer looked up at call time: tests record its arguments
from ..zo.lstm_optimizer import LearnedZO
from ..zo.meta_heldout import ALPHA_GRID, STEP_GRID, pick_update_scale
from ..zo.meta_trainer import MetaTrainConfig
from ..zo.problems import SPACES
from ._export import add_export_args, export_learned

# Default meta-batch per stage: stage 2 differentiates the black box at all B x (q + 1) query points (first-order
# mode), about 8x the cost of a stage-1 step, so it takes fewer problems per update.
DEFAULT_BATCH = {1: 10, 2: 2}
def add_parser(sub) -> None:
    p = sub.add_parser("train", help="meta-train the learned optimizer (ZO-LSTM) on a task",
                       description="Truncated-BPTT meta-training of the UpdateRNN (stage 1) or the QueryRNN "
                                   "(stage 2, UpdateRNN frozen) on a task's training problems; keeps the best "
                                   "weights by the held-out objective (the loss curve weighted as --weighting). "
                                   "Writes checkpoint.pt "
                                   "(resumable), best.pt, log.json, log.csv and curves.png into --out.")
    p.add_argument("task", choices=TASK_NAMES, help="the task whose training problems train the optimizer")
    p.add_argument("--stage", type=int, choices=(1, 2), default=1,
                   help="1: train the UpdateRNN with Gaussian directions (default); 2: train the QueryRNN with "
                        "the UpdateRNN frozen (give the stage-1 weights with --init)")
    p.add_argument("--grad-mode", choices=("first-order", "zeroth-order"), default="first-order",
                   help="optimizee gradient of the meta-loss: autograd through the black box (training only) or "
                        "coordinatewise central differences (eq. 5)")
    p.add_argument("--epochs", type=int, default=10,
                   help="epochs; each ends with the held-out check that keeps the best weights (default 10)")
    p.add_argument("--updates-per-epoch", type=int, default=5, help="meta-updates per epoch (default 5)")
    p.add_argument("--batch", type=int, default=None, help="problems per meta-batch (default 10; stage 2: 2)")
    p.add_argument("--horizon", type=int, default=None, help="steps per trajectory (default: the task's)")
    p.add_argument("--unroll", type=int, default=None, help="truncated-BPTT window (default 20)")
    p.add_argument("--q", type=int, default=None, help="query directions per step (default: the task's)")
    p.add_argument("--mu", type=float, default=None,
                   help="smoothing radius of the gradient estimator (default: the task's)")
    p.add_argument("--lr", type=float, default=None, help="Adam lr (default 1e-3 stage 1, 5e-3 stage 2)")
    p.add_argument("--lam", type=float, default=0.005, help="eq. 4's lambda (stage 2)")
    p.add_argument("--clip", type=float, default=1.0,
                   help="meta-gradient clipping threshold (global norm, or elementwise with --clip-mode value)")
    p.add_argument("--clip-mode", choices=("norm", "value"), default="norm",
                   help="clip the meta-gradient by its global norm (default) or each entry to [-clip, clip] "
                        "(the reference code's)")
    p.add_argument("--no-normalize", action="store_true",
                   help="do not divide each problem's meta-loss by its starting loss (eq. 4 as written)")
    p.add_argument("--space", choices=SPACES, default=None,
                   help="attack tasks: the variable's parameterisation (default: the task's)")
    p.add_argument("--scaling", choices=("rms", "none"), default="rms",
                   help="a fresh model's scaling: 'rms' (scale-free inputs, learned step over a normalised "
                        "ZO-SGD step) or 'none' (the reference code's raw input and output)")
    p.add_argument("--step", default="auto",
                   help="a fresh 'rms' model's starting step: a number, or 'auto' to pick it from "
                        f"{{{', '.join(f'{a:g}' for a in STEP_GRID)}}} by the untrained model's held-out "
                        "objective (the loss curve weighted as --weighting)")
    p.add_argument("--objective", choices=("eq4", "reference"), default="eq4",
                   help="eq. 4's sum of w_t f(theta_t), or the reference code's w_t (f_t - f_{t-1}) with f_{t-1} "
                        "detached (the same meta-gradient; only the logged value differs)")
    p.add_argument("--weighting", choices=("linear", "uniform"), default="uniform",
                   help="w_t of the meta-objective: t (eq. 4, the late steps weigh most) or 1 (uniform: the area "
                        "under the loss curve, the default: early progress, which decides the queries to a "
                        "first success, counts as much as the end)")
    p.add_argument("--zo-mu", type=float, default=1e-3, help="central-difference radius (zeroth-order mode)")
    p.add_argument("--zo-chunk", type=int, default=None, help="coordinates per call of the central differences")
    p.add_argument("--query-prob", type=float, default=0.5,
                   help="stage 2: the Bernoulli p with which the QueryRNN's scale is used at test time (the "
                        "held-out evaluation's, saved with the weights as the default of ZO-LSTM; the paper's 0.5)")
    p.add_argument("--val-trials", type=int, default=1,
                   help="runs per held-out problem, with other directions, in the held-out check (default 1)")
    p.add_argument("--val-steps", type=int, default=None,
                   help="steps of the held-out check (default: --horizon)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, problems and directions (default 0)")
    p.add_argument("--init", default=None,
                   help="start from these weights: a pretrained name or a .pt path (stage 2: the stage-1 best.pt)")
    p.add_argument("--update-scale", default="1",
                   help="multiply the UpdateRNN output by ALPHA at the start (transfer to another task), baked "
                        "into its head so that the saved weights carry it; 'auto' picks ALPHA from "
                        f"{{{', '.join(f'{a:g}' for a in ALPHA_GRID)}}} by the held-out objective of the "
                        "--init weights (the loss curve weighted as --weighting)")
    p.add_argument("--out", default=None, help="output folder (default runs/train-<task>-stage<k>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt when it exists")
    add_export_args(p, "best")
    p.add_argument("--data-root", default=None, help=f"data folder (else ${D.ENV_DATA})")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars, even on a terminal")
    add_baseline_flag(p, note="; saved with the weights")
    p.set_defaults(func=run)


def run(args) -> int:
    with torch_threads(args.threads):
        return _train(args)


def _train(args) -> int:


    spec = T.task_with(args.task, args.space, args.baseline)
    cfg = MetaTrainConfig(
        task=spec.name, stage=args.stage, grad_mode=args.grad_mode, epochs=args.epochs,
        updates_per_epoch=args.updates_per_epoch, batch=args.batch or DEFAULT_BATCH[args.stage],
        horizon=args.horizon or spec.horizon, unroll=args.unroll or spec.unroll, q=args.q or spec.q,
        mu=args.mu or spec.mu, lam=args.lam, clip=args.clip, clip_mode=args.clip_mode,
        normalize=not args.no_normalize, weighting=args.weighting, objective=args.objective, zo_mu=args.zo_mu,
        zo_chunk=args.zo_chunk, val_steps=args.val_steps, val_trials=args.val_trials, query_prob=args.query_prob,
        seed=args.seed, baseline=spec.baseline)
    if args.lr is not None:
        if args.stage == 1:
            cfg.lr_update = args.lr
        else:
            cfg.lr_query = args.lr
    cfg.validate()
    command = "zol2l train " + " ".join(shlex.quote(a) for a in portable_argv(args.argv))
    commands = [command]
    model = None
    if args.init:
        model = S.load_learned(args.init)[0]
        commands = list(getattr(model, "meta", {}).get("commands", [])) + commands
    elif args.stage == 2:
        DI.note("zol2l train: stage 2 without --init trains the QueryRNN next to an untrained UpdateRNN "
                "(pass the stage-1 best.pt)")
    fresh_step = None
    if model is None:
        if args.scaling == "rms" and str(args.step).lower() != "auto":
            try:
                fresh_step = float(args.step)
            except ValueError as e:
                raise ValueError(f"--step must be a number or 'auto', got {args.step!r}") from e
        torch.manual_seed(args.seed)  # fresh weights from --seed: the same command trains the same optimizer
        model = LearnedZO(scaling=args.scaling, step=fresh_step or 1.0)
        if args.scaling == "rms" and fresh_step is None:  # (resuming keeps the checkpoint's step: alpha 1)
            args.update_scale = "auto"  # the fresh model's step is picked like a transfer factor, from STEP_GRID
    out = args.out or os.path.join("runs", f"train-{spec.name}-stage{args.stage}")
    device = torch.device(args.device)
    shard = DI.setup(device)  # under torchrun: each rank its block of the meta-batch; rank 0 alone writes
    train = T.load_task(spec, "train", data_root=args.data_root, device=device)
    val = T.load_task(spec, "val", data_root=args.data_root, device=device)
    meta = {"commands": commands, "init": args.init or "", "task": spec.name}
    resuming = args.resume and os.path.isfile(os.path.join(out, "checkpoint.pt"))
    if str(args.update_scale).lower() == "auto":
        if resuming:
            alpha = 1.0  # the checkpoint's weights already carry the alpha picked at the start
        else:
            grid = STEP_GRID if args.init is None and model.scaling == "rms" else ALPHA_GRID
            alpha, scores = pick_update_scale(model.to(device), val, cfg, grid=grid, progress=not args.no_progress)
            meta["alpha_scores"] = {f"{a:g}": v for a, v in scores.items()}
    else:
        try:
            alpha = float(args.update_scale)
        except ValueError as e:
            raise ValueError(f"--update-scale must be a number or 'auto', got {args.update_scale!r}") from e
    if alpha != 1.0 and not resuming:
        model.scale_update(alpha)
        meta["update_scale_applied"] = float(alpha)
        DI.note(f"zol2l train: UpdateRNN output scaled by alpha = {alpha:g}")
    # rank 0 alone evaluates on the held-out set and writes; the others go on to the next update's all-reduce
    trainer = MT.MetaTrainer(cfg, train, val if shard.main else None, model=model,
                          out_dir=out if shard.main else None, device=device,
                          progress=not args.no_progress and shard.main, meta=meta,
                          shard=shard if shard.active else None)
    ck = os.path.join(out, "checkpoint.pt")
    if resuming:
        trainer.load_checkpoint(ck)
        DI.note(f"zol2l train: resumed from {ck} at update {trainer.update_count}")
    elif os.path.isfile(ck) and not args.resume:
        DI.note(f"zol2l train: {ck} exists; starting afresh over it (pass --resume to continue it)")
    DI.note(f"zol2l train: {spec.name} stage {cfg.stage} ({cfg.grad_mode}), {len(train)} training problems, "
            f"batch {cfg.batch}, {cfg.epochs} x {cfg.updates_per_epoch} updates of {cfg.horizon} steps "
            f"(unroll {cfg.unroll}), q={cfg.q}; held-out: {len(val)} problems -> {out}")
    t0 = time.perf_counter()
    try:
        trainer.fit()
    except KeyboardInterrupt:
        print(f"\nzol2l train: interrupted; {ck} holds the last finished update ({trainer.update_count}); "
              f"rerun with --resume to continue", file=sys.stderr)
        return 130
    DI.finish(shard)
    if not shard.main:
        return 0
    best = trainer.best
    print(f"zol2l train: done in {time.perf_counter() - t0:.1f} s; best held-out objective "
          f"{best.get('val_objective', float('nan')):.4g} (mean final loss {best.get('val_final_loss'):.4g}) at "
          f"epoch {best.get('epoch')}; weights {os.path.join(out, 'best.pt')}")
    if args.export:
        best_model = trainer.best_model()
        export_learned(best_model, dict(best_model.meta, name=args.export), args.export, args.into_package,
                       "zol2l train")
    return 0
