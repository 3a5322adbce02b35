"""Exact and combinatorial attacks on fully connected BNNs (Khalil et al. 2019)."""

from bnnrobust.attacks.combinatorial.cpsat import (
    ExactResult,
    FirstLayer,
    cpsat_attack,
    eps_steps,
    objective_of,
)
from bnnrobust.attacks.combinatorial.export import ExportError, IntegerBNN, IntegerLayer, export

__all__ = [
    "ExactResult",
    "ExportError",
    "IntegerBNN",
    "IntegerLayer",
    "cpsat_attack",
    "eps_steps",
    "export",
    "objective_of",
]
