"""The quality check of the learned optimizer: every optimizer on a task's test problems, and the issue's criteria.

The parts live in `zol2l_ext.evaluation`: ``run`` (`evaluate_task`, and the learned optimizer and the baselines'
tuned learning rates it runs with), ``quality`` (`quality_criteria`: the three claims, saying where the learned
optimizer does not win), ``report`` (`write_evaluation`: results.json, paired_criteria.json, loss_curves.png and
quality.md; `format_table`, `format_criteria`, `plot_curves`) and ``common`` (the result format, the optimizers
compared, the paired criteria's steps). `criteria.paired_criteria(result)` checks the issue's paired,
noise-aware criteria. This module gathers the public names, so that ``from zol2l_ext import evaluate as E``
reaches all of them.
"""
from __future__ import annotations

from .evaluation.common import BASELINES, DEFAULT_OPTIMIZERS, FORMAT, ITEM_STEPS
from .evaluation.quality import quality_criteria
from .evaluation.report import format_criteria, format_table, plot_curves, write_evaluation
from .evaluation.run import baseline_settings, evaluate_task, resolve_learned, resolve_tuned

__all__ = ["FORMAT", "DEFAULT_OPTIMIZERS", "BASELINES", "ITEM_STEPS", "evaluate_task", "quality_criteria",
           "write_evaluation", "format_table", "format_criteria", "plot_curves", "resolve_learned",
           "resolve_tuned", "baseline_settings"]
