"""The one catalogue of attacks: name → attack class (its typed ``Params``), kind and
requirements. Specs, the command line, the audit and the measures all build attacks from it.

Kinds: ``gradient`` (white-box, batched), ``score`` (needs only the model's scores, no
gradient; batched), ``transfer`` (black-box substitute), ``exact``
(combinatorial attacks on a fully connected BNN: optimal or heuristic) and ``certify``
(proves robustness or finds a counter-example). Exact entries load their module on first use
(they need OR-Tools: the ``cpsat`` extra); a missing extra is a clear error.

Adding an attack: write its file (an :class:`~bnnrobust.attacks.base.Attack` subclass with a
``Params`` dataclass) and add one :class:`Entry` below.

Example::

    from bnnrobust.attacks.catalogue import entry, make
    atk = make("pgd", model, eps=0.3, steps=40)       # validated by PGD.Params
    entry("milp").requires                              # ("fc-bnn",)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from bnnrobust.attacks.base import Attack, AttackError, AttackParams

Kind = Literal["gradient", "score", "transfer", "exact", "certify"]
#: model requirement -> what it means (shown in errors and ``bnnrobust attacks``)
REQUIREMENTS = {"fc-bnn": "a fully connected BNN (exportable to integer form)"}


@dataclass(frozen=True)
class Entry:
    """One attack of the catalogue.

    ``loader``: ``"module:Class"`` of the attack. ``kind``: see the module doc.
    ``requires``: what the model must be (keys of :data:`REQUIREMENTS`).
    ``budget``: the parameter holding its L∞ budget (``None`` for attacks that find minimal
    perturbations: CW-L2, JSMA). ``extra``: the pip extra it needs, if any. ``preset``: the
    attack class's attribute that holds the papers' settings where they differ from its own
    defaults (the command line starts from them; see :meth:`papers_settings`).
    """

    name: str
    loader: str
    kind: Kind
    summary: str
    requires: tuple[str, ...] = ()
    budget: str | None = "eps"
    extra: str | None = None
    preset: str | None = None

    @property
    def attack(self) -> type[Attack]:
        """The attack class (its module imported on first use)."""
        module, cls = self.loader.split(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except ImportError as exc:
            raise AttackError(f"the {self.name} attack needs the '{self.extra}' extra: pip "
                              f"install 'bnnrobust[{self.extra}]' ({exc}).") from None

    @property
    def params(self) -> type[AttackParams]:
        """The attack's parameter dataclass."""
        return self.attack.Params

    def papers_settings(self) -> dict[str, Any]:
        """The papers' settings of this attack (empty: its own defaults are the papers')."""
        return dict(getattr(self.attack, self.preset)) if self.preset else {}

    @property
    def module(self) -> str:
        """The module that defines the attack."""
        return self.loader.split(":")[0]

    def check(self, values: dict[str, Any]) -> AttackParams:
        """Validated parameters (unknown names and bad values are an AttackError)."""
        return self.params.create(self.name, values)

    def make(self, model: nn.Module, params: AttackParams | dict[str, Any] | None = None
             ) -> Attack:
        """The attack on ``model`` with ``params`` (a dict or validated parameters)."""
        if isinstance(params, AttackParams):
            values = {name: getattr(params, name) for name in params.names()}
        else:
            values = dict(params or {})
        return self.attack(model, **values)


ENTRIES: tuple[Entry, ...] = (
    Entry("fgsm", "bnnrobust.attacks.fgsm:FGSM", "gradient",
          "fast gradient sign method (Goodfellow et al. 2015)"),
    Entry("bim", "bnnrobust.attacks.pgd:BIM", "gradient",
          "basic iterative method / iterated FGSM (Kurakin et al. 2017)"),
    Entry("pgd", "bnnrobust.attacks.pgd:PGD", "gradient",
          "projected gradient descent, L∞ or L2 (Madry et al. 2018)"),
    Entry("rfgsm", "bnnrobust.attacks.rfgsm:RFGSM", "gradient",
          "random step, then FGSM (Tramèr et al. 2018)"),
    Entry("apgd", "bnnrobust.attacks.apgd:APGD", "gradient",
          "auto-PGD, cross-entropy or DLR loss (Croce & Hein 2020, AutoAttack)"),
    Entry("apgd-t", "bnnrobust.attacks.apgd:APGDT", "gradient",
          "APGD on the targeted DLR loss toward the 9 likeliest classes (AutoAttack)"),
    Entry("fab-t", "bnnrobust.attacks.fab:FABT", "gradient",
          "targeted fast adaptive boundary attack (Croce & Hein 2020, AutoAttack)"),
    Entry("square", "bnnrobust.attacks.square:Square", "score",
          "Square attack, random search on the scores (Andriushchenko et al. 2020)"),
    Entry("cw", "bnnrobust.attacks.cw:CWL2", "gradient",
          "Carlini-Wagner L2 (Carlini & Wagner 2017)", budget=None, preset="GALLOWAY"),
    Entry("jsma", "bnnrobust.attacks.jsma:JSMA", "gradient",
          "Jacobian-based saliency map attack (Papernot et al. 2016)", budget=None),
    Entry("substitute", "bnnrobust.attacks.blackbox:SubstituteAttack", "transfer",
          "Papernot et al.'s black-box substitute, transferred (Papernot et al. 2017)"),
    Entry("milp", "bnnrobust.attacks.combinatorial.milp:MILPAttack", "exact",
          "exact MILP / CP-SAT attack, provably optimal (Khalil et al. 2019)",
          requires=("fc-bnn",), extra="cpsat"),
    Entry("iprop", "bnnrobust.attacks.combinatorial.iprop:IProp", "exact",
          "integer target propagation, a local search (Khalil et al. 2019)",
          requires=("fc-bnn",), extra="cpsat"),
    Entry("iterated-fgsm", "bnnrobust.attacks.combinatorial.baseline:IteratedFGSM", "exact",
          "iterated FGSM on the exact objective, the paper's baseline (Khalil et al. 2019)",
          requires=("fc-bnn",), extra="cpsat"),
    Entry("certify", "bnnrobust.attacks.combinatorial.milp:Certify", "certify",
          "proves robustness or finds a counter-example", requires=("fc-bnn",), extra="cpsat"),
)
CATALOGUE: dict[str, Entry] = {e.name: e for e in ENTRIES}


def entry(name: str) -> Entry:
    """The catalogue entry ``name``, or an error listing the valid names."""
    if name not in CATALOGUE:
        raise AttackError(f"unknown attack {name!r}; valid attacks: {', '.join(CATALOGUE)}.")
    return CATALOGUE[name]


def names(*kinds: Kind) -> tuple[str, ...]:
    """The attack names of the given kinds (all when none is given), in catalogue order."""
    return tuple(e.name for e in ENTRIES if not kinds or e.kind in kinds)


def make(name: str, model: nn.Module, **params: Any) -> Attack:
    """``entry(name).make(model, params)``."""
    return entry(name).make(model, params)
