"""Exact and combinatorial attacks on fully connected BNNs (Khalil et al. 2019).

Needs OR-Tools and SciPy (the ``cpsat`` / ``highs`` extras): importing this package without it raises
ImportError.
"""

from bnnrobust.attacks.combinatorial.baseline import iterated_fgsm
from bnnrobust.attacks.combinatorial.cpsat import (
    ExactResult,
    FirstLayer,
    cpsat_attack,
    eps_steps,
    objective_of,
)
from bnnrobust.attacks.combinatorial.export import ExportError, IntegerBNN, IntegerLayer, export
from bnnrobust.attacks.combinatorial.iprop import IProp
from bnnrobust.attacks.combinatorial.milp import (
    BACKENDS,
    Certificate,
    MILPAttack,
    MinimalEps,
    certify,
    minimal_eps,
)

__all__ = [
    "BACKENDS",
    "Certificate",
    "ExactResult",
    "ExportError",
    "FirstLayer",
    "IProp",
    "IntegerBNN",
    "IntegerLayer",
    "MILPAttack",
    "MinimalEps",
    "certify",
    "cpsat_attack",
    "eps_steps",
    "export",
    "iterated_fgsm",
    "minimal_eps",
    "objective_of",
]
