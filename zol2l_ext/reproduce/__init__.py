"""`zol2l reproduce`: every experiment of the paper (Ruan et al., ICLR 2020) as one command.

``EXPERIMENTS`` maps each command name to its module in this package (see `core` for what a module holds);
`core.run_experiment` runs one, `report.write_report` turns the saved results into docs/RESULTS.md.
"""
from __future__ import annotations

from .core import EXPERIMENTS, SCALES, run_experiment

__all__ = ["EXPERIMENTS", "SCALES", "run_experiment"]
