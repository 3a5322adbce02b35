"""The ``accuracy`` measure: accuracy (or error, attack success rate, top-5 accuracy) of each
model under each attack column, per chunk of test points.

Columns name a white-box attack of :data:`bnnrobust.attacks.ATTACKS` or ``clean``. Column
parameters go to the attack (``eps``, ``steps``, ``loss``, ``eot_samples``, ``bpda``, ``target``,
...) except two that the measure reads: ``all_targets`` (attack every input towards each other
class, as Galloway et al. evaluate CW-L2 and JSMA) and ``passes`` (forward passes averaged for a
model that is random at test time; default 5). The attack's seed is the model's seed unless the
column sets one. A column's ``metric`` picks what the table shows: ``accuracy`` (default),
``error`` (100 − accuracy), ``success_rate``, ``top5`` or ``mean_l2`` (mean L2 norm of the
successful perturbations, Galloway Table 3).

A stored unit holds counts (``n``, ``correct``, ``success``, ``top5``) so that chunks add up
exactly; a seed's number is the total over its chunks. With ``[figure] kind = "lines"`` the
report draws the values against the column parameter ``x`` (e.g. ``eps``), one line per model
and one panel per attack; otherwise it draws grouped bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnnrobust.attacks import ATTACKS
from bnnrobust.attacks.base import model_device
from bnnrobust.evaluate import expand_targets, run_batched
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
from bnnrobust.train import accuracy, predict_logits

METRICS = ("accuracy", "error", "success_rate", "top5", "mean_l2")
MEASURE_OPTIONS = ("all_targets", "passes")


class AccuracyMeasure(Measure):
    """See the module docstring."""

    name = "accuracy"
    attacks = ("clean", *ATTACKS)

    def check_column(self, column) -> None:  # noqa: D102
        super().check_column(column)
        if column.metric not in METRICS:
            raise MeasureError(f"metric {column.metric!r} is unknown; valid metrics: "
                               f"{', '.join(METRICS)}.")
        params = dict(column.params)
        passes = params.pop("passes", 5)
        if not isinstance(passes, int) or passes < 1:
            raise MeasureError(f"passes must be an integer >= 1, got {passes!r}.")
        if not isinstance(params.pop("all_targets", False), bool):
            raise MeasureError("all_targets must be true or false.")
        if column.attack == "clean":
            if params:
                raise MeasureError(f"clean takes no parameters besides passes; got "
                                   f"{', '.join(params)}.")
            return
        try:
            ATTACKS[column.attack](nn.Identity(), **params)
        except TypeError as exc:
            raise MeasureError(f"{column.attack}: {exc}; valid parameters: "
                               f"{', '.join(attack_parameters(column.attack))}.") from None

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Counts over the task's test points (see the module docstring)."""
        passes = task.column["params"].get("passes", 5)
        x, y, x_adv, success, l2_sum = attacked(task, model, x, y)
        value = {"n": len(y), "success": success, "l2_sum": l2_sum,
                 "correct": accuracy(model, x_adv, y, passes=passes, device=model_device(model))
                 * len(y)}
        if task.column["metric"] == "top5":
            top = predict_logits(model, x_adv, device=model_device(model)).topk(5, dim=1).indices
            value["top5"] = int((top == y.cpu()[:, None]).any(1).sum())
        return value

    def tables(self, spec, profile, rows: dict[str, Row]) -> list[Table]:  # noqa: D102
        expected = [t.unit for t in self.tasks(spec, profile)]
        metric = {c.label: c.metric for c in spec.columns_for(profile.name)}

        def value_of(column: str):
            def seed_value(got: list[Row]) -> float | None:
                n = sum(r.value["n"] for r in got)
                if metric[column] == "mean_l2":
                    hits = sum(r.value["success"] for r in got)
                    return sum(r.value["l2_sum"] for r in got) / hits if hits else None
                key = {"accuracy": "correct", "error": "correct", "success_rate": "success",
                       "top5": "top5"}[metric[column]]
                rate = 100.0 * sum(r.value[key] for r in got) / n
                return 100.0 - rate if metric[column] == "error" else rate
            return seed_value

        columns = [c.label for c in spec.columns_for(profile.name)]
        adaptive = {c.label for c in spec.columns_for(profile.name) if c.adaptive}
        table = Table(spec.title, columns, model_rows(spec, profile), adaptive=adaptive)
        for column in columns:
            units = [u for u in expected if u.attack == column]
            for (model, col), cell in cells_by_seed(rows, value_of(column),
                                                    expected=units).items():
                table.rows[model][col] = cell
        return [attach_references(spec, table)]

    def figures(self, spec, profile, rows: dict[str, Row], out: Path) -> list[Figure]:  # noqa: D102
        from bnnrobust.experiments.plots import bars, figure_path, lines_by_parameter

        (table,) = self.tables(spec, profile, rows)
        if spec.figure.get("kind") == "lines":
            return [lines_by_parameter(spec, table, out, spec.columns_for(profile.name))]
        return [bars(table, figure_path(out, spec.name))]


def attack_parameters(name: str) -> list[str]:
    """The keyword parameters attack ``name`` takes (its own and the shared ones)."""
    import inspect

    from bnnrobust.attacks import Attack

    names = set()
    for cls in (ATTACKS[name], Attack):
        names |= {p.name for p in inspect.signature(cls.__init__).parameters.values()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return sorted(names | set(MEASURE_OPTIONS))


def attacked(task: Task, model: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, float]:
    """Run the task's column on ``(x, y)``: ``(x, y, x_adv, successes, summed L2 of the
    successful perturbations)`` on the model's device (``x``, ``y`` repeated once per other
    class with ``all_targets``; ``x_adv = x`` for ``clean``)."""
    params = dict(task.column["params"])
    params.pop("passes", None)
    all_targets = params.pop("all_targets", False)
    params.setdefault("seed", task.unit.seed)
    x, y = x.to(model_device(model)), y.to(model_device(model))
    if task.column["attack"] == "clean":
        return x, y, x, 0, 0.0
    target = None
    if all_targets:
        x, y, target = expand_targets(x, y, model.num_classes)
    out = run_batched(ATTACKS[task.column["attack"]](model, **params), x, y, target=target)
    return (x, y, out["x_adv"], int(out["success"].sum()),
            float(out["l2"][out["success"]].sum()))
