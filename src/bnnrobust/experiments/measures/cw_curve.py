"""The ``cw_curve`` measure: CW-L2 accuracy as a function of the number of iterations, in one
run per chunk (Galloway et al. 2018, Figure 2: up to 1,000 iterations).

The column's attack is ``cw``; ``iterations`` (a list) says where the curve is read, the other
parameters go to :meth:`bnnrobust.attacks.CWL2.galloway` (Galloway's settings: one search step,
lr 0.1, c = 10, κ = 0; its step count becomes the largest of ``iterations``). ``all_targets``
(default true) attacks every input towards each other class, as the paper does. The table has
one column per (attack column, iteration count), labelled ``"<label> @<iterations>"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnnrobust.attacks import CWL2
from bnnrobust.attacks.base import model_device
from bnnrobust.evaluate import cw_accuracy_curve
from bnnrobust.experiments.measures.base import (
    Figure,
    Measure,
    MeasureError,
    Table,
    Task,
    attach_references,
    cells_by_seed,
    model_rows,
)
from bnnrobust.experiments.store import Row


def _split(params: dict[str, Any]) -> tuple[list[int], bool, dict[str, Any]]:
    options = dict(params)
    iterations = options.pop("iterations", None)
    all_targets = options.pop("all_targets", True)
    return iterations, all_targets, options


class CWCurveMeasure(Measure):
    """See the module docstring."""

    name = "cw_curve"
    attacks = ("cw",)

    def check_column(self, column) -> None:  # noqa: D102
        super().check_column(column)
        iterations, all_targets, options = _split(column.params)
        if not isinstance(iterations, list) or not iterations or not all(
                isinstance(i, int) and i >= 1 for i in iterations):
            raise MeasureError("iterations must be a non-empty list of positive integers "
                               "(where the curve is read), e.g. [10, 100, 1000].")
        if not isinstance(all_targets, bool):
            raise MeasureError("all_targets must be true or false.")
        if "steps" in options or "record_at" in options:
            raise MeasureError("steps and record_at come from iterations; remove them.")
        try:
            CWL2.galloway(nn.Identity(), steps=max(iterations), record_at=iterations, **options)
        except TypeError as exc:
            raise MeasureError(f"cw: {exc}.") from None

    def table_columns(self, spec, profile: str = "paper") -> list[str]:  # noqa: D102
        return [f"{c.label} @{i}" for c in spec.columns_for(profile)
                for i in sorted(set(c.params["iterations"]))]

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Correct counts after each number of iterations."""
        iterations, all_targets, options = _split(task.column["params"])
        options.setdefault("seed", task.unit.seed)
        dev = model_device(model)
        curve = cw_accuracy_curve(model, x.to(dev), y.to(dev), iterations=iterations,
                                  all_targets=all_targets, **options)
        n = len(y) * (model.num_classes - 1 if all_targets else 1)
        return {"n": n, "iterations": [c["iterations"] for c in curve],
                "correct": [round(c["accuracy"] * n) for c in curve]}

    def tables(self, spec, profile, rows: dict[str, Row]) -> list[Table]:  # noqa: D102
        expected = [t.unit for t in self.tasks(spec, profile)]
        table = Table(spec.title, self.table_columns(spec, profile.name), model_rows(spec, profile))
        for column in spec.columns_for(profile.name):
            units = [u for u in expected if u.attack == column.label]
            for it in sorted(set(column.params["iterations"])):
                def value_of(got: list[Row], it: int = it) -> float:
                    n = sum(r.value["n"] for r in got)
                    hit = sum(r.value["correct"][r.value["iterations"].index(it)] for r in got)
                    return 100.0 * hit / n
                for (model, _), cell in cells_by_seed(rows, value_of, expected=units).items():
                    table.rows[model][f"{column.label} @{it}"] = cell
        return [attach_references(spec, table)]

    def figures(self, spec, profile, rows: dict[str, Row], out: Path) -> list[Figure]:  # noqa: D102
        from bnnrobust.experiments.plots import curves

        (table,) = self.tables(spec, profile, rows)
        series = {}
        columns = spec.columns_for(profile.name)
        for column in columns:
            its = sorted(set(column.params["iterations"]))
            for model, cells in table.rows.items():
                series[f"{model} ({column.label})" if len(columns) > 1 else model] = [
                    (it, cells.get(f"{column.label} @{it}")) for it in its]
        return [curves(spec, table.title, series, out, xlabel="CW-L2 iterations",
                       ylabel="accuracy (%)", log_x=True)]
