"""The ``logit_sweep`` measure: the logits of one test digit along the FGSM direction, for ε
from −ε_max to +ε_max, at a chosen softmax temperature (Galloway et al. 2018, Appendix C,
Figure 5; after Goodfellow et al. 2015, Figure 4).

The column's attack is ``fgsm``. Its parameters: ``temperature`` (the loss sees
``logits / T``; the paper uses 0.6 and 0.7 for the binary model B, 0.1 and 1.0 for the
full-precision model A), ``eps_max`` (default 0.3, the largest ε of the paper's attacks),
``points`` (ε values on the grid, default 61), ``label`` (the digit: the first of the task's
test points with this label, default 1 as in the paper) and ``clamp`` (keep the image in
[0, 1], default true); any other parameter (``loss``, ``eot_samples``, ``bpda``) goes to
:class:`~bnnrobust.attacks.FGSM`. The direction is ``sign(∇x loss)`` at the clean digit; the
image at ε is ``x + ε · direction``.

The table shows per model and column the signed ε of smallest magnitude on the grid at which
the prediction leaves the label (empty: none within ±ε_max; the paper's "direction flips"
shows as a change of sign between temperatures) and the change of the label's logit from
ε = 0 to +ε_max. The figure draws the ten logits against ε, one panel per model and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnnrobust.attacks import FGSM
from bnnrobust.attacks.base import model_device
from bnnrobust.experiments.measures.base import (
    Figure,
    Measure,
    MeasureError,
    Table,
    Task,
    model_rows,
    per_unit_stats,
)
from bnnrobust.experiments.store import Row
from bnnrobust.nn import seeded
from bnnrobust.train import eval_mode

OWN = {"eps_max": 0.3, "points": 61, "label": 1, "clamp": True}
STATS = ("flip ε", "Δz_label at +ε_max")


def _split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    own = {k: params.get(k, v) for k, v in OWN.items()}
    return own, {k: v for k, v in params.items() if k not in OWN}


def eps_grid(eps_max: float, points: int) -> list[float]:
    """``points`` values evenly spaced over [−eps_max, eps_max] (0 included when odd)."""
    return [round(v, 9) for v in torch.linspace(-eps_max, eps_max, points).tolist()]


class LogitSweepMeasure(Measure):
    """See the module docstring."""

    name = "logit_sweep"
    attacks = ("fgsm",)
    chunked = False

    def check_column(self, column) -> None:  # noqa: D102
        super().check_column(column)
        own, rest = _split(column.params)
        if not isinstance(own["eps_max"], (int, float)) or not own["eps_max"] > 0:
            raise MeasureError(f"eps_max must be a number > 0, got {own['eps_max']!r}.")
        if not isinstance(own["points"], int) or own["points"] < 3:
            raise MeasureError(f"points must be an integer >= 3, got {own['points']!r}.")
        if not isinstance(own["label"], int) or own["label"] < 0:
            raise MeasureError(f"label must be a class index >= 0, got {own['label']!r}.")
        if not isinstance(own["clamp"], bool):
            raise MeasureError("clamp must be true or false.")
        if "eps" in rest:
            raise MeasureError("eps comes from eps_max and points; remove it.")
        try:
            FGSM(nn.Identity(), **rest)
        except TypeError as exc:
            raise MeasureError(f"fgsm: {exc}.") from None

    def table_columns(self, spec, profile: str = "paper") -> list[str]:  # noqa: D102
        return [f"{c.label}: {stat}" for c in spec.columns_for(profile) for stat in STATS]

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """The logits along the direction (see the module docstring)."""
        own, options = _split(task.column["params"])
        options.setdefault("seed", task.unit.seed)
        hits = (y == own["label"]).nonzero().flatten()
        if len(hits) == 0:
            raise MeasureError(f"{task.unit.spec}: no test point among the first {len(y)} has "
                               f"label {own['label']}; raise test_points or change label.")
        i = int(hits[0])
        dev = model_device(model)
        x0, y0 = x[i:i + 1].to(dev), y[i:i + 1].to(dev)
        direction = FGSM(model, eps=0.0, **options).input_gradient(x0, y0).sign()
        eps = eps_grid(float(own["eps_max"]), own["points"])
        batch = x0 + torch.tensor(eps, device=dev).view(-1, *([1] * (x0.dim() - 1))) * direction
        if own["clamp"]:
            batch = batch.clamp(0, 1)
        with torch.no_grad(), eval_mode(model), seeded(model, options["seed"]):
            logits = model(batch).cpu()
        return {"index": i, "label": own["label"], "eps": eps,
                "logits": [[round(v, 5) for v in row] for row in logits.tolist()]}

    def tables(self, spec, profile, rows: dict[str, Row]) -> list[Table]:  # noqa: D102
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

    def figures(self, spec, profile, rows: dict[str, Row], out: Path) -> list[Figure]:  # noqa: D102
        from bnnrobust.experiments.plots import panels_of_lines

        panels = {}
        for row in self.first_seed_rows(spec, profile, rows):
            v = row.value
            logits = list(zip(*v["logits"], strict=True))
            panels[(row.unit.model, row.unit.attack)] = {
                f"class {k}": list(zip(v["eps"], logits[k], strict=True))
                for k in range(len(logits))}
        if not panels:
            return []
        return [panels_of_lines(spec, panels, out, xlabel="FGSM ε", ylabel="logit",
                                caption=f"Logits of one test digit along the FGSM direction "
                                        f"(seed {profile.seeds[0]}), per model and softmax temperature.")]


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
