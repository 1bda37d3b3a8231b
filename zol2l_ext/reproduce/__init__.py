"""`zol2l reproduce`: every experiment of the paper (Ruan et al., ICLR 2020) as one command.

``EXPERIMENTS`` maps each command name to its module in this package (see `core` for what a module holds);
`core.run_experiment` runs one, `report.write_report` turns the saved results into docs/RESULTS.md.
"""
from __future__ import annotations

#: command name -> module of this package, in the paper's order
EXPERIMENTS = {
    "fig2": "fig2_attack",
    "fig3": "fig3_binary",
    "fig4abc": "fig4abc_ablation",
    "fig4d": "fig4d_cosine",
    "fig4e": "fig4e_trajectory",
    "fig8": "fig8_dimension",
    "fig9": "fig9_perturbation",
    "fig10": "fig10_bernoulli",
    "fig11": "fig11_szvrg",
    "table1": "table1_examples",
}

from .core import SCALES, run_experiment  # noqa: E402

__all__ = ["EXPERIMENTS", "SCALES", "run_experiment"]
