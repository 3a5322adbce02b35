"""Exact and combinatorial attacks on BNNs (Khalil et al. 2019): fully connected ones, and
Galloway et al.'s convolutional B model on the continuous problem (:mod:`.conv_export`);
certification with cheap bounds first (:mod:`.bounds`).

Needs OR-Tools and SciPy (the ``cpsat`` / ``highs`` extras): importing this package without
them raises ImportError. Every attack here follows the one contract (``run(x, y)``; see
:mod:`.attack`); the per-point solvers are :func:`.cpsat.cpsat_attack`,
:func:`.highs.highs_attack`, :func:`.baseline.iterated_fgsm`, :func:`.milp.certify_point`.
"""

from bnnrobust.attacks.combinatorial.attack import ExactAttack, ExactParams, TargetedParams
from bnnrobust.attacks.combinatorial.baseline import IteratedFGSM, iterated_fgsm
from bnnrobust.attacks.combinatorial.cpsat import FirstLayer, cpsat_attack
from bnnrobust.attacks.combinatorial.export import (
    ExportError,
    IntegerBNN,
    IntegerBNNModule,
    IntegerLayer,
    export,
)
from bnnrobust.attacks.combinatorial.iprop import IProp
from bnnrobust.attacks.combinatorial.milp import (
    BACKENDS,
    Certificate,
    Certify,
    MILPAttack,
    MinimalEps,
    certify_point,
    minimal_eps,
)
from bnnrobust.attacks.combinatorial.problem import ExactResult, eps_steps, objective_of

__all__ = [
    "BACKENDS",
    "Certificate",
    "Certify",
    "ExactAttack",
    "ExactParams",
    "ExactResult",
    "ExportError",
    "FirstLayer",
    "IProp",
    "IntegerBNN",
    "IntegerBNNModule",
    "IntegerLayer",
    "IteratedFGSM",
    "MILPAttack",
    "MinimalEps",
    "TargetedParams",
    "certify_point",
    "cpsat_attack",
    "eps_steps",
    "export",
    "iterated_fgsm",
    "minimal_eps",
    "objective_of",
]
