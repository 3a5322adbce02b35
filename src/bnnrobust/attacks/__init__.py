"""Attacks (one file each), the shared contract, EOT/BPDA, adversarial training, black-box."""

from bnnrobust.attacks.adversarial_training import ADV_KINDS, AdversarialTraining, random_eps
from bnnrobust.attacks.base import (
    TARGET_RULES,
    Attack,
    AttackError,
    AttackResult,
    bpda_mode,
    non_differentiable_layers,
)
from bnnrobust.attacks.blackbox import (
    BlackBoxResult,
    Oracle,
    blackbox_attack,
    jacobian_augmentation,
    train_substitute,
)
from bnnrobust.attacks.cw import CWL2
from bnnrobust.attacks.fgsm import FGSM
from bnnrobust.attacks.jsma import JSMA
from bnnrobust.attacks.pgd import BIM, PGD
from bnnrobust.attacks.registry import ATTACKS, EPS_FREE
from bnnrobust.attacks.rfgsm import RFGSM

__all__ = [
    "ADV_KINDS",
    "ATTACKS",
    "EPS_FREE",
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
    "BlackBoxResult",
    "Oracle",
    "blackbox_attack",
    "bpda_mode",
    "jacobian_augmentation",
    "non_differentiable_layers",
    "random_eps",
    "train_substitute",
]
