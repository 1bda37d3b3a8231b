"""``zol2l serve``: a target model behind a small HTTP service (serve.py), with faults to inject on purpose.

    zol2l serve [digits|mnist|cifar10] [--target NAME|PATH|module:factory] [--host 127.0.0.1] [--port 8080]
                [--latency S] [--error-rate P] [--drop-rate P] [--rate-limit R] [--fault-seed S]

then ``zol2l attack DATASET --endpoint http://127.0.0.1:8080/predict`` attacks it. It listens on 127.0.0.1
unless --host says otherwise: the service has no authentication.
"""
from __future__ import annotations

import argparse
import sys

import torch

from .. import data as D
from ..attack_setup import resolve_device
from ..cli_args import nonnegative_float, nonnegative_int, positive_float, positive_int
from ..serve import Faults, ScoringServer
from ..user_targets import resolve_target


def _rate(text: str) -> float:
    v = nonnegative_float(text)
    if v >= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1), got {text!r}")
    return v


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a target model over HTTP (for --endpoint attacks), faults optional",
                       description="Serves a target classifier at http://HOST:PORT/predict (POST an .npy float32 "
                                   "batch [n, C, H, W] of images in [0, 1]; the answer is an .npy batch of scores "
                                   "[n, K]); GET /health and /stats describe it. The fault options make it a test "
                                   "bench for the attack's retries. Stop it with Ctrl-C.")
    p.add_argument("dataset", nargs="?", default="digits", choices=D.DATASETS,
                   help="the data set the target classifies (default digits: no data root needed)")
    p.add_argument("--target", default=None,
                   help="the model, as for `zol2l attack --target` (default: the dataset's default target)")
    p.add_argument("--data-root", default=None, help=f"folder holding models/ (else ${D.ENV_DATA})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=nonnegative_int, default=8080, help="port (default 8080; 0: any free port)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--latency", type=nonnegative_float, default=0.0,
                   help="added latency per request, uniform in [0, S] seconds (default 0)")
    p.add_argument("--error-rate", type=_rate, default=0.0, help="fraction of requests answered 503 (default 0)")
    p.add_argument("--drop-rate", type=_rate, default=0.0,
                   help="fraction of requests whose connection is closed with no answer (default 0)")
    p.add_argument("--rate-limit", type=positive_float, default=None,
                   help="requests per second beyond which it answers 429 with Retry-After (default: no limit)")
    p.add_argument("--fault-seed", type=int, default=0, help="seed of the injected faults (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:


    if args.threads:
        torch.set_num_threads(args.threads)
    faults = Faults(latency=args.latency, error_rate=args.error_rate, drop_rate=args.drop_rate,
                    rate_limit=args.rate_limit, seed=args.fault_seed)
    device = resolve_device(args.device)
    tgt = resolve_target(args.target, args.dataset, data_root=args.data_root, device=device, progress=False)
    shape = getattr(tgt.model, "input_shape", None)  # the built-in architectures declare theirs: checked per request
    try:
        server = ScoringServer(tgt.model, host=args.host, port=args.port, faults=faults, input_shape=shape,
                               name=tgt.name, device=device)
    except OSError as e:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    print(f"zol2l serve: {tgt.name} ({args.dataset}) at {server.url} (faults: {faults.describe()}); Ctrl-C stops",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    print(f"zol2l serve: stopped; {server.stats()}", file=sys.stderr)
    return 0
