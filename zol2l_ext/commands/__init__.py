"""The ``zol2l`` subcommands, one module each, all of the same shape: ``add_parser(sub)`` adds the subcommand's
parser to argparse's subparsers and sets ``func`` to the module's ``run(args) -> int``. `cli.main` only builds
the parser from `COMMANDS` (in this order) and dispatches."""
from __future__ import annotations

from . import attack, boost, evaluate, reproduce, serve, targets, train, train_target, tune

#: the subcommands in the order `zol2l --help` lists them
COMMANDS = (attack, train_target, targets, tune, train, boost, evaluate, reproduce, serve)
