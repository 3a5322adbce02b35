"""Attacks (one file each) under one contract (:mod:`.base`), the catalogue that names them
(:mod:`.catalogue`), EOT/BPDA, adversarial training and the black-box substitute attack."""

from bnnrobust.attacks.adversarial_training import ADV_KINDS, AdversarialTraining, random_eps
from bnnrobust.attacks.base import (
    STATUSES,
    Attack,
    AttackError,
    AttackParams,
    AttackResult,
    Status,
)
from bnnrobust.attacks.blackbox import (
    BlackBoxResult,
    Oracle,
    blackbox_attack,
    jacobian_augmentation,
    train_substitute,
)
from bnnrobust.attacks.catalogue import CATALOGUE, Entry, entry, make
from bnnrobust.attacks.cw import CWL2
from bnnrobust.attacks.fgsm import FGSM
from bnnrobust.attacks.gradient import (
    TARGET_RULES,
    GradientAttack,
    GradientParams,
    LossParams,
    bpda_mode,
    non_differentiable_layers,
)
from bnnrobust.attacks.jsma import JSMA
from bnnrobust.attacks.pgd import BIM, PGD
from bnnrobust.attacks.rfgsm import RFGSM

__all__ = [
    "ADV_KINDS",
    "BIM",
    "CATALOGUE",
    "CWL2",
    "FGSM",
    "JSMA",
    "PGD",
    "RFGSM",
    "STATUSES",
    "TARGET_RULES",
    "AdversarialTraining",
    "Attack",
    "AttackError",
    "AttackParams",
    "AttackResult",
    "BlackBoxResult",
    "Entry",
    "GradientAttack",
    "GradientParams",
    "LossParams",
    "Oracle",
    "Status",
    "blackbox_attack",
    "bpda_mode",
    "entry",
    "jacobian_augmentation",
    "make",
    "non_differentiable_layers",
    "random_eps",
    "train_substitute",
]
