"""Evaluation: accuracy under attack over ε, worst case over attacks, CW curves, diagnostics."""

from bnnrobust.evaluate.autoattack import autoattack, autoattack_suite
from bnnrobust.evaluate.diagnostics import EXPLANATIONS, Flag, diagnose, transfer_vs_white_box
from bnnrobust.evaluate.exact import Certified, SolveSummary, certified, solve_summary
from bnnrobust.evaluate.robustness import (
    Row,
    WorstCase,
    accuracy_under_attack,
    attack_class,
    concatenate,
    cw_accuracy_curve,
    expand_targets,
    run_batched,
    worst_case,
)

__all__ = [
    "EXPLANATIONS",
    "Certified",
    "Flag",
    "Row",
    "SolveSummary",
    "WorstCase",
    "accuracy_under_attack",
    "autoattack",
    "autoattack_suite",
    "attack_class",
    "certified",
    "concatenate",
    "cw_accuracy_curve",
    "diagnose",
    "expand_targets",
    "run_batched",
    "solve_summary",
    "transfer_vs_white_box",
    "worst_case",
]
