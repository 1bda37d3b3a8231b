"""The ``zol2l`` command line: builds the parser from `commands.COMMANDS` and dispatches to the subcommand.

    zol2l attack [digits|mnist|cifar10] ...   black-box attack: compare ZO optimizers on a classifier
    zol2l train-target ARCH DATASET ...       train a target classifier
    zol2l targets                             list the target models
    zol2l tune TASK ...                       tune the baselines' learning rates
    zol2l train TASK ...                      meta-train the learned optimizer
    zol2l boost TASK ...                      pick a learned optimizer's early-step boost
    zol2l evaluate TASK ...                   compare optimizers on a task's test part
    zol2l reproduce ...                       the paper's experiments
    zol2l serve ...                           a target model behind HTTP

``zol2l attack`` without a dataset runs the embedded default: scikit-learn's 8x8 digits, a small CNN trained on
the fly (cached), a handful of images, ZO-SGD, ZO-signSGD and ZO-ADAM (plus ZO-LSTM where a pretrained
checkpoint exists). No network, no data root. ``zol2l COMMAND --help`` gives each command's options.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from . import data as D
from .attack_setup import AttackSetupError
from .cli_args import add_progress_flags, resolve_progress
from .commands import COMMANDS
from .models import ModelOutputError
from .remote import EndpointError

# Errors a user can fix: one line on stderr and exit status 2 (ZOL2L_DEBUG=1 shows the traceback instead).
USER_ERRORS = (D.DataRootError, ModelOutputError, AttackSetupError, FileNotFoundError, ValueError, EndpointError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zol2l", description="Learned zeroth-order optimization (ZO-L2L): "
                                                               "black-box attacks and target models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    add_progress_flags(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]  # the subcommand's own arguments (zol2l train records the command that ran)
    resolve_progress(args)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get("ZOL2L_DEBUG"):
            raise
        print(f"zol2l {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
