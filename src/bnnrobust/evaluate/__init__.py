"""Evaluation: accuracy under attack over ε, worst case over attacks, CW curves, diagnostics."""

from bnnrobust.evaluate.diagnostics import EXPLANATIONS, Flag, diagnose, transfer_vs_white_box
from bnnrobust.evaluate.robustness import (
    Row,
    WorstCase,
    accuracy_under_attack,
    attack_class,
    cw_accuracy_curve,
    expand_targets,
    run_batched,
    worst_case,
)

__all__ = [
    "EXPLANATIONS",
    "Flag",
    "Row",
    "WorstCase",
    "accuracy_under_attack",
    "attack_class",
    "cw_accuracy_curve",
    "diagnose",
    "expand_targets",
    "run_batched",
    "transfer_vs_white_box",
    "worst_case",
]
