"""Writing a learned optimizer under a name (`zol2l train --export`, `zol2l boost --export`): into the user's
folder by default, so that an installed package is never written to, or into the package with --into-package."""
from __future__ import annotations

import os
import sys

from .. import settings as S
from ..zo import lstm_optimizer as LZ  # LZ.PRETRAINED_DIR looked up at call time: tests redirect it


def add_export_args(p, what: str) -> None:
    """--export NAME and --into-package of a command that makes ``what`` weights."""
    p.add_argument("--export", default=None, metavar="NAME",
                   help=f"also write the {what} weights, with the commands that made them, as NAME into your folder "
                        "($ZOL2L_USER_DIR/pretrained/NAME.pt, default ~/.cache/zol2l/...), where --learned NAME, "
                        "--init NAME and --weights NAME find them before the package's")
    p.add_argument("--into-package", action="store_true",
                   help="with --export: write zol2l_ext/pretrained/NAME.pt of the package instead (to ship them)")


def export_learned(model, meta: dict, name: str, into_package: bool, who: str) -> str:
    """Saves ``model`` with ``meta`` as ``name``; says where and how to ship it. Returns the path."""
    path = str(LZ.PRETRAINED_DIR / f"{name}.pt") if into_package else S.user_pretrained_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save(path, meta=meta)
    print(f"{who}: exported {path}")
    if not into_package:
        shadows = " (it comes before the package's file of that name)" if name in LZ.LearnedZO.available_pretrained() \
            else ""
        print(f"{who}: --learned {name} finds it{shadows}; to ship it with the package, run again with --export "
              f"{name} --into-package (or copy it to zol2l_ext/pretrained/)", file=sys.stderr)
    return path
