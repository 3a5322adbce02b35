"""The ``accuracy`` measure: accuracy (or error, attack success rate, top-5 accuracy) of each
model under each attack column, per chunk of test points.

Columns name a gradient attack of the catalogue (:mod:`bnnrobust.attacks.catalogue`) or
``clean``. Column ``params`` go to the attack (``eps``, ``steps``, ``loss``, ``eot_samples``,
``bpda``, ``target``, ...); ``options`` are the measure's (:class:`AccuracyOptions`):
``all_targets`` (attack every input towards each other class, as Galloway et al. evaluate CW-L2
and JSMA) and ``passes`` (forward passes averaged for a model that is random at test time;
default 5). The attack's seed is the model's seed unless the column sets one. A column's
``metric`` picks what the table shows: ``accuracy`` (default), ``error`` (100 − accuracy),
``success_rate``, ``top5`` or ``mean_l2`` (mean L2 norm of the successful perturbations,
Galloway Table 3). A ``read`` column (``options = { read_from = "CW-L2" }``) runs no attack:
it shows another column's units with its own metric (the mean L2 norm beside the accuracy of
the same CW-L2 runs, as Galloway Table 3 prints them, without attacking twice).

A stored unit holds counts (``n``, ``correct``, ``success``, ``top5``) so that chunks add up
exactly; a seed's number is the total over its chunks. With ``[figure] kind = "lines"`` the
report draws the values against the column parameter ``x`` (e.g. ``eps``), one line per model
and one panel per attack; otherwise it draws grouped bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bnnrobust.attacks.base import model_device
from bnnrobust.attacks.catalogue import entry, names
from bnnrobust.data import discretize_like
from bnnrobust.evaluate import expand_targets, run_batched
from bnnrobust.experiments.measures.base import (
    Cell,
    Measure,
    MeasureError,
    Options,
    Table,
    Task,
    attach_references,
    cells_by_seed,
    check_bool,
    check_count,
    model_rows,
)
from bnnrobust.experiments.store import StoredRow
from bnnrobust.train import accuracy, predict_logits

METRICS = ("accuracy", "error", "success_rate", "top5", "mean_l2")


INPUTS = ("raw", "discretized")


@dataclass(frozen=True, kw_only=True)
class AccuracyOptions(Options):
    """Options of the accuracy measure.

    Args:
        passes: forward passes averaged for a model that is random at test time (5).
        all_targets: attack every input towards each other class (False).
        inputs: ``"raw"`` (the test images as they are; default) or ``"discretized"``
            (Panda et al.'s protocol: the test set is discretized by the model's input
            quantizer first, the attack starts there, and the model discretizes its
            adversarial image again; with ``bpda`` the attack's gradient is the one with
            respect to the network's discretized input).
        drop_from, drop_to: for a ``drop`` column (no attack of its own): the labels of two
            columns of the spec; the cell is the first's value minus the second's per seed
            (e.g. the accuracy lost from clean to FGSM ε = 16/255, a gap the paper prints).
        drop_model: for a ``drop`` column, read ``drop_to`` from this model's row instead of
            each row's own: the cell is then a gap between models (e.g. with ``drop_from`` =
            ``drop_to`` = "JSMA" and ``drop_model`` = "A64", how many points B64 beats A64
            by under JSMA); seeds pair in the profile's order.
        read_from: for a ``read`` column (no attack of its own): the label of the column
            whose units it shows with its own ``metric``.
    """

    passes: int = 5
    all_targets: bool = False
    inputs: str = "raw"
    drop_from: str | None = None
    drop_to: str | None = None
    drop_model: str | None = None
    read_from: str | None = None

    def __post_init__(self) -> None:
        check_count("passes", self.passes)
        check_bool("all_targets", self.all_targets)
        if self.inputs not in INPUTS:
            raise MeasureError(f"inputs must be one of {', '.join(INPUTS)}, got "
                               f"{self.inputs!r}.")


class AccuracyMeasure(Measure):
    """See the module docstring."""

    name = "accuracy"
    own = ("clean", "drop", "read")
    attacks = ("clean", "drop", "read", *names("gradient"))
    Options = AccuracyOptions
    metrics = METRICS

    def check_column(self, column) -> None:  # noqa: D102
        derived = column.options.drop_from is not None or column.options.drop_to is not None
        if (column.attack == "drop") != derived or \
                (derived and None in (column.options.drop_from, column.options.drop_to)) or \
                (column.options.drop_model is not None and not derived):
            raise MeasureError("a drop column (attack = \"drop\") needs options drop_from and "
                               "drop_to, the labels of two other columns (and may take "
                               "drop_model); no other column takes them.")
        if (column.attack == "read") != (column.options.read_from is not None):
            raise MeasureError("a read column (attack = \"read\") needs option read_from, the "
                               "label of the column whose units it shows; no other column "
                               "takes it.")

    def check_spec(self, spec) -> None:  # noqa: D102
        for name in spec.profiles:
            labels = {c.label for c in spec.columns_for(name)}
            attacked = {c.label for c in spec.columns_for(name)
                        if c.attack not in ("drop", "read")}
            for c in spec.columns_for(name):
                for ref in (c.options.drop_from, c.options.drop_to):
                    if c.attack == "drop" and ref not in labels:
                        raise MeasureError(f"column {c.label!r}: {ref!r} is not a column of "
                                           f"profile {name!r}; valid: {', '.join(sorted(labels))}.")
                if c.attack == "read" and c.options.read_from not in attacked:
                    raise MeasureError(f"column {c.label!r}: read_from {c.options.read_from!r} "
                                       f"is not an attacked column of profile {name!r}; valid: "
                                       f"{', '.join(sorted(attacked))}.")
                models = [p.label for p in spec.model_plans(name)]
                if c.options.drop_model is not None and c.options.drop_model not in models:
                    raise MeasureError(f"column {c.label!r}: drop_model {c.options.drop_model!r} "
                                       f"is not a model of profile {name!r}; valid: "
                                       f"{', '.join(models)}.")

    def tasks(self, spec, profile, **kwargs) -> list[Task]:
        """The units of every column but the derived ``drop`` and ``read`` ones (read from the
        others)."""
        return [t for t in super().tasks(spec, profile, **kwargs)
                if t.column.attack not in ("drop", "read")]

    def compute(self, task: Task, model, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Counts over the task's test points (see the module docstring)."""
        passes = task.column.options.passes
        x, y, x_adv, success, l2_sum = attacked(task, model, x, y)
        value = {"n": len(y), "success": success, "l2_sum": l2_sum,
                 "correct": accuracy(model, x_adv, y, passes=passes, device=model_device(model))
                 * len(y)}
        if task.column.metric == "top5":
            top = predict_logits(model, x_adv, device=model_device(model)).topk(5, dim=1).indices
            value["top5"] = int((top == y.cpu()[:, None]).any(1).sum())
        return value

    def tables(self, spec, profile, rows: dict[str, StoredRow]) -> list[Table]:  # noqa: D102
        expected = [t.unit for t in self.tasks(spec, profile)]
        metric = {c.label: c.metric for c in spec.columns_for(profile.name)}

        def value_of(column: str):
            def seed_value(got: list[StoredRow]) -> float | None:
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
        for column in spec.columns_for(profile.name):
            source = column.options.read_from or column.label
            units = [u for u in expected if u.attack == source]
            for (model, _), cell in cells_by_seed(rows, value_of(column.label),
                                                  expected=units).items():
                table.rows[model][column.label] = cell
        for column in spec.columns_for(profile.name):
            if column.attack == "drop":
                base = column.options.drop_model
                for cells in table.rows.values():
                    a = cells.get(column.options.drop_from)
                    b = (table.rows[base] if base else cells).get(column.options.drop_to)
                    cell = Cell(complete=bool(a and b and a.complete and b.complete))
                    if a is not None and b is not None and len(a.values) == len(b.values):
                        cell.values = [u - v for u, v in zip(a.values, b.values, strict=True)]
                    cells[column.label] = cell
        return [attach_references(spec, table)]


def attacked(task: Task, model: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, float]:
    """Run the task's column on ``(x, y)``: ``(x, y, x_adv, successes, summed L2 of the
    successful perturbations)`` on the model's device (``x`` discretized first with
    ``inputs = "discretized"``; ``x``, ``y`` repeated once per other class with
    ``all_targets``; ``x_adv = x`` for ``clean``)."""
    x, y = x.to(model_device(model)), y.to(model_device(model))
    if task.column.options.inputs == "discretized":
        x = discretize_like(model, x)
    if task.column.attack == "clean":
        return x, y, x, 0, 0.0
    target = None
    if task.column.options.all_targets:
        x, y, target = expand_targets(x, y, model.num_classes)
    attack = entry(task.column.attack).make(model, task.params)
    out = run_batched(attack, x, y, target=target)
    return x, y, out.x_adv, int(out.success.sum()), float(out.l2[out.success].sum())
