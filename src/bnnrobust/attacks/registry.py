"""The white-box attacks by name (``fgsm``, ``bim``, ``pgd``, ``rfgsm``, ``cw``, ``jsma``)."""

from __future__ import annotations

from bnnrobust.attacks.base import Attack
from bnnrobust.attacks.cw import CWL2
from bnnrobust.attacks.fgsm import FGSM
from bnnrobust.attacks.jsma import JSMA
from bnnrobust.attacks.pgd import BIM, PGD
from bnnrobust.attacks.rfgsm import RFGSM

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (FGSM, BIM, PGD, RFGSM, CWL2, JSMA)}
EPS_FREE = ("cw", "jsma")  # attacks whose budget is not an L∞ eps
