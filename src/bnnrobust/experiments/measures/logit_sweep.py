"""The ``logit_sweep`` measure: the logits of one test digit along the FGSM direction, for ε
from −ε_max to +ε_max, at a chosen softmax temperature (Galloway et al. 2018, Appendix C,
Figure 5; after Goodfellow et al. 2015, Figure 4).

The column's attack is ``fgsm``, with FGSM's parameters (``temperature``: the loss sees
``logits / T``; the paper uses 0.6 and 0.7 for the binary model B, 0.1 and 1.0 for the
full-precision model A; ``loss``, ``eot_samples``, ``bpda``; not ``eps``). Options
(:class:`SweepOptions`): ``eps_max`` (default 0.3, the largest ε of the paper's attacks),
``points`` (ε values on the grid, default 61), ``label`` (the digit: the first of the task's
test points with this label, default 1 as in the paper) and ``clamp`` (keep the image in
[0, 1], default true). The direction is ``sign(∇x loss)`` at the clean digit; the
image at ε is ``x + ε · direction``.

The table shows per model and column the signed ε of smallest magnitude on the grid at which
the prediction leaves the label (empty: none within ±ε_max; the paper's "direction flips"
shows as a change of sign between temperatures) and the change of the label's logit from
ε = 0 to +ε_max. The figure draws the ten logits against ε, one panel per model and column.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from bnnrobust.attacks.base import model_device
from bnnrobust.attacks.catalogue import entry
from bnnrobust.experiments.measures.base import (
    Measure,
    MeasureError,
    Options,
    Table,
    Task,
    check_bool,
    check_count,
    model_rows,
    per_unit_stats,
)
from bnnrobust.experiments.store import StoredRow
from bnnrobust.nn import seeded
from bnnrobust.train import eval_mode

STATS = ("flip ε", "Δz_label at +ε_max")


@dataclass(frozen=True, kw_only=True)
class SweepOptions(Options):
    """``eps_max`` (> 0; 0.3), ``points`` (>= 3; 61), ``label`` (the digit; 1), ``clamp``
    (keep the image in [0, 1]; True): see the module doc."""

    eps_max: float = 0.3
    points: int = 61
    label: int = 1
    clamp: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.eps_max, (int, float)) or isinstance(self.eps_max, bool) \
                or not self.eps_max > 0:
            raise MeasureError(f"eps_max must be a number > 0, got {self.eps_max!r}.")
        check_count("points", self.points, 3)
        check_count("label", self.label, 0)
        check_bool("clamp", self.clamp)


def eps_grid(eps_max: float, points: int) -> list[float]:
    """``points`` values evenly spaced over [−eps_max, eps_max] (0 included when odd)."""
    return [round(v, 9) for v in torch.linspace(-eps_max, eps_max, points).tolist()]


class LogitSweepMeasure(Measure):
    """See the module docstring."""

    name = "logit_sweep"
    attacks = ("fgsm",)
    Options = SweepOptions
    chunked = False

    def column_params(self, attack, values, options, profile):  # noqa: D102
        if "eps" in values:
            raise MeasureError("eps comes from options eps_max and points; remove it.")
        return super().column_params(attack, values, options, profile)

    def table_columns(self, spec, profile: str = "paper") -> list[str]:  # noqa: D102
        return [f"{c.label}: {stat}" for c in spec.columns_for(profile) for stat in STATS]

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """The logits along the direction (see the module docstring)."""
        own = task.column.options
        hits = (y == own.label).nonzero().flatten()
        if len(hits) == 0:
            raise MeasureError(f"{task.unit.spec}: no test point among the first {len(y)} has "
                               f"label {own.label}; raise test_points or change label.")
        i = int(hits[0])
        dev = model_device(model)
        x0, y0 = x[i:i + 1].to(dev), y[i:i + 1].to(dev)
        fgsm = entry("fgsm").make(model, dataclasses.replace(task.params, eps=0.0))
        direction = fgsm.input_gradient(x0, y0).sign()
        eps = eps_grid(float(own.eps_max), own.points)
        batch = x0 + torch.tensor(eps, device=dev).view(-1, *([1] * (x0.dim() - 1))) * direction
        if own.clamp:
            batch = batch.clamp(0, 1)
        with torch.no_grad(), eval_mode(model), seeded(model, task.params.seed):
            logits = model(batch).cpu()
        return {"index": i, "label": own.label, "eps": eps,
                "logits": [[round(v, 5) for v in row] for row in logits.tolist()]}

    def tables(self, spec, profile, rows: dict[str, StoredRow]) -> list[Table]:  # noqa: D102
        expected = [t.unit for t in self.tasks(spec, profile)]
        table = Table(spec.title, self.table_columns(spec, profile.name),
                      model_rows(spec, profile), unit="")
        for column in spec.columns_for(profile.name):
            per_unit_stats(table, rows, [u for u in expected if u.attack == column.label],
                           [(f"{column.label}: {stat}", read) for stat, read
                            in zip(STATS, (flip_eps, label_logit_change), strict=True)])
        table.notes.append("flip ε: the signed ε of smallest magnitude at which the prediction "
                           "leaves the label (— when it never does within ±ε_max).")
        return [table]


def flip_eps(value: dict[str, Any]) -> float | None:
    """The signed ε of smallest magnitude whose prediction is not the label (None: never)."""
    flips = [(abs(e), e) for e, z in zip(value["eps"], value["logits"], strict=True)
             if max(range(len(z)), key=z.__getitem__) != value["label"]]
    return min(flips)[1] if flips else None


def label_logit_change(value: dict[str, Any]) -> float:
    """The label's logit at +ε_max minus at ε = 0 (the grid point nearest 0)."""
    eps, logits, label = value["eps"], value["logits"], value["label"]
    zero = min(range(len(eps)), key=lambda k: abs(eps[k]))
    return logits[-1][label] - logits[zero][label]
