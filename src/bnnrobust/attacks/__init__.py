"""White-box attacks (one file each), the shared contract, EOT/BPDA, adversarial training."""

from bnnrobust.attacks.adversarial_training import ADV_KINDS, AdversarialTraining, random_eps
from bnnrobust.attacks.base import (
    TARGET_RULES,
    Attack,
    AttackError,
    AttackResult,
    bpda_mode,
    non_differentiable_layers,
)
from bnnrobust.attacks.cw import CWL2
from bnnrobust.attacks.fgsm import FGSM
from bnnrobust.attacks.jsma import JSMA
from bnnrobust.attacks.pgd import BIM, PGD
from bnnrobust.attacks.rfgsm import RFGSM

ATTACKS = {cls.name: cls for cls in (FGSM, BIM, PGD, RFGSM, CWL2, JSMA)}

__all__ = [
    "ADV_KINDS",
    "ATTACKS",
    "BIM",
    "CWL2",
    "FGSM",
    "JSMA",
    "PGD",
    "RFGSM",
    "TARGET_RULES",
    "AdversarialTraining",
    "Attack",
    "AttackError",
    "AttackResult",
    "bpda_mode",
    "non_differentiable_layers",
    "random_eps",
]
