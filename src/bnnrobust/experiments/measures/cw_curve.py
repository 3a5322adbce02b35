"""The ``cw_curve`` measure: CW-L2 accuracy as a function of the number of iterations, in one
run per chunk (Galloway et al. 2018, Figure 2: up to 1,000 iterations).

The column's attack is ``cw``; its parameters default to :attr:`bnnrobust.attacks.CWL2.GALLOWAY`
(Galloway's settings: one search step, lr 0.1, c = 10, κ = 0). Options
(:class:`CurveOptions`): ``iterations`` (a list) says where the curve is read (the attack's
step count becomes the largest); ``all_targets`` (default true) attacks every input towards
each other class, as the paper does. The table has
one column per (attack column, iteration count), labelled ``"<label> @<iterations>"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bnnrobust.attacks import CWL2
from bnnrobust.attacks.base import model_device
from bnnrobust.attacks.catalogue import entry
from bnnrobust.evaluate import cw_accuracy_curve
from bnnrobust.experiments.measures.base import (
    Measure,
    MeasureError,
    Options,
    Table,
    Task,
    attach_references,
    cells_by_seed,
    check_bool,
    model_rows,
)
from bnnrobust.experiments.store import StoredRow


@dataclass(frozen=True, kw_only=True)
class CurveOptions(Options):
    """``iterations``: where the curve is read, positive integers (required);
    ``all_targets``: attack every input towards each other class (True)."""

    iterations: tuple[int, ...] = ()
    all_targets: bool = True

    def __post_init__(self) -> None:
        its = self.iterations
        if not isinstance(its, (list, tuple)) or not its or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in its):
            raise MeasureError("iterations must be a non-empty list of positive integers "
                               "(where the curve is read), e.g. [10, 100, 1000].")
        object.__setattr__(self, "iterations", tuple(sorted(set(its))))
        check_bool("all_targets", self.all_targets)


class CWCurveMeasure(Measure):
    """See the module docstring."""

    name = "cw_curve"
    attacks = ("cw",)
    Options = CurveOptions

    def column_params(self, attack, values, options, profile):  # noqa: D102
        if "steps" in values or "record_at" in values:
            raise MeasureError("steps and record_at come from options.iterations; remove them.")
        return entry(attack).check({**CWL2.GALLOWAY, "steps": max(options.iterations),
                                    "record_at": options.iterations, **values})

    def table_columns(self, spec, profile: str = "paper") -> list[str]:  # noqa: D102
        return [f"{c.label} @{i}" for c in spec.columns_for(profile)
                for i in c.options.iterations]

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Correct counts after each number of iterations."""
        iterations, all_targets = task.column.options.iterations, task.column.options.all_targets
        options = {n: getattr(task.params, n) for n in task.params.names()
                   if n not in ("steps", "record_at")}
        dev = model_device(model)
        curve = cw_accuracy_curve(model, x.to(dev), y.to(dev), iterations=iterations,
                                  all_targets=all_targets, **options)
        n = len(y) * (model.num_classes - 1 if all_targets else 1)
        return {"n": n, "iterations": [c["iterations"] for c in curve],
                "correct": [round(c["accuracy"] * n) for c in curve]}

    def tables(self, spec, profile, rows: dict[str, StoredRow]) -> list[Table]:  # noqa: D102
        expected = [t.unit for t in self.tasks(spec, profile)]
        table = Table(spec.title, self.table_columns(spec, profile.name), model_rows(spec, profile))
        for column in spec.columns_for(profile.name):
            units = [u for u in expected if u.attack == column.label]
            for it in column.options.iterations:
                def value_of(got: list[StoredRow], it: int = it) -> float:
                    n = sum(r.value["n"] for r in got)
                    hit = sum(r.value["correct"][r.value["iterations"].index(it)] for r in got)
                    return 100.0 * hit / n
                for (model, _), cell in cells_by_seed(rows, value_of, expected=units).items():
                    table.rows[model][f"{column.label} @{it}"] = cell
        return [attach_references(spec, table)]
