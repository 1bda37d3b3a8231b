"""`zol2l targets`: the target models and where each comes from."""
from __future__ import annotations

import os

from ..models import TARGETS, own_target_candidates


def add_parser(sub) -> None:
    p = sub.add_parser("targets", help="list the target models and where they come from")
    p.set_defaults(func=run)


def run(args) -> int:
    for spec in TARGETS.values():
        if spec.staged_file:
            where = f"<data root>/{spec.staged_file}"
        elif spec.name == "digits-cnn":
            where = "trained on first use, cached"
        else:
            found = [p for p in own_target_candidates(spec.name) if os.path.isfile(p)]
            where = found[0] if found else f"not trained yet (zol2l train-target {spec.arch} {spec.dataset})"
        print(f"{spec.name:<16} {spec.dataset:<8} {spec.output:<8} {where}")
    return 0
