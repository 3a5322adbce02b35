"""AutoAttack (Croce & Hein 2020): the parameter-free ensemble run as a cascade, in our contract.

``version="standard"`` (fra31/auto-attack's L∞ standard): APGD-CE, APGD-T (targeted DLR, 9
targets), FAB-T (9 targets), Square (5,000 queries), each with its paper defaults (100 steps,
one run) and each on the points every earlier one failed on; a point is robust when it is
classified correctly and survives all four. ``version="rand"`` (for models with randomness at
inference): APGD-CE and APGD-DLR with EOT over 20 passes. The gradient attacks take
``eot_samples`` and ``bpda`` (the adaptive evaluation of random or non-differentiable
defenses); Square needs neither.

Example::

    wc = autoattack(model, x, y, eps=0.3)
    wc.accuracy, wc.accuracy_after      # robust accuracy, and after each attack in turn
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bnnrobust.attacks import Attack, AttackError
from bnnrobust.attacks.apgd import APGD, APGDT
from bnnrobust.attacks.base import check_budget, check_choice
from bnnrobust.attacks.fab import FABT
from bnnrobust.attacks.square import Square
from bnnrobust.evaluate.robustness import WorstCase, worst_case

VERSIONS = ("standard", "rand")
#: EOT passes of AutoAttack's "rand" version
RAND_EOT = 20


def autoattack_suite(model: nn.Module, *, eps: float, version: str = "standard",
                     seed: int = 0, eot_samples: int = 1, bpda: bool = False,
                     steps: int = 100, queries: int = 5000,
                     num_classes: int = 10) -> dict[str, Attack]:
    """AutoAttack's attacks of ``version`` on ``model`` at L∞ budget ``eps``, by label, in the
    order the cascade runs them; ``steps``: iterations of APGD and FAB (AutoAttack's 100),
    ``queries``: Square's (5,000). With ``num_classes`` below 10 the targeted attacks aim at
    every other class; below 4 APGD-T is left out (its targeted DLR loss needs 4 classes, as
    fra31/auto-attack's checks say), below 3 APGD-DLR too."""
    check_budget("eps", eps)
    check_choice("version", version, VERSIONS)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise AttackError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
    targets = min(9, num_classes - 1)
    adaptive: dict[str, Any] = {"seed": seed, "bpda": bpda, "steps": steps}
    if version == "rand":
        adaptive["eot_samples"] = max(eot_samples, RAND_EOT)
        attacks = {"APGD-CE": APGD(model, eps=eps, loss="ce", **adaptive)}
        if num_classes >= 3:
            attacks["APGD-DLR"] = APGD(model, eps=eps, loss="dlr", **adaptive)
        return attacks
    adaptive["eot_samples"] = eot_samples
    attacks = {"APGD-CE": APGD(model, eps=eps, loss="ce", **adaptive)}
    if num_classes >= 4:
        attacks["APGD-T"] = APGDT(model, eps=eps, targets=targets, **adaptive)
    attacks["FAB-T"] = FABT(model, eps=eps, targets=targets, **adaptive)
    attacks["Square"] = Square(model, eps=eps, seed=seed, queries=queries)
    return attacks


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               version: str = "standard", seed: int = 0, eot_samples: int = 1,
               bpda: bool = False, steps: int = 100, queries: int = 5000, passes: int = 5,
               batch_size: int = 256, num_classes: int = 10) -> WorstCase:
    """Robust accuracy of ``model`` on ``(x, y)`` under AutoAttack at L∞ budget ``eps``
    (see the module doc and :func:`autoattack_suite`); ``passes``: forward passes averaged
    when judging a random model."""
    attacks = autoattack_suite(model, eps=eps, version=version, seed=seed,
                               eot_samples=eot_samples, bpda=bpda, steps=steps,
                               queries=queries, num_classes=num_classes)
    return worst_case(model, x, y, attacks, budget=eps, passes=passes, seed=seed,
                      batch_size=batch_size, cascade=True)
